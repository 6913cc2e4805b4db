"""The product's operational metrics: one table of definitions, pluggable backends.

Every layer records through ``meters()``. By default the series go to a private
``prometheus_client`` registry (served as ``/metrics`` by the ingress app, and read by tests);
``deployments`` installs a Ray-backed backend on each replica so every replica's series reach
Ray's Prometheus endpoint. Labels are bounded: tenants, algorithms, engines, operation names and
statuses; never user ids.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import prometheus_client
from prometheus_client import CollectorRegistry

Kind = Literal["counter", "histogram", "gauge"]
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TRAINING_BUCKETS = (0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0)
# Ray prefixes every application metric with this on its Prometheus endpoint.
RAY_PREFIX = "ray_"


@dataclass(frozen=True)
class MetricSpec:
    name: str  # counters without "_total": both backends append it
    kind: Kind
    description: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = LATENCY_BUCKETS

    def exported_names(self) -> tuple[str, ...]:
        """The series names a scrape shows (before Ray's prefix)."""
        if self.kind == "counter":
            return (f"{self.name}_total",)
        if self.kind == "histogram":
            return tuple(f"{self.name}{s}" for s in ("_bucket", "_sum", "_count"))
        return (self.name,)


SPECS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            "graphql_requests",
            "counter",
            "GraphQL operations by type, name, tenant and outcome.",
            ("operation_type", "operation_name", "tenant_id", "status"),
        ),
        MetricSpec(
            "graphql_request_duration_seconds",
            "histogram",
            "GraphQL operation latency.",
            ("operation_type",),
        ),
        MetricSpec(
            "recommendation_requests",
            "counter",
            "Recommendation requests answered by the combiner.",
            ("algorithm", "tenant_id", "status"),
        ),
        MetricSpec(
            "recommendation_duration_seconds",
            "histogram",
            "Combiner time per recommendation request.",
            ("algorithm",),
        ),
        MetricSpec("cache_hits", "counter", "Recommendation cache hits.", ("tenant_id",)),
        MetricSpec("cache_misses", "counter", "Recommendation cache misses.", ("tenant_id",)),
        MetricSpec(
            "rate_limit_rejections",
            "counter",
            "Requests refused by the rate limiter.",
            ("tenant_id", "scope"),
        ),
        MetricSpec("websocket_connections", "gauge", "Open WebSocket connections (per replica)."),
        MetricSpec(
            "engine_failures",
            "counter",
            "Engine calls the combiner dropped, by engine and reason (error or timeout).",
            ("engine", "reason"),
        ),
        MetricSpec(
            "training_runs",
            "counter",
            "Model training runs by algorithm and outcome.",
            ("algorithm", "status"),
        ),
        MetricSpec(
            "training_duration_seconds",
            "histogram",
            "Time to fit and publish one algorithm's model.",
            ("algorithm", "status"),
            TRAINING_BUCKETS,
        ),
        MetricSpec(
            "model_bytes",
            "gauge",
            "Bytes of the models an engine replica holds (memory-mapped: shared between the"
            " replicas of a node), per tenant and algorithm.",
            ("tenant_id", "algorithm"),
        ),
        MetricSpec(
            "dependency_up",
            "gauge",
            "1 while a dependency answered this replica's last health check (database, cache,"
            " vector store, engines), 0 while it was unreachable: a degraded replica shows here.",
            ("dependency",),
        ),
        MetricSpec(
            "recommendation_impressions",
            "counter",
            "Lists served (one per recommendationId), per tenant and experiment variant.",
            ("tenant_id", "variant"),
        ),
        MetricSpec(
            "recommendation_clicks",
            "counter",
            "Interactions attributed to a served list as clicks, per tenant and variant.",
            ("tenant_id", "variant"),
        ),
        MetricSpec(
            "recommendation_conversions",
            "counter",
            "Interactions attributed to a served list as conversions, per tenant and variant.",
            ("tenant_id", "variant"),
        ),
        MetricSpec(
            "feedback_dropped",
            "counter",
            "Impressions or attributions dropped because the replica's write queue was full"
            " or the database refused them after retries.",
            ("kind",),
        ),
        MetricSpec(
            "model_version_served",
            "gauge",
            "The version number of the model an engine serves, per tenant and algorithm.",
            ("tenant_id", "algorithm"),
        ),
    )
}


