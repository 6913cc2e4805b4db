"""One engine deployment class serving any algorithm for every tenant.

Each algorithm is the same class bound with a different ``algorithm`` argument, so each gets its
own replicas and resources. Tenants' models are multiplexed: the model id is
``"{tenant}:{version}"``, so promoting a new version simply routes the next request to a new id
(no restart). What a replica holds is bounded by memory: least-recently-used models are evicted
once their bytes pass ``max_model_mb`` (``RECSERVE_MAX_MODEL_MB``), or their number
``max_models_per_replica`` (``ModelMemory``).

Nothing here imports torch: models are numpy at inference time.
"""

from __future__ import annotations

import asyncio
import logging
import os
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
        algorithm: str,
        *,
        source: ModelSource | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        install_ray_metrics()
        configure_tracing(f"recserve-engine-{algorithm}")
        self.algorithm = algorithm
        self._settings = Settings()
        self._source = resolve_source(source, self._settings)
        self._config = ServingOptions()
        self._memory = self._new_memory(self._config)
        self._build_multiplexer(self._config.max_models_per_replica)
        if config is not None:
            self.reconfigure(config)

    def _new_memory(self, config: ServingOptions) -> ModelMemory:
        mib = config.max_model_mb or self._settings.max_model_mb
        max_bytes = None if mib is None else int(mib * MIB)
        return ModelMemory(max_bytes=max_bytes, max_models=config.max_models_per_replica)

    def reconfigure(self, config: dict[str, Any]) -> None:
        new = self._config.updated(config)
        if new.max_models_per_replica != self._config.max_models_per_replica:
            # The multiplex cap is fixed per wrapper; a new cap starts a fresh multiplexer.
            self._build_multiplexer(new.max_models_per_replica)
        self._memory.max_models = new.max_models_per_replica
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

    async def _resident(self, model_id: str) -> Any:
        """The model of ``model_id`` in this replica's memory, loaded when it is not."""
        model = self._memory.get(model_id)
        if model is not None:
            return model
        tenant_id, version = split_model_id(model_id)
        logger.info("engine %s loading %s", self.algorithm, model_id)
        with tracer().start_as_current_span("storage artifacts.load"):
            model = await asyncio.to_thread(self._source.load, tenant_id, self.algorithm, version)
        meters.model_version_served(tenant_id, self.algorithm, version)
        self._hold(model_id, model)
        return model

    def _hold(self, model_id: str, model: Any) -> None:
        """Keep a loaded model, evicting what no longer fits, and report the bytes held."""
        evicted = self._memory.put(model_id, model)
        for gone in evicted:
            logger.info("engine %s evicted %s (replica memory)", self.algorithm, gone)
        for tenant_id in {split_model_id(key)[0] for key in [model_id, *evicted]}:
            self._report_bytes(tenant_id)

    def _report_bytes(self, tenant_id: str) -> None:
        held = self._memory.sizes()
        size = sum(n for key, n in held.items() if split_model_id(key)[0] == tenant_id)
        meters.model_bytes(tenant_id, self.algorithm, size)

    async def _current_model(self) -> Any:
        return await self._resident(await self._model(serve.get_multiplexed_model_id()))

    async def recommend_many(self, queries: list[EngineQuery]) -> list[Pairs]:
        """Queries of one model, batched by the caller (``recommend.batching``): one span, one
        scoring call."""
        with tracer().start_as_current_span(
            f"engine {self.algorithm} recommend",
            context=extract(queries[0].trace),
            links=[Link(c) for c in (span_context(q.trace) for q in queries[1:]) if c.is_valid],
            attributes={"algorithm": self.algorithm, "batch_size": len(queries)},
        ):
            model = await self._current_model()
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
        with tracer().start_as_current_span(
            f"engine {self.algorithm} {method}", context=extract(query.trace)
        ):
            model = await self._current_model()
            return await scored(model, 1, answer, model, method, query)

    def info(self) -> dict[str, Any]:
        """What this replica runs with: used by health checks and to verify env passthrough."""
        return {
            "algorithm": self.algorithm,
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
