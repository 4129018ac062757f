"""The ``pgraft`` command: run a node, look at a cluster and change it.

``pgraft serve ...`` runs one node (:mod:`pgraft.node`); ``pgraft demo`` runs the seed's
walkthrough on a local 3-node cluster; ``pgraft postgres install ...`` installs the PostgreSQL
extension. Every other command is one call of :class:`pgraft.Client` on the node given by
``--node`` (``HOST:PORT`` or a Unix socket path; default ``$PGRAFT_NODE`` or
``127.0.0.1:7001``), printed as a table (or as JSON with ``--json``).

Exit codes: 0 success; 1 the node or cluster refused or failed the call (or ``kv get`` found
no value); 2 bad command line or argument; 3 the node cannot be reached; 130 interrupted.
Failures print one line, ``error: ... (hint: ...)``, on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from .client import DEFAULT_TIMEOUT, Client, Node, format_endpoint
from .errors import ConnectionFailed, InvalidArgument, PgraftError

__all__ = ["EXIT_CONNECTION", "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_USAGE", "main"]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_INTERRUPTED = 130
DEFAULT_NODE = "127.0.0.1:7001"


class UsageError(Exception):
    """A command line that cannot be run (exit code 2)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error:`` line, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see '{self.prog} --help'")


# ------------------------------------------------------------------------ output
def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A psql-style table: numbers right-aligned, text left-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(r[i], int) and not isinstance(r[i], bool)
                                  for r in rows) for i in range(len(headers))]

    def line(values: Sequence[str], is_header: bool = False) -> str:
        out = []
        for i, v in enumerate(values):
            if is_header:
                out.append(f" {v.center(widths[i])} ")
            elif numeric[i]:
                out.append(f" {v.rjust(widths[i])} ")
            else:
                out.append(f" {v.ljust(widths[i])} ")
        return "|".join(out).rstrip()

    sep = "+".join("-" * (w + 2) for w in widths)
    return "\n".join([line(headers, True), sep] + [line(r) for r in cells])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, bytes | bytearray):
        return _show_bytes(bytes(value))
    if isinstance(value, dict | list):
        return json.dumps(value, default=_json_default, sort_keys=True)
    return str(value)


