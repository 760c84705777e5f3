"""The store: migrations, file safety, sessions with compare-and-set, audit, leases.

Every test that takes `store` runs twice: on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.config import Settings
from gpushop_tui.errors import DatabaseUnavailable, DataDirError
from gpushop_tui.models import AuditEvent, InstanceState, SessionStatus, Severity
from gpushop_tui.store import DuplicateSession, Store
from gpushop_tui.store.backends import migrations
from gpushop_tui.store.db import this_host
from tests.support.factories import make_session
from tests.support.postgres import Postgres, fresh_database

EXPECTED_TABLES = {
    "meta",
    "sessions",
    "audit",
    "budgets",
    "budget_alerts",
    "benchmarks",
    "offer_failures",
    "leases",
}


@pytest.fixture
def store(backend_store: Store) -> Store:
    return backend_store


async def _columns(store: Store) -> dict[str, dict[str, str]]:
    """Each table's columns and their broad type (integer, real or text), read from the
    database's own catalogue."""
    broad = {"bigint": "integer", "double precision": "real"}
    if store.dialect == "sqlite":
        tables = await store._db.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")
        found = {}
        for table in tables:
            rows = await store._db.fetch(f"PRAGMA table_info('{table['name']}')")
            found[table["name"]] = {r["name"]: r["type"].lower() for r in rows}
        return found
    rows = await store._db.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema()"
    )
    found = {}
    for row in rows:
        kind = broad.get(row["data_type"], row["data_type"])
        found.setdefault(row["table_name"], {})[row["column_name"]] = kind
    return found


async def test_migrates_an_empty_database(store: Store) -> None:
    assert await store.schema_version() == migrations(store.dialect)[-1][0]
    assert set(await _columns(store)) >= EXPECTED_TABLES


async def test_both_dialects_end_at_the_same_schema(
    settings: Settings, tmp_path: Path, postgres: Postgres
) -> None:
    """Same schema number, same tables, same columns of the same broad types: a migration
    written for one dialect only fails here."""
    assert migrations("sqlite")[-1][0] == migrations("postgres")[-1][0]
    lite = await Store.open(tmp_path / "lite.db")
    async with fresh_database(postgres) as url:
        pg = await Store.open(tmp_path / "unused.db", url)
        try:
            assert await _columns(pg) == await _columns(lite)
        finally:
            await pg.aclose()
            await lite.aclose()


async def test_reopen_keeps_data_and_install_id(settings: Settings, clock: FakeClock) -> None:
    settings.paths.prepare()
    first = await Store.open(settings.paths.db_file)
    session = make_session(clock.now(), first.install_id)
    await first.insert_session(session)
    install_id = first.install_id
    await first.aclose()

    second = await Store.open(settings.paths.db_file)
    try:
        assert second.install_id == install_id
        assert await second.schema_version() == migrations()[-1][0]
        assert await second.get_session(session.id) == session
    finally:
        await second.aclose()


