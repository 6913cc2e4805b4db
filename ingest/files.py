"""Import a tenant's own data from files: CSV, JSON Lines or Parquet, streamed in batches.

Four kinds of file, each optional except that events need their items (in the items file or
already in the tenant). Columns are found by name; ``ColumnMap`` renames them. Defaults:

    items         external_id, title, description, category, tags, metadata, active
    users         user, username
    interactions  user, item, type, value, time
    ratings       user, item, rating, time

A ``user`` is the tenant's own id for a user (stored as ``<id>@imported.recserve``) or an
e-mail (kept as it is). ``time`` is unix seconds, ISO-8601 (no offset means UTC) or a Parquet
timestamp. Interactions default to type ``view`` and value 1.0; their time is required, since
(user, item, type, time) is what makes a re-import write nothing twice.

Each file is read one batch at a time (``csv``, ``json`` line by line, pyarrow's
``ParquetFile.iter_batches``), so its size never matters for memory. A bad row (missing or
malformed value, unknown item) is reported with its line (for Parquet: its 1-based row) and
reason. By default the good rows of each batch are written, one transaction per batch;
``strict`` first checks every file in a streaming pass and then imports everything in one
transaction, which is rolled back if a row turns out bad only against the database (an
unknown item): either way nothing is imported when any row is bad.
"""

from __future__ import annotations

import csv
import json
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from ingest.csv_columns import (
    ArrowInvalid,
    EventBatch,
    NotUtf8,
    csv_event_batches,
    scan,
)
from ingest.writer import (
    IdCache,
    InteractionEvent,
    Progress,
    RatingEvent,
    upsert_users,
    with_interaction_load,
    write_events,
)
from storage import repositories as repo
from storage.bounds import JSON_DEPTH, METADATA_BYTES, json_depth
from storage.db import Database
from storage.errors import InvalidData, StorageError
from storage.models import Item
from storage.rating_scale import STAR_SCALE, RatingScale
from storage.repositories._common import chunks
from storage.repositories.interactions import MAX_TYPE_LENGTH

T = TypeVar("T")
KINDS = ("items", "users", "interactions", "ratings")
FIELDS: dict[str, tuple[str, ...]] = {
    "items": ("external_id", "title", "description", "category", "tags", "metadata", "active"),
    "users": ("user", "username"),
    "interactions": ("user", "item", "type", "value", "time"),
    "ratings": ("user", "item", "rating", "time"),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "items": ("external_id",),
    "users": ("user",),
    "interactions": ("user", "item", "time"),
    "ratings": ("user", "item", "rating", "time"),
}
DEFAULT_TYPE = "view"
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
BATCH_ROWS = 20_000
# Columnar batches are larger: a batch's cost is mostly per distinct user and item, and a
# file's events name users in any order (100,000 rows of the benchmark's CSV: 20,000 users).
COLUMN_BATCH_FACTOR = 5
MAX_KEPT_BAD_ROWS = 1_000  # reported in full up to here; beyond, only counted
USER_KEY_CHARS = 255
_ITEM_CHARS = {name: Item.__table__.c[name].type.length for name in ("external_id", "title")}
_CATEGORY_CHARS = Item.__table__.c["category"].type.length
# The API's bounds on an item (graph_api/bounds.py; ingest may not import graph_api, and
# tests/ingest/test_files.py checks the two agree): an imported item can be served.
DESCRIPTION_CHARS = 20_000
TAGS = 50
TAG_CHARS = 100
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


class ImportFileError(InvalidData):
    """A whole file is unusable (unknown format, a required column missing)."""


class _RolledBack(Exception):
    """Raised inside the strict transaction to undo it."""


@dataclass(frozen=True)
class BadRow:
    file: str
    line: int
    reason: str


@dataclass
class ImportReport:
    items: int = 0
    users: int = 0
    interactions: int = 0
    ratings: int = 0
    duplicates: int = 0  # interactions the tenant already had: not written again
    bad_count: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)
    strict_rejected: bool = False

    def bad(self, row: BadRow) -> None:
        self.bad_count += 1
        if len(self.bad_rows) < MAX_KEPT_BAD_ROWS:
            self.bad_rows.append(row)


