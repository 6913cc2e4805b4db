"""The Ray-backed ``storage.metrics`` backend, installed on every replica and training task.

``ray.serve.metrics`` instruments are ``ray.util.metrics`` ones that also carry the deployment,
replica and application tags when created on a replica, so the series of every replica reach
Ray's Prometheus endpoint (``ray_<name>...``) and the dashboard without colliding.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from ray.serve import metrics as serve_metrics

from storage.metrics import MetricSpec, PrometheusBackend, TeeBackend, backend, use_backend

# Ray's exporter forgets a gauge nobody re-set for two report intervals (about 20 s), so a
# value set once (a loaded model's version, an idle socket count) is re-set this often.
GAUGE_REFRESH_S = 5.0


class RayMetricsBackend:
    def __init__(self, refresh_s: float = GAUGE_REFRESH_S) -> None:
        self._instruments: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._refresh_s = refresh_s
        self._refresher: threading.Thread | None = None

    def _instrument(self, spec: MetricSpec) -> Any:
        with self._lock:
            if spec.name not in self._instruments:
                self._instruments[spec.name] = self._create(spec)
            return self._instruments[spec.name]

    @staticmethod
    def _create(spec: MetricSpec) -> Any:
        keys = spec.labels or None
        if spec.kind == "counter":
            return serve_metrics.Counter(spec.name, spec.description, tag_keys=keys)
        if spec.kind == "histogram":
            return serve_metrics.Histogram(
                spec.name, spec.description, boundaries=list(spec.buckets), tag_keys=keys
            )
        return serve_metrics.Gauge(spec.name, spec.description, tag_keys=keys)

    def inc(self, spec: MetricSpec, labels: Mapping[str, str], value: float) -> None:
        self._instrument(spec).inc(value, tags=dict(labels) or None)

    def observe(self, spec: MetricSpec, labels: Mapping[str, str], value: float) -> None:
        self._instrument(spec).observe(value, tags=dict(labels) or None)

    def set(self, spec: MetricSpec, labels: Mapping[str, str], value: float) -> None:
        self._instrument(spec).set(value, tags=dict(labels) or None)
        with self._lock:
            self._gauges[(spec.name, tuple(sorted(labels.items())))] = value
            if self._refresher is None:
                self._refresher = threading.Thread(
                    target=self._refresh_forever, name="gauge-refresh", daemon=True
                )
                self._refresher.start()

    def refresh(self) -> None:
        """Report every gauge's last value again."""
        with self._lock:
            current = list(self._gauges.items())
        for (name, labels), value in current:
            self._instruments[name].set(value, tags=dict(labels) or None)

    def _refresh_forever(self) -> None:
        while True:
            time.sleep(self._refresh_s)
            self.refresh()


def install_ray_metrics() -> None:
    """Idempotent: this process records to Ray (and keeps its local registry)."""
    current = backend()
    if isinstance(current, TeeBackend):
        return
    local = current if isinstance(current, PrometheusBackend) else PrometheusBackend()
    use_backend(TeeBackend(RayMetricsBackend(), local))
