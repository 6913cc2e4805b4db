"""The typed application builder named in ``serve_config.yaml``.

``serve run serve_config.yaml`` (or ``serve.run(build_app(AppArgs(...)))``) wires the ``Engine``
deployments, the ``HybridCombiner`` over their handles and, in front, the ``GraphQLIngress``.
Each algorithm gets its own ``engine_{algorithm}`` deployment unless ``engine_groups`` puts it in
an engine pool: one deployment (named by the group) whose replicas serve all the group's
algorithms, the combiner reaching them through that deployment's one handle. The laptop's
``serve_config.yaml`` pools all nine (one engine process instead of nine); the KubeRay
RayService keeps one deployment per algorithm (``cluster.manifests`` drops the groups).
Every replica gets the builder's non-secret ``RECSERVE_*`` environment (plus ``settings``
overrides) in its runtime_env, so ``Settings()`` on a replica reads what the operator configured.

Secrets (JWT secret, ops token, Qdrant key, database/Redis URLs with a password) never go there:
the runtime_env is part of the Serve config the Ray dashboard shows. Replicas read them from
their own process environment, which Ray workers inherit from the raylet, i.e. from whatever
started Ray: ``serve run`` (``recserve serve``) when it starts the local cluster itself, the
shell that ran ``ray start`` (export them first), or the pod's env from a Kubernetes Secret.
"""

# No ``from __future__ import annotations`` here: Serve reads ``build_app``'s annotation at run
# time to turn the config's ``args`` into an ``AppArgs``, which a string annotation would defeat.
import os
from typing import Any

from pydantic import BaseModel, Field
from ray.serve import Application

from deployments.combiner import HybridCombiner
from deployments.engine import Engine
from deployments.ingress import GraphQLIngress
from deployments.vector_store import NAME as VECTORS
from deployments.vector_store import VectorStoreServer
from recommend.model_cache import ModelSource
from recommend.options import ServingOptions
from recommend.step import catalog_for
from storage.errors import InvalidData
from storage.settings import ENV_PREFIX, is_secret_setting
from training.algorithms import ALGORITHMS

# RECSERVE_TEST_* name the test suite's own services; they are not settings of the product.
TEST_PREFIX = "RECSERVE_TEST_"


class DeploymentSize(BaseModel):
    num_cpus: float = Field(default=0.1, gt=0, le=8)
    num_replicas: int | str | None = None  # an int, "auto", or None for the decorator default
    max_ongoing_requests: int | None = Field(default=None, gt=0)


class AppArgs(ServingOptions):
    """The application's args: how it serves (``ServingOptions``, every deployment's config)
    and how it is composed."""

    engines: list[str] = Field(default_factory=lambda: list(ALGORITHMS))
    # Engine pools: deployment name -> the algorithms one Engine deployment serves together
    # (those of them in ``engines``: the groups arrange, ``engines`` chooses); every other
    # algorithm gets its own ``engine_{algorithm}``. A pool's replica holds up to
    # ``max_models_per_replica`` models per algorithm it serves, in one LRU.
    engine_groups: dict[str, list[str]] = Field(default_factory=dict)
    # Without the ingress the combiner is the app's entry (tests, batch jobs, other front ends).
    graphql: bool = True
    # RECSERVE_* values for every replica, on top of the builder's own environment; never
    # secrets (refused): those come from the replicas' process environment.
    settings: dict[str, str] = Field(default_factory=dict)
    passthrough_env: bool = True
    sizes: dict[str, DeploymentSize] = Field(default_factory=dict)

    def serving(self) -> dict[str, Any]:
        """The ``ServingOptions`` part, as every deployment's config."""
        return self.model_dump(include=set(ServingOptions.model_fields))


def replica_env(args: AppArgs) -> dict[str, str]:
    """The ``RECSERVE_*`` settings put into every replica's runtime_env: none of them secret."""
    env = {}
    if args.passthrough_env:
        env = {
            k: v
            for k, v in os.environ.items()
            if k.startswith(ENV_PREFIX)
            and not k.startswith(TEST_PREFIX)
            and not is_secret_setting(k, v)
        }
    for key, value in args.settings.items():
        name = key.upper()
        name = name if name.startswith(ENV_PREFIX) else ENV_PREFIX + name
        if is_secret_setting(name, str(value)):
            raise InvalidData(
                f"{name} is a secret: give it to the replicas' environment (a Kubernetes Secret, "
                "or export it before `ray start` / `serve run`), not to the Serve config"
            )
        env[name] = str(value)
    return env


