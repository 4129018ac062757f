"""The configuration of one node: :class:`NodeConfig`, the ``pgraft serve`` options that build
it, and the ``ID=HOST:PORT,...`` cluster notation."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any

from .._impl import core
from ..errors import InvalidArgument
from ..ha.config import DEFAULT_PG_BIN, HaConfig
from ..ha.lease import LeaseSettings
from ..protocol import MAX_FRAME_SIZE
from ..raft.membership import VOTER, Membership, validate_address, validate_node_id
from .identity import DEFAULT_CLUSTER_TOKEN
from .logformat import HUMAN, LOG_FORMATS
from .pgbinding import check_pg_system_id, parse_pg_system_id
from .security import SecurityConfig, add_security_arguments, security_from_args

RECORD_HEADER_SIZE = core.RECORD_HEADER_SIZE
DEFAULT_MAX_FRAME = MAX_FRAME_SIZE


@dataclass
class NodeConfig:
    """Everything one node needs. Times in milliseconds; sizes in bytes.

    ``initial_cluster`` (node id -> (address, port)) bootstraps a brand-new cluster on the first
    start only; afterwards the membership comes from the node's own log. Without it the node
    starts empty and waits until a leader adds it.
    """

    node_id: int
    address: str
    port: int
    data_dir: str
    initial_cluster: dict[int, tuple[str, int]] | None = None
    #: "new": an empty data directory with ``initial_cluster`` bootstraps that cluster;
    #: "existing": it starts empty and waits for the leader (a member added, or re-added).
    initial_cluster_state: str = "new"
    #: Mixed into the cluster id of a new cluster, so that two clusters bootstrapped with the
    #: same member list (e.g. on one host, ports reused) still refuse each other's nodes.
    initial_cluster_token: str = DEFAULT_CLUSTER_TOKEN
    election_timeout_ms: int = 1000
    heartbeat_interval_ms: int = 100
    tick_ms: int | None = None  # derived from the two above when None
    listen_host: str | None = None  # defaults to ``address``
    unix_socket: bool = True
    max_frame: int = DEFAULT_MAX_FRAME
    max_payload: int = 8 * 1024 * 1024
    max_msg_bytes: int = 16 * 1024 * 1024
    max_inflight: int = 256
    max_pending_proposals: int = 65536
    max_pending_reads: int = 4096
    peer_queue_frames: int = 8192
    peer_queue_bytes: int = 64 * 1024 * 1024
    request_timeout: float = 30.0
    segment_size: int = 64 * 1024 * 1024
    #: Snapshot after this many applied entries (0 = never by count; see pgraft.node.snapshots).
    snapshot_entries: int = 100_000
    #: ... or after this many bytes were added to the log (0 = never by size).
    snapshot_bytes: int = 256 * 1024 * 1024
    #: Entries kept in the log behind a snapshot, for followers that lag a little.
    snapshot_keep: int = 5000
    #: InstallSnapshot chunk size, and chunks in flight per transfer.
    snapshot_chunk: int = 1024 * 1024
    snapshot_window: int = 4
    seed: int | None = None
    #: The system identifier of the PostgreSQL server this node belongs to (set by the
    #: launcher): recorded in the data directory, a different one refused (pgraft.node.pgbinding).
    pg_system_id: int | None = None
    #: Cluster secret, TLS and connection limits (pgraft.node.security, README: Security).
    security: SecurityConfig = field(default_factory=SecurityConfig)
    #: HA mode: the PostgreSQL server this node runs (``--postgres``), else None.
    ha: HaConfig | None = None
    #: The HTTP port for load balancers and /metrics (``--http-port``), else None.
    http_port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        try:
            validate_node_id(self.node_id)
            validate_address(self.address, self.port)
        except InvalidArgument as exc:
            raise InvalidArgument(f"invalid node configuration: {exc.message}",
                                  hint=exc.hint) from None
        if not self.data_dir:
            raise InvalidArgument("a data directory is required")
        if self.initial_cluster_state not in ("new", "existing"):
            raise InvalidArgument(f"initial cluster state {self.initial_cluster_state!r} is not "
                                  "'new' or 'existing'")
        if not self.initial_cluster_token:
            raise InvalidArgument("the initial cluster token is empty")
        if self.heartbeat_interval_ms < 1:
            raise InvalidArgument(f"heartbeat interval {self.heartbeat_interval_ms} ms must be "
                                  "at least 1 ms")
        if self.election_timeout_ms <= self.heartbeat_interval_ms:
            raise InvalidArgument(
                f"election timeout ({self.election_timeout_ms} ms) must be longer than the "
                f"heartbeat interval ({self.heartbeat_interval_ms} ms)",
                hint="a usual choice is an election timeout of 10 heartbeat intervals")
        if self.tick_ms is not None and self.tick_ms < 1:
            raise InvalidArgument("tick_ms must be at least 1")
        self.security.validate()
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise InvalidArgument(f"--http-port {self.http_port} is not a TCP port")
        if self.ha is not None:
            if self.pg_system_id is not None:
                raise InvalidArgument(
                    "--pg-system-id is for a node run by the PostgreSQL launcher; with "
                    "--postgres the node reads the system identifier itself",
                    hint="leave --pg-system-id out")
            self.ha.validate(self.data_dir)
        if self.pg_system_id is not None:
            check_pg_system_id(self.pg_system_id)
        if self.initial_cluster is not None:
            if not self.initial_cluster:
                raise InvalidArgument("the initial cluster is empty")
            seen: dict[tuple[str, int], int] = {}
            for node_id, (address, port) in self.initial_cluster.items():
                validate_node_id(node_id)
                validate_address(address, port)
                if (address, port) in seen:
                    raise InvalidArgument(f"{address}:{port} is given for nodes "
                                          f"{seen[(address, port)]} and {node_id}")
                seen[(address, port)] = node_id
            if self.node_id not in self.initial_cluster:
                raise InvalidArgument(
                    f"node {self.node_id} is not in the initial cluster "
                    f"({format_cluster(self.initial_cluster)})",
                    hint="list every initial member, this node included, or leave the initial "
                         "cluster out to start empty and be added by the leader")
        for name in ("max_frame", "max_payload", "max_msg_bytes", "max_inflight",
                     "max_pending_proposals", "max_pending_reads", "peer_queue_frames",
                     "peer_queue_bytes", "segment_size", "snapshot_chunk", "snapshot_window"):
            if getattr(self, name) < 1:
                raise InvalidArgument(f"{name} must be positive")
        for name in ("snapshot_entries", "snapshot_bytes", "snapshot_keep"):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"{name} must be 0 or more",
                                      hint="0 turns that snapshot trigger off")
        if self.snapshot_chunk + 1024 > self.max_frame:
            raise InvalidArgument("snapshot_chunk must fit in a frame (max_frame)")
        if self.max_payload + RECORD_HEADER_SIZE > self.max_msg_bytes:
            raise InvalidArgument("max_payload must leave room for a record header within "
                                  "max_msg_bytes")
        if self.max_msg_bytes + 1024 > self.max_frame:
            raise InvalidArgument("max_msg_bytes must fit in a frame (max_frame)")

    def ticks(self) -> tuple[float, int, int]:
        """(tick seconds, heartbeat ticks, election ticks)."""
        tick = self.tick_ms
        if tick is None:
            # Fine ticks: followers pick their randomized election timeout (one to two election
            # timeouts, in ticks) from 50 values rather than 10, so two of them rarely time out
            # in the same tick and split the vote (each split costs another election timeout:
            # it made the slowest of 20 leader kills with a 150 ms timeout 650 ms). A tick is
            # one timer callback and a check of the core, a few microseconds.
            tick = max(1, min(self.heartbeat_interval_ms, self.election_timeout_ms // 50))
        hb = max(1, round(self.heartbeat_interval_ms / tick))
        el = max(hb + 1, round(self.election_timeout_ms / tick))
        return tick / 1000.0, hb, el


def parse_cluster(text: str) -> dict[int, tuple[str, int]]:
    """``"1=HOST:PORT,2=HOST:PORT"`` -> {1: (HOST, PORT), ...}; IPv6 hosts in brackets."""
    out: dict[int, tuple[str, int]] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        ident, sep, where = part.partition("=")
        if not sep:
            raise InvalidArgument(f"initial cluster member {part!r} is not ID=HOST:PORT",
                                  hint='e.g. "1=10.0.0.11:7001,2=10.0.0.12:7002"')
        try:
            node_id = int(ident.strip())
        except ValueError:
            raise InvalidArgument(f"node id {ident!r} in the initial cluster is not an "
                                  "integer") from None
        host, port = parse_endpoint(where.strip())
        if node_id in out:
            raise InvalidArgument(f"node {node_id} appears twice in the initial cluster")
        out[node_id] = (host, port)
    if not out:
        raise InvalidArgument("the initial cluster is empty",
                              hint='e.g. "1=10.0.0.11:7001,2=10.0.0.12:7002"')
    return out


def parse_endpoint(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise InvalidArgument(f"{text!r} is not [HOST]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise InvalidArgument(f"{text!r} is not HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise InvalidArgument(f"port {port_text!r} in {text!r} is not a number") from None
    validate_address(host, port)
    return host, port


def format_cluster(cluster: dict[int, tuple[str, int]]) -> str:
    return ",".join(f"{i}={endpoint(a, p)}" for i, (a, p) in sorted(cluster.items()))


def endpoint(address: str, port: int) -> str:
    """``HOST:PORT``, or ``[HOST]:PORT`` for an IPv6 address."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def describe_membership(m: Membership) -> str:
    """``1=HOST:PORT, 2=HOST:PORT (learner)`` (for logs), or ``none``."""
    if not len(m):
        return "none"
    return ", ".join(f"{i}={endpoint(x.address, x.port)}" + ("" if x.role == VOTER
                                                             else " (learner)")
                     for i, x in m.items())


