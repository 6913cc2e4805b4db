"""Session-wide test fixtures shared by every test package.

Service-backed tests read their URLs from the environment (``.ci/run`` exports them):

- ``RECSERVE_TEST_POSTGRES_URL``  e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``
- ``RECSERVE_TEST_REDIS_URL``     e.g. ``redis://127.0.0.1:6379/0``
- ``RECSERVE_TEST_REDIS_CLUSTER`` e.g. ``127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002``

Unset: the test skips with a reason. Unset while ``CI=true``: the test fails, so CI can never
pass by silently skipping the real backends.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

# The one Ray/Serve instance shared by every test of the session that needs it.
pytest_plugins = ["tests.ray_fixtures"]


def _service_url(variable: str) -> str:
    value = os.environ.get(variable, "").strip()
    if value:
        return value
    missing(f"{variable} is not set", "start the service and export it to run this test")


def missing(what: str, remedy: str) -> None:
    """A backend or tool a test needs is absent: the test fails under ``CI=true`` (CI must never
    pass by skipping it), and skips with ``remedy`` elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what}, but CI=true: service-backed tests must run in CI")
    pytest.skip(f"{what}: {remedy}")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _service_url("RECSERVE_TEST_POSTGRES_URL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _service_url("RECSERVE_TEST_REDIS_URL")


@pytest.fixture(scope="session")
def redis_cluster_url() -> str:
    """The cluster as a ``redis+cluster://h:p,h:p`` URL, the form ``Settings.redis_url`` takes."""
    return "redis+cluster://" + _service_url("RECSERVE_TEST_REDIS_CLUSTER")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
