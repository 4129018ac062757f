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

Files in the data directory (both written atomically and synced)::

    identity    cluster_id=<hex or empty>\\nincarnation=<hex>\\n
    peers       <node id> <incarnation>  (one line per peer met)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re

from ..errors import MemberRefused, StorageCorrupted
from ..fsutil import write_file_atomic

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
        self.peers: dict[int, str] = {}
        self._load()

    # ----------------------------------------------------------------- files
    def _load(self) -> None:
        try:
            with open(self._path, encoding="ascii", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            # A new data directory, or one made before identities existed: either way this
            # directory's state starts being its own from here on.
            self.incarnation = os.urandom(8).hex()
            self._save()
            return
        fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        incarnation = _check_hex(fields.get("incarnation"))
        cluster = fields.get("cluster_id", "")
        if incarnation is None or (cluster and _check_hex(cluster) is None):
            raise StorageCorrupted(f"{self._path} is not a valid pgraft identity file",
                                   path=self._path,
                                   hint="restore this node from a healthy peer (remove it from "
                                        "the cluster, wipe its data directory, add it back "
                                        "under a new id)")
        self.incarnation = incarnation
        self.cluster_id = cluster or None
        try:
            with open(self._peers_path, encoding="ascii", errors="replace") as f:
                for n, line in enumerate(f, 1):
                    parts = line.split()
                    if not parts:
                        continue
                    seen = _check_hex(parts[1]) if len(parts) == 2 else None
                    if seen is None or not parts[0].isdigit():
                        raise StorageCorrupted(f"{self._peers_path} line {n} is not "
                                               "'<node id> <incarnation>'",
                                               path=self._peers_path)
                    self.peers[int(parts[0])] = seen
        except FileNotFoundError:
            pass

    def _save(self) -> None:
        write_file_atomic(self._path, f"cluster_id={self.cluster_id or ''}\n"
                                      f"incarnation={self.incarnation}\n".encode())

    def _save_peers(self) -> None:
        body = "".join(f"{i} {inc}\n" for i, inc in sorted(self.peers.items()))
        write_file_atomic(self._peers_path, body.encode())

    # ---------------------------------------------------------------- cluster
    def set_cluster_id(self, cluster_id: str) -> None:
        if self.cluster_id != cluster_id:
            self.cluster_id = cluster_id
            self._save()

    def hello_fields(self) -> dict[str, str]:
        """What this node shows its peers in the handshake."""
        fields = {"incarnation": self.incarnation}
        if self.cluster_id:
            fields["cluster_id"] = self.cluster_id
        return fields

    def check_peer(self, peer_id: int, fields: dict[str, object]) -> MemberRefused | None:
        """Admit (None) or refuse a peer by what it showed in the handshake. A first meeting
        is recorded durably before this returns, so no message of the peer is stepped before
        its incarnation is on disk."""
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
            self.set_cluster_id(str(cluster))
        if known is None:
            self.peers[peer_id] = incarnation
            self._save_peers()
        return None
