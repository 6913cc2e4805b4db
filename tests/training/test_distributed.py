"""Distributed ALS / SVD on Ray Train reach the single-node models' objective and quality."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from storage.errors import InvalidData
from training.algorithms import ALS, SVD, Recommender, create
from training.data import InteractionMatrix
from training.datasets.synthetic import generate_catalogue
from training.distributed import als_objective, train_distributed
from training.distributed.objective import factor_objective, stored_loss
from training.distributed.runner import run_distributed
from training.distributed.shards import als_shards, build_blocks, shard_bounds
from training.evaluation import evaluate_ranking, python_stratified_split, rmse_mae

ALS_CONFIG = {"factors": 8, "regularization": 5.0, "alpha": 4.0, "iterations": 10}
SVD_CONFIG = {"factors": 8, "epochs": 8, "batch_size": 128, "learning_rate": 0.01}


@pytest.fixture(scope="module")
def implicit_split() -> tuple[InteractionMatrix, list]:
    catalogue = generate_catalogue(n_users=120, n_items=90, n_clusters=4, interactions_per_user=12)
    train, test = python_stratified_split(catalogue.interactions, 0.75, seed=42)
    return InteractionMatrix.from_interactions(train, items=catalogue.items), test


@pytest.fixture(scope="module")
def rating_split() -> tuple[InteractionMatrix, list]:
    """Ratings from a rank-3 taste model with noise, on the 1..5 scale."""
    rng = np.random.default_rng(7)
    users, items = rng.normal(size=(80, 3)), rng.normal(size=(60, 3))
    pairs = [(u, i) for u in range(80) for i in range(60) if rng.random() < 0.35]
    rows = [
        (f"u{u}", f"i{i}", float(np.clip(3 + users[u] @ items[i] + rng.normal(0, 0.3), 1, 5)), 0)
        for u, i in pairs
    ]
    train, test = python_stratified_split(rows, 0.8, seed=42)
    return InteractionMatrix.from_ratings(train), test


def test_objective_matches_the_dense_sum(rng: np.random.Generator) -> None:
    values = rng.choice([0.0, 0.0, 1.0, 3.0, -2.0], size=(7, 5))
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
    alpha, reg = 2.0, 0.5
    scaled = alpha * values
    confidence = np.where(values != 0, np.abs(scaled), 1.0)
    preference = (scaled > 0).astype(float)
    dense = np.sum(confidence * (preference - x @ y.T) ** 2) + reg * (np.sum(x**2) + np.sum(y**2))
    found = factor_objective(sp.csr_matrix(values), x, y, alpha, reg)
    assert found == pytest.approx(dense, rel=1e-10)


def test_stored_loss_is_the_same_in_chunks(rng: np.random.Generator) -> None:
    scaled = sp.random(30, 20, density=0.3, format="csr", random_state=2) * 3.0
    scaled.data[::4] *= -1  # dislikes: preference 0 at confidence |c|
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(20, 4))
    dense = scaled.toarray()
    scores = x @ y.T
    stored = dense != 0
    expected = np.sum((np.abs(dense) * ((dense > 0) - scores) ** 2 - scores**2)[stored])
    assert stored_loss(scaled, x, y) == pytest.approx(expected, rel=1e-12)
    assert stored_loss(scaled, x, y, chunk=7) == pytest.approx(expected, rel=1e-12)


def test_als_shards_split_both_sides_in_rank_order() -> None:
    scaled = sp.random(9, 7, density=0.4, format="csr", random_state=3, dtype=np.float32)
    shards = als_shards(scaled, 2)
    assert [(s.user_lo, s.users.shape[0], s.item_lo, s.items.shape[0]) for s in shards] == [
        (0, 5, 0, 4),
        (5, 4, 4, 3),
    ]
    assert all(shard.shape == (9, 7) for shard in shards)
    assert (sp.vstack([s.users for s in shards]) != scaled).nnz == 0
    assert (sp.vstack([s.items for s in shards]) != scaled.T.tocsr()).nnz == 0


def test_one_cpu_rank_fits_exactly_what_implicit_fits(implicit_split) -> None:
    """A rank runs implicit's own row solver on its shard from implicit's start, so one rank
    (no exchange) reproduces the single-node factors; with more ranks each row sees the same
    inputs, only on another worker."""
    import torch

    from training.distributed.als import fit_als

    matrix = implicit_split[0]
    single = create("als", ALS_CONFIG, seed=3).fit(matrix)
    scaled = sp.csr_matrix(matrix.matrix, dtype=np.float32) * ALS_CONFIG["alpha"]
    settings = {**ALS_CONFIG, "cg_steps": 3, "threads": 1, "seed": 3}
    reports: list[dict] = []
    found = fit_als(
        settings,
        als_shards(scaled, 1)[0],
        rank=0,
        world=1,
        device=torch.device("cpu"),
        report=reports.append,
    )
    np.testing.assert_allclose(found["user"], single.user_factors, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(found["item"], single.item_factors, rtol=1e-5, atol=1e-7)
    assert [r["iteration"] for r in reports] == list(range(1, ALS_CONFIG["iterations"] + 1))
    assert "objective" in reports[-1] and "objective" not in reports[0]
    expected = factor_objective(
        matrix.matrix, found["user"], found["item"], ALS_CONFIG["alpha"], 5.0
    )
    assert reports[-1]["objective"] == pytest.approx(expected, rel=1e-5)


def test_conjugate_gradient_rows_reach_the_exact_solves(implicit_split) -> None:
    """The distributed solver's CG steps (the default) converge to the exact per-row solves,
    and three warm-started steps already close most of the gap, as in implicit."""
    import torch

    from training.distributed.als import _cg_shard, _solve_shard

    matrix = implicit_split[0].matrix.tocsr().astype(np.float32)
    rng = np.random.default_rng(1)
    factors, reg = 8, 5.0
    y = torch.as_tensor(rng.normal(size=(matrix.shape[1], factors)) * 0.1, dtype=torch.float64)
    blocks = build_blocks(torch, matrix, 0, matrix.shape[0], 4.0, torch.device("cpu"))
    for block in blocks:
        for name in ("gram_weight", "rhs_weight"):
            setattr(block, name, getattr(block, name).double())
    exact = _solve_shard(torch, blocks, y, matrix.shape[0], reg)
    start = torch.zeros_like(exact)
    converged = _cg_shard(torch, blocks, y, start, reg, steps=factors)
    assert torch.allclose(converged, exact, rtol=1e-6, atol=1e-8)
    noisy = exact + 0.05 * torch.as_tensor(rng.normal(size=exact.shape))
    refined = _cg_shard(torch, blocks, y, noisy, reg, steps=3)
    assert torch.linalg.norm(refined - exact) < 0.1 * torch.linalg.norm(noisy - exact)


def test_shards_cover_every_row_once() -> None:
    for n, world in [(10, 3), (2, 4), (7, 1)]:
        bounds = [shard_bounds(n, world, rank) for rank in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in pairwise(bounds))
    torch = pytest.importorskip("torch")
    matrix = sp.random(40, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    blocks = build_blocks(torch, matrix, 10, 30, alpha=3.0, device="cpu")
    rows = np.sort(np.concatenate([b.rows.numpy() for b in blocks]))
    assert rows.tolist() == list(range(20))
    assert sum(float(b.stored.sum()) for b in blocks) == matrix[10:30].nnz


def test_only_als_and_svd_have_a_distributed_form(implicit_split) -> None:
    with pytest.raises(InvalidData):
        train_distributed("ease", implicit_split[0], workers=2)
    with pytest.raises(InvalidData):
        train_distributed("als", implicit_split[0], workers=0)
    with pytest.raises(InvalidData):
        run_distributed(["als", "als"], implicit_split[0], workers=2)
    with pytest.raises(InvalidData):
        run_distributed([], implicit_split[0], workers=2)


@pytest.mark.ray
@pytest.mark.slow
def test_distributed_als_reaches_the_single_node_objective_and_quality(
    serve_instance: int, implicit_split, tmp_path: Path
) -> None:
    matrix, test = implicit_split
    single = create("als", ALS_CONFIG, seed=3).fit(matrix)
    run = run_distributed("als", matrix, workers=2, seed=3, configs={"als": ALS_CONFIG})
    model = run.model
    # the same start and the same row solver as implicit: the same factors, on two workers
    np.testing.assert_allclose(model.item_factors, single.item_factors, rtol=1e-4, atol=1e-6)
    assert isinstance(model, ALS)
    assert model.user_factors.shape == single.user_factors.shape
    assert model.item_factors.shape == single.item_factors.shape
    alpha, reg = ALS_CONFIG["alpha"], ALS_CONFIG["regularization"]
    distributed_objective = als_objective(model, matrix.matrix, alpha, reg)
    single_objective = als_objective(single, matrix.matrix, alpha, reg)
    # conjugate-gradient steps on both sides (3 per row, warm-started): the same optimum
    assert distributed_objective == pytest.approx(single_objective, rel=0.02)
    assert run.metrics["als"]["iteration"] == ALS_CONFIG["iterations"]
    assert run.metrics["als"]["objective"] == pytest.approx(distributed_objective, rel=1e-4)
    assert 0 < run.metrics["als"]["solve_seconds"] <= run.metrics["als"]["train_seconds"]
    assert run.timeline["startup_seconds"] > 0 and run.timeline["loop_seconds"] > 0
    ours, theirs = evaluate_ranking(model, matrix, test), evaluate_ranking(single, matrix, test)
    assert ours["ndcg@10"] == pytest.approx(theirs["ndcg@10"], abs=0.03)
    assert ours["ndcg@10"] > 0.1
    model.save(tmp_path / "als")
    loaded = Recommender.load(tmp_path / "als")
    user = str(matrix.user_ids[0])
    assert loaded.recommend(user, 5) == model.recommend(user, 5)


@pytest.mark.ray
@pytest.mark.slow
def test_svd_and_als_fit_in_one_run_on_the_same_workers(serve_instance: int, rating_split) -> None:
    """One Ray Train run fits both (workers start once); SVD's RMSE matches single-node's."""
    matrix, test = rating_split
    single = create("svd", SVD_CONFIG, seed=5).fit(matrix)
    run = run_distributed(
        ["svd", "als"], matrix, workers=2, seed=5, configs={"svd": SVD_CONFIG, "als": ALS_CONFIG}
    )
    model = run.models["svd"]
    assert isinstance(model, SVD) and isinstance(run.models["als"], ALS)
    assert run.metrics["svd"]["epoch"] == SVD_CONFIG["epochs"]
    assert run.metrics["als"]["iteration"] == ALS_CONFIG["iterations"]
    alone = create("als", ALS_CONFIG, seed=5).fit(matrix)
    np.testing.assert_allclose(
        run.models["als"].user_factors, alone.user_factors, rtol=1e-4, atol=1e-6
    )
    _assert_rmse_matches(model, single, test)


@pytest.mark.ray
@pytest.mark.slow
def test_lazy_adam_svd_on_two_workers_matches_single_node(
    serve_instance: int, rating_split
) -> None:
    """The form the plan picks for large tenants: sparse gradients all-reduced across workers."""
    matrix, test = rating_split
    config = {**SVD_CONFIG, "optimizer": "sparse_adam"}
    single = create("svd", config, seed=5).fit(matrix)
    run = run_distributed(["svd"], matrix, workers=2, seed=5, configs={"svd": config})
    model = run.models["svd"]
    assert model.config.optimizer == "sparse_adam"
    assert model.user_bias.shape == (len(matrix.user_ids),)
    _assert_rmse_matches(model, single, test)


@pytest.mark.ray
@pytest.mark.slow
async def test_pipeline_trains_als_distributed_and_publishes_it(
    serve_instance: int, tmp_path: Path
) -> None:
    from ingest.writer import ingest_dataset
    from storage import repositories as repo
    from storage.artifacts import create_artifact_store
    from storage.db import Database, migrate
    from storage.settings import Settings
    from training.algorithms import load
    from training.pipeline import train_tenant_async

    catalogue = generate_catalogue(n_users=40, n_items=50, n_clusters=3, interactions_per_user=8)
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url
    await migrate(settings.database_url)
    database = Database.from_settings(settings)
    async with database.session() as session:
        tenant = await repo.create_tenant(session=session, name="dist", domain="dist.example")
    await ingest_dataset(
        database, tenant.id, items=catalogue.items, interactions=catalogue.interactions
    )
    await database.dispose()
    result = await train_tenant_async(
        settings, str(tenant.id), ["als"], evaluate=False, distributed=True, workers=2
    )
    artifacts = create_artifact_store(settings)
    version = artifacts.current(str(tenant.id), "als")
    assert version == result.versions["als"]
    artifacts.load(str(tenant.id), "als", version, tmp_path / "restored")
    model = load(tmp_path / "restored")
    assert isinstance(model, ALS) and model.n_users == 40
    assert len(model.recommend(str(model.user_ids[0]), k=5)) == 5


def _assert_rmse_matches(model: SVD, single: Recommender, test: list) -> None:
    """``model``'s test RMSE is the single-node fit's, and well under the global mean's."""
    users, items = [r[0] for r in test], [r[1] for r in test]
    actual = np.array([r[2] for r in test])
    ours, _ = rmse_mae(model.predict(users, items), actual)
    theirs, _ = rmse_mae(single.predict(users, items), actual)  # type: ignore[attr-defined]
    baseline, _ = rmse_mae(np.full(len(actual), model.global_mean), actual)
    assert ours == pytest.approx(theirs, abs=0.03)
    assert ours < baseline - 0.05
