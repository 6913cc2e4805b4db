"""Bulk-ingest benchmark: 100k interactions into each relational backend.

    python -m benchmarks.ingest [--rows 100000] [--postgres URL] [--parts bulk,files] [--json OUT]

SQLite always runs (a temp file); PostgreSQL runs when ``--postgres`` (alias
``--database-url``) or ``RECSERVE_TEST_POSTGRES_URL`` names a server, in a fresh database
dropped afterwards. Timed (part ``bulk``): ``bulk_insert_interactions`` plus the commit, and
reading them back with ``load_interactions`` (the training path). Part ``files``: ``--rows``
generated interactions (and their items) written as CSV and as Parquet into a temp dir, then
imported by ``recserve ingest file`` in a child process, whose peak RSS is reported: a CSV
import into a new tenant, the same file again (every row already present), and the Parquet
file into another new tenant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import insert, make_url

from storage import repositories as repo
from storage.db import Database, create_database, drop_database, migrate
from storage.models import User

USERS = 1_000
ITEMS = 5_000
TYPES = ("view", "click", "add_to_cart", "purchase", "like")


@dataclass
class Result:
    backend: str
    operation: str
    rows: int
    seconds: float
    cpu_seconds: float  # this process only: the PostgreSQL server's work is not in it
    peak_rss_mb: float | None = None  # of the importing child process (part "files")

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


async def _catalogue(database: Database) -> tuple[uuid.UUID, list[uuid.UUID], list[uuid.UUID]]:
    async with database.session() as session:
        tenant = await repo.create_tenant(session=session, name="Bench", domain="bench.test")
        user_ids = [uuid.uuid4() for _ in range(USERS)]
        users = [
            {
                "id": uid,
                "tenant_id": tenant.id,
                "email": f"u{i}@bench.test",
                "username": f"u{i}",
                "password_hash": "-",
                "role": "user",
                "preferences": {},
                "is_active": True,
                "created_at": datetime.now(UTC),
            }
            for i, uid in enumerate(user_ids)
        ]
        await session.execute(insert(User), users)
        items = await repo.bulk_upsert_items(
            session=session,
            tenant_id=tenant.id,
            rows=[{"external_id": f"i{i}", "title": f"Item {i}"} for i in range(ITEMS)],
        )
    return tenant.id, user_ids, list(items.values())


def _interactions(rows: int, users: list[uuid.UUID], items: list[uuid.UUID]) -> list[dict]:
    rng = np.random.default_rng(7)
    user_index = rng.integers(len(users), size=rows)
    item_index = rng.zipf(1.3, size=rows) % len(items)  # popularity is long-tailed
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        {
            "user_id": users[u],
            "item_id": items[i],
            "interaction_type": TYPES[n % len(TYPES)],
            "value": 1.0,
            "created_at": start + timedelta(seconds=n),
        }
        for n, (u, i) in enumerate(zip(user_index.tolist(), item_index.tolist(), strict=True))
    ]


def _elapsed(started: float, cpu: float) -> tuple[float, float]:
    return time.perf_counter() - started, time.process_time() - cpu


async def _run_backend(backend: str, url: str, rows: int) -> list[Result]:
    await create_database(url)
    try:
        await migrate(url)
        database = Database(url)
        try:
            tenant_id, users, items = await _catalogue(database)
            payload = _interactions(rows, users, items)
            started, cpu = time.perf_counter(), time.process_time()
            async with database.session() as session:
                written = await repo.bulk_insert_interactions(
                    session=session, tenant_id=tenant_id, rows=payload
                )
            ingest = Result(backend, "bulk insert", written, *_elapsed(started, cpu))
            started, cpu = time.perf_counter(), time.process_time()
            async with database.session() as session:
                loaded = await repo.load_interactions(session=session, tenant_id=tenant_id)
            load = Result(backend, "load", len(loaded), *_elapsed(started, cpu))
            assert len(loaded) == rows, f"{backend}: wrote {rows}, read back {len(loaded)}"
            return [ingest, load]
        finally:
            await database.dispose()
    finally:
        await drop_database(url)


FILE_USERS = 20_000
FILE_ITEMS = 10_000
_GENERATE_CHUNK = 100_000


def _generate_files(directory: Path, rows: int) -> dict[str, Path]:
    """items.csv, events.csv and events.parquet with ``rows`` generated interactions, written
    chunk by chunk (so the generator's memory is not the importer's)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    items = pa.table(
        {
            "external_id": [f"sku-{i}" for i in range(FILE_ITEMS)],
            "title": [f"Product {i}" for i in range(FILE_ITEMS)],
            "category": [f"c{i % 20}" for i in range(FILE_ITEMS)],
        }
    )
    paths = {
        "items": directory / "items.csv",
        "csv": directory / "events.csv",
        "parquet": directory / "events.parquet",
    }
    pacsv.write_csv(items, paths["items"])
    rng = np.random.default_rng(11)
    start = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
    schema = pa.schema(
        [
            ("user", pa.string()),
            ("item", pa.string()),
            ("type", pa.string()),
            ("value", pa.float64()),
            ("time", pa.timestamp("s", tz="UTC")),
        ]
    )
    with (
        pq.ParquetWriter(paths["parquet"], schema) as parquet,
        pacsv.CSVWriter(paths["csv"], schema) as csv_out,
    ):
        for offset in range(0, rows, _GENERATE_CHUNK):
            size = min(_GENERATE_CHUNK, rows - offset)
            users = rng.integers(FILE_USERS, size=size)
            item_index = rng.zipf(1.3, size=size) % FILE_ITEMS
            chunk = pa.table(
                {
                    "user": [f"cust-{u}" for u in users.tolist()],
                    "item": [f"sku-{i}" for i in item_index.tolist()],
                    "type": [TYPES[n % len(TYPES)] for n in range(offset, offset + size)],
                    "value": np.ones(size),
                    # one event per second: no two rows share (user, item, type, time)
                    "time": pa.array(np.arange(start + offset, start + offset + size), pa.int64())
                    .cast(pa.timestamp("s"))
                    .cast(pa.timestamp("s", tz="UTC")),
                },
                schema=schema,
            )
            parquet.write_table(chunk)
            csv_out.write_table(chunk)
    return paths


