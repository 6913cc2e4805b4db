"""OpenTelemetry tracing: one provider per process, W3C context carried inside payloads.

Serve handle calls are not HTTP, so the caller puts a ``traceparent`` into the payload dict
(``inject``) and the callee continues the trace from it (``extract``). Spans are exported by
OTLP/HTTP only when ``RECSERVE_OTLP_ENDPOINT`` is set; without it spans still get ids (for
error responses and logs) but are dropped at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

ENDPOINT_ENV = "RECSERVE_OTLP_ENDPOINT"
TRACEPARENT = "traceparent"
_propagator = TraceContextTextMapPropagator()
_lock = threading.Lock()
# Our own provider rather than the global one: tests reconfigure it with an in-memory exporter,
# which OpenTelemetry's set-once global would refuse.
_provider: TracerProvider | None = None
_tracers: dict[TracerProvider, trace.Tracer] = {}


def _otlp_exporter(endpoint: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    url = endpoint.rstrip("/")
    return OTLPSpanExporter(endpoint=url if url.endswith("/v1/traces") else f"{url}/v1/traces")


def configure_tracing(
    service_name: str = "recserve", exporter: SpanExporter | None = None
) -> TracerProvider:
    """Install this process's provider once; ``exporter`` overrides the OTLP one (tests)."""
    global _provider
    with _lock:
        if _provider is not None and exporter is None:
            return _provider
        endpoint = os.environ.get(ENDPOINT_ENV)
        chosen = exporter or (_otlp_exporter(endpoint) if endpoint else None)
        # Off: spans are not recorded, but still get ids (error extensions, logs, traceparent).
        provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}),
            sampler=ALWAYS_ON if chosen is not None else ALWAYS_OFF,
        )
        if chosen is not None:
            provider.add_span_processor(BatchSpanProcessor(chosen))
        _provider = provider
        _tracers.clear()
        return provider


def tracer() -> trace.Tracer:
    # get_tracer builds a new Tracer each call: one per provider is kept.
    provider = _provider or configure_tracing()
    if provider not in _tracers:
        _tracers[provider] = provider.get_tracer("recserve")
    return _tracers[provider]


def inject(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` plus the current span's ``traceparent`` (unchanged when no span is active)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    if TRACEPARENT in carrier:
        payload[TRACEPARENT] = carrier[TRACEPARENT]
    return payload


def extract(payload: Mapping[str, Any] | None) -> context.Context:
    value = payload.get(TRACEPARENT) if isinstance(payload, Mapping) else None
    return _propagator.extract({TRACEPARENT: value} if isinstance(value, str) else {})


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return f"{span_context.trace_id:032x}" if span_context.is_valid else None
