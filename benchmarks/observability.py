"""What observability costs per request: metrics, spans, trace propagation, JSON log lines.

    python -m benchmarks.observability [--calls 20000]

Each row times one operation in a loop on this process (prometheus_client backend, tracing on
with no exporter, i.e. what a replica does when ``RECSERVE_OTLP_ENDPOINT`` is unset) and prints
microseconds per call. One GraphQL request does about one of each.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

from storage import meters
from storage.logs import JsonFormatter, bind_request
from storage.tracing import extract, inject, tracer


def per_call_us(operation: Callable[[], object], calls: int) -> float:
    operation()  # warm: first calls create the series
    started = time.perf_counter()
    for _ in range(calls):
        operation()
    return (time.perf_counter() - started) / calls * 1e6


def operations() -> dict[str, Callable[[], object]]:
    record = logging.LogRecord("recserve", logging.INFO, __file__, 1, "served %s", ("x",), None)
    formatter = JsonFormatter()
    payload = {"tenant_id": "t"}

    def span_with_propagation() -> None:
        with tracer().start_as_current_span("combiner"):
            carried = inject(dict(payload))
        with tracer().start_as_current_span("engine", context=extract(carried)):
            pass

    def json_log_line() -> str:
        with bind_request(request_id="r", tenant_id="t", operation="query:Recs"):
            return formatter.format(record)

    return {
        "graphql_request (counter + histogram)": lambda: meters.graphql_request(
            "query", "Recs", "tenant-1", "ok", 0.012
        ),
        "recommendation (counter + histogram)": lambda: meters.recommendation(
            "hybrid", "tenant-1", "ok", 0.008
        ),
        "cache_lookup (counter)": lambda: meters.cache_lookup("tenant-1", True),
        "2 spans + traceparent inject/extract": span_with_propagation,
        "JSON log line with request fields": json_log_line,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    rows = [(name, per_call_us(op, args.calls)) for name, op in operations().items()]
    width = max(len(name) for name, _ in rows)
    print(f"{'operation':<{width}}  {'us/call':>8}")
    for name, cost in rows:
        print(f"{name:<{width}}  {cost:>8.2f}")


if __name__ == "__main__":
    main()
