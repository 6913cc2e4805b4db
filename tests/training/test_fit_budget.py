"""Fits are planned against the training memory budget: fit, scaled or skipped, and recorded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from ingest.writer import ingest_dataset
from storage import repositories as repo
from storage.artifacts import create_artifact_store
from storage.db import Database, migrate
from storage.model_registry import list_models
from storage.settings import Settings
from training import fit_budget
from training.algorithms import ALGORITHMS, EASE, SVD, create, load
from training.algorithms import ease as ease_module
from training.data import InteractionMatrix
from training.datasets.synthetic import generate_catalogue
from training.fit_budget import GIB, Shape, available_budget, budget_bytes, held_bytes, plan_fit
from training.pipeline import train_tenant_async

# A large catalogue's shape: 200k users, 50k items, 10M interactions.
LARGE = Shape(
    users=200_000, items=50_000, nnz=10_000_000, user_pairs=2_000_000_000, item_pairs=10**10
)


def _matrix(rng: np.random.Generator, users: int = 120, items: int = 60) -> InteractionMatrix:
    popularity = np.linspace(3.0, 0.2, items)
    dense = rng.random((users, items)) < popularity / items * 8
    matrix = sp.csr_matrix(dense.astype(np.float32))
    user_ids = np.array([f"u{i}" for i in range(users)], dtype=object)
    item_ids = np.array([f"i{j}" for j in range(items)], dtype=object)
    return InteractionMatrix(matrix, user_ids, item_ids)


def test_every_engine_declares_its_growth() -> None:
    small = Shape(users=1_000, items=2_000, nnz=100_000, user_pairs=10**7, item_pairs=10**7)
    for name, algorithm in ALGORITHMS.items():
        config = algorithm.Config()
        assert (
            0 < algorithm.estimated_bytes(small, config) < algorithm.estimated_bytes(LARGE, config)
        ), name
    # EASE grows with the square of the catalogue: at 50k items a 20 GB float64 matrix and
    # 10 GB of float32 weights
    assert EASE.estimated_bytes(LARGE, EASE.Config()) > 12 * 50_000**2


def test_ease_beyond_the_budget_keeps_the_items_it_can_afford() -> None:
    plan = plan_fit("ease", LARGE, 12 * GIB)
    assert plan.action == "scaled"
    kept = plan.config.max_items
    # 12 bytes a pair of items: about 32,000 items in 12 GiB (24 bytes a pair afforded 22,600)
    assert 31_000 < kept < 33_000
    assert EASE.estimated_bytes(LARGE, EASE.Config(max_items=kept + 200)) > 12 * GIB
    assert plan.estimated_bytes <= 12 * GIB < EASE.estimated_bytes(LARGE, EASE.Config())
    assert plan.note == f"top {kept:,} of 50,000 items by popularity"
    assert plan.metadata()["action"] == "scaled"


def test_what_cannot_fit_is_skipped_with_what_it_would_need() -> None:
    plan = plan_fit("ease", LARGE, GIB // 100)
    assert plan.action == "skipped" and plan.config is None
    assert plan.note.startswith("would need ") and "budget 0.0 GiB" in plan.note
    # item-kNN's smallest block still needs its kept neighbours: 720 MB at 50k items
    assert plan_fit("item_knn", LARGE, GIB).action == "skipped"
    assert plan_fit("popularity", LARGE, GIB).action == "fit"


def test_svd_switches_to_lazy_adam_where_dense_steps_would_touch_every_row() -> None:
    movielens = Shape(users=943, items=1_682, nnz=80_000, user_pairs=10**7, item_pairs=10**7)
    as_configured = plan_fit("svd", movielens, 12 * GIB)
    assert as_configured.action == "fit" and as_configured.config.optimizer == "adam"
    plan = plan_fit("svd", LARGE, 12 * GIB)
    assert plan.action == "scaled" and plan.config.optimizer == "sparse_adam"
    assert plan.note.startswith("lazy Adam: a dense step would update ")
    # an optimiser the tenant chose for itself is kept
    sgd = plan_fit("svd", LARGE, 12 * GIB, SVD.Config(optimizer="sgd"))
    assert sgd.action == "fit" and sgd.config.optimizer == "sgd"


def test_lazy_adam_svd_learns_the_ratings(rng: np.random.Generator) -> None:
    users, items = rng.normal(size=(60, 3)), rng.normal(size=(40, 3))
    rows = [
        (f"u{u}", f"i{i}", float(np.clip(3 + users[u] @ items[i], 1, 5)), 0)
        for u in range(60)
        for i in range(40)
        if rng.random() < 0.5
    ]
    data = InteractionMatrix.from_ratings(rows)
    config = {"factors": 6, "epochs": 30, "batch_size": 64, "learning_rate": 0.02}
    lazy = SVD({**config, "optimizer": "sparse_adam"}, seed=3).fit(data)
    dense = SVD(config, seed=3).fit(data)
    actual = np.array([r[2] for r in rows])
    pairs = [r[0] for r in rows], [r[1] for r in rows]
    lazy_rmse = float(np.sqrt(np.mean((lazy.predict(*pairs) - actual) ** 2)))
    dense_rmse = float(np.sqrt(np.mean((dense.predict(*pairs) - actual) ** 2)))
    spread = float(np.std(actual))
    assert lazy.user_bias.shape == (60,) and lazy.item_factors.shape == (40, 6)
    assert lazy_rmse < 0.6 * spread and lazy_rmse < dense_rmse + 0.1


def test_item_knn_takes_the_block_of_items_the_budget_affords() -> None:
    roomy = plan_fit("item_knn", LARGE, 12 * GIB)
    assert roomy.action == "fit" and roomy.config.block_items == 512
    assert roomy.note == "neighbours computed 512 of 50,000 items at a time"
    # the whole co-occurrence product (2e9 pairs) would not fit, one block does
    assert roomy.estimated_bytes < 4 * GIB
    tight = plan_fit("item_knn", LARGE, int(1.5 * GIB))
    assert tight.action == "fit" and 1 < tight.config.block_items < 512
    assert tight.estimated_bytes <= 1.5 * GIB
    assert plan_fit("item_knn", LARGE, int(1.5 * GIB), tight.config) == tight
    # the planned block is what the estimate assumed: one more item would not fit
    bigger = tight.config.model_copy(update={"block_items": tight.config.block_items + 1})
    assert ALGORITHMS["item_knn"].estimated_bytes(LARGE, bigger) > 1.5 * GIB


def test_the_default_budget_is_half_the_machine() -> None:
    assert budget_bytes(2.5) == int(2.5 * GIB)
    assert 0 < budget_bytes(None) < 2**50


def test_a_scaled_ease_recommends_only_the_items_it_covers(rng: np.random.Generator) -> None:
    data = _matrix(rng)
    full = create("ease").fit(data)
    scaled = create("ease", {"max_items": 20}).fit(data)
    kept = set(scaled.item_ids[scaled.kept])
    assert len(kept) == 20
    popularity = np.diff(data.matrix.tocsc().indptr)
    assert kept == set(data.item_ids[np.argsort(-popularity, kind="stable")[:20]])
    for user in data.user_ids[:30]:
        items = [item for item, _ in scaled.recommend(str(user), 10)]
        assert items and set(items) <= kept
    # a kept item's neighbours are kept items; an uncovered item has none
    first = next(iter(kept))
    assert {item for item, _ in scaled.similar_items(first, 5)} <= kept
    outside = next(str(i) for i in data.item_ids if i not in kept)
    assert scaled.similar_items(outside, 5) == []
    assert len(full.recommend(str(data.user_ids[0]), 50)) > 20


def test_a_scaled_ease_survives_save_and_load(tmp_path: Path, rng: np.random.Generator) -> None:
    data = _matrix(rng)
    scaled = create("ease", {"max_items": 15}).fit(data)
    scaled.save(tmp_path / "ease")
    restored = load(tmp_path / "ease")
    assert np.array_equal(restored.kept, scaled.kept)
    user = str(data.user_ids[3])
    assert restored.recommend(user, 10) == scaled.recommend(user, 10)


async def test_training_plans_each_fit_and_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalogue = generate_catalogue(n_users=60, n_items=80, n_clusters=4, interactions_per_user=12)
    monkeypatch.setattr(ease_module, "MIN_SCALED_ITEMS", 10)
    # budgets of a few KB here: the process's own memory is left out of these plans
    monkeypatch.setattr(fit_budget, "held_bytes", lambda: 0)
    # room for the matrix copies and a 40-item EASE, not for the 80-item one or item-kNN
    tenant = await _ingested(Settings(data_dir=tmp_path), catalogue, "big.example")
    nnz = len({(u, i) for u, i, *_ in catalogue.interactions})
    shape = Shape(users=60, items=80, nnz=nnz, user_pairs=0, item_pairs=0)
    budget = EASE.estimated_bytes(shape, EASE.Config(max_items=40))
    settings = Settings(data_dir=tmp_path, train_memory_gb=budget / GIB)

    result = await train_tenant_async(
        settings, str(tenant.id), ["popularity", "ease", "item_knn"], evaluate=False
    )

    assert sorted(result.versions) == ["ease", "popularity"]
    assert result.skipped["item_knn"].startswith("would need ")
    store = create_artifact_store(settings)
    rows = await asyncio.to_thread(list_models, store, str(tenant.id), ["ease", "popularity"])
    fits = {row.algorithm: row.fit for row in rows}
    assert fits["popularity"] == "fit"
    assert fits["ease"].startswith("scaled: top ") and fits["ease"].endswith(
        "of 80 items by popularity"
    )
    meta = store.metadata(str(tenant.id), "ease", result.versions["ease"])
    assert meta["limits"]["action"] == "scaled" and meta["limits"]["budget_bytes"] == int(budget)
    store.load(str(tenant.id), "ease", result.versions["ease"], tmp_path / "fetched")
    model = load(tmp_path / "fetched")
    assert model.kept is not None and 10 <= len(model.kept) <= 40

    # with room for item-kNN, the block of items it chose is recorded and listed
    roomy = Settings(data_dir=tmp_path, train_memory_gb=1.0)
    result = await train_tenant_async(roomy, str(tenant.id), ["item_knn"], evaluate=False)
    rows = await asyncio.to_thread(list_models, store, str(tenant.id), ["item_knn"])
    assert [row.fit for row in rows] == ["fit: neighbours computed 80 of 80 items at a time"]
    meta = store.metadata(str(tenant.id), "item_knn", result.versions["item_knn"])
    assert meta["limits"]["action"] == "fit" and meta["params"]["block_items"] == 80


def test_a_fit_gets_the_budget_less_what_the_process_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert held_bytes() > 10 * 2**20  # this test process: the interpreter, numpy, scipy
    monkeypatch.setattr(fit_budget, "held_bytes", lambda: 3 * GIB)
    assert available_budget(10 * GIB) == 7 * GIB
    assert available_budget(2 * GIB) == 0
    # at 50k items, what EASE may cover shrinks with what the job already holds
    roomy = plan_fit("ease", LARGE, available_budget(15 * GIB)).config.max_items
    monkeypatch.setattr(fit_budget, "held_bytes", lambda: 6 * GIB)
    tight = plan_fit("ease", LARGE, available_budget(15 * GIB)).config.max_items
    assert tight < roomy


async def test_training_plans_each_engine_against_the_memory_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget is the training process's: what it holds when an engine's turn comes (the
    loaded tenant, the engines before) is not there for that engine's fit."""
    catalogue = generate_catalogue(n_users=30, n_items=40, n_clusters=3, interactions_per_user=8)
    settings = Settings(data_dir=tmp_path, train_memory_gb=1.0)
    tenant = await _ingested(settings, catalogue, "held.example")
    held = iter([0, 0, 0, GIB])  # two up-front plans, popularity's turn, then ease's turn
    monkeypatch.setattr(fit_budget, "held_bytes", lambda: next(held, GIB))

    result = await train_tenant_async(
        settings, str(tenant.id), ["popularity", "ease"], evaluate=False
    )

    assert sorted(result.versions) == ["popularity"]
    assert result.skipped["ease"].startswith("would need ")
    assert result.skipped["ease"].endswith("budget 0.0 GiB")


async def _ingested(settings: Settings, catalogue: Any, domain: str) -> Any:
    """A new tenant of ``domain`` holding ``catalogue``, in ``settings``' migrated database."""
    assert settings.database_url
    await migrate(settings.database_url)
    database = Database.from_settings(settings)
    async with database.session() as session:
        tenant = await repo.create_tenant(session=session, name=domain, domain=domain)
    await ingest_dataset(
        database, tenant.id, items=catalogue.items, interactions=catalogue.interactions
    )
    await database.dispose()
    return tenant
