"""``pgraft demo``: the seed's walkthrough on a local cluster of real node processes.

It starts three ``python -m pgraft serve`` processes on free loopback ports in a temporary
directory, finds the leader, starts node 4 empty and adds it with one call on the leader only,
prints the membership as seen from every node (identical tables), shows that the same call on
a follower is refused with ``NotLeaderError`` naming the leader, waits until node 4 has been
promoted to voter, and stops everything and removes the directory, also on Ctrl-C or errors.

:class:`pgraft.localcluster.LocalCluster` is the process manager behind it.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, TextIO

from .client import NodeInfo
from .errors import NotLeaderError
from .localcluster import _INTERRUPTS, LocalCluster, _interrupts_held

__all__ = ["main", "run_demo"]


def _table(nodes: list[NodeInfo]) -> str:
    from .cli.tables import nodes_table

    return nodes_table(nodes)


def run_demo(out: TextIO, election_timeout_ms: int | None = None, keep: bool = False) -> int:
    """The walkthrough; returns 0 when every step behaved as the seed says."""
    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    cluster: LocalCluster | None = None
    ok = False
    try:
        with _interrupts_held():  # the temporary directory exists only once it is `cluster`
            cluster = LocalCluster(3, election_timeout_ms=election_timeout_ms, keep=keep)
        say(f"Starting a 3-node pgraft cluster in {cluster.base_dir}")
        for n in cluster.nodes.values():
            say(f"  node {n.node_id}: {n.address}")
        cluster.start(timeout=60)
        leader = cluster.wait_for_leader(timeout=60)
        say(f"\nStep 1: find the leader -> node {leader} ({cluster.address(leader)})")

        node4 = cluster.start_empty(4, timeout=60)
        say(f"\nStarted node 4 empty at {node4.address}; it waits until the leader adds it.")
        say(f"\nStep 2: one call on the leader only (node {leader}):")
        say(f"  add_node(4, {node4.host!r}, {node4.port})  "
            f"[= SELECT pgraft_add_node(4, '{node4.host}', {node4.port})]")
        with cluster.connected(leader, timeout=30) as c:
            result = c.add_node(4, node4.host, node4.port)
        say(f"  -> {result}")

        views = cluster.wait_for_membership({1: None, 2: None, 3: None, 4: None}, timeout=60,
                                            on=[1, 2, 3, 4])
        say("\nStep 3: membership as seen from every node (nobody else was touched):")
        for node_id, view in sorted(views.items()):
            say(f"\n  node {node_id}:")
            say("\n".join("    " + line for line in _table(view).splitlines()))
        say("\n  All nodes have identical membership.")

        follower = next(i for i in (1, 2, 3) if i != leader)
        say(f"\nStep 4: the same call on a follower (node {follower}) is refused:")
        try:
            with cluster.connected(follower) as c:
                c.add_node(4, node4.host, node4.port)
        except NotLeaderError as exc:
            say(f"  NotLeaderError: {exc.message}")
            say(f"  leader_id={exc.leader_id}, leader_address={exc.leader_address}")
            say(f"  hint: {exc.hint}")
            if exc.leader_id != leader:
                say(f"  (the follower names node {exc.leader_id}, expected node {leader})")
                return 1
        else:
            say("  unexpected: the follower accepted the call")
            return 1

        views = cluster.wait_for_membership({1: "voter", 2: "voter", 3: "voter", 4: "voter"},
                                            timeout=60, on=[1, 2, 3, 4])
        say("\nStep 5: node 4 caught up and the leader promoted it to voter:")
        say("\n".join("    " + line for line in _table(views[leader]).splitlines()))
        ok = True
        say("\nDone: one command on the leader, the same membership everywhere.")
        return 0
    finally:
        if cluster is not None:
            if not ok:
                say("\nThe demo did not complete; the nodes' logs end with:")
                cluster.dump_logs(out, 30)
            say("Stopping the cluster and cleaning up.")
            cluster.close()
            if keep:
                say(f"(kept {cluster.base_dir})")


def main(argv: list[str] | None = None) -> int:
    """``pgraft demo [--election-timeout MS] [--keep]``."""
    parser = argparse.ArgumentParser(prog="pgraft demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--election-timeout", type=int, default=None, metavar="MS",
                        help="election timeout of the nodes (default: the node's default)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the data directories and logs afterwards")
    ns = parser.parse_args(argv)

    interrupted: list[int] = []

    def on_interrupt(signum: int, frame: Any) -> None:
        # One Ctrl-C (or SIGTERM) stops the demo: later ones are held back until main()
        # returns, so that they cannot cut the cleanup short.
        interrupted.append(signum)
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
        raise KeyboardInterrupt

    mask = (frozenset(signal.pthread_sigmask(signal.SIG_BLOCK, ()))
            if hasattr(signal, "pthread_sigmask") else None)
    previous = {sig: signal.signal(sig, on_interrupt) for sig in sorted(_INTERRUPTS)}
    try:
        code = run_demo(sys.stdout, ns.election_timeout, ns.keep)
        if interrupted:  # the KeyboardInterrupt was swallowed (e.g. "Exception ignored in")
            raise KeyboardInterrupt
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


if __name__ == "__main__":
    sys.exit(main())
