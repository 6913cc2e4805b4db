"""``train_distributed``: fit ALS or SVD on Ray Train and hand back the ordinary model object.

The returned model is a ``training.algorithms`` ``ALS`` / ``SVD`` with vocabularies set by the
base class's own ``fit`` preamble, so ``save``/``load``, artifacts and serving are unchanged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import types
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel

from storage.errors import InvalidData
from training.algorithms import ALGORITHMS, ALS, REGISTRY, Recommender, create
from training.data import InteractionMatrix, ItemInfo

DISTRIBUTED_ALGORITHMS = tuple(name for name in ALGORITHMS if REGISTRY[name].distributed)
# Serve may share the cluster: fractional CPUs keep the trainer from starving its replicas
WORKER_RESOURCES = {"CPU": 0.5}


@dataclass
class DistributedRun:
    model: Recommender
    metrics: dict[str, Any] = field(default_factory=dict)


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
    run = run_distributed(
        model_name, data, workers=workers, seed=seed, config=config, address=address,
        items=items, storage_path=storage_path,
    )  # fmt: skip
    return run.model


def run_distributed(
    model_name: str,
    data: InteractionMatrix,
    *,
    workers: int,
    seed: int = 42,
    config: BaseModel | dict[str, Any] | None = None,
    address: str | None = None,
    items: list[ItemInfo] | None = None,
    storage_path: str | None = None,
) -> DistributedRun:
    """``train_distributed`` plus the last metrics the workers reported (for benchmarks)."""
    if model_name not in DISTRIBUTED_ALGORITHMS:
        raise InvalidData(f"no distributed form of {model_name!r}: {DISTRIBUTED_ALGORITHMS}")
    if workers < 1:
        raise InvalidData("workers must be at least 1")
    model = create(model_name, config, seed=seed)
    run = DistributedRun(model)

    def distributed_fit(self: Recommender, matrix: InteractionMatrix, _: list[ItemInfo]) -> None:
        run.metrics = _fit_on_ray(self, matrix, workers, address, storage_path)

    # base.fit sets ids, user_items and categories, then calls _fit: borrow it for this fit only
    model._fit = types.MethodType(distributed_fit, model)  # type: ignore[method-assign]
    try:
        model.fit(data, items)
    finally:
        del model._fit
    return run


def _fit_on_ray(
    model: Recommender,
    data: InteractionMatrix,
    workers: int,
    address: str | None,
    storage_path: str | None,
) -> dict[str, Any]:
    ray = _ray(address)
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    worker, loop_config = _worker_and_config(ray, model, data)
    use_gpu = ray.cluster_resources().get("GPU", 0) >= workers
    root = storage_path or tempfile.mkdtemp(prefix="recserve-train-")
    trainer = TorchTrainer(
        worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=use_gpu,
            resources_per_worker={**WORKER_RESOURCES, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=RunConfig(
            name=f"recserve-{model.name}-{uuid.uuid4().hex[:8]}", storage_path=root
        ),
    )
    try:
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"distributed {model.name} finished without its factors")
        with result.checkpoint.as_directory() as directory:
            _restore(model, Path(directory))
        return dict(result.metrics or {})
    finally:
        if storage_path is None:
            shutil.rmtree(root, ignore_errors=True)


def _worker_and_config(ray: Any, model: Recommender, data: InteractionMatrix) -> tuple[Any, dict]:
    threads = 1  # each worker holds half a CPU: intra-op threads would only contend
    common = {"seed": model.seed, "threads": threads}
    if isinstance(model, ALS):
        from training.distributed.als import als_worker

        cfg = model.config
        matrix = model._inputs(model.user_items)  # type: ignore[attr-defined]
        return als_worker, {
            **common,
            "matrix": ray.put(sp.csr_matrix(matrix, dtype=np.float32)),
            "factors": cfg.factors,
            "regularization": cfg.regularization,
            "alpha": cfg.alpha,
            "iterations": cfg.iterations,
            "cg_steps": cfg.cg_steps,
        }
    from training.distributed.svd import svd_worker

    source = data.ratings if data.ratings is not None else data.matrix
    ratings = sp.coo_matrix(source)
    arrays = (ratings.row, ratings.col, ratings.data.astype(np.float32), source.shape)
    return svd_worker, {
        **common,
        "ratings": ray.put(arrays),
        "model_config": model.config.model_dump(mode="json"),
    }


def _restore(model: Recommender, directory: Path) -> None:
    if isinstance(model, ALS):
        from training.distributed.als import FACTORS_FILE

        with np.load(directory / FACTORS_FILE) as found:
            model.user_factors = np.asarray(found["user"], dtype=np.float32)  # type: ignore[attr-defined]
            model.item_factors = np.asarray(found["item"], dtype=np.float32)  # type: ignore[attr-defined]
        return
    from training.distributed.svd import PARAMS_FILE

    with np.load(directory / PARAMS_FILE) as found:
        state = {key: found[key] for key in found.files}
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
