"""The HA commands carried by the Raft log, and the state they build on every node.

Each command is a msgpack list behind the state's HA tag (pgraft.state). They are applied in
log order on every node, deterministically (no clock here: when a node *applied* a lease entry
is the runtime's business, pgraft.ha.lease). Every command that changes who is primary is a
compare-and-set, so two leaders, or a leader that has not yet applied everything, cannot move
the primary twice:

===========  ==========================================  =====================================
command      arguments                                    applied when
===========  ==========================================  =====================================
bootstrap    node, repl_user, repl_password               no primary yet (epoch 0): epoch 1
renew        node, epoch                                  node is the primary of that epoch
promote      node, new_epoch, epoch, lease_index, reason  epoch and lease_index are current,
                                                          new_epoch = epoch + 1
initialized  node, epoch, system_id, timeline             the primary, once (after initdb)
timeline     node, epoch, timeline                        the primary of that epoch
endpoint     node, host, pg_port, http_port               always (a member's PostgreSQL address)
===========  ==========================================  =====================================

``lease_index`` is the log index of the entry that last granted or renewed the lease; a
promotion names the one it saw expire, so a renewal that lands first makes it fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..errors import InvalidArgument, StorageCorrupted

BOOTSTRAP = "bootstrap"
RENEW = "renew"
PROMOTE = "promote"
INITIALIZED = "initialized"
TIMELINE = "timeline"
ENDPOINT = "endpoint"

#: Commands a member may ask the leader to propose for it (op ha_propose); promote and
#: bootstrap are the leader's own decisions.
MEMBER_COMMANDS = frozenset((RENEW, INITIALIZED, TIMELINE, ENDPOINT))
_ARITY = {BOOTSTRAP: 4, RENEW: 3, PROMOTE: 6, INITIALIZED: 5, TIMELINE: 4, ENDPOINT: 5}


def encode(command: tuple[Any, ...] | list[Any]) -> bytes:
    """The body of an HA entry (without the state's tag)."""
    return msgpack.packb(list(command), use_bin_type=True)


def check_command(command: Any) -> list[Any]:
    """``command`` as a list, or InvalidArgument saying what is wrong with it."""
    if not isinstance(command, list | tuple) or not command:
        raise InvalidArgument(f"an HA command is a non-empty list, got {command!r}")
    kind = command[0]
    if kind not in _ARITY:
        raise InvalidArgument(f"unknown HA command {kind!r}",
                              hint=f"one of {', '.join(sorted(_ARITY))}")
    if len(command) != _ARITY[kind]:
        raise InvalidArgument(f"HA command {kind} takes {_ARITY[kind] - 1} arguments, "
                              f"got {len(command) - 1}")
    return list(command)


def redacted(body: bytes) -> bytes:
    """An HA command as clients may see it (``get_entry``): the bootstrap's replication
    password replaced by ``***``."""
    try:
        cmd = msgpack.unpackb(body, raw=False, use_list=True)
    except (ValueError, msgpack.UnpackException):
        return body
    if isinstance(cmd, list) and len(cmd) == _ARITY[BOOTSTRAP] and cmd[0] == BOOTSTRAP:
        cmd[3] = "***"
        return encode(cmd)
    return body


@dataclass(frozen=True)
class Endpoint:
    host: str
    pg_port: int
    http_port: int | None


@dataclass
class HaState:
    """What the applied HA commands say (the same on every node at the same index)."""

    epoch: int = 0
    primary_id: int | None = None
    lease_index: int = 0
    system_id: int | None = None
    timeline: int | None = None
    repl_user: str | None = None
    repl_password: str | None = None
    failovers: int = 0
    endpoints: dict[int, Endpoint] = field(default_factory=dict)

    # ------------------------------------------------------------------ apply
    def apply(self, index: int, body: bytes | memoryview) -> tuple[str, bool]:
        """Apply one HA command at ``index``: (its kind, whether it took effect)."""
        try:
            cmd = msgpack.unpackb(bytes(body), raw=False, use_list=True)
            cmd = check_command(cmd)
            return cmd[0], self._apply(index, cmd)
        except (InvalidArgument, ValueError, TypeError, msgpack.UnpackException) as exc:
            raise StorageCorrupted(f"committed entry {index} holds an undecodable HA command: "
                                   f"{exc}") from None

    def _apply(self, index: int, cmd: list[Any]) -> bool:
        kind = cmd[0]
        if kind == RENEW:
            _, node, epoch = cmd
            if epoch != self.epoch or node != self.primary_id:
                return False
            self.lease_index = index
            return True
        if kind == ENDPOINT:
            _, node, host, pg_port, http_port = cmd
            self.endpoints[int(node)] = Endpoint(str(host), int(pg_port),
                                                 None if http_port is None else int(http_port))
            return True
        if kind == BOOTSTRAP:
            _, node, user, password = cmd
            if self.epoch != 0:
                return False
            self.epoch, self.primary_id, self.lease_index = 1, int(node), index
            self.repl_user, self.repl_password = str(user), str(password)
            return True
        if kind == PROMOTE:
            _, node, new_epoch, epoch, lease_index, _reason = cmd
            if (epoch != self.epoch or lease_index != self.lease_index
                    or new_epoch != self.epoch + 1 or self.epoch == 0):
                return False
            self.epoch, self.primary_id, self.lease_index = new_epoch, int(node), index
            self.failovers += 1
            return True
        if kind == INITIALIZED:
            _, node, epoch, system_id, timeline = cmd
            if epoch != self.epoch or node != self.primary_id or self.system_id is not None:
                return False
            self.system_id, self.timeline = int(system_id), int(timeline)
            return True
        # TIMELINE
        _, node, epoch, timeline = cmd
        if epoch != self.epoch or node != self.primary_id:
            return False
        self.timeline = int(timeline)
        return True

    # ------------------------------------------------------------------ snapshot
    def to_snapshot(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "primary_id": self.primary_id,
                "lease_index": self.lease_index, "system_id": self.system_id,
                "timeline": self.timeline, "repl_user": self.repl_user,
                "repl_password": self.repl_password, "failovers": self.failovers,
                "endpoints": [[i, e.host, e.pg_port, e.http_port]
                              for i, e in sorted(self.endpoints.items())]}

    @classmethod
    def from_snapshot(cls, obj: dict[str, Any]) -> HaState:
        def opt(name: str) -> Any:
            return obj.get(name)

        return cls(epoch=int(obj["epoch"]), primary_id=opt("primary_id"),
                   lease_index=int(obj["lease_index"]), system_id=opt("system_id"),
                   timeline=opt("timeline"), repl_user=opt("repl_user"),
                   repl_password=opt("repl_password"), failovers=int(obj["failovers"]),
                   endpoints={int(i): Endpoint(str(h), int(p), None if hp is None else int(hp))
                              for i, h, p, hp in obj["endpoints"]})
