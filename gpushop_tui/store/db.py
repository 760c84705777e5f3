"""The one place that speaks SQL: an aiosqlite database that is the source of truth.

WAL so readers never block the writer; `busy_timeout` so two processes (the TUI, `--serve`, a
cron `reconcile`) wait for each other instead of failing; every write in `BEGIN IMMEDIATE`, and
session changes are compare-and-set on the row's version, so concurrent writers never lose an
update. Migrations are numbered SQL files applied at open, tracked by `PRAGMA user_version`.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets as stdlib_secrets
import socket
import sqlite3
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite
from pydantic import BaseModel

from gpushop_tui.errors import DataDirError
from gpushop_tui.models import AuditEvent, Benchmark, Budget, InstanceState, Session, SessionStatus
from gpushop_tui.secrets import redact

BUSY_TIMEOUT_MS = 15_000
_SESSION_COLUMNS = tuple(name for name in Session.model_fields if name != "offer")
"""Session fields stored as columns of their own; the offer snapshot goes to offer_json."""
_UPDATABLE = frozenset(Session.model_fields) - {"id", "version"}
"""Session fields a compare-and-set may change (`offer` is written as offer_json)."""
_COLUMN_OF = {"offer": "offer_json"}
"""The column of a session field stored under another name."""
GLOBAL_SCOPE = "*"
"""The budgets row scope of the global budget (a consumer id otherwise)."""


def to_db_time(value: datetime) -> str:
    """A fixed-width UTC ISO-8601 string, so that text order is time order."""
    if value.tzinfo is None:
        raise ValueError("naive datetime cannot be stored")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _to_db(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return to_db_time(value)
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, list):
        return json.dumps([_json_of(item) for item in value], sort_keys=True)
    return value


def _json_of(value: Any) -> Any:
    """A list item as JSON-ready data (a model as its JSON form)."""
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


_INSERT_BENCHMARK = (
    "INSERT INTO benchmarks (gpu_name, gpu_count, model, tokens_per_second, runtime, provider, "
    "price_per_hour, measured_at, source, session_id, time_to_first_token_s) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _benchmark_values(row: Benchmark, source: str) -> tuple[Any, ...]:
    """One benchmark row's values for `_INSERT_BENCHMARK`, kept under `source`."""
    return (
        row.gpu_name,
        row.gpu_count,
        row.model,
        row.tokens_per_second,
        row.runtime,
        row.provider,
        row.price_per_hour,
        _to_db(row.measured_at),
        source,
        row.session_id,
        row.time_to_first_token_s,
    )


