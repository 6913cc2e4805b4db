"""Where serving replicas get models and versions from.

Engines and the combiner talk to a ``ModelSource``; the default one reads the artifact store
(``{tenant}/{algorithm}/{version}``) and loads through ``training.algorithms.load``. Tests pass an
in-memory source instead of monkeypatching Ray replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from storage.errors import NotFound

# Kept importable from here (the recommendation core names versions with it).
from storage.model_registry import version_label as version_label
from storage.settings import Settings
from storage.tracing import tracer
from training.hybrid import HYBRID

logger = logging.getLogger("ray.serve")
MODEL_CACHE_DIR = "model-cache"
# beside a node's copy of a version: when the store saved it (``local_copy``)
SAVED_AT = ".saved-at"

if TYPE_CHECKING:
    from training.algorithms.base import Recommender


class ModelSource(Protocol):
    def current_version(self, tenant_id: str, algorithm: str) -> str | None:
        """The promoted version, or None when the tenant never trained this algorithm."""
        ...

    def load(self, tenant_id: str, algorithm: str, version: str) -> Recommender: ...

    def load_blend(self, tenant_id: str, version: str) -> dict[str, float]:
        """The tenant's tuned hybrid weights of ``version`` (``current_version(t, HYBRID)``)."""
        ...


def model_id(algorithm: str, tenant_id: str, version: str) -> str:
    """The multiplexed model id of one algorithm's model of a tenant at a version:
    ``"{algorithm}/{tenant}:{version}"``. It names the algorithm so that one engine deployment
    may serve several (an engine pool) and Serve routes every (algorithm, tenant, version)
    independently; ``split_model_id`` reads it back."""
    if not algorithm or "/" in algorithm:
        raise ValueError(f"algorithm must be a non-empty name without '/', got {algorithm!r}")
    if not tenant_id or "/" in tenant_id or ":" in tenant_id:
        raise ValueError(f"tenant id must be non-empty, without '/' or ':', got {tenant_id!r}")
    if not version:
        raise ValueError("version must not be empty")
    return f"{algorithm}/{tenant_id}:{version}"


def split_model_id(value: str) -> tuple[str, str, str]:
    """``(algorithm, tenant_id, version)`` of a ``model_id``."""
    # Algorithm names and tenant ids (UUIDs or slugs) never contain "/" or ":", but versions
    # may: split at the first of each.
    algorithm, slash, rest = value.partition("/")
    tenant_id, colon, version = rest.partition(":")
    if not slash or not colon or not algorithm or not tenant_id or not version:
        raise ValueError(f"model id must be 'algorithm/tenant:version', got {value!r}")
    return algorithm, tenant_id, version


def _saved_at(copy: Path) -> str | None:
    try:
        return (copy / SAVED_AT).read_text()
    except OSError:
        return None


