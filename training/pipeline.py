"""Train a tenant's models from the database and publish them for serving.

``train_tenant`` reads the tenant's interactions, ratings and catalogue, builds one weighted
interaction matrix, fits each requested algorithm, measures it on a per-user holdout, writes a
versioned artifact per algorithm, promotes it (serving replicas load it on their next request)
and upserts item vectors into the vector store for similar-item and candidate search. An
algorithm that cannot train on the tenant's data is skipped (logged, counted, named in
``TrainingResult.skipped``) and the others still publish; only a run that trains nothing fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from storage import meters
from storage import repositories as repo
from storage.artifacts import ArtifactStore, create_artifact_store
from storage.cache import create_cache
from storage.cache.keys import bump_model_epoch, fresh_items_key
from storage.db import Database, migrate
from storage.errors import InvalidData, NotFound
from storage.settings import Settings
from storage.vectors import Point, VectorStore, create_vector_store
from training.algorithms import ALGORITHMS, DEFAULT_ALGORITHMS, Recommender, create
from training.algorithms.content import TEXT_COLLECTION, TEXT_DIMS, hashed_vectors
from training.data import (
    Events,
    EventsBuilder,
    InteractionMatrix,
    InteractionWeights,
    ItemInfo,
    hex_keys,
    uuid_from_hex,
)
from training.evaluation import evaluate_ranking, pair_split_index
from training.fit_budget import FitPlan, Shape, available_budget, budget_bytes, plan_fit
from training.hybrid import HYBRID, HybridConfig
from training.hybrid_tuning import choose_blend
from training.provenance import code_version

log = logging.getLogger(__name__)

# The hybrid is tuned per tenant once its holdout has this many users (fewer: the defaults),
# on at most this many of them (each engine scores them densely).
MIN_BLEND_USERS = 30
BLEND_FILE = "blend.json"
# The width of every trained vector collection (``items_als``, ``items_content``): the
# collections are shared by all tenants, whose factors and feature counts differ.
STORED_DIMS = 256
# Item vectors built and upserted at a time (points of padded rows and their payloads).
VECTOR_BATCH = 1000
# The hashed content vectors' mark for items in the models (item writes mark theirs "new").
TRAINED = {"stage": "trained"}
MAX_BLEND_USERS = 1000
# Rows read from the database at a time while loading a tenant's events.
LOAD_CHUNK = 50_000

Event = tuple[str, str, str, float | None, float]
Progress = Callable[[str, int, int], None]
# (algorithm, state, detail): "running" before its fit, then "succeeded" or "skipped" (why).
Report = Callable[[str, str, str | None], None]


@dataclass
class TrainingResult:
    tenant_id: str
    versions: dict[str, str]
    metrics: dict[str, dict[str, float]]
    counts: dict[str, int]
    duration_seconds: float
    skipped: dict[str, str] = field(default_factory=dict)
    blend: dict[str, float] | None = None  # the tenant's tuned hybrid weights, when tuned

    @property
    def algorithms(self) -> list[str]:
        return list(self.versions)

    @property
    def version(self) -> str:
        """One label for the run: the versions of every algorithm it promoted."""
        return ",".join(f"{name}={v}" for name, v in sorted(self.versions.items()))


@dataclass
class Blend:
    """A tenant's tuned hybrid weights and the validation figures behind them."""

    weights: dict[str, float]
    validation_ndcg: float
    single_engine_ndcg: dict[str, float]
    users: int


@dataclass
class TenantData:
    events: Events
    items: list[ItemInfo]
    weights: InteractionWeights

    @classmethod
    def from_rows(
        cls, rows: Iterable[Event], items: list[ItemInfo], weights: InteractionWeights
    ) -> TenantData:
        """From ``(user, item, type, value, time)`` tuples (benchmarks, tests)."""
        return cls(Events.from_rows(rows), items, weights)

    def matrix(self, index: np.ndarray | None = None) -> InteractionMatrix:
        """The matrix of all events, or of those at ``index``."""
        if index is None:
            index = np.arange(len(self.events))
        # Users in order of their first event: the same data read in another row order (another
        # database, an export) gives the same matrix, so the same models.
        ordered = index[np.argsort(self.events.times[index], kind="stable")]
        return InteractionMatrix.from_events(
            self.events.take(ordered), weights=self.weights, items=self.items
        )


