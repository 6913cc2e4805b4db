"""Helpers shared by the repository modules."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    Float,
    Select,
    String,
    Table,
    cast,
    func,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storage.db import translate_error
from storage.errors import InvalidData, NotFound

T = TypeVar("T")

MAX_PAGE = 1000


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


class EventChunk(NamedTuple):
    """One streamed chunk of training events as parallel columns: ids as their 32 hex digits
    (a plain string from every driver), times as unix seconds."""

    user_ids: Sequence[str]
    item_ids: Sequence[str]
    types: Sequence[str] | None  # None: every event of the chunk is of the caller's one type
    values: Sequence[float | None]
    times: Sequence[float]


def hex_id(session: AsyncSession, column: Any) -> Any:
    """A ``Uuid`` column as 32 lowercase hex digits, read with no per-row UUID object."""
    if dialect_name(session) == "postgresql":
        return func.encode(func.uuid_send(column), literal_column("'hex'"))
    return type_coerce(column, String)  # elsewhere ``Uuid`` is stored as CHAR(32) hex


def epoch_seconds(session: AsyncSession, column: Any) -> Any:
    """A timestamp column as unix seconds (float) on PostgreSQL; as is elsewhere (the caller
    converts, see ``stream_event_columns``)."""
    if dialect_name(session) == "postgresql":
        return type_coerce(func.date_part(literal_column("'epoch'"), column), Float)
    return column


async def stream_event_columns(
    session: AsyncSession, query: Select[Any], chunk_size: int, *, typed: bool
) -> AsyncIterator[EventChunk]:
    """``query`` (user, item, [type,] value, time, with ``hex_id`` and ``epoch_seconds``) in
    chunks of up to ``chunk_size`` rows, streamed from a server-side cursor, as columns."""
    query = query.execution_options(yield_per=chunk_size)
    # Core, not ORM, execution: the ORM's per-row loading took a third of the read time
    result = await (await session.connection()).stream(query)
    postgres = dialect_name(session) == "postgresql"
    async for partition in result.partitions():
        columns = list(zip(*partition, strict=True))
        if typed:
            users, items, types, values, times = columns
        else:
            (users, items, values, times), types = columns, None
        if not postgres:  # aware UTC datetimes (``UtcDateTime``)
            times = [moment.timestamp() for moment in times]
        yield EventChunk(users, items, types, values, times)


def upsert_insert(session: AsyncSession, table: Any) -> Any:
    """The dialect's INSERT construct, the one that offers ``on_conflict_do_update``."""
    if dialect_name(session) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


@asynccontextmanager
async def savepoint(session: AsyncSession) -> AsyncIterator[None]:
    """Run a write in a SAVEPOINT and flush it there.

    A failed write then raises a storage error and leaves the caller's transaction usable
    (PostgreSQL would otherwise abort the whole transaction).
    """
    try:
        async with session.begin_nested():
            yield
            await session.flush()
    except DBAPIError as exc:
        raise translate_error(exc) from exc


def found(row: T | None, what: str, key: object) -> T:
    if row is None:
        raise NotFound(f"{what} {key} not found")
    return row


def check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidData(f"limit must be within 1..{MAX_PAGE}, got {limit}")
    if offset < 0:
        raise InvalidData(f"offset must be >= 0, got {offset}")


def chunks(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def align(ids: Sequence[uuid.UUID], rows: Iterable[Any]) -> list[Any]:
    """``rows`` (objects with ``.id``) in the order of ``ids``, ``None`` where missing."""
    by_id = {row.id: row for row in rows}
    return [by_id.get(key) for key in ids]


def table_of(model: Any) -> Table:
    return model.__table__


async def ids_by_key(
    session: AsyncSession,
    model: Any,
    key: str,
    tenant_id: uuid.UUID,
    keys: Iterable[str],
    *conditions: Any,
) -> dict[str, uuid.UUID]:
    """``{key value: id}`` of the tenant's rows of ``model`` whose column ``key`` is one of
    ``keys`` (unknown ones are left out) and that meet ``conditions``.

    On PostgreSQL the keys go as one array joined with ``unnest``: a 1000-value ``IN`` list
    against a freshly loaded, not yet analysed table was planned as a scan of every row of
    the tenant compared with every value (a second per lookup during a large import).
    """
    column = getattr(model, key)
    unique = list(dict.fromkeys(keys))
    found: dict[str, uuid.UUID] = {}
    if dialect_name(session) == "postgresql":
        for batch in chunks(unique, 50_000):
            wanted = (
                func.unnest(cast(batch, ARRAY(String()))).table_valued("value").render_derived()
            )
            query = select(column, model.id).join(wanted, column == wanted.c.value)
            query = query.where(model.tenant_id == tenant_id, *conditions)
            found.update((await session.execute(query)).tuples().all())
        return found
    for batch in chunks(unique, 1000):
        query = select(column, model.id).where(
            model.tenant_id == tenant_id, column.in_(batch), *conditions
        )
        found.update((await session.execute(query)).tuples().all())
    return found


def first_per_user(model: Any, where: list[Any], order: tuple[Any, ...], per_user: int) -> Any:
    """``select(model)`` of the first ``per_user`` rows of each user in ``order`` (one
    statement: a window function, on SQLite and PostgreSQL alike)."""
    rank = func.row_number().over(partition_by=model.user_id, order_by=order).label("rank")
    ranked = select(model, rank).where(*where).subquery()
    rows = aliased(model, ranked)
    return select(rows).where(ranked.c.rank <= per_user).order_by(ranked.c.rank)
