"""Scale benchmark: generated tenants of 100k, 1M and 10M interactions, end to end.

    python -m benchmarks.scale [--sizes 100k,1m] [--database URL] [--algorithms ...]
                               [--one-job] [--keep DIR] [--distributed] [--json OUT]

Per size, in a fresh database (PostgreSQL from ``--database`` or
``RECSERVE_TEST_POSTGRES_URL``; a SQLite file without either), dropped afterwards:

- **ingest**: ``recserve ingest synthetic --interactions N`` (the streamed generator and the
  one write step) in a child process: rows/s and the child's peak RSS;
- **fit**: ``recserve train --algorithms A --no-evaluate`` per engine, each in its own child
  process (so its peak RSS is that fit's, data loading included): fit seconds from the
  version's metadata, model bytes as a replica holds them, or the memory plan's reason when
  the engine is skipped (``RECSERVE_TRAIN_MEMORY_GB`` applies as in production);
- **serve**: p50 of uncached ``recommendations`` (hybrid of every engine the tenant has a
  model of) through the in-process app's recommendation core, over 200 users;
- ``--distributed``: ALS on Ray Train with 1 and 2 workers beside implicit (needs Ray).

``--movielens PATH`` adds a first row set for MovieLens-100K from ``PATH`` (ingested by
``recserve ingest movielens``, fitted and served like the generated sizes): the baseline the
issue's "p50 at 10M within 3x of ML-100K" compares against.

``--one-job`` trains all the engines in one ``recserve train`` process instead (the tenant is
loaded once; at 10M the load takes minutes): fit seconds are still each engine's, job seconds
and peak RSS the whole job's. ``--keep DIR`` keeps the database and the artifacts in ``DIR``
(one size only); run again with the same ``DIR`` and the ingested tenant is reused, so engines
can be added to a 10M run without ingesting it again.

Prints one table. Timings depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import make_url, select

from benchmarks.ingest import _recserve
from storage.db import Database, create_database, drop_database
from storage.models import User
from storage.settings import Settings

# interactions -> (users, items): 50 events per user, a catalogue a fifth of the users
SIZES = {
    "100k": (100_000, 2_000, 2_000),
    "1m": (1_000_000, 20_000, 10_000),
    "10m": (10_000_000, 200_000, 50_000),
}
ENGINES = ("popularity", "als", "bpr", "item_knn", "user_knn", "ease", "svd", "content")
DOMAIN = "scale.bench"
SAMPLE_USERS = 200


def _url_for(base: str | None, directory: Path, size: str) -> str:
    if not base:
        return f"sqlite+aiosqlite:///{directory}/scale-{size}.db"
    name = f"recserve_scale_{size}_{uuid.uuid4().hex[:8]}"
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def _fit(url: str, directory: Path, name: str, *extra: str) -> dict[str, Any]:
    """One engine trained in a child process; what it cost and what it made."""
    return _fit_job(url, directory, [name], *extra)[0]


def _fit_job(url: str, directory: Path, names: list[str], *extra: str) -> list[dict[str, Any]]:
    """Engines trained together by one ``recserve train`` child process: a row per engine."""
    started = time.perf_counter()
    try:
        seconds, _cpu, rss = _recserve(
            url, directory, "train", "--tenant", DOMAIN, "--algorithms", ",".join(names),
            "--no-evaluate", *extra,
        )  # fmt: skip
    except RuntimeError:
        # The plan skipped every engine asked for, so the run trained nothing and failed;
        # the log says why (any other failure is raised again below).
        seconds, rss = time.perf_counter() - started, float("nan")
    log = (directory / "recserve.log").read_text()
    rows = []
    for name in names:
        skipped = re.search(rf"{name} skipped:\s*(.+)", log)
        row: dict[str, Any] = {"engine": name, "job_s": seconds, "peak_rss_mb": rss}
        if skipped:
            rows.append({**row, "skipped": " ".join(skipped.group(1).split())})
            continue
        if rss != rss:  # failed, and not because the plan skipped it
            raise RuntimeError(f"recserve train --algorithms {name} failed:\n{log[-3000:]}")
        rows.append(_made(url, directory, name, row))
    return rows


def _made(url: str, directory: Path, name: str, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with the fit seconds and model bytes of ``name``'s current version."""
    settings = Settings(database_url=url, data_dir=directory)
    from recommend.model_cache import ArtifactModelSource
    from storage.artifacts import create_artifact_store

    store = create_artifact_store(settings)
    tenant = next(p.name for p in Path(settings.artifact_uri).iterdir() if p.is_dir())
    version = store.current(tenant, name)
    meta = store.metadata(tenant, name, version)
    model = ArtifactModelSource(settings).load(tenant, name, version)
    return {**row, "fit_s": meta["fit_seconds"], "model_mb": model.nbytes / 2**20}


