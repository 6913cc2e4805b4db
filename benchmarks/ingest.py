"""Bulk-ingest benchmark: 100k interactions into each relational backend.

    python -m benchmarks.ingest [--rows 100000] [--postgres URL] [--json OUT]

SQLite always runs (a temp file); PostgreSQL runs when ``--postgres`` or
``RECSERVE_TEST_POSTGRES_URL`` names a server, in a fresh database dropped afterwards.
Timed: ``bulk_insert_interactions`` plus the commit, and reading them back with
``load_interactions`` (the training path).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


def _print_table(results: list[Result]) -> None:
    header = (
        f"{'backend':<12}{'operation':<14}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'cpu s':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.backend:<12}{r.operation:<14}{r.rows:>10}{r.seconds:>10.2f}"
            f"{r.rows_per_second:>12,.0f}{r.cpu_seconds:>8.2f}"
        )


async def _main(rows: int, postgres: str | None) -> list[Result]:
    targets = [("sqlite", f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/ingest.db")]
    if postgres:
        name = f"recserve_bench_{uuid.uuid4().hex[:10]}"
        url = make_url(postgres).set(database=name).render_as_string(hide_password=False)
        targets.append(("postgresql", url))
    results: list[Result] = []
    for backend, url in targets:
        results.extend(await _run_backend(backend, url, rows))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres", default=os.environ.get("RECSERVE_TEST_POSTGRES_URL"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = asyncio.run(_main(args.rows, args.postgres))
    _print_table(results)
    if args.json:
        records = [{**asdict(r), "rows_per_second": r.rows_per_second} for r in results]
        args.json.write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
