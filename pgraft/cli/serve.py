"""The commands that are not one client call: ``serve``, ``postgres``, ``storage``, ``demo``."""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import signal

from ..errors import InvalidArgument, PgraftError
from .exits import EXIT_USAGE
from .parser import Parser, UsageError


def _quickdie(signum: int, frame: object) -> None:
    os._exit(2)


def run_serve(argv: list[str]) -> int:
    # SIGQUIT exits at once from the start (status 2, no cleanup, no core dump); the node's
    # own handler (pgraft.node.process.install_quickdie, which logs a line first) replaces
    # this one once the runtime is imported and logging is set up.
    signal.signal(signal.SIGQUIT, _quickdie)
    try:
        node = importlib.import_module("pgraft.node")
    except ImportError as exc:
        raise PgraftError(f"the node runtime cannot be imported: {exc}",
                          hint="reinstall pgraft ('make setup')") from None
    parser = Parser(prog="pgraft serve", description="Run one pgraft node.")
    node.add_serve_arguments(parser)
    ns = parser.parse_args(argv)
    config = node.config_from_args(ns)
    result = node.run(config)
    if inspect.iscoroutine(result):
        import asyncio

        result = asyncio.run(result)
    return int(result or 0)


def run_postgres(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: pgraft postgres install [OPTIONS]\n\n"
              "Install the pgraft PostgreSQL extension (see 'pgraft postgres install --help').")
        return 0 if argv else EXIT_USAGE
    if argv[0] != "install":
        raise UsageError(f"unknown postgres command {argv[0]!r}",
                         "the only one is 'pgraft postgres install'")
    try:
        installer = importlib.import_module("pgraft.pg.install")
    except ModuleNotFoundError as exc:
        if exc.name not in ("pgraft.pg", "pgraft.pg.install"):
            raise
        raise PgraftError("the PostgreSQL installer (pgraft.pg.install) is not part of this "
                          "pgraft installation",
                          hint="install a pgraft release that ships the PostgreSQL layer") \
            from None
    return int(installer.main(argv[1:]) or 0)


def run_storage(argv: list[str]) -> int:
    parser = Parser(prog="pgraft storage",
                     description="Operate on a stopped node's data directory.")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser,
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
    p = sub.add_parser("rebind-postgres",
                       help="bind the data directory to a new PostgreSQL system identifier "
                            "(after pg_upgrade)",
                       description="A node run by PostgreSQL records the server's system "
                                   "identifier in its data directory and refuses to start for "
                                   "a server with another one. pg_upgrade gives the upgraded "
                                   "server a new identifier: run this, with the node stopped, "
                                   "to bind the node's data directory to it. Do not use it to "
                                   "move a data directory to another server.")
    p.add_argument("--data-dir", required=True, help="the node's data directory")
    p.add_argument("--pg-system-id", required=True, type=_pg_system_id_arg, metavar="N",
                   help="the server's \"Database system identifier\" (pg_controldata)")
    ns = parser.parse_args(argv)
    if ns.action == "rebind-postgres":
        from ..node.pgbinding import rebind_pg_system_id

        before = rebind_pg_system_id(ns.data_dir, ns.pg_system_id)
        if before == ns.pg_system_id:
            print(f"{ns.data_dir}: already bound to PostgreSQL system identifier "
                  f"{ns.pg_system_id}")
        else:
            was = "no identifier was recorded" if before is None else f"it was {before}"
            print(f"{ns.data_dir}: bound to PostgreSQL system identifier {ns.pg_system_id} "
                  f"({was})")
        return 0
    from ..node.storage import clear_storage_failure

    removed = clear_storage_failure(ns.data_dir)
    if removed is None:
        print(f"{ns.data_dir}: no storage failure is recorded")
    else:
        print(f"{ns.data_dir}: cleared the record of: {removed.strip()}")
    return 0


def _pg_system_id_arg(text: str) -> int:
    from ..node.pgbinding import parse_pg_system_id

    try:
        return parse_pg_system_id(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def run_demo_command(argv: list[str]) -> int:
    from .. import demo

    return int(demo.main(argv) or 0)