class ArtifactModelSource:
    """The production source: the artifact store named by ``Settings.artifact_uri``.

    A version is downloaded once per node into ``{data_dir}/model-cache/{tenant}/{algorithm}/
    {version}`` (versions never change, so a copy there is always good) and memory-mapped from
    it: every replica on the node that serves the version shares the same pages.
    """

    def __init__(self, settings: Settings) -> None:
        from storage.artifacts import create_artifact_store

        self._store = create_artifact_store(settings)
        self._cache_dir = settings.data_dir.resolve() / MODEL_CACHE_DIR

    def current_version(self, tenant_id: str, algorithm: str) -> str | None:
        try:
            return self._store.current(tenant_id, algorithm)
        except NotFound:
            return None

    def load(self, tenant_id: str, algorithm: str, version: str) -> Recommender:
        from training.algorithms import load as load_recommender

        return load_recommender(self.local_copy(tenant_id, algorithm, version), mmap=True)

    def local_copy(self, tenant_id: str, algorithm: str, version: str) -> Path:
        """The node's copy of a version, downloaded when missing. A copy appears whole or not
        at all (downloaded beside it, then renamed), so concurrent replicas never read half.

        A copy is the store's version only if it was saved at the same moment (``created_at``,
        kept beside the copy): a store that was emptied and trained again reuses version
        names, and the node must not go on serving the old model under the new one's name."""
        target = self._cache_dir / tenant_id / algorithm / version
        saved = str(self._store.metadata(tenant_id, algorithm, version).get("created_at"))
        if target.is_dir():
            if _saved_at(target) == saved:
                return target
            # another model under this name: set it aside (replicas mapping it keep their
            # pages) and download the store's
            stale = Path(tempfile.mkdtemp(prefix=f".{version}-stale-", dir=target.parent))
            with contextlib.suppress(OSError):  # another replica moved it first
                target.rename(stale / "model")
            shutil.rmtree(stale, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        try:
            stored = self._store.load(tenant_id, algorithm, version, staging / "model")
            (staging / "model" / SAVED_AT).write_text(str(stored.get("created_at")))
            try:
                (staging / "model").rename(target)
            except OSError:  # another replica's copy landed first: use that one
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def load_blend(self, tenant_id: str, version: str) -> dict[str, float]:
        weights = self._store.metadata(tenant_id, HYBRID, version).get("weights")
        if not isinstance(weights, dict):
            raise NotFound(f"blend {version} of tenant {tenant_id} has no weights")
        return {str(engine): float(weight) for engine, weight in weights.items()}


def resolve_source(source: ModelSource | None, settings: Settings) -> ModelSource:
    return source if source is not None else ArtifactModelSource(settings)


# A version lookup that has to ask the store (never looked up, or older than the TTL).
_UNKNOWN = object()


class BlendCache:
    """Each tenant's promoted blend, loaded once per version (its version comes through the
    ``VersionCache``, so a new training run's blend is picked up like a new model)."""

    def __init__(self, source: ModelSource, versions: VersionCache) -> None:
        self._source, self._versions = source, versions
        self._loaded: dict[tuple[str, str], dict[str, float] | None] = {}

    async def current(self, tenant_id: str) -> dict[str, float] | None:
        """``get`` without a thread hop when the version and the blend are already known."""
        version = self._versions.cached(tenant_id, HYBRID)
        if version is not _UNKNOWN and (version is None or (tenant_id, version) in self._loaded):
            return None if version is None else self._loaded[(tenant_id, version)]
        return await asyncio.to_thread(self.get, tenant_id)

    def get(self, tenant_id: str) -> dict[str, float] | None:
        version = self._versions.get(tenant_id, HYBRID)
        if version is None:
            return None
        key = (tenant_id, version)
        if key not in self._loaded:
            try:
                self._loaded[key] = self._source.load_blend(tenant_id, version)
            except (NotFound, OSError, ValueError) as error:  # the default weights serve
                logger.warning("blend %s of %s unreadable: %s", version, tenant_id, error)
                self._loaded[key] = None
        return self._loaded[key]


class VersionCache:
    """Current versions per (tenant, algorithm), kept for a few seconds.

    A promotion becomes visible within ``ttl_seconds`` without asking the store on every request.
    """

    def __init__(self, source: ModelSource, ttl_seconds: float) -> None:
        self._source = source
        self.ttl_seconds = ttl_seconds
        self._entries: dict[tuple[str, str], tuple[float, str | None]] = {}

    def cached(self, tenant_id: str, algorithm: str) -> str | object | None:
        """The version while fresh (None: no model), else ``_UNKNOWN``; never asks the store."""
        entry = self._entries.get((tenant_id, algorithm))
        if entry is not None and time.monotonic() - entry[0] < self.ttl_seconds:
            return entry[1]
        return _UNKNOWN

    async def current(self, tenant_id: str, names: Sequence[str]) -> dict[str, str]:
        """The trained ones among ``names`` and their versions. Lookups are answered from
        memory while fresh; a stale or unknown one asks the store in a worker thread (it reads
        files or a database), so the event loop never waits on it."""
        found = {name: self.cached(tenant_id, name) for name in names}
        if any(version is _UNKNOWN for version in found.values()):
            found = await asyncio.to_thread(self._lookup, tenant_id, names)
        return {name: version for name, version in found.items() if isinstance(version, str)}

    def _lookup(self, tenant_id: str, names: Sequence[str]) -> dict[str, str | None]:
        # to_thread copies the context: this span is a child of the request's.
        with tracer().start_as_current_span("storage artifacts.current"):
            return {name: self.get(tenant_id, name) for name in names}

    def get(self, tenant_id: str, algorithm: str) -> str | None:
        key = (tenant_id, algorithm)
        now = time.monotonic()
        cached = self._entries.get(key)
        if cached is not None and now - cached[0] < self.ttl_seconds:
            return cached[1]
        version = self._source.current_version(tenant_id, algorithm)
        self._entries[key] = (now, version)
        return version

    def invalidate(self, tenant_id: str | None = None) -> None:
        if tenant_id is None:
            self._entries.clear()
            return
        # list() first: lookups run in worker threads and may add entries meanwhile.
        for key in [k for k in list(self._entries) if k[0] == tenant_id]:
            self._entries.pop(key, None)


class MemoryModelSource:
    """Models fitted in this process, served as version ``version`` of one tenant (benchmarks,
    tests, notebooks): the same serving path without an artifact store."""

    def __init__(
        self,
        tenant_id: str,
        models: dict[str, Recommender],
        version: str = "v1",
        blend: dict[str, float] | None = None,
    ) -> None:
        self.tenant_id, self.models, self.version = tenant_id, dict(models), version
        self.blend = blend

    def current_version(self, tenant_id: str, algorithm: str) -> str | None:
        known = algorithm in self.models or (algorithm == HYBRID and self.blend is not None)
        return self.version if tenant_id == self.tenant_id and known else None

    def load_blend(self, tenant_id: str, version: str) -> dict[str, float]:
        if self.blend is None or self.current_version(tenant_id, HYBRID) != version:
            raise NotFound(f"no blend {version} for tenant {tenant_id}")
        return dict(self.blend)

    def load(self, tenant_id: str, algorithm: str, version: str) -> Recommender:
        if self.current_version(tenant_id, algorithm) != version:
            raise NotFound(f"no {algorithm} model {version} for tenant {tenant_id}")
        return self.models[algorithm]


MIB = 2**20


class ModelMemory:
    """The models one replica holds, least recently used first out.

    A model is evicted once the held models' bytes (``Recommender.nbytes``, what
    ``ray_model_bytes`` reports) exceed ``max_bytes`` or their number exceeds ``max_models``;
    the model just added always stays, so a single model larger than the budget still serves
    (alone). Thread-safe: loads run in worker threads.
    """

    def __init__(self, *, max_bytes: int | None, max_models: int) -> None:
        self.max_bytes, self.max_models = max_bytes, max_models
        self._models: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            if key not in self._models:
                return None
            self._models.move_to_end(key)
            return self._models[key][0]

    def put(self, key: str, model: Any) -> list[str]:
        """Hold ``model`` as the most recently used; returns the keys evicted to make room."""
        size = int(getattr(model, "nbytes", 0))
        with self._lock:
            self._models[key] = (model, size)
            self._models.move_to_end(key)
            evicted = []
            while len(self._models) > 1 and self._over():
                evicted.append(self._models.popitem(last=False)[0])
        if self.max_bytes is not None and size > self.max_bytes:
            logger.warning(
                "model %s alone holds %.0f MiB, over the replica's %.0f MiB",
                key,
                size / MIB,
                self.max_bytes / MIB,
            )
        return evicted

    def _over(self) -> bool:
        held = sum(size for _, size in self._models.values())
        too_big = self.max_bytes is not None and held > self.max_bytes
        return too_big or len(self._models) > self.max_models

    def drop(self, key: str) -> None:
        with self._lock:
            self._models.pop(key, None)

    def sizes(self) -> dict[str, int]:
        """Bytes per held model, least recently used first."""
        with self._lock:
            return {key: size for key, (_, size) in self._models.items()}


class NearModels:
    """Models a caller holds beside the engine replicas, for the cheap methods it may answer
    itself: the combiner computes MMR's and explanations' item similarity with the similarity
    engine's own model (``scoring.answer``, the code that replica runs) instead of a second
    round trip after the fan-out.

    ``get`` never waits: a model not yet held starts loading in a worker thread and the caller
    asks the engine replica meanwhile. A model whose ``nbytes`` exceed ``max_bytes`` is not
    kept (the replica answers for it, as before), and at most ``max_bytes`` are held, least
    recently used out. Artifact copies are memory-mapped, so on a node that runs the engine the
    pages are shared with its replica.
    """

    def __init__(self, source: ModelSource, *, max_bytes: int, max_models: int = 64) -> None:
        self._source = source
        self._memory = ModelMemory(max_bytes=max_bytes, max_models=max_models)
        self._loading: dict[str, asyncio.Task[None]] = {}
        # (engine, tenant, version) found too large or unloadable: never tried again
        self._refused: set[str] = set()

    @property
    def max_bytes(self) -> int:
        return self._memory.max_bytes or 0

    @staticmethod
    def key(engine: str, tenant_id: str, version: str) -> str:
        return model_id(engine, tenant_id, version)

    def get(self, engine: str, tenant_id: str, version: str) -> Recommender | None:
        if self.max_bytes <= 0:
            return None
        key = self.key(engine, tenant_id, version)
        model = self._memory.get(key)
        if model is None and key not in self._refused and key not in self._loading:
            task = asyncio.get_running_loop().create_task(
                self._load(key, engine, tenant_id, version)
            )
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        return model

    async def _load(self, key: str, engine: str, tenant_id: str, version: str) -> None:
        try:
            model = await asyncio.to_thread(self._source.load, tenant_id, engine, version)
        except Exception as error:  # the replica answers; this copy is not retried
            logger.warning("no local copy of %s: %s", key, error)
            self._refused.add(key)
            return
        if int(getattr(model, "nbytes", 0)) > self.max_bytes:
            self._refused.add(key)
            return
        # older versions of this engine's model for the tenant are never asked again
        for held in self._memory.sizes():
            if split_model_id(held)[:2] == (engine, tenant_id) and held != key:
                self._memory.drop(held)
        self._memory.put(key, model)

    def held(self) -> dict[str, int]:
        return self._memory.sizes()

    def resize(self, max_bytes: int) -> None:
        """A new budget (``reconfigure``): what no longer fits goes at the next load."""
        self._memory.max_bytes = max_bytes
        self._refused.clear()
