"""Two `gpushop --serve` replicas on one PostgreSQL: both answer the API, exactly one supervises,
and when that one is killed with -9 the other takes the lease and carries on.

Real processes on loopback: a throwaway PostgreSQL server, the standalone simulator and two
servers sharing one data dir (SSH keys and API tokens, as replicas on a shared volume would).
Before the kill, the supervising replica has work half done: a teardown whose destroy call fails
(the destroy queue), two sessions about to expire, one about to be idle too long; after the
kill an instance vanishes at the provider (only reconciliation can tell). The survivor must
finish all of it and leave no instance billing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop_tui.models import Session
from gpushop_tui.store import Store
from tests.conftest import ROOT, run_gpushop, running_sim, sim_env
from tests.support.postgres import Postgres, fresh_database_for_processes
from tests.support.serving import serving

LEASE_TTL_S = 4.0
TICK_S = 0.3
POLL_S = 0.1
DESTROY_FAILS = {"provider": "vastai", "endpoint": "destroy", "status": 500}


def until(what: str, check: Any, limit_s: float = 60) -> Any:
    """Poll `check()` until it returns something true; fail naming `what` after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(POLL_S)
    raise AssertionError(f"never: {what}")


def health(base: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base}/health", timeout=10).json())


def ready(base: str) -> bool:
    return httpx.get(f"{base}/ready", timeout=10).status_code == 200


def stored(url: str, home: Path, session_id: str) -> Session:
    """The session as the shared database holds it."""

    async def read() -> Session:
        store = await Store.open(home / "unused.db", url)
        try:
            found = await store.get_session(session_id)
        finally:
            await store.aclose()
        assert found is not None
        return found

    return asyncio.run(read())


def change(url: str, home: Path, session_id: str, **changes: Any) -> None:
    """Compare-and-set `changes` on one session, as a third writer on the shared database."""

    async def write() -> None:
        store = await Store.open(home / "unused.db", url)
        try:
            current = await store.get_session(session_id)
            assert current is not None
            assert await store.update_session(session_id, {"version": current.version}, **changes)
        finally:
            await store.aclose()

    asyncio.run(write())


@pytest.fixture
def database(postgres: Postgres) -> Iterator[str]:
    with fresh_database_for_processes(postgres) as url:
        yield url


