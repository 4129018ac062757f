"""The command line's grammar: the argparse tree, argument types, and UsageError."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

from .. import __version__
from ..client import DEFAULT_TIMEOUT
from .commands import (
    Command,
    cmd_add_node,
    cmd_append,
    cmd_entry,
    cmd_ha_status,
    cmd_kv_delete,
    cmd_kv_get,
    cmd_kv_list,
    cmd_kv_put,
    cmd_leader,
    cmd_nodes,
    cmd_remove_node,
    cmd_status,
    cmd_transfer,
)

DEFAULT_NODE = "127.0.0.1:7001"

class UsageError(Exception):
    """A command line that cannot be run (exit code 2)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error:`` line, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see '{self.prog} --help'")


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
    parser = Parser(prog="pgraft", description="Run a pgraft node, look at a cluster and "
                                                "change it.",
                     epilog="Exit codes: 0 ok, 1 refused/failed, 2 bad usage, 3 node "
                            "unreachable, 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"pgraft {__version__}")
    common = Parser(add_help=False)
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.add_parser("serve", help="run one node (see 'pgraft serve --help')", add_help=False)
    sub.add_parser("demo", help="run the seed walkthrough on a local 3-node cluster",
                   add_help=False)
    sub.add_parser("postgres", help="'pgraft postgres install ...': install the PostgreSQL "
                                    "extension", add_help=False)
    sub.add_parser("storage", help="'pgraft storage clear-failure --data-dir DIR': let a node "
                                   "start again after an I/O error; 'pgraft storage "
                                   "rebind-postgres --data-dir DIR --pg-system-id N': after "
                                   "pg_upgrade (README: Operations)",
                   add_help=False)

    def command(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    command("nodes", cmd_nodes, "list the members as this node sees them")
    command("status", cmd_status, "show the node's role, term, indexes and metrics")
    command("leader", cmd_leader, "show the leader this node knows of")
    p = command("add-node", cmd_add_node, "add a node (run on the leader)")
    p.add_argument("node_id", type=_int_arg("ID"), metavar="ID")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("port", type=_int_arg("PORT"), metavar="PORT")
    p = command("remove-node", cmd_remove_node, "remove a node (run on the leader)")
    p.add_argument("node_id", type=_int_arg("ID"), metavar="ID")
    p = command("append", cmd_append, "append DATA (UTF-8, or '-' for stdin) to the log")
    p.add_argument("data", metavar="DATA")
    p = command("entry", cmd_entry, "show the log entry at INDEX")
    p.add_argument("index", type=_int_arg("INDEX"), metavar="INDEX")
    p = command("transfer-leader", cmd_transfer, "hand leadership to node ID")
    p.add_argument("node_id", type=_int_arg("ID"), metavar="ID")

    kv = sub.add_parser("kv", help="the replicated key-value store (put/get/delete/list)",
                        description="the replicated key-value store")
    kv_sub = kv.add_subparsers(dest="kv_command", metavar="ACTION", parser_class=Parser,
                               required=True)

    def kv_command(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        p = kv_sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    p = kv_command("put", cmd_kv_put, "set KEY to VALUE (run on the leader)")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p = kv_command("get", cmd_kv_get, "print the value of KEY (linearizable)")
    p.add_argument("key", metavar="KEY")
    p = kv_command("delete", cmd_kv_delete, "delete KEY (run on the leader)")
    p.add_argument("key", metavar="KEY")
    kv_command("list", cmd_kv_list, "list the keys (linearizable)")

    ha = sub.add_parser("ha", help="high availability: 'pgraft ha status' (README: High "
                                   "availability)", description="high availability")
    ha_sub = ha.add_subparsers(dest="ha_command", metavar="ACTION", parser_class=Parser,
                               required=True)
    p = ha_sub.add_parser("status", help="one row per member: PostgreSQL role, timeline, "
                                         "LSNs, lag, lease, epoch, state",
                          description="one row per member, asked of every node",
                          parents=[common])
    p.set_defaults(func=cmd_ha_status)
    return parser