def _recserve(url: str, data_dir: Path, *args: str) -> tuple[float, float, float]:
    """Run ``recserve *args`` on ``url``; (wall seconds, cpu seconds, peak RSS MB) of it."""
    executable = Path(sys.executable).parent / "recserve"
    env = {**os.environ, "RECSERVE_DATABASE_URL": url, "RECSERVE_DATA_DIR": str(data_dir)}
    log = data_dir / "recserve.log"
    started = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen([str(executable), *args], env=env, stdout=out, stderr=out)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"recserve {' '.join(args)} failed:\n{log.read_text()[-3000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # KiB on Linux


async def _run_files(backend: str, url: str, rows: int) -> list[Result]:
    await create_database(url)
    directory = Path(tempfile.mkdtemp(prefix="recserve-files-"))
    try:
        await migrate(url)
        paths = _generate_files(directory, rows)
        results = []
        runs = [
            ("csv import", "files-csv.test", paths["csv"]),
            ("csv again", "files-csv.test", paths["csv"]),
            ("parquet import", "files-parquet.test", paths["parquet"]),
        ]
        for operation, domain, events in runs:
            if operation != "csv again":
                _recserve(url, directory, "tenant", "create", "--domain", domain)
            seconds, cpu, rss = _recserve(
                url, directory, "ingest", "file", "--tenant", domain,
                "--items", str(paths["items"]), "--interactions", str(events),
            )  # fmt: skip
            results.append(Result(backend, operation, rows, seconds, cpu, rss))
        database = Database(url)
        try:
            async with database.session() as session:
                for domain in ("files-csv.test", "files-parquet.test"):
                    tenant = await repo.get_tenant_by_domain(session=session, domain=domain)
                    stored = await repo.count_interactions(session=session, tenant_id=tenant.id)
                    assert stored == rows, f"{backend} {domain}: {stored} stored, not {rows}"
        finally:
            await database.dispose()
        return results
    finally:
        await drop_database(url)
        shutil.rmtree(directory)


def _print_table(results: list[Result]) -> None:
    header = (
        f"{'backend':<12}{'operation':<16}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'cpu s':>8}"
        f"{'peak RSS MB':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        rss = f"{r.peak_rss_mb:>13,.0f}" if r.peak_rss_mb is not None else f"{'-':>13}"
        print(
            f"{r.backend:<12}{r.operation:<16}{r.rows:>10}{r.seconds:>10.2f}"
            f"{r.rows_per_second:>12,.0f}{r.cpu_seconds:>8.2f}{rss}"
        )


async def _main(
    rows: int,
    postgres: str | None,
    parts: set[str] | None = None,
    backends: set[str] | None = None,
) -> list[Result]:
    parts = parts or {"bulk", "files"}
    backends = backends or {"sqlite", "postgresql"}
    targets = [("sqlite", f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/ingest.db")]
    if postgres:
        name = f"recserve_bench_{uuid.uuid4().hex[:10]}"
        url = make_url(postgres).set(database=name).render_as_string(hide_password=False)
        targets.append(("postgresql", url))
    results: list[Result] = []
    for backend, url in targets:
        if backend not in backends:
            continue
        if "bulk" in parts:
            results.extend(await _run_backend(backend, url, rows))
        if "files" in parts:
            results.extend(
                await _run_files(
                    backend,
                    f"{url.removesuffix('.db')}-files.db"
                    if backend == "sqlite"
                    else f"{url}_files",
                    rows,
                )
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--postgres", "--database-url", default=os.environ.get("RECSERVE_TEST_POSTGRES_URL")
    )
    parser.add_argument("--parts", default="bulk,files", help="bulk, files or both")
    parser.add_argument("--backends", default="sqlite,postgresql", help="which of the two run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    backends = {name.strip() for name in args.backends.split(",") if name.strip()}
    results = asyncio.run(_main(args.rows, args.postgres, parts, backends))
    _print_table(results)
    if args.json:
        records = [{**asdict(r), "rows_per_second": r.rows_per_second} for r in results]
        args.json.write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
