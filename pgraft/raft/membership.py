"""Cluster membership: who votes, who only replicates, and where each node listens.

Changes are single-server (docs/design.md rule 6): add a learner, promote a learner to voter,
remove a node. Each change is one ``ENTRY_CONF_CHANGE`` log entry whose data is a msgpack map
(:func:`encode_conf_change`); a brand-new cluster starts from one ``bootstrap`` entry at index 1
that lists the initial voters.

When a configuration takes effect
---------------------------------
pgraft follows the Raft dissertation (§4.1): **a node uses the latest configuration in its
log, committed or not, from the moment the entry is appended** — on the leader when it
proposes, on a follower when AppendEntries adds it — and falls back to the previous one if the
entry is truncated away by a new leader. We chose this over etcd's "takes effect when applied"
because:

* the configuration is a pure function of the log (snapshot configuration + conf entries in
  the log), so the core knows it without waiting for the runtime to apply anything, a restart
  recovers it from storage alone, and the simulation can check it;
* the leader replicates and counts the new configuration while committing the change itself,
  which is what the single-server safety argument (any majority of C_old and any majority of
  C_new overlap) needs, with no window where leader and followers count differently for long;
* rules 6's guards make it safe: at most one change is uncommitted at a time, and a leader
  proposes one only after it has committed an entry of its own term (this closes the known
  single-server-change bug, Ongaro's raft-dev post of 2015).

Learners never vote, never campaign and are not counted in any quorum. A node that is not in
the configuration (removed, or a new node that has not received its add entry yet) never
campaigns. Removed ids are remembered in ``removed`` (replicated like everything else), so
re-using one is refused with :class:`pgraft.errors.NodeExists`.

The user-visible member list (``pgraft_get_nodes``) is what the state machine builds by
applying committed entries; it agrees with this module because it applies the same entries
with :meth:`Membership.apply`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack

from ..checks import check_address, check_node_id, check_port
from ..errors import InvalidArgument, NodeExists, UnknownNode

VOTER = "voter"
LEARNER = "learner"

ADD_LEARNER = "add_learner"
PROMOTE = "promote"
REMOVE = "remove"
BOOTSTRAP = "bootstrap"
_OP_ALIASES = {"add_node": ADD_LEARNER, "add": ADD_LEARNER, "add_learner": ADD_LEARNER,
               "promote": PROMOTE, "remove": REMOVE, "remove_node": REMOVE,
               "bootstrap": BOOTSTRAP}


class Member(NamedTuple):
    address: str
    port: int
    role: str


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One membership change. ``op`` is ``add_learner`` (alias ``add_node``), ``promote`` or
    ``remove``; ``address``/``port`` are only used by ``add_learner``."""

    op: str
    node_id: int
    address: str = ""
    port: int = 0

    def normalized(self) -> ConfChange:
        op = _OP_ALIASES.get(self.op)
        if op is None or op == BOOTSTRAP:
            raise InvalidArgument(f"unknown membership change {self.op!r}",
                                  hint="use add_learner (add_node), promote or remove")
        return ConfChange(op, self.node_id, self.address, self.port)


def validate_address(address: str, port: int) -> None:
    """Refuse a member's address or port that other nodes could not dial (pgraft.checks)."""
    check_address(address)
    check_port(port)


def validate_node_id(node_id: int) -> None:
    """Refuse a node id outside 1..2**63-1 (pgraft.checks)."""
    check_node_id(node_id)


