"""The one place that speaks SQL: the database that is the source of truth.

SQLite (a file in the data dir) by default, PostgreSQL (`GPUSHOP_DATABASE_URL`) for a team
server; `backends.py` runs the one SQL text on either. Every write is one transaction under the
database's write lock, and session changes are compare-and-set on the row's version, so
concurrent writers (the TUI, `--serve` replicas, a cron `reconcile`) never lose an update.
Migrations are numbered SQL files per dialect, applied at open.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets as stdlib_secrets
import socket
import sqlite3
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gpushop_tui.config import url_without_password
from gpushop_tui.errors import DataDirError
from gpushop_tui.models import AuditEvent, Benchmark, Budget, InstanceState, Session, SessionStatus
from gpushop_tui.secrets import redact
from gpushop_tui.store.backends import (
    Database,
    DuplicateRow,
    PostgresDatabase,
    Row,
    SchemaError,
    SqliteDatabase,
    migrations,
)

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


@functools.cache
def this_host() -> str:
    """This machine, as lease holders and audit rows name it: the hostname, and a digest of the
    boot and the pid namespace, so that containers sharing a hostname (but not their pids) never
    take each other's process ids for their own."""
    marks = [socket.gethostname()]
    with contextlib.suppress(OSError):
        marks.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        marks.append(str(os.stat("/proc/self/ns/pid").st_ino))
    digest = hashlib.sha256("/".join(marks).encode()).hexdigest()[:6]
    return f"{socket.gethostname()}~{digest}"


def _holder_is_gone(holder: str, pid: int) -> bool:
    """Whether a lease holder ("host:pid:token") ran on this host and its process is gone.

    A holder on another host, or one whose pid is alive (even if reused by another process, or
    owned by another user), is left to its lease's expiry.
    """
    if holder.split(":", 1)[0] != this_host() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


async def _open_sqlite(path: Path) -> Database:
    try:
        return await SqliteDatabase.open(path)
    except (OSError, sqlite3.Error) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DataDirError(f"database {path} cannot be opened: {reason}") from None


async def _open_postgres(url: str) -> Database:
    import asyncpg

    try:
        return await PostgresDatabase.open(url)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise DataDirError(
            f"database {url_without_password(url)} cannot be opened: {reason} "
            "(check GPUSHOP_DATABASE_URL)"
        ) from None