async def load_tenant_data(
    database: Database, tenant_id: uuid.UUID, *, chunk_size: int = LOAD_CHUNK
) -> TenantData:
    """Interactions, ratings (as explicit ``rating`` events) and the active catalogue, streamed
    in chunks of ``chunk_size`` rows straight into columns."""
    events = EventsBuilder(decode_ids=uuid_from_hex)
    async with database.session() as session:
        tenant = await repo.get_tenant(session=session, tenant_id=tenant_id)
        # ids arrive as hex digits and are coded by array operations (``training.data``):
        # only each distinct id becomes a Python UUID string, once
        chunks = repo.iter_interaction_columns(
            session=session, tenant_id=tenant_id, chunk_size=chunk_size
        )
        async for chunk in chunks:
            events.add_columns(
                hex_keys(chunk.user_ids),
                hex_keys(chunk.item_ids),
                np.array(chunk.types, dtype=str),
                np.array(chunk.values, dtype=np.float32),
                np.array(chunk.times, dtype=np.float64),
            )
        ratings = repo.iter_rating_columns(
            session=session, tenant_id=tenant_id, chunk_size=chunk_size
        )
        async for chunk in ratings:
            events.add_columns(
                hex_keys(chunk.user_ids),
                hex_keys(chunk.item_ids),
                np.full(len(chunk.user_ids), "rating"),
                np.array(chunk.values, dtype=np.float32),
                np.array(chunk.times, dtype=np.float64),
            )
        catalogue = await repo.catalogue_items(session=session, tenant_id=tenant_id)
    items = [
        ItemInfo(
            id=str(item.id),
            title=item.title,
            description=item.description or "",
            category=item.category,
            tags=tuple(item.tags or ()),
        )
        for item in catalogue
    ]
    weights = InteractionWeights.model_validate(
        (tenant.settings or {}).get("interaction_weights", {})
    )
    return TenantData(events.build(), items, weights)


class Holdout:
    """A per-user 75/25 split of the tenant's own data (the MS protocol): each engine is fitted
    on the 75% once, measured on the rest, and kept to tune the tenant's hybrid blend."""

    def __init__(self, data: TenantData, seed: int, k: int = 10) -> None:
        events = data.events
        train, test = pair_split_index(events, 0.75, seed=seed)
        pair = events.users.astype(np.int64) * len(events.item_ids) + events.items
        _, of_pair = np.unique(pair, return_inverse=True)
        # in event order, as the weights add up in the matrix
        weight = np.bincount(of_pair, weights=events.weights(data.weights))
        self.positives = events.take(test[weight[of_pair[test]] > 0])
        self.train = data.matrix(train) if len(train) and len(self.positives) else None
        self.data, self.seed, self.k = data, seed, k
        self.models: dict[str, Recommender] = {}

    def metrics(self, name: str, config: BaseModel | None = None) -> dict[str, float]:
        if self.train is None:
            return {}
        model = create(name, config, seed=self.seed).fit(self.train, self.data.items)
        self.models[name] = model
        found = evaluate_ranking(model, self.train, self.positives.pairs(), self.k)
        keys = (f"precision@{self.k}", f"recall@{self.k}", f"ndcg@{self.k}", "map")
        return {key: float(found[key]) for key in keys}

    def blend(self) -> Blend | None:
        """The hybrid's weights for this tenant, tuned on this holdout exactly as the served
        blend ranks (``training.hybrid_tuning``); None when there is too little to tune on."""
        positives = self.positives
        users = positives.user_ids[np.unique(positives.users)].tolist()
        personal = [n for n, m in self.models.items() if m.personal]
        if self.train is None or len(users) < MIN_BLEND_USERS or not personal:
            return None
        rng = np.random.default_rng(self.seed)
        chosen = set(rng.permutation(sorted(users))[:MAX_BLEND_USERS].tolist())
        rows = [pair for pair in positives.pairs() if pair[0] in chosen]
        config = HybridConfig()
        tuned = choose_blend(self.models, self.train, rows, config.weights, depth=config.depth)
        return Blend(tuned.weights, tuned.ndcg, tuned.single_engine_ndcg, len(chosen))


