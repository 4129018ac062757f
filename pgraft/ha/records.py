"""The HA commands carried by the Raft log, and the state they build on every node.

Each command is a msgpack list behind the state's HA tag (pgraft.state). They are applied in
log order on every node, deterministically (no clock here: when a node *applied* a lease entry
is the runtime's business, pgraft.ha.lease). Every command that changes who is primary is a
compare-and-set, so two leaders, or a leader that has not yet applied everything, cannot move
the primary twice:

===========  ==========================================  =====================================
command      arguments                                    applied when
===========  ==========================================  =====================================
bootstrap    node, repl_user, repl_password, lease        no primary yet (epoch 0): epoch 1
renew        node, epoch                                  node is the primary of that epoch
promote      node, new_epoch, epoch, lease_index, reason  epoch and lease_index are current,
                                                          new_epoch = epoch + 1
initialized  node, epoch, system_id, timeline             the primary, once (after initdb)
timeline     node, epoch, timeline                        the primary of that epoch
endpoint     node, host, pg_port, http_port               always (a member's PostgreSQL address)
===========  ==========================================  =====================================

``lease_index`` is the log index of the entry that last granted or renewed the lease; a
promotion names the one it saw expire, so a renewal that lands first makes it fail. ``lease``
in the bootstrap is ``[duration_ms, max_clock_drift_ppm, margin_ms]``: the lease arithmetic of
the whole cluster, fixed when it is created, so that a holder and the node that judges its
lease never use different spans. A renewal takes effect only for a voter of the applied
membership (a removed primary's lease lapses).

Commands are checked (:func:`check_command`) before they are proposed. One that is malformed
anyway (written by another version) is applied as "no effect", like an entry with an unknown
tag: refusing it would stop every node at the same index, for good.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..errors import InvalidArgument

BOOTSTRAP = "bootstrap"
RENEW = "renew"
PROMOTE = "promote"
INITIALIZED = "initialized"
TIMELINE = "timeline"
ENDPOINT = "endpoint"

#: Commands a member may ask the leader to propose for it (op ha_propose); promote and
#: bootstrap are the leader's own decisions.
MEMBER_COMMANDS = frozenset((RENEW, INITIALIZED, TIMELINE, ENDPOINT))
_ARITY = {BOOTSTRAP: 5, RENEW: 3, PROMOTE: 6, INITIALIZED: 5, TIMELINE: 4, ENDPOINT: 5}

log = logging.getLogger("pgraft.ha")


def _is_int(v: Any, low: int = 0, high: int = (1 << 63) - 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _is_text(v: Any, limit: int = 1024) -> bool:
    return isinstance(v, str) and 0 < len(v) <= limit


# The type of every argument (after the kind), checked before a command is proposed.
_SHAPES: dict[str, tuple[Any, ...]] = {
    BOOTSTRAP: (lambda v: _is_int(v, 1), _is_text, _is_text,
                lambda v: isinstance(v, list) and len(v) == 3
                and _is_int(v[0], 1, 3_600_000) and _is_int(v[1], 0, 499_999)
                and _is_int(v[2], 0, 3_600_000)),
    RENEW: (lambda v: _is_int(v, 1), lambda v: _is_int(v, 1)),
    PROMOTE: (lambda v: _is_int(v, 1), lambda v: _is_int(v, 2), lambda v: _is_int(v, 1),
              _is_int, lambda v: isinstance(v, str)),
    INITIALIZED: (lambda v: _is_int(v, 1), lambda v: _is_int(v, 1), _is_int,
                  lambda v: _is_int(v, 1, 0xFFFFFFFF)),
    TIMELINE: (lambda v: _is_int(v, 1), lambda v: _is_int(v, 1),
               lambda v: _is_int(v, 1, 0xFFFFFFFF)),
    ENDPOINT: (lambda v: _is_int(v, 1), _is_text, lambda v: _is_int(v, 1, 65535),
               lambda v: v is None or _is_int(v, 0, 65535)),
}


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
    for i, (check, value) in enumerate(zip(_SHAPES[kind], command[1:], strict=True), 1):
        if not check(value):
            raise InvalidArgument(f"argument {i} of HA command {kind} is not valid: {value!r}")
    return list(command)


def redacted(body: bytes) -> bytes:
    """An HA command as clients may see it (``get_entry``): the bootstrap's replication
    password replaced by ``***``."""
    try:
        cmd = msgpack.unpackb(body, raw=False, use_list=True)
    except (ValueError, msgpack.UnpackException):
        return body
    if isinstance(cmd, list) and len(cmd) >= 4 and cmd[0] == BOOTSTRAP:
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
    #: [duration_ms, max_clock_drift_ppm, margin_ms] from the bootstrap (None before it).
    lease: tuple[int, int, int] | None = None

    # ------------------------------------------------------------------ apply
    def apply(self, index: int, body: bytes | memoryview,
              voters: Collection[int] | None = None) -> tuple[str, bool]:
        """Apply one HA command at ``index``: (its kind, whether it took effect). ``voters``:
        the applied membership's voters (a renewal by anyone else has no effect)."""
        try:
            cmd = check_command(msgpack.unpackb(bytes(body), raw=False, use_list=True))
        except (InvalidArgument, ValueError, TypeError, msgpack.UnpackException) as exc:
            log.error("committed entry %d holds an HA command this version cannot use (%s): "
                      "applied as no effect", index, exc)
            return "invalid", False
        return cmd[0], self._apply(index, cmd, voters)

    def _apply(self, index: int, cmd: list[Any], voters: Collection[int] | None) -> bool:
        kind = cmd[0]
        if kind == RENEW:
            _, node, epoch = cmd
            if epoch != self.epoch or node != self.primary_id:
                return False
            if voters is not None and node not in voters:
                return False
            self.lease_index = index
            return True
        if kind == ENDPOINT:
            _, node, host, pg_port, http_port = cmd
            self.endpoints[int(node)] = Endpoint(str(host), int(pg_port),
                                                 None if http_port is None else int(http_port))
            return True
        if kind == BOOTSTRAP:
            _, node, user, password, lease = cmd
            if self.epoch != 0:
                return False
            self.epoch, self.primary_id, self.lease_index = 1, int(node), index
            self.repl_user, self.repl_password = str(user), str(password)
            self.lease = (int(lease[0]), int(lease[1]), int(lease[2]))
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
                              for i, e in sorted(self.endpoints.items())],
                "lease": None if self.lease is None else list(self.lease)}

    @classmethod
    def from_snapshot(cls, obj: dict[str, Any]) -> HaState:
        def opt(name: str) -> Any:
            return obj.get(name)

        lease = opt("lease")
        return cls(lease=None if lease is None else (int(lease[0]), int(lease[1]),
                                                     int(lease[2])),
                   epoch=int(obj["epoch"]), primary_id=opt("primary_id"),
                   lease_index=int(obj["lease_index"]), system_id=opt("system_id"),
                   timeline=opt("timeline"), repl_user=opt("repl_user"),
                   repl_password=opt("repl_password"), failovers=int(obj["failovers"]),
                   endpoints={int(i): Endpoint(str(h), int(p), None if hp is None else int(hp))
                              for i, h, p, hp in obj["endpoints"]})
