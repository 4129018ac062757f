"""The node runtime: one pgraft node in this process (docs/design.md, "Layers").

``pgraft serve`` is :func:`add_serve_arguments` + :func:`config_from_args` + :func:`run`; in a
program, ``node = await start_node(NodeConfig(...))`` runs one until ``await node.stop()``.

==============  =============================================================================
module          what it does
==============  =============================================================================
``config``      :class:`NodeConfig`, the ``pgraft serve`` options, the cluster notation
``process``     the composition root: opens, builds and wires a node (:func:`start_node`);
                :func:`run` with signals (a stopping leader hands over; SIGQUIT exits at once)
``logformat``   the human and the launcher log formats of ``pgraft serve --log-format``
``node``        :class:`Node`: the Ready loop, proposals, reads, membership changes
``waiters``     the pending-proposal table, read, apply and leader waiters
``server``      client request dispatch and the wire-shaped views (status, log stats, entries)
``listener``    inbound connections: admission limits, hello/auth, the identity peer gate
``peers``       outbound peer links: bounded queues, backoff
``storage``     :class:`DiskStorage`, the core's storage over the durable log
``snapfile``    the snapshot file format and store
``snapxfer``    InstallSnapshot streaming: the chunk/ack codec, both sides of a transfer
``snapshots``   when snapshots are taken, compaction, installing a received one
``identity``    cluster id and incarnation (the peer gate)
``pgbinding``   the PostgreSQL system identifier a data directory is bound to
``security``    cluster secret, TLS and connection limits
``metrics``     counters and histograms
==============  =============================================================================
"""

from .config import (
    NodeConfig,
    add_serve_arguments,
    config_from_args,
    format_cluster,
    parse_cluster,
    parse_endpoint,
)
from .node import Node
from .process import run, start_node

__all__ = ["Node", "NodeConfig", "add_serve_arguments", "config_from_args", "format_cluster",
           "parse_cluster", "parse_endpoint", "run", "start_node"]