def holdout_metrics(name: str, data: TenantData, seed: int, k: int = 10) -> dict[str, float]:
    """Top-k quality of ``name`` on a per-user 75/25 split of the tenant's own data."""
    return Holdout(data, seed, k).metrics(name)


def _publish_model(
    artifacts: ArtifactStore,
    tenant: str,
    name: str,
    model: Recommender,
    metadata: dict[str, Any],
) -> str:
    version = artifacts.new_version(tenant, name)
    with tempfile.TemporaryDirectory(prefix=f"recserve-{name}-") as tmp:
        model.save(Path(tmp))
        artifacts.save(tenant, name, version, tmp, metadata)
    artifacts.promote(tenant, name, version)
    return version


def _publish_blend(
    artifacts: ArtifactStore, tenant: str, holdout: Holdout, counts: dict[str, int], seed: int
) -> dict[str, float] | None:
    """Tune the tenant's hybrid on the holdout and promote it beside the models."""
    try:
        blend = holdout.blend()
    except Exception as error:  # the engines are published; the default blend serves
        log.warning("tenant %s: hybrid not tuned: %s", tenant, _reason(error))
        return None
    if blend is None:
        return None
    metadata = {
        "weights": blend.weights,
        "validation_ndcg@10": blend.validation_ndcg,
        "validation_single_engine_ndcg@10": blend.single_engine_ndcg,
        "validation_users": blend.users,
        "seed": seed,
        "counts": counts,
        "code_version": code_version(),
    }
    version = artifacts.new_version(tenant, HYBRID)
    with tempfile.TemporaryDirectory(prefix="recserve-blend-") as tmp:
        (Path(tmp) / BLEND_FILE).write_text(json.dumps(blend.weights))
        artifacts.save(tenant, HYBRID, version, tmp, metadata)
    artifacts.promote(tenant, HYBRID, version)
    log.info("tenant %s: hybrid %s tuned to %s", tenant, version, blend.weights)
    return blend.weights


async def _upsert_vectors(
    store: VectorStore,
    tenant: str,
    vectors: dict[str, np.ndarray],
    data: TenantData,
    ids: np.ndarray,
) -> None:
    if not vectors:
        return
    category = {item.id: item.category for item in data.items}
    for collection, found in vectors.items():
        if found.shape[1] > STORED_DIMS:
            log.warning(
                "tenant %s: %d-dimensional item vectors of %s not stored (at most %d): "
                "similar items come from the model",
                tenant,
                found.shape[1],
                collection,
                STORED_DIMS,
            )
            continue
        batches = _vector_batches(tenant, ids, found, category)
        try:
            await _replace_vectors(store, collection, tenant, STORED_DIMS, batches)
        except Exception as error:  # the models are published; only vector search suffers
            log.warning(
                "tenant %s: item vectors of %s not stored: %s",
                tenant,
                collection,
                _reason(error),
            )
            log.debug("tenant %s: %s vector upsert failed", tenant, collection, exc_info=True)


def _vector_batches(
    tenant: str, ids: np.ndarray, found: np.ndarray, category: dict[str, str | None]
) -> Iterator[list[Point]]:
    """The points of ``found`` (one row per item of ``ids``), ``VECTOR_BATCH`` at a time:
    only one batch of padded rows and payloads exists at once, whatever the catalogue size.
    Every tenant shares the collection, so every vector has its width: zeros pad narrower
    ones (a tenant with few features or factors) and keep every cosine; all-zero rows (no
    signal) are left out."""
    for start in range(0, found.shape[0], VECTOR_BATCH):
        part = found[start : start + VECTOR_BATCH]
        padded = np.zeros((part.shape[0], STORED_DIMS), dtype=np.float32)
        padded[:, : part.shape[1]] = part
        batch: list[Point] = [
            (str(item), row.tolist(), {"tenant_id": tenant, "category": category.get(str(item))})
            for item, row in zip(ids[start : start + VECTOR_BATCH], padded, strict=True)
            if np.any(row)
        ]
        if batch:
            yield batch


