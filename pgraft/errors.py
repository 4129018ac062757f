"""The one error hierarchy of pgraft (DESIGN rule 8).

Every error carries a message that says what failed and why, a ``hint`` that says what to do,
and the ``sqlstate`` the PostgreSQL layer raises it with. Errors cross the client protocol as
``(code, message, details)`` and are rebuilt on the client side by :func:`from_wire`.

What a failed call tells its caller (the SQL functions raise it with its SQLSTATE):

================  ========  ================================================================
error             SQLSTATE  meaning
================  ========  ================================================================
InvalidArgument   22023     a value that can never be valid; nothing was sent
PayloadTooLarge   54000     a payload, key or value over its limit; nothing was sent
NotLeaderError    25006     a write reached a follower (``leader_id`` names the leader)
Unavailable       57P03     no leader, no quorum, node stopping: the write certainly did not
                            happen
ConnectionFailed  08006     the node cannot be reached (an Unavailable)
Timeout           57014     a read or wait did not complete in time; nothing changed
Interrupted       57014     the caller stopped waiting (its ``interrupt`` callback: in
                            PostgreSQL a cancel or statement_timeout): a read, or a call not
                            sent yet; nothing changed
OutcomeUnknown    40003     a write entered a log, then the call failed: it may have taken
                            effect; read the state back before retrying
CommitTimeout     40003     a write not committed in time (OutcomeUnknown and Timeout)
InterruptedWrite  40003     the caller stopped waiting for a sent write (OutcomeUnknown and
                            Interrupted): it may still commit
Overloaded        53000     a bounded queue is full; back off and retry
StorageFull       53100     the node's file system is full; nothing was written
================  ========  ================================================================

and the rest, each with its own SQLSTATE: MembershipChangeInProgress,
LeadershipTransferInProgress, UnknownNode, NodeExists, ProtocolError, DecodeError,
AuthenticationFailed, MemberRefused, StorageError, StorageCorrupted, StorageFormatError.
"""

from __future__ import annotations

# typing is imported for the type checker only: at run time it would cost the first pgraft
# call of a PostgreSQL session more than the rest of the client (pgraft/client/sync.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar


class PgraftError(Exception):
    """Base of every error pgraft raises on purpose."""

    code: ClassVar[str] = "internal"
    sqlstate: ClassVar[str] = "XX000"  # internal_error
    default_hint: ClassVar[str] = ""

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "hint": self.hint,
                "details": self.details}


class InvalidArgument(PgraftError, ValueError):
    """A caller passed a value that can never be valid (bad id, address, port, size)."""

    code = "invalid_argument"
    sqlstate = "22023"  # invalid_parameter_value


class PayloadTooLarge(InvalidArgument):
    """A payload, key or value is larger than the configured limit."""

    code = "payload_too_large"
    sqlstate = "54000"  # program_limit_exceeded


class NotLeaderError(PgraftError):
    """A write or leader-only call reached a node that is not the leader."""

    code = "not_leader"
    sqlstate = "25006"  # read_only_sql_transaction: this node cannot accept writes

    def __init__(self, message: str, *, node_id: int | None = None,
                 leader_id: int | None = None, leader_address: str | None = None,
                 hint: str | None = None) -> None:
        if hint is None:
            if leader_id:
                hint = f"the leader is node {leader_id}"
                if leader_address:
                    hint += f" at {leader_address}"
                hint += "; run the command there"
            else:
                hint = "no leader is known right now; retry once an election has finished"
        super().__init__(message, hint=hint, node_id=node_id, leader_id=leader_id,
                         leader_address=leader_address)
        self.node_id = node_id
        self.leader_id = leader_id
        self.leader_address = leader_address


class MembershipChangeInProgress(PgraftError):
    """Another membership change has not committed yet; Raft allows one at a time."""

    code = "membership_change_in_progress"
    sqlstate = "55006"  # object_in_use
    default_hint = "wait until the pending change has committed, then retry"


class UnknownNode(PgraftError):
    """The node id is not a member of the cluster."""

    code = "unknown_node"
    sqlstate = "42704"  # undefined_object
    default_hint = "list the members with pgraft_get_nodes() / `pgraft nodes`"


class NodeExists(PgraftError):
    """The node id (or its address) is already a member, or was removed and cannot return."""

    code = "node_exists"
    sqlstate = "42710"  # duplicate_object
    default_hint = "choose a node id that has never been used in this cluster"


