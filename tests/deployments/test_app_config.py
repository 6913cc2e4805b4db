"""serve_config.yaml against the builder, without starting Ray: what `serve run` would build."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve import Application, Deployment
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve._private.build_app import build_app as serve_build
from ray.serve.schema import ServeDeploySchema

from cluster.manifests import for_cluster
from deployments.app import (
    ALGORITHMS,
    AppArgs,
    build_app,
    engine_deployments,
    engine_name,
    replica_env,
)
from deployments.vector_store import NAME as VECTORS
from storage.errors import InvalidData

CONFIG = Path(__file__).resolve().parents[2] / "serve_config.yaml"


@pytest.fixture(scope="module")
def config() -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))


def _deployments(app: Application) -> dict[str, Deployment]:
    """Every deployment of an application by name, as Serve's own build step finds them."""
    built = serve_build(app, name="recserve")
    return {deployment.name: deployment for deployment in built.deployments}


def test_config_builds_every_deployment_it_names(
    config: ServeDeploySchema, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECSERVE_QDRANT_URL", raising=False)
    [application] = config.applications
    assert application.import_path == "deployments.app:build_app"
    app = call_user_app_builder_with_args_if_necessary(build_app, application.args)
    built = _deployments(app)
    # The laptop: one engine pool serves all nine algorithms.
    expected = {"ingress", "combiner", "engines"}
    # Without a Qdrant server one replica holds the embedded vector store for the whole app.
    assert set(built) == expected | {VECTORS}
    assert built[VECTORS].num_replicas == 1
    [served] = built["engines"].init_args
    assert sorted(served) == sorted(ALGORITHMS)
    assert len({id(h) for h in built["combiner"].init_args[0].values()}) == 1  # one handle
    assert list(built["combiner"].init_args[0]) == served
    # The config names only what every setup builds (a server setup has no vectors replica).
    assert {d.name for d in application.deployments} == expected
    autoscaling = next(d for d in application.deployments if d.name == "engines")
    assert autoscaling.autoscaling_config["min_replicas"] == 1
    assert autoscaling.autoscaling_config["max_replicas"] == 2


def test_the_cluster_config_builds_one_engine_per_algorithm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The RayService's app (``cluster.manifests.for_cluster``): no pool, every ``engine_*``."""
    monkeypatch.setenv("RECSERVE_QDRANT_URL", "http://qdrant:6333")
    cluster = ServeDeploySchema.model_validate(for_cluster(yaml.safe_load(CONFIG.read_text())))
    [application] = cluster.applications
    app = call_user_app_builder_with_args_if_necessary(build_app, application.args)
    built = _deployments(app)
    expected = {"ingress", "combiner", *(engine_name(a) for a in ALGORITHMS)}
    assert set(built) == expected == {d.name for d in application.deployments}
    assert built[engine_name("ease")].init_args == (["ease"],)
    assert built[engine_name("ease")].ray_actor_options["num_cpus"] == 0.2
    handles = built["combiner"].init_args[0]
    assert len({id(h) for h in handles.values()}) == len(ALGORITHMS)
    assert "engines" not in application.args["sizes"]


def test_engine_groups_pool_algorithms_behind_one_shared_handle() -> None:
    args = AppArgs(
        engines=["popularity", "ease", "als", "item_knn"],
        engine_groups={"pool": ["ease", "popularity", "svd"], "solo": ["als"]},
        graphql=False,
        passthrough_env=False,
    )
    # svd is in a group but not served (engines chooses); item_knn is in none.
    assert engine_deployments(args) == {
        "pool": ["popularity", "ease"],
        "solo": ["als"],
        engine_name("item_knn"): ["item_knn"],
    }
    built = _deployments(build_app(args))
    assert {"pool", "solo", engine_name("item_knn")} <= set(built)
    assert not any(name in built for name in map(engine_name, ["ease", "popularity", "als"]))
    assert built["pool"].init_args == (["popularity", "ease"],)
    handles = built["combiner"].init_args[0]
    assert list(handles) == ["popularity", "ease", "als", "item_knn"]  # the order asked
    assert handles["popularity"] is handles["ease"]
    assert handles["ease"] is not handles["als"] and handles["als"] is not handles["item_knn"]
    names = {a: h.deployment_name for a, h in handles.items()}
    assert names == {
        "popularity": "pool",
        "ease": "pool",
        "als": "solo",
        "item_knn": "engine_item_knn",
    }
    # No groups: every algorithm its own deployment, as before.
    assert engine_deployments(AppArgs(engines=["ease", "als"])) == {
        engine_name("ease"): ["ease"],
        engine_name("als"): ["als"],
    }


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"pool": ["ease"], "other": ["ease"]}, "engine groups"),
        ({"pool": ["nope"]}, "unknown"),
        ({"pool": []}, "no algorithm"),
        ({"combiner": ["ease"]}, "name of another deployment"),
        ({engine_name("als"): ["ease"]}, "name of another deployment"),
    ],
)
def test_bad_engine_groups_are_refused(groups: dict, message: str) -> None:
    with pytest.raises(InvalidData, match=message):
        build_app(AppArgs(engines=["ease", "als"], engine_groups=groups, graphql=False))


