"""The ``/metrics`` endpoint: Prometheus text built from a :class:`~.health.HealthView`.

One :class:`MetricsExporter` per HTTP server holds its own ``CollectorRegistry`` (never the
process-global one: several nodes may run in one process, in the tests). The collector yields
the families of the view the server hands it for the request being answered; the server is
single-threaded, so no other request can swap the view in between.

Roles are exported as one gauge per possible role (``pgraft_raft_role{role="leader"} 1``, the
others 0), the kube-state-metrics convention: ``max by (role)`` and ``== 1`` work, and a role
change shows as two series crossing. Values that are unknown (no lease, no lag on a primary,
no PostgreSQL without HA mode) are left out rather than exported as NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from ..node.metrics import Histogram
from .health import RAFT_ROLES, HealthView
from .types import PG_ROLES


def _flag(value: bool) -> float:
    return 1.0 if value else 0.0


def _role_gauge(name: str, doc: str, roles: Iterable[str], current: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["role"])
    names = list(roles)
    if current not in names:  # a role this version does not know: still visible
        names.append(current)
    for role in names:
        family.add_metric([role], _flag(role == current))
    return family


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    """pgraft's per-bucket counts as Prometheus's cumulative ``le`` buckets (seconds)."""
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for i, n in enumerate(hist.counts):
        cumulative += n
        le = floatToGoString(hist.bounds[i]) if i < len(hist.bounds) else "+Inf"
        buckets.append((le, float(cumulative)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=hist.total)


def families(view: HealthView) -> Iterator[Metric]:
    """Every metric family of one view."""
    info = GaugeMetricFamily("pgraft_node_info", "This node's id (value always 1)",
                             labels=["node_id"])
    info.add_metric([str(view.node_id)], 1.0)
    yield info
    yield GaugeMetricFamily("pgraft_node_running", "1 while the node runs, 0 while it stops",
                            value=_flag(view.running))
    yield GaugeMetricFamily("pgraft_ha_mode", "1 when the node runs a PostgreSQL server",
                            value=_flag(view.ha_mode))

    yield GaugeMetricFamily("pgraft_raft_term", "Current Raft term", value=view.raft_term)
    yield _role_gauge("pgraft_raft_role", "Raft role of this node (1 for the current one)",
                      RAFT_ROLES, view.raft_role)
    yield GaugeMetricFamily("pgraft_raft_commit_index", "Highest log index known committed",
                            value=view.commit_index)
    yield GaugeMetricFamily("pgraft_raft_applied_index", "Highest log index applied here",
                            value=view.applied_index)
    if view.commit_latency is not None:
        yield _histogram("pgraft_commit_latency_seconds",
                         "Time from proposal to commit of this node's proposals",
                         view.commit_latency)
    lag = GaugeMetricFamily("pgraft_peer_lag_entries",
                            "Entries a peer is behind the leader's last index (leader only)",
                            labels=["peer"])
    for peer, entries in sorted(view.peer_lag.items()):
        lag.add_metric([str(peer)], entries)
    yield lag

    if view.ha_mode:
        pg = view.pg
        yield _role_gauge("pgraft_postgres_role",
                          "Role of this node's PostgreSQL server (1 for the current one)",
                          PG_ROLES, pg.role)
        yield GaugeMetricFamily("pgraft_postgres_streaming",
                                "1 when this replica's WAL receiver streams",
                                value=_flag(pg.streaming))
        if pg.timeline is not None:
            yield GaugeMetricFamily("pgraft_postgres_timeline", "PostgreSQL timeline",
                                    value=pg.timeline)
        if pg.lag_bytes is not None:
            yield GaugeMetricFamily("pgraft_postgres_replication_lag_bytes",
                                    "WAL bytes the primary reported that are not replayed here",
                                    value=pg.lag_bytes)

    yield GaugeMetricFamily("pgraft_lease_valid",
                            "1 when this node holds a valid primary lease on its own clock",
                            value=_flag(view.lease_valid))
    if view.lease_remaining_ms is not None:
        yield GaugeMetricFamily("pgraft_lease_remaining_seconds",
                                "Time left on this node's primary lease",
                                value=view.lease_remaining_ms / 1000.0)
    yield GaugeMetricFamily("pgraft_ha_epoch", "HA epoch the log names (bumped by failovers)",
                            value=view.epoch)
    yield CounterMetricFamily("pgraft_failovers", "Failovers this node has seen applied",
                              value=view.failovers)


class _ViewCollector(Collector):
    def __init__(self) -> None:
        self.view: HealthView | None = None

    def collect(self) -> Iterable[Metric]:
        view = self.view
        return families(view) if view is not None else ()


class MetricsExporter:
    """A registry of its own and the rendering of one view in the format a scraper asked."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _ViewCollector()
        self.registry.register(self._collector)

    def render(self, view: HealthView, accept: str | None = None) -> tuple[bytes, str]:
        """(body, Content-Type): Prometheus text, or OpenMetrics when ``accept`` prefers it."""
        encoder, content_type = choose_encoder(accept or "")
        self._collector.view = view
        try:
            return encoder(self.registry), content_type
        finally:
            self._collector.view = None