@pytest.mark.timeout(240)
def test_two_servers_one_supervisor_and_the_survivor_finishes_everything_after_kill_9(
    tmp_path: Path, database: str
) -> None:
    home = tmp_path / "shared-home"
    with running_sim(tmp_path / "sim", 2026) as info:
        env = (
            os.environ
            | sim_env(info, "vastai")
            | {
                "GPUSHOP_HOME": str(home),
                "GPUSHOP_DATABASE_URL": database,
                "GPUSHOP_LEASE_TTL_S": str(LEASE_TTL_S),
                "GPUSHOP_SUPERVISOR_TICK_S": str(TICK_S),
                "GPUSHOP_RECONCILE_INTERVAL_S": "5",
                "GPUSHOP_DESTROY_BACKOFF_MAX_S": "1",
                "GPUSHOP_BOOT_DELAY_SCALE": "0.02",
                "PYTHONPATH": str(ROOT),
            }
        )
        token = run_gpushop("serve-token", env=env).stdout.strip()  # both replicas share it
        auth = {"Authorization": f"Bearer {token}"}
        with serving(env) as (first, first_process):
            until("the first replica is ready", lambda: ready(first))
            with serving(env) as (second, _):
                until("the second replica is ready", lambda: ready(second))
                one, two = health(first), health(second)
                assert (one["supervising"], two["supervising"]) == (True, False)
                assert one["supervisor"] == two["supervisor"] == one["process"]
                scraped = httpx.get(f"{second}/metrics", timeout=10).text
                assert f'gpushop_supervisor{{holder="{one["process"]}"}} 1.0' in scraped
                assert f'gpushop_supervising{{process="{two["process"]}"}} 0.0' in scraped

                menu = httpx.get(
                    f"{second}/api/v1/inventory?provider=vastai&limit=5", headers=auth, timeout=30
                ).json()
                offers = [offer["id"] for offer in menu["offers"]]
                assert len(offers) == 5, menu
                ids = []
                for n, offer in enumerate(offers):  # both replicas take rentals
                    base = (first, second)[n % 2]
                    body = {"offer_id": offer, "consumer_id": "team", "reservation_hours": 1}
                    made = httpx.post(
                        f"{base}/api/v1/sessions", json=body, headers=auth, timeout=60
                    )
                    assert made.status_code == 201, made.text
                    ids.append(made.json()["session"]["id"])
                queued, expiring, expiring_too, idle, vanishing = ids

                def status(session_id: str) -> dict[str, Any]:
                    got = httpx.get(
                        f"{second}/api/v1/sessions/{session_id}", headers=auth, timeout=10
                    )
                    return dict(got.json())

                for session_id in ids:
                    until(
                        f"{session_id} runs", lambda s=session_id: status(s)["status"] == "running"
                    )
                until("the first idle sample", lambda: status(idle)["idle_reason"])

                fault = httpx.post(f"{info['control']}/faults", json=DESTROY_FAILS, timeout=10)
                fault.raise_for_status()
                ended = httpx.post(f"{first}/api/v1/sessions/{queued}/done", headers=auth)
                assert ended.status_code == 202, ended.text
                until(
                    "a failed destroy queued",
                    lambda: stored(database, home, queued).destroy_attempts >= 1,
                )
                soon = datetime.now(UTC) + timedelta(seconds=2)
                for session_id in (expiring, expiring_too):
                    change(database, home, session_id, expires_at=soon)
                change(database, home, idle, idle_timeout_min=0.01)

                first_process.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                first_process.wait(timeout=10)
                httpx.delete(f"{info['control']}/faults", timeout=10).raise_for_status()
                instance = stored(database, home, vanishing).instance_id
                gone = httpx.post(
                    f"{info['control']}/instances/vastai/{instance}/vanish", timeout=10
                )
                gone.raise_for_status()

                until("the survivor supervises", lambda: health(second)["supervising"])
                takeover = time.monotonic() - killed
                assert takeover <= LEASE_TTL_S + 2 * TICK_S + 1, takeover
                assert health(second)["supervisor"] == two["process"]

                closed = {}
                for session_id in ids:
                    closed[session_id] = until(
                        f"{session_id} closed",
                        lambda s=session_id: (
                            stored(database, home, s) if stored(database, home, s).closed else None
                        ),
                    )
                assert set(closed) == set(ids)

                def said(session_id: str) -> str:
                    got = httpx.get(
                        f"{second}/api/v1/audit?session_id={session_id}", headers=auth, timeout=10
                    )
                    return " | ".join(event["message"] for event in got.json()["events"])

                for session_id in (expiring, expiring_too):
                    assert "reservation expired" in said(session_id)
                assert "idle for" in said(idle)
        world = httpx.get(f"{info['control']}/state", timeout=10).json()["instances"]["vastai"]
        ours = [i for i in world if any((i["label"] or "").endswith(s) for s in ids)]
        assert len(ours) == 5
        assert [i for i in ours if i["phase"] not in ("destroyed", "vanished")] == []
    print(f"lease takeover after kill -9: {takeover:.2f} s")


@pytest.mark.timeout(120)
def test_a_hung_supervisor_loses_the_lease_at_its_expiry_and_does_not_take_it_back(
    tmp_path: Path, database: str
) -> None:
    """A supervisor that stops answering (SIGSTOP: a hung process, or a host cut off) still
    exists, so the other replica waits for its lease to expire, no longer; when the hung one
    wakes up it finds the lease taken and only watches: never two supervisors."""
    env = os.environ | {
        "GPUSHOP_HOME": str(tmp_path / "shared-home"),
        "GPUSHOP_DATABASE_URL": database,
        "GPUSHOP_LEASE_TTL_S": str(LEASE_TTL_S),
        "GPUSHOP_SUPERVISOR_TICK_S": str(TICK_S),
        "PYTHONPATH": str(ROOT),
    }
    run_gpushop("serve-token", env=env)
    with serving(env) as (first, first_process), serving(env) as (second, _):
        until("both replicas are ready", lambda: ready(first) and ready(second))
        assert health(first)["supervising"] and not health(second)["supervising"]
        expires = datetime.fromisoformat(health(second)["supervisor_lease_expires_at"])

        first_process.send_signal(signal.SIGSTOP)
        try:
            until("the other replica supervises", lambda: health(second)["supervising"], 30)
            took_over = datetime.now(UTC)
            assert took_over >= expires
            assert (took_over - expires).total_seconds() <= LEASE_TTL_S / 2 + 2 * TICK_S + 1
        finally:
            first_process.send_signal(signal.SIGCONT)
        until("the woken replica only watches", lambda: not health(first)["supervising"])
        assert health(second)["supervising"]
        assert health(first)["supervisor"] == health(second)["process"]