class ColumnMap:
    """Which source column holds each field. ``user=customer_id`` applies to every kind of
    file with a ``user`` field; ``ratings.user=rater`` to the ratings file only."""

    def __init__(self, spec: Sequence[str] = ()) -> None:
        self._map: dict[tuple[str | None, str], str] = {}
        for part in (p.strip() for text in spec for p in text.split(",")):
            if not part:
                continue
            target, sep, column = part.partition("=")
            kind, dot, name = target.strip().rpartition(".")
            kind_or_none = kind if dot else None
            known = FIELDS.get(kind_or_none, ()) if kind_or_none else _ALL_FIELDS
            if not sep or not column.strip() or name not in known:
                raise ImportFileError(
                    f"bad mapping {part!r}: use FIELD=COLUMN with FIELD one of "
                    f"{', '.join(sorted(_ALL_FIELDS))} (or KIND.FIELD, KIND one of "
                    f"{', '.join(KINDS)})"
                )
            self._map[(kind_or_none, name)] = column.strip()

    def column(self, kind: str, name: str) -> str:
        return self._map.get((kind, name)) or self._map.get((None, name)) or name


_ALL_FIELDS = frozenset(name for names in FIELDS.values() for name in names)


# ---------------------------------------------------------------- reading files


Record = tuple[int, Mapping[str, Any]]  # (line, {source column: value})
BadSink = Callable[[int, str], None]  # (line, reason)


def file_format(path: Path) -> str:
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise ImportFileError(f"{path.name}: unknown format (use {', '.join(sorted(FORMATS))})")
    return found


def _csv_records(
    path: Path, wanted: set[str], required: set[str], bad: BadSink
) -> Iterator[Record]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None) or []
        _check_header(path, header, required)
        positions = {name: index for index, name in enumerate(header) if name in wanted}
        width = len(header)
        for row in _decoded(path, reader, lambda: reader.line_num):
            if not row:
                continue  # a blank line
            if len(row) != width:
                bad(reader.line_num, f"expected {width} fields, found {len(row)}")
                continue
            yield reader.line_num, {name: row[index] for name, index in positions.items()}


def _jsonl_records(
    path: Path, wanted: set[str], required: set[str], bad: BadSink
) -> Iterator[Record]:
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
            except UnicodeDecodeError:
                bad(line, "not UTF-8 text")
                continue
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except ValueError as error:
                bad(line, f"not JSON: {error.msg}")
                continue
            if not isinstance(value, dict):
                bad(line, "not a JSON object")
                continue
            yield line, {name: value[name] for name in wanted if name in value}


def _parquet_records(
    path: Path, wanted: set[str], required: set[str], bad: BadSink
) -> Iterator[Record]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    _check_header(path, names, required)
    columns = [name for name in names if name in wanted]
    row = 0
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        for values in batch.to_pylist():
            row += 1
            yield row, values


def _decoded(path: Path, rows: Iterator[T], line: Callable[[], int]) -> Iterator[T]:
    """``rows`` of a text file; text that is not UTF-8 stops the file (CSV cannot resync)."""
    try:
        yield from rows
    except UnicodeDecodeError as error:
        raise ImportFileError(
            f"{path.name}: not UTF-8 text (somewhere after line {line()})"
        ) from error


def _check_header(path: Path, header: Sequence[str], required: set[str]) -> None:
    missing = sorted(required - set(header))
    if missing:
        raise ImportFileError(
            f"{path.name} has no column {', '.join(missing)} "
            f"(name the column with --map FIELD=COLUMN)"
        )


_READERS = {"csv": _csv_records, "jsonl": _jsonl_records, "parquet": _parquet_records}


