"""One function per client command: (result for --json, text, exit code)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

from ..client import Client, format_endpoint
from ..ha.types import format_lsn
from .exits import EXIT_FAILURE
from .tables import format_table, nodes_table, status_text

Command = Callable[[Client, argparse.Namespace], tuple[Any, str, int]]


def cmd_nodes(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    nodes = c.get_nodes(timeout=ns.timeout)
    return [dataclasses.asdict(n) for n in nodes], nodes_table(nodes), 0


def cmd_status(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    status = c.status(timeout=ns.timeout)
    return status, status_text(status), 0


def cmd_leader(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    leader = c.leader_info(timeout=ns.timeout)
    leader_id, address = leader["leader_id"], leader["address"]
    if leader_id is None:
        text = "no leader is known right now (an election may be in progress)"
    else:
        text = f"node {leader_id}" + (f" at {address}" if address else "")
    return {"leader_id": leader_id, "address": address}, text, 0


def cmd_add_node(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    result = c.add_node(ns.node_id, ns.address, ns.port, timeout=ns.timeout)
    return result, (f"node {ns.node_id} ({format_endpoint(ns.address, ns.port)}) added; it "
                    "joins as a learner and becomes a voter once it has caught up"), 0


def cmd_remove_node(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    result = c.remove_node(ns.node_id, timeout=ns.timeout)
    return result, f"node {ns.node_id} removed", 0


def cmd_append(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    data = sys.stdin.buffer.read() if ns.data == "-" else os.fsencode(ns.data)
    index = c.append(data, timeout=ns.timeout)
    return index, f"appended {len(data)} bytes at index {index}", 0


def cmd_entry(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    entry = c.get_entry(ns.index, timeout=ns.timeout)
    if entry is None:
        return None, f"error: no entry at index {ns.index} (hint: it is beyond the log or " \
                     "compacted into a snapshot; see 'pgraft status')", EXIT_FAILURE
    return entry, format_table(["index", "term", "type", "data"],
                               [[entry.get("index"), entry.get("term"), entry.get("type"),
                                 entry.get("data")]]), 0


def cmd_kv_put(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    return c.kv_put(ns.key, ns.value, timeout=ns.timeout), f"{ns.key} = {ns.value}", 0


def cmd_kv_get(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    value = c.kv_get(ns.key, timeout=ns.timeout)
    if value is None:
        return None, f"error: key {ns.key!r} does not exist (hint: list the keys with " \
                     "'pgraft kv list')", EXIT_FAILURE
    return value, value, 0


def cmd_kv_delete(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    existed = c.kv_delete(ns.key, timeout=ns.timeout)
    return existed, (f"deleted {ns.key}" if existed else f"{ns.key} did not exist"), 0


def cmd_kv_list(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    keys = c.kv_list_keys(timeout=ns.timeout)
    return keys, "\n".join(keys), 0


def cmd_transfer(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    result = c.transfer_leadership(ns.node_id, timeout=ns.timeout)
    return result, f"node {ns.node_id} is now the leader", 0




HA_COLUMNS = ("node_id", "pg_role", "timeline", "received_lsn", "replayed_lsn", "lag_bytes",
              "lease_remaining_ms", "epoch", "state")


def cmd_ha_status(c: Client, ns: argparse.Namespace) -> tuple[Any, str, int]:
    rows = c.ha_status(timeout=ns.timeout)
    shown = [[format_lsn(r.get(k)) if k.endswith("_lsn") else r.get(k) for k in HA_COLUMNS]
             for r in rows]
    json_rows = [{k: (format_lsn(r.get(k)) if k.endswith("_lsn") else r.get(k))
                  for k in HA_COLUMNS} for r in rows]
    return json_rows, format_table(list(HA_COLUMNS), shown), 0
