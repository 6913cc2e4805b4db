"""What a user gets: MovieLens-100K quality through the production path, beside the offline figure.

    python -m benchmarks.api_quality --data ../shared/data/ml-100k [--users 300]
        [--algorithms ease,als,popularity] [--engines ease,als] [--serve] [--json out.json]

The ratings are split as ``benchmarks/quality.py`` does (per-user stratified 75/25, seed 42).
Only the training part goes in: the same ingest ``recserve ingest movielens`` runs, into a fresh
tenant of a temporary data dir (SQLite unless ``--database-url``), then the production training
pipeline with its defaults. The app is served in-process (uvicorn on a free port) and, with
``--serve``, as the Ray Serve application of ``serve_config.yaml``. Every test user gets their own
access token and asks ``recommendations`` over HTTP for the hybrid and for each engine; the
returned items are mapped back to MovieLens ids and scored with ``training.evaluation``'s metrics
on the held-out rows. The offline column is ``benchmarks/quality.py``'s path: the same algorithms
fitted in memory on the pipeline's matrix of the training rows, the tenant blend tuned as training
tunes it, every list from the serving core in process. The "artifact" column is a diagnostic: the
promoted models themselves, called on the users' trained rows (no history, no blend).
The hybrid is asked as clients ask by default (``diversify: true``) and, as the row
"hybrid (diversify off)", with ``diversify: false``; both get NDCG@10 and intra-list diversity
(1 - mean pairwise co-occurrence cosine of the training rows), through the API and offline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.quality import (
    NO_DIVERSIFY,
    evaluate_served,
    fit_engines,
    tenant_blend,
    tenant_data,
)
from cluster import operations as ops
from deployments.app import AppArgs
from graph_api.auth import Principal, TokenService
from ingest.writer import imported_email
from recommend.inprocess import InProcessService
from recommend.types import HYBRID
from storage import repositories as repo
from storage.settings import Settings
from training.datasets import MovieLens, load_movielens
from training.evaluation import (
    cooccurrence_similarity,
    intra_list_diversity,
    python_stratified_split,
    ranking_metrics,
    relevant_items,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("RECSERVE_ML100K", ROOT / "../shared/data/ml-100k"))
SERVE_CONFIG = ROOT / "serve_config.yaml"
K = 10
DOMAIN = "api-quality.bench"
METRICS = (f"ndcg@{K}", f"precision@{K}", f"recall@{K}", "map", "diversity")
QUERY = """query Recommend($options: RecommendationOptions) {
  recommendations(options: $options) {
    items { item { externalId } }
    explanation { enginesFailed }
  }
}"""
READY_TIMEOUT_S = 240.0


# ---- data ---------------------------------------------------------------------------------
@dataclass
class Split:
    data: MovieLens
    train: list[tuple]
    test: list[tuple]
    users: list[str]  # the test users measured, in order
    _similarity: Any = None

    @property
    def test_rows(self) -> list[tuple]:
        """Held-out rows of the measured users only."""
        wanted = set(self.users)
        return [row for row in self.test if str(row[0]) in wanted]

    @property
    def relevant(self) -> dict[str, set[str]]:
        return relevant_items(self.test_rows)

    def similarity(self) -> Any:
        """Item-item co-occurrence cosine of the training rows: what diversity is measured by."""
        if self._similarity is None:
            self._similarity = cooccurrence_similarity(
                tenant_data(self.train, self.data.items).matrix()
            )
        return self._similarity


def split_movielens(path: Path, users: int | None = None, seed: int = 42) -> Split:
    """The 75/25 split of benchmarks/quality.py; ``users`` keeps a deterministic sample."""
    data = load_movielens(path)
    train, test = python_stratified_split(data.rows, 0.75, seed=42)
    known = {str(row[0]) for row in train}
    everyone = sorted({str(row[0]) for row in test} & known, key=int)
    chosen = everyone
    if users is not None and users < len(everyone):
        chosen = sorted(random.Random(seed).sample(everyone, users), key=int)
    return Split(data, train, test, chosen)


def write_training_folder(source: Path, train: Sequence[tuple], target: Path) -> Path:
    """An ML-100K folder whose ``u.data`` holds only the training rows."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("u.item", "u.genre", "u.user", "u.info", "u.occupation"):
        if (source / name).exists():
            shutil.copyfile(source / name, target / name)
    lines = [f"{u}\t{i}\t{int(r)}\t{int(ts)}\n" for u, i, r, ts in train]
    (target / "u.data").write_text("".join(lines), encoding="latin-1")
    return target


