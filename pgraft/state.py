"""The applied state of a node: what committed entries build.

- the **applied membership** (a :class:`pgraft.raft.Membership`: node id -> address, port,
  role, and the removed ids), replaced whenever a membership change entry is applied (the Raft
  core decides what the membership is; this is the copy that clients read and that snapshots
  record);
- the **KV store** (``kv_put``/``kv_delete`` commands carried by normal entries);
- the **applied index** (and its term).

This module owns the encoding of normal entries (:func:`encode_append`, :func:`encode_kv_put`,
:func:`encode_kv_delete`) and their classification (:func:`describe_entry_data`, the tags).
Normal entries carry a one-byte tag then a body, so that user payloads (``append``) and KV
commands share the log without ambiguity; an empty entry is a leader's no-op:

====  =============================  ==========================================
tag   body                           apply result
====  =============================  ==========================================
0x00  the user's ``append`` payload  the entry's index
0x01  msgpack ``["put", key, value]``  ``True``
0x01  msgpack ``["del", key]``         ``True`` if the key existed
0x02  an HA command (pgraft.ha.records) ``True`` if it took effect
====  =============================  ==========================================

``snapshot()``/``restore()`` serialize the whole state (for the snapshot layer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from .errors import StorageCorrupted
from .ha.records import HaState
from .ha.records import encode as encode_ha_command
from .raft.membership import EMPTY, Member, Membership

TAG_APPEND = 0
TAG_KV = 1
TAG_HA = 2
#: The first byte of a user ``append`` entry's data (``encode_append(p) == APPEND_PREFIX + p``;
#: the node's hot path concatenates it inline).
APPEND_PREFIX = b"\x00"
_KV_PREFIX = b"\x01"
_HA_PREFIX = b"\x02"

#: 2 adds the HA state; format 1 snapshots (no HA state) are still read.
SNAPSHOT_FORMAT = 2


# ------------------------------------------------------------------ command encoding
def encode_append(payload: bytes) -> bytes:
    """The entry data of a user ``append``."""
    return APPEND_PREFIX + payload


def encode_kv_put(key: str, value: str) -> bytes:
    return _KV_PREFIX + msgpack.packb(("put", key, value), use_bin_type=True)


def encode_kv_delete(key: str) -> bytes:
    return _KV_PREFIX + msgpack.packb(("del", key), use_bin_type=True)


def encode_ha(command: tuple[Any, ...] | list[Any]) -> bytes:
    """The entry data of an HA command (pgraft.ha.records)."""
    return _HA_PREFIX + encode_ha_command(command)


def describe_entry_data(data: bytes | memoryview) -> tuple[str, bytes]:
    """``(kind, user-visible bytes)`` of a normal entry's data: kind is ``"noop"``,
    ``"append"``, ``"kv"`` or ``"unknown"``. For ``append`` the bytes are the user's payload."""
    raw = bytes(data)
    if not raw:
        return "noop", b""
    tag = raw[0]
    if tag == TAG_APPEND:
        return "append", raw[1:]
    if tag == TAG_KV:
        return "kv", raw[1:]
    if tag == TAG_HA:
        return "ha", raw[1:]
    return "unknown", raw


