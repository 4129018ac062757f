"""The running node: the Raft core driven on uvloop, with durable storage, peers and clients.

``pgraft serve`` is :func:`add_serve_arguments` + :func:`config_from_args` + :func:`run`.

The Ready loop (one task per node) follows the contract of :class:`pgraft.raft.Ready`:

1. take a Ready; update the role/leader and the peers' addresses;
2. send its messages at once — the core only puts there what may leave before this Ready is
   durable (the leader's AppendEntries go out in parallel with its own write; acknowledgements
   are held back by the core until ``advance``);
3. write the snapshot metadata, entries and hard state into the storage (memory-mapped, cheap);
4. apply the committed entries (already durable) to :class:`pgraft.state.AppliedState`,
   resolving proposal futures (by index and term) and ReadIndex waiters;
5. if the Ready must be durable, ``sync``. A busy leader (more than one proposal waiting) syncs
   in a worker thread: while that runs the event loop keeps stepping messages and taking
   proposals; they all land in the next Ready, whose entries are written and synced together
   (group commit). A follower, and a leader with at most one proposal waiting, sync on the loop
   thread: there is nothing to overlap with the sync but more traffic, which waits in the
   socket and lands in the next Ready just the same, and the two thread hand-overs per sync
   cost more CPU than everything else a node does for an append (measured on the 2-vCPU test
   VM: CPU per sequential append about 390 -> 230 us per follower, and ~20% less in total with
   the idle leader inline too);
6. ``advance``.

Every Raft decision stays in the core (DESIGN rule 1): the node never decides who leads, what
commits, or whether a membership change is allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import heapq
import logging
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .._impl import core
from ..errors import (
    InvalidArgument,
    NotLeaderError,
    OutcomeUnknown,
    Overloaded,
    PayloadTooLarge,
    PgraftError,
    StorageFull,
    Timeout,
    Unavailable,
    UnknownNode,
)
from ..raft import (
    ADD_LEARNER,
    LEADER,
    REMOVE,
    VOTER,
    ConfChange,
    Config,
    Membership,
    RawNode,
    Ready,
    SoftState,
)
from ..raft.membership import EMPTY, validate_address, validate_node_id
from ..state import (
    _APPEND_PREFIX,
    TAG_APPEND,
    AppliedState,
    Member,
    describe_entry_data,
    encode_kv_delete,
    encode_kv_put,
)
from .identity import DEFAULT_CLUSTER_TOKEN, NodeIdentity, cluster_id_for
from .listener import Transport
from .metrics import Metrics
from .security import SecurityConfig, add_security_arguments, security_from_args
from .server import Server
from .snapshots import MSG_SNAP, MSG_SNAP_RESP, SnapshotManager
from .storage import SOCKET_FILE, DiskStorage

log = logging.getLogger("pgraft.node")

ENTRY_CONF_CHANGE = core.ENTRY_CONF_CHANGE
RECORD_HEADER_SIZE = core.RECORD_HEADER_SIZE
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
_SNAP_TYPES = frozenset((MSG_SNAP, MSG_SNAP_RESP))
#: Allocations between two young-generation collections in a node process (default 700).
GC_THRESHOLD = 50_000


# --------------------------------------------------------------------------- config
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
    #: Snapshot after this many applied entries (0 = never by count; see pgraft.snapshot).
    snapshot_entries: int = 100_000
    #: ... or after this many bytes were added to the log (0 = never by size).
    snapshot_bytes: int = 256 * 1024 * 1024
    #: Entries kept in the log behind a snapshot, for followers that lag a little.
    snapshot_keep: int = 5000
    #: InstallSnapshot chunk size, and chunks in flight per transfer.
    snapshot_chunk: int = 1024 * 1024
    snapshot_window: int = 4
    seed: int | None = None
    #: Cluster secret, TLS and connection limits (pgraft.security, README: Security).
    security: SecurityConfig = field(default_factory=SecurityConfig)
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
        ident, sep, endpoint = part.partition("=")
        if not sep:
            raise InvalidArgument(f"initial cluster member {part!r} is not ID=HOST:PORT",
                                  hint='e.g. "1=10.0.0.11:7001,2=10.0.0.12:7002"')
        try:
            node_id = int(ident.strip())
        except ValueError:
            raise InvalidArgument(f"node id {ident!r} in the initial cluster is not an "
                                  "integer") from None
        host, port = parse_endpoint(endpoint.strip())
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
    return ",".join(f"{i}={_endpoint(a, p)}" for i, (a, p) in sorted(cluster.items()))


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


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
    add_security_arguments(parser)


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
    )
    config.snapshot_chunk = min(config.snapshot_chunk, config.max_frame // 2)
    config.max_payload = min(config.max_payload, config.max_msg_bytes - 4096)
    config.extra["log_level"] = getattr(ns, "log_level", "INFO")
    config.validate()
    return config


def run(config: NodeConfig) -> int:
    """Run a node until SIGTERM/SIGINT; returns the process exit code."""
    logging.basicConfig(level=config.extra.get("log_level", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The sync thread hands the GIL back to the event loop when its fdatasync/msync returns;
    # with the default 5 ms switch interval that hand-over can dominate commit latency.
    sys.setswitchinterval(0.0002)
    # Every request allocates a few short-lived container objects; with the default threshold
    # (700) the cyclic collector ran thousands of times a second and took ~10% of a busy
    # leader's time (py-spy). What exists at startup is moved out of its way (freeze).
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    uvloop: Any
    try:
        import uvloop
    except ImportError:
        uvloop = None

    async def main() -> int:
        node = Node(config)
        try:
            await node.start()
        except PgraftError as exc:
            log.error("node %d cannot start: %s%s", config.node_id, exc.message,
                      f" (hint: {exc.hint})" if exc.hint else "")
            await node.stop()
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stopped = loop.create_task(stop.wait())
        failed = loop.create_task(node.wait_failed())
        await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if failed.done() and not failed.cancelled() and failed.result() is not None:
            log.error("node %d failed: %s", config.node_id, failed.result())
            code = 1
        stopped.cancel()
        failed.cancel()
        log.info("node %d stopping", config.node_id)
        await node.stop()
        log.info("node %d stopped", config.node_id)
        return code

    if uvloop is not None:
        return uvloop.run(main())
    return asyncio.run(main())


# ------------------------------------------------------------------------------ node
class _Pending:
    __slots__ = ("term", "future", "started")

    def __init__(self, term: int, future: asyncio.Future[Any], started: float) -> None:
        self.term = term
        self.future = future
        self.started = started


class Node:
    """One pgraft node in this process: storage, Raft core, transport, client server."""

    def __init__(self, config: NodeConfig, *, loop: asyncio.AbstractEventLoop | None = None
                 ) -> None:
        config.validate()
        self.config = config
        self.node_id = config.node_id
        self._loop = loop
        self.metrics = Metrics()
        self.state = AppliedState()
        self.storage: DiskStorage | None = None
        self.identity: NodeIdentity | None = None
        self.raw: RawNode | None = None
        self.transport: Transport | None = None
        self.server: Server | None = None
        self.role = "follower"
        self.leader_id = 0
        self._applied_membership: Membership = EMPTY
        self._peer_book: dict[int, tuple[str, int]] = {}
        self._peer_membership: Membership | None = None
        self._pending: dict[int, _Pending] = {}
        self._reads: dict[bytes, asyncio.Future[Any]] = {}
        self._read_waiters: list[tuple[int, int, asyncio.Future[Any]]] = []
        self._read_seq = 0
        # ReadIndex contexts are unique across nodes and restarts (node id, a random boot
        # nonce, a counter): the leader matches acknowledgements by context.
        self._read_prefix = config.node_id.to_bytes(8, "little") + os.urandom(8)
        self._leader_waiters: list[tuple[int, asyncio.Future[Any]]] = []
        self._apply_waiters: list[tuple[int, int, asyncio.Future[Any]]] = []
        self._waiter_seq = 0
        self._wake: asyncio.Future[None] | None = None
        self._kicked = False
        self._ready_task: asyncio.Task[None] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self._tick_s, self._hb_ticks, self._el_ticks = config.ticks()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._running = False
        self._failed: asyncio.Future[BaseException | None] | None = None
        self._syncing = False
        #: Set while the data directory's file system is full (see _wait_for_space).
        self._disk_full: StorageFull | None = None
        self.snapshots: SnapshotManager | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the storage (bootstrapping on the first start), listen, and run."""
        config = self.config
        loop = self.loop
        self._failed = loop.create_future()
        self.storage = storage = DiskStorage(config.data_dir, config.node_id,
                                             segment_size=config.segment_size,
                                             max_entry_size=config.max_msg_bytes)
        try:
            self.identity = NodeIdentity(storage.path, config.node_id)
            self._open_core()
            self.snapshots = SnapshotManager(
                self, storage, entries=config.snapshot_entries, nbytes=config.snapshot_bytes,
                keep=config.snapshot_keep, chunk_size=config.snapshot_chunk,
                window=config.snapshot_window,
                stall_timeout=max(1.0, 4 * config.election_timeout_ms / 1000.0))
            self._executor = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"pgraft-sync-{config.node_id}")
            self.server = Server(self)
            self.transport = Transport(
                config.node_id, config.listen_host or config.address, config.port, self,
                self.server, self.metrics,
                unix_path=os.path.join(storage.path, SOCKET_FILE) if config.unix_socket
                else None,
                max_frame=config.max_frame, max_queue_frames=config.peer_queue_frames,
                max_queue_bytes=config.peer_queue_bytes,
                advertise=(config.address, config.port), loop=loop,
                security=config.security.load(), peer_gate=self.identity)
            await self.transport.start()
        except BaseException:
            await self._close_resources(graceful=False)
            raise
        self._running = True
        self._update_peers()
        self._next_tick = loop.time() + self._tick_s
        self._tick_handle = loop.call_at(self._next_tick, self._on_tick)
        self._ready_task = loop.create_task(self._ready_loop(), name=f"pgraft-ready-{self.node_id}")
        assert self.raw is not None  # created above
        members = self.raw.membership
        log.info("node %d listening on %s (data dir %s; %s; election timeout %d ms, "
                 "heartbeat %d ms)", self.node_id, _endpoint(config.address, self.transport.port),
                 storage.path, f"members {_describe_membership(members)}"
                 if len(members) else "no members yet: waiting to be added",
                 config.election_timeout_ms, config.heartbeat_interval_ms)

    def _open_core(self) -> None:
        config = self.config
        storage = self.storage
        assert storage is not None
        pristine = (storage.last_index() == 0 and storage.hard_state().term == 0
                    and storage.snapshot_meta().index == 0)
        identity = self.identity
        assert identity is not None
        if config.initial_cluster is not None and pristine:
            if config.initial_cluster_state == "new":
                RawNode.bootstrap(storage, dict(config.initial_cluster))
                storage.sync()
                identity.set_cluster_id(cluster_id_for(config.initial_cluster,
                                                       config.initial_cluster_token))
                log.info("node %d bootstrapped a new cluster %s: %s", self.node_id,
                         identity.cluster_id, format_cluster(config.initial_cluster))
            else:
                log.info("node %d: empty data directory and --initial-cluster-state existing: "
                         "waiting to be contacted by the leader of the cluster", self.node_id)
        rng = random.Random(config.seed if config.seed is not None
                            else int.from_bytes(os.urandom(8), "little"))
        cfg = Config(node_id=config.node_id, election_ticks=self._el_ticks,
                     heartbeat_ticks=self._hb_ticks, max_msg_bytes=config.max_msg_bytes,
                     max_inflight=config.max_inflight,
                     max_uncommitted=max(config.max_pending_proposals, 1),
                     max_pending_reads=config.max_pending_reads,
                     applied=storage.snapshot_meta().index, rand=rng)
        snap = storage.snapshot_meta()
        if snap.index:  # restart from the snapshot (then the log tail is applied)
            self.state.restore(storage.snapshots.load_data())
            log.info("node %d: restored the snapshot at index %d (term %d); the log holds "
                     "%d..%d", self.node_id, snap.index, snap.term, storage.first_index(),
                     storage.last_index())
        self.raw = RawNode(cfg, storage)
        if snap.membership is not None and snap.index:
            self._set_applied_membership(snap.index, snap.term, snap.membership, quiet=True)
        if config.initial_cluster is not None and not pristine:
            current = {i: (m.address, m.port) for i, m in self.raw.membership.items()}
            if current != dict(config.initial_cluster):
                log.warning("node %d: ignoring --initial-cluster (%s): the node was bootstrapped "
                            "before and its membership comes from its log (%s)", self.node_id,
                            format_cluster(config.initial_cluster),
                            _describe_membership(self.raw.membership))

    async def stop(self) -> None:
        """Stop cleanly: finish the Ready in progress, sync, close everything."""
        await self._shutdown(graceful=True)

    async def crash(self) -> None:
        """Stop abruptly, like a killed process: no final hard-state save, connections reset.
        (What was written to the mapped log stays in the page cache, as after kill -9.)"""
        await self._shutdown(graceful=False)

    async def _shutdown(self, graceful: bool) -> None:
        was_running = self._running
        self._running = False
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        task = self._ready_task
        self._ready_task = None
        if task is not None:
            if graceful:
                self._kick()
                with contextlib.suppress(TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), 5.0)
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_all(Unavailable(f"node {self.node_id} is stopping",
                                   hint="retry on another node or once it has restarted"),
                       OutcomeUnknown(f"node {self.node_id} stopped before the write was "
                                      "applied here; its entry is in the log and may commit",
                                      hint="read the state back on another node before "
                                           "retrying the write"))
        await self._close_resources(graceful=graceful)
        if self._failed is not None and not self._failed.done():
            self._failed.set_result(None)
        if was_running and not graceful:
            log.info("node %d crashed (simulated)", self.node_id)

    async def _close_resources(self, graceful: bool) -> None:
        if self.server is not None:
            self.server.close()
        if self.transport is not None:
            await self.transport.close()
            self.transport = None
        if self.snapshots is not None:
            await self.snapshots.close()
        if self._executor is not None:
            # Wait for a sync in flight: the log must not be closed under it.
            await self.loop.run_in_executor(None, self._executor.shutdown, True)
            self._executor = None
        if self.storage is not None:
            storage = self.storage
            self.storage = None
            if graceful:
                storage.close()
            else:
                storage.abandon()

    async def wait_failed(self) -> BaseException | None:
        """Returns when the node stops; the exception that stopped it, if any."""
        assert self._failed is not None
        return await asyncio.shield(self._failed)

    # ----------------------------------------------------------------- driving
    def _kick(self) -> None:
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)
        else:
            self._kicked = True

    def _on_tick(self) -> None:
        if not self._running:
            return
        loop = self.loop
        now = loop.time()
        self._next_tick += self._tick_s
        if self._next_tick < now - 10 * self._tick_s:
            self._next_tick = now + self._tick_s  # the loop stalled: do not burst ticks
        self._tick_handle = loop.call_at(self._next_tick, self._on_tick)
        assert self.raw is not None
        self.raw.tick()
        self._kick()

    def receive_messages(self, messages: list[Any]) -> None:
        """Transport callback: messages from a peer."""
        raw = self.raw
        if raw is None or not self._running:
            return
        step = raw.step
        for m in messages:
            if m.type in _SNAP_TYPES:  # chunks and their acks: pgraft.snapshot
                self.snapshots.on_message(m)  # type: ignore[union-attr]
                continue
            try:
                step(m)
            except PgraftError as exc:
                log.warning("node %d: ignored message %d from node %d: %s", self.node_id,
                            m.type, m.src, exc.message)
        self._kick()

    def report_unreachable(self, peer_id: int) -> None:
        if self.raw is not None and self._running:
            self.raw.report_unreachable(peer_id)
            self._kick()

    async def _ready_loop(self) -> None:
        raw = self.raw
        storage = self.storage
        transport = self.transport
        snapshots = self.snapshots
        assert raw is not None and storage is not None and transport is not None
        assert snapshots is not None
        loop = self.loop
        metrics = self.metrics
        try:
            while self._running:
                if self._kicked:
                    self._kicked = False
                if not raw.has_ready():
                    wake = loop.create_future()
                    self._wake = wake
                    if self._kicked:
                        self._kicked = False
                        self._wake = None
                        continue
                    await wake
                    continue
                rd = raw.ready()
                metrics.ready_batches += 1
                if rd.soft_state is not None:
                    self._on_soft_state(rd)
                if raw.membership is not self._peer_membership:
                    self._update_peers()
                if rd.messages:
                    transport.send(snapshots.intercept(rd.messages))
                if rd.snapshot is not None:
                    await snapshots.install(rd.snapshot)  # restores state, resets the log
                if rd.entries:
                    self._on_append(rd.entries)
                    try:
                        storage.append(rd.entries)
                    except StorageFull as exc:
                        await self._wait_for_space(exc, storage.append, rd.entries)
                    metrics.entries_persisted += len(rd.entries)
                if rd.hard_state is not None:
                    storage.set_hard_state(rd.hard_state)
                if rd.committed_entries:
                    self._apply(rd.committed_entries)
                if rd.read_states:
                    self._on_read_states(rd)
                if rd.must_sync or rd.entries:
                    started = time.perf_counter()
                    self._syncing = True
                    try:
                        if self.role != LEADER or len(self._pending) <= 1:
                            storage.sync()  # see the module docstring, step 5
                        else:
                            await loop.run_in_executor(self._executor, storage.sync)
                    finally:
                        self._syncing = False
                    metrics.syncs += 1
                    metrics.sync_latency.observe(time.perf_counter() - started)
                raw.advance(rd)
                snapshots.after_ready()  # take a snapshot, or compact after one
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("node %d: the Ready loop failed; stopping", self.node_id)
            self._running = False
            if self._failed is not None and not self._failed.done():
                self._failed.set_result(exc)
            self._fail_all(Unavailable(f"node {self.node_id} failed: {exc}"),
                           OutcomeUnknown(f"node {self.node_id} failed before the write was "
                                          f"applied here ({exc}); its entry is in the log and "
                                          "may commit",
                                          hint="read the state back on another node before "
                                               "retrying the write"))

    async def _wait_for_space(self, exc: StorageFull, write: Any, *args: Any) -> None:
        """The file system is full: ``write`` wrote nothing. Retry it until it fits. The Ready
        stays outstanding meanwhile -- nothing it acknowledges is sent -- while the loop goes
        on stepping messages: a leader stops heartbeating, so a healthy node takes over within
        an election timeout; new proposals are refused with StorageFull."""
        self._disk_full = exc
        self.metrics.disk_full_events += 1
        log.error("node %d cannot write its log: %s; it stops acknowledging (a leader hands "
                  "over to a healthy node) and retries until space is freed", self.node_id,
                  exc.message)
        loop = self.loop
        raw = self.raw
        assert raw is not None
        delay = 0.05
        next_try = loop.time() + delay
        while True:
            await asyncio.sleep(0.05)
            if not self._running:
                raise exc
            # The core goes on stepping messages (a new leader's heartbeats demote this node):
            # clients must be sent to the real leader, not told that this node still leads.
            if raw.role != self.role or raw.leader_id != self.leader_id:
                self._apply_soft_state(SoftState(raw.leader_id, raw.role))
            if loop.time() < next_try:
                continue
            try:
                write(*args)
            except StorageFull as again:
                exc = again
                delay = min(delay * 2, 1.0)
                next_try = loop.time() + delay
                continue
            break
        self._disk_full = None
        log.info("node %d: the data directory has space again; resuming", self.node_id)

    # -------------------------------------------------------------- Ready parts
    def _on_soft_state(self, rd: Ready) -> None:
        assert rd.soft_state is not None
        self._apply_soft_state(rd.soft_state)

    def _apply_soft_state(self, ss: SoftState) -> None:
        assert self.raw is not None
        term = self.raw.term
        if ss.role != self.role:
            self.metrics.role_changes += 1
            log.info("node %d: %s -> %s in term %d", self.node_id, self.role, ss.role, term)
            if self.role == LEADER and ss.role != LEADER:
                self._fail_reads(NotLeaderError(
                    f"node {self.node_id} lost the leadership while the read was pending",
                    node_id=self.node_id, leader_id=ss.leader_id or None,
                    leader_address=self._address_of(ss.leader_id)))
        if ss.leader_id != self.leader_id:
            if ss.leader_id:
                self.metrics.leader_changes += 1
                if ss.leader_id != self.node_id:
                    log.info("node %d: leader is node %d in term %d", self.node_id,
                             ss.leader_id, term)
            for entry in list(self._leader_waiters):
                target, fut = entry
                if target == ss.leader_id:
                    self._leader_waiters.remove(entry)
                    if not fut.done():
                        fut.set_result(True)
        self.role = ss.role
        self.leader_id = ss.leader_id

    def _update_peers(self) -> None:
        raw = self.raw
        transport = self.transport
        if raw is None or transport is None:
            return
        membership = raw.membership
        self._peer_membership = membership
        book = {i: (m.address, m.port) for i, m in self._applied_membership.items()}
        book.update((i, (m.address, m.port)) for i, m in membership.items())
        book.pop(self.node_id, None)
        if book != self._peer_book:
            self._peer_book = book
            transport.set_peers(book)

    def _on_append(self, entries: list[Any]) -> None:
        """Entries about to be written: fail the proposals they overwrite."""
        pending = self._pending
        if not pending:
            return
        first = entries[0].index
        if first > self.storage.last_index():  # type: ignore[union-attr]
            return
        for index in [i for i in pending if i >= first]:
            off = index - first
            p = pending[index]
            if off < len(entries) and entries[off].term == p.term:
                continue
            del pending[index]
            self._fail_overwritten(index, p)

    def _fail_overwritten(self, index: int, p: _Pending, *, certain: bool = False) -> None:
        """``certain``: a committed entry of another term was applied at ``index``. Otherwise
        the entry was only replaced in this node's log, and a node that still holds it may
        become leader and commit it (Raft's Figure 8): the outcome is unknown."""
        self.metrics.proposals_failed += 1
        if p.future.done():
            return
        if certain:
            p.future.set_exception(Unavailable(
                f"the entry proposed at index {index} in term {p.term} was replaced by another "
                "leader's entry: it was not committed",
                hint="the leader changed while the request was pending; retry on the new "
                     "leader"))
        else:
            p.future.set_exception(OutcomeUnknown(
                f"the entry proposed at index {index} in term {p.term} was replaced in this "
                "node's log by another leader's entry; its outcome is unknown (a node that "
                "still holds it may become leader and commit it)",
                hint="the leader changed while the request was pending; check whether it took "
                     "effect before retrying on the new leader"))

    def _apply(self, entries: list[Any]) -> None:
        state = self.state
        pending = self._pending
        apply_normal = state.apply_normal
        metrics = self.metrics
        now = time.perf_counter()
        observe = metrics.commit_latency.observe
        for e in entries:
            index = e.index
            if e.type == ENTRY_CONF_CHANGE:
                result: Any = self._apply_conf_change(e)
            else:
                data = e.data
                if not data:
                    result = None  # a leader's no-op
                elif data[0] == TAG_APPEND:
                    result = index  # a user append changes nothing but the applied index
                else:
                    result = apply_normal(index, e.term, data)
            if pending:
                p = pending.pop(index, None)
                if p is not None:
                    if p.term == e.term:
                        observe(now - p.started)
                        if not p.future.done():
                            p.future.set_result(True if result is None else result)
                    else:
                        self._fail_overwritten(index, p, certain=True)
        metrics.entries_applied += len(entries)
        last = entries[-1]
        state.mark_applied(last.index, last.term)
        applied = state.applied_index
        if self._read_waiters and self._read_waiters[0][0] <= applied:
            self._release_reads(applied)
        if self._apply_waiters and self._apply_waiters[0][0] <= applied:
            waiters = self._apply_waiters
            while waiters and waiters[0][0] <= applied:
                _, _, fut = heapq.heappop(waiters)
                if not fut.done():
                    fut.set_result(None)

    def _apply_conf_change(self, e: Any) -> bool:
        before = self._applied_membership
        after = before.apply_entry_data(e.data)
        self._set_applied_membership(e.index, e.term, after, previous=before)
        return True

    def _set_applied_membership(self, index: int, term: int, after: Membership, *,
                                previous: Membership | None = None, quiet: bool = False
                                ) -> None:
        self._applied_membership = after
        self.state.set_membership(index, term, [
            Member(i, m.address, m.port, m.role) for i, m in after.items()])
        if not quiet:
            self._log_membership(index, previous or EMPTY, after)
        self._update_peers()

    def _log_membership(self, index: int, before: Membership, after: Membership) -> None:
        if not len(before):
            log.info("node %d: membership at index %d: %s", self.node_id, index,
                     _describe_membership(after))
            return
        for i, m in after.items():
            old = before.get(i)
            if old is None:
                log.info("node %d: membership: node %d added at %s as %s (index %d)",
                         self.node_id, i, _endpoint(m.address, m.port), m.role, index)
            elif old.role != m.role:
                log.info("node %d: membership: node %d is now a %s (index %d)", self.node_id,
                         i, m.role, index)
        for i in before:
            if i not in after:
                log.info("node %d: membership: node %d removed (index %d)", self.node_id, i,
                         index)

    def _on_snapshot(self, meta: Any) -> None:
        """A received snapshot was installed (pgraft.snapshot restored the applied state from
        its data): the membership view follows it, and waiters up to its index are released."""
        if meta.membership is not None:
            self._set_applied_membership(meta.index, meta.term, meta.membership,
                                         previous=self._applied_membership)
        self.state.mark_applied(meta.index, meta.term)
        # Proposals at or below the snapshot will never be applied here one by one: whether
        # they committed is unknown to this node (the snapshot carries no per-entry record).
        # Those above it whose entry the install dropped from the log are gone from here too:
        # each is answered now, exactly once, rather than left to time out (or to be
        # overwritten in _pending by a later proposal at the same index).
        log_term = self.raw.log.term if self.raw is not None else (lambda _i: None)
        pending = self._pending
        for index in [i for i, p in pending.items()
                      if i <= meta.index or log_term(i) != p.term]:
            self._fail_overwritten(index, pending.pop(index))
        applied = self.state.applied_index
        self._release_reads(applied)
        waiters = self._apply_waiters
        while waiters and waiters[0][0] <= applied:
            _, _, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(None)

    def _on_read_states(self, rd: Ready) -> None:
        applied = self.state.applied_index
        for rs in rd.read_states:
            fut = self._reads.pop(rs.context, None)
            if fut is None or fut.done():
                continue
            if rs.refused:
                fut.set_result(None)  # the caller retries
                continue
            if rs.index <= applied:
                fut.set_result(rs.index)
            else:
                self._waiter_seq += 1
                heapq.heappush(self._read_waiters, (rs.index, self._waiter_seq, fut))

    def _release_reads(self, applied: int) -> None:
        waiters = self._read_waiters
        while waiters and waiters[0][0] <= applied:
            index, _, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(index)

    def _fail_reads(self, exc: PgraftError) -> None:
        for fut in self._reads.values():
            if not fut.done():
                fut.set_exception(exc)
        self._reads.clear()
        for _, _, fut in self._read_waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._read_waiters.clear()

    def _fail_all(self, exc: PgraftError, proposals_exc: OutcomeUnknown) -> None:
        """Fail every waiter with ``exc``; proposals (whose entries are in the log) with
        ``proposals_exc``."""
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(proposals_exc)
        self._pending.clear()
        self._fail_reads(exc)
        for _, fut in self._leader_waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._leader_waiters.clear()
        for _, _, fut in self._apply_waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._apply_waiters.clear()

    # ------------------------------------------------------------ client calls
    def _address_of(self, node_id: int) -> str | None:
        if not node_id:
            return None
        m = self._applied_membership.get(node_id)
        if m is None and self.raw is not None:
            m = self.raw.membership.get(node_id)
        return None if m is None else _endpoint(m.address, m.port)

    def _check_running(self) -> RawNode:
        if not self._running or self.raw is None:
            raise Unavailable(f"node {self.node_id} is not running")
        return self.raw

    def not_leader(self, what: str) -> PgraftError:
        lead = self.leader_id
        if not lead:
            return Unavailable(f"cannot {what}: this node ({self.node_id}) is not the leader "
                               "and no leader is known right now",
                               hint="an election is in progress, or this node cannot reach "
                                    "a majority; retry shortly")
        return NotLeaderError(f"cannot {what}: this node ({self.node_id}) is not the leader",
                              node_id=self.node_id, leader_id=lead,
                              leader_address=self._address_of(lead))

    def _propose(self, data: bytes, what: str, waiter: Any = None) -> Any:
        raw = self.raw
        if not self._running or raw is None:
            raise Unavailable(f"node {self.node_id} is not running")
        if self.role != LEADER or raw.role != LEADER:
            raise self.not_leader(what)
        if self._disk_full is not None:
            raise self._storage_full(what)
        pending = self._pending
        if len(pending) >= self.config.max_pending_proposals:
            self.metrics.proposals_dropped += 1
            raise Overloaded(f"{len(pending)} proposals are waiting to commit")
        index, term = raw.propose(data)
        if waiter is None:
            waiter = self.loop.create_future()
        if index in pending:
            self._fail_overwritten(index, pending[index])
        pending[index] = _Pending(term, waiter, time.perf_counter())
        self.metrics.proposals += 1
        if self._wake is not None:
            self._kick()
        else:
            self._kicked = True
        return waiter

    def propose_append(self, payload: bytes, waiter: Any = None) -> Any:
        """Append ``payload``; the future gives its index once committed and applied.

        ``waiter`` replaces the future: any object with ``done()``, ``set_result(value)`` and
        ``set_exception(exc)`` (the client server answers through one, with no future, callback
        or loop iteration per request)."""
        if len(payload) > self.config.max_payload:
            raise PayloadTooLarge(f"payload of {len(payload)} bytes is over the limit of "
                                  f"{self.config.max_payload} bytes",
                                  hint="split the data into smaller entries")
        return self._propose(_APPEND_PREFIX + payload, "append", waiter)

    def propose_kv_put(self, key: str, value: str, waiter: Any = None) -> Any:
        data = encode_kv_put(key, value)
        if len(data) > self.config.max_payload:
            raise PayloadTooLarge(f"key and value of {len(data)} bytes are over the limit of "
                                  f"{self.config.max_payload} bytes")
        return self._propose(data, "put a key", waiter)

    def propose_kv_delete(self, key: str, waiter: Any = None) -> Any:
        return self._propose(encode_kv_delete(key), "delete a key", waiter)

    def _storage_full(self, what: str) -> StorageFull:
        full = self._disk_full
        assert full is not None
        return StorageFull(f"cannot {what}: node {self.node_id} cannot write its log "
                           f"({full.message}); the write was not accepted",
                           hint="free space in the node's data directory (it resumes by "
                                "itself), or write through another node once one leads")

    def _change(self, cc: ConfChange, what: str) -> asyncio.Future[Any]:
        raw = self._check_running()
        if self.role != LEADER or raw.role != LEADER:
            raise self.not_leader(what)
        if self._disk_full is not None:
            raise self._storage_full(what)
        index, term = raw.propose_membership_change(cc)
        fut = self.loop.create_future()
        if index in self._pending:
            self._fail_overwritten(index, self._pending[index])
        self._pending[index] = _Pending(term, fut, time.perf_counter())
        self.metrics.proposals += 1
        self._kick()
        return fut

    async def add_node(self, node_id: int, address: str, port: int) -> None:
        """Add a node (as a learner; the leader promotes it once it has caught up); returns
        once the change is committed and applied here."""
        await self._change(ConfChange(ADD_LEARNER, node_id, address, port), "add node")

    async def remove_node(self, node_id: int) -> None:
        """Remove a node; returns once the change is committed and applied here."""
        await self._change(ConfChange(REMOVE, node_id), "remove node")

    async def linearizable_read(self) -> None:
        """Return once this node's applied state reflects every write committed before the call
        (ReadIndex). Retries while a new leader has not committed in its term yet."""
        raw = self._check_running()
        self.metrics.read_index_requests += 1
        delay = self._tick_s
        while True:
            if not self.leader_id:
                raise self.not_leader("read linearizably")
            self._read_seq += 1
            ctx = self._read_prefix + self._read_seq.to_bytes(8, "little")
            fut: asyncio.Future[Any] = self.loop.create_future()
            try:
                raw.read_index(ctx)
            except Unavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            self._reads[ctx] = fut
            self._kick()
            try:
                index = await fut
            finally:
                self._reads.pop(ctx, None)
            if index is not None:
                return
            await asyncio.sleep(delay)  # refused (no commit in the term yet): retry
            delay = min(delay * 2, 0.1)
            raw = self._check_running()

    async def transfer_leadership(self, node_id: int) -> None:
        """Hand the leadership to ``node_id``; returns once it is the leader (as seen here)."""
        raw = self._check_running()
        if self.role != LEADER:
            raise self.not_leader("transfer leadership")
        if node_id not in raw.membership:
            raise UnknownNode(f"node {node_id} is not a member of the cluster")
        if node_id == self.node_id:
            return
        fut: asyncio.Future[Any] = self.loop.create_future()
        entry = (node_id, fut)
        self._leader_waiters.append(entry)
        try:
            raw.transfer_leadership(node_id)
            self._kick()
            # The core gives up after an election timeout; allow for a full election more.
            limit = 3 * self._el_ticks * self._tick_s + 1.0
            try:
                await asyncio.wait_for(asyncio.shield(fut), limit)
            except TimeoutError:
                raise Timeout(f"leadership did not move to node {node_id} within "
                              f"{limit:.1f}s", hint="check that the node is running and "
                              "caught up, then retry") from None
        finally:
            if entry in self._leader_waiters:
                self._leader_waiters.remove(entry)

    async def wait_applied(self, index: int) -> None:
        """Return once this node has applied ``index``."""
        if self.state.applied_index >= index:
            return
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._waiter_seq += 1
        heapq.heappush(self._apply_waiters, (index, self._waiter_seq, fut))
        await fut

    # ------------------------------------------------------------------ reads
    @property
    def term(self) -> int:
        return self.raw.term if self.raw is not None else 0

    @property
    def is_leader(self) -> bool:
        return self.role == LEADER

    @property
    def port(self) -> int:
        return self.transport.port if self.transport is not None else self.config.port

    def get_nodes(self) -> list[dict[str, Any]]:
        return self.state.member_list(self.leader_id)

    def get_leader(self) -> dict[str, Any]:
        lead = self.leader_id
        return {"leader_id": lead or None, "address": self._address_of(lead)}

    def log_stats(self) -> dict[str, Any]:
        raw = self.raw
        storage = self.storage
        if raw is None or storage is None:
            raise Unavailable(f"node {self.node_id} is not running")
        st = raw.log
        return {"first_index": st.first_index(), "last_index": st.last_index(),
                "commit_index": st.committed, "applied_index": self.state.applied_index,
                "snapshot_index": storage.snapshot_meta().index,
                "log_bytes": storage.byte_size}

    def status(self) -> dict[str, Any]:
        raw = self.raw
        if raw is None:
            raise Unavailable(f"node {self.node_id} is not running")
        st = raw.status()
        progress = {i: {"match": p.match, "next": p.next, "state": p.state,
                        "recent_active": p.recent_active, "learner": p.learner}
                    for i, p in st.progress.items()}
        stats = self.log_stats()
        return {
            "node_id": self.node_id,
            "role": st.role,
            "term": st.term,
            "vote": st.vote,
            "leader_id": st.leader_id or None,
            "leader_address": self._address_of(st.leader_id),
            "commit_index": st.commit,
            "applied_index": self.state.applied_index,
            "first_index": stats["first_index"],
            "last_index": st.last_index,
            "snapshot_index": stats["snapshot_index"],
            "log_bytes": stats["log_bytes"],
            "snapshot": self.snapshots.status() if self.snapshots is not None else None,
            "num_nodes": len(self.state.members),
            "membership": st.membership.to_list(),
            "transferee": st.transferee or None,
            "progress": progress,
            "peers": {i: {"address": _endpoint(*a),
                          "connected": self.transport.peer_connected(i)
                          if self.transport is not None else False}
                      for i, a in self._peer_book.items()},
            "disk_full": self._disk_full.message if self._disk_full is not None else None,
            "cluster_id": self.identity.cluster_id if self.identity is not None else None,
            "incarnation": self.identity.incarnation if self.identity is not None else None,
            "refused_peers": {i: exc.message for i, exc in self.transport.refused.items()}
            if self.transport is not None else {},
            "implementation": core.__name__.rsplit(".", 1)[-1],
            "metrics": self.metrics.snapshot(
                term=st.term, role=st.role, commit_index=st.commit,
                applied_index=self.state.applied_index, last_index=st.last_index,
                progress=progress),
        }

    def get_entry(self, index: int) -> dict[str, Any] | None:
        storage = self.storage
        raw = self.raw
        if storage is None or raw is None:
            raise Unavailable(f"node {self.node_id} is not running")
        if index > raw.log.last_index():
            return None
        try:
            ents = raw.log.slice(index, index + 1, 1 << 62)
        except Exception:  # compacted
            return None
        if not ents:
            return None
        e = ents[0]
        if e.type == ENTRY_CONF_CHANGE:
            kind, data = "conf_change", bytes(e.data)
        else:
            kind, data = describe_entry_data(e.data)
        return {"index": e.index, "term": e.term, "type": e.type, "kind": kind,
                "data": data, "committed": e.index <= raw.log.committed}


def _describe_membership(m: Membership) -> str:
    if not len(m):
        return "none"
    return ", ".join(f"{i}={_endpoint(x.address, x.port)}" + ("" if x.role == VOTER
                                                              else " (learner)")
                     for i, x in m.items())


# The event loop policy: uvloop when available (DESIGN: the node runs on uvloop).
def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
