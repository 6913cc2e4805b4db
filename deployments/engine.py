"""One engine deployment class serving one algorithm, or several (an engine pool), for every
tenant.

``Engine(algorithms)`` holds the models of the algorithms it is given: bound with one algorithm
it is that algorithm's own deployment (its own replicas and resources, as in production); bound
with several (``AppArgs.engine_groups``) one set of replicas serves them all, which on a laptop
saves a Python process per algorithm. Models are multiplexed: the model id is
``"{algorithm}/{tenant}:{version}"`` (``recommend.model_cache.model_id``), so Serve routes every
(algorithm, tenant, version) independently and promoting a new version simply routes the next
request to a new id (no restart). What a replica holds is bounded by memory: least-recently-used
models (of any of its algorithms) are evicted once their bytes pass ``max_model_mb``
(``RECSERVE_MAX_MODEL_MB``, the replica's budget whatever it serves), or their number passes
``max_models_per_replica`` per algorithm, i.e. that cap times the number of algorithms for a pool
(one LRU: a busy algorithm may use the slots an idle one leaves) (``ModelMemory``).

Nothing here imports torch: models are numpy at inference time.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from opentelemetry.trace import Link, get_current_span
from ray import serve

from deployments.ray_metrics import install_ray_metrics
from recommend.model_cache import (
    MIB,
    ModelMemory,
    ModelSource,
    resolve_source,
    split_model_id,
)
from recommend.options import ServingOptions
from recommend.scoring import (
    EngineQuery,
    Pairs,
    SimilarityQuery,
    SimilarQuery,
    answer,
    run_queries,
    scored,
)
from storage import meters
from storage.settings import Settings
from storage.tracing import configure_tracing, extract, tracer

logger = logging.getLogger("ray.serve")


def span_context(carrier: dict[str, str]) -> Any:
    return get_current_span(extract(carrier)).get_span_context()


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
class Engine:
    def __init__(
        self,
        algorithms: str | Sequence[str],
        *,
        source: ModelSource | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        install_ray_metrics()
        names = (algorithms,) if isinstance(algorithms, str) else tuple(dict.fromkeys(algorithms))
        if not names:
            raise ValueError("an engine serves at least one algorithm")
        self.algorithms = names
        configure_tracing(
            f"recserve-engine-{names[0]}" if len(names) == 1 else "recserve-engine-pool"
        )
        self._settings = Settings()
        self._source = resolve_source(source, self._settings)
        self._config = ServingOptions()
        self._memory = self._new_memory(self._config)
        self._build_multiplexer(self._max_models(self._config))
        if config is not None:
            self.reconfigure(config)

    def _max_models(self, config: ServingOptions) -> int:
        """The replica's model cap: ``max_models_per_replica`` per algorithm it serves."""
        return config.max_models_per_replica * len(self.algorithms)

    def _new_memory(self, config: ServingOptions) -> ModelMemory:
        mib = config.max_model_mb or self._settings.max_model_mb
        max_bytes = None if mib is None else int(mib * MIB)
        return ModelMemory(max_bytes=max_bytes, max_models=self._max_models(config))

    def reconfigure(self, config: dict[str, Any]) -> None:
        new = self._config.updated(config)
        if new.max_models_per_replica != self._config.max_models_per_replica:
            # The multiplex cap is fixed per wrapper; a new cap starts a fresh multiplexer.
            self._build_multiplexer(self._max_models(new))
        self._memory.max_models = self._max_models(new)
        self._memory.max_bytes = self._new_memory(new).max_bytes
        self._config = new

    def _build_multiplexer(self, max_models: int) -> None:
        # Serve's multiplexer routes requests to replicas holding a model id and caps ids by
        # count; the models themselves live in ``self._memory``, which also caps their bytes.
        # An id the multiplexer still lists but memory evicted is simply loaded again.
        async def load(model_id: str) -> str:
            await self._resident(model_id)
            return model_id

        self._model = serve.multiplexed(max_num_models_per_replica=max_models)(load)

    def _algorithm(self, model_id: str) -> tuple[str, str, str]:
        """``(algorithm, tenant, version)`` of a model id, refused unless this engine serves
        that algorithm."""
        algorithm, tenant_id, version = split_model_id(model_id)
        if algorithm not in self.algorithms:
            raise ValueError(
                f"engine of {', '.join(self.algorithms)} asked for {algorithm}'s model {model_id!r}"
            )
        return algorithm, tenant_id, version

    async def _resident(self, model_id: str) -> Any:
        """The model of ``model_id`` in this replica's memory, loaded when it is not."""
        model = self._memory.get(model_id)
        if model is not None:
            return model
        algorithm, tenant_id, version = self._algorithm(model_id)
        logger.info("engine %s loading %s", algorithm, model_id)
        with tracer().start_as_current_span("storage artifacts.load"):
            model = await asyncio.to_thread(self._source.load, tenant_id, algorithm, version)
        meters.model_version_served(tenant_id, algorithm, version)
        self._hold(model_id, model)
        return model

    def _hold(self, model_id: str, model: Any) -> None:
        """Keep a loaded model, evicting what no longer fits, and report the bytes held."""
        evicted = self._memory.put(model_id, model)
        for gone in evicted:
            logger.info("engine %s evicted %s (replica memory)", split_model_id(gone)[0], gone)
        for algorithm, tenant_id in {split_model_id(key)[:2] for key in [model_id, *evicted]}:
            self._report_bytes(algorithm, tenant_id)

    def _report_bytes(self, algorithm: str, tenant_id: str) -> None:
        held = self._memory.sizes()
        size = sum(
            n for key, n in held.items() if split_model_id(key)[:2] == (algorithm, tenant_id)
        )
        meters.model_bytes(tenant_id, algorithm, size)

    def _asked(self) -> tuple[str, str]:
        """The request's model id and its algorithm (spans and metrics name it)."""
        model_id = serve.get_multiplexed_model_id()
        return model_id, self._algorithm(model_id)[0]

    async def _current_model(self, model_id: str) -> Any:
        return await self._resident(await self._model(model_id))

    async def recommend_many(self, queries: list[EngineQuery]) -> list[Pairs]:
        """Queries of one model, batched by the caller (``recommend.batching``): one span, one
        scoring call."""
        model_id, algorithm = self._asked()
        with tracer().start_as_current_span(
            f"engine {algorithm} recommend",
            context=extract(queries[0].trace),
            links=[Link(c) for c in (span_context(q.trace) for q in queries[1:]) if c.is_valid],
            attributes={"algorithm": algorithm, "batch_size": len(queries)},
        ):
            model = await self._current_model(model_id)
            return await scored(model, len(queries), run_queries, model, queries)

    async def similar_items(self, query: SimilarQuery) -> Pairs:
        return await self._answer("similar_items", query)

    async def similarity(self, query: SimilarityQuery) -> np.ndarray:
        """Item-item similarity of ``rows`` to ``cols`` (for MMR and "because" explanations)."""
        return await self._answer("similarity", query)

    async def top_items(self, query: EngineQuery) -> Pairs:
        """The model's ranking for nobody in particular: trending and cold-start lists."""
        return await self._answer("top_items", query)

    async def _answer(self, method: str, query: Any) -> Any:
        model_id, algorithm = self._asked()
        with tracer().start_as_current_span(
            f"engine {algorithm} {method}",
            context=extract(query.trace),
            attributes={"algorithm": algorithm},
        ):
            model = await self._current_model(model_id)
            return await scored(model, 1, answer, model, method, query)

    def info(self) -> dict[str, Any]:
        """What this replica runs with: used by health checks and to verify env passthrough."""
        return {
            "algorithms": list(self.algorithms),
            "data_dir": str(self._settings.data_dir),
            "artifact_uri": self._settings.artifact_uri,
            "config": self._config.model_dump(),
            "env": self._settings.env,
            # Names only: values include secrets (JWT secret, database URL) that health checks
            # and the dashboard must never show.
            "recserve_settings": sorted(k for k in os.environ if k.startswith("RECSERVE_")),
            # the models this replica holds and their bytes (mapped: shared within the node)
            "models": self._memory.sizes(),
        }
