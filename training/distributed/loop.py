"""The Ray Train worker loop: every algorithm of one run, in turn, on the same workers.

Imported by the workers: it (and ``als``, ``svd``, ``shards``, ``objective``) keeps to numpy,
scipy, implicit and torch, so a worker never loads the algorithm registry or storage layer.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def train_loop(config: dict[str, Any]) -> None:
    """TorchTrainer ``train_loop_per_worker``: fit each of ``config["algorithms"]`` in turn,
    reporting once per algorithm (each ``ray.train.report`` is a barrier across the workers
    through an actor: per iteration it cost 0.2-0.3 s on a loaded 2-core machine) with every
    iteration's metrics in ``history``; rank 0 checkpoints every algorithm's arrays at the end."""
    entered = time.time()
    import ray
    import ray.train
    import torch
    from ray.train.torch import get_device
    from threadpoolctl import threadpool_limits

    threads = int(config["threads"])
    torch.set_num_threads(threads)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = get_device()
    finished: dict[str, dict[str, Any]] = {}
    # the solvers run ``threads`` threads of their own; BLAS under them gets as many
    with threadpool_limits(threads), tempfile.TemporaryDirectory(prefix="recserve-") as directory:
        for position, (name, settings) in enumerate(config["algorithms"], start=1):
            history: list[dict[str, Any]] = []
            if "shards" in settings:  # ALS: each worker was given its own rows (a shard)
                from training.distributed.als import fit_als

                shard = ray.get(settings["shards"][rank])
                arrays = fit_als(
                    settings, shard, rank=rank, world=world, device=device, report=history.append
                )
            else:
                from training.distributed.svd import fit_svd

                ratings = ray.get(settings["ratings"])
                arrays = fit_svd(
                    settings, ratings, rank=rank, world=world, device=device, report=history.append
                )
            if rank == 0:
                np.savez(Path(directory) / f"{name}.npz", **arrays)
            finished[name] = {**history[-1], "history": history}
            if position < len(config["algorithms"]):  # the last one reports with the checkpoint
                ray.train.report({"algorithm": name, **history[-1]})
        summary = {"algorithms": finished, "entered_at": entered, "left_at": time.time()}
        checkpoint = ray.train.Checkpoint.from_directory(directory) if rank == 0 else None
        ray.train.report(summary, checkpoint=checkpoint)
