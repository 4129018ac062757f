"""etcd for ``benchmarks/compare.py``: a 3-member cluster of Debian's ``etcd`` on loopback and a
Python client in this (separate) process.

The server runs with its defaults (the WAL is fsynced before every commit; ``--unsafe-no-fsync``
is off) except for the election timeout and heartbeat interval, which are set to pgraft's. The
client speaks etcd's native gRPC API (``etcdserverpb.KV/Put`` and friends, as etcdctl does) with
``grpcio``; the few protobuf messages it needs are encoded and decoded by hand below, so no
generated stubs are needed. (etcd 3.4 also serves the same API as HTTP/JSON on the client port,
``POST /v3/kv/put`` with base64 keys and values; that gateway forwards each call to the gRPC
server over a second loopback connection, so gRPC is the faster and fairer path.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any

# This process starts etcd members while its gRPC channels are open; grpc's fork handlers
# then ran in the forked child before exec and an added member sometimes never started
# ("epoll_wait error: Bad file descriptor" in its log, nothing from etcd). subprocess's
# children exec at once: they need none of grpc's fork support.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402
from compare_common import (
    PAYLOAD,
    Processes,
    closed_loop,
    free_port,
    log,
    log_tail,
    summary,
    wait_for,
)

_PUT = "/etcdserverpb.KV/Put"
_STATUS = "/etcdserverpb.Maintenance/Status"
_MEMBER_ADD = "/etcdserverpb.Cluster/MemberAdd"
_MEMBER_REMOVE = "/etcdserverpb.Cluster/MemberRemove"
_MEMBER_LIST = "/etcdserverpb.Cluster/MemberList"

# Reconnect quickly: a member that was just (re)started must be seen as soon as it listens.
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 10),
                    ("grpc.min_reconnect_backoff_ms", 10),
                    ("grpc.max_reconnect_backoff_ms", 50)]


# ------------------------------------------------------------------------ protobuf
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_bytes(field: int, data: bytes) -> bytes:
    """A length-delimited field (bytes, string, embedded message)."""
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def pb_uint(field: int, value: int) -> bytes:
    """A varint field (uint64, bool)."""
    return _varint(field << 3) + _varint(value)


def pb_decode(buf: bytes) -> dict[int, list[Any]]:
    """Fields of one message: number -> values (ints for varints/fixed, bytes otherwise)."""
    fields: dict[int, list[Any]] = {}
    i, n = 0, len(buf)
    while i < n:
        key = shift = 0
        while True:
            b = buf[i]
            i += 1
            key |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value = shift = 0
            while True:
                b = buf[i]
                i += 1
                value |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
        elif wire == 2:
            length = shift = 0
            while True:
                b = buf[i]
                i += 1
                length |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            value = bytes(buf[i:i + length])
            i += length
        elif wire == 1:
            value = int.from_bytes(buf[i:i + 8], "little")
            i += 8
        elif wire == 5:
            value = int.from_bytes(buf[i:i + 4], "little")
            i += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _first(fields: dict[int, list[Any]], number: int, default: Any = None) -> Any:
    values = fields.get(number)
    return values[0] if values else default


def put_request(key: bytes, value: bytes) -> bytes:
    """``PutRequest{key=1, value=2}``."""
    return pb_bytes(1, key) + pb_bytes(2, value)


def parse_status(raw: bytes) -> dict[str, Any]:
    """``StatusResponse``: header{member_id=2}, leader=4, raftIndex=5, raftTerm=6,
    raftAppliedIndex=7."""
    f = pb_decode(raw)
    header = pb_decode(_first(f, 1, b""))
    return {"member_id": _first(header, 2, 0), "version": _first(f, 2, b"").decode(),
            "leader": _first(f, 4, 0), "raft_index": _first(f, 5, 0),
            "raft_term": _first(f, 6, 0), "applied_index": _first(f, 7, 0)}


def parse_members(raw: bytes, field: int) -> list[dict[str, Any]]:
    """The ``Member{ID=1, name=2, peerURLs=3, clientURLs=4, isLearner=5}`` list in ``field``
    of a MemberList/MemberAdd response."""
    out = []
    for m in pb_decode(raw).get(field, []):
        mf = pb_decode(m)
        out.append({"id": _first(mf, 1, 0), "name": _first(mf, 2, b"").decode(),
                    "peer_urls": [u.decode() for u in mf.get(3, [])],
                    "client_urls": [u.decode() for u in mf.get(4, [])],
                    "is_learner": bool(_first(mf, 5, 0))})
    return out


# ------------------------------------------------------------------------- cluster
@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    log_path: str
    proc: subprocess.Popen[bytes] | None = None
    initial_cluster: str = ""
    state: str = "new"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    """``size`` etcd members on loopback, each with its own data directory and log file."""

    def __init__(self, base_dir: str, size: int = 3, *, election_timeout_ms: int = 1000,
                 heartbeat_interval_ms: int = 100, binary: str = "etcd") -> None:
        self.base_dir = base_dir
        self.election_timeout_ms = election_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.binary = shutil.which(binary) or binary
        self.procs = Processes()
        self.members: dict[str, Member] = {}
        self._next = 1
        for _ in range(size):
            self._new_member()
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members.values())
        for m in self.members.values():
            m.initial_cluster = initial
        self._channels: dict[str, grpc.Channel] = {}

    def _new_member(self) -> Member:
        name = f"etcd{self._next}"
        self._next += 1
        m = Member(name=name, client_port=free_port(), peer_port=free_port(),
                   data_dir=os.path.join(self.base_dir, name),
                   log_path=os.path.join(self.base_dir, f"{name}.log"))
        self.members[name] = m
        return m

    def command(self, m: Member) -> list[str]:
        client_url = f"http://{m.endpoint}"
        return [self.binary, "--name", m.name, "--data-dir", m.data_dir,
                "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", m.initial_cluster, "--initial-cluster-state", m.state,
                "--initial-cluster-token", "pgraft-compare",
                "--election-timeout", str(self.election_timeout_ms),
                "--heartbeat-interval", str(self.heartbeat_interval_ms)]

    def start_member(self, m: Member) -> None:
        m.proc = self.procs.start(self.command(m), log_path=m.log_path)

    def start(self, timeout: float = 60.0) -> str:
        """Start every member; wait until all answer and agree on a leader; return its name."""
        for m in self.members.values():
            self.start_member(m)
        return self.wait_for_leader(timeout)

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()
        self.procs.close()

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- sync calls
    def channel(self, m: Member) -> grpc.Channel:
        ch = self._channels.get(m.name)
        if ch is None:
            ch = grpc.insecure_channel(m.endpoint, options=_CHANNEL_OPTIONS)
            self._channels[m.name] = ch
        return ch

    def forget_channel(self, name: str) -> None:
        """Close the cached channel to ``name`` (its process was killed or removed)."""
        ch = self._channels.pop(name, None)
        if ch is not None:
            ch.close()

    def call(self, m: Member, method: str, request: bytes, timeout: float = 2.0) -> bytes:
        return self.channel(m).unary_unary(method)(request, timeout=timeout)

    def status(self, m: Member, timeout: float = 1.0) -> dict[str, Any]:
        if not m.running:
            code = m.proc.returncode if m.proc is not None else None
            raise RuntimeError(f"etcd member {m.name} is not running (exit code {code}); "
                               f"its log ends with:\n{log_tail(m.log_path)}")
        return parse_status(self.call(m, _STATUS, b"", timeout))

    def leader(self) -> str | None:
        """The name of the member that a majority of running members name as leader."""
        ids, named = {}, []
        running = [m for m in self.members.values() if m.running]
        for m in running:
            try:
                st = self.status(m, 0.5)
            except (grpc.RpcError, RuntimeError):
                continue
            ids[st["member_id"]] = m.name
            named.append(st["leader"])
        for member_id, name in ids.items():
            if member_id and named.count(member_id) * 2 > len(running):
                return name
        return None

    def wait_for_leader(self, timeout: float = 30.0) -> str:
        for m in self.members.values():
            wait_for(f"etcd member {m.name} to answer", lambda m=m: self.status(m), timeout)
        return str(wait_for("an etcd leader", self.leader, timeout))

    def member_list(self, m: Member, timeout: float = 1.0) -> list[dict[str, Any]]:
        return parse_members(self.call(m, _MEMBER_LIST, b"", timeout), 2)


# -------------------------------------------------------------------------- driver
async def latency(endpoint: str, count: int, max_seconds: float) -> list[float]:
    """Sequential puts of 64-byte values (``count`` of them or ``max_seconds``, whichever comes
    first, after a short warm-up); the samples in seconds."""
    async with grpc.aio.insecure_channel(endpoint) as ch:
        put = ch.unary_unary(_PUT)
        requests = [put_request(b"bench/%d" % i, PAYLOAD) for i in range(1024)]
        for i in range(min(50, count)):
            await put(requests[i % 1024], timeout=10)
        samples = []
        stop = time.perf_counter() + max_seconds
        for i in range(count):
            t0 = time.perf_counter()
            await put(requests[i % 1024], timeout=10)
            t1 = time.perf_counter()
            samples.append(t1 - t0)
            if t1 > stop:
                break
    return samples


async def throughput(endpoint: str, window: int, seconds: float) -> dict[str, Any]:
    """Puts with ``window`` in flight on one gRPC channel (HTTP/2 streams) for ``seconds``."""
    async with grpc.aio.insecure_channel(endpoint) as ch:
        put = ch.unary_unary(_PUT)
        requests = [put_request(b"bench/%d" % i, PAYLOAD) for i in range(1024)]
        for i in range(20):
            await put(requests[i], timeout=10)
        counter = 0

        async def one() -> None:
            nonlocal counter
            counter += 1
            await put(requests[counter & 1023], timeout=10)

        return await closed_loop(one, window, seconds)


async def first_put(endpoints: list[str], deadline: float) -> float:
    """Start a put on every endpoint every 5 ms (each with a 1 s limit) until one succeeds;
    return the perf_counter time of the first success. Channels are opened inside the timing,
    as a client that has to find the new leader would."""
    channels = [grpc.aio.insecure_channel(e, options=_CHANNEL_OPTIONS) for e in endpoints]
    done = asyncio.Event()
    when: list[float] = []
    tasks: set[asyncio.Task[None]] = set()
    request = put_request(b"failover", PAYLOAD)

    async def attempt(ch: grpc.aio.Channel) -> None:
        try:
            await ch.unary_unary(_PUT)(request, timeout=1.0)
        except grpc.RpcError:
            return
        if not done.is_set():
            when.append(time.perf_counter())
            done.set()

    try:
        while not done.is_set():
            if time.perf_counter() > deadline:
                raise TimeoutError("no etcd member accepted a put within the deadline")
            for ch in channels:
                task = asyncio.ensure_future(attempt(ch))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.005)
        return when[0]
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            await ch.close()


def _run(coro: Any) -> Any:
    # grpc.aio on the standard asyncio loop (not uvloop).
    with asyncio.Runner() as runner:
        return runner.run(coro)


def bench_add_member(cluster: EtcdCluster, count: int) -> dict[str, Any]:
    """``count`` times: MemberAdd on the leader, start the new member (it needs the member list
    that MemberAdd returns), and wait until every member, the new one too, lists it as started
    (with its name). Each added member is removed and stopped again (not timed)."""
    listed, api = [], []
    for _ in range(count):
        leader = cluster.members[cluster.wait_for_leader()]
        existing = list(cluster.members.values())
        new = cluster._new_member()
        deadline = time.perf_counter() + 30
        while True:
            t0 = time.perf_counter()
            try:
                raw = cluster.call(leader, _MEMBER_ADD, pb_bytes(1, new.peer_url.encode()), 10)
                break
            except grpc.RpcError as exc:
                # etcd refuses to add a voter until every member has been connected for 5 s
                # ("unhealthy cluster"); such a refusal changes nothing, so wait and retry,
                # timing only the call that is accepted.
                if "unhealthy cluster" not in str(exc.details()) or \
                        time.perf_counter() > deadline:
                    raise
                time.sleep(0.1)
        t_api = time.perf_counter()
        new_id = parse_members(raw, 2)[0]["id"]
        names = {m.peer_url: m.name for m in cluster.members.values()}
        new.initial_cluster = ",".join(f"{names[u]}={u}" for m in parse_members(raw, 3)
                                       for u in m["peer_urls"])
        new.state = "existing"
        cluster.start_member(new)

        def everywhere(new_id: int = new_id,
                       members: tuple[Member, ...] = (*existing, new)) -> bool:
            if not members[-1].running:
                return True  # it exited: reported below
            for m in members:
                try:
                    found = [x for x in cluster.member_list(m, 0.5) if x["id"] == new_id]
                except grpc.RpcError:
                    return False
                if not found or not found[0]["name"]:
                    return False
            return True

        try:
            wait_for(f"etcd member {new.name} listed everywhere", everywhere, 60, 0.001)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; {new.log_path} ends with:\n{log_tail(new.log_path)}") \
                from None
        if not new.running:
            raise RuntimeError(f"the added etcd member {new.name} exited; {new.log_path} ends "
                               f"with:\n{log_tail(new.log_path)}")
        t_listed = time.perf_counter()
        api.append(t_api - t0)
        listed.append(t_listed - t0)
        log(f"  etcd add {len(listed)}/{count}: MemberAdd {1000 * (t_api - t0):.1f} ms, "
            f"listed everywhere {1000 * (t_listed - t0):.1f} ms")
        leader = cluster.members[cluster.wait_for_leader()]
        cluster.call(leader, _MEMBER_REMOVE, pb_uint(1, new_id), 10)
        assert new.proc is not None
        cluster.procs.stop(new.proc)
        cluster.forget_channel(new.name)
        del cluster.members[new.name]
        shutil.rmtree(new.data_dir, ignore_errors=True)
    return {"listed_everywhere_ms": summary(listed), "member_add_call_ms": summary(api)}


def bench_failover(cluster: EtcdCluster, kills: int) -> dict[str, Any]:
    """``kills`` times: kill -9 the leader, time until a survivor accepts a put; then restart
    the killed member and wait until it has caught up before the next kill."""
    samples = []
    for k in range(kills):
        name = cluster.wait_for_leader(60)
        victim = cluster.members[name]
        survivors = [m.endpoint for m in cluster.members.values() if m.name != name]
        assert victim.proc is not None
        t0 = time.perf_counter()
        Processes.kill9(victim.proc)
        elapsed = _run(first_put(survivors, time.perf_counter() + 30)) - t0
        samples.append(elapsed)
        log(f"  etcd kill {k + 1}/{kills}: {name} -> puts accepted after "
            f"{elapsed * 1000:.0f} ms")
        cluster.forget_channel(name)
        cluster.start_member(victim)
        new_leader = cluster.members[cluster.wait_for_leader(60)]
        target = cluster.status(new_leader)["raft_index"]
        wait_for(f"{name} to catch up",
                 lambda m=victim, t=target: cluster.status(m)["applied_index"] >= t, 60)
    return summary(samples)


def run_all(base_dir: str, *, latency_count: int, latency_max_s: float,
            windows: list[int], window_seconds: float, adds: int, kills: int,
            election_timeout_ms: int, heartbeat_interval_ms: int) -> dict[str, Any]:
    """Every etcd measurement on one 3-member cluster; returns the results (latency samples
    under ``"latency_samples_s"`` for the plots)."""
    os.makedirs(base_dir, exist_ok=True)
    out: dict[str, Any] = {}
    with EtcdCluster(base_dir, election_timeout_ms=election_timeout_ms,
                     heartbeat_interval_ms=heartbeat_interval_ms) as cluster:
        name = cluster.start()
        leader = cluster.members[name]
        out["version"] = cluster.status(leader)["version"]
        log(f"etcd {out['version']}: latency ({latency_count} sequential puts on the leader "
            f"{name}, at most {latency_max_s:g} s)")
        samples = _run(latency(leader.endpoint, latency_count, latency_max_s))
        out["latency_samples_s"] = samples
        out["latency_ms"] = summary(samples, cdf=True)
        if adds:
            log(f"etcd: add member ({adds} times)")
            out["add_member"] = bench_add_member(cluster, adds)
        out["throughput"] = []
        leader = cluster.members[cluster.wait_for_leader()]
        for w in windows:
            r = _run(throughput(leader.endpoint, w, window_seconds))
            log(f"  etcd {w} in flight: {r['writes_per_s']:,.0f} puts/s "
                f"(client CPU {r['client_cpu']:.0%}, machine CPU {r['machine_cpu_busy'] or 0:.0%} "
                f"busy, {r['failed']} failed)")
            out["throughput"].append(r)
        if kills:
            log(f"etcd: failover ({kills} leader kills)")
            out["failover_ms"] = bench_failover(cluster, kills)
    return out