def _published(url: str, directory: Path) -> list[str]:
    """The engines with a promoted version for the benchmark's tenant."""
    from storage.artifacts import create_artifact_store
    from storage.errors import NotFound

    settings = Settings(database_url=url, data_dir=directory)
    root = Path(settings.artifact_uri)
    tenants = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    if not tenants:
        return []
    store = create_artifact_store(settings)
    published = []
    for name in ENGINES:
        try:
            if store.current(tenants[0], name) is not None:
                published.append(name)
        except NotFound:
            continue
    return published


async def _p50(url: str, directory: Path, engines: list[str]) -> float:
    """Median ms of uncached hybrid recommendations through the in-process app."""
    from recommend.inprocess import InProcessService
    from recommend.types import RecommendationRequest

    settings = Settings(database_url=url, data_dir=directory, env="test", scheduler_enabled=False)
    database = Database(url)
    try:
        async with database.session() as session:
            rows = await session.execute(select(User.tenant_id, User.id).limit(5_000))
            pairs = rows.all()
    finally:
        await database.dispose()
    tenant = str(pairs[0][0])
    rng = np.random.default_rng(0)
    users = [str(pairs[i][1]) for i in rng.choice(len(pairs), SAMPLE_USERS, replace=False)]
    recommender = InProcessService(settings, engines)
    await recommender.recommend(RecommendationRequest(tenant, users[0]))  # loads the models
    times = []
    for user in users:
        started = time.perf_counter()
        await recommender.recommend(RecommendationRequest(tenant, user))
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50))


def _workspace(size: str, base_url: str | None, keep: Path | None) -> tuple[Path, str, bool]:
    """(directory, database URL, reused): ``keep``'s tenant when it holds one, else a new one."""
    if keep is None:
        directory = Path(tempfile.mkdtemp(prefix=f"recserve-scale-{size}-"))
        return directory, _url_for(base_url, directory, size), False
    keep.mkdir(parents=True, exist_ok=True)
    kept = keep / "database_url"
    if kept.exists():
        return keep, kept.read_text().strip(), True
    url = _url_for(base_url, keep, size)
    kept.write_text(url)
    return keep, url, False


