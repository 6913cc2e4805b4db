"""Async engine, sessions and migrations for the relational store.

One URL picks the backend: ``sqlite+aiosqlite:///path`` (embedded default) or
``postgresql+asyncpg://...``. Driver exceptions never leave this package: :func:`translate_error`
maps them onto :mod:`storage.errors`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from storage.errors import Conflict, InvalidData, NotFound, StorageError, Unavailable
from storage.settings import Settings, get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
T = TypeVar("T")

# SQLSTATE codes (PostgreSQL) and extended result names (SQLite) of the integrity failures that
# are not plain uniqueness conflicts.
_PG_INTEGRITY = {"23503": NotFound, "23514": InvalidData, "23502": InvalidData}
_SQLITE_INTEGRITY = {
    "SQLITE_CONSTRAINT_FOREIGNKEY": NotFound,
    "SQLITE_CONSTRAINT_CHECK": InvalidData,
    "SQLITE_CONSTRAINT_NOTNULL": InvalidData,
}


# PostgreSQL refusing for now, worth a retry later (besides class 08, connection exceptions):
# shutting down, crashed, starting up ("the database system is starting up"), out of
# connections or memory.
_PG_UNAVAILABLE = frozenset({"57P01", "57P02", "57P03", "53300", "53200"})


def translate_error(exc: BaseException) -> StorageError:
    """The :mod:`storage.errors` equivalent of a driver / SQLAlchemy exception."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, IntegrityError):
        orig = exc.orig
        kind = _PG_INTEGRITY.get(getattr(orig, "sqlstate", None) or "")
        if kind is None and isinstance(orig, sqlite3.IntegrityError):
            kind = _SQLITE_INTEGRITY.get(getattr(orig, "sqlite_errorname", ""))
        return (kind or Conflict)(str(orig))
    sqlstate = getattr(exc, "sqlstate", None)  # raw asyncpg errors, e.g. from COPY
    if isinstance(sqlstate, str) and sqlstate.startswith("23"):
        return _PG_INTEGRITY.get(sqlstate, Conflict)(str(exc))
    sqlstate = sqlstate or getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(sqlstate, str) and (sqlstate[:2] == "08" or sqlstate in _PG_UNAVAILABLE):
        return Unavailable(str(exc))
    if isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError):
        return Unavailable(str(exc))
    if isinstance(exc, DBAPIError) and type(exc).__name__ == "DataError":
        return InvalidData(str(exc.orig))
    return StorageError(str(exc))


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise driver errors raised inside the block as storage errors."""
    try:
        yield
    except (DBAPIError, OSError, TimeoutError) as exc:
        raise translate_error(exc) from exc


def _prepare_sqlite_file(url: URL) -> None:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _install_sqlite_hooks(engine: AsyncEngine, *, begin: bool = True) -> None:
    """Foreign keys and WAL on every connection; SQLAlchemy, not sqlite3, emits BEGIN (unless
    ``begin`` is false: the read engine's statements run outside any transaction).

    Python 3.11's sqlite3 module skips BEGIN before SELECT and SAVEPOINT, which breaks
    savepoints (used for recoverable conflicts); taking over BEGIN is SQLAlchemy's documented fix.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA cache_size={SERVING_CACHE_KIB}")
        cursor.close()

    if not begin:
        return

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A transaction that begins deferred, reads and then writes cannot wait for the write
        # lock: SQLite answers "database is locked" at once when another one committed since
        # its read (a mutation failed so whenever the feedback writer committed in between).
        # So a transaction takes the lock at BEGIN, where the busy timeout applies, unless its
        # session says it only reads (IMMEDIATE would serialise readers: a burst of identical
        # requests showed as slower answers).
        readonly = connection.get_execution_options().get(READONLY, False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


READONLY = "recserve_sqlite_readonly"  # execution option: a deferred BEGIN on SQLite
# SQLite's page cache per connection, in KiB (negative: KiB, not pages). Serving connections
# keep SQLite's 2 MiB default: every pooled connection of every replica holds its own cache,
# and at 64 MiB each they grew a replica's memory through a soak as the tables grew. Bulk
# writes (``session(bulk=True)``) take 64 MiB for their transaction: the interaction indexes
# outgrow 2 MiB during an ingest, and every miss costs a page read.
SERVING_CACHE_KIB = -2000
BULK_CACHE_KIB = -65536


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for ``url`` with the per-backend settings Recserve relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_file(parsed)
        engine = create_async_engine(
            parsed, echo=echo, connect_args={"timeout": 30}, hide_parameters=True
        )
        _install_sqlite_hooks(engine)
        return engine
    # hide_parameters: an error's message never carries row values (password hashes, emails)
    return create_async_engine(parsed, echo=echo, pool_pre_ping=True, hide_parameters=True)


def create_read_engine(url: str, *, echo: bool = False) -> AsyncEngine | None:
    """An engine for statements that need no transaction of their own (``Database.read``):
    autocommit, no ping on checkout and no rollback on return, so a read costs its statement's
    round trip alone. PostgreSQL's sessions otherwise ping, BEGIN, COMMIT and roll back: five
    round trips where one is needed, which the request path's profile showed as most of its
    SQL time. None for an in-memory SQLite database, which a second engine would not see."""
    parsed = make_url(url)
    options: dict[str, Any] = {
        "echo": echo,
        "hide_parameters": True,
        "isolation_level": "AUTOCOMMIT",
        "pool_reset_on_return": None,
    }
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed, **options)
    if not parsed.database or parsed.database == ":memory:" or "mode=memory" in str(parsed):
        return None
    engine = create_async_engine(parsed, connect_args={"timeout": 30}, **options)
    _install_sqlite_hooks(engine, begin=False)
    return engine


class Database:
    """An engine plus its session factory; one per process (or per test backend)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = create_engine(url, echo=echo)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._echo = echo
        self._read_engine: AsyncEngine | None = None
        self._reads: async_sessionmaker[AsyncSession] | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Database:
        settings = settings or get_settings()
        assert settings.database_url is not None  # filled by Settings' validator
        return cls(settings.database_url, echo=settings.database_echo)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(
        self, *, readonly: bool = False, bulk: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed on normal exit, rolled back on error.

        On SQLite the transaction takes the write lock at its start, waiting up to the busy
        timeout for another writer to finish; ``readonly``: it only reads, and runs beside
        writers (a session that says so and writes may fail with "database is locked").
        ``bulk``: an ingest's transaction, given a large page cache on SQLite for its length.
        Driver errors (also those raised by the final commit) come out as storage errors.
        """
        sqlite = self.dialect == "sqlite"
        async with self._sessions() as session:
            try:
                if readonly and sqlite:
                    with translated_errors():
                        await session.connection(execution_options={READONLY: True})
                if bulk and sqlite:
                    await self._cache_size(session, BULK_CACHE_KIB)
                    try:
                        yield session
                    finally:  # still in the transaction: the pages go before it is pooled
                        await self._cache_size(session, SERVING_CACHE_KIB)
                else:
                    yield session
                with translated_errors():
                    await session.commit()
            except BaseException as exc:
                await session.rollback()
                if isinstance(exc, DBAPIError | OSError):
                    raise translate_error(exc) from exc
                raise

    @staticmethod
    async def _cache_size(session: AsyncSession, kib: int) -> None:
        with translated_errors():
            connection = await session.connection()
            await connection.exec_driver_sql(f"PRAGMA cache_size={kib}")

    def _read_sessions(self) -> async_sessionmaker[AsyncSession]:
        if self._reads is None:
            self._read_engine = create_read_engine(self.url, echo=self._echo)
            engine = self._read_engine or self.engine
            self._reads = async_sessionmaker(engine, expire_on_commit=False)
        return self._reads

    @property
    def read_engine(self) -> AsyncEngine:
        """The engine ``read`` uses (created on first use; the main engine where none can be)."""
        self._read_sessions()
        return self._read_engine or self.engine

    async def read(self, query: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """``query``'s answer, run on a session outside any transaction: for the request path's
        reads of one statement each (a single statement sees one committed state anyway).

        Connections are not pinged before use; a connection the server closed meanwhile fails
        its statement, and ``query`` runs once more on a new one (it only reads). Driver errors
        come out as storage errors, as from ``session``.
        """
        sessions = self._read_sessions()
        for attempt in (1, 2):
            try:
                async with sessions() as session:
                    return await query(session)
            except DBAPIError as exc:
                if exc.connection_invalidated and attempt == 1:
                    continue
                raise translate_error(exc) from exc
            except (OSError, TimeoutError) as exc:
                raise translate_error(exc) from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def dispose(self) -> None:
        if self._read_engine is not None:
            await self._read_engine.dispose()
        await self.engine.dispose()


def alembic_config(url: str | None = None) -> Any:
    """Alembic's configuration, built in code so an installed package needs no alembic.ini."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolation would choke on a '%' in a password.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _run_alembic(connection: Connection, action: str, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, action)(config, revision)


async def _alembic(url: str, action: str, revision: str) -> None:
    engine = create_engine(url)
    try:
        with translated_errors():
            async with engine.begin() as connection:
                await connection.run_sync(_run_alembic, action, revision)
    finally:
        await engine.dispose()


async def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (latest by default)."""
    await _alembic(url, "upgrade", revision)


async def downgrade(url: str, revision: str = "base") -> None:
    """Downgrade the database at ``url`` to ``revision`` (empty by default)."""
    await _alembic(url, "downgrade", revision)


async def _run_on_maintenance_db(url: str, statement: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction, nor on the database concerned.
    admin = create_async_engine(
        make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        with translated_errors():
            async with admin.connect() as connection:
                await connection.execute(text(statement))
    finally:
        await admin.dispose()


def _remove_sqlite_files(url: URL) -> None:
    if url.database and url.database != ":memory:":
        for suffix in ("", "-wal", "-shm"):
            Path(url.database + suffix).unlink(missing_ok=True)


async def create_database(url: str) -> None:
    """Create the (empty) database named in ``url``; for SQLite, its parent directory."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_file(parsed)
        return
    await _run_on_maintenance_db(url, f'CREATE DATABASE "{parsed.database}"')


async def drop_database(url: str) -> None:
    """Drop the database named in ``url`` (closing its other sessions); missing is fine."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _remove_sqlite_files(parsed)
        return
    await _run_on_maintenance_db(url, f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
