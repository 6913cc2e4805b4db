"""Importing a tenant's own files (CSV, JSON Lines, Parquet) and exporting them back."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.export import export_tenant
from ingest.files import (
    ColumnMap,
    ImportFileError,
    ImportReport,
    import_files,
)
from storage import repositories as repo
from storage.db import Database
from storage.rating_scale import RatingScale
from tests.storage.sql_support import BACKENDS, migrated_database, unique

ITEMS_CSV = """sku,name,cat,tags,metadata
a,Apple,fruit,red|sweet,"{""origin"": ""NZ""}"
b,Banana,fruit,,
c,Carrot,veg,orange,
"""
EVENTS_CSV = """customer_id,sku,event,qty,ts
u1,a,view,1,1700000000
u1,b,purchase,2,2024-01-02T03:04:05Z
u2,c,click,,1700000100.5
alice@shop.example,a,like,1,2024-01-03T00:00:00+01:00
"""
MAPPING = ["user=customer_id,item=sku,type=event,value=qty,time=ts", "external_id=sku,title=name"]
MAPPING_ITEMS = ["category=cat"]


@pytest.fixture(scope="module", params=BACKENDS)
async def database(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    async with migrated_database(request.param, request) as database:
        yield database


async def _tenant(database: Database) -> uuid.UUID:
    async with database.session() as session:
        tenant = await repo.create_tenant(
            session=session, name="Import", domain=unique("import") + ".test"
        )
    return tenant.id


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def _state(database: Database, tenant_id: uuid.UUID) -> dict[str, Any]:
    """The tenant's data by its own keys (e-mails, external ids), order-free."""
    async with database.session() as session:
        items = await repo.list_items(
            session=session, tenant_id=tenant_id, limit=1000, include_inactive=True
        )
        by_item = {item.id: item.external_id for item in items}
        users = await repo.list_users(session=session, tenant_id=tenant_id, limit=1000)
        by_user = {user.id: user.email for user in users}
        events = await repo.load_interactions(session=session, tenant_id=tenant_id)
        ratings = await repo.load_ratings(session=session, tenant_id=tenant_id)
    rows = zip(
        events.user_ids, events.item_ids, events.interaction_types, events.values,
        events.created_at, strict=True,
    )  # fmt: skip
    return {
        "items": sorted(
            (i.external_id, i.title, i.category, tuple(i.tags), json.dumps(i.item_metadata))
            + (() if i.is_active else ("deleted",))
            for i in items
        ),
        "users": sorted(by_user.values()),
        "interactions": sorted(
            (by_user[u], by_item[i], kind, value, at) for u, i, kind, value, at in rows
        ),
        "ratings": sorted((by_user[u], by_item[i], r, at) for u, i, r, at in ratings),
    }


async def _import_csv(
    database: Database, tenant_id: uuid.UUID, tmp_path: Path, events: str = EVENTS_CSV, **kw: Any
) -> ImportReport:
    return await import_files(
        database,
        tenant_id,
        items=_write(tmp_path / "items.csv", ITEMS_CSV),
        interactions=_write(tmp_path / "events.csv", events),
        columns=ColumnMap([*MAPPING, *MAPPING_ITEMS]),
        **kw,
    )


