"""The ``pgraft`` command: run a node, look at a cluster and change it.

``pgraft serve ...`` runs one node (:mod:`pgraft.node`); ``pgraft demo`` runs the seed's
walkthrough on a local 3-node cluster; ``pgraft postgres install ...`` installs the PostgreSQL
extension. Every other command is one call of :class:`pgraft.Client` on the node given by
``--node`` (``HOST:PORT`` or a Unix socket path; default ``$PGRAFT_NODE`` or
``127.0.0.1:7001``), printed as a table (or as JSON with ``--json``).

Exit codes: 0 success; 1 the node or cluster refused or failed the call (or ``kv get`` found
no value); 2 bad command line or argument; 3 the node cannot be reached; 130 interrupted.
Failures print one line, ``error: ... (hint: ...)``, on stderr, never a traceback (with
``pgraft serve --log-format launcher``: one ``ERROR:pgraft.cli: ...`` record instead).

``pgraft serve`` exits 0 after SIGTERM/SIGINT (a leader hands the leadership over first), 1
when the node cannot start (e.g. its data directory belongs to another node or PostgreSQL
server) or failed, 2 on a bad command line and after SIGQUIT (at once, without cleanup, as
PostgreSQL's quickdie).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from ..client import Client
from ..errors import ConnectionFailed, InvalidArgument, PgraftError
from .exits import EXIT_CONNECTION, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE
from .parser import DEFAULT_NODE, UsageError, build_parser
from .serve import run_demo_command, run_postgres, run_serve, run_storage
from .tables import json_default

__all__ = ["EXIT_CONNECTION", "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_USAGE", "main"]

def print_error(message: str, hint: str = "", stream: TextIO | None = None, *,
                launcher: bool = False) -> None:
    """``error: message (hint: hint)`` on one line; with ``launcher``, as one ERROR record of
    ``pgraft serve --log-format launcher`` (pgraft.node.logformat)."""
    line = message + (f" (hint: {hint})" if hint else "")
    line = " ".join(line.split("\n"))
    # (the newlines are gone already: only the backslashes need escaping)
    line = ("ERROR:pgraft.cli: " + line.replace("\\", "\\\\")) if launcher else f"error: {line}"
    print(line, file=stream or sys.stderr)


def _launcher_log(args: list[str]) -> bool:
    """``pgraft serve ... --log-format launcher``: errors before the node logs are records too."""
    if not args or args[0] != "serve":
        return False
    rest = args[1:]
    return "--log-format=launcher" in rest or any(
        a == "--log-format" and b == "launcher" for a, b in zip(rest, rest[1:], strict=False))


def _run_client_command(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    if getattr(ns, "command", None) is None:
        raise UsageError("no command given", "see 'pgraft --help'")
    target = ns.node or os.environ.get("PGRAFT_NODE") or DEFAULT_NODE
    secret_file = ns.secret_file or os.environ.get("PGRAFT_SECRET_FILE") or None
    tls_ca = ns.tls_ca or os.environ.get("PGRAFT_TLS_CA") or None
    with Client(target, timeout=ns.timeout, secret_file=secret_file, tls_ca=tls_ca,
                tls_cert=ns.tls_cert, tls_key=ns.tls_key) as client:
        result, text, code = ns.func(client, ns)
    if ns.json:
        print(json.dumps(result, default=json_default, indent=2, sort_keys=True))
    if code != 0:
        print(text, file=sys.stderr)
    elif text and not ns.json:
        print(text)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pgraft`` command; returns its exit code (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    launcher = _launcher_log(args)
    try:
        if args and args[0] == "serve":
            return run_serve(args[1:])
        if args and args[0] == "demo":
            return run_demo_command(args[1:])
        if args and args[0] == "postgres":
            return run_postgres(args[1:])
        if args and args[0] == "storage":
            return run_storage(args[1:])
        return _run_client_command(args)
    except (UsageError, InvalidArgument) as exc:
        print_error(exc.message, exc.hint, launcher=launcher)
        return EXIT_USAGE
    except ConnectionFailed as exc:
        print_error(exc.message, exc.hint, launcher=launcher)
        return EXIT_CONNECTION
    except PgraftError as exc:
        print_error(exc.message, exc.hint, launcher=launcher)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print_error("interrupted", launcher=launcher)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (e.g. `pgraft nodes | head -1`).
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_FAILURE
    except SystemExit as exc:  # --help, or a delegate that exits
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # a bug: still one line, with a way to get the details
        if os.environ.get("PGRAFT_DEBUG"):
            raise
        print_error(f"internal error: {type(exc).__name__}: {exc}",
                     "this is a bug in pgraft; rerun with PGRAFT_DEBUG=1 for a traceback and "
                     "report it", launcher=launcher)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
