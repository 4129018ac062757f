"""The commands that are not one client call: ``serve``, ``postgres``, ``storage``, ``demo``."""

from __future__ import annotations

import importlib
import inspect

from ..errors import PgraftError
from .exits import EXIT_USAGE
from .parser import Parser, UsageError


def run_serve(argv: list[str]) -> int:
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
    ns = parser.parse_args(argv)
    from ..node.storage import clear_storage_failure

    removed = clear_storage_failure(ns.data_dir)
    if removed is None:
        print(f"{ns.data_dir}: no storage failure is recorded")
    else:
        print(f"{ns.data_dir}: cleared the record of: {removed.strip()}")
    return 0


def run_demo_command(argv: list[str]) -> int:
    from .. import demo

    return int(demo.main(argv) or 0)