async def test_csv_with_a_column_mapping(database: Database, tmp_path: Path) -> None:
    tenant_id = await _tenant(database)
    report = await _import_csv(database, tenant_id, tmp_path)
    assert (report.items, report.interactions, report.bad_count) == (3, 4, 0)
    state = await _state(database, tenant_id)
    assert state["items"][0] == ("a", "Apple", "fruit", ("red", "sweet"), '{"origin": "NZ"}')
    # Own ids become placeholder e-mails; an e-mail is the user's own.
    assert state["users"] == ["alice@shop.example", "u1@imported.recserve", "u2@imported.recserve"]
    assert state["interactions"] == [
        ("alice@shop.example", "a", "like", 1.0, datetime(2024, 1, 2, 23, tzinfo=UTC)),
        ("u1@imported.recserve", "a", "view", 1.0, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("u1@imported.recserve", "b", "purchase", 2.0, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        (
            "u2@imported.recserve", "c", "click", 1.0,
            datetime(2023, 11, 14, 22, 15, 0, 500000, tzinfo=UTC),
        ),
    ]  # fmt: skip


async def test_reimport_adds_nothing(database: Database, tmp_path: Path) -> None:
    tenant_id = await _tenant(database)
    await _import_csv(database, tenant_id, tmp_path)
    before = await _state(database, tenant_id)
    again = await _import_csv(database, tenant_id, tmp_path)
    assert (again.interactions, again.duplicates) == (0, 4)
    assert await _state(database, tenant_id) == before
    # A repeated event inside one file is one event; a new one still goes in.
    more = EVENTS_CSV + "u1,a,view,1,1700000000\nu1,a,view,1,1700000001\n"
    report = await _import_csv(database, tenant_id, tmp_path, more)
    assert (report.interactions, report.duplicates) == (1, 5)


async def test_bad_rows_are_reported_and_the_good_ones_imported(
    database: Database, tmp_path: Path
) -> None:
    tenant_id = await _tenant(database)
    events = (
        "customer_id,sku,event,qty,ts\n"
        "u1,a,view,1,1700000000\n"  # line 2: good
        "u1,zz,view,1,1700000000\n"  # 3: unknown item
        "u2,a,view,abc,1700000000\n"  # 4: value
        "u2,a,view,1\n"  # 5: a field short
        "u3,a,view,1,\n"  # 6: no time
        "u3,a,view,1,yesterday\n"  # 7: unreadable time
        ",a,view,1,1700000000\n"  # 8: no user
        f"u4,a,{'x' * 40},1,1700000000\n"  # 9: type too long
        "u5,b,click,3,1700000000\n"  # 10: good
    )
    report = await _import_csv(database, tenant_id, tmp_path, events)
    assert report.interactions == 2
    assert [(bad.file, bad.line) for bad in report.bad_rows] == [
        ("events.csv", line) for line in range(3, 10)
    ]
    reasons = [bad.reason for bad in report.bad_rows]
    assert reasons[0] == "unknown item 'zz'"
    assert "value must be a number" in reasons[1] and "expected 5 fields" in reasons[2]
    assert reasons[3] == "missing time" and "ISO-8601" in reasons[4]
    assert reasons[5] == "missing user" and "type longer than 32" in reasons[6]
    state = await _state(database, tenant_id)
    assert [row[:3] for row in state["interactions"]] == [
        ("u1@imported.recserve", "a", "view"),
        ("u5@imported.recserve", "b", "click"),
    ]


async def test_strict_imports_nothing_when_any_row_is_bad(
    database: Database, tmp_path: Path
) -> None:
    tenant_id = await _tenant(database)
    # Unreadable rows are found by the validation pass, before any write.
    bad_value = EVENTS_CSV + "u9,a,view,lots,1700000000\n"
    report = await _import_csv(database, tenant_id, tmp_path, bad_value, strict=True)
    assert report.strict_rejected and report.bad_rows[0].line == 6
    assert report.items == report.interactions == 0
    # An unknown item is found only against the database: the transaction is undone.
    unknown = EVENTS_CSV + "u9,nope,view,1,1700000000\n"
    report = await _import_csv(database, tenant_id, tmp_path, unknown, strict=True)
    assert report.strict_rejected and report.bad_rows[0].reason == "unknown item 'nope'"
    assert await _state(database, tenant_id) == {
        "items": [], "users": [], "interactions": [], "ratings": []
    }  # fmt: skip
    report = await _import_csv(database, tenant_id, tmp_path, strict=True)
    assert not report.strict_rejected and report.interactions == 4


async def test_jsonl_and_parquet_import_like_csv(database: Database, tmp_path: Path) -> None:
    from_csv = await _tenant(database)
    await _import_csv(database, from_csv, tmp_path)
    expected = await _state(database, from_csv)

    items = [
        {"sku": "a", "name": "Apple", "cat": "fruit", "tags": ["red", "sweet"],
         "metadata": {"origin": "NZ"}},
        {"sku": "b", "name": "Banana", "cat": "fruit"},
        {"sku": "c", "name": "Carrot", "cat": "veg", "tags": ["orange"]},
    ]  # fmt: skip
    events = [
        {"customer_id": "u1", "sku": "a", "event": "view", "qty": 1, "ts": 1700000000},
        {"customer_id": "u1", "sku": "b", "event": "purchase", "qty": 2,
         "ts": "2024-01-02T03:04:05Z"},
        {"customer_id": "u2", "sku": "c", "event": "click", "ts": 1700000100.5},
        {"customer_id": "alice@shop.example", "sku": "a", "event": "like",
         "ts": "2024-01-03T00:00:00+01:00"},
    ]  # fmt: skip
    jsonl = tmp_path / "jsonl"
    jsonl.mkdir()
    (jsonl / "items.jsonl").write_text("\n".join(json.dumps(row) for row in items) + "\n")
    lines = [json.dumps(row) for row in events]
    (jsonl / "events.jsonl").write_text("\n".join([*lines, "", "[1, 2]", "{oops"]) + "\n")
    from_jsonl = await _tenant(database)
    columns = ColumnMap([*MAPPING, *MAPPING_ITEMS])
    report = await import_files(
        database, from_jsonl, items=jsonl / "items.jsonl",
        interactions=jsonl / "events.jsonl", columns=columns,
    )  # fmt: skip
    assert [(bad.line, bad.reason) for bad in report.bad_rows] == [
        (6, "not a JSON object"),
        (7, "not JSON: Expecting property name enclosed in double quotes"),
    ]
    assert await _state(database, from_jsonl) == expected

    parquet = tmp_path / "parquet"
    parquet.mkdir()
    item_table = pa.Table.from_pylist(
        [{**row, "metadata": json.dumps(row.get("metadata", {}))} for row in items]
    )
    pq.write_table(item_table, parquet / "items.parquet")
    times = [
        datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2023, 11, 14, 22, 15, 0, 500000, tzinfo=UTC),
        datetime(2024, 1, 2, 23, tzinfo=UTC),
    ]
    event_table = pa.table(
        {
            "customer_id": [row["customer_id"] for row in events],
            "sku": [row["sku"] for row in events],
            "event": [row["event"] for row in events],
            "qty": pa.array([row.get("qty") for row in events], pa.float64()),
            "ts": pa.array(times, pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(event_table, parquet / "events.parquet", row_group_size=2)
    from_parquet = await _tenant(database)
    report = await import_files(
        database, from_parquet, items=parquet / "items.parquet",
        interactions=parquet / "events.parquet", columns=columns,
    )  # fmt: skip
    assert report.bad_count == 0
    assert await _state(database, from_parquet) == expected


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
async def test_export_then_import_into_another_tenant_round_trips(
    database: Database, tmp_path: Path, file_format: str
) -> None:
    source = await _tenant(database)
    await _import_csv(database, source, tmp_path)
    async with database.session() as session:
        items = await repo.list_items(session=session, tenant_id=source)
        registered = await repo.create_user(
            session=session, tenant_id=source, email="bob@shop.example", username="bob",
            password_hash="argon2-secret-hash",
        )  # fmt: skip
        await repo.rate_item(
            session=session, tenant_id=source, user_id=registered.id, item_id=items[1].id,
            rating=4.5,
        )  # fmt: skip
        await repo.delete_item(session=session, tenant_id=source, item_id=items[2].id)
    out = tmp_path / "export"
    counts = await export_tenant(database, source, out, file_format=file_format)
    assert (counts.items, counts.users, counts.interactions, counts.ratings) == (3, 4, 4, 1)
    exported = b"".join(path.read_bytes() for path in out.iterdir())
    assert b"argon2-secret-hash" not in exported

    target = await _tenant(database)
    report = await import_files(
        database, target, **{kind: out / f"{kind}.{file_format}" for kind in
                             ("items", "users", "interactions", "ratings")},
    )  # fmt: skip
    assert report.bad_count == 0 and report.ratings == 1
    assert await _state(database, target) == await _state(database, source)
    async with database.session() as session:
        gone = await repo.item_ids_by_external_ids(
            session=session, tenant_id=target, external_ids=["c"]
        )
        carrot = await repo.get_item(
            session=session, tenant_id=target, item_id=gone["c"], include_inactive=True
        )
        bob = await repo.get_user_by_email(
            session=session, tenant_id=target, email="bob@shop.example"
        )
    assert carrot.is_active is False  # deleted items stay deleted
    assert bob.password_hash == repo.NO_PASSWORD  # imported users have no password
    # And importing the export again adds nothing.
    again = await import_files(database, target, interactions=out / f"interactions.{file_format}")
    assert (again.interactions, again.duplicates) == (0, 4)


async def test_file_problems_stop_before_any_write(database: Database, tmp_path: Path) -> None:
    tenant_id = await _tenant(database)
    items = _write(tmp_path / "items.csv", ITEMS_CSV)
    events = _write(tmp_path / "events.csv", EVENTS_CSV)
    with pytest.raises(ImportFileError, match=r"events\.csv has no column item, time, user"):
        # The items file is fine, but nothing is written when the events file is not.
        await import_files(
            database, tenant_id, items=items, interactions=events,
            columns=ColumnMap(["external_id=sku"]),
        )  # fmt: skip
    with pytest.raises(ImportFileError, match="unknown format"):
        await import_files(database, tenant_id, items=_write(tmp_path / "items.xlsx", "x"))
    with pytest.raises(ImportFileError, match="not a readable Parquet"):
        await import_files(database, tenant_id, items=_write(tmp_path / "items.parquet", "x"))
    assert (await _state(database, tenant_id))["items"] == []


def test_column_maps() -> None:
    columns = ColumnMap(["user=customer_id, time=ts", "ratings.time=rated_at"])
    assert columns.column("interactions", "user") == "customer_id"
    assert columns.column("ratings", "user") == "customer_id"
    assert columns.column("interactions", "time") == "ts"
    assert columns.column("ratings", "time") == "rated_at"
    assert columns.column("items", "title") == "title"  # the default: the field's name
    for bad in ("user", "colour=c", "ratings.title=t", "user="):
        with pytest.raises(ImportFileError, match="bad mapping"):
            ColumnMap([bad])


async def test_ingesting_a_dataset_twice_does_not_duplicate_its_events(
    database: Database,
) -> None:
    """``recserve ingest synthetic`` / ``movielens`` share the write step: a re-run used to
    insert every interaction a second time."""
    from ingest.writer import ingest_dataset
    from training.datasets import generate_catalogue

    tenant_id = await _tenant(database)
    catalogue = generate_catalogue(30, 20, 3, 5, 7)
    first = await ingest_dataset(
        database, tenant_id, items=catalogue.items, interactions=catalogue.interactions
    )
    second = await ingest_dataset(
        database, tenant_id, items=catalogue.items, interactions=catalogue.interactions
    )
    assert first.interactions == len(catalogue.interactions) and second.interactions == 0
    async with database.session() as session:
        stored = await repo.count_interactions(session=session, tenant_id=tenant_id)
    assert stored == len(catalogue.interactions)


async def test_a_streamed_tenant_is_written_chunk_by_chunk_and_once(database: Database) -> None:
    """``recserve ingest synthetic --interactions N``: chunks of whole users, the exact total,
    and a re-run (or a duplicated event inside a chunk) writes nothing twice."""
    from ingest.writer import ingest_stream
    from training.datasets.synthetic import StreamSpec, stream_events, stream_items

    spec = StreamSpec(users=40, items=25, interactions=900, clusters=3, seed=5)
    chunks = list(stream_events(spec, chunk_rows=200))
    assert sum(map(len, chunks)) == 900 and all(len(chunk) <= 200 for chunk in chunks[1:])
    assert not {e[0] for e in chunks[0]} & {e[0] for e in chunks[1]}  # users never split
    assert chunks == list(stream_events(spec, chunk_rows=200))  # deterministic
    tenant_id = await _tenant(database)
    doubled = iter([chunks[0] + chunks[0][:10], *chunks[1:]])
    first = await ingest_stream(
        database, tenant_id, items=stream_items(spec), chunks=doubled, total=900
    )
    again = await ingest_stream(
        database, tenant_id, items=stream_items(spec), chunks=iter(chunks), total=900
    )
    assert (first.items, first.interactions, again.interactions) == (25, 900, 0)
    async with database.session() as session:
        assert await repo.count_interactions(session=session, tenant_id=tenant_id) == 900


def test_item_bounds_are_the_apis() -> None:
    from graph_api import bounds
    from ingest import files as ingest_files

    for name in ("DESCRIPTION_CHARS", "TAGS", "TAG_CHARS", "METADATA_BYTES", "JSON_DEPTH"):
        assert getattr(ingest_files, name) == getattr(bounds, name), name


async def test_items_beyond_the_apis_bounds_are_bad_rows(
    database: Database, tmp_path: Path
) -> None:
    tenant_id = await _tenant(database)
    rows = [
        {"external_id": "ok", "title": "Fine", "tags": ["a"], "metadata": {"k": 1}},
        {"external_id": "long", "description": "x" * 20_001},
        {"external_id": "tags", "tags": [f"t{n}" for n in range(51)]},
        {"external_id": "meta", "metadata": {"blob": "x" * 17_000}},
        {"external_id": "deep", "metadata": _nested(17)},
        {"external_id": "nan", "metadata": '{"x": NaN}'},
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    report = await import_files(database, tenant_id, items=path)
    assert report.items == 1
    assert [bad.line for bad in report.bad_rows] == [2, 3, 4, 5, 6]
    assert "description longer than 20000" in report.bad_rows[0].reason
    assert "at most 50 tags" in report.bad_rows[1].reason
    assert "metadata must be at most 16384 bytes" in report.bad_rows[2].reason
    assert "16 levels" in report.bad_rows[3].reason
    assert "finite numbers" in report.bad_rows[4].reason


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def test_text_that_is_not_utf8(database: Database, tmp_path: Path) -> None:
    tenant_id = await _tenant(database)
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_bytes(b'{"external_id": "a"}\n{"external_id": "\xff"}\n{"external_id": "b"}\n')
    report = await import_files(database, tenant_id, items=jsonl)
    assert report.items == 2 and [(b.line, b.reason) for b in report.bad_rows] == [
        (2, "not UTF-8 text")
    ]
    csv_path = tmp_path / "items.csv"
    csv_path.write_bytes(b"external_id\nc\n\xff\n")
    with pytest.raises(ImportFileError, match=r"items\.csv: not UTF-8 text"):
        await import_files(database, tenant_id, items=csv_path)
    # Further in, past the first read of the file: the file stops there, no trace.
    csv_path.write_bytes(b"external_id\n" + b"".join(b"i%d\n" % n for n in range(5000)) + b"\xff\n")
    with pytest.raises(ImportFileError, match=r"not UTF-8 text \(somewhere after line \d+\)"):
        await import_files(database, tenant_id, items=csv_path)


async def test_a_failed_batch_stops_the_import_and_says_what_stayed(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest import files as ingest_files
    from storage.errors import Unavailable

    monkeypatch.setattr(ingest_files, "BATCH_ROWS", 2)
    monkeypatch.setattr(ingest_files, "COLUMN_BATCH_FACTOR", 1)
    real = ingest_files.write_events
    calls = 0

    async def failing_second_batch(*args: Any, **kwargs: Any) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Unavailable("database went away")
        return await real(*args, **kwargs)

    monkeypatch.setattr(ingest_files, "write_events", failing_second_batch)
    tenant_id = await _tenant(database)
    with pytest.raises(ingest_files.ImportFailed, match=r"lines 4\.\.5 was not written") as failed:
        await _import_csv(database, tenant_id, tmp_path)
    assert "earlier batches were" in str(failed.value)
    assert len((await _state(database, tenant_id))["interactions"]) == 2  # the first batch

    calls = 0
    other = await _tenant(database)
    with pytest.raises(ingest_files.ImportFailed, match="nothing was imported"):
        await _import_csv(database, other, tmp_path, strict=True)
    assert await _state(database, other) == {
        "items": [], "users": [], "interactions": [], "ratings": []
    }  # fmt: skip


PARITY_CSV = (
    "user,item,type,value,time\n"
    "u1,a,view,1,1700000000\n"
    "u1,b,,2,1700000001.25\n"
    "u2,c,click,,2024-01-02T03:04:05Z\n"
    "\n"
    "u2,a,like,1,2024-01-03T00:00:00+01:00\n"
    "u3,b\n"
    "u3,zzz,view,1,1700000002\n"
    "u3,a,view,abc,1700000003\n"
    ",a,view,1,1700000004\n"
    "u4,a,view,1,2024-01-05 06:07:08\n"
    "u4,b,view,1,2024-01-05\n"
    "u5,c,view,1,1700000005\n"
    "u5,c,view,1,1700000005\n"
    ",,,,\n"
    "u6,a,view,1,not-a-time\n"
    "u6,a,purchase,3,1700000006\n"
    "u7,b,view,1e0,1700000007\n"
    "u7,c,view,1,1700000008\n"
    "u7,a,view,1,1700000009\n"
    '"u8","a","view","1","1700000010"\n'
    '"u""9",b,"",,1700000011\n'
)


async def test_columnar_csv_path_matches_the_row_path(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unquoted interactions CSV is read as columns (``ingest.csv_columns``): the
    same rows written, the same bad rows with the same lines and reasons, as row by row."""
    from ingest import files as ingest_files

    monkeypatch.setattr(ingest_files, "BATCH_ROWS", 3)
    items = _write(tmp_path / "items.csv", "external_id,title\na,A\nb,B\nc,C\n")
    events = _write(tmp_path / "events.csv", PARITY_CSV)
    columnar_batches = 0
    write_event_batch = ingest_files._write_event_batch

    async def counting(*args: Any) -> None:
        nonlocal columnar_batches
        columnar_batches += 1
        await write_event_batch(*args)

    monkeypatch.setattr(ingest_files, "_write_event_batch", counting)
    results = []
    for row_path in (True, False):
        if row_path:
            monkeypatch.setattr(ingest_files, "scan", lambda path: None)
        else:
            monkeypatch.undo()
            monkeypatch.setattr(ingest_files, "BATCH_ROWS", 3)
            monkeypatch.setattr(ingest_files, "_write_event_batch", counting)
        tenant_id = await _tenant(database)
        report = await import_files(database, tenant_id, items=items, interactions=events)
        results.append((report, await _state(database, tenant_id)))
        assert (columnar_batches > 0) is not row_path
    (rows_report, rows_state), (columns_report, columns_state) = results
    assert [(b.line, b.reason) for b in columns_report.bad_rows] == [
        (b.line, b.reason) for b in rows_report.bad_rows
    ]
    assert [b.line for b in rows_report.bad_rows] == [7, 8, 9, 10, 15, 16]
    assert (
        (columns_report.interactions, columns_report.duplicates)
        == (
            rows_report.interactions,
            rows_report.duplicates,
        )
        == (13, 1)
    )
    assert columns_state == rows_state


@pytest.mark.parametrize("block", [1, 2, 3, 7, 1 << 20])
def test_the_scan_finds_blank_lines_across_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    from ingest import csv_columns

    monkeypatch.setattr(csv_columns, "SCAN_BYTES", block)
    text = "h,x\n\na,1\r\n\r\nb,2\n\n\nc,3\n\n"
    path = _write(tmp_path / "events.csv", text)
    path.write_bytes(text.encode())
    expected = [n for n, line in enumerate(text.split("\n"), 1) if line in ("", "\r")][:-1]
    assert csv_columns.scan(path) == expected == [2, 4, 6, 7, 9]
    path.write_bytes(b'h,x\n"a","1"\n\n"b ""c""",2\n')  # quoted, doubled quotes: one line each
    assert csv_columns.scan(path) == [3]
    path.write_bytes(b'h,x\n"a\nb",1\n')  # a value over two lines
    assert csv_columns.scan(path) is None


async def test_columnar_path_stops_at_text_that_is_not_utf8(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest import csv_columns

    monkeypatch.setattr(csv_columns, "BLOCK_BYTES", 4096)
    tenant_id = await _tenant(database)
    items = _write(tmp_path / "items.csv", "external_id,title\na,A\n")
    events = tmp_path / "events.csv"
    rows = b"".join(b"u%d,a,view,1,%d\n" % (n, 1700000000 + n) for n in range(2000))
    for body, after in ((rows + b"u,a,view,1,17\xff\n", r"\d{3,}"), (b"u,\xff,view,1,1\n", r"\d+")):
        events.write_bytes(b"user,item,type,value,time\n" + body)
        with pytest.raises(
            ImportFileError, match=rf"events\.csv: not UTF-8 text \(somewhere after line {after}\)"
        ):
            await import_files(database, tenant_id, items=items, interactions=events)


async def test_ratings_on_the_tenants_scale_are_normalised_once(
    database: Database, tmp_path: Path
) -> None:
    """A 0-10 file: every rating lands on the stored range; 11 is a bad row naming the scale;
    with --strict the file imports nothing."""
    tenant_id = await _tenant(database)
    items = _write(tmp_path / "items.csv", "external_id,title\na,A\nb,B\n")
    ratings = _write(
        tmp_path / "ratings.csv",
        "user,item,rating,time\nu1,a,0,1700000000\nu1,b,10,1700000000\nu2,a,7.5,1700000000\n"
        "u2,b,11,1700000000\n",
    )
    ten = RatingScale.parse("0:10")
    strict = await import_files(
        database, tenant_id, items=items, ratings=ratings, rating_scale=ten, strict=True
    )
    assert strict.strict_rejected and strict.ratings == 0
    report = await import_files(database, tenant_id, items=items, ratings=ratings, rating_scale=ten)
    assert report.ratings == 3
    [bad] = report.bad_rows
    assert (bad.line, bad.reason) == (5, "rating 11 is outside the tenant's rating scale 0:10")
    stored = sorted(row[2] for row in (await _state(database, tenant_id))["ratings"])
    assert stored == pytest.approx([0.5, 3.875, 5.0])