class LeadershipTransferInProgress(PgraftError):
    """The leader is handing over leadership and does not accept proposals meanwhile."""

    code = "transfer_in_progress"
    sqlstate = "55006"
    default_hint = "retry on the new leader in a moment"


class Unavailable(PgraftError):
    """The cluster cannot serve the call now: no leader, no quorum, or the node is stopping.
    A write that fails with Unavailable never entered a Raft log: it certainly did not happen
    (failures after that raise :class:`OutcomeUnknown`)."""

    code = "unavailable"
    sqlstate = "57P03"  # cannot_connect_now
    default_hint = "check that a majority of the nodes are running and can reach each other"


class Timeout(PgraftError):
    """A call that changes nothing (a read, a wait) did not complete in time. A write that
    times out raises :class:`CommitTimeout`, which is also an :class:`OutcomeUnknown`."""

    code = "timeout"
    sqlstate = "57014"  # query_canceled
    default_hint = ("check the cluster status, and retry with a larger timeout if the "
                    "cluster is healthy")


class OutcomeUnknown(PgraftError):
    """A write failed after its entry entered a Raft log: it may have committed, or may still
    commit (the node stopped or failed, its entry was overwritten in this node's log by a new
    leader, or the connection was lost). Contrast :class:`Unavailable`, raised only before a
    write entered any log: such a write certainly did not happen and is safe to retry."""

    code = "outcome_unknown"
    sqlstate = "40003"  # statement_completion_unknown
    default_hint = ("the write may or may not have taken effect: read the state back "
                    "(pgraft_kv_get, pgraft_get_nodes, the log) before retrying it")


class CommitTimeout(OutcomeUnknown, Timeout):
    """A write was not committed within its timeout; it may still commit."""

    code = "commit_timeout"
    sqlstate = "40003"
    default_hint = ("the write may still take effect: read the state back before retrying, "
                    "and check that a majority of the nodes are running")


class Interrupted(PgraftError):
    """The caller stopped waiting for a call: the blocking client's ``interrupt`` callback
    returned True (in PostgreSQL: a cancel request or statement_timeout is pending). A read,
    or a call interrupted before its request was sent, changed nothing; a write interrupted
    after it was sent raises :class:`InterruptedWrite`, which is also an
    :class:`OutcomeUnknown`."""

    code = "interrupted"
    sqlstate = "57014"  # query_canceled
    default_hint = "nothing was changed; run the call again if it is still wanted"


class InterruptedWrite(OutcomeUnknown, Interrupted):
    """The caller stopped waiting for a write that was sent: it may have committed, or may
    still commit."""

    code = "interrupted_write"
    sqlstate = "40003"  # statement_completion_unknown, as CommitTimeout
    default_hint = ("the write may still commit: check with a read (pgraft_kv_get, "
                    "pgraft_get_nodes, the log) before retrying it")


class Overloaded(PgraftError):
    """A bounded queue is full (pending proposals, per-peer queue); back off and retry."""

    code = "overloaded"
    sqlstate = "53000"  # insufficient_resources
    default_hint = "reduce the number of requests in flight and retry"


class ConnectionFailed(Unavailable):
    """The client could not reach the node (not running, wrong address, socket missing)."""

    code = "connection_failed"
    sqlstate = "08006"  # connection_failure
    default_hint = "check that the pgraft node is running and listening on that address"


class ProtocolError(PgraftError):
    """A peer or client broke the wire protocol."""

    code = "protocol_error"
    sqlstate = "08P01"  # protocol_violation


class AuthenticationFailed(PgraftError):
    """The other side did not prove the cluster secret (missing, wrong, or replayed), or a
    TLS peer certificate is missing."""

    code = "authentication_failed"
    sqlstate = "28000"  # invalid_authorization_specification
    default_hint = ("give every node and client the same cluster secret "
                    "(--secret-file / secret_file= / pgraft.secret_file); see README: Security")


class MemberRefused(PgraftError):
    """A peer was refused in the handshake: it belongs to another cluster, or its data
    directory was replaced (its durable term, vote and log were lost), so counting it in a
    vote or a quorum could elect two leaders in one term or lose committed entries."""

    code = "member_refused"
    sqlstate = "55000"  # object_not_in_prerequisite_state


