"""``train_distributed``: fit ALS and/or SVD on Ray Train and hand back the ordinary model objects.

Every algorithm of one call fits in one Ray Train run, one after the other on the same workers,
so worker start-up, process-group set-up and imports are paid once per tenant. The returned
models are ``training.algorithms`` ``ALS`` / ``SVD`` objects with vocabularies set by the base
class's own ``fit`` preamble, so ``save``/``load``, artifacts and serving are unchanged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import types
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel

from storage.errors import InvalidData
from training.algorithms import ALGORITHMS, ALS, Recommender, create
from training.data import InteractionMatrix, ItemInfo
from training.distributed.loop import train_loop

DISTRIBUTED_ALGORITHMS = tuple(name for name in ALGORITHMS if ALGORITHMS[name].distributed)
# Serve may share the cluster: fractional CPUs keep the trainer from starving its replicas
WORKER_RESOURCES = {"CPU": 0.5}
# how often Ray Train's controller polls its workers (its default, 2 s, is also how late it
# notices the end of a run); a driver's own RAY_TRAIN_HEALTH_CHECK_INTERVAL_S wins
HEALTH_CHECK_INTERVAL_S = "0.5"


@dataclass
class DistributedRun:
    """The fitted models of one Ray Train run, each algorithm's last metrics and where the
    run's wall time went (``timeline``: start-up before the workers' loop, the loop, the end)."""

    models: dict[str, Recommender]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    timeline: dict[str, float] = field(default_factory=dict)

    @property
    def model(self) -> Recommender:
        """The only model of a one-algorithm run."""
        if len(self.models) != 1:
            raise ValueError(f"{len(self.models)} models in this run: pick one of .models")
        return next(iter(self.models.values()))


def train_distributed(
    model_name: str,
    data: InteractionMatrix,
    *,
    workers: int,
    seed: int = 42,
    config: BaseModel | dict[str, Any] | None = None,
    address: str | None = None,
    items: list[ItemInfo] | None = None,
    storage_path: str | None = None,
) -> Recommender:
    """Fit ``model_name`` ("als" or "svd") with ``workers`` Ray Train workers.

    ``address`` attaches to an existing cluster ("auto" or "ray://…"); without it a local Ray
    starts unless one is already initialised. On a multi-node cluster ``storage_path`` must be
    storage every node shares (the final factors travel through a Ray Train checkpoint).
    """
    configs = {model_name: config} if config is not None else None
    run = run_distributed(
        [model_name], data, workers=workers, seed=seed, configs=configs, address=address,
        items=items, storage_path=storage_path,
    )  # fmt: skip
    return run.model


def fit_distributed(
    names: list[str],
    data: InteractionMatrix,
    *,
    workers: int,
    seed: int = 42,
    configs: dict[str, BaseModel | dict[str, Any] | None] | None = None,
    address: str | None = None,
    items: list[ItemInfo] | None = None,
    storage_path: str | None = None,
) -> dict[str, Recommender]:
    """Fit every algorithm of ``names`` in one Ray Train run: workers start once for all."""
    run = run_distributed(
        names, data, workers=workers, seed=seed, configs=configs, address=address, items=items,
        storage_path=storage_path,
    )  # fmt: skip
    return run.models


def run_distributed(
    names: str | list[str],
    data: InteractionMatrix,
    *,
    workers: int,
    seed: int = 42,
    configs: dict[str, BaseModel | dict[str, Any] | None] | None = None,
    address: str | None = None,
    items: list[ItemInfo] | None = None,
    storage_path: str | None = None,
) -> DistributedRun:
    """Fit every algorithm of ``names`` in one Ray Train run (in that order, on the same
    workers); ``configs`` maps a name to its settings (default: the algorithm's)."""
    names = [names] if isinstance(names, str) else list(names)
    unknown = [name for name in names if name not in DISTRIBUTED_ALGORITHMS]
    if unknown or not names:
        raise InvalidData(f"no distributed form of {unknown or names}: {DISTRIBUTED_ALGORITHMS}")
    if len(set(names)) != len(names):
        raise InvalidData(f"an algorithm appears twice: {names}")
    if workers < 1:
        raise InvalidData("workers must be at least 1")
    configs = configs or {}
    models = {name: create(name, configs.get(name), seed=seed) for name in names}
    for model in models.values():
        _prepare(model, data, items)
    run = DistributedRun(models)
    run.metrics, run.timeline = _fit_on_ray(models, data, workers, address, storage_path)
    return run


def _prepare(model: Recommender, data: InteractionMatrix, items: list[ItemInfo] | None) -> None:
    """``model.fit``'s preamble alone (ids, ``user_items``, categories): the factors come
    from the Ray Train run."""

    def keep_for_ray(self: Recommender, *_: Any) -> None:
        return None

    # base.fit sets ids, user_items and categories, then calls _fit: borrow it for this fit only
    model._fit = types.MethodType(keep_for_ray, model)  # type: ignore[method-assign]
    try:
        model.fit(data, items)
    finally:
        del model._fit


def _fit_on_ray(
    models: dict[str, Recommender],
    data: InteractionMatrix,
    workers: int,
    address: str | None,
    storage_path: str | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    launched = time.time()
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", HEALTH_CHECK_INTERVAL_S)
    ray = _ray(address)
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    use_gpu = ray.cluster_resources().get("GPU", 0) >= workers
    loop_config = {
        "threads": _threads(),
        "algorithms": [
            (name, _algorithm_config(ray, model, data, workers)) for name, model in models.items()
        ],
    }
    root = storage_path or tempfile.mkdtemp(prefix="recserve-train-")
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=use_gpu,
            resources_per_worker={**WORKER_RESOURCES, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=RunConfig(
            name=f"recserve-{'-'.join(models)}-{uuid.uuid4().hex[:8]}", storage_path=root
        ),
    )
    try:
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"distributed {', '.join(models)} finished without its factors")
        with result.checkpoint.as_directory() as directory:
            for name, model in models.items():
                _restore(model, Path(directory) / f"{name}.npz")
        finished = time.time()
        reported = dict(result.metrics or {})
        entered, left = float(reported["entered_at"]), float(reported["left_at"])
        timeline = {
            "startup_seconds": entered - launched,
            "loop_seconds": left - entered,
            "finish_seconds": finished - left,
            "wall_seconds": finished - launched,
        }
        return dict(reported["algorithms"]), timeline
    finally:
        if storage_path is None:
            shutil.rmtree(root, ignore_errors=True)


def _threads() -> int:
    """Solver threads per worker: its whole CPUs, at least one (half a CPU gets one)."""
    return max(1, int(WORKER_RESOURCES["CPU"]))


def _algorithm_config(
    ray: Any, model: Recommender, data: InteractionMatrix, workers: int
) -> dict[str, Any]:
    """What the workers need for ``model``: its settings and, in the object store, its data
    (for ALS each rank's own shard, so a worker fetches only its part)."""
    common = {"seed": model.seed, "threads": _threads()}
    if isinstance(model, ALS):
        from training.distributed.shards import als_shards

        cfg = model.config
        scaled = sp.csr_matrix(model._inputs(model.user_items), dtype=np.float32) * cfg.alpha  # type: ignore[attr-defined]
        return {
            **common,
            "shards": [ray.put(shard) for shard in als_shards(scaled, workers)],
            "factors": cfg.factors,
            "regularization": cfg.regularization,
            "iterations": cfg.iterations,
            "cg_steps": cfg.cg_steps,
        }
    source = data.ratings if data.ratings is not None else data.matrix
    ratings = sp.coo_matrix(source)
    arrays = (ratings.row, ratings.col, ratings.data.astype(np.float32), source.shape)
    return {
        **common,
        "ratings": ray.put(arrays),
        "model_config": model.config.model_dump(mode="json"),
    }


def _restore(model: Recommender, path: Path) -> None:
    with np.load(path) as found:
        state = {key: found[key] for key in found.files}
    if isinstance(model, ALS):
        model.user_factors = np.asarray(state["user"], dtype=np.float32)
        model.item_factors = np.asarray(state["item"], dtype=np.float32)
        return
    state["global_mean"] = state.pop("mean")
    model._restore(state)


def _ray(address: str | None) -> Any:
    """The connected ``ray`` module: attach to ``address``, reuse a running one, or start local."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if not ray.is_initialized():
        # "local" never attaches by accident to a cluster another process started
        ray.init(address=address or "local", log_to_driver=False)
    return ray
