"""The HA loop of a node: feeds the lease policy, carries out its decisions, and keeps the
local PostgreSQL server where the Raft log says it belongs.

Every few tens of milliseconds (:data:`TICK`) the controller

1. keeps the lease file (read by PostgreSQL at every commit, postgres/README.md) equal to
   what the policy says this node may count on;
2. proposes the lease renewals the policy asks for (through the leader when it is not the
   leader itself: op ``ha_propose``);
3. on the Raft leader, once it has applied its term's entries: bootstraps, fails over (asking
   every member for a fresh observation first: op ``ha_observe``) or hands leadership to the
   primary's node;
4. moves the local PostgreSQL one step towards its place (pgraft.ha.pgctl, in a worker
   thread, one operation at a time): initdb, clone, start, promote, demote, rewind, follow.

Observations of the local server are refreshed by their own task (:data:`OBSERVE_EVERY`).
The controller keeps no HA state of its own beyond caches: what matters is in the log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import secrets
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from psycopg.conninfo import make_conninfo

from ..client.aio import AsyncClient, connect
from ..errors import InvalidArgument, PgraftError, Unavailable
from ..node.config import endpoint
from .config import HaConfig
from .lease import lease_clock
from .pgconf import Setting, ha_base_settings, replication_hba_lines
from .pgctl import PgControl
from .policy import Bootstrap, LeasePolicy, Promote, Renew, Transfer
from .records import MEMBER_COMMANDS, check_command
from .types import (
    PG_MISSING,
    PG_PRIMARY,
    PG_REPLICA,
    PG_STARTING,
    PG_STOPPED,
    PG_UNKNOWN,
    PgObservation,
)

if TYPE_CHECKING:
    from ..node.node import Node

log = logging.getLogger("pgraft.ha")

TICK = 0.05
OBSERVE_EVERY = 0.2
RPC_TIMEOUT = 0.5
SLOT_PREFIX = "pgraft_node_"
LEASE_MAGIC = b"PGRAFTL1"
#: A replica that is not streaming this long after it was pointed at the primary is
#: rewound (its timeline diverged, or its WAL is gone on the primary).
FOLLOW_PATIENCE = 15.0
RETRY_MIN, RETRY_MAX = 1.0, 30.0
#: pg_rewind failures against a running primary before the directory is set aside.
REWIND_ATTEMPTS = 3


def slot_name(node_id: int) -> str:
    return f"{SLOT_PREFIX}{node_id}"


class LeaseFile:
    """The file PostgreSQL reads at every commit: magic, then the deadline in CLOCK_BOOTTIME
    nanoseconds (0: no lease). Created once, then updated in place with one 8-byte write, so
    that backends may keep it open."""

    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            head = os.pread(fd, 16, 0)
            if len(head) != 16 or head[:8] != LEASE_MAGIC:
                os.pwrite(fd, LEASE_MAGIC + struct.pack("<q", 0), 0)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._written: int | None = None

    def set(self, deadline: float | None) -> None:
        """``deadline``: a lease_clock() value, or None for "no lease"."""
        ns = 0 if deadline is None or deadline == float("-inf") else int(deadline * 1e9)
        if ns != self._written:
            os.pwrite(self._fd, struct.pack("<q", ns), 8)
            self._written = ns

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.set(None)
        os.close(self._fd)


async def propose_member_command(node: Node, command: Any) -> bool:
    """Check a member's HA command (renewal, endpoint, ...) and propose it; whether it took
    effect. Also what a Raft leader without ``--postgres`` does for the members that run
    PostgreSQL (it takes no failover decision itself: docs/design.md)."""
    cmd = check_command(command)
    if cmd[0] not in MEMBER_COMMANDS:
        raise InvalidArgument(f"HA command {cmd[0]!r} is the leader's own decision",
                              hint=f"members may propose {', '.join(sorted(MEMBER_COMMANDS))}")
    return bool(await node.propose_ha(cmd))


class HaController:
    """Runs one node's PostgreSQL as the Raft log says (see the module docstring)."""

    def __init__(self, node: Node, config: HaConfig) -> None:
        self.node = node
        self.node_id = node.node_id
        self.config = config
        self.policy = LeasePolicy(node.node_id, config.lease)
        data_dir = node.storage.path

        def control() -> PgControl:
            return PgControl(config.pgdata, bindir=config.pg_bin, port=config.pg_port,
                             listen_addresses=node.config.listen_host or node.config.address,
                             socket_dir=data_dir,
                             log_path=os.path.join(data_dir, "postgres.log"),
                             superuser=config.superuser)

        # Two instances (PgControl is not thread-safe): operations, in the PostgreSQL
        # worker thread (the postmaster is its child), and observations, in their own
        # thread (they read postmaster.pid and query the server, never start anything).
        self.pg = control()
        self._view = control()
        self.lease_file = LeaseFile(os.path.join(data_dir, "ha_lease"))
        self.obs = PgObservation(role=PG_STOPPED, error="not observed yet")
        self.dir_state = "unknown"   # until the first observation
        self._fresh_clone = False
        self._rewind_failures = 0
        #: The timeline this replica last streamed on: once its upstream is gone, PostgreSQL
        #: only offers the last restartpoint's, which lags behind a timeline switch.
        self._stream_tli: int | None = None
        self._op_gen = 0   # bumped around every PostgreSQL operation (stale observations)
        self.state = "starting"
        self.refused: str | None = None
        self.seen_at: float | None = None
        self._seen_index = -1
        self._pg_exec = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pgraft-pg")
        self._obs_exec = concurrent.futures.ThreadPoolExecutor(1,
                                                               thread_name_prefix="pgraft-obs")
        self._tasks: list[asyncio.Task[None]] = []
        self._pg_task: asyncio.Task[None] | None = None
        self._leading: asyncio.Task[None] | None = None
        self._clients: dict[int, AsyncClient] = {}
        self._client_locks: dict[int, asyncio.Lock] = {}
        self._retry_at = 0.0
        self._retry = RETRY_MIN
        self._upstream: int | None = None      # the primary the replica config points at
        self._follow_since = 0.0
        self._needs_rewind = False
        self._maintained: tuple[int, frozenset[int]] | None = None
        self._announced = 0.0
        self._transfer_at = 0.0
        self._proposing: set[str] = set()
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._running = False
        self._warned_at: dict[str, float] = {}
        self._refused_on: tuple[str, int | None] | None = None
        self._rewind_noops = 0
        self._rewind_primary: int | None = None

    # ------------------------------------------------------------------ life cycle
    def attach(self) -> None:
        self.node.ha = self
        self.node.state.on_ha = self._on_ha_applied
        # Conservative start: a lease seen before this process started counts from now.
        self.seen_at = lease_clock()
        self._seen_index = self.node.state.ha.lease_index

    async def start(self) -> None:
        problem = self.pg.binaries_problem()
        if problem is not None:
            raise InvalidArgument(f"cannot run PostgreSQL: {problem}",
                                  hint="install PostgreSQL 15 (Debian: postgresql-15) or point "
                                       "--pg-bin at the directory that holds pg_ctl")
        self.attach()
        self._running = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._observe_loop()), loop.create_task(self._loop())]

    async def stop(self, stop_postgres: bool = True) -> None:
        """Stop the loops and (``stop_postgres``) PostgreSQL: a graceful node stop stops its
        server, as an operator stopping the service expects; the lease then lapses."""
        self._running = False
        if self.node.state.on_ha == self._on_ha_applied:
            self.node.state.on_ha = None
        tasks = [*self._tasks, *self._side_tasks]
        if self._leading is not None:
            tasks.append(self._leading)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._pg_task is not None:
            # An operation in its thread cannot be interrupted; wait a while for it (a base
            # backup may take long: the server is then stopped below, after it).
            with contextlib.suppress(asyncio.CancelledError, Exception, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pg_task), 15.0)
        loop = asyncio.get_running_loop()
        if stop_postgres:
            self.policy.drop_lease()
            self.lease_file.close()
            with contextlib.suppress(Exception):
                await loop.run_in_executor(self._pg_exec, self.pg.stop, "fast", 60)
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.close()
        self._pg_exec.shutdown(wait=False)
        self._obs_exec.shutdown(wait=False)

    # ------------------------------------------------------------------ log hooks
    def _on_ha_applied(self, kind: str, took: bool) -> None:
        ha = self.node.state.ha
        if ha.lease_index != self._seen_index or kind == "restore":
            self._seen_index = ha.lease_index
            self.seen_at = lease_clock()
        if ha.primary_id != self.node_id:
            self.policy.drop_lease()
            self.lease_file.set(None)

    # ------------------------------------------------------------------ loops
    def _upstreams(self) -> dict[tuple[str, int], int]:
        """(host, PostgreSQL port) -> node id, copied on the event loop (the log's state is
        changed there, the observation runs in a thread)."""
        return {(e.host, e.pg_port): i for i, e in self.node.state.ha.endpoints.items()}

    def _observe(self, upstreams: dict[tuple[str, int], int],
                 control: PgControl | None = None) -> tuple[str, PgObservation]:
        """(directory state, observation), in a worker thread: the observer's own
        PgControl unless ``control`` (the operations' one, in their thread)."""
        control = control or self._view
        return control.directory_state(), control.observe(upstreams)

    def _with_stream_timeline(self, obs: PgObservation) -> PgObservation:
        if obs.role != PG_REPLICA:
            self._stream_tli = None
            return obs
        if obs.streaming and obs.timeline is not None:
            self._stream_tli = obs.timeline
        elif self._stream_tli is not None and (obs.timeline or 0) < self._stream_tli:
            return dataclasses.replace(obs, timeline=self._stream_tli)
        return obs

    async def _observe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._running:
            gen = self._op_gen
            try:
                dir_state, obs = await loop.run_in_executor(self._obs_exec, self._observe,
                                                            self._upstreams())
            except Exception as exc:  # observe() should not raise; never let the loop die
                dir_state, obs = self.dir_state, PgObservation(role=PG_UNKNOWN, error=str(exc))
            # An observation that began before an operation ended may be stale: drop it.
            idle = self._pg_task is None or self._pg_task.done()
            if gen == self._op_gen:
                self.dir_state, self.obs = dir_state, self._with_stream_timeline(obs)
            if idle:
                # Reap the postmaster if it was our child and died (PostgreSQL alone crashed).
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(self._pg_exec, self.pg.running_pid)
            await asyncio.sleep(OBSERVE_EVERY)

    async def _loop(self) -> None:
        while self._running:
            try:
                self._tick()
            except Exception as exc:
                self._warn("tick", "node %d: HA step failed: %r", self.node_id, exc)
                log.debug("HA step failed", exc_info=True)
            await asyncio.sleep(TICK)

    def _spawn(self, coro: Any) -> None:
        """A side task (renewal, record) that :meth:`stop` waits for or cancels."""
        task = self.node.loop.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _warn(self, key: str, text: str, *args: Any) -> None:
        """A warning at most every 10 s per kind (the loop runs every 50 ms)."""
        now = lease_clock()
        if now - self._warned_at.get(key, -1e9) >= 10.0:
            self._warned_at[key] = now
            log.warning(text, *args)

    def _tick(self) -> None:
        now = lease_clock()
        node = self.node
        ha = node.state.ha
        self.lease_file.set(self.policy.deadline(ha))
        loop = node.loop
        renew = self.policy.holder_step(now, ha, self.obs)
        if renew is not None:
            self._spawn(self._renew(renew))
        if (node.is_leader and node.applied_current_term
                and (self._leading is None or self._leading.done())):
            self._leading = loop.create_task(self._lead(now))
        self._announce(now)
        if (self._pg_task is None or self._pg_task.done()) and now >= self._retry_at:
            step = self._next_pg_step(now)
            if step is not None:
                what, fn = step
                self._pg_task = loop.create_task(self._run_pg(what, fn))

    # ------------------------------------------------------------------ proposals
    async def _propose(self, command: list[Any]) -> bool:
        node = self.node
        if node.is_leader:
            return bool(await asyncio.wait_for(node.propose_ha(command), RPC_TIMEOUT * 4))
        lead = node.leader_id
        if not lead:
            raise Unavailable("no leader")
        client = await self._client(lead)
        return bool(await client.ha_propose(command, timeout=RPC_TIMEOUT * 4))

    async def _propose_once(self, key: str, command: list[Any]) -> None:
        """Propose ``command`` unless one with the same key is in flight."""
        if key in self._proposing:
            return
        self._proposing.add(key)
        try:
            await self._propose(command)
        except (PgraftError, OSError, TimeoutError) as exc:
            self._warn(key, "node %d: recording the %s in the log failed: %s", self.node_id,
                       key, getattr(exc, "message", exc))
        finally:
            self._proposing.discard(key)

    async def _renew(self, renew: Renew) -> None:
        took = False
        try:
            took = await self._propose(["renew", self.node_id, renew.epoch])
        except (PgraftError, OSError, TimeoutError) as exc:
            self._warn("renew", "node %d: renewing the primary's lease failed: %s",
                       self.node_id, getattr(exc, "message", exc))
        self.policy.renewed(renew.started_at, renew.epoch, took, renew.duration)
        self.lease_file.set(self.policy.deadline(self.node.state.ha))

    async def propose_for_member(self, command: Any, timeout: float) -> bool:
        """Op ``ha_propose`` on the leader: a member's command (renewal, endpoint, ...)."""
        return await propose_member_command(self.node, command)

    def _announce(self, now: float) -> None:
        """Record this node's PostgreSQL endpoint in the log (once, and after a change)."""
        ha = self.node.state.ha
        mine = self.node.state.members.get(self.node_id)
        if mine is None or now - self._announced < 2.0:
            return
        http_port = self.node.extra_ports.get("http", self.node.config.http_port)
        known = ha.endpoints.get(self.node_id)
        if known and (known.host, known.pg_port, known.http_port) == (
                mine.address, self.config.pg_port, http_port):
            return
        self._announced = now
        self._spawn(self._propose_once(
            "endpoint", ["endpoint", self.node_id, mine.address, self.config.pg_port,
                         http_port]))

    # ------------------------------------------------------------------ the leader
    async def _lead(self, now: float) -> None:
        ha = self.node.state.ha
        policy = self.policy
        reports = None
        if policy.needs_reports(now, ha, self.seen_at):
            reports = await self._collect_reports()
            now = lease_clock()
            voters = self.node.state.members.voters
            heard = sum(1 for i in voters if i in reports)
            if heard * 2 <= len(voters):
                # Promote only on what a majority of the voters said: the most up-to-date
                # replica is then unlikely to be among those that did not answer in time.
                self._warn("reports", "node %d: the lease of node %s expired, but only %d of "
                           "%d voters answered: waiting", self.node_id, ha.primary_id, heard,
                           len(voters))
                return
        primary_reachable = (ha.primary_id is not None
                             and self.node.peers.peer_connected(ha.primary_id)
                             and self.node.state.members.is_voter(ha.primary_id))
        action = policy.leader_step(
            now, ha, self.seen_at,
            can_bootstrap=ha.epoch == 0 and self._can_bootstrap(),
            reports=reports, primary_reachable=primary_reachable)
        try:
            if isinstance(action, Bootstrap):
                log.info("node %d: bootstrapping: this node becomes the first primary",
                         self.node_id)
                await self._propose(["bootstrap", self.node_id, self.config.replication_user,
                                     secrets.token_urlsafe(24),
                                     self.config.lease.to_record()])
            elif isinstance(action, Promote):
                log.warning("node %d: failover: promoting node %d (received LSN %s): %s",
                            self.node_id, action.node_id, action.received_lsn, action.reason)
                took = await self._propose(["promote", action.node_id, action.new_epoch,
                                            action.epoch, action.lease_index, action.reason])
                if not took:
                    log.info("node %d: the promotion of node %d did not take effect (the "
                             "lease was renewed or moved meanwhile)", self.node_id,
                             action.node_id)
            elif isinstance(action, Transfer) and now >= self._transfer_at:
                self._transfer_at = now + 5.0
                log.info("node %d: handing Raft leadership to the primary's node %d",
                         self.node_id, action.node_id)
                await asyncio.wait_for(self.node.transfer_leadership(action.node_id), 5.0)
        except (PgraftError, OSError, TimeoutError) as exc:
            log.info("node %d: HA decision not recorded: %s", self.node_id, exc)

    def _can_bootstrap(self) -> bool:
        """Only from an empty or missing PGDATA: a directory that holds a cluster (a lagging
        standby, another installation's data) is never made the primary by bootstrap."""
        if self.dir_state in ("missing", "empty") and self.refused is None:
            return True
        if self.dir_state not in ("unknown", "missing", "empty"):
            self._warn("bootstrap", "node %d: not bootstrapping the cluster's first primary: "
                       "%s is not empty (pgraft bootstraps only from an empty directory; "
                       "another node with an empty one can, once it leads)", self.node_id,
                       self.config.pgdata)
        return False

    async def _collect_reports(self) -> dict[int, PgObservation]:
        reports = {self.node_id: self.obs}
        others = [i for i in list(self.node.state.members) if i != self.node_id]
        answers = await asyncio.gather(*(self._ask(i) for i in others), return_exceptions=True)
        for node_id, answer in zip(others, answers, strict=True):
            if isinstance(answer, dict):
                reports[node_id] = PgObservation.from_wire(answer.get("pg") or {})
        return reports

    async def _ask(self, node_id: int) -> dict[str, Any]:
        client = await self._client(node_id)
        try:
            return await client.ha_observe(timeout=RPC_TIMEOUT)
        except PgraftError:
            await self._drop_client(node_id)
            raise

    async def _client(self, node_id: int) -> AsyncClient:
        lock = self._client_locks.setdefault(node_id, asyncio.Lock())
        async with lock:  # one connection per member, even when asked twice at once
            client = self._clients.get(node_id)
            if client is not None and not client.closed:
                return client
            member = self.node.state.members.get(node_id)
            if member is None:
                raise Unavailable(f"node {node_id} is not a member")
            sec = self.node.config.security
            client = await connect(endpoint(member.address, member.port), timeout=RPC_TIMEOUT,
                                   secret_file=sec.secret_file, tls_ca=sec.tls_ca,
                                   tls_cert=sec.tls_cert, tls_key=sec.tls_key)
            self._clients[node_id] = client
            return client

    async def _drop_client(self, node_id: int) -> None:
        client = self._clients.pop(node_id, None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    # ------------------------------------------------------------------ status
    def local_report(self) -> dict[str, Any]:
        """Op ``ha_observe``: this node's PostgreSQL, lease and state."""
        ha = self.node.state.ha
        now = lease_clock()
        return {"node_id": self.node_id, "pg": self.obs.to_wire(),
                "lease_remaining_ms": int(self.policy.lease_remaining(now, ha) * 1000),
                "epoch": ha.epoch, "primary_id": ha.primary_id, "state": self.state,
                "lease_valid": self.policy.lease_valid(now, ha)}

    async def cluster_status(self, timeout: float) -> list[dict[str, Any]]:
        """Op ``ha_status``: one row per member, asked of each (unreachable ones say so)."""
        ids = list(self.node.state.members)
        others = [i for i in ids if i != self.node_id]
        answers = await asyncio.gather(*(self._ask(i) for i in others), return_exceptions=True)
        reports: dict[int, dict[str, Any]] = {self.node_id: self.local_report()}
        for node_id, answer in zip(others, answers, strict=True):
            if isinstance(answer, dict):
                reports[node_id] = answer
        ha = self.node.state.ha
        primary_lsn = None
        if ha.primary_id in reports:
            primary_lsn = reports[ha.primary_id]["pg"].get("received_lsn")
        rows = []
        for node_id in sorted(ids):
            rep = reports.get(node_id)
            if rep is None:
                rows.append({"node_id": node_id, "pg_role": "unknown", "timeline": None,
                             "received_lsn": None, "replayed_lsn": None, "lag_bytes": None,
                             "lease_remaining_ms": None, "epoch": ha.epoch,
                             "state": "unreachable"})
                continue
            obs = PgObservation.from_wire(rep["pg"])
            lag = obs.lag_bytes
            if obs.role == PG_REPLICA and primary_lsn is not None and obs.replayed_lsn is not None:
                lag = max(0, int(primary_lsn) - obs.replayed_lsn)
            rows.append({"node_id": node_id, "pg_role": obs.role, "timeline": obs.timeline,
                         "received_lsn": obs.received_lsn, "replayed_lsn": obs.replayed_lsn,
                         "lag_bytes": lag, "lease_remaining_ms": rep.get("lease_remaining_ms"),
                         "epoch": rep.get("epoch"), "state": rep.get("state")})
        return rows

    # ------------------------------------------------------------------ PostgreSQL
    async def _run_pg(self, what: str, fn: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        self.state = what
        log.info("node %d: %s", self.node_id, what)
        self._op_gen += 1
        try:
            await loop.run_in_executor(self._pg_exec, fn)
        except PgraftError as exc:
            self._failed(what, f"{exc.message}{f' (hint: {exc.hint})' if exc.hint else ''}")
        except Exception as exc:
            self._failed(what, str(exc))
        else:
            self._retry = RETRY_MIN
        finally:
            # Decide the next step on what the server says now, not before the operation.
            with contextlib.suppress(Exception):
                dir_state, obs = await loop.run_in_executor(
                    self._pg_exec, self._observe, self._upstreams(), self.pg)
                self.dir_state, self.obs = dir_state, self._with_stream_timeline(obs)
            self._op_gen += 1

    def _failed(self, what: str, why: str) -> None:
        log.error("node %d: %s failed: %s", self.node_id, what, why)
        self.state = f"{what} failed: {why}"
        self._retry_at = lease_clock() + self._retry
        self._retry = min(RETRY_MAX, self._retry * 2)

    def _refuse(self, why: str) -> None:
        if self.refused != why:
            log.error("node %d: refusing to touch PostgreSQL in %s: %s", self.node_id,
                      self.config.pgdata, why)
        self.refused = why
        self._refused_on = (self.dir_state, self.obs.system_id)
        self.state = f"refused: {why}"

    def _settings(self, upstream: int | None) -> dict[str, Setting]:
        s: dict[str, Setting] = dict(ha_base_settings())
        s.update({
            "shared_preload_libraries": "pgraft",
            "pgraft.data_dir": self.node.storage.path,
            "pgraft.ha_lease_file": self.lease_file.path,
            "cluster_name": slot_name(self.node_id),
        })
        if upstream is not None:
            # make_conninfo quotes what needs it (the same values pg_basebackup and
            # pg_rewind get from _primary_conninfo).
            s["primary_conninfo"] = make_conninfo(
                **self._primary_conninfo(upstream), application_name=slot_name(self.node_id),
                connect_timeout=2)
            s["primary_slot_name"] = slot_name(self.node_id)
        return s

    def _hba(self) -> list[str]:
        ha = self.node.state.ha
        addresses = sorted({m.address for _, m in self.node.state.members.items()})
        return ([f"local all {self.config.superuser} peer"]
                + replication_hba_lines(ha.repl_user or self.config.replication_user, addresses)
                + self.config.client_hba_lines())

    def _write_config(self, upstream: int | None) -> None:
        self.pg.write_config(self._settings(upstream), self._hba())
        self._upstream = upstream

    def _next_pg_step(self, now: float) -> tuple[str, Callable[[], None]] | None:
        """The next operation on the local PostgreSQL, or None (in its place, or waiting)."""
        ha = self.node.state.ha
        obs, dir_state = self.obs, self.dir_state
        if self.refused is not None:
            if self._refused_on == (dir_state, obs.system_id):
                return None
            # The directory changed (moved away, emptied): look again.
            log.info("node %d: %s changed: no longer refused", self.node_id,
                     self.config.pgdata)
            self.refused = self._refused_on = None
        if dir_state == "not-a-cluster":
            self._refuse(f"{self.config.pgdata} is not empty and holds no PostgreSQL data "
                         "directory; move it away (nothing was changed) or point --postgres "
                         "at an empty directory")
            return None
        if ha.epoch == 0:
            self.state = "waiting for the cluster's first primary"
            return None
        if dir_state == "unknown":
            return None
        local_id = obs.system_id
        if (dir_state == "cluster" and ha.system_id is not None and local_id is not None
                and local_id != ha.system_id):
            self._refuse(f"{self.config.pgdata} holds the PostgreSQL cluster {local_id}, not "
                         f"this pgraft cluster's {ha.system_id}; move it away (nothing was "
                         "changed) to have pgraft build a replica there")
            return None
        if ha.primary_id == self.node_id:
            return self._primary_step(now, dir_state)
        return self._replica_step(now, dir_state)

    # -- as the primary
    def _primary_step(self, now: float, dir_state: str) -> tuple[str, Callable[[], None]] | None:
        ha = self.node.state.ha
        obs = self.obs
        if not self.policy.lease_valid(now, ha):
            self.state = ("primary, waiting for its lease" if obs.role != PG_PRIMARY
                          else "primary without a valid lease: commits refused")
            return None
        if dir_state in ("missing", "empty"):
            if ha.system_id is not None:
                self._refuse("promoted, but its data directory is empty")
                return None
            return "initializing the first primary", self._init_primary
        if obs.role in (PG_STOPPED, PG_MISSING):
            if os.path.exists(os.path.join(self.config.pgdata, "standby.signal")):
                return "promoting (starting the replica first)", self._start_and_promote
            return "starting PostgreSQL as primary", self._start_primary
        if obs.role == PG_REPLICA:
            return "promoting", self._promote
        if obs.role == PG_PRIMARY:
            members = frozenset(list(self.node.state.members))
            if self._maintained != (ha.epoch, members):
                return "preparing the primary for its replicas", self._maintain_primary
            self._record_facts()
            self.state = "running as primary"
        return None

    def _record_facts(self) -> None:
        ha = self.node.state.ha
        obs = self.obs
        if obs.system_id is not None and obs.timeline is not None:
            if ha.system_id is None:
                self._spawn(self._propose_once("initialized", [
                    "initialized", self.node_id, ha.epoch, obs.system_id, obs.timeline]))
            elif ha.timeline != obs.timeline:
                self._spawn(self._propose_once("timeline", [
                    "timeline", self.node_id, ha.epoch, obs.timeline]))

    def _init_primary(self) -> None:
        self.pg.initdb()
        self._write_config(None)
        self.pg.set_standby(False)
        self._start_and_wait()
        self._maintain_primary()

    def _start_and_wait(self) -> None:
        self.pg.start()
        self.pg.wait_ready(120)
        self._check_fence()

    def _check_fence(self) -> None:
        """The server must run with pgraft's commit fence on our lease file: a setting in
        postgresql.auto.conf (ALTER SYSTEM) overrides pgraft.conf, and a server without the
        fence would go on committing after its lease ran out. Stop it if not."""
        rows = self.pg.execute("SELECT current_setting('shared_preload_libraries'), "
                               "current_setting('pgraft.ha_lease_file', true)")
        preload, found = rows[0] if rows else ("", None)
        # Both: without the library, pgraft.ha_lease_file is a mere placeholder that shows
        # the value from pgraft.conf while nothing checks it.
        loaded = "pgraft" in [x.strip().strip('"') for x in str(preload or "").split(",")]
        if loaded and found == self.lease_file.path:
            return
        found = found if loaded else f"unused: shared_preload_libraries is {preload!r}"
        self.pg.stop("fast", 60)
        self._refuse(
            "PostgreSQL started without pgraft's commit fence (pgraft.ha_lease_file is "
            f"{found!r}, not {self.lease_file.path!r}): a setting outside pgraft.conf "
            "overrides it, most likely shared_preload_libraries in postgresql.auto.conf "
            "(ALTER SYSTEM); include 'pgraft' there (e.g. ALTER SYSTEM SET "
            "shared_preload_libraries = 'pgraft,pg_stat_statements') or ALTER SYSTEM RESET it, "
            "then restart the node")

    def _start_primary(self) -> None:
        self._write_config(None)
        self.pg.set_standby(False)
        self._start_and_wait()

    def _start_and_promote(self) -> None:
        self._write_config(None)
        self.pg.set_standby(True)
        self._start_and_wait()
        self.pg.promote(120)

    def _promote(self) -> None:
        self._write_config(None)
        self.pg.promote(120)

    def _maintain_primary(self) -> None:
        ha = self.node.state.ha
        members = frozenset(list(self.node.state.members))
        self._check_fence()   # also a server this node adopted after a restart
        self._write_config(None)
        self.pg.reload()
        assert ha.repl_user is not None and ha.repl_password is not None
        self.pg.ensure_replication_role(ha.repl_user, ha.repl_password)
        self.pg.create_extension("pgraft")
        wanted = {slot_name(i) for i in members if i != self.node_id}
        self.pg.ensure_slots(wanted, prefix=SLOT_PREFIX)
        for _ in range(3):
            left = [r[0] for r in self.pg.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE "
                "'pgraft\\_node\\_%'") if r[0] not in wanted]
            if not left:
                break
            for name in left:
                # A removed member still streaming: end its WAL sender (waiting up to 5 s
                # for it to exit) and drop the slot at once, before its WAL receiver
                # reconnects (it retries every second); without the slot it cannot.
                self.pg.execute(
                    "SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots "
                    "WHERE slot_name = %s AND active", (name,))
                self.pg.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name = %s AND NOT active", (name,))
        else:
            raise Unavailable(f"the slots {', '.join(left)} of removed members are still in "
                              "use; retrying")
        self._maintained = (ha.epoch, members)

    # -- as a replica
    def _replica_step(self, now: float, dir_state: str) -> tuple[str, Callable[[], None]] | None:
        ha = self.node.state.ha
        obs = self.obs
        primary = ha.primary_id
        if ha.system_id is None:
            self.state = "waiting for the primary to initialize"
            return None
        if primary is None or primary not in ha.endpoints:
            self.state = "waiting for the primary's address"
            return None
        if self.node.state.members.get(self.node_id) is None:
            if obs.role in (PG_REPLICA, PG_PRIMARY, PG_STARTING):
                return "detaching: this node is no longer a member", self._stop
            self.state = "not a member"
            return None
        if dir_state in ("missing", "empty"):
            return f"cloning from node {primary}", lambda: self._clone(primary)
        if obs.role == PG_PRIMARY:
            return f"demoting: node {primary} is the primary of epoch {ha.epoch}", self._stop
        if obs.role == PG_STOPPED:
            return f"starting as a replica of node {primary}", lambda: self._start_replica(primary)
        if obs.role in (PG_REPLICA, PG_STARTING):
            # A server still starting (recovering towards its consistent point) is pointed
            # at the current primary too: primary_conninfo reloads during recovery.
            if self._upstream != primary:
                self._follow_since = now
                return f"following node {primary}", lambda: self._follow(primary)
            if obs.streaming:
                self._follow_since = now
                self.state = f"streaming from node {primary}"
                return None
            if now - self._follow_since > FOLLOW_PATIENCE:
                self._follow_since = now
                return (f"not streaming from node {primary}: checking it",
                        lambda: self._stop_to_rewind_if_primary_up(primary))
            self.state = f"connecting to node {primary}"
        return None

    def _stop(self) -> None:
        self.pg.stop("fast", 60)

    def _stop_to_rewind_if_primary_up(self, primary: int) -> None:
        """A replica that does not stream although its primary runs has diverged (or the
        primary no longer has its WAL): stop it, to be rewound. If the primary is down, wait."""
        problem = self.pg.source_problem(**self._primary_conninfo(primary))
        if problem is not None:
            self.state = f"waiting for node {primary}: {problem}"
            return
        log.warning("node %d: not streaming from node %d although it runs: stopping to rewind",
                    self.node_id, primary)
        self._needs_rewind = True
        self.pg.stop("fast", 60)

    def _primary_conninfo(self, primary: int) -> dict[str, Any]:
        ha = self.node.state.ha
        ep = ha.endpoints[primary]
        assert ha.repl_user is not None and ha.repl_password is not None
        return {"host": ep.host, "port": ep.pg_port, "user": ha.repl_user,
                "password": ha.repl_password}

    def _clone(self, primary: int) -> None:
        self.pg.basebackup(**self._primary_conninfo(primary), slot=slot_name(self.node_id))
        self._needs_rewind = False
        self._fresh_clone = True   # its pg_control says "in production": not a sign to rewind
        self._start_replica(primary)

    def _start_replica(self, primary: int) -> None:
        state = self.pg.control_data().get("Database cluster state", "")
        # A directory that was a primary (or one that stopped streaming) may have WAL the
        # new primary does not: pg_rewind finds the fork and rewinds it ("no rewind
        # required" when there is none).
        was_primary = state in ("in production", "shut down", "in crash recovery")
        if self._rewind_primary != primary:
            self._rewind_primary, self._rewind_failures, self._rewind_noops = primary, 0, 0
        if self._needs_rewind or (was_primary and not self._fresh_clone):
            source = self._primary_conninfo(primary)
            problem = self.pg.source_problem(**source)
            if problem is not None:  # not a reason to give up on this directory: retry
                raise Unavailable(f"cannot rewind from node {primary} yet: {problem}")
            try:
                out = self.pg.rewind(**source)
            except PgraftError as exc:
                self._rewind_failures += 1
                if self._rewind_failures < REWIND_ATTEMPTS:
                    raise
                # Rewind keeps failing against a running primary: keep the old directory
                # (it may hold transactions no other member has) and clone beside it.
                kept = self.pg.move_aside(f"epoch{self.node.state.ha.epoch}")
                log.error("node %d: pg_rewind failed %d times (%s); the old data directory "
                          "is kept as %s and a fresh replica is cloned", self.node_id,
                          self._rewind_failures, exc.message, kept)
                self._rewind_failures = 0
                self._clone(primary)
                return
            log.info("node %d: pg_rewind against node %d: %s", self.node_id, primary,
                     out.strip().splitlines()[-1] if out.strip() else "done")
            if self._needs_rewind and "no rewind required" in out:
                # It did not stream although its primary runs, and its history is a prefix
                # of the primary's: the WAL it needs is gone there (slot invalidated, WAL
                # removed). Twice in a row: clone a fresh replica (the old directory is set
                # aside, not deleted).
                self._rewind_noops += 1
                if self._rewind_noops >= 2:
                    kept = self.pg.move_aside(f"epoch{self.node.state.ha.epoch}")
                    log.error("node %d: cannot stream from node %d although no rewind is "
                              "needed (its WAL is gone there); the old data directory is "
                              "kept as %s and a fresh replica is cloned", self.node_id,
                              primary, kept)
                    self._rewind_noops = 0
                    self._needs_rewind = False
                    self._clone(primary)
                    return
            else:
                self._rewind_noops = 0
            self._needs_rewind = False
            self._rewind_failures = 0
        self._write_config(primary)
        self.pg.set_standby(True)
        self._start_and_wait()
        self._fresh_clone = False

    def _follow(self, primary: int) -> None:
        self._write_config(primary)
        self.pg.reload()
