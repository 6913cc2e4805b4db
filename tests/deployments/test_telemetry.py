"""Engine failures counted by reason, trace context carried through payloads, JSON logs."""

from __future__ import annotations

import asyncio
import json
import logging

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from deployments.ray_metrics import RayMetricsBackend
from recommend.fanout import fan_out
from storage.logs import JsonFormatter, bind_request
from storage.metrics import SPECS, backend, render_local
from storage.tracing import configure_tracing, current_trace_id, extract, inject, tracer
from tests.graph_api.test_observability import samples


def failures(engine: str, reason: str) -> float:
    for sample in samples(render_local().decode(), "engine_failures_total"):
        if sample["engine"] == engine and sample["reason"] == reason:
            return float(sample["_value"])
    return 0.0


async def test_a_failing_engine_increments_the_failure_counter() -> None:
    async def good() -> list[tuple[str, float]]:
        return [("a", 1.0)]

    async def broken() -> list[tuple[str, float]]:
        raise RuntimeError("model file missing")

    async def slow() -> list[tuple[str, float]]:
        await asyncio.sleep(5)
        return []

    before = failures("t_broken", "error"), failures("t_slow", "timeout")
    calls = {"t_good": good, "t_broken": broken, "t_slow": slow}
    outcome = await fan_out(calls, timeout_s=0.05)
    assert outcome.failed == ["t_broken", "t_slow"]
    assert failures("t_broken", "error") == before[0] + 1
    assert failures("t_slow", "timeout") == before[1] + 1
    assert failures("t_good", "error") == 0.0
    assert "engine" in SPECS["engine_failures"].labels and backend() is not None


def test_trace_context_travels_in_the_payload() -> None:
    exporter = InMemorySpanExporter()
    provider = configure_tracing("test", exporter=exporter)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracer().start_as_current_span("ingress") as root:
        payload = inject({"tenant_id": "t"})
    assert payload["traceparent"].split("-")[1] == f"{root.get_span_context().trace_id:032x}"
    # The callee (another process in Serve) continues the same trace from the payload alone.
    with tracer().start_as_current_span("combiner", context=extract(payload)) as child:
        assert current_trace_id() == f"{root.get_span_context().trace_id:032x}"
    provider.force_flush()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["combiner"].parent.span_id == root.get_span_context().span_id
    assert child.get_span_context().trace_id == root.get_span_context().trace_id
    assert extract({}) is not None and inject({}) == {}


def test_json_logs_carry_request_fields_and_trace_id() -> None:
    record = logging.LogRecord("recserve", logging.WARNING, __file__, 1, "slow %s", ("ease",), None)
    with (
        tracer().start_as_current_span("op") as span,
        bind_request(request_id="r1", tenant_id="t1", operation="query:Recs"),
    ):
        line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "slow ease" and line["level"] == "WARNING"
    assert (line["request_id"], line["tenant_id"], line["operation"]) == ("r1", "t1", "query:Recs")
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    outside = json.loads(JsonFormatter().format(record))
    assert "request_id" not in outside and "trace_id" not in outside


def test_ray_gauges_are_reported_again_until_changed() -> None:
    # Ray's exporter drops a gauge that was not re-set for two report intervals.
    class FakeGauge:
        def __init__(self) -> None:
            self.calls: list[tuple[float, dict[str, str] | None]] = []

        def set(self, value: float, tags: dict[str, str] | None = None) -> None:
            self.calls.append((value, tags))

    gauge = FakeGauge()
    ray_backend = RayMetricsBackend(refresh_s=3600)
    ray_backend._instruments["model_version_served"] = gauge
    labels = {"tenant_id": "t", "algorithm": "ease"}
    ray_backend.set(SPECS["model_version_served"], labels, 7.0)
    ray_backend.refresh()
    ray_backend.refresh()
    assert gauge.calls == [(7.0, labels)] * 3