async def _upsert_text_vectors(store: VectorStore, tenant: str, items: list[ItemInfo]) -> None:
    """The catalogue's hashed content vectors (what item writes store, see
    ``training.algorithms.content.hashed_vectors``), marked ``stage`` "trained": these items
    are in the models now. Upserted, not replaced: an item written while this run trained
    stays "new", and deleted items lost their points when they were deleted."""
    if not items:
        return
    try:
        await store.ensure_collection(TEXT_COLLECTION, TEXT_DIMS)
        for start in range(0, len(items), VECTOR_BATCH):  # bounded memory, any catalogue
            chunk = items[start : start + VECTOR_BATCH]
            points: list[Point] = [
                (item.id, row.tolist(), {"tenant_id": tenant, "category": item.category, **TRAINED})
                for item, row in zip(chunk, hashed_vectors(chunk), strict=True)
                if np.any(row)
            ]
            await store.upsert(TEXT_COLLECTION, points)
    except Exception as error:  # the models are published; only content search suffers
        log.warning("tenant %s: content vectors not stored: %s", tenant, _reason(error))


async def _replace_vectors(
    store: VectorStore, collection: str, tenant: str, dim: int, batches: Iterable[list[Point]]
) -> None:
    """The tenant's points in ``collection`` become those of ``batches`` (one upsert each);
    none (e.g. content vectors of a catalogue without text or categories) just clears what an
    earlier run stored."""
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        with contextlib.suppress(NotFound):  # no collection yet: nothing stale either
            await store.delete_by_filter(collection, tenant)
        return
    await store.ensure_collection(collection, dim)
    await store.delete_by_filter(collection, tenant)
    await store.upsert(collection, first)
    for batch in batches:
        await store.upsert(collection, batch)


def _reason(error: Exception) -> str:
    """One line for logs and ``TrainingResult.skipped``: our own errors by message alone."""
    if isinstance(error, InvalidData):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def train_tenant_async(
    settings: Settings,
    tenant_id: str,
    algorithms: Sequence[str] | None = None,
    *,
    seed: int = 42,
    evaluate: bool = True,
    progress: Progress | None = None,
    report: Report | None = None,
    distributed: bool = False,
    workers: int = 2,
    address: str | None = None,
    vector_store: VectorStore | None = None,
) -> TrainingResult:
    """``distributed`` fits ALS and SVD on Ray Train with ``workers`` workers (on the cluster
    at ``address`` when given); the other algorithms always fit in this process. Item vectors
    go to ``vector_store`` (the serving app's, when it holds the embedded store) or else to the
    store ``settings`` names."""
    started = time.perf_counter()
    names = _known_algorithms(algorithms)
    data = await _read_tenant(settings, tenant_id)
    run = _prepare_run(
        settings,
        str(tenant_id),
        data,
        names,
        seed=seed,
        evaluate=evaluate,
        distributed=distributed,
        workers=workers,
        address=address,
        report=report,
    )
    for step, name in enumerate(names, start=1):
        if progress:
            progress(f"train: {name}", step - 1, len(names))
        # The previous engine's model is published and gone (it lived in ``_train_engine``): its
        # memory is free before this engine's plan and fit.
        _train_engine(run, name)
    result = run.result
    if not result.versions:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in result.skipped.items())
        raise InvalidData(f"tenant {tenant_id}: no algorithm could be trained ({reasons})")
    if run.holdout is not None:
        result.blend = _publish_blend(run.artifacts, run.tenant, run.holdout, result.counts, seed)
    if progress:
        progress("train: item vectors", len(names), len(names))
    await _publish_vectors(settings, vector_store, run)
    await _announce(settings, run.tenant, result)
    result.duration_seconds = time.perf_counter() - started
    return result


def _known_algorithms(algorithms: Sequence[str] | None) -> list[str]:
    """The algorithms to train (the defaults when none are named); InvalidData for unknown ones."""
    names = list(algorithms or DEFAULT_ALGORITHMS)
    unknown = [n for n in names if n not in ALGORITHMS]
    if unknown:
        raise InvalidData(f"unknown algorithms: {', '.join(unknown)}")
    return names


async def _read_tenant(settings: Settings, tenant_id: str) -> TenantData:
    """The tenant's data from the database ``settings`` names (migrated first); InvalidData
    when it has nothing to train on."""
    assert settings.database_url is not None
    await migrate(settings.database_url)
    database = Database.from_settings(settings)
    try:
        data = await load_tenant_data(database, uuid.UUID(str(tenant_id)))
    finally:
        await database.dispose()
    if not len(data.events):
        raise InvalidData(f"tenant {tenant_id} has no interactions to train on")
    return data