class Membership(Mapping[int, Member]):
    """An immutable configuration: node id -> :class:`Member` (address, port, role), plus the
    ids that were removed and may never return."""

    __slots__ = ("_members", "removed", "voters", "learners")

    def __init__(self, members: Mapping[int, Member] | None = None,
                 removed: frozenset[int] | set[int] = frozenset()) -> None:
        self._members: dict[int, Member] = dict(sorted((members or {}).items()))
        self.removed = frozenset(removed)
        self.voters: tuple[int, ...] = tuple(
            i for i, m in self._members.items() if m.role == VOTER)
        self.learners: tuple[int, ...] = tuple(
            i for i, m in self._members.items() if m.role == LEARNER)

    # Mapping
    def __getitem__(self, node_id: int) -> Member:
        return self._members[node_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Membership):
            return NotImplemented
        return self._members == other._members and self.removed == other.removed

    def __hash__(self) -> int:
        return hash((tuple(self._members.items()), self.removed))

    def __repr__(self) -> str:
        parts = [f"{i}={m.address}:{m.port}" + ("" if m.role == VOTER else "(learner)")
                 for i, m in self._members.items()]
        if self.removed:
            parts.append("removed=" + ",".join(str(i) for i in sorted(self.removed)))
        return "Membership(" + " ".join(parts) + ")"

    def is_voter(self, node_id: int) -> bool:
        m = self._members.get(node_id)
        return m is not None and m.role == VOTER

    def address_of(self, node_id: int) -> str | None:
        m = self._members.get(node_id)
        return None if m is None else f"{m.address}:{m.port}"

    def to_list(self) -> list[dict[str, Any]]:
        return [{"node_id": i, "address": m.address, "port": m.port, "role": m.role}
                for i, m in self._members.items()]

    def check(self, cc: ConfChange) -> ConfChange:
        """Validate ``cc`` against this configuration; raise the error a client should see."""
        cc = cc.normalized()
        validate_node_id(cc.node_id)
        if cc.op == ADD_LEARNER:
            validate_address(cc.address, cc.port)
            if cc.node_id in self.removed:
                raise NodeExists(f"node {cc.node_id} was removed from the cluster and its id "
                                 "cannot be used again")
            if cc.node_id in self._members:
                raise NodeExists(f"node {cc.node_id} is already a member")
            for i, m in self._members.items():
                if m.address == cc.address and m.port == cc.port:
                    raise NodeExists(f"{cc.address}:{cc.port} is already the address of "
                                     f"node {i}")
        elif cc.op == PROMOTE:
            learner = self._members.get(cc.node_id)
            if learner is None:
                raise UnknownNode(f"node {cc.node_id} is not a member of the cluster")
            if learner.role == VOTER:
                raise InvalidArgument(f"node {cc.node_id} is already a voter")
        else:  # REMOVE
            if cc.node_id not in self._members:
                raise UnknownNode(f"node {cc.node_id} is not a member of the cluster")
            if self.voters == (cc.node_id,):
                raise InvalidArgument(f"node {cc.node_id} is the only voter and cannot be "
                                      "removed", hint="add and promote another node first")
        return cc

    def apply(self, cc: ConfChange, members: list[Any] | None = None) -> Membership:
        """The configuration after ``cc``. Never raises for a change that was valid when it was
        proposed; a change that no longer makes sense (replayed on a different base) leaves the
        configuration unchanged, identically on every node."""
        if cc.op == BOOTSTRAP:
            return Membership({int(i): Member(str(a), int(p), VOTER)
                               for i, a, p in (members or [])})
        ms = dict(self._members)
        removed = self.removed
        if cc.op == ADD_LEARNER:
            if cc.node_id in ms or cc.node_id in removed:
                return self
            ms[cc.node_id] = Member(cc.address, cc.port, LEARNER)
        elif cc.op == PROMOTE:
            m = ms.get(cc.node_id)
            if m is None:
                return self
            ms[cc.node_id] = Member(m.address, m.port, VOTER)
        elif cc.op == REMOVE:
            if cc.node_id not in ms:
                return self
            del ms[cc.node_id]
            removed = removed | {cc.node_id}
        return Membership(ms, removed)

    def apply_entry_data(self, data: bytes | memoryview) -> Membership:
        cc, members = decode_conf_change(data)
        return self.apply(cc, members)


EMPTY = Membership()


# ------------------------------------------------------------------ encoding
def encode_obj(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def decode_obj(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(bytes(data), raw=False, strict_map_key=False)


def encode_conf_change(cc: ConfChange) -> bytes:
    obj: dict[str, Any] = {"op": cc.op, "id": cc.node_id}
    if cc.op == ADD_LEARNER:
        obj["address"] = cc.address
        obj["port"] = cc.port
    return encode_obj(obj)


def encode_bootstrap(members: Mapping[int, tuple[str, int]]) -> bytes:
    return encode_obj({"op": BOOTSTRAP,
                       "members": [[int(i), str(a), int(p)]
                                   for i, (a, p) in sorted(members.items())]})


def decode_conf_change(data: bytes | memoryview) -> tuple[ConfChange, list[Any] | None]:
    """(change, bootstrap member list or None) from an ENTRY_CONF_CHANGE's data."""
    obj = decode_obj(data)
    op = obj["op"]
    if op == BOOTSTRAP:
        return ConfChange(BOOTSTRAP, 0), list(obj["members"])
    return ConfChange(op, int(obj["id"]), str(obj.get("address", "")),
                      int(obj.get("port", 0))), None


def membership_to_obj(m: Membership | None) -> Any:
    if m is None:
        return None
    return {"members": [[i, x.address, x.port, x.role] for i, x in m.items()],
            "removed": sorted(m.removed)}


def membership_from_obj(obj: Any) -> Membership:
    if obj is None:
        return EMPTY
    return Membership({int(i): Member(str(a), int(p), str(r)) for i, a, p, r in obj["members"]},
                      frozenset(int(i) for i in obj["removed"]))
