"""What rentals cost: per second from the create call to the provider's word that it is gone.

The rentals run the real core against the in-process simulator on a fake clock (tests/core/
market.py); the bucketing tests use stored sessions directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gpushop_tui.core import costs
from gpushop_tui.models import CostKind, InstanceState, Session, SessionStatus, StoragePolicy
from gpushop_tui.sim.faults import HttpFault
from tests.core.market import Market, open_market
from tests.support.factories import make_session

MINUTE = timedelta(minutes=1)


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> AsyncIterator[Market]:
    async with open_market(monkeypatch, isolated_env) as opened:
        yield opened


def seconds_billed(session: Session) -> float:
    assert session.instance_created_at is not None and session.instance_gone_at is not None
    return (session.instance_gone_at - session.instance_created_at).total_seconds()


async def test_a_five_minute_session_costs_five_minutes(market: Market) -> None:
    running = await market.running()
    assert running.instance_created_at == running.created_at  # billing starts at the create call
    to_five = running.instance_created_at + 5 * MINUTE - market.clock.now()
    await market.advance(to_five.total_seconds())
    await market.shopper.done(running.id)
    gone = await market.until(running.id, lambda s: s.closed)
    rate = gone.price_per_hour
    assert rate is not None and rate > 0
    billed = seconds_billed(gone)
    assert 300 <= billed <= 310  # five minutes, plus the seconds the destroy took to confirm
    assert costs.cost_of(gone, market.clock.now()) == pytest.approx(rate * billed / 3600)
    later = market.clock.now() + timedelta(days=3)
    assert costs.cost_of(gone, later) == costs.cost_of(gone, market.clock.now())  # it stopped
    assert costs.burn_rate(gone) == 0


async def test_the_rate_is_what_the_provider_charges_at_rental_time(market: Market) -> None:
    offer = await market.offer()
    session = await market.provision(offer)
    assert session.price_per_hour == offer.price_per_hour  # the menu's word, until told better
    charged = round(offer.price_per_hour * 1.1, 4)
    market.instance(session).price_per_hour = charged  # the instance bills a little more
    running = await market.until(session.id, lambda s: s.status == "running")
    assert running.price_per_hour == pytest.approx(charged)
    market.instance(running).price_per_hour = charged * 3  # later price changes...
    await market.advance(600, step_s=30)
    after = await market.shopper.session(running.id)
    assert after.price_per_hour == pytest.approx(charged)  # ...do not rewrite history


async def test_a_failed_create_costs_nothing(market: Market) -> None:
    market.world.faults.add(HttpFault("vastai", "create", status=400, body="bad request"))
    session = await market.provision()
    assert session.status == SessionStatus.FAILED and session.instance == InstanceState.NONE
    assert costs.entries(session) == []
    assert costs.cost_of(session, market.clock.now() + timedelta(hours=5)) == 0
    lines = costs.daily_lines(
        [session], session.created_at, market.clock.now() + timedelta(days=1), market.clock.now()
    )
    assert lines == []


async def test_a_restart_mid_session_loses_no_accrued_cost(market: Market) -> None:
    running = await market.running()
    await market.advance(600, step_s=30)
    before = costs.cost_of(await market.shopper.session(running.id), market.clock.now())
    await market.reopen()
    await market.advance(600, step_s=30)
    after = await market.shopper.session(running.id)
    assert after.price_per_hour is not None
    assert costs.cost_of(after, market.clock.now()) == pytest.approx(
        before + after.price_per_hour * 600 / 3600
    )


async def test_a_kept_instance_bills_its_disk_until_it_is_gone(market: Market) -> None:
    running = await market.running(storage=StoragePolicy.KEEP)
    await market.advance(60)
    await market.shopper.done(running.id)
    stopped = await market.until(running.id, lambda s: s.status == SessionStatus.STOPPED)
    assert stopped.instance == InstanceState.LIVE and stopped.stopped_at is not None
    disk = stopped.stopped_price_per_hour
    assert disk is not None and 0 < disk < (stopped.price_per_hour or 0)
    assert disk == pytest.approx(stopped.offer.raw["storage_total_cost"])
    assert costs.burn_rate(stopped) == disk
    at_stop = costs.cost_of(stopped, stopped.stopped_at)
    an_hour_on = stopped.stopped_at + timedelta(hours=1)
    assert costs.cost_of(stopped, an_hour_on) == pytest.approx(at_stop + disk)
    kinds = [e.kind for e in costs.entries(stopped)]
    assert kinds == [CostKind.COMPUTE, CostKind.STORAGE]


def test_a_session_across_midnight_and_a_month_end_lands_in_both_buckets() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 1, 31, 22, 30, tzinfo=UTC)  # 23:30 in Berlin, on the last of January
    session = make_session(
        start,
        price_per_hour=1.2,
        status=SessionStatus.ENDED,
        instance=InstanceState.GONE,
        instance_created_at=start,
        instance_gone_at=start + timedelta(hours=1),
    )
    now = start + timedelta(days=2)
    lines = costs.daily_lines([session], start - timedelta(days=40), now, now, tz=berlin)
    assert costs.group(lines, "day") == pytest.approx({"2026-01-31": 0.6, "2026-02-01": 0.6})
    assert costs.group(lines, "month") == pytest.approx({"2026-01": 0.6, "2026-02": 0.6})
    in_utc = costs.daily_lines([session], start - timedelta(days=40), now, now, tz=UTC)
    assert costs.group(in_utc, "month") == pytest.approx({"2026-01": 1.2})
    february = costs.daily_lines(
        [session], costs.local_midnight(datetime(2026, 2, 1).date(), berlin), now, now, tz=berlin
    )
    assert sum(line.amount for line in february) == pytest.approx(0.6)
    assert sum(line.seconds for line in february) == 1800


def test_a_running_session_accrues_up_to_now_and_groups_by_what_was_asked() -> None:
    start = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
    alice = make_session(start, price_per_hour=0.5, instance_created_at=start)
    bob = make_session(
        start,
        consumer="bob",
        price_per_hour=2.0,
        instance_created_at=start + timedelta(hours=1),
        instance_gone_at=start + timedelta(hours=2),
    )
    now = start + timedelta(hours=4)
    lines = costs.daily_lines([alice, bob], start, now + timedelta(days=9), now, tz=UTC)
    assert costs.group(lines, "consumer") == pytest.approx({"alice": 2.0, "bob": 2.0})
    assert costs.group(lines, "gpu") == pytest.approx({"RTX 4090": 4.0})
    assert costs.burn_rate(alice) == 0.5 and costs.burn_rate(bob) == 0