@dataclass
class _Run:
    """One training run: the tenant's data and its full matrix, where the artifacts go, the
    holdout, each engine's memory plan, the engines fitted on Ray Train, and what the run has
    produced so far (``result``, and the item vectors to store once every engine is done)."""

    tenant: str
    data: TenantData
    full: InteractionMatrix
    artifacts: ArtifactStore
    seed: int
    holdout: Holdout | None
    shape: Shape
    budget: int
    plans: dict[str, FitPlan]
    on_ray: _OnRay
    result: TrainingResult
    report: Report | None
    vectors: dict[str, np.ndarray] = field(default_factory=dict)


def _prepare_run(
    settings: Settings,
    tenant: str,
    data: TenantData,
    names: list[str],
    *,
    seed: int,
    evaluate: bool,
    distributed: bool,
    workers: int,
    address: str | None,
    report: Report | None,
) -> _Run:
    """The full matrix, the holdout split (when ``evaluate``) and a first memory plan of every
    engine; with ``distributed``, the planned engines that have a Ray Train form fit there."""
    full = data.matrix()
    artifacts = create_artifact_store(settings)
    counts = {"users": full.n_users, "items": full.n_items, "events": len(data.events)}
    result = TrainingResult(tenant, {}, {}, counts, 0.0)
    holdout = Holdout(data, seed) if evaluate else None
    shape, budget = Shape.of(full), budget_bytes(settings.train_memory_gb)
    plans = {name: plan_fit(name, shape, available_budget(budget)) for name in names}
    on_ray = _OnRay(
        {n: plans[n].config for n in names if plans[n].action != "skipped"} if distributed else {},
        full,
        data.items,
        seed,
        workers,
        address,
        settings.train_storage_uri,
    )
    return _Run(
        tenant, data, full, artifacts, seed, holdout, shape, budget, plans, on_ray, result, report
    )


def _train_engine(run: _Run, name: str) -> None:
    """Fit ``name`` as its memory plan says, measure it on the holdout, publish it and keep its
    item vectors. An engine the plan skips, or that cannot train this data, is skipped with
    its reason: it must not sink the rest."""
    if run.report:
        run.report(name, "running", None)
    fit_started = time.perf_counter()
    plan = run.plans[name]
    if plan.action != "skipped" and name not in run.on_ray.names:
        # again, against what the engines fitted so far have left of the budget
        plan = plan_fit(name, run.shape, available_budget(run.budget))
    if plan.action == "skipped":
        run.result.skipped[name] = plan.note
        log.warning("tenant %s: %s skipped: %s", run.tenant, name, plan.note)
        meters.training_run(name, "skipped", 0.0)
        return
    if plan.action == "scaled":
        log.warning("tenant %s: %s scaled to its scalable form: %s", run.tenant, name, plan.note)
    try:
        model, version, metrics = _fit_and_publish(run, name, plan, fit_started)
    except Exception as error:  # one engine that cannot train this data must not sink the rest
        run.result.skipped[name] = _reason(error)
        log.warning("tenant %s: %s skipped: %s", run.tenant, name, run.result.skipped[name])
        log.debug("tenant %s: %s failed", run.tenant, name, exc_info=True)
        meters.training_run(name, "skipped", time.perf_counter() - fit_started)
        if run.report:
            run.report(name, "skipped", run.result.skipped[name])
        return
    run.result.versions[name] = version
    if run.report:
        run.report(name, "succeeded", None)
    meters.training_run(name, "succeeded", time.perf_counter() - fit_started)
    run.result.metrics[name] = metrics
    _keep_item_vectors(run, name, model)


def _fit_and_publish(
    run: _Run, name: str, plan: FitPlan, fit_started: float
) -> tuple[Recommender, str, dict[str, float]]:
    """Fit ``name`` on the full matrix (on Ray Train when the run fits it there), measure it
    on the holdout and publish it with its metadata: the model, its version and its metrics."""
    if name in run.on_ray.names:
        model = run.on_ray.model(name)
        fit_seconds = run.on_ray.seconds
    else:
        model = create(name, plan.config, seed=run.seed).fit(run.full, run.data.items)
        fit_seconds = time.perf_counter() - fit_started
    metrics = run.holdout.metrics(name, plan.config) if run.holdout is not None else {}
    metadata = {
        "limits": plan.metadata(),
        "params": model.config.model_dump(mode="json"),
        "seed": run.seed,
        "counts": run.result.counts,
        "metrics": metrics,
        "fit_seconds": fit_seconds,
        **({"fitted_with": run.on_ray.names} if name in run.on_ray.names else {}),
        "duration_seconds": time.perf_counter() - fit_started,  # fit and holdout
        "code_version": code_version(),
    }
    version = _publish_model(run.artifacts, run.tenant, name, model, metadata)
    return model, version, metrics