def test_a_qdrant_server_replaces_the_vectors_replica(
    config: ServeDeploySchema, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSERVE_QDRANT_URL", "http://qdrant:6333")
    args = AppArgs.model_validate(config.applications[0].args)
    assert VECTORS not in _deployments(build_app(args))


def test_sizes_fit_two_cpus_and_leave_room_for_training(config: ServeDeploySchema) -> None:
    args = AppArgs.model_validate(config.applications[0].args)
    app = build_app(args)
    built = _deployments(app)
    cpus = {name: d.ray_actor_options["num_cpus"] for name, d in built.items()}
    assert all(0.05 <= c <= 0.2 for name, c in cpus.items() if name != "engines")
    assert 0.3 <= cpus["engines"] <= 0.5
    # even with the engine pool at its two replicas
    assert sum(cpus.values()) + cpus["engines"] + 0.5 <= 2.0


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


SECRET_ENV = {
    "RECSERVE_JWT_SECRET": "jwt-value-that-must-stay-out-of-the-serve-config",
    "RECSERVE_OPS_TOKEN": "ops-value-that-must-stay-out-of-the-serve-config",
    "RECSERVE_QDRANT_API_KEY": "qdrant-value-that-must-stay-out",
    "RECSERVE_DATABASE_URL": "postgresql+asyncpg://app:db-password-value@db/recserve",
    "RECSERVE_REDIS_URL": "redis+cluster://:redis-password-value@recserve-redis:6379",
}


def test_secrets_never_reach_the_serve_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RECSERVE_ENV", "production")
    args = AppArgs(engines=["popularity"])
    assert replica_env(args) == {"RECSERVE_ENV": "production"}
    shown = str({n: d.ray_actor_options for n, d in _deployments(build_app(args)).items()})
    for value in SECRET_ENV.values():
        assert value not in shown
    # A URL without a password is configuration, not a secret: it is still forwarded.
    monkeypatch.setenv("RECSERVE_DATABASE_URL", "postgresql+asyncpg://app@db/recserve")
    assert replica_env(args)["RECSERVE_DATABASE_URL"] == "postgresql+asyncpg://app@db/recserve"


@pytest.mark.parametrize("key", ["jwt_secret", "RECSERVE_OPS_TOKEN", "redis_url"])
def test_a_secret_in_the_serve_config_args_is_refused(key: str) -> None:
    value = "redis://:pw-value@r:6379" if key == "redis_url" else "some-secret-value"
    with pytest.raises(InvalidData, match="secret"):
        build_app(AppArgs(engines=["popularity"], settings={key: value}))
