"""Sessions pane figures: one countdown tick over 50 open sessions, repaint (the table's and the
detail panel's) included."""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from pathlib import Path

import pytest

from gpushop_tui.models import InstanceState, SessionStatus
from gpushop_tui.tui import fmt
from gpushop_tui.tui.sessions import SessionsPane
from gpushop_tui.tui.widgets.session_detail import DetailSection
from tests.core.market import Market
from tests.support.factories import make_offer, make_session
from tests.tui.harness import cockpit

pytestmark = pytest.mark.perf

SESSIONS = 50
TICKS = 30
LIMIT_MS = 20.0


async def fifty_running(market: Market) -> None:
    """Running sessions straight in the store, each expiring within the hour: every row ticks."""
    now = market.clock.now()
    for n in range(SESSIONS):
        await market.shopper._store.insert_session(
            make_session(
                now,
                market.shopper.install_id,
                id=f"perf{n:06d}",
                offer=make_offer(now, id=f"vastai:{900000 + n}", price_per_hour=0.3 + n / 50),
                status=SessionStatus.RUNNING,
                instance=InstanceState.LIVE,
                instance_id=str(n),
                instance_created_at=now - timedelta(minutes=n),
                price_per_hour=0.3 + n / 50,
                expires_at=now + timedelta(minutes=2 + n),
                hard_max_at=now + timedelta(hours=12) - timedelta(minutes=n),
                idle_timeout_min=0,
            )
        )


async def test_a_countdown_tick_over_50_sessions(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tick(now)` rewrites the countdown and cost cells and the selected session's detail,
    then the screen repaints them."""
    async with cockpit(monkeypatch, isolated_env, supervise=False, prepare=fifty_running) as ride:
        await ride.press("2")
        pane = ride.one("#sessions-pane", SessionsPane)
        assert pane.table.row_count == SESSIONS
        for timer in ride.app._timers:  # the app's own one-second tick would do our work early
            if timer._callback == ride.app.tick:
                timer.pause()
        first = await ride.shopper.session("perf000000")
        assert pane.detail.display and first.id in str(pane.detail.border_title)
        sections = list(pane.detail.query(DetailSection))
        ticks, wall, cpu = [], [], []
        for _ in range(TICKS):
            await ride.market.clock.advance(1)
            await ride.settle()
            now = ride.shopper.clock.now()
            started, started_cpu = time.perf_counter(), time.thread_time()
            pane.tick(now)
            ticks.append(time.perf_counter() - started)
            # What the widgets' idle handlers and the screen's update timer would do next: mark
            # the table and the detail panel's changed sections dirty and paint them (run here,
            # synchronously, so it can be timed).
            assert pane.table._repaint_required
            changed = [w for w in (pane.table, *sections) if w._repaint_required]
            assert len(changed) > 1  # the selected session's cost or countdown moved too
            for widget in changed:
                widget._repaint_required = False
                ride.app.screen._dirty_widgets.add(widget)
            ride.app.screen._on_timer_update()
            wall.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - started_cpu)
            await ride.pilot.pause()
            expires = pane.table.get_cell(first.id, "expires").plain
            assert expires == "!! " + fmt.countdown(first.expires_at, now)
            assert expires in pane.table.render_line(1).text
            assert fmt.countdown(first.expires_at, now) in pane.detail.text
    for what, timings in (
        ("tick alone, wall", ticks),
        ("tick + repaint, wall", wall),
        ("tick + repaint, CPU", cpu),
    ):
        print(
            f"\nsessions pane, {SESSIONS} sessions, {what}: median "
            f"{statistics.median(timings) * 1000:.1f} ms, worst {max(timings) * 1000:.1f} ms "
            f"over {TICKS} ticks"
        )
    print("per tick, wall ms:", [round(t * 1000) for t in wall])
    # CPU time: the work itself, whatever else the (shared) machine runs meanwhile.
    assert statistics.median(cpu) * 1000 < LIMIT_MS