def _keep_item_vectors(run: _Run, name: str, model: Recommender) -> None:
    """The published model's item vectors, for its collection (stored once every engine is
    done); a model without vectors, or failing to give them, only lacks vector search."""
    if not model.vector_collection:
        return
    try:
        found = model.item_vectors()
    except Exception as error:  # the model is published; only its vector search is missing
        log.warning("tenant %s: no item vectors from %s: %s", run.tenant, name, _reason(error))
        log.debug("tenant %s: %s item vectors failed", run.tenant, name, exc_info=True)
        return
    if found is not None:
        run.vectors[model.vector_collection] = found


async def _publish_vectors(settings: Settings, vector_store: VectorStore | None, run: _Run) -> None:
    """The run's item vectors and the catalogue's content vectors into ``vector_store``, or
    into the store ``settings`` names (opened and closed here)."""
    store = vector_store or create_vector_store(settings)
    try:
        await _upsert_vectors(store, run.tenant, run.vectors, run.data, run.full.item_ids)
        await _upsert_text_vectors(store, run.tenant, run.data.items)
    finally:
        if vector_store is None:
            await store.close()


class _OnRay:
    """The tenant's algorithms with a distributed form, fitted together in one Ray Train run
    (workers start once) when the first of them is asked for, each in the form its plan chose
    (SVD's lazy Adam on a large tenant); the plan's memory budget is this process's, not the
    workers'."""

    def __init__(
        self,
        candidates: dict[str, BaseModel | None],
        data: InteractionMatrix,
        items: list[ItemInfo],
        seed: int,
        workers: int,
        address: str | None,
        storage_path: str | None,
    ) -> None:
        from training.distributed.runner import DISTRIBUTED_ALGORITHMS  # no Ray/torch import

        self.names = [name for name in candidates if name in DISTRIBUTED_ALGORITHMS]
        self.configs = {name: candidates[name] for name in self.names}
        self.data, self.items, self.seed, self.workers = data, items, seed, workers
        self.address, self.storage_path = address, storage_path
        self.seconds = 0.0
        self._models: dict[str, Recommender] | None = None
        self._error: Exception | None = None

    def model(self, name: str) -> Recommender:
        if self._models is None and self._error is None:
            from training.distributed import fit_distributed

            started = time.perf_counter()
            try:
                self._models = fit_distributed(
                    self.names,
                    self.data,
                    workers=self.workers,
                    seed=self.seed,
                    configs=self.configs,
                    address=self.address,
                    items=self.items,
                    storage_path=self.storage_path,
                )
            except Exception as error:  # every algorithm of the run is skipped with its reason
                self._error = error
            self.seconds = time.perf_counter() - started
        if self._error is not None:
            raise self._error
        assert self._models is not None
        return self._models[name]


async def _announce(settings: Settings, tenant: str, result: TrainingResult) -> None:
    """Tell every replica (through the cache's pub/sub) that new versions are current."""
    cache = create_cache(settings)
    try:
        # The epoch first: once replicas hear of the new versions, old cached results are gone.
        await bump_model_epoch(cache, tenant)
        # Every item is in the models now (or was written since, and keeps its vector's mark).
        await cache.delete(fresh_items_key(tenant))
        await cache.publish(f"models:{tenant}", {"tenant_id": tenant, "versions": result.versions})
    finally:
        await cache.close()


def train_tenant(
    settings: Settings, tenant_id: str, algorithms: Sequence[str] | None = None, **options: Any
) -> TrainingResult:
    """Synchronous entry point for Ray tasks and the command line; ``options`` are
    ``train_tenant_async``'s keywords (``report``, ``distributed``, ``workers``, ...)."""
    return asyncio.run(train_tenant_async(settings, tenant_id, algorithms, **options))
