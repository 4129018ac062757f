"""Every client call, once: its arguments checked (before anything is sent) and encoded, and
its answer turned into what the method returns. Both shells build their methods from these, so
the asyncio and the blocking client cannot drift apart.
"""

from __future__ import annotations

from ..checks import (
    check_address,
    check_data,
    check_index,
    check_key,
    check_node_id,
    check_port,
    check_value,
)
from ..errors import InvalidArgument, ProtocolError

TYPE_CHECKING = False  # typing only for the type checker: see pgraft/errors.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ._nodeinfo import NodeInfo

    Shape = Callable[[Any, str], Any]  # (the node's result, the target for messages) -> value
    #: One request: ``(op, args, shape)``, the op, its args (checked), and the shape of its
    #: answer; the shells unpack it. A plain tuple: a Call object with __init__ cost a
    #: pipelined append about 1,700 instructions, 3% of the asyncio client's work.
    Call = tuple[str, dict[str, Any], Shape]


# ------------------------------------------------------------------------ shapes
def _int(result: Any, target: str) -> int:
    return int(result)


def _bool(result: Any, target: str) -> bool:
    return bool(result)


def _dict(result: Any, target: str) -> dict[str, Any]:
    return dict(result)


def _entry(result: Any, target: str) -> dict[str, Any] | None:
    return dict(result) if result is not None else None


def _text_or_none(result: Any, target: str) -> str | None:
    return None if result is None else str(result)


def _texts(result: Any, target: str) -> list[str]:
    return [str(k) for k in result]


def _nodes(result: Any, target: str) -> list[NodeInfo]:
    from ._nodeinfo import NodeInfo

    try:
        nodes = [NodeInfo(node_id=int(n["node_id"]), address=str(n["address"]),
                          port=int(n["port"]), role=str(n["role"]),
                          is_leader=bool(n["is_leader"])) for n in result]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"node {target} sent a malformed member list ({exc!r})",
                            hint="use the same pgraft version on both sides") from None
    return sorted(nodes, key=lambda n: n.node_id)


def _leader(result: Any, target: str) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise ProtocolError(f"node {target} sent a malformed get_leader answer: {result!r}",
                            hint="use the same pgraft version on both sides")
    leader_id = result.get("leader_id")
    return {"leader_id": int(leader_id) if leader_id else None,
            "address": result.get("address") or None}


def _leader_id(result: Any, target: str) -> int | None:
    return _leader(result, target)["leader_id"]


def _leader_address(result: Any, target: str) -> str | None:
    return _leader(result, target)["address"]


# ------------------------------------------------------------------------- calls
def append(data: Any) -> Call:
    return ("append", {"data": check_data(data)}, _int)


def get_entry(index: Any) -> Call:
    return ("get_entry", {"index": check_index(index)}, _entry)


def log_stats() -> Call:
    return ("log_stats", {}, _dict)


def add_node(node_id: Any, address: Any, port: Any) -> Call:
    return ("add_node", {"node_id": check_node_id(node_id),
                         "address": check_address(address), "port": check_port(port)},
            _bool)


def remove_node(node_id: Any) -> Call:
    return ("remove_node", {"node_id": check_node_id(node_id)}, _bool)


def get_nodes() -> Call:
    return ("get_nodes", {}, _nodes)


def get_leader() -> Call:
    return ("get_leader", {}, _leader_id)


def leader_address() -> Call:
    return ("get_leader", {}, _leader_address)


def leader_info() -> Call:
    return ("get_leader", {}, _leader)


def get_term() -> Call:
    return ("get_term", {}, _int)


def is_leader() -> Call:
    return ("is_leader", {}, _bool)


def status() -> Call:
    return ("status", {}, _dict)


def transfer_leadership(node_id: Any) -> Call:
    return ("transfer_leadership", {"node_id": check_node_id(node_id)}, _bool)


def kv_put(key: Any, value: Any) -> Call:
    return ("kv_put", {"key": check_key(key), "value": check_value(value)}, _bool)


def kv_get(key: Any) -> Call:
    return ("kv_get", {"key": check_key(key)}, _text_or_none)


def kv_delete(key: Any) -> Call:
    return ("kv_delete", {"key": check_key(key)}, _bool)


def kv_list_keys() -> Call:
    return ("kv_list_keys", {}, _texts)


def _rows(result: Any, target: str) -> list[dict[str, Any]]:
    if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
        raise ProtocolError(f"{target} answered ha_status with {type(result).__name__}, "
                            "not a list of rows")
    return result


def ha_status() -> Call:
    return ("ha_status", {}, _rows)


def ha_observe() -> Call:
    """What one node sees of its PostgreSQL (member to member; the node asked, no redirect)."""
    return ("ha_observe", {}, _dict)


def ha_propose(command: Any) -> Call:
    """A member's HA command for the leader to propose (pgraft.ha.records.MEMBER_COMMANDS)."""
    if not isinstance(command, list | tuple):
        raise InvalidArgument(f"an HA command is a list, got {type(command).__name__}")
    return ("ha_propose", {"command": list(command)}, _bool)