async def test_schema_6_names_ended_sessions_and_keeps_audit_links(settings: Settings) -> None:
    """A database of schema 5 (before power cycles): a destroyed session that said `stopped`
    says `ended`, a kept one stays `stopped`, a stop under way keeps its disk, budgets and the
    audit rows that point at the sessions survive the table rebuild."""
    settings.paths.prepare()
    with sqlite3.connect(settings.paths.db_file) as conn:
        for _, script in migrations()[:5]:
            conn.executescript(script)
        conn.execute("PRAGMA user_version = 5")
        columns = [
            "id, consumer, provider, offer_id, offer_json, label, status, instance, workload,",
            "reservation_hours, expires_at, hard_max_at, idle_timeout_min, storage_policy,",
            "created_at, state_entered_at",
        ]
        rows = [
            ("ended1", "stopped", "gone", "destroy"),
            ("kept01", "stopped", "live", "keep"),
            ("going1", "stopping", "live", "keep"),
        ]
        offer = make_session(FakeClock().now()).offer.model_dump_json()
        for sid, status, instance, policy in rows:
            conn.execute(
                f"INSERT INTO sessions ({' '.join(columns)}) VALUES "
                "(?, 'alice', 'vastai', 'vastai:1', ?, ?, ?, ?, 'interactive', 1, "
                "'2026-01-01T01:00:00.000000+00:00', '2026-01-01T12:00:00.000000+00:00', 0, ?, "
                "'2026-01-01T00:00:00.000000+00:00', '2026-01-01T00:00:00.000000+00:00')",
                (sid, offer, f"gpushop-abcd1234-{sid}", status, instance, policy),
            )
            conn.execute(
                "INSERT INTO audit (at, kind, severity, session_id, message, data_json) "
                "VALUES ('2026-01-01T00:00:00.000000+00:00', 'x', 'info', ?, 'm', '{}')",
                (sid,),
            )
        conn.execute(
            "INSERT INTO budgets (scope, kind, limit_value, action, created_at) "
            "VALUES ('*', 'burn_rate', 5, 'stop', '2026-01-01T00:00:00.000000+00:00')"
        )
    store = await Store.open(settings.paths.db_file)
    try:
        assert await store.schema_version() == migrations()[-1][0]
        ended, kept, going = [await store.get_session(sid) for sid, *_ in rows]
        assert ended is not None and ended.status == SessionStatus.ENDED and ended.closed
        assert kept is not None and kept.status == SessionStatus.STOPPED and not kept.closed
        assert going is not None and going.keep_disk and going.cycles == []
        assert len(await store.list_audit(session_id="kept01")) == 1
        assert [b.kind for b in await store.list_budgets()] == ["burn_rate"]
    finally:
        await store.aclose()
    with sqlite3.connect(settings.paths.db_file) as conn:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


async def test_refuses_a_database_from_a_newer_gpushop(settings: Settings) -> None:
    settings.paths.prepare()
    with sqlite3.connect(settings.paths.db_file) as conn:
        conn.execute("PRAGMA user_version = 999")
    with pytest.raises(DataDirError, match="newer than this gpushop"):
        await Store.open(settings.paths.db_file)