async def run_size(
    size: str,
    base_url: str | None,
    engines: list[str],
    distributed: bool,
    one_job: bool = False,
    keep: Path | None = None,
    movielens: Path | None = None,
) -> dict[str, Any]:
    """One size end to end (``movielens``: MovieLens-100K from that folder, as size "ml100k")."""
    directory, url, reused = _workspace(size, base_url, keep)
    try:
        result: dict[str, Any] = {
            "size": size,
            "backend": make_url(url).get_backend_name(),
            "fits": [],
        }
        if reused:
            print(f"{size}: reusing the tenant ingested in {url}", file=sys.stderr)
        else:
            await create_database(url)
            _recserve(url, directory, "tenant", "create", "--domain", DOMAIN)
            if movielens is not None:
                interactions = 100_000
                ingest = ("movielens", str(movielens))
            else:
                interactions, users, items = SIZES[size]
                ingest = (
                    "synthetic", "--users", str(users), "--items", str(items),
                    "--interactions", str(interactions),
                )  # fmt: skip
            seconds, _cpu, rss = _recserve(url, directory, "ingest", *ingest, "--tenant", DOMAIN)
            result["ingest_rows_per_s"] = interactions / seconds
            result["ingest_peak_rss_mb"] = rss
            print(f"{size}: ingested in {seconds:.0f}s", file=sys.stderr)
        if one_job and engines:
            result["fits"] = _fit_job(url, directory, engines)
            result["one_job"] = True
        else:
            for name in engines:
                result["fits"].append(_fit(url, directory, name))
                print(f"{size}: {result['fits'][-1]}", file=sys.stderr)
        # every engine the tenant has a model of (with --keep, also those of earlier runs)
        trained = _published(url, directory)
        result["p50_ms"] = await _p50(url, directory, trained) if trained else None
        result["p50_engines"] = trained
        if distributed:
            result["distributed"] = [
                {**_fit(url, directory, "als", "--distributed", "--workers", str(n)), "workers": n}
                for n in (1, 2)
            ]
        return result
    finally:
        if keep is None:
            await drop_database(url)
            shutil.rmtree(directory, ignore_errors=True)
        else:
            print(f"{size}: kept {url} and {directory}", file=sys.stderr)


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'size':<8}{'engine':<13}{'workers':>8}{'fit s':>9}{'job s':>9}{'peak RSS MB':>13}"
        f"{'model MB':>10}  note"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if "ingest_rows_per_s" in r:
            print(
                f"{r['size']:<8}{'ingest':<13}{'':>8}{'':>9}{'':>9}"
                f"{r['ingest_peak_rss_mb']:>13,.0f}{'':>10}  "
                f"{r['ingest_rows_per_s']:,.0f} rows/s into {r['backend']}"
            )
        if r.get("one_job"):
            print(f"{r['size']:<8}{'(one job)':<13}{'':>8}{'':>36}  job s and RSS: all engines")
        rows = [(fit, "") for fit in r["fits"]]
        rows += [(fit, str(fit["workers"])) for fit in r.get("distributed", [])]
        for fit, workers in rows:
            name = fit["engine"] + (" (Ray)" if workers else "")
            if "skipped" in fit:
                print(f"{r['size']:<8}{name:<13}{workers:>8}{'':>36}  skipped: {fit['skipped']}")
                continue
            print(
                f"{r['size']:<8}{name:<13}{workers:>8}{fit['fit_s']:>9.1f}{fit['job_s']:>9.1f}"
                f"{fit['peak_rss_mb']:>13,.0f}{fit['model_mb']:>10.1f}"
            )
        p50 = "-" if r["p50_ms"] is None else f"{r['p50_ms']:.1f} ms"
        print(f"{r['size']:<8}{'serve':<13}{'':>8}{'':>45}  hybrid p50 uncached {p50}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k,1m", help=f"of {', '.join(SIZES)}")
    parser.add_argument(
        "--database", "--postgres", default=os.environ.get("RECSERVE_TEST_POSTGRES_URL")
    )
    parser.add_argument("--algorithms", default=",".join(ENGINES))
    parser.add_argument("--distributed", action="store_true", help="also ALS on Ray Train")
    parser.add_argument("--one-job", action="store_true", help="all engines in one train job")
    parser.add_argument("--keep", type=Path, help="keep (or reuse) the tenant in this directory")
    parser.add_argument("--movielens", type=Path, help="ML-100K folder: a baseline row set")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}: use {', '.join(SIZES)}")
    engines = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    if args.keep is not None and len(sizes) != 1:
        parser.error("--keep takes one size")
    os.environ.setdefault("RECSERVE_SCHEDULER_ENABLED", "false")
    baseline = []
    if args.movielens is not None:
        baseline = [
            asyncio.run(
                run_size(
                    "ml100k", args.database, engines, False, args.one_job, None, args.movielens
                )
            )
        ]
    results = baseline + [
        asyncio.run(
            run_size(size, args.database, engines, args.distributed, args.one_job, args.keep)
        )
        for size in sizes
    ]
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
