"""Live request metrics, collected by a schema extension rather than inside resolvers.

One ``MetricsRecorder`` lives per app (per Serve replica); ``performanceMetrics`` reads the
caller's tenant's share of it, ``/health`` the whole. Latency percentiles cover a recent window
so they follow the current load, while the totals count everything since start.

Errors are split by fault: ``errors`` (and the error rate behind ``/health/ready``) count the
server's faults only (``INTERNAL``, ``UNAVAILABLE``); a client's invalid query, a refusal or a
429 counts in ``client_errors``, so no client can make a replica look unhealthy. Operation names
are the client's choice: they are counted under a bounded label set (``OperationNames``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from strawberry.extensions import SchemaExtension

from graph_api.errors import is_server_fault
from storage import meters
from storage.logs import bind_request, update_request
from storage.tracing import tracer


@dataclass(frozen=True)
class MetricsSnapshot:
    total_requests: int
    total_errors: int
    total_client_errors: int
    query_count: int  # query operations answered without an error
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


# A GraphQL name of at most this many characters; anything else is counted as OTHER.
_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]{0,63}$")
OTHER = "other"
QUERY_PREFIX = "query:"  # the label of every query operation (``MetricsExtension``)
MAX_NAMES_PER_TENANT = 50
MAX_NAMES = 1_000


class OperationNames:
    """The bounded label set for client-chosen operation names.

    A name is kept when it is a GraphQL name of at most 64 characters and its tenant (or the
    unauthenticated pool) has fewer than ``per_tenant`` distinct names, and the replica fewer
    than ``total``; every other name is counted as ``other``. Labels once admitted stay, so the
    figures of well-behaved clients never churn.
    """

    def __init__(self, per_tenant: int = MAX_NAMES_PER_TENANT, total: int = MAX_NAMES) -> None:
        self.per_tenant = per_tenant
        self.total = total
        self._by_tenant: dict[str | None, set[str]] = {}
        self._all: set[str] = set()

    def label(self, tenant_id: object, name: str | None) -> str:
        if not name:
            return "anonymous"
        if not _NAME.match(name):
            return OTHER
        tenant = str(tenant_id) if tenant_id is not None else None
        known = self._by_tenant.setdefault(tenant, set())
        if name in known:
            return name
        if len(known) >= self.per_tenant or (
            name not in self._all and len(self._all) >= self.total
        ):
            return OTHER
        known.add(name)
        self._all.add(name)
        return name


@dataclass
class _Totals:
    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    queries: int = 0
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
        self.names = OperationNames()

    def _totals(self, tenant_id: object) -> list[_Totals]:
        if tenant_id is None:
            return [self._all]
        return [self._all, self._tenants.setdefault(str(tenant_id), _Totals())]

    def record_request(
        self,
        operation: str,
        latency_ms: float,
        failed: bool,
        tenant_id: object = None,
        rejected: bool = False,
    ) -> None:
        """``failed``: the server's fault; ``rejected``: the client's (only ``failed`` feeds the
        error rate). ``operation`` must come from ``names.label`` (a bounded set): a query's
        label is ``query:<name>``, and a query with neither counts as served."""
        now = self._clock()
        tenant = str(tenant_id) if tenant_id is not None else None
        self._samples.append((now, latency_ms, failed, tenant))
        served = operation.startswith(QUERY_PREFIX) and not (failed or rejected)
        for totals in self._totals(tenant_id):
            totals.queries += int(served)
            totals.requests += 1
            totals.errors += int(failed)
            totals.client_errors += int(rejected and not failed)
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
            total_client_errors=totals.client_errors,
            query_count=totals.queries,
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


def record_operation(
    recorder: MetricsRecorder,
    started: float,
    kind: str,
    name: str,
    tenant: str | None,
    errors: list[Any],
    label: str | None = None,
) -> None:
    """One operation's figures (``MetricsExtension``'s, and ``graph_api.fast_path``'s): it failed
    when an error is the server's fault, and was rejected when there are only the client's."""
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    failed = any(is_server_fault(error) for error in errors)
    rejected = bool(errors) and not failed
    label = label if label is not None else f"{kind}:{name}"
    recorder.record_request(label, elapsed_ms, failed, tenant, rejected)
    status = "error" if failed else "rejected" if rejected else "ok"
    meters.graphql_request(
        kind, name if kind != "invalid" else None, tenant, status, elapsed_ms / 1000.0
    )


class MetricsExtension(SchemaExtension):
    """Times each operation; it failed when the result carries a server fault, and was
    rejected when it carries only the client's errors."""

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
            kind, name = self._operation()
            label = kind if kind == "invalid" else f"{kind}:{name}"
            span.set_attribute("graphql.operation.name", label)
            update_request(operation=label, tenant_id=self._tenant_id())
        self._record(started, kind, name, label)

    def _record(self, started: float, kind: str, name: str, label: str) -> None:
        result = self.execution_context.result
        errors = list(result.errors or ()) if result is not None else []
        record_operation(self.recorder, started, kind, name, self._tenant_id(), errors, label)

    def _tenant_id(self) -> str | None:
        principal = getattr(self.execution_context.context, "principal", None)
        return str(principal.tenant_id) if principal is not None else None

    def _operation(self) -> tuple[str, str]:
        """(operation type, bounded name label); ("invalid", "") for an unparseable document."""
        try:
            kind = self.execution_context.operation_type.value
        except RuntimeError:  # unparseable document: no operation type to report
            return "invalid", ""
        name = self.execution_context.operation_name
        return kind, self.recorder.names.label(self._tenant_id(), name)
