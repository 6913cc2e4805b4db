"""Live request metrics, collected by a schema extension rather than inside resolvers.

One ``MetricsRecorder`` lives per app (per Serve replica); ``performanceMetrics`` reads the
caller's tenant's share of it, ``/health`` the whole. Latency percentiles cover a recent window
so they follow the current load, while the totals count everything since start.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from strawberry.extensions import SchemaExtension

from storage import meters
from storage.logs import bind_request, update_request
from storage.tracing import tracer


@dataclass(frozen=True)
class MetricsSnapshot:
    total_requests: int
    total_errors: int
    window_seconds: float
    window_requests: int
    requests_per_second: float
    p50_latency_ms: float
    p95_latency_ms: float
    error_rate: float
    cache_hits: int
    cache_misses: int
    cache_hit_rate: float
    operations: dict[str, int]


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0.0 for an empty window."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


@dataclass
class _Totals:
    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    operations: dict[str, int] = field(default_factory=dict)


class MetricsRecorder:
    def __init__(
        self, window_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_seconds = window_seconds
        self._clock = clock
        # (time, latency ms, failed, tenant id or None)
        self._samples: deque[tuple[float, float, bool, str | None]] = deque()
        self._all = _Totals()
        self._tenants: dict[str, _Totals] = {}

    def _totals(self, tenant_id: object) -> list[_Totals]:
        if tenant_id is None:
            return [self._all]
        return [self._all, self._tenants.setdefault(str(tenant_id), _Totals())]

    def record_request(
        self, operation: str, latency_ms: float, failed: bool, tenant_id: object = None
    ) -> None:
        now = self._clock()
        tenant = str(tenant_id) if tenant_id is not None else None
        self._samples.append((now, latency_ms, failed, tenant))
        for totals in self._totals(tenant_id):
            totals.requests += 1
            totals.errors += int(failed)
            totals.operations[operation] = totals.operations.get(operation, 0) + 1
        self._expire(now)

    def record_cache(self, hit: bool, tenant_id: object = None) -> None:
        meters.cache_lookup(tenant_id, hit)
        for totals in self._totals(tenant_id):
            if hit:
                totals.cache_hits += 1
            else:
                totals.cache_misses += 1

    def _expire(self, now: float) -> None:
        while self._samples and now - self._samples[0][0] > self.window_seconds:
            self._samples.popleft()

    def snapshot(self, tenant_id: object = None) -> MetricsSnapshot:
        """Everything this replica served, or (``tenant_id``) that tenant's share of it only."""
        now = self._clock()
        self._expire(now)
        tenant = str(tenant_id) if tenant_id is not None else None
        samples = [s for s in self._samples if tenant is None or s[3] == tenant]
        totals = self._all if tenant is None else self._tenants.get(tenant, _Totals())
        latencies = sorted(sample[1] for sample in samples)
        errors = sum(1 for sample in samples if sample[2])
        count = len(latencies)
        span = min(self.window_seconds, max(now - samples[0][0], 1.0)) if count else 1.0
        lookups = totals.cache_hits + totals.cache_misses
        return MetricsSnapshot(
            total_requests=totals.requests,
            total_errors=totals.errors,
            window_seconds=self.window_seconds,
            window_requests=count,
            requests_per_second=count / span,
            p50_latency_ms=_percentile(latencies, 0.50),
            p95_latency_ms=_percentile(latencies, 0.95),
            error_rate=errors / count if count else 0.0,
            cache_hits=totals.cache_hits,
            cache_misses=totals.cache_misses,
            cache_hit_rate=totals.cache_hits / lookups if lookups else 0.0,
            operations=dict(totals.operations),
        )


class MetricsExtension(SchemaExtension):
    """Times each operation and counts it as failed when the result carries errors."""

    def __init__(self, recorder: MetricsRecorder) -> None:
        self.recorder = recorder

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        # The operation's span is the root of the trace the engines continue (see tracing).
        with (
            tracer().start_as_current_span("graphql operation") as span,
            bind_request(request_id=uuid.uuid4().hex[:16]),
        ):
            yield
            span.set_attribute("graphql.operation.name", self._operation_label())
            update_request(operation=self._operation_label(), tenant_id=self._tenant_id())
        self._record(started)

    def _record(self, started: float) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        result = self.execution_context.result
        failed = bool(result is not None and result.errors)
        name = self._operation_label()
        self.recorder.record_request(name, elapsed_ms, failed, self._tenant_id())
        kind, _, operation = name.partition(":")
        meters.graphql_request(
            kind,
            operation if kind != "invalid" else None,
            self._tenant_id(),
            "error" if failed else "ok",
            elapsed_ms / 1000.0,
        )

    def _tenant_id(self) -> str | None:
        principal = getattr(self.execution_context.context, "principal", None)
        return str(principal.tenant_id) if principal is not None else None

    def _operation_label(self) -> str:
        try:
            kind = self.execution_context.operation_type.value
        except RuntimeError:  # unparseable document: no operation type to report
            return "invalid"
        return f"{kind}:{self.execution_context.operation_name or 'anonymous'}"