def _audit_from_row(row: Row) -> AuditEvent:
    return AuditEvent(
        id=row["id"],
        at=datetime.fromisoformat(row["at"]),
        kind=row["kind"],
        severity=row["severity"],
        session_id=row["session_id"],
        message=row["message"],
        data=json.loads(row["data_json"]),
    )


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
    """The gpushop database. Open with `await Store.open(path, database_url)`; close with
    `aclose()`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._install_id = ""
        self.origin = f"{this_host()}:{os.getpid()}:{stdlib_secrets.token_hex(3)}"
        """This process, as the audit rows it writes and the lease it holds name it."""

    @classmethod
    async def open(cls, path: Path, database_url: str | None = None) -> Store:
        """Open the SQLite file at `path` (created 0600), or the PostgreSQL database at
        `database_url` when one is given, and bring its schema up to date."""
        db = await (_open_postgres(database_url) if database_url else _open_sqlite(path))
        store = cls(db)
        try:
            await db.migrate(migrations(db.dialect))
            store._install_id = await store._ensure_install_id()
        except SchemaError as err:
            await db.close()
            raise DataDirError(str(err)) from None
        except BaseException:
            await db.close()
            raise
        return store

    async def aclose(self) -> None:
        await self._db.close()

    @property
    def where(self) -> str:
        """The database as it may be shown (a path, or a URL without its password)."""
        return self._db.where

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgres"."""
        return self._db.dialect

    @property
    def install_id(self) -> str:
        """Random per database; part of every instance label, keeping installations apart."""
        return self._install_id

    async def schema_version(self) -> int:
        return await self._db.schema_version()

    async def _ensure_install_id(self) -> str:
        async with self._db.transaction() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES ('install_id', ?) ON CONFLICT DO NOTHING",
                (stdlib_secrets.token_hex(4),),
            )
            rows = await db.fetch("SELECT value FROM meta WHERE key = 'install_id'")
        return str(rows[0]["value"])

    # -- sessions ---------------------------------------------------------------------------

    async def insert_session(self, session: Session) -> None:
        """Insert a new session row (phase one of the two-phase create)."""
        row = self._session_row(session)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        try:
            async with self._db.transaction() as db:
                await db.execute(
                    f"INSERT INTO sessions ({columns}) VALUES ({marks})", tuple(row.values())
                )
        except DuplicateRow as err:
            raise DuplicateSession(str(err)) from None

    async def get_session(self, session_id: str) -> Session | None:
        rows = await self._db.fetch("SELECT * FROM sessions WHERE id = ?", (session_id,))
        return self._session_from_row(rows[0]) if rows else None

    async def session_ids_from(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to `limit` session ids that start with `prefix`, in order (an equal id first).

        A range on the primary key rather than LIKE: it uses the index, is case-sensitive and
        takes `%` and `_` as themselves.
        """
        rows = await self._db.fetch(
            "SELECT id FROM sessions WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        )
        return [str(row["id"]) for row in rows]

    async def session_by_request_id(self, request_id: str) -> Session | None:
        rows = await self._db.fetch("SELECT * FROM sessions WHERE request_id = ?", (request_id,))
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
        rows = await self._db.fetch(
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
        async with self._db.transaction() as db:
            rows = await db.fetch("SELECT * FROM sessions WHERE id = ?", (session_id,))
            if not rows:
                return None
            current = self._session_from_row(rows[0])
            if any(getattr(current, name) != value for name, value in expect.items()):
                return None
            updated = Session.model_validate(
                current.model_dump() | changes | {"version": current.version + 1}
            )
            new_row = self._session_row(updated)
            columns = [_COLUMN_OF.get(name, name) for name in changes]
            assignments = ", ".join(f"{column} = ?" for column in columns) + ", version = ?"
            values = [new_row[column] for column in columns] + [updated.version]
            changed = await db.execute(
                f"UPDATE sessions SET {assignments} WHERE id = ? AND version = ?",
                (*values, session_id, current.version),
            )
            if changed != 1:
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
    def _session_from_row(row: Row) -> Session:
        data = {name: row[name] for name in _SESSION_COLUMNS}
        data["offer"] = json.loads(row["offer_json"])
        if data["workload_spec"] is not None:
            data["workload_spec"] = json.loads(data["workload_spec"])
        data["cycles"] = json.loads(data["cycles"])
        return Session.model_validate(data)

    # -- audit ------------------------------------------------------------------------------

    async def add_audit(self, event: AuditEvent) -> AuditEvent:
        """Append one audit event (message and data redacted, marked as this process's);
        returns it with its id."""
        message = redact(event.message)
        data_json = redact(json.dumps(event.data, sort_keys=True, default=str))
        async with self._db.transaction() as db:
            inserted = await db.fetch(
                "INSERT INTO audit (at, kind, severity, session_id, message, data_json, origin) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    to_db_time(event.at),
                    event.kind,
                    event.severity.value,
                    event.session_id,
                    message,
                    data_json,
                    self.origin,
                ),
            )
        event_id = inserted[0]["id"]
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
        rows = await self._db.fetch(
            f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [_audit_from_row(row) for row in reversed(rows)]

    async def audit_after(
        self, after_id: int, limit: int, *, not_from: str | None = None
    ) -> list[AuditEvent]:
        """The oldest `limit` audit events after `after_id`, oldest first, leaving out those
        the process `not_from` wrote: a reader that follows the log, batch after batch."""
        where = "id > ?"
        params: list[Any] = [after_id]
        if not_from is not None:
            where += " AND (origin IS NULL OR origin <> ?)"
            params.append(not_from)
        rows = await self._db.fetch(
            f"SELECT * FROM audit WHERE {where} ORDER BY id LIMIT ?", (*params, limit)
        )
        return [_audit_from_row(row) for row in rows]

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
        async with self._db.transaction() as db:
            await db.execute(
                "INSERT INTO offer_failures (offer_id, provider, gpu_name, session_id, reason, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (offer_id, provider, gpu_name, session_id, redact(reason), to_db_time(at)),
            )

    async def offer_failures_since(self, since: datetime) -> dict[str, tuple[int, datetime]]:
        """Per offer id: failures at or after `since`, and when the latest one happened."""
        rows = await self._db.fetch(
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
        rows = await self._db.fetch(
            f"SELECT * FROM sessions WHERE {' AND '.join(where)} ORDER BY instance_created_at, id",
            tuple(params),
        )
        return [self._session_from_row(row) for row in rows]

    async def set_budget(self, budget: Budget, now: datetime) -> Budget:
        """Create the budget, or replace the limit and action of the one of the same scope and
        kind (there is one per consumer and kind, and one global per kind)."""
        async with self._db.transaction() as db:
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
            rows = await db.fetch(
                "SELECT * FROM budgets WHERE scope = ? AND kind = ?",
                (budget.consumer or GLOBAL_SCOPE, budget.kind.value),
            )
        return self._budget_from_row(rows[0])

    async def list_budgets(self) -> list[Budget]:
        rows = await self._db.fetch("SELECT * FROM budgets ORDER BY scope, kind")
        return [self._budget_from_row(row) for row in rows]

    async def delete_budget(self, budget_id: int) -> bool:
        """Remove a budget (and the thresholds it fired); False if there was none."""
        async with self._db.transaction() as db:
            return await db.execute("DELETE FROM budgets WHERE id = ?", (budget_id,)) == 1

    async def fire_budget_threshold(
        self, budget_id: int, month: str, threshold: int, at: datetime
    ) -> bool:
        """Record that a threshold fired this month; False if it had already fired."""
        async with self._db.transaction() as db:
            fired = await db.execute(
                "INSERT INTO budget_alerts (budget_id, month, threshold, fired_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (budget_id, month, threshold, to_db_time(at)),
            )
            return fired == 1

    @staticmethod
    def _budget_from_row(row: Row) -> Budget:
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
        async with self._db.transaction() as db:
            held = await db.fetch("SELECT holder, pid FROM leases WHERE name = ?", (name,))
            gone = any(_holder_is_gone(row["holder"], row["pid"]) for row in held)
            renewed = await db.execute(
                "UPDATE leases SET holder = ?, pid = ?, expires_at = ?, "
                "acquired_at = CASE WHEN holder = ? THEN acquired_at ELSE ? END "
                "WHERE name = ? AND (holder = ? OR expires_at <= ? OR ?)",
                (holder, pid, expires, holder, now_text, name, holder, now_text, gone),
            )
            if renewed == 1:
                return True
            taken = await db.execute(
                "INSERT INTO leases (name, holder, pid, acquired_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (name, holder, pid, now_text, expires),
            )
            return taken == 1

    async def release_lease(self, name: str, holder: str) -> None:
        async with self._db.transaction() as db:
            await db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    async def get_lease(self, name: str) -> Lease | None:
        rows = await self._db.fetch("SELECT * FROM leases WHERE name = ?", (name,))
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
        async with self._db.transaction() as db:
            replaced = await db.execute("DELETE FROM benchmarks WHERE source = ?", (source,))
            await db.executemany(
                _INSERT_BENCHMARK, [_benchmark_values(row, source) for row in rows]
            )
        return replaced

    async def add_benchmark(self, row: Benchmark) -> Benchmark:
        """Store one measurement gpushop made itself (on a session's node); returns it with its
        id."""
        async with self._db.transaction() as db:
            inserted = await db.fetch(
                f"{_INSERT_BENCHMARK} RETURNING id", _benchmark_values(row, row.source)
            )
        return row.model_copy(update={"id": inserted[0]["id"]})

    async def list_benchmarks(self) -> list[Benchmark]:
        """Every imported measurement, in import order."""
        rows = await self._db.fetch("SELECT * FROM benchmarks ORDER BY id")
        return [Benchmark.model_validate(dict(row)) for row in rows]
