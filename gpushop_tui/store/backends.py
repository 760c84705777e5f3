"""The two databases the store runs on: an embedded SQLite file and a PostgreSQL server.

The store's SQL is written once, with `?` placeholders, in the subset both dialects share; a
backend runs it. Each write runs in `transaction()`, which holds one database-wide write lock
from its first statement to its commit, so the store's read-check-write steps (compare-and-set,
leases, idempotent create) mean the same on both:
- SQLite: `BEGIN IMMEDIATE` (the database's write lock), one connection per process, WAL so
  readers never wait for the writer, `busy_timeout` so processes wait for each other.
- PostgreSQL (asyncpg): a pooled connection, READ COMMITTED, and a transaction-scoped advisory
  lock taken first. Writers on every host queue on that one lock and readers never wait; ids
  from a sequence are committed in the order they were drawn, so a reader paging by id (the
  event feed, the alert tally) never skips one committed late.
asyncpg, not psycopg 3: it is asyncio-native, speaks the binary protocol itself and installs as
a wheel without libpq, which keeps `pip install gpushop` the only step on a laptop.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import aiosqlite

from gpushop_tui.config import url_without_password
from gpushop_tui.errors import DatabaseUnavailable

Row = Mapping[str, Any]
Dialect = Literal["sqlite", "postgres"]

BUSY_TIMEOUT_MS = 15_000
WRITE_LOCK_KEY = 0x67707573686F70
"""The PostgreSQL advisory lock every write transaction holds ("gpushop" in hex)."""
POOL_SIZE = 10
"""Most PostgreSQL connections one process holds (API readers run side by side)."""
COMMAND_TIMEOUT_S = 60.0
"""Longest one statement may take before the client gives up on it (a half-open connection)."""
SERVER_SETTINGS = {
    "lock_timeout": f"{BUSY_TIMEOUT_MS}ms",
    "idle_in_transaction_session_timeout": "60s",
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
}
"""Waits bounded as on SQLite: a writer waits for the write lock as long as `busy_timeout`, and a
replica that died mid-transaction (its host gone, no TCP reset) loses its transaction, and the
lock it held, within about a minute instead of the kernel's two hours."""


class DuplicateRow(Exception):
    """An insert met a row with the same unique key."""


class SchemaError(Exception):
    """The database cannot be brought to this gpushop's schema; the message says why."""


class Transaction(Protocol):
    """The statements of one write transaction."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; how many rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


class Database(Protocol):
    """One open database."""

    dialect: Dialect
    where: str
    """The database as it may be named in a message (a path, or a URL without password)."""

    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def schema_version(self) -> int: ...

    async def migrate(self, scripts: list[tuple[int, str]]) -> None:
        """Apply the scripts numbered above the current version, all or none."""
        ...

    async def close(self) -> None: ...


def migrations(dialect: Dialect = "sqlite") -> list[tuple[int, str]]:
    """The numbered migration scripts of `dialect`, in order.

    SQLite's run from 1; PostgreSQL's start from a baseline (the first schema it was offered
    with) carrying the same number as the SQLite schema it equals, so a schema number means the
    same tables on both. Every later migration is written once per dialect under one number.
    """
    folder = resources.files("gpushop_tui.store") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [number for number, _ in found]
    if not numbers or numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        raise RuntimeError(f"{dialect} migration files must be numbered without gaps")
    return found


def _statements(script: str) -> list[str]:
    """Split a migration script into complete SQL statements."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                statements.append(pending.strip())
            pending = ""
    leftover = [
        line for line in pending.splitlines() if line.strip() and not line.strip().startswith("--")
    ]
    if leftover:
        raise RuntimeError(f"incomplete SQL statement in migration: {pending.strip()[:80]}")
    return statements


def _newer_than_known(where: str, current: int, latest: int) -> SchemaError:
    return SchemaError(
        f"database {where} has schema {current}, newer than this gpushop knows ({latest}); "
        "upgrade gpushop"
    )


# --------------------------------------------------------------------------- SQLite


class _SqliteTransaction:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            cursor = await self._conn.execute(sql, tuple(params))
        except sqlite3.IntegrityError as err:
            if "UNIQUE" in str(err):
                raise DuplicateRow(str(err)) from None
            raise
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, [tuple(row) for row in rows])

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._conn.execute(sql, tuple(params)) as cursor:
            return [dict(row) for row in await cursor.fetchall()]