async def test_database_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "gpushop.db")
    await store.aclose()
    assert stat.S_IMODE((tmp_path / "gpushop.db").stat().st_mode) == 0o600
    with sqlite3.connect(tmp_path / "gpushop.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_unopenable_database_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataDirError, match="cannot be opened"):
        await Store.open(blocker / "gpushop.db")


async def test_install_ids_differ_between_data_dirs(tmp_path: Path) -> None:
    one = await Store.open(tmp_path / "one.db")
    two = await Store.open(tmp_path / "two.db")
    try:
        assert len(one.install_id) == 8
        assert one.install_id != two.install_id
    finally:
        await one.aclose()
        await two.aclose()


async def test_compare_and_set_applies_only_when_expectations_hold(
    store: Store, clock: FakeClock
) -> None:
    session = make_session(clock.now())
    await store.insert_session(session)
    later = clock.now() + timedelta(seconds=5)

    moved = await store.update_session(
        session.id,
        {"status": SessionStatus.PENDING},
        status=SessionStatus.PROVISIONING,
        instance=InstanceState.CREATING,
        state_entered_at=later,
    )
    assert moved is not None
    assert moved.status == SessionStatus.PROVISIONING
    assert moved.version == session.version + 1
    assert moved.state_entered_at == later

    stale = await store.update_session(
        session.id,
        {"status": SessionStatus.PENDING},
        status=SessionStatus.FAILED,
        state_entered_at=later,
    )
    assert stale is None
    assert (await store.get_session(session.id)) == moved


async def test_state_change_must_record_when_it_happened(store: Store, clock: FakeClock) -> None:
    session = make_session(clock.now())
    await store.insert_session(session)
    with pytest.raises(ValueError, match="state_entered_at"):
        await store.update_session(session.id, {}, status=SessionStatus.RUNNING)


async def test_update_rejects_unknown_and_invalid_fields(store: Store, clock: FakeClock) -> None:
    session = make_session(clock.now())
    await store.insert_session(session)
    with pytest.raises(ValueError, match="not session fields"):
        await store.update_session(session.id, {}, id="other")
    with pytest.raises(ValueError):
        await store.update_session(session.id, {}, ssh_port=70000)
    assert await store.get_session(session.id) == session


async def test_request_id_is_unique(store: Store, clock: FakeClock) -> None:
    first = make_session(clock.now(), request_id="req-1")
    await store.insert_session(first)
    assert await store.session_by_request_id("req-1") == first
    with pytest.raises(DuplicateSession):
        await store.insert_session(make_session(clock.now(), request_id="req-1"))


async def test_open_sessions_include_everything_that_may_bill(
    store: Store, clock: FakeClock
) -> None:
    now = clock.now()
    closed = make_session(now, status=SessionStatus.ENDED, instance=InstanceState.GONE)
    never_created = make_session(now, status=SessionStatus.FAILED, instance=InstanceState.NONE)
    failed_but_live = make_session(now, status=SessionStatus.FAILED, instance=InstanceState.LIVE)
    unknown = make_session(now, status=SessionStatus.ENDED, instance=InstanceState.UNKNOWN)
    running = make_session(now, status=SessionStatus.RUNNING, instance=InstanceState.LIVE)
    for session in (closed, never_created, failed_but_live, unknown, running):
        await store.insert_session(session)

    open_ids = {s.id for s in await store.list_sessions(open_only=True)}
    assert open_ids == {failed_but_live.id, unknown.id, running.id}
    assert len(await store.list_sessions()) == 5
    assert [s.id for s in await store.list_sessions(status=SessionStatus.RUNNING)] == [running.id]


async def test_audit_round_trip(store: Store, clock: FakeClock) -> None:
    session = make_session(clock.now())
    await store.insert_session(session)
    stored = await store.add_audit(
        AuditEvent(
            at=clock.now(),
            kind="alert",
            severity=Severity.WARNING,
            session_id=session.id,
            message="destroy failed",
            data={"attempt": 3},
        )
    )
    assert stored.id is not None
    await store.add_audit(AuditEvent(at=clock.now(), kind="note", message="other"))
    events = await store.list_audit(session_id=session.id)
    assert events == [stored]
    assert [e.message for e in await store.list_audit()] == ["destroy failed", "other"]
    assert [e.message for e in await store.list_audit(after_id=stored.id)] == ["other"]


async def test_lease_is_exclusive_until_it_expires(store: Store, clock: FakeClock) -> None:
    now = clock.now()
    assert await store.acquire_lease("supervisor", "tui-1", 100, now, ttl_s=60)
    assert not await store.acquire_lease("supervisor", "cron-2", 200, now, ttl_s=60)
    assert await store.acquire_lease("supervisor", "tui-1", 100, now + timedelta(seconds=30), 60)
    lease = await store.get_lease("supervisor")
    assert lease is not None
    assert (lease.holder, lease.pid) == ("tui-1", 100)
    assert lease.acquired_at == now
    assert lease.expires_at == now + timedelta(seconds=90)

    assert not await store.acquire_lease(
        "supervisor", "cron-2", 200, now + timedelta(seconds=89), 60
    )
    assert await store.acquire_lease("supervisor", "cron-2", 200, now + timedelta(seconds=90), 60)
    await store.release_lease("supervisor", "tui-1")
    assert (await store.get_lease("supervisor")).holder == "cron-2"  # type: ignore[union-attr]
    await store.release_lease("supervisor", "cron-2")
    assert await store.get_lease("supervisor") is None


def _gone_pid() -> int:
    """The pid of a process that has exited (and been reaped), so no process has it now."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)


async def test_a_lease_held_by_a_gone_process_on_this_host_is_taken_at_once(
    store: Store, clock: FakeClock
) -> None:
    now = clock.now()
    dead = _gone_pid()
    here = this_host()
    assert await store.acquire_lease("supervisor", f"{here}:{dead}:dead01", dead, now, 60)

    assert await store.acquire_lease(
        "supervisor", f"{here}:{os.getpid()}:new001", os.getpid(), now, 60
    )
    lease = await store.get_lease("supervisor")
    assert lease is not None
    assert (lease.holder, lease.pid, lease.acquired_at) == (
        f"{here}:{os.getpid()}:new001",
        os.getpid(),
        now,
    )


async def test_a_lease_held_by_a_live_process_or_another_host_waits_for_expiry(
    store: Store, clock: FakeClock
) -> None:
    now = clock.now()
    here = this_host()
    live = os.getppid()
    assert await store.acquire_lease("supervisor", f"{here}:{live}:live01", live, now, 60)
    assert not await store.acquire_lease(
        "supervisor", f"{here}:{os.getpid()}:new001", os.getpid(), now, 60
    )

    dead = _gone_pid()
    await store.release_lease("supervisor", f"{here}:{live}:live01")
    assert await store.acquire_lease("supervisor", f"elsewhere:{dead}:far001", dead, now, 60)
    mine = f"{here}:{os.getpid()}:new001"
    assert not await store.acquire_lease("supervisor", mine, os.getpid(), now, 60)
    assert await store.acquire_lease(
        "supervisor", mine, os.getpid(), now + timedelta(seconds=60), 60
    )


async def test_replicas_opening_a_fresh_postgresql_at_once_migrate_it_once(
    tmp_path: Path, postgres: Postgres
) -> None:
    async with fresh_database(postgres) as url:
        opened = await asyncio.gather(*(Store.open(tmp_path / "unused.db", url) for _ in range(4)))
        try:
            assert len({store.install_id for store in opened}) == 1
            versions = {await store.schema_version() for store in opened}
            assert versions == {migrations("postgres")[-1][0]}
        finally:
            for store in opened:
                await store.aclose()


async def test_postgresql_refuses_a_schema_from_a_newer_gpushop_and_names_no_password(
    tmp_path: Path, postgres: Postgres
) -> None:
    async with fresh_database(postgres) as url:
        store = await Store.open(tmp_path / "unused.db", url)
        async with store._db.transaction() as db:
            await db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
        await store.aclose()
        with pytest.raises(DataDirError, match="newer than this gpushop"):
            await Store.open(tmp_path / "unused.db", url)
    gone = f"postgresql://someone:pg-test-word@127.0.0.1:{postgres.port}/no_such_database"
    with pytest.raises(DataDirError, match=r"cannot be opened") as refused:
        await Store.open(tmp_path / "unused.db", gone)
    assert "pg-test-word" not in str(refused.value)


async def test_a_postgresql_that_stops_answering_is_one_sentence(
    tmp_path: Path, postgres: Postgres
) -> None:
    """The server ends the connection under a running statement (a restart, a failover)."""
    import asyncpg

    async with fresh_database(postgres) as url:
        store = await Store.open(tmp_path / "unused.db", url)
        admin = await asyncpg.connect(postgres.url)
        try:
            running = asyncio.create_task(store._db.fetch("SELECT pg_sleep(60) AS slept"))
            for _ in range(1000):  # until the statement runs on the server, 10 s at most
                pids = await admin.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
                )
                if pids:
                    break
                await asyncio.sleep(0.01)
            await admin.execute("SELECT pg_terminate_backend($1)", pids[0]["pid"])
            with pytest.raises(DatabaseUnavailable, match=r"^database postgresql://\S+ does not"):
                await running
        finally:
            await admin.close()
            await store.aclose()


async def test_a_write_that_waits_too_long_for_the_postgresql_write_lock_is_one_sentence(
    tmp_path: Path, postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncpg

    from gpushop_tui.store import backends

    monkeypatch.setitem(backends.SERVER_SETTINGS, "lock_timeout", "200ms")
    async with fresh_database(postgres) as url:
        store = await Store.open(tmp_path / "unused.db", url)
        holder = await asyncpg.connect(url)  # another replica, inside a long write
        try:
            async with holder.transaction():
                await holder.execute("SELECT pg_advisory_xact_lock($1)", backends.WRITE_LOCK_KEY)
                with pytest.raises(DatabaseUnavailable, match="is busy: a write waited more"):
                    await store.add_audit(AuditEvent(at=FakeClock().now(), kind="n", message="m"))
            assert (
                await store.add_audit(AuditEvent(at=FakeClock().now(), kind="n", message="m"))
            ).id
        finally:
            await holder.close()
            await store.aclose()