def migrations() -> list[tuple[int, str]]:
    """The numbered migration scripts shipped with the package, in order."""
    folder = resources.files("gpushop_tui.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    found.sort()
    if [number for number, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError("migration files must be numbered 1..N without gaps")
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


def _holder_is_gone(holder: str, pid: int) -> bool:
    """Whether a lease holder ("host:pid:token") ran on this host and its process is gone.

    A holder on another host, or one whose pid is alive (even if reused by another process, or
    owned by another user), is left to its lease's expiry.
    """
    if holder.split(":", 1)[0] != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


class DuplicateSession(Exception):
    """A session with this id, label or request id is already stored."""


@dataclass(frozen=True)
class Lease:
    """Who holds a named lease (the supervisor's) and until when."""

    name: str
    holder: str
    pid: int
    acquired_at: datetime
    expires_at: datetime


class Store:
    """The gpushop database. Open with `await Store.open(path)`; close with `aclose()`."""

    def __init__(self, path: Path, conn: aiosqlite.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = asyncio.Lock()
        self._install_id = ""

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating, 0600) the database at `path` and bring its schema up to date."""
        try:
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            os.chmod(path, 0o600)
            conn = await aiosqlite.connect(path, isolation_level=None)
            conn.row_factory = sqlite3.Row
        except (OSError, sqlite3.Error) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise DataDirError(f"database {path} cannot be opened: {reason}") from None
        store = cls(path, conn)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = FULL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await store._migrate()
            store._install_id = await store._ensure_install_id()
        except BaseException:
            await conn.close()
            raise
        return store

    async def aclose(self) -> None:
        async with self._lock:
            await self._conn.close()

    @property
    def install_id(self) -> str:
        """Random per data dir; part of every instance label, keeping installations apart."""
        return self._install_id

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction that holds the database write lock from its first statement."""
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def _fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        async with self._lock, self._conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def schema_version(self) -> int:
        rows = await self._fetchall("PRAGMA user_version")
        return int(rows[0][0])

    async def _migrate(self) -> None:
        scripts = migrations()
        latest = scripts[-1][0]
        current = await self.schema_version()
        if current > latest:
            raise DataDirError(
                f"database {self.path} has schema {current}, newer than this gpushop knows "
                f"({latest}); upgrade gpushop"
            )
        if current == latest:
            return
        # A migration may rebuild a table (SQLite cannot change a CHECK in place): foreign keys
        # are off meanwhile, as SQLite prescribes, and checked before the migration commits.
        await self._conn.execute("PRAGMA foreign_keys = OFF")
        try:
            async with self.transaction() as db:
                async with db.execute("PRAGMA user_version") as cursor:
                    row = await cursor.fetchone()
                current = int(row[0]) if row else 0
                for number, script in scripts:
                    if number > current:
                        for statement in _statements(script):
                            await db.execute(statement)
                async with db.execute("PRAGMA foreign_key_check") as cursor:
                    broken = list(await cursor.fetchall())
                if broken:
                    raise DataDirError(
                        f"database {self.path}: migrating to schema {latest} would break "
                        f"{len(broken)} reference(s), first in table {broken[0][0]}; nothing "
                        "was changed"
                    )
                await db.execute(f"PRAGMA user_version = {latest}")
        finally:
            await self._conn.execute("PRAGMA foreign_keys = ON")

    async def _ensure_install_id(self) -> str:
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES ('install_id', ?) ON CONFLICT DO NOTHING",
                (stdlib_secrets.token_hex(4),),
            )
            async with db.execute("SELECT value FROM meta WHERE key = 'install_id'") as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return str(row[0])

    # -- sessions ---------------------------------------------------------------------------

    async def insert_session(self, session: Session) -> None:
        """Insert a new session row (phase one of the two-phase create)."""
        row = self._session_row(session)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        try:
            async with self.transaction() as db:
                await db.execute(
                    f"INSERT INTO sessions ({columns}) VALUES ({marks})", tuple(row.values())
                )
        except sqlite3.IntegrityError as err:
            raise DuplicateSession(str(err)) from None

    async def get_session(self, session_id: str) -> Session | None:
        rows = await self._fetchall("SELECT * FROM sessions WHERE id = ?", (session_id,))
        return self._session_from_row(rows[0]) if rows else None

    async def session_ids_from(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to `limit` session ids that start with `prefix`, in order (an equal id first).

        A range on the primary key rather than LIKE: it uses the index, is case-sensitive and
        takes `%` and `_` as themselves.
        """
        rows = await self._fetchall(
            "SELECT id FROM sessions WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        )
        return [str(row["id"]) for row in rows]

    async def session_by_request_id(self, request_id: str) -> Session | None:
        rows = await self._fetchall("SELECT * FROM sessions WHERE request_id = ?", (request_id,))
        return self._session_from_row(rows[0]) if rows else None

    async def list_sessions(
        self,
        *,
        open_only: bool = False,
        consumer: str | None = None,
        status: SessionStatus | None = None,
        provider: str | None = None,
        limit: int | None = None,
    ) -> list[Session]:
        """Sessions, newest first; `open_only` keeps those the supervisor is responsible for;
        `limit` returns only the newest that many."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if open_only:
            where.append("NOT (status IN (?, ?) AND instance IN (?, ?))")
            params += [
                SessionStatus.ENDED.value,
                SessionStatus.FAILED.value,
                InstanceState.NONE.value,
                InstanceState.GONE.value,
            ]
        if consumer is not None:
            where.append("consumer = ?")
            params.append(consumer)
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if provider is not None:
            where.append("provider = ?")
            params.append(provider)
        page = ""
        if limit is not None:
            page = " LIMIT ?"
            params.append(limit)
        rows = await self._fetchall(
            f"SELECT * FROM sessions WHERE {' AND '.join(where)} "
            f"ORDER BY created_at DESC, id{page}",
            tuple(params),
        )
        return [self._session_from_row(row) for row in rows]

    async def update_session(
        self, session_id: str, expect: Mapping[str, Any], **changes: Any
    ) -> Session | None:
        """Compare-and-set: apply `changes` only if every field in `expect` still holds.

        Returns the updated session, or None when the session is missing or a precondition
        failed (someone else changed it first: re-read and decide again). A change of `status`
        or `instance` must say when the new state was entered (`state_entered_at`).
        """
        unknown = (set(changes) - _UPDATABLE) | (set(expect) - set(Session.model_fields))
        if unknown:
            raise ValueError(f"not session fields that can be compared or set: {sorted(unknown)}")
        if ({"status", "instance"} & set(changes)) and "state_entered_at" not in changes:
            raise ValueError("a state change must set state_entered_at")
        async with self.transaction() as db:
            async with db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            current = self._session_from_row(row)
            if any(getattr(current, name) != value for name, value in expect.items()):
                return None
            updated = Session.model_validate(
                current.model_dump() | changes | {"version": current.version + 1}
            )
            new_row = self._session_row(updated)
            columns = [_COLUMN_OF.get(name, name) for name in changes]
            assignments = ", ".join(f"{column} = ?" for column in columns) + ", version = ?"
            values = [new_row[column] for column in columns] + [updated.version]
            cursor = await db.execute(
                f"UPDATE sessions SET {assignments} WHERE id = ? AND version = ?",
                (*values, session_id, current.version),
            )
            if cursor.rowcount != 1:
                return None
        return updated

    @staticmethod
    def _session_row(session: Session) -> dict[str, Any]:
        row = {name: _to_db(getattr(session, name)) for name in _SESSION_COLUMNS}
        row["offer_json"] = session.offer.model_dump_json()
        if row["error"] is not None:
            row["error"] = redact(row["error"])
        return row

    @staticmethod
    def _session_from_row(row: sqlite3.Row) -> Session:
        data = {name: row[name] for name in _SESSION_COLUMNS}
        data["offer"] = json.loads(row["offer_json"])
        if data["workload_spec"] is not None:
            data["workload_spec"] = json.loads(data["workload_spec"])
        data["cycles"] = json.loads(data["cycles"])
        return Session.model_validate(data)

    # -- audit ------------------------------------------------------------------------------

    async def add_audit(self, event: AuditEvent) -> AuditEvent:
        """Append one audit event (message and data redacted); returns it with its id."""
        message = redact(event.message)
        data_json = redact(json.dumps(event.data, sort_keys=True, default=str))
        async with self.transaction() as db:
            cursor = await db.execute(
                "INSERT INTO audit (at, kind, severity, session_id, message, data_json) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    to_db_time(event.at),
                    event.kind,
                    event.severity.value,
                    event.session_id,
                    message,
                    data_json,
                ),
            )
            event_id = cursor.lastrowid
        return event.model_copy(
            update={"id": event_id, "message": message, "data": json.loads(data_json)}
        )

    async def list_audit(
        self,
        *,
        session_id: str | None = None,
        after_id: int = 0,
        limit: int = 200,
        severities: Collection[str] | None = None,
        consumer: str | None = None,
    ) -> list[AuditEvent]:
        """The newest `limit` audit events after `after_id`, oldest first.

        `severities` keeps events of those severities; `consumer` keeps events about that
        consumer's sessions (events about no session are the operator's, and left out).
        """
        where: list[str] = ["id > ?"]
        params: list[Any] = [after_id]
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        if severities is not None:
            where.append(f"severity IN ({', '.join('?' * len(severities))})")
            params.extend(severities)
        if consumer is not None:
            where.append("session_id IN (SELECT id FROM sessions WHERE consumer = ?)")
            params.append(consumer)
        rows = await self._fetchall(
            f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [
            AuditEvent(
                id=row["id"],
                at=datetime.fromisoformat(row["at"]),
                kind=row["kind"],
                severity=row["severity"],
                session_id=row["session_id"],
                message=row["message"],
                data=json.loads(row["data_json"]),
            )
            for row in reversed(rows)
        ]

    # -- offer failures ---------------------------------------------------------------------

    async def add_offer_failure(
        self,
        offer_id: str,
        provider: str,
        reason: str,
        at: datetime,
        *,
        gpu_name: str | None = None,
        session_id: str | None = None,
    ) -> None:
        """Remember that renting an offer failed (the reason is redacted)."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO offer_failures (offer_id, provider, gpu_name, session_id, reason, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (offer_id, provider, gpu_name, session_id, redact(reason), to_db_time(at)),
            )

    async def offer_failures_since(self, since: datetime) -> dict[str, tuple[int, datetime]]:
        """Per offer id: failures at or after `since`, and when the latest one happened."""
        rows = await self._fetchall(
            "SELECT offer_id, COUNT(*) AS n, MAX(at) AS latest FROM offer_failures "
            "WHERE at >= ? GROUP BY offer_id",
            (to_db_time(since),),
        )
        return {row["offer_id"]: (row["n"], datetime.fromisoformat(row["latest"])) for row in rows}

    # -- money ------------------------------------------------------------------------------

    async def sessions_billing_between(
        self, since: datetime, until: datetime, consumer: str | None = None
    ) -> list[Session]:
        """Sessions whose instance billed at some time in [since, until): created before its
        end, and not gone before its start (a kept instance bills until it is gone)."""
        where = ["instance_created_at < ?", "(instance_gone_at IS NULL OR instance_gone_at >= ?)"]
        params: list[Any] = [to_db_time(until), to_db_time(since)]
        if consumer is not None:
            where.append("consumer = ?")
            params.append(consumer)
        rows = await self._fetchall(
            f"SELECT * FROM sessions WHERE {' AND '.join(where)} ORDER BY instance_created_at, id",
            tuple(params),
        )
        return [self._session_from_row(row) for row in rows]

    async def set_budget(self, budget: Budget, now: datetime) -> Budget:
        """Create the budget, or replace the limit and action of the one of the same scope and
        kind (there is one per consumer and kind, and one global per kind)."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO budgets (scope, kind, limit_value, action, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, kind) DO UPDATE SET "
                "limit_value = excluded.limit_value, action = excluded.action",
                (
                    budget.consumer or GLOBAL_SCOPE,
                    budget.kind.value,
                    budget.limit,
                    budget.action.value,
                    to_db_time(now),
                ),
            )
            async with db.execute(
                "SELECT * FROM budgets WHERE scope = ? AND kind = ?",
                (budget.consumer or GLOBAL_SCOPE, budget.kind.value),
            ) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return self._budget_from_row(row)

    async def list_budgets(self) -> list[Budget]:
        rows = await self._fetchall("SELECT * FROM budgets ORDER BY scope, kind")
        return [self._budget_from_row(row) for row in rows]

    async def delete_budget(self, budget_id: int) -> bool:
        """Remove a budget (and the thresholds it fired); False if there was none."""
        async with self.transaction() as db:
            cursor = await db.execute("DELETE FROM budgets WHERE id = ?", (budget_id,))
            return cursor.rowcount == 1

    async def fire_budget_threshold(
        self, budget_id: int, month: str, threshold: int, at: datetime
    ) -> bool:
        """Record that a threshold fired this month; False if it had already fired."""
        async with self.transaction() as db:
            cursor = await db.execute(
                "INSERT INTO budget_alerts (budget_id, month, threshold, fired_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (budget_id, month, threshold, to_db_time(at)),
            )
            return cursor.rowcount == 1

    @staticmethod
    def _budget_from_row(row: sqlite3.Row) -> Budget:
        return Budget(
            id=row["id"],
            consumer=None if row["scope"] == GLOBAL_SCOPE else row["scope"],
            kind=row["kind"],
            limit=row["limit_value"],
            action=row["action"],
        )

    # -- leases -----------------------------------------------------------------------------

    async def acquire_lease(
        self, name: str, holder: str, pid: int, now: datetime, ttl_s: float
    ) -> bool:
        """Take or renew lease `name` for `holder`; False while another holder's is unexpired.

        A holder on this host whose process is gone is dead at once: its lease is taken without
        waiting for it to expire (a killed supervisor must not block the next for a whole ttl).
        """
        expires = to_db_time(now + timedelta(seconds=ttl_s))
        now_text = to_db_time(now)
        async with self.transaction() as db:
            held = await db.execute_fetchall(
                "SELECT holder, pid FROM leases WHERE name = ?", (name,)
            )
            gone = any(_holder_is_gone(row["holder"], row["pid"]) for row in held)
            cursor = await db.execute(
                "UPDATE leases SET holder = ?, pid = ?, expires_at = ?, "
                "acquired_at = CASE WHEN holder = ? THEN acquired_at ELSE ? END "
                "WHERE name = ? AND (holder = ? OR expires_at <= ? OR ?)",
                (holder, pid, expires, holder, now_text, name, holder, now_text, gone),
            )
            if cursor.rowcount == 1:
                return True
            cursor = await db.execute(
                "INSERT INTO leases (name, holder, pid, acquired_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (name, holder, pid, now_text, expires),
            )
            return cursor.rowcount == 1

    async def release_lease(self, name: str, holder: str) -> None:
        async with self.transaction() as db:
            await db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    async def get_lease(self, name: str) -> Lease | None:
        rows = await self._fetchall("SELECT * FROM leases WHERE name = ?", (name,))
        if not rows:
            return None
        row = rows[0]
        return Lease(
            name=row["name"],
            holder=row["holder"],
            pid=row["pid"],
            acquired_at=datetime.fromisoformat(row["acquired_at"]),
            expires_at=datetime.fromisoformat(row["expires_at"]),
        )

    # -- benchmarks -------------------------------------------------------------------------

    async def replace_benchmarks(self, source: str, rows: list[Benchmark]) -> int:
        """Store measurements imported from `source`, in place of any imported from it before
        (so importing a file again does not count it twice); returns how many were replaced."""
        async with self.transaction() as db:
            cursor = await db.execute("DELETE FROM benchmarks WHERE source = ?", (source,))
            replaced = cursor.rowcount
            await db.executemany(
                _INSERT_BENCHMARK, [_benchmark_values(row, source) for row in rows]
            )
        return replaced

    async def add_benchmark(self, row: Benchmark) -> Benchmark:
        """Store one measurement gpushop made itself (on a session's node); returns it with its
        id."""
        async with self.transaction() as db:
            cursor = await db.execute(_INSERT_BENCHMARK, _benchmark_values(row, row.source))
        return row.model_copy(update={"id": cursor.lastrowid})

    async def list_benchmarks(self) -> list[Benchmark]:
        """Every imported measurement, in import order."""
        rows = await self._fetchall("SELECT * FROM benchmarks ORDER BY id")
        return [Benchmark.model_validate(dict(row)) for row in rows]