class SqliteDatabase:
    """A SQLite file (created `0600`) on one connection per process."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, conn: aiosqlite.Connection) -> None:
        self.where = str(path)
        self._conn = conn
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SqliteDatabase:
        """Open (creating, 0600) the file; OSError or sqlite3.Error when it cannot be."""
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(path, 0o600)
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = FULL")
            await conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            await conn.close()
            raise
        return cls(path, conn)

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTransaction(self._conn)
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._lock, self._conn.execute(sql, tuple(params)) as cursor:
            return [dict(row) for row in await cursor.fetchall()]

    async def schema_version(self) -> int:
        rows = await self.fetch("PRAGMA user_version")
        return int(rows[0]["user_version"])

    async def migrate(self, scripts: list[tuple[int, str]]) -> None:
        latest = scripts[-1][0]
        current = await self.schema_version()
        if current > latest:
            raise _newer_than_known(self.where, current, latest)
        if current == latest:
            return
        # A migration may rebuild a table (SQLite cannot change a CHECK in place): foreign keys
        # are off meanwhile, as SQLite prescribes, and checked before the migration commits.
        await self._conn.execute("PRAGMA foreign_keys = OFF")
        try:
            async with self.transaction() as db:
                rows = await db.fetch("PRAGMA user_version")
                current = int(rows[0]["user_version"])
                for number, script in scripts:
                    if number > current:
                        for statement in _statements(script):
                            await db.execute(statement)
                broken = await db.fetch("PRAGMA foreign_key_check")
                if broken:
                    raise SchemaError(
                        f"database {self.where}: migrating to schema {latest} would break "
                        f"{len(broken)} reference(s), first in table {broken[0]['table']}; "
                        "nothing was changed"
                    )
                await db.execute(f"PRAGMA user_version = {latest}")
        finally:
            await self._conn.execute("PRAGMA foreign_keys = ON")


# --------------------------------------------------------------------------- PostgreSQL


@lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """`sql` with its `?` placeholders as PostgreSQL's `$1`, `$2`, … (none sit in literals)."""
    count = 0

    def number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return re.sub(r"\?", number, sql)


def _rowcount(status: str) -> int:
    """How many rows a command changed, from its status ("UPDATE 1", "INSERT 0 1")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _PostgresTransaction:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        import asyncpg

        try:
            status = await self._conn.execute(numbered(sql), *params)
        except asyncpg.UniqueViolationError as err:
            raise DuplicateRow(str(err)) from None
        return _rowcount(str(status))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(numbered(sql), [tuple(row) for row in rows])

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [dict(row) for row in await self._conn.fetch(numbered(sql), *params)]


async def _recorded_version(conn: Any) -> int:
    """The schema version in `meta`; 0 where gpushop never migrated (no `meta` table)."""
    if not await conn.fetchval("SELECT to_regclass('meta') IS NOT NULL"):
        return 0
    found = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
    return int(found) if found is not None else 0


class PostgresDatabase:
    """A PostgreSQL database through an asyncpg connection pool."""

    dialect: Dialect = "postgres"

    def __init__(self, url: str, pool: Any) -> None:
        self.where = url_without_password(url)
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresDatabase:
        """Connect; OSError or asyncpg's errors when the server cannot be reached or refuses."""
        import asyncpg

        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=POOL_SIZE,
            command_timeout=COMMAND_TIMEOUT_S,
            server_settings=SERVER_SETTINGS,
        )
        return cls(url, pool)

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        with self._answering():
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK_KEY)
                yield _PostgresTransaction(conn)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._answering():
            return [dict(row) for row in await self._pool.fetch(numbered(sql), *params)]

    @contextmanager
    def _answering(self) -> Iterator[None]:
        """Say in one sentence that the server stopped answering (a lost or refused connection,
        a statement timed out, a server starting or stopping), or that a write waited longer
        than `lock_timeout` for the write lock, whatever the driver raised for it."""
        import asyncpg

        try:
            yield
        except asyncpg.LockNotAvailableError:
            raise DatabaseUnavailable(
                f"database {self.where} is busy: a write waited more than "
                f"{BUSY_TIMEOUT_MS // 1000} s for the write lock another process holds"
            ) from None
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError,
        ) as err:
            reason = (
                getattr(err, "strerror", None) or str(err).splitlines()[0] or type(err).__name__
            )
            raise DatabaseUnavailable(f"database {self.where} does not answer: {reason}") from None

    async def schema_version(self) -> int:
        """The version recorded in `meta`; 0 for a database gpushop never migrated."""
        with self._answering():
            async with self._pool.acquire() as conn:
                return await _recorded_version(conn)

    async def migrate(self, scripts: list[tuple[int, str]]) -> None:
        latest = scripts[-1][0]
        with self._answering():
            async with self._pool.acquire() as conn:
                if await _recorded_version(conn) == latest:
                    return  # up to date: no write lock taken at every open
            async with self._pool.acquire() as conn:
                # The write lock first, then a transaction: replicas starting at once migrate
                # one after the other, and the transaction, begun once the lock is held, sees
                # the tables another replica just made (a lock taken inside it would leave
                # this connection's cached "no such table" in place).
                await conn.execute("SELECT pg_advisory_lock($1)", WRITE_LOCK_KEY)
                try:
                    async with conn.transaction():
                        current = await _recorded_version(conn)
                        if current > latest:
                            raise _newer_than_known(self.where, current, latest)
                        for number, script in scripts:
                            if number > current:
                                await conn.execute(script)
                        await conn.execute(
                            "INSERT INTO meta (key, value) VALUES ('schema_version', $1) "
                            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                            str(latest),
                        )
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", WRITE_LOCK_KEY)