def exported_names(prefix: str = "") -> set[str]:
    return {prefix + name for spec in SPECS.values() for name in spec.exported_names()}


class MetricsBackend(Protocol):
    def inc(self, spec: MetricSpec, labels: Mapping[str, str], value: float) -> None: ...
    def observe(self, spec: MetricSpec, labels: Mapping[str, str], value: float) -> None: ...
    def set(self, spec: MetricSpec, labels: Mapping[str, str], value: float) -> None: ...


class PrometheusBackend:
    """Series in a private ``CollectorRegistry`` (never the global one: tests build many apps)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._metrics: dict[str, object] = {}
        self._lock = threading.Lock()

    def _metric(self, spec: MetricSpec) -> object:
        with self._lock:
            if spec.name not in self._metrics:
                self._metrics[spec.name] = self._create(spec)
            return self._metrics[spec.name]

    def _create(self, spec: MetricSpec) -> object:
        common = {"labelnames": spec.labels, "registry": self.registry}
        if spec.kind == "counter":
            return prometheus_client.Counter(spec.name, spec.description, **common)
        if spec.kind == "histogram":
            return prometheus_client.Histogram(
                spec.name, spec.description, buckets=spec.buckets, **common
            )
        return prometheus_client.Gauge(spec.name, spec.description, **common)

    def _child(self, spec: MetricSpec, labels: Mapping[str, str]) -> object:
        metric = self._metric(spec)
        return metric.labels(**labels) if spec.labels else metric  # type: ignore[attr-defined]

    def inc(self, spec: MetricSpec, labels: Mapping[str, str], value: float) -> None:
        self._child(spec, labels).inc(value)  # type: ignore[attr-defined]

    def observe(self, spec: MetricSpec, labels: Mapping[str, str], value: float) -> None:
        self._child(spec, labels).observe(value)  # type: ignore[attr-defined]

    def set(self, spec: MetricSpec, labels: Mapping[str, str], value: float) -> None:
        self._child(spec, labels).set(value)  # type: ignore[attr-defined]

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


class TeeBackend:
    """A cluster backend (Ray), plus the local registry that ``/metrics`` on the ingress serves."""

    def __init__(self, *backends: MetricsBackend) -> None:
        self.backends = backends

    def inc(self, spec: MetricSpec, labels: Mapping[str, str], value: float) -> None:
        for one in self.backends:
            one.inc(spec, labels, value)

    def observe(self, spec: MetricSpec, labels: Mapping[str, str], value: float) -> None:
        for one in self.backends:
            one.observe(spec, labels, value)

    def set(self, spec: MetricSpec, labels: Mapping[str, str], value: float) -> None:
        for one in self.backends:
            one.set(spec, labels, value)

    def local(self) -> PrometheusBackend | None:
        return next((b for b in self.backends if isinstance(b, PrometheusBackend)), None)


_backend: MetricsBackend = PrometheusBackend()


def use_backend(backend: MetricsBackend) -> MetricsBackend:
    """Route this process's series to ``backend``; returns the previous one."""
    global _backend
    previous, _backend = _backend, backend
    return previous


def backend() -> MetricsBackend:
    return _backend


def render_local() -> bytes:
    """This process's series in Prometheus text format (what ``/metrics`` serves)."""
    current = _backend
    local = current if isinstance(current, PrometheusBackend) else None
    if isinstance(current, TeeBackend):
        local = current.local()
    return local.render() if local is not None else b""