def _rows_in(path: Path) -> int:
    """How many data rows the file has, for the progress bar (lines, for text formats)."""
    if file_format(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    count = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            count += block.count(b"\n")
    return max(count - (1 if file_format(path) == "csv" else 0), 0)


# ---------------------------------------------------------------- values


def _text(value: Any, name: str, max_chars: int | None = None, required: bool = True) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError(f"missing {name}")
        return None
    if isinstance(value, bool | dict | list):
        raise ValueError(f"{name} must be text")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a numeric id read as a float (JSON 7.0, a float Parquet column)
    text = str(value).strip()
    if max_chars is not None and len(text) > max_chars:
        raise ValueError(f"{name} longer than {max_chars} characters")
    return text


def _number(value: Any, name: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number")
    return number


def _time(value: Any) -> datetime:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("missing time")
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            return _time(float(value))
        except ValueError:
            pass
        try:
            return _time(datetime.fromisoformat(value.strip()))
        except ValueError:
            raise ValueError(f"time must be unix seconds or ISO-8601, got {value!r}") from None
    seconds = _number(value, "time")
    assert seconds is not None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"time out of range: {value!r}") from None


def _tags(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = value.split("|")  # CSV: tags separated by |
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise ValueError("tags must be a list of text (in CSV: separated by |)")
    tags = [tag.strip() for tag in value if tag.strip()]
    if len(tags) > TAGS or any(len(tag) > TAG_CHARS for tag in tags):
        raise ValueError(f"at most {TAGS} tags of at most {TAG_CHARS} characters")
    return tags


def _metadata(value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("metadata must be a JSON object") from None
    if not isinstance(value, dict):
        raise ValueError("metadata must be a JSON object")
    try:
        size = len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
    except ValueError:
        raise ValueError("metadata must contain only finite numbers") from None
    if size > METADATA_BYTES or json_depth(value) > JSON_DEPTH:
        raise ValueError(f"metadata must be at most {METADATA_BYTES} bytes, {JSON_DEPTH} levels")
    return value


def _flag(value: Any) -> bool:
    if value is None or value == "":
        return True
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"active must be true or false, got {value!r}")


# ---------------------------------------------------------------- rows per kind


def _item(get: Callable[[str], Any]) -> dict[str, Any]:
    external_id = _text(get("external_id"), "external_id", _ITEM_CHARS["external_id"])
    title = _text(get("title"), "title", _ITEM_CHARS["title"], required=False)
    return {
        "external_id": external_id,
        "title": title or external_id,
        "description": _text(get("description"), "description", DESCRIPTION_CHARS, False),
        "category": _text(get("category"), "category", _CATEGORY_CHARS, required=False),
        "tags": _tags(get("tags")),
        "item_metadata": _metadata(get("metadata")),
        "is_active": _flag(get("active")),
    }


def _user(get: Callable[[str], Any]) -> tuple[str, str | None]:
    key = _text(get("user"), "user", USER_KEY_CHARS)
    assert key is not None
    return key, _text(get("username"), "username", required=False)


def _interaction(get: Callable[[str], Any]) -> InteractionEvent:
    kind = _text(get("type"), "type", MAX_TYPE_LENGTH, required=False) or DEFAULT_TYPE
    return (
        str(_text(get("user"), "user", USER_KEY_CHARS)),
        str(_text(get("item"), "item", _ITEM_CHARS["external_id"])),
        kind,
        _number(get("value"), "value"),
        _time(get("time")),
    )


def _rating(get: Callable[[str], Any], scale: RatingScale = STAR_SCALE) -> RatingEvent:
    """A ratings row, its rating taken on the tenant's ``scale`` and stored normalised."""
    rating = _number(get("rating"), "rating")
    if rating is None:
        raise ValueError("missing rating")
    try:
        rating = scale.stored(rating)
    except InvalidData as error:
        raise ValueError(str(error)) from None
    return (
        str(_text(get("user"), "user", USER_KEY_CHARS)),
        str(_text(get("item"), "item", _ITEM_CHARS["external_id"])),
        rating,
        _time(get("time")),
    )


_PARSERS: dict[str, Callable[[Callable[[str], Any]], Any]] = {
    "items": _item,
    "users": _user,
    "interactions": _interaction,
    "ratings": _rating,
}


@dataclass
class _Source:
    kind: str
    path: Path
    columns: ColumnMap
    rating_scale: RatingScale = STAR_SCALE
    # Ids resolved by earlier batches of this file (one import, one transaction per batch:
    # what an earlier batch committed stays).
    users: IdCache = field(default_factory=IdCache)
    items: IdCache = field(default_factory=IdCache)

    def check_columns(self) -> None:
        """ImportFileError now, before any file is written, if a required column is absent
        (JSON Lines has no header: there a missing value is a bad row)."""
        required = {self.columns.column(self.kind, name) for name in REQUIRED[self.kind]}
        found = file_format(self.path)
        if found == "csv":
            with self.path.open(newline="", encoding="utf-8-sig") as handle:
                header = next(_decoded(self.path, csv.reader(handle), lambda: 0), None)
                _check_header(self.path, header or [], required)
        elif found == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                names = pq.ParquetFile(self.path).schema_arrow.names
            except pa.ArrowException as error:
                raise ImportFileError(f"{self.path.name}: not a readable Parquet file") from error
            _check_header(self.path, names, required)

    def batches(
        self, report: ImportReport
    ) -> Iterator[tuple[int, list[tuple[int, Any]] | EventBatch]]:
        """``(rows read, parsed rows [(line, row)])`` per batch; bad rows go to ``report``.
        Interactions from an unquoted CSV file come as an ``EventBatch`` where every row of
        the batch passes the checks (``ingest.csv_columns``)."""
        by_column = {self.columns.column(self.kind, name): name for name in FIELDS[self.kind]}
        required = {self.columns.column(self.kind, name) for name in REQUIRED[self.kind]}
        reader = _READERS[file_format(self.path)]
        parse = _PARSERS[self.kind]
        if self.kind == "ratings":
            parse = partial(_rating, scale=self.rating_scale)

        def bad(line: int, reason: str) -> None:
            report.bad(BadRow(self.path.name, line, reason))

        def parse_row(line: int, fields: Mapping[str, Any]) -> tuple[int, Any] | None:
            try:
                return line, parse(fields.get)
            except ValueError as error:
                bad(line, str(error))
                return None

        blank_lines = (
            scan(self.path)
            if self.kind == "interactions" and file_format(self.path) == "csv"
            else None
        )
        if blank_lines is not None:
            with self.path.open(newline="", encoding="utf-8-sig") as handle:
                header = next(_decoded(self.path, csv.reader(handle), lambda: 0), None) or []
            try:
                yield from csv_event_batches(
                    self.path,
                    blank_lines,
                    header,
                    {column: by_column[column] for column in header if column in by_column},
                    {
                        "user": USER_KEY_CHARS,
                        "item": _ITEM_CHARS["external_id"],
                        "type": MAX_TYPE_LENGTH,
                    },
                    DEFAULT_TYPE,
                    bad,
                    parse_row,
                    BATCH_ROWS * COLUMN_BATCH_FACTOR,
                )
            except (NotUtf8, ArrowInvalid) as error:
                raise ImportFileError(f"{self.path.name}: {error}") from error
            return
        for batch in chunks(reader(self.path, set(by_column), required, bad), BATCH_ROWS):
            parsed = []
            for line, values in batch:
                fields = {by_column[column]: value for column, value in values.items()}
                try:
                    parsed.append((line, parse(fields.get)))
                except ValueError as error:
                    bad(line, str(error))
            yield len(batch), parsed


def item_external_ids(path: Path, columns: ColumnMap | None = None) -> list[str]:
    """The external ids an items file names (bad rows left out), read before an import so a
    quota can be checked first. ImportFileError for an unusable file."""
    mapping = columns or ColumnMap()
    column = mapping.column("items", "external_id")
    source = _Source("items", path, mapping)
    source.check_columns()
    found: list[str] = []
    try:
        for _, values in _READERS[file_format(path)](path, {column}, {column}, lambda *_: None):
            value = values.get(column)
            if value is not None and str(value).strip():
                found.append(str(value).strip())
    except (NotUtf8, ArrowInvalid) as error:
        raise ImportFileError(f"{path.name}: {error}") from error
    return found


# ---------------------------------------------------------------- writing


class ImportFailed(InvalidData):
    """A batch could not be written; earlier batches stay (a re-run skips what they wrote)."""


OpenSession = Callable[[], AbstractAsyncContextManager[AsyncSession]]


async def import_files(
    database: Database,
    tenant_id: uuid.UUID,
    *,
    items: Path | None = None,
    users: Path | None = None,
    interactions: Path | None = None,
    ratings: Path | None = None,
    columns: ColumnMap | None = None,
    strict: bool = False,
    progress: Progress | None = None,
    rating_scale: RatingScale = STAR_SCALE,
) -> ImportReport:
    """Import the given files into the tenant, in the order items, users, interactions,
    ratings (events may name items of the same import), ratings on ``rating_scale`` (the
    tenant's). See the module docstring."""
    mapping = columns or ColumnMap()
    paths = {"items": items, "users": users, "interactions": interactions, "ratings": ratings}
    sources = [
        _Source(kind, path, mapping, rating_scale)
        for kind, path in paths.items()
        if path is not None
    ]
    for source in sources:  # an unknown format or missing column fails before any write
        source.check_columns()
    order = {source.path.name: index for index, source in enumerate(sources)}
    report = await _run(database, tenant_id, sources, strict, progress)
    report.bad_rows.sort(key=lambda bad: (order.get(bad.file, 0), bad.line))
    return report


async def _run(
    database: Database,
    tenant_id: uuid.UUID,
    sources: list[_Source],
    strict: bool,
    progress: Progress | None,
) -> ImportReport:
    if not strict:
        report = ImportReport()
        await _import(database.session, tenant_id, sources, report, progress, database=database)
        return report
    checked = ImportReport()
    for source in sources:  # the streaming validation pass: nothing is written
        total, done = _rows_in(source.path), 0
        for read, _rows in source.batches(checked):
            done += read
            if progress is not None:
                progress(f"check {source.kind}", done, max(total, done))
    if checked.bad_count:
        checked.strict_rejected = True
        return checked
    report = ImportReport()
    try:
        async with database.session() as session:

            @asynccontextmanager
            async def same_session() -> AsyncIterator[AsyncSession]:
                yield session

            await _import(
                same_session, tenant_id, sources, report, progress, "nothing was imported"
            )
            if report.bad_count:
                raise _RolledBack
    except _RolledBack:
        return ImportReport(
            bad_count=report.bad_count, bad_rows=report.bad_rows, strict_rejected=True
        )
    return report


async def _import(
    open_session: OpenSession,
    tenant_id: uuid.UUID,
    sources: list[_Source],
    report: ImportReport,
    progress: Progress | None,
    after_failure: str = "earlier batches were, and re-running the import skips them",
    database: Database | None = None,
) -> None:
    """Write the sources batch by batch. With ``database`` (batches in transactions of their
    own), the interactions of a tenant that has none yet are loaded in bulk
    (``with_interaction_load``)."""
    for source in sources:
        total = _rows_in(source.path)
        if source.kind in ("interactions", "ratings"):  # their items are written by now
            async with open_session() as session:
                await repo.refresh_statistics(session=session)

        async def write(
            load: repo.InteractionLoad | None, source: _Source = source, total: int = total
        ) -> int:
            before = report.interactions
            await _write_batches(
                open_session, tenant_id, source, report, progress, after_failure, total, load
            )
            return report.interactions - before

        if database is not None and source.kind == "interactions":
            written = await with_interaction_load(database, tenant_id, total, write)
            repeated = report.interactions - written  # dropped by the load's end
            report.interactions -= repeated
            report.duplicates += repeated
        else:
            await write(None)


async def _write_batches(
    open_session: OpenSession,
    tenant_id: uuid.UUID,
    source: _Source,
    report: ImportReport,
    progress: Progress | None,
    after_failure: str,
    total: int,
    load: repo.InteractionLoad | None,
) -> None:
    done = 0
    for read, rows in source.batches(report):
        if isinstance(rows, EventBatch):
            first, last = (int(rows.lines[0]), int(rows.lines[-1])) if len(rows) else (0, 0)
        else:
            first, last = (rows[0][0], rows[-1][0]) if rows else (0, 0)
        try:
            async with open_session() as session:
                if isinstance(rows, EventBatch):
                    await _write_event_batch(session, tenant_id, source, rows, report, load)
                elif load is None:
                    await _WRITERS[source.kind](session, tenant_id, source, rows, report)
                else:
                    await _write_interactions(session, tenant_id, source, rows, report, load)
        except StorageError as error:
            raise ImportFailed(
                f"{source.path.name}: the batch of lines {first}..{last} was not written "
                f"({error}); {after_failure}"
            ) from error
        done += read
        if progress is not None:
            progress(source.kind, done, max(total, done))
    if progress is not None:
        progress(source.kind, max(total, done), max(total, done))  # rows were lines


async def _write_items(
    session: AsyncSession, tenant_id: uuid.UUID, _source: _Source, rows: list, report: ImportReport
) -> None:
    ids = await repo.bulk_upsert_items(
        session=session, tenant_id=tenant_id, rows=[row for _line, row in rows]
    )
    report.items += len(ids)


async def _write_users(
    session: AsyncSession, tenant_id: uuid.UUID, _source: _Source, rows: list, report: ImportReport
) -> None:
    names = {key: name for _line, (key, name) in rows if name}
    ids = await upsert_users(session, tenant_id, [key for _line, (key, _name) in rows], names)
    report.users += len(ids)


async def _known_items(
    session: AsyncSession, tenant_id: uuid.UUID, source: _Source, rows: list, report: ImportReport
) -> tuple[dict[str, uuid.UUID], list]:
    """The item ids the rows name, and the rows whose item the tenant has (others are bad)."""
    cache = source.items
    wanted = {row[1] for _line, row in rows}
    cache.update(
        await repo.item_ids_by_external_ids(
            session=session,
            tenant_id=tenant_id,
            external_ids=[key for key in wanted if key not in cache],
        )
    )
    ids = {key: cache[key] for key in wanted if key in cache}
    known = []
    for line, row in rows:
        if row[1] in ids:
            known.append(row)
        else:
            report.bad(BadRow(source.path.name, line, f"unknown item {row[1]!r}"))
    return ids, known


async def _write_interactions(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    source: _Source,
    rows: list,
    report: ImportReport,
    load: repo.InteractionLoad | None = None,
) -> None:
    ids, known = await _known_items(session, tenant_id, source, rows, report)
    written, _ = await write_events(
        session, tenant_id, ids, interactions=known, known_users=source.users, load=load
    )
    report.interactions += written
    report.duplicates += len(known) - written


async def _write_event_batch(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    source: _Source,
    batch: EventBatch,
    report: ImportReport,
    load: repo.InteractionLoad | None,
) -> None:
    """``_write_interactions`` of a columnar batch: rows naming an item the tenant lacks are
    bad rows, the rest are written."""
    events = batch.events
    cache = source.items
    cache.update(
        await repo.item_ids_by_external_ids(
            session=session,
            tenant_id=tenant_id,
            external_ids=[key for key in events.items if key not in cache],
        )
    )
    known = np.fromiter((key in cache for key in events.items), bool, len(events.items))
    rows_known = known[events.item_codes]
    if not rows_known.all():
        unknown = np.flatnonzero(~rows_known)
        for line, code in zip(
            batch.lines[unknown].tolist(), events.item_codes[unknown].tolist(), strict=True
        ):
            report.bad(BadRow(source.path.name, line, f"unknown item {events.items[code]!r}"))
        batch = batch.take(np.flatnonzero(rows_known))
    ids = {key: cache[key] for key in events.items if key in cache}
    written, _ = await write_events(
        session, tenant_id, ids, interactions=batch.events, known_users=source.users, load=load
    )
    report.interactions += written
    report.duplicates += len(batch) - written


async def _write_ratings(
    session: AsyncSession, tenant_id: uuid.UUID, source: _Source, rows: list, report: ImportReport
) -> None:
    ids, known = await _known_items(session, tenant_id, source, rows, report)
    _, rated = await write_events(session, tenant_id, ids, ratings=known, known_users=source.users)
    report.ratings += rated


_WRITERS = {
    "items": _write_items,
    "users": _write_users,
    "interactions": _write_interactions,
    "ratings": _write_ratings,
}