# ------------------------------------------------------------------------ command line
def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``pgraft serve``."""
    parser.add_argument("--id", dest="node_id", type=int, required=True,
                        help="this node's id (a positive integer, never reused)")
    parser.add_argument("--address", required=True,
                        help="the address other nodes and clients use to reach this node")
    parser.add_argument("--port", type=int, required=True, help="TCP port (peers and clients)")
    parser.add_argument("--data-dir", required=True, help="this node's data directory")
    parser.add_argument("--initial-cluster", default=None,
                        help='bootstrap a new cluster: "1=HOST:PORT,2=HOST:PORT,3=HOST:PORT" '
                             "(first start only; omit it to start empty and be added by the "
                             "leader)")
    parser.add_argument("--initial-cluster-state", choices=["new", "existing"], default="new",
                        help="with --initial-cluster and an empty data directory: 'new' "
                             "bootstraps that cluster (default), 'existing' starts empty and "
                             "waits to be added by the leader")
    parser.add_argument("--initial-cluster-token", default=DEFAULT_CLUSTER_TOKEN,
                        metavar="TOKEN",
                        help="mixed into the id of a new cluster, so that nodes of two "
                             "clusters with the same member list refuse each other (default "
                             f"{DEFAULT_CLUSTER_TOKEN!r})")
    parser.add_argument("--election-timeout", type=int, default=1000, metavar="MS",
                        help="election timeout in milliseconds (default 1000)")
    parser.add_argument("--heartbeat-interval", type=int, default=100, metavar="MS",
                        help="heartbeat interval in milliseconds (default 100)")
    parser.add_argument("--listen-host", default=None,
                        help="host to bind (default: --address; 0.0.0.0 for all interfaces)")
    parser.add_argument("--max-frame", type=int, default=DEFAULT_MAX_FRAME, metavar="BYTES",
                        help="largest frame accepted from peers and clients")
    parser.add_argument("--max-pending-proposals", type=int, default=65536,
                        help="proposals waiting to commit before new ones are refused")
    parser.add_argument("--snapshot-entries", type=int, default=100_000, metavar="N",
                        help="snapshot the applied state every N applied entries and compact "
                             "the log (0 = not by count; default 100000)")
    parser.add_argument("--snapshot-bytes", type=int, default=256 * 1024 * 1024,
                        metavar="BYTES",
                        help="also snapshot once BYTES were added to the log since the last "
                             "snapshot (0 = not by size; default 268435456)")
    parser.add_argument("--snapshot-keep", type=int, default=5000, metavar="N",
                        help="entries kept in the log behind a snapshot, so that followers "
                             "lagging by less catch up from the log (default 5000)")
    parser.add_argument("--segment-size", type=int, default=64 * 1024 * 1024, metavar="BYTES",
                        help="size of a log segment file; compaction drops whole segments "
                             "(default 67108864)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level (default INFO)")
    parser.add_argument("--log-format", default=HUMAN, choices=list(LOG_FORMATS),
                        help="'human' (default): timestamped lines; 'launcher': one "
                             "'LEVEL:logger: text' line per record with backslash and newline "
                             "escaped, for the PostgreSQL launcher (pgraft.node.logformat)")
    parser.add_argument("--pg-system-id", type=_pg_system_id_arg, default=None, metavar="N",
                        help="the system identifier of the PostgreSQL server this node belongs "
                             "to (pg_controldata's \"Database system identifier\"): recorded in "
                             "the data directory on the first start; the node refuses to start "
                             "on a directory that records another one (after pg_upgrade: "
                             "'pgraft storage rebind-postgres')")
    ha = parser.add_argument_group(
        "high availability", "run a PostgreSQL server as part of the cluster (README: High "
        "availability)")
    ha.add_argument("--postgres", metavar="PGDATA", default=None,
                    help="HA mode: this node runs the PostgreSQL server of PGDATA (an empty or "
                         "missing directory: pgraft creates it with initdb or pg_basebackup)")
    ha.add_argument("--pg-port", type=int, default=None, metavar="PORT",
                    help="the PostgreSQL server's TCP port (required with --postgres)")
    ha.add_argument("--pg-bin", default=None, metavar="DIR",
                    help="directory of PostgreSQL's programs (default: where pg_ctl is on "
                         f"PATH, else {DEFAULT_PG_BIN})")
    ha.add_argument("--pg-hba", default=None, metavar="FILE",
                    help="the client lines of pg_hba.conf (pgraft adds the members' "
                         "replication lines itself)")
    ha.add_argument("--http-port", type=int, default=None, metavar="PORT",
                    help="serve /primary, /replica, /read-only, /health, /cluster and /metrics "
                         "on this port (also without --postgres)")
    ha.add_argument("--lease-duration", type=int, default=2000, metavar="MS",
                    help="the primary's lease (default 2000 ms)")
    ha.add_argument("--lease-renew-interval", type=int, default=500, metavar="MS",
                    help="how often the primary renews its lease (default 500 ms)")
    ha.add_argument("--max-clock-drift", type=float, default=0.01, metavar="FRACTION",
                    help="the assumed bound on clock rate error (default 0.01 = 1%%)")
    add_security_arguments(parser)


def _pg_system_id_arg(text: str) -> int:
    try:
        return parse_pg_system_id(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _ha_config(ns: argparse.Namespace) -> HaConfig | None:
    pgdata = getattr(ns, "postgres", None)
    if pgdata is None:
        for flag in ("pg_port", "pg_bin", "pg_hba"):
            if getattr(ns, flag, None) is not None:
                raise InvalidArgument(f"--{flag.replace('_', '-')} needs --postgres PGDATA")
        return None
    if ns.pg_port is None:
        raise InvalidArgument("--postgres needs --pg-port PORT",
                              hint="the TCP port this node's PostgreSQL listens on")
    lease = LeaseSettings(duration=ns.lease_duration / 1000.0,
                          renew_interval=ns.lease_renew_interval / 1000.0,
                          max_clock_drift=ns.max_clock_drift)
    config = HaConfig(pgdata=os.path.abspath(pgdata), pg_port=ns.pg_port,
                      pg_hba_file=ns.pg_hba, lease=lease)
    if ns.pg_bin is not None:
        config.pg_bin = ns.pg_bin
    return config


def config_from_args(ns: argparse.Namespace) -> NodeConfig:
    """The NodeConfig of parsed ``pgraft serve`` arguments (raises InvalidArgument)."""
    cluster = parse_cluster(ns.initial_cluster) if ns.initial_cluster else None
    config = NodeConfig(
        node_id=ns.node_id, address=ns.address, port=ns.port, data_dir=ns.data_dir,
        initial_cluster=cluster,
        initial_cluster_state=getattr(ns, "initial_cluster_state", "new"),
        initial_cluster_token=getattr(ns, "initial_cluster_token", DEFAULT_CLUSTER_TOKEN),
        election_timeout_ms=ns.election_timeout,
        heartbeat_interval_ms=ns.heartbeat_interval, listen_host=ns.listen_host,
        max_frame=ns.max_frame, max_pending_proposals=ns.max_pending_proposals,
        max_msg_bytes=min(16 * 1024 * 1024, max(1024 * 1024, ns.max_frame // 2)),
        snapshot_entries=getattr(ns, "snapshot_entries", 100_000),
        snapshot_bytes=getattr(ns, "snapshot_bytes", 256 * 1024 * 1024),
        snapshot_keep=getattr(ns, "snapshot_keep", 5000),
        segment_size=getattr(ns, "segment_size", 64 * 1024 * 1024),
        security=security_from_args(ns),
        pg_system_id=getattr(ns, "pg_system_id", None),
        ha=_ha_config(ns),
        http_port=getattr(ns, "http_port", None),
    )
    config.snapshot_chunk = min(config.snapshot_chunk, config.max_frame // 2)
    config.max_payload = min(config.max_payload, config.max_msg_bytes - 4096)
    config.extra["log_level"] = getattr(ns, "log_level", "INFO")
    config.extra["log_format"] = getattr(ns, "log_format", HUMAN)
    config.validate()
    return config