def _options(args: AppArgs, name: str, env: dict[str, str]) -> dict[str, Any]:
    size = args.sizes.get(name, DeploymentSize())
    actor_options: dict[str, Any] = {"num_cpus": size.num_cpus}
    if env:
        actor_options["runtime_env"] = {"env_vars": env}
    options: dict[str, Any] = {"name": name, "ray_actor_options": actor_options}
    if size.num_replicas is not None:
        options["num_replicas"] = size.num_replicas
    if size.max_ongoing_requests is not None:
        options["max_ongoing_requests"] = size.max_ongoing_requests
    return options


def _qdrant_server(env: dict[str, str]) -> bool:
    """Whether the replicas will talk to a Qdrant server (``RECSERVE_QDRANT_URL`` in their
    runtime_env or in the environment they inherit)."""
    name = ENV_PREFIX + "QDRANT_URL"
    return bool(env.get(name) or os.environ.get(name))


def engine_name(algorithm: str) -> str:
    """The deployment of an algorithm that no engine pool serves."""
    return f"engine_{algorithm}"


FIXED_NAMES = frozenset({"ingress", "combiner", VECTORS})


def engine_deployments(args: AppArgs) -> dict[str, list[str]]:
    """Engine deployment name -> the algorithms it serves, in ``engines`` order: a pool of
    ``engine_groups`` serves those of its algorithms that ``engines`` names (a pool left with
    none is not deployed), and each algorithm in no pool gets ``engine_{algorithm}``."""
    engines = list(dict.fromkeys(args.engines))
    unknown = sorted(set(engines) - set(ALGORITHMS))
    if unknown:
        raise InvalidData(f"unknown engines {unknown}; known: {', '.join(ALGORITHMS)}")
    pooled: dict[str, str] = {}
    for group, algorithms in args.engine_groups.items():
        if not algorithms:
            raise InvalidData(f"engine group {group!r} names no algorithm")
        if group in FIXED_NAMES or group in {engine_name(a) for a in ALGORITHMS}:
            raise InvalidData(f"engine group {group!r} takes the name of another deployment")
        for algorithm in algorithms:
            if algorithm not in ALGORITHMS:
                raise InvalidData(f"engine group {group!r} names an unknown engine {algorithm!r}")
            if algorithm in pooled:
                raise InvalidData(
                    f"{algorithm!r} is in engine groups {pooled[algorithm]!r} and {group!r}"
                )
            pooled[algorithm] = group
    deployments: dict[str, list[str]] = {}
    for algorithm in engines:
        deployments.setdefault(pooled.get(algorithm, engine_name(algorithm)), []).append(algorithm)
    return deployments


def build_app(args: AppArgs) -> Application:
    """The builder named in serve_config.yaml (Serve requires exactly one parameter)."""
    return compose(args if isinstance(args, AppArgs) else AppArgs.model_validate(args))


def compose(args: AppArgs, *, source: ModelSource | None = None) -> Application:
    """The whole application; ``source`` replaces the artifact store (tests, demos)."""
    groups = engine_deployments(args)
    env = replica_env(args)
    serving = args.serving()
    # {algorithm: handle}: the algorithms of a pool share its deployment (one bound Engine).
    engines: dict[str, Any] = {}
    for name, algorithms in groups.items():
        bound = Engine.options(**_options(args, name, env)).bind(
            algorithms, source=source, config=serving
        )
        engines |= dict.fromkeys(algorithms, bound)
    engines = {algorithm: engines[algorithm] for algorithm in dict.fromkeys(args.engines)}
    # Without a Qdrant server, one replica holds the embedded store for the whole app.
    vectors = None
    if not _qdrant_server(env):
        options = _options(args, VECTORS, env) | {"num_replicas": 1}  # one holder, always
        vectors = VectorStoreServer.options(**options).bind()
    combiner = HybridCombiner.options(**_options(args, "combiner", env)).bind(
        engines,
        source=source,
        config=serving,
        vectors=vectors,
    )
    if not args.graphql:
        return combiner
    catalog = catalog_for(list(engines))
    ingress = GraphQLIngress.options(**_options(args, "ingress", env))
    return ingress.bind(combiner, catalog, serving)
