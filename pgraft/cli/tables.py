"""What the command line prints: psql-style tables, the status view, JSON of bytes."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from ..client import NodeInfo


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
        return show_bytes(bytes(value))
    if isinstance(value, dict | list):
        return json.dumps(value, default=json_default, sort_keys=True)
    return str(value)


def show_bytes(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + data.hex()
    return repr(text) if text.isprintable() else "0x" + data.hex()


def json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def nodes_table(nodes: Sequence[NodeInfo]) -> str:
    """The member list as the seed shows it, plus role and leader columns."""
    return format_table(["node_id", "address", "port", "role", "leader"],
                        [[n.node_id, n.address, n.port, n.role, "*" if n.is_leader else ""]
                         for n in nodes])


def status_text(status: dict[str, Any]) -> str:
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


