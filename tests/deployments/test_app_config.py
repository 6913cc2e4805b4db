"""serve_config.yaml against the builder, without starting Ray: what `serve run` would build."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve import Application, Deployment
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve._private.build_app import build_app as serve_build
from ray.serve.schema import ServeDeploySchema

from deployments.app import ALGORITHMS, AppArgs, build_app, engine_name, replica_env

CONFIG = Path(__file__).resolve().parents[2] / "serve_config.yaml"


@pytest.fixture(scope="module")
def config() -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))


def _deployments(app: Application) -> dict[str, Deployment]:
    """Every deployment of an application by name, as Serve's own build step finds them."""
    built = serve_build(app, name="recserve")
    return {deployment.name: deployment for deployment in built.deployments}


def test_config_builds_every_deployment_it_names(config: ServeDeploySchema) -> None:
    [application] = config.applications
    assert application.import_path == "deployments.app:build_app"
    app = call_user_app_builder_with_args_if_necessary(build_app, application.args)
    built = _deployments(app)
    expected = {"ingress", "combiner", *(engine_name(a) for a in ALGORITHMS)}
    assert set(built) == expected
    assert {d.name for d in application.deployments} == expected


def test_sizes_fit_two_cpus_and_leave_room_for_training(config: ServeDeploySchema) -> None:
    args = AppArgs.model_validate(config.applications[0].args)
    app = build_app(args)
    cpus = [d.ray_actor_options["num_cpus"] for d in _deployments(app).values()]
    assert all(0.05 <= c <= 0.2 for c in cpus)
    assert sum(cpus) + 0.5 <= 2.0


def test_builder_forwards_recserve_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSERVE_DATA_DIR", "/srv/recserve")
    monkeypatch.setenv("UNRELATED", "x")
    args = AppArgs(engines=["popularity"], graphql=False, settings={"redis_url": "redis://r"})
    assert replica_env(args) == {
        "RECSERVE_DATA_DIR": "/srv/recserve",
        "RECSERVE_REDIS_URL": "redis://r",
    }
    engine = _deployments(build_app(args))[engine_name("popularity")]
    env_vars = engine.ray_actor_options["runtime_env"]["env_vars"]
    assert env_vars["RECSERVE_DATA_DIR"] == "/srv/recserve"
    closed = AppArgs(engines=["popularity"], passthrough_env=False)
    assert replica_env(closed) == {}