def _show_bytes(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + data.hex()
    return repr(text) if text.isprintable() else "0x" + data.hex()


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def nodes_table(nodes: Sequence[Node]) -> str:
    """The member list as the seed shows it, plus role and leader columns."""
    return format_table(["node_id", "address", "port", "role", "leader"],
                        [[n.node_id, n.address, n.port, n.role, "*" if n.is_leader else ""]
                         for n in nodes])


def _status_text(status: dict[str, Any]) -> str:
    lines = []
    scalars = {k: v for k, v in status.items() if not isinstance(v, dict | list)}
    width = max((len(k) for k in scalars), default=0)
    for key, value in scalars.items():
        lines.append(f"{key.ljust(width)} : {_cell(value)}")
    progress = status.get("progress")
    if isinstance(progress, dict) and progress:
        lines.append("")
        lines.append("replication progress (seen by the leader):")
        rows = []
        for peer in sorted(progress, key=lambda p: int(p) if str(p).isdigit() else 0):
            info = progress[peer] if isinstance(progress[peer], dict) else {}
            rows.append([int(peer) if str(peer).isdigit() else peer, info.get("match"),
                         info.get("next"), info.get("state")])
        lines.append(format_table(["peer", "match", "next", "state"], rows))
    for key, value in status.items():
        if key != "progress" and isinstance(value, dict | list):
            lines.append("")
            lines.append(f"{key}:")
            if isinstance(value, dict):
                inner = max((len(str(k)) for k in value), default=0)
                lines.extend(f"  {str(k).ljust(inner)} : {_cell(v)}" for k, v in value.items())
            else:
                lines.extend(f"  {_cell(v)}" for v in value)
    return "\n".join(lines)


# ---------------------------------------------------------------------- commands
Command = Callable[[Client, argparse.Namespace], tuple[Any, str, int]]


def _cmd_nodes(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    nodes = c.get_nodes(timeout=ns.timeout)
    return [dataclasses.asdict(n) for n in nodes], nodes_table(nodes), 0


def _cmd_status(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    status = c.status(timeout=ns.timeout)
    return status, _status_text(status), 0


def _cmd_leader(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    leader = c.leader_info(timeout=ns.timeout)
    leader_id, address = leader["leader_id"], leader["address"]
    if leader_id is None:
        text = "no leader is known right now (an election may be in progress)"
    else:
        text = f"node {leader_id}" + (f" at {address}" if address else "")
    return {"leader_id": leader_id, "address": address}, text, 0


def _cmd_add_node(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    result = c.add_node(ns.node_id, ns.address, ns.port, timeout=ns.timeout)
    return result, (f"node {ns.node_id} ({format_endpoint(ns.address, ns.port)}) added; it "
                    "joins as a learner and becomes a voter once it has caught up"), 0


def _cmd_remove_node(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    result = c.remove_node(ns.node_id, timeout=ns.timeout)
    return result, f"node {ns.node_id} removed", 0


def _cmd_append(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    data = sys.stdin.buffer.read() if ns.data == "-" else os.fsencode(ns.data)
    index = c.append(data, timeout=ns.timeout)
    return index, f"appended {len(data)} bytes at index {index}", 0


def _cmd_entry(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    entry = c.get_entry(ns.index, timeout=ns.timeout)
    if entry is None:
        return None, f"error: no entry at index {ns.index} (hint: it is beyond the log or " \
                     "compacted into a snapshot; see 'pgraft status')", EXIT_FAILURE
    return entry, format_table(["index", "term", "type", "data"],
                               [[entry.get("index"), entry.get("term"), entry.get("type"),
                                 entry.get("data")]]), 0


def _cmd_kv_put(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    return c.kv_put(ns.key, ns.value, timeout=ns.timeout), f"{ns.key} = {ns.value}", 0


def _cmd_kv_get(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    value = c.kv_get(ns.key, timeout=ns.timeout)
    if value is None:
        return None, f"error: key {ns.key!r} does not exist (hint: list the keys with " \
                     "'pgraft kv list')", EXIT_FAILURE
    return value, value, 0


def _cmd_kv_delete(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    existed = c.kv_delete(ns.key, timeout=ns.timeout)
    return existed, (f"deleted {ns.key}" if existed else f"{ns.key} did not exist"), 0


def _cmd_kv_list(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    keys = c.kv_list_keys(timeout=ns.timeout)
    return keys, "\n".join(keys), 0


def _cmd_transfer(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    result = c.transfer_leadership(ns.node_id, timeout=ns.timeout)
    return result, f"node {ns.node_id} is now the leader", 0


# ------------------------------------------------------------------------ parser
def _int_arg(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
    parse.__name__ = what
    return parse


def _timeout_arg(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"timeout must be a number of seconds, got "
                                         f"{text!r}") from None


def _security_arguments(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--secret-file", default=default, metavar="PATH",
                        help="prove the cluster secret in PATH (mode 0600) to the node; default "
                             "$PGRAFT_SECRET_FILE (README: Security)")
    parser.add_argument("--tls-ca", default=default, metavar="PEM",
                        help="connect over TLS, verifying the node's certificate against this "
                             "CA; default $PGRAFT_TLS_CA")
    parser.add_argument("--tls-cert", default=default, metavar="PEM",
                        help="client certificate to present over TLS (with --tls-key)")
    parser.add_argument("--tls-key", default=default, metavar="PEM",
                        help="private key of --tls-cert (mode 0600)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command but ``serve``, ``demo`` and ``postgres`` (which delegate)."""
    parser = _Parser(prog="pgraft", description="Run a pgraft node, look at a cluster and "
                                                "change it.",
                     epilog="Exit codes: 0 ok, 1 refused/failed, 2 bad usage, 3 node "
                            "unreachable, 130 interrupted.")
    common = _Parser(add_help=False)
    common.add_argument("--node", default=argparse.SUPPRESS, metavar="HOST:PORT|SOCKET",
                        help="the node to ask (default: $PGRAFT_NODE or 127.0.0.1:7001)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the result as JSON (bytes as hex)")
    common.add_argument("--timeout", type=_timeout_arg, default=argparse.SUPPRESS,
                        metavar="SECONDS", help=f"per-call timeout (default {DEFAULT_TIMEOUT:g})")
    _security_arguments(common, argparse.SUPPRESS)
    parser.add_argument("--node", default=None, metavar="HOST:PORT|SOCKET",
                        help="the node to ask (default: $PGRAFT_NODE or 127.0.0.1:7001)")
    parser.add_argument("--json", action="store_true", default=False,
                        help="print the result as JSON (bytes as hex)")
    parser.add_argument("--timeout", type=_timeout_arg, default=DEFAULT_TIMEOUT,
                        metavar="SECONDS", help=f"per-call timeout (default {DEFAULT_TIMEOUT:g})")
    _security_arguments(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("serve", help="run one node (see 'pgraft serve --help')", add_help=False)
    sub.add_parser("demo", help="run the seed walkthrough on a local 3-node cluster",
                   add_help=False)
    sub.add_parser("postgres", help="'pgraft postgres install ...': install the PostgreSQL "
                                    "extension", add_help=False)
    sub.add_parser("storage", help="'pgraft storage clear-failure --data-dir DIR': let a node "
                                   "start again after an I/O error (README: Operations)",
                   add_help=False)

    def command(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    command("nodes", _cmd_nodes, "list the members as this node sees them")
    command("status", _cmd_status, "show the node's role, term, indexes and metrics")
    command("leader", _cmd_leader, "show the leader this node knows of")
    p = command("add-node", _cmd_add_node, "add a node (run on the leader)")
    p.add_argument("node_id", type=_int_arg("ID"), metavar="ID")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("port", type=_int_arg("PORT"), metavar="PORT")
    p = command("remove-node", _cmd_remove_node, "remove a node (run on the leader)")
    p.add_argument("node_id", type=_int_arg("ID"), metavar="ID")
    p = command("append", _cmd_append, "append DATA (UTF-8, or '-' for stdin) to the log")
    p.add_argument("data", metavar="DATA")
    p = command("entry", _cmd_entry, "show the log entry at INDEX")
    p.add_argument("index", type=_int_arg("INDEX"), metavar="INDEX")
    p = command("transfer-leader", _cmd_transfer, "hand leadership to node ID")
    p.add_argument("node_id", type=_int_arg("ID"), metavar="ID")

    kv = sub.add_parser("kv", help="the replicated key-value store (put/get/delete/list)",
                        description="the replicated key-value store")
    kv_sub = kv.add_subparsers(dest="kv_command", metavar="ACTION", parser_class=_Parser,
                               required=True)

    def kv_command(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        p = kv_sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    p = kv_command("put", _cmd_kv_put, "set KEY to VALUE (run on the leader)")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p = kv_command("get", _cmd_kv_get, "print the value of KEY (linearizable)")
    p.add_argument("key", metavar="KEY")
    p = kv_command("delete", _cmd_kv_delete, "delete KEY (run on the leader)")
    p.add_argument("key", metavar="KEY")
    kv_command("list", _cmd_kv_list, "list the keys (linearizable)")
    return parser


# ------------------------------------------------------------------ delegation
def _serve(argv: list[str]) -> int:
    try:
        node = importlib.import_module("pgraft.node")
    except ImportError as exc:
        raise PgraftError(f"the node runtime cannot be imported: {exc}",
                          hint="reinstall pgraft ('make setup')") from None
    parser = _Parser(prog="pgraft serve", description="Run one pgraft node.")
    node.add_serve_arguments(parser)
    ns = parser.parse_args(argv)
    config = node.config_from_args(ns)
    result = node.run(config)
    if inspect.iscoroutine(result):
        import asyncio

        result = asyncio.run(result)
    return int(result or 0)


def _postgres(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: pgraft postgres install [OPTIONS]\n\n"
              "Install the pgraft PostgreSQL extension (see 'pgraft postgres install --help').")
        return 0 if argv else EXIT_USAGE
    if argv[0] != "install":
        raise UsageError(f"unknown postgres command {argv[0]!r}",
                         "the only one is 'pgraft postgres install'")
    try:
        installer = importlib.import_module("pgraft.pg_install")
    except ModuleNotFoundError as exc:
        if exc.name != "pgraft.pg_install":
            raise
        raise PgraftError("the PostgreSQL installer (pgraft.pg_install) is not part of this "
                          "pgraft installation",
                          hint="install a pgraft release that ships the PostgreSQL layer") \
            from None
    return int(installer.main(argv[1:]) or 0)


def _storage(argv: list[str]) -> int:
    parser = _Parser(prog="pgraft storage",
                     description="Operate on a stopped node's data directory.")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser,
                                required=True)
    p = sub.add_parser("clear-failure",
                       help="remove the record of an I/O error, so the node starts again",
                       description="A node that hit an I/O error on its log or hard state "
                                   "records it and refuses to start: the tail of its log can no "
                                   "longer be trusted. The safe way back is to remove the node "
                                   "from the cluster, wipe its data directory and add it under "
                                   "a new id. This command is for an operator who has checked "
                                   "the disk and accepts the risk; the node must be stopped.")
    p.add_argument("--data-dir", required=True, help="the node's data directory")
    ns = parser.parse_args(argv)
    from .storage import clear_storage_failure

    removed = clear_storage_failure(ns.data_dir)
    if removed is None:
        print(f"{ns.data_dir}: no storage failure is recorded")
    else:
        print(f"{ns.data_dir}: cleared the record of: {removed.strip()}")
    return 0


def _demo(argv: list[str]) -> int:
    from . import demo

    return int(demo.main(argv) or 0)


# ------------------------------------------------------------------------- main
def _print_error(message: str, hint: str = "", stream: TextIO | None = None) -> None:
    line = f"error: {message}" + (f" (hint: {hint})" if hint else "")
    print(" ".join(line.split("\n")), file=stream or sys.stderr)


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
        print(json.dumps(result, default=_json_default, indent=2, sort_keys=True))
    if code != 0:
        print(text, file=sys.stderr)
    elif text and not ns.json:
        print(text)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pgraft`` command; returns its exit code (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "serve":
            return _serve(args[1:])
        if args and args[0] == "demo":
            return _demo(args[1:])
        if args and args[0] == "postgres":
            return _postgres(args[1:])
        if args and args[0] == "storage":
            return _storage(args[1:])
        return _run_client_command(args)
    except UsageError as exc:
        _print_error(exc.message, exc.hint)
        return EXIT_USAGE
    except InvalidArgument as exc:
        _print_error(exc.message, exc.hint)
        return EXIT_USAGE
    except ConnectionFailed as exc:
        _print_error(exc.message, exc.hint)
        return EXIT_CONNECTION
    except PgraftError as exc:
        _print_error(exc.message, exc.hint)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _print_error("interrupted")
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
        _print_error(f"internal error: {type(exc).__name__}: {exc}",
                     "this is a bug in pgraft; rerun with PGRAFT_DEBUG=1 for a traceback and "
                     "report it")
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
