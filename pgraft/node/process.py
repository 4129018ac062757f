"""The composition root of a node: open, build and wire everything; run it as a process.

:func:`start_node` opens the data directory (storage, identity), builds the Raft core and the
applied state (bootstrapping a new cluster on the first start, restoring the last snapshot on a
restart), the snapshot manager, the peer links, the client server and the listener, wires them
(each collaborator that calls back gets a small Protocol: the Node is the listener's
MessageSink, the peers' PeerEvents and the snapshots' SnapshotHost) and starts the Node's Ready
loop. Whatever it opened is closed again, in reverse order, when the node stops (or when a
later step fails).

:func:`run` is ``pgraft serve``: one node until SIGTERM/SIGINT (a leader hands the leadership
over first), or an immediate exit with status 2 on SIGQUIT; logging in the human or the
launcher format (:mod:`pgraft.node.logformat`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import inspect
import logging
import os
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import InvalidArgument, PgraftError
from ..raft import Config, RawNode
from ..state import AppliedState
from .config import NodeConfig, describe_membership, endpoint, format_cluster
from .identity import NodeIdentity, cluster_id_for
from .listener import Listener
from .logformat import HUMAN, configure_logging
from .metrics import Metrics
from .node import Node
from .peers import Peers
from .pgbinding import bind_pg_system_id
from .server import Server
from .snapshots import SnapshotManager
from .storage import SOCKET_FILE, DiskStorage

log = logging.getLogger("pgraft.node")

#: The exit status after SIGQUIT, as PostgreSQL's quickdie (``_exit(2)``).
EXIT_QUICKDIE = 2

#: Allocations between two young-generation collections in a node process (default 700).
GC_THRESHOLD = 50_000

#: Closes one resource: graceful (a clean stop) or not (as after a crash).
Closer = Callable[[bool], Awaitable[None] | None]


class Resources:
    """What the composition root opened, closed in reverse order, each once."""

    def __init__(self) -> None:
        self._closers: list[Closer] = []

    def add(self, closer: Closer) -> None:
        self._closers.append(closer)

    async def close(self, graceful: bool) -> None:
        closers = self._closers
        while closers:
            result = closers.pop()(graceful)
            if inspect.isawaitable(result):
                await result


def open_core(config: NodeConfig, storage: DiskStorage, identity: NodeIdentity,
              state: AppliedState) -> RawNode:
    """The Raft core over ``storage``: a brand-new cluster is bootstrapped (``initial_cluster``
    and an empty data directory), a restart resumes from the last snapshot (``state`` is
    restored from it) and the log after it."""
    node_id = config.node_id
    pristine = (storage.last_index() == 0 and storage.hard_state().term == 0
                and storage.snapshot_meta().index == 0)
    if config.initial_cluster is not None and pristine:
        if config.initial_cluster_state == "new":
            RawNode.bootstrap(storage, dict(config.initial_cluster))
            storage.sync()
            identity.set_cluster_id(cluster_id_for(config.initial_cluster,
                                                   config.initial_cluster_token))
            log.info("node %d bootstrapped a new cluster %s: %s", node_id,
                     identity.cluster_id, format_cluster(config.initial_cluster))
        else:
            log.info("node %d: empty data directory and --initial-cluster-state existing: "
                     "waiting to be contacted by the leader of the cluster", node_id)
    tick_s, hb_ticks, el_ticks = config.ticks()
    rng = random.Random(config.seed if config.seed is not None
                        else int.from_bytes(os.urandom(8), "little"))
    cfg = Config(node_id=node_id, election_ticks=el_ticks,
                 heartbeat_ticks=hb_ticks, max_msg_bytes=config.max_msg_bytes,
                 max_inflight=config.max_inflight,
                 max_uncommitted=max(config.max_pending_proposals, 1),
                 max_pending_reads=config.max_pending_reads,
                 applied=storage.snapshot_meta().index, rand=rng)
    snap = storage.snapshot_meta()
    if snap.index:  # restart from the snapshot (then the log tail is applied)
        state.restore(storage.snapshots.load_data())
        log.info("node %d: restored the snapshot at index %d (term %d); the log holds "
                 "%d..%d", node_id, snap.index, snap.term, storage.first_index(),
                 storage.last_index())
    raw = RawNode(cfg, storage)
    if snap.membership is not None and snap.index:
        state.set_membership(snap.index, snap.term, snap.membership)
    if config.initial_cluster is not None and not pristine:
        current = {i: (m.address, m.port) for i, m in raw.membership.items()}
        if current != dict(config.initial_cluster):
            log.warning("node %d: ignoring --initial-cluster (%s): the node was bootstrapped "
                        "before and its membership comes from its log (%s)", node_id,
                        format_cluster(config.initial_cluster),
                        describe_membership(raw.membership))
    return raw


async def start_node(config: NodeConfig, *,
                     loop: asyncio.AbstractEventLoop | None = None) -> Node:
    """Open the storage (bootstrapping on the first start), listen, and run one node; returns
    it running. Raises (having closed what it opened) if any of that fails."""
    config.validate()
    loop = loop or asyncio.get_running_loop()
    resources = Resources()
    bind: Callable[[str, bool], None] | None = None
    if config.pg_system_id is not None:
        pg_system_id = config.pg_system_id

        def bind_to_postgres(path: str, used_before: bool) -> None:
            bind_pg_system_id(path, pg_system_id, config.node_id, has_raft_state=used_before)

        bind = bind_to_postgres
    storage = DiskStorage(config.data_dir, config.node_id, segment_size=config.segment_size,
                          max_entry_size=config.max_msg_bytes, on_locked=bind)
    resources.add(lambda graceful: storage.close() if graceful else storage.abandon())
    try:
        # Zero and sync the log's space ahead of its tail now, while nothing waits: on the
        # first append it took ~10 ms (1 MiB), most of the time a node added to a running
        # cluster needed to acknowledge its first entries.
        storage.sync()
        identity = NodeIdentity(storage.path, config.node_id)
        # (closed after the listener, before the storage releases the directory's lock)
        resources.add(lambda graceful: identity.close())
        state = AppliedState()
        raw = open_core(config, storage, identity, state)
        metrics = Metrics()
        security = config.security.load()
        executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"pgraft-sync-{config.node_id}")

        async def shutdown_executor(graceful: bool) -> None:
            # Wait for a sync in flight: the log must not be closed under it.
            await loop.run_in_executor(None, executor.shutdown, True)

        resources.add(shutdown_executor)
        snapshots = SnapshotManager(
            config.node_id, storage, state, raw, loop=loop, entries=config.snapshot_entries,
            nbytes=config.snapshot_bytes, keep=config.snapshot_keep,
            chunk_size=config.snapshot_chunk, window=config.snapshot_window,
            stall_timeout=max(1.0, 4 * config.election_timeout_ms / 1000.0))
        resources.add(lambda graceful: snapshots.close())
        peers = Peers(config.node_id, metrics, max_frame=config.max_frame,
                      max_queue_frames=config.peer_queue_frames,
                      max_queue_bytes=config.peer_queue_bytes,
                      advertise=(config.address, config.port), loop=loop, security=security,
                      peer_gate=identity)
        resources.add(lambda graceful: peers.close())
        node = Node(config, loop=loop, storage=storage, identity=identity, raw=raw,
                    state=state, metrics=metrics, peers=peers, snapshots=snapshots,
                    executor=executor, close_resources=resources.close)
        peers.attach(node)
        snapshots.attach(node)
        server = Server(node)
        resources.add(lambda graceful: server.close())
        listener = Listener(
            config.node_id, config.listen_host or config.address, config.port, node, server,
            metrics, peers,
            unix_path=os.path.join(storage.path, SOCKET_FILE) if config.unix_socket else None,
            max_frame=config.max_frame, loop=loop, security=security, peer_gate=identity)
        resources.add(lambda graceful: listener.close())
        await listener.start()
    except BaseException:
        await resources.close(graceful=False)
        raise
    node.start()
    if config.ha is not None:
        await _start_ha(node, config, resources)
    if config.http_port is not None:
        await _start_http(node, config, resources)
    members = raw.membership
    log.info("node %d listening on %s (data dir %s; %s; election timeout %d ms, "
             "heartbeat %d ms)", config.node_id, endpoint(config.address, listener.port),
             storage.path, f"members {describe_membership(members)}"
             if len(members) else "no members yet: waiting to be added",
             config.election_timeout_ms, config.heartbeat_interval_ms)
    return node


async def _start_ha(node: Node, config: NodeConfig, resources: Resources) -> None:
    """HA mode: the controller that runs this node's PostgreSQL (imported only here: it
    brings psycopg)."""
    assert config.ha is not None
    from ..ha.controller import HaController

    controller = HaController(node, config.ha)
    try:
        await controller.start()
    except BaseException:
        await node.stop()
        raise
    # Closed first (added last). After a crash (graceful False) the server is left alone:
    # a dying node takes no decision for it; its lease lapses and the cluster fences it.
    resources.add(lambda graceful: controller.stop(stop_postgres=graceful))


async def _start_http(node: Node, config: NodeConfig, resources: Resources) -> None:
    """The HTTP endpoints for load balancers and /metrics (``--http-port``)."""
    assert config.http_port is not None
    from ..ha.http import HttpServer
    from ..ha.view import health_view

    server = HttpServer(config.listen_host or config.address, config.http_port,
                        lambda: health_view(node))
    try:
        await server.start()
    except OSError as exc:
        await node.stop()
        raise InvalidArgument(f"cannot listen for HTTP on port {config.http_port}: "
                              f"{exc.strerror}",
                              hint="choose a free port for --http-port") from None
    node.extra_ports["http"] = server.port
    resources.add(lambda graceful: server.close())


def install_quickdie(node_id: int, handler: logging.Handler | None = None) -> None:
    """SIGQUIT: exit at once with status :data:`EXIT_QUICKDIE`, without cleanup (no final
    sync or hard state save, no goodbye to peers or clients, no atexit) and without a core
    dump, like PostgreSQL's quickdie. One line is written to stderr first (with ``os.write``:
    no lock that the interrupted code might hold), formatted by ``handler``.

    The PostgreSQL launcher execs the node with SIGQUIT ignored (SIG_IGN), so that one that
    arrives before this is installed cannot dump core; this handler replaces that. It is a
    Python-level handler: it runs as soon as the main thread runs Python code again, at once
    on a waiting event loop, or when a sync the loop thread is inside returns (PostgreSQL's
    SIGKILL a few seconds after its SIGQUIT bounds that wait)."""
    def quickdie(signum: int, frame: object) -> None:
        try:
            record = log.makeRecord(log.name, logging.INFO, __file__, 0,
                                    "node %d: SIGQUIT: exiting at once, without cleanup",
                                    (node_id,), None)
            line = handler.format(record) if handler is not None else record.getMessage()
            os.write(2, (line + "\n").encode("utf-8", "replace"))
        except Exception:  # nothing may stop the exit
            pass
        os._exit(EXIT_QUICKDIE)

    signal.signal(signal.SIGQUIT, quickdie)


async def _stop_gracefully(node: Node, hurry: asyncio.Event,
                           failed: asyncio.Task[BaseException | None]) -> None:
    """SIGTERM/SIGINT: a leader hands over first (:meth:`Node.hand_over_leadership`); a
    second signal, or the node failing, ends the wait."""
    loop = asyncio.get_running_loop()
    handover = loop.create_task(node.hand_over_leadership())
    hurried = loop.create_task(hurry.wait())
    try:
        await asyncio.wait([handover, hurried, failed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        hurried.cancel()
        if not handover.done():
            handover.cancel()
            if hurry.is_set():
                log.warning("node %d: stop signal again: stopping without waiting for the "
                            "leadership handover", node.node_id)
            with contextlib.suppress(asyncio.CancelledError):
                await handover


def run(config: NodeConfig) -> int:
    """Run a node until SIGTERM/SIGINT (a leader hands over first); returns the process exit
    code: 0 after a clean stop, 1 if it cannot start or failed. SIGQUIT exits at once with
    :data:`EXIT_QUICKDIE` (:func:`install_quickdie`)."""
    handler = configure_logging(config.extra.get("log_level", "INFO"),
                                config.extra.get("log_format", HUMAN))
    install_quickdie(config.node_id, handler)
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
        try:
            node = await start_node(config)
        except PgraftError as exc:
            log.error("node %d cannot start: %s%s", config.node_id, exc.message,
                      f" (hint: {exc.hint})" if exc.hint else "")
            return 1
        stop = asyncio.Event()
        hurry = asyncio.Event()  # a second SIGTERM/SIGINT: stop waiting for the handover

        def on_stop_signal() -> None:
            if stop.is_set():
                hurry.set()
            stop.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_stop_signal)
        stopped = loop.create_task(stop.wait())
        failed = loop.create_task(node.wait_failed())
        await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set() and not failed.done():
            await _stop_gracefully(node, hurry, failed)
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
