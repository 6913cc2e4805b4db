"""The one local Ray + Serve instance of a test session, as a pytest plugin.

List it in ``pytest_plugins`` (or import ``serve_instance`` in a conftest): starting Ray takes
seconds and a Serve app more, so every Ray test of the session shares one instance.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

METRICS_PORT_ENV = "RECSERVE_TEST_RAY_METRICS_PORT"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def serve_instance() -> Iterator[int]:
    """Starts Ray (2 CPUs) and Serve on a free HTTP port; yields that port."""
    # Ray 2.60 turns token auth on by default; the Makefile, CLI and tests all disable it.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    port = _free_port()
    # A known metrics export port: tests scrape Ray's Prometheus endpoint (ray_metrics_port).
    os.environ[METRICS_PORT_ENV] = str(_free_port())
    # "local": never attach to a cluster another process started with `ray start`.
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=int(os.environ[METRICS_PORT_ENV]),
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def ray_metrics_port(serve_instance: int) -> int:
    """The port of the Ray node's Prometheus endpoint (every worker's application metrics)."""
    return int(os.environ[METRICS_PORT_ENV])