# ---- production ingest, training, tokens ---------------------------------------------------
def make_settings(data_dir: Path, database_url: str | None = None) -> Settings:
    values: dict[str, Any] = {"data_dir": data_dir.resolve(), "jwt_secret": secrets.token_hex(32)}
    # The benchmark trains when it means to: no retraining scheduler beside it.
    values["scheduler_enabled"] = False
    if database_url:
        values["database_url"] = database_url
    return Settings(**values)


async def ingest_training(settings: Settings, folder: Path, domain: str = DOMAIN) -> str:
    """A fresh tenant (enterprise tier: the measurement must not hit rate limits) loaded with
    ``recserve ingest movielens``'s own function; returns the tenant id."""
    tenant = await ops.create_tenant(settings, domain=domain, tier="enterprise")
    await ops.ingest_movielens(settings, source=str(folder), domain=domain)
    return str(tenant.id)


async def train(settings: Settings, tenant_id: str, algorithms: Sequence[str] | None) -> Any:
    """``recserve train``'s defaults: holdout metrics and the tenant's tuned blend included."""
    from training.pipeline import train_tenant_async

    return await train_tenant_async(settings, tenant_id, algorithms)


@dataclass
class TenantIds:
    tenant_id: str
    users: dict[str, str]  # MovieLens user id -> our user id
    items: dict[str, str]  # our item id -> MovieLens item id
    tokens: dict[str, str] = field(default_factory=dict)  # MovieLens user id -> access token


async def tenant_ids(settings: Settings, domain: str, users: Sequence[str]) -> TenantIds:
    """Each user's own access token, minted as ``recserve token`` does (one session for all)."""
    database = await ops.open_database(settings)
    tokens = TokenService(settings)
    try:
        async with database.session() as session:
            tenant = await repo.get_tenant_by_domain(session=session, domain=domain)
            items = await repo.catalogue_items(session=session, tenant_id=tenant.id)
            found = TenantIds(str(tenant.id), {}, {str(i.id): str(i.external_id) for i in items})
            for external in users:
                user = await repo.get_user_by_email(
                    session=session, tenant_id=tenant.id, email=imported_email(external)
                )
                principal = Principal(tenant.id, user.id, str(user.role), str(tenant.tier))
                found.users[external] = str(user.id)
                found.tokens[external] = tokens.issue(principal, "access")
            return found
    finally:
        await database.dispose()


# ---- serving -------------------------------------------------------------------------------
def serve_args(config: Path = SERVE_CONFIG) -> AppArgs:
    """The typed app args of ``serve_config.yaml``'s application."""
    document = yaml.safe_load(config.read_text())
    return AppArgs.model_validate(document["applications"][0]["args"])


