"""Values shared by the HA modules: what a node observes of its PostgreSQL server.

LSNs are integers (bytes of WAL); :func:`format_lsn`/:func:`parse_lsn` convert to and from
PostgreSQL's ``X/Y`` text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: PostgreSQL roles as the HA layer names them.
PG_PRIMARY = "primary"
PG_REPLICA = "replica"
PG_STOPPED = "stopped"      # a data directory, no server running
PG_STARTING = "starting"    # the postmaster runs, connections are not accepted yet
PG_MISSING = "uninitialized"  # no data directory yet (or an empty one)
PG_UNKNOWN = "unknown"      # the node could not tell (no answer, no HA mode)

PG_ROLES = (PG_PRIMARY, PG_REPLICA, PG_STOPPED, PG_STARTING, PG_MISSING, PG_UNKNOWN)


def format_lsn(lsn: int | None) -> str | None:
    """``0x16B374D48`` -> ``"1/6B374D48"`` (PostgreSQL's pg_lsn text)."""
    if lsn is None:
        return None
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str | None) -> int | None:
    """``"1/6B374D48"`` -> ``0x16B374D48``; None stays None."""
    if text is None:
        return None
    hi, sep, lo = text.partition("/")
    if not sep:
        raise ValueError(f"{text!r} is not an LSN (X/Y)")
    return (int(hi, 16) << 32) | int(lo, 16)


@dataclass(frozen=True)
class PgObservation:
    """What a node sees of its own PostgreSQL server at one moment.

    ``received_lsn``: on a replica the WAL received and flushed (pg_last_wal_receive_lsn, or
    the replay position when nothing was received since start); on a primary its current
    write position. ``replayed_lsn``: on a replica pg_last_wal_replay_lsn; on a primary the
    same as ``received_lsn``. ``upstream_lsn``: on a streaming replica the primary's position
    last reported to it (pg_stat_wal_receiver.latest_end_lsn), for the lag.
    """

    role: str = PG_UNKNOWN
    timeline: int | None = None
    received_lsn: int | None = None
    replayed_lsn: int | None = None
    upstream_lsn: int | None = None
    streaming: bool = False         # a replica whose WAL receiver is streaming
    upstream_node: int | None = None  # the node id it streams from (application_name parse)
    system_id: int | None = None
    error: str | None = None        # why the observation is incomplete

    @property
    def lag_bytes(self) -> int | None:
        """On a streaming replica: the primary's last reported position minus what was
        replayed here (never negative); else None."""
        if self.role != PG_REPLICA or self.upstream_lsn is None or self.replayed_lsn is None:
            return None
        return max(0, self.upstream_lsn - self.replayed_lsn)

    def to_wire(self) -> dict[str, Any]:
        return {"role": self.role, "timeline": self.timeline,
                "received_lsn": self.received_lsn, "replayed_lsn": self.replayed_lsn,
                "upstream_lsn": self.upstream_lsn, "streaming": self.streaming,
                "upstream_node": self.upstream_node, "system_id": self.system_id,
                "error": self.error}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> PgObservation:
        def opt_int(name: str) -> int | None:
            v = obj.get(name)
            return None if v is None else int(v)

        role = str(obj.get("role", PG_UNKNOWN))
        return cls(role=role if role in PG_ROLES else PG_UNKNOWN,
                   timeline=opt_int("timeline"), received_lsn=opt_int("received_lsn"),
                   replayed_lsn=opt_int("replayed_lsn"), upstream_lsn=opt_int("upstream_lsn"),
                   streaming=bool(obj.get("streaming", False)),
                   upstream_node=opt_int("upstream_node"), system_id=opt_int("system_id"),
                   error=None if obj.get("error") is None else str(obj["error"]))
