"""Lifecycle figures: a supervisor tick over many open sessions, and rentals on the simulator."""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from pathlib import Path

import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.config import load_settings
from gpushop_tui.core.shopper import Shopper
from gpushop_tui.models import (
    Budget,
    BudgetKind,
    InstanceState,
    ProvisionRequest,
    SessionStatus,
)
from gpushop_tui.secrets import SecretStore
from tests.core.market import open_market
from tests.support.factories import make_session

pytestmark = pytest.mark.perf

OPEN_SESSIONS = 500


async def test_a_supervisor_tick_over_many_open_sessions(tmp_path: Path) -> None:
    """The per-tick cost of re-reading and checking every open session from the database."""
    clock = FakeClock()
    settings = load_settings({"GPUSHOP_HOME": str(tmp_path)})
    async with await Shopper.open(settings, clock=clock, secrets=SecretStore({})) as shopper:
        for n in range(OPEN_SESSIONS):
            await shopper._store.insert_session(
                make_session(
                    clock.now(),
                    shopper.install_id,
                    id=f"perf{n:06d}",
                    status=SessionStatus.RUNNING,
                    instance=InstanceState.LIVE,
                    instance_id=str(n),
                    instance_created_at=clock.now() - timedelta(days=3),
                    price_per_hour=0.4,
                    idle_timeout_min=0,
                )
            )

        async def ticks() -> list[float]:
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                report = await shopper._supervisor.tick(drive=False, reconcile=False)
                timings.append(time.perf_counter() - started)
            assert report.sessions == OPEN_SESSIONS
            return timings

        plain = await ticks()
        for consumer in (None, "alice"):
            for kind in BudgetKind:
                await shopper._budgets.set(Budget(consumer=consumer, kind=kind, limit=1e9))
        budgeted = await ticks()
    for what, timings in (("", plain), (" with 6 budgets", budgeted)):
        print(
            f"\nsupervisor tick over {OPEN_SESSIONS} open sessions{what}: "
            f"median {statistics.median(timings) * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms"
        )


async def test_rent_to_ready_to_gone_on_the_simulator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Wall time of the core's own work for one Vast rental (fake clock: boot time excluded)."""
    monkeypatch.setenv("GPUSHOP_HOME", str(tmp_path))
    async with open_market(monkeypatch, tmp_path) as market:
        provision, ready, teardown = [], [], []
        for _ in range(5):
            offer = await market.offer("vastai")
            started = time.perf_counter()
            session = await market.run(
                market.shopper.provision(
                    ProvisionRequest(consumer="perf", offer_id=offer.id, idle_timeout_min=0)
                )
            )
            provision.append(time.perf_counter() - started)
            started = time.perf_counter()
            await market.until(session.id, lambda s: s.status == "running", step_s=5)
            ready.append(time.perf_counter() - started)
            started = time.perf_counter()
            await market.shopper.done(session.id)
            await market.until(session.id, lambda s: s.closed)
            teardown.append(time.perf_counter() - started)
    print(
        f"\nvast rental on the simulator (median of 5): provision call "
        f"{statistics.median(provision) * 1000:.0f} ms, readiness "
        f"{statistics.median(ready) * 1000:.0f} ms, done to gone "
        f"{statistics.median(teardown) * 1000:.0f} ms"
    )


async def test_time_to_ready_follows_the_node(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Fake seconds from rental to ready per provider, against the simulated boot (and dpkg
    lock): what gpushop's own waits add (readiness polls, first-SSH budget)."""
    monkeypatch.setenv("GPUSHOP_HOME", str(tmp_path))
    async with open_market(monkeypatch, tmp_path) as market:
        for provider in ("vastai", "tensordock", "bluelobster"):
            timing = market.world.timing[provider]
            session = await market.provision(await market.offer(provider))
            running = await market.until(session.id, lambda s: s.status == "running", step_s=0.25)
            took = (running.state_entered_at - session.created_at).total_seconds()
            print(
                f"\n{provider}: node boots in {timing.boot_s:g} s (dpkg lock "
                f"{timing.dpkg_lock_s:g} s), ready after {took:.2f} fake s"
            )