def make_recommender(settings: Settings, args: AppArgs) -> InProcessService:
    """The single-process app's recommender, configured as serve_config.yaml configures Serve."""
    return InProcessService(settings, args.engines, options=args)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def in_process_server(settings: Settings, args: AppArgs) -> Iterator[str]:
    """``create_app`` under uvicorn in a background thread; yields the base URL."""
    import uvicorn

    from graph_api.app import create_app

    app = create_app(recommender=make_recommender(settings, args), settings=settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-quality-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def serve_application(settings: Settings, args: AppArgs) -> Iterator[str]:
    """The Serve app of ``serve_config.yaml`` on a local Ray (2 CPUs, fractional replicas)
    over the same data dir and database; shut down on exit. Yields the base URL."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from deployments.app import build_app

    values = {
        "env": settings.env,
        "data_dir": str(settings.data_dir.resolve()),
        "database_url": str(settings.database_url),
    }
    # A secret never goes into the Serve config (the builder refuses it): the replicas inherit
    # it from the environment of the Ray this process starts, as from `ray start`'s shell.
    if settings.jwt_secret is not None:
        os.environ["RECSERVE_JWT_SECRET"] = settings.jwt_secret.get_secret_value()
    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app_args = args.model_copy(update={"settings": {**args.settings, **values}})
        serve.run(build_app(app_args), name="api-quality", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=10).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Serve app was not ready in {READY_TIMEOUT_S:.0f}s")
            time.sleep(0.5)
        yield base
    finally:
        serve.shutdown()
        ray.shutdown()


# ---- asking the API ------------------------------------------------------------------------
@dataclass
class ApiLists:
    """Per algorithm: MovieLens user -> MovieLens item ids, plus what the replies said."""

    lists: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    engines_failed: dict[str, Counter] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    short: dict[str, int] = field(default_factory=dict)  # lists with fewer than K items
    latencies: list[float] = field(default_factory=list)


async def _ask(
    http: httpx.AsyncClient, token: str, algorithm: str, attempts: int = 5
) -> dict[str, Any]:
    options: dict[str, Any] = {"numRecommendations": K}
    if algorithm == NO_DIVERSIFY:
        options["diversify"] = False
    elif algorithm != HYBRID:
        options["algorithm"] = algorithm
    body = {"query": QUERY, "variables": {"options": options}}
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(attempts):
        response = await http.post("/graphql", json=body, headers=headers)
        if response.status_code == 429:  # rate limited: wait as told, then ask again
            errors = response.json().get("errors") or [{}]
            await asyncio.sleep(float(errors[0].get("extensions", {}).get("retryAfter", 1.0)))
            continue
        return response.json()
    return {"errors": [{"message": "rate limited"}]}


async def ask_api(
    base_url: str,
    ids: TenantIds,
    users: Sequence[str],
    algorithms: Sequence[str],
    *,
    concurrency: int = 4,
) -> ApiLists:
    """Every (user, algorithm) once, over real HTTP, ``concurrency`` requests in flight."""
    found = ApiLists(
        lists={a: {} for a in algorithms},
        engines_failed={a: Counter() for a in algorithms},
        errors=dict.fromkeys(algorithms, 0),
        short=dict.fromkeys(algorithms, 0),
    )
    jobs: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for user in users:
        for algorithm in algorithms:
            jobs.put_nowait((user, algorithm))
    limits = httpx.Limits(max_connections=concurrency)

    async def client(http: httpx.AsyncClient) -> None:
        while not jobs.empty():
            user, algorithm = jobs.get_nowait()
            started = time.perf_counter()
            reply = await _ask(http, ids.tokens[user], algorithm)
            found.latencies.append(time.perf_counter() - started)
            result = (reply.get("data") or {}).get("recommendations")
            if reply.get("errors") or result is None:
                found.errors[algorithm] += 1
                continue
            items = [str(r["item"]["externalId"]) for r in result["items"]]
            found.lists[algorithm][user] = items
            found.short[algorithm] += len(items) < K
            found.engines_failed[algorithm].update(
                (result.get("explanation") or {}).get("enginesFailed", [])
            )

    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return found


def api_metrics(lists: dict[str, list[str]], split: Split) -> dict[str, float]:
    metrics = ranking_metrics(lists, split.relevant, K)
    metrics["diversity"] = intra_list_diversity(lists, split.similarity())
    return metrics


# ---- offline -------------------------------------------------------------------------------
def offline_metrics(
    split: Split, engines: Sequence[str]
) -> tuple[dict[str, dict[str, float]], dict[str, float] | None]:
    """``benchmarks/quality.py``'s path on the measured users: engines fitted in memory on the
    pipeline's matrix of the training rows, the tenant blend tuned as training tunes it, every
    list from the serving core with the user's history."""
    tenant = tenant_data(split.train, split.data.items)
    models, _ = fit_engines(tenant.matrix(), split.data.items, engines)
    blend = tenant_blend(tenant, engines)
    asked = [HYBRID, NO_DIVERSIFY, *engines]
    results = evaluate_served(
        models, split.train, split.test_rows, asked, None, blend, similarity=split.similarity()
    )
    return results, blend


def artifact_metrics(
    settings: Settings, ids: TenantIds, engines: Sequence[str], split: Split
) -> dict[str, dict[str, float]]:
    """Diagnostic: each promoted model called directly (trained row, no history, no blend)."""
    from recommend.model_cache import ArtifactModelSource

    source = ArtifactModelSource(settings)
    ours = [ids.users[u] for u in split.users]
    results = {}
    for name in engines:
        version = source.current_version(ids.tenant_id, name)
        if version is None:
            continue
        model = source.load(ids.tenant_id, name, version)
        lists = model.recommend_many(ours, K, exclude_seen=True)
        ranked = {
            user: [ids.items.get(str(item), str(item)) for item, _ in recs]
            for user, recs in zip(split.users, lists, strict=True)
        }
        results[name] = ranking_metrics(ranked, split.relevant, K)
    return results


# ---- the whole run -------------------------------------------------------------------------
@dataclass
class Options:
    data: Path = DEFAULT_DATA
    users: int | None = None
    algorithms: list[str] | None = None  # trained; None: the pipeline's defaults
    engines: list[str] | None = None  # asked one by one; None: every trained engine
    serve: bool = False
    database_url: str | None = None
    concurrency: int = 4
    artifacts: bool = True


def measure_api(
    server: Any,
    mode: str,
    settings: Settings,
    args: AppArgs,
    ids: TenantIds,
    split: Split,
    asked: Sequence[str],
    options: Options,
    timings: dict[str, float],
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Start ``server``, ask it for every (user, algorithm), score the lists."""
    started = time.perf_counter()
    with server(settings, args) as base:
        _timed(timings, f"start {mode}", started)
        started = time.perf_counter()
        found = asyncio.run(ask_api(base, ids, split.users, asked, concurrency=options.concurrency))
        _timed(timings, f"query {mode}", started)
    metrics = {a: _round(api_metrics(found.lists[a], split)) for a in asked}
    diagnostics = {
        "errors": found.errors,
        "short_lists": found.short,
        "engines_failed": {a: dict(c) for a, c in found.engines_failed.items() if c},
        "requests": len(found.latencies),
        "mean_latency_ms": round(1000 * sum(found.latencies) / max(len(found.latencies), 1), 1),
    }
    return metrics, diagnostics


def _round(metrics: dict[str, float]) -> dict[str, float]:
    return {m: round(float(metrics[m]), 4) for m in METRICS if m in metrics}


def _timed(timings: dict[str, float], phase: str, started: float) -> None:
    timings[phase] = round(time.perf_counter() - started, 2)
    print(f"  {phase}: {timings[phase]:.1f}s", file=sys.stderr)


def run(options: Options) -> dict[str, Any]:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    split = split_movielens(options.data, options.users)
    with tempfile.TemporaryDirectory(prefix="recserve-api-quality-") as tmp:
        settings = make_settings(Path(tmp) / "data", options.database_url)
        folder = write_training_folder(options.data, split.train, Path(tmp) / "ml-100k-train")
        _timed(timings, "split", started)

        started = time.perf_counter()
        asyncio.run(ingest_training(settings, folder))
        _timed(timings, "ingest", started)

        started = time.perf_counter()
        ids = asyncio.run(tenant_ids(settings, DOMAIN, split.users))
        trained = asyncio.run(train(settings, ids.tenant_id, options.algorithms))
        _timed(timings, "train", started)
        wanted = list(trained.versions) if options.engines is None else options.engines
        engines = [e for e in wanted if e in trained.versions]
        asked = [HYBRID, NO_DIVERSIFY, *engines]

        args = serve_args()
        report: dict[str, Any] = {
            "users": len(split.users),
            "trained": dict(trained.versions),
            "skipped": dict(trained.skipped),
            "tenant_blend": trained.blend,
            "serve_args": {
                "engines": args.engines,
                "hybrid": args.hybrid.model_dump(mode="json"),
                "engine_timeout_s": args.engine_timeout_s,
            },
            "api": {},
            "api_diagnostics": {},
        }
        servers = {"in-process": in_process_server, "serve": serve_application}
        for mode in ("in-process", "serve") if options.serve else ("in-process",):
            try:
                metrics, diagnostics = measure_api(
                    servers[mode], mode, settings, args, ids, split, asked, options, timings
                )
            except Exception as error:  # Serve failing to start must not lose the rest
                if mode == "in-process":
                    raise
                report.setdefault("api_errors", {})[mode] = repr(error)
                print(f"  {mode} failed: {error!r}", file=sys.stderr)
                continue
            report["api"][mode] = metrics
            report["api_diagnostics"][mode] = diagnostics

        if options.artifacts:
            started = time.perf_counter()
            report["artifact"] = {
                a: _round(m) for a, m in artifact_metrics(settings, ids, engines, split).items()
            }
            _timed(timings, "artifact", started)

    started = time.perf_counter()
    offline, blend = offline_metrics(split, list(trained.versions))
    shown = (HYBRID, NO_DIVERSIFY, *engines)
    report["offline"] = {a: _round(m) for a, m in offline.items() if a in shown}
    report["offline_blend"] = blend
    _timed(timings, "offline", started)
    report["seconds"] = timings
    return report


def print_table(report: dict[str, Any]) -> None:
    modes = list(report["api"])
    columns = [("offline", report["offline"])]
    columns += [(f"API {m}", report["api"][m]) for m in modes]
    if "artifact" in report:
        columns.append(("artifact", report["artifact"]))
    rows = list(report["offline"])
    rows = [HYBRID, *[r for r in rows if r != HYBRID]]
    head = f"{'algorithm':<24}" + "".join(f"{name + ' NDCG/P@10':>26}" for name, _ in columns)
    print(f"{report['users']} test users, k={K}")
    print(head)
    print("-" * len(head))
    for row in rows:
        cells = ""
        for _, values in columns:
            found = values.get(row)
            text = f"{found['ndcg@10']:.4f} / {found['precision@10']:.4f}" if found else "-"
            cells += f"{text:>26}"
        print(f"{row:<24}{cells}")
    print_diversity(columns[:-1] if "artifact" in report else columns)
    print("seconds: " + ", ".join(f"{p} {s:.1f}" for p, s in report["seconds"].items()))
    for mode, diagnostics in report["api_diagnostics"].items():
        print(f"{mode}: {json.dumps(diagnostics)}")


def print_diversity(columns: list[tuple[str, dict[str, dict[str, float]]]]) -> None:
    """The hybrid with and without ``diversify``: NDCG@10, its change, intra-list diversity."""
    print(
        f"\n{'hybrid':<24}" + "".join(f"{name + ' NDCG (vs off) ILD':>36}" for name, _ in columns)
    )
    for row in (NO_DIVERSIFY, HYBRID):
        cells = ""
        for _, values in columns:
            found, off = values.get(row), values.get(NO_DIVERSIFY)
            if found is None or off is None:
                cells += f"{'-':>36}"
                continue
            change = found["ndcg@10"] - off["ndcg@10"]
            text = f"{found['ndcg@10']:.4f} ({change:+.4f}) {found['diversity']:.4f}"
            cells += f"{text:>36}"
        print(f"{'diversify on' if row == HYBRID else 'diversify off':<24}{cells}")


def _names(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ML-100K folder")
    parser.add_argument("--users", type=int, help="measure N test users (deterministic sample)")
    parser.add_argument("--algorithms", help="comma-separated algorithms to train (default all)")
    parser.add_argument("--engines", help="comma-separated engines to ask (default: trained)")
    parser.add_argument("--serve", action="store_true", help="also measure the Ray Serve app")
    parser.add_argument("--database-url", help="instead of a SQLite file in the temp data dir")
    parser.add_argument("--concurrency", type=int, default=4, help="HTTP clients in flight")
    parser.add_argument("--no-artifacts", action="store_true", help="skip the artifact column")
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args(argv)
    report = run(
        Options(
            data=args.data,
            users=args.users,
            algorithms=_names(args.algorithms),
            engines=_names(args.engines),
            serve=args.serve,
            database_url=args.database_url,
            concurrency=args.concurrency,
            artifacts=not args.no_artifacts,
        )
    )
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
