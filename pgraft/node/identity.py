"""Who a data directory is, and which peers it has met: the guard against a node that comes
back with its durable Raft state lost, and against peers of another cluster.

Raft's safety rests on every node remembering, across crashes, its term, its vote and the
entries it acknowledged. A node whose data directory was wiped (or replaced) forgets them: it
could vote a second time in a term where its former self already voted (two leaders in one
term) or help a quorum that lacks entries its former self acknowledged. Like etcd's member and
cluster ids, two values make that detectable in the peer handshake:

- the **cluster id**: derived from the initial membership and ``--initial-cluster-token`` when
  a cluster is bootstrapped (every initial member computes the same value), learned from the
  first peer by a node that joins an existing cluster; peers with different cluster ids refuse
  each other;
- the **incarnation**: random, made once when the data directory is created. Every node
  records (durably, before it accepts a single message) the incarnation each peer id first
  showed it; a peer id that later shows another incarnation has lost its durable state and is
  refused, so its votes and acknowledgements are never counted.

:meth:`NodeIdentity.check_peer` records a first meeting in memory; the handshake answers the
peer only once :meth:`NodeIdentity.persist` has made it durable. That write runs on a worker
thread, and the meetings recorded while one is in flight go in the next (a joining node is
dialled by every member at once), so the event loop goes on serving meanwhile.

One file in the data directory holds it all. It is made atomically with the directory; a
record is then appended and synced (one fdatasync, where an atomic rewrite costs a rename and
the directory's sync too), and a last line without its newline, cut short by a crash before
its sync, is dropped when the file is read::

    identity    cluster_id=<hex or empty>
                incarnation=<hex>
                cluster_id=<hex>                (appended once learned: the last one counts)
                peer=<node id> <incarnation>    (one line per peer met)

Data directories made by pgraft 1.2 and earlier keep the peers they met in a separate
``peers`` file (``<node id> <incarnation>`` per line, rewritten atomically); it is still read,
and new records are appended to ``identity``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re

from ..errors import MemberRefused, StorageCorrupted
from ..fsutil import append_at, io_error, truncate_durably, write_file_atomic

log = logging.getLogger("pgraft.identity")

IDENTITY_FILE = "identity"
PEERS_FILE = "peers"
DEFAULT_CLUSTER_TOKEN = "pgraft"
_HEX = re.compile(r"^[0-9a-f]{16,64}$")


def cluster_id_for(initial_cluster: dict[int, tuple[str, int]], token: str) -> str:
    """The cluster id that every initial member of a new cluster computes alike."""
    members = ",".join(f"{i}={a}:{p}" for i, (a, p) in sorted(initial_cluster.items()))
    return hashlib.sha256(f"pgraft-cluster\0{token}\0{members}".encode()).hexdigest()[:16]


def _check_hex(value: object) -> str | None:
    return value if isinstance(value, str) and _HEX.match(value) else None


class NodeIdentity:
    """The identity of one data directory (open it only while holding the directory's lock)."""

    def __init__(self, data_dir: str, node_id: int) -> None:
        self.data_dir = data_dir
        self.node_id = node_id
        self._path = os.path.join(data_dir, IDENTITY_FILE)
        self._peers_path = os.path.join(data_dir, PEERS_FILE)
        self.cluster_id: str | None = None
        self.incarnation = ""
        self.peers: dict[int, str] = {}  # node id -> the incarnation it first showed
        self._changes = 0  # records made in memory by check_peer
        self._saved = 0  # of those, the ones known durable
        self._cluster_unsaved = False
        self._peers_unsaved: list[int] = []
        self._saving: asyncio.Future[None] | None = None
        self._size = 0  # bytes of the identity file up to its last complete record
        self._load()

    # ----------------------------------------------------------------- files
    def _load(self) -> None:
        try:
            text = self._read_records(self._path)
        except FileNotFoundError:
            # A new data directory, or one made before identities existed: either way this
            # directory's state starts being its own from here on.
            self.incarnation = os.urandom(8).hex()
            self._load_legacy_peers()
            self._write_whole()
            return
        incarnation: str | None = None
        cluster = ""
        for n, line in enumerate(text.splitlines(), 1):
            key, sep, value = line.partition("=")
            if not sep:
                continue
            if key == "incarnation":
                incarnation = _check_hex(value)
            elif key == "cluster_id":
                cluster = value  # a learned cluster id is appended: the last one counts
            elif key == "peer":
                self._add_loaded_peer(value.split(), self._path, n)
        if incarnation is None or (cluster and _check_hex(cluster) is None):
            raise StorageCorrupted(f"{self._path} is not a valid pgraft identity file",
                                   path=self._path,
                                   hint="restore this node from a healthy peer (remove it from "
                                        "the cluster, wipe its data directory, add it back "
                                        "under a new id)")
        self.incarnation = incarnation
        self.cluster_id = cluster or None
        self._load_legacy_peers()

    def _load_legacy_peers(self) -> None:
        try:
            text = self._read_records(self._peers_path)
        except FileNotFoundError:
            return
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                self._add_loaded_peer(line.split(), self._peers_path, n)

    def _add_loaded_peer(self, parts: list[str], path: str, line: int) -> None:
        seen = _check_hex(parts[1]) if len(parts) == 2 else None
        if seen is None or not parts[0].isdigit():
            raise StorageCorrupted(f"{path} line {line} is not a peer's "
                                   "'<node id> <incarnation>'", path=path)
        peer_id = int(parts[0])
        if self.peers.setdefault(peer_id, seen) != seen:
            raise StorageCorrupted(f"{path} line {line} gives node {peer_id} a second "
                                   f"incarnation ({seen}, after {self.peers[peer_id]})",
                                   path=path)

    def _read_records(self, path: str) -> str:
        """The complete lines of ``path``. A last line without its newline is an append that
        a crash cut short: :meth:`persist` had not returned, so nothing relied on it; it is
        cut off, so that the next append starts a line of its own."""
        with open(path, "rb") as f:
            data = f.read()
        if path == self._path:
            self._size = len(data)
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("node %d: %s ends with an incomplete record (%d bytes, cut short by a "
                        "crash before it was synced); it is dropped", self.node_id, path,
                        len(data) - keep)
            truncate_durably(path, keep)
            data = data[:keep]
            if path == self._path:
                self._size = keep
        return data.decode("ascii", errors="replace")

    def _write_whole(self) -> None:
        body = self._identity_body()
        write_file_atomic(self._path, body)
        self._size = len(body)

    def _identity_body(self) -> bytes:
        peers = "".join(f"peer={i} {inc}\n" for i, inc in sorted(self.peers.items()))
        return (f"cluster_id={self.cluster_id or ''}\n"
                f"incarnation={self.incarnation}\n{peers}").encode()

    # ---------------------------------------------------------------- cluster
    def set_cluster_id(self, cluster_id: str) -> None:
        """Set the cluster id and write it at once (a node bootstrapping its cluster)."""
        if self.cluster_id != cluster_id:
            self.cluster_id = cluster_id
            self._write_whole()

    @property
    def unsaved(self) -> bool:
        """Whether check_peer recorded something that :meth:`persist` has not made durable."""
        return self._saved < self._changes

    async def persist(self) -> None:
        """Return once everything check_peer recorded so far is durable. Raises StorageError
        if it cannot be written (the next call writes it again)."""
        target = self._changes
        while self._saved < target:
            if self._saving is None:
                self._saving = asyncio.ensure_future(self._write_unsaved())
            # shielded: a handshake given up (its connection closed) leaves the write to end
            await asyncio.shield(self._saving)

    async def close(self) -> None:
        """Wait for a write in flight (its outcome is the handshake's concern): nothing
        writes to the file once the data directory's lock is released."""
        saving = self._saving
        if saving is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(saving)

    async def _write_unsaved(self) -> None:
        try:
            changes = self._changes
            cluster = f"cluster_id={self.cluster_id}\n" if self._cluster_unsaved else ""
            peer_ids, self._peers_unsaved = self._peers_unsaved, []
            records = (cluster + "".join(f"peer={i} {self.peers[i]}\n" for i in peer_ids)
                       ).encode()
            self._cluster_unsaved = False
            try:
                # one append and one fdatasync, on a worker thread, after the last complete
                # record: a write that failed part-way is cut off, not built on
                self._size = await asyncio.get_running_loop().run_in_executor(
                    None, append_at, self._path, self._size, records)
            except BaseException as exc:
                # not durable: written again by the next persist (a cluster id line twice
                # says the same thing twice)
                self._cluster_unsaved |= bool(cluster)
                self._peers_unsaved[:0] = peer_ids
                if isinstance(exc, OSError):
                    raise io_error("recording the peers met in", self._path, exc) from exc
                raise
            self._saved = max(self._saved, changes)
        finally:
            self._saving = None

    def hello_fields(self) -> dict[str, str]:
        """What this node shows its peers in the handshake."""
        fields = {"incarnation": self.incarnation}
        if self.cluster_id:
            fields["cluster_id"] = self.cluster_id
        return fields

    def check_peer(self, peer_id: int, fields: dict[str, object]) -> MemberRefused | None:
        """Admit (None) or refuse a peer by what it showed in the handshake. A first meeting
        (and a cluster id learned) is recorded in memory, so that a second handshake is judged
        by it at once; no message of the peer may be stepped before :meth:`persist` has
        written it."""
        cluster = fields.get("cluster_id")
        incarnation = _check_hex(fields.get("incarnation"))
        if incarnation is None:
            return MemberRefused(
                f"peer node {peer_id} sent no valid incarnation in its handshake",
                hint="run the same pgraft version on every node")
        if cluster is not None and _check_hex(cluster) is None:
            return MemberRefused(f"peer node {peer_id} sent an invalid cluster id {cluster!r}")
        if cluster and self.cluster_id and cluster != self.cluster_id:
            return MemberRefused(
                f"peer node {peer_id} belongs to another cluster (cluster id {cluster}, this "
                f"node's is {self.cluster_id})",
                hint="check the peer addresses and --initial-cluster-token; every node of "
                     "one cluster must be bootstrapped with the same initial cluster and token")
        known = self.peers.get(peer_id)
        if known is not None and known != incarnation:
            return MemberRefused(
                f"node {peer_id} came back with a different data directory (incarnation "
                f"{incarnation}; this cluster knew it as {known}): its durable Raft state "
                "(term, vote, log) was lost, so counting it could elect two leaders in one "
                "term; it is refused",
                hint=f"remove node {peer_id} from the cluster (pgraft_remove_node({peer_id}) "
                     "on the leader), wipe its data directory, and add it back under a new "
                     "id")
        if cluster and not self.cluster_id:
            log.info("node %d: joined cluster %s (learned from node %d)", self.node_id,
                     cluster, peer_id)
            self.cluster_id = str(cluster)
            self._cluster_unsaved = True
            self._changes += 1
        if known is None:
            self.peers[peer_id] = incarnation
            self._peers_unsaved.append(peer_id)
            self._changes += 1
        return None