class HaNotEnabled(PgraftError):
    """An HA request (the primary's lease, the PostgreSQL status of the members) to a node
    that does not run PostgreSQL: it was started without ``--postgres``."""

    code = "ha_not_enabled"
    sqlstate = "55000"  # object_not_in_prerequisite_state
    default_hint = ("start the nodes with `pgraft serve ... --postgres PGDATA --pg-port PORT` "
                    "to have pgraft run PostgreSQL (README: High availability); "
                    "pgraft_get_nodes() lists the members without it")


class DecodeError(ProtocolError, ValueError):
    """Bytes that are not a valid pgraft frame: truncated, oversized or inconsistent."""

    code = "decode_error"


class StorageError(PgraftError):
    """The data directory cannot be used (I/O error, locked, wrong node id)."""

    code = "storage_error"
    sqlstate = "58030"  # io_error


class StorageFull(StorageError):
    """The file system of the data directory is full: nothing was written, nothing was lost."""

    code = "storage_full"
    sqlstate = "53100"  # disk_full
    default_hint = ("free space on the file system of the node's data directory; the node "
                    "resumes by itself once it can write again")


class StorageCorrupted(StorageError):
    """A record or file failed verification somewhere other than a torn tail."""

    code = "storage_corrupted"
    sqlstate = "XX001"  # data_corrupted
    default_hint = ("the data directory is damaged; restore this node from a healthy peer "
                    "(remove it from the cluster, wipe its data directory, add it again)")

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint, path=path, offset=offset)
        self.path = path
        self.offset = offset


class StorageFormatError(StorageError):
    """A file is of another format or version than this pgraft understands."""

    code = "storage_format"
    sqlstate = "XX001"
    default_hint = "point the node at its own data directory, or at an empty one"


# --- HA mode: the PostgreSQL server a node runs (pgraft/ha/pgctl.py) ---------------------


class PostgresError(PgraftError):
    """Controlling the local PostgreSQL server failed (HA mode, pgraft/ha/pgctl.py)."""

    code = "postgres_error"
    sqlstate = "58000"  # system_error
    default_hint = "read the PostgreSQL log of this node"


class PostgresCommandFailed(PostgresError):
    """A PostgreSQL program (initdb, pg_ctl, pg_basebackup, pg_rewind, postgres) failed, or
    the postmaster exited while starting; ``details`` hold the command, its exit status and
    the end of its error output (or of the server log)."""

    code = "postgres_command_failed"
    sqlstate = "58000"  # system_error


class PostgresTimeout(PostgresError, Timeout):
    """A PostgreSQL program or the server did not finish in time (the program was killed)."""

    code = "postgres_timeout"
    sqlstate = "57014"  # query_canceled
    default_hint = "read the PostgreSQL log of this node; retry with a larger timeout"


class PostgresDirectoryRefused(PostgresError):
    """The data directory is not in the state the operation needs (initdb and basebackup
    write only into a missing or empty directory); nothing was changed."""

    code = "postgres_directory_refused"
    sqlstate = "55000"  # object_not_in_prerequisite_state
    default_hint = ("move the directory aside (or point the node at an empty one); the HA "
                    "layer never deletes a data directory")


class PostgresStateConflict(PostgresError):
    """The server is running when the operation needs it stopped, or the reverse."""

    code = "postgres_state_conflict"
    sqlstate = "55000"  # object_not_in_prerequisite_state


class PostgresQueryFailed(PostgresError):
    """A connection to the local server or an SQL statement on it failed; ``details`` hold
    the server's SQLSTATE when there was one."""

    code = "postgres_query_failed"
    sqlstate = "58000"  # system_error


_BY_CODE: dict[str, type[PgraftError]] = {}


def _register(cls: type[PgraftError]) -> None:
    _BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(PgraftError)


def from_wire(payload: dict[str, Any]) -> PgraftError:
    """Rebuild an error sent by a node (see :meth:`PgraftError.to_wire`)."""
    cls = _BY_CODE.get(str(payload.get("code")), PgraftError)
    message = str(payload.get("message", "unknown error"))
    hint = payload.get("hint")
    details = dict(payload.get("details") or {})
    if cls is NotLeaderError:
        return NotLeaderError(message, hint=hint, node_id=details.get("node_id"),
                              leader_id=details.get("leader_id"),
                              leader_address=details.get("leader_address"))
    if cls is StorageCorrupted:
        return StorageCorrupted(message, hint=hint, path=details.get("path"),
                                offset=details.get("offset"))
    err = cls.__new__(cls)
    PgraftError.__init__(err, message, hint=hint, **details)
    return err