# --------------------------------------------------------------------- applied state
class AppliedState:
    """What the applied prefix of the log has built on this node."""

    def __init__(self) -> None:
        self.applied_index = 0
        self.applied_term = 0
        self.kv: dict[str, str] = {}
        #: The applied membership (the core's configuration as of ``membership_index``).
        self.members: Membership = EMPTY
        self.membership_index = 0  # index of the last applied membership change
        #: What the HA commands built (empty without HA mode).
        self.ha = HaState()
        #: Called after an HA command is applied: (kind, took effect). The HA controller
        #: records when it applied a lease entry (pgraft.ha.lease); the state reads no clock.
        self.on_ha: Callable[[str, bool], None] | None = None

    # ---------------------------------------------------------------- apply
    def apply_normal(self, index: int, term: int, data: bytes | memoryview) -> Any:
        """Apply one normal entry; returns its result (see the module table)."""
        self.applied_index = index
        self.applied_term = term
        if not data:
            return None
        tag = data[0]
        if tag == TAG_APPEND:
            return index
        if tag == TAG_KV:
            try:
                cmd = msgpack.unpackb(data[1:], raw=False, use_list=True)
                op = cmd[0]
                if op == "put":
                    self.kv[cmd[1]] = cmd[2]
                    return True
                if op == "del":
                    return self.kv.pop(cmd[1], None) is not None
            except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
                raise StorageCorrupted(f"committed entry {index} holds an undecodable KV "
                                       f"command: {exc}") from None
            raise StorageCorrupted(f"committed entry {index} holds an unknown KV command "
                                   f"{op!r}")
        if tag == TAG_HA:
            kind, took = self.ha.apply(index, data[1:], self.members.voters)
            if self.on_ha is not None:
                self.on_ha(kind, took)
            return took
        # An entry with an unknown tag is applied as a no-op: it is someone else's format,
        # and refusing it would stop this node forever.
        return None

    def set_membership(self, index: int, term: int, members: Membership) -> None:
        """Replace the membership after applying a membership change at ``index`` (or a
        snapshot that ends there)."""
        self.members = members
        self.membership_index = index
        if index > self.applied_index:
            self.applied_index = index
            self.applied_term = term

    def mark_applied(self, index: int, term: int) -> None:
        if index > self.applied_index:
            self.applied_index = index
            self.applied_term = term

    # ---------------------------------------------------------------- reads
    def member_list(self, leader_id: int) -> list[dict[str, Any]]:
        """The members as ``get_nodes`` answers them (by node id)."""
        return [{"node_id": i, "address": m.address, "port": m.port, "role": m.role,
                 "is_leader": i == leader_id} for i, m in self.members.items()]

    def address_book(self) -> dict[int, tuple[str, int]]:
        return {i: (m.address, m.port) for i, m in self.members.items()}

    # ---------------------------------------------------------------- snapshot
    def snapshot(self) -> bytes:
        """The whole applied state as bytes (restored by :meth:`restore`)."""
        return msgpack.packb({
            "format": SNAPSHOT_FORMAT,
            "applied_index": self.applied_index,
            "applied_term": self.applied_term,
            "membership_index": self.membership_index,
            "members": [[i, m.address, m.port, m.role] for i, m in self.members.items()],
            "kv": self.kv,
            "ha": self.ha.to_snapshot(),
        }, use_bin_type=True)

    def restore(self, data: bytes | memoryview) -> None:
        """Replace the whole state with a :meth:`snapshot`."""
        try:
            obj = msgpack.unpackb(bytes(data), raw=False, strict_map_key=False)
            if obj.get("format") not in (1, SNAPSHOT_FORMAT):
                raise ValueError(f"unknown snapshot format {obj.get('format')!r}")
            ha = HaState.from_snapshot(obj["ha"]) if "ha" in obj else HaState()
            members = Membership({int(i): Member(str(a), int(p), str(r))
                                  for i, a, p, r in obj["members"]})
            kv = {str(k): str(v) for k, v in obj["kv"].items()}
            applied_index = int(obj["applied_index"])
            applied_term = int(obj["applied_term"])
            membership_index = int(obj["membership_index"])
        except (ValueError, TypeError, KeyError, AttributeError,
                msgpack.UnpackException) as exc:
            raise StorageCorrupted(f"state snapshot cannot be decoded: {exc}") from None
        # The removed ids are not in the state data: the snapshot's metadata carries the full
        # membership, and the node sets it right after restoring (Node.snapshot_installed).
        self.members = members
        self.kv = kv
        self.applied_index = applied_index
        self.applied_term = applied_term
        self.membership_index = membership_index
        self.ha = ha
        if self.on_ha is not None:
            self.on_ha("restore", True)
