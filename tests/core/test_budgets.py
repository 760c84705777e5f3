"""Budgets that act, against the in-process simulator on a fake clock (tests/core/market.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gpushop_tui.core.budgets import BudgetRefused
from gpushop_tui.models import Budget, BudgetAction, BudgetKind, SessionStatus
from tests.core.market import Market, open_market


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> AsyncIterator[Market]:
    async with open_market(monkeypatch, isolated_env) as opened:
        yield opened


def count_creates(market: Market) -> list[str]:
    """Spy on the Vast adapter: every create call it makes is listed."""
    adapter = market.shopper._providers["vastai"]
    assert adapter is not None
    original, calls = adapter.create, []

    async def create(offer: Any, spec: Any, on_instance: Any = None) -> Any:
        calls.append(offer.id)
        return await original(offer, spec, on_instance)

    adapter.create = create  # type: ignore[method-assign]
    return calls


async def budget(market: Market, kind: BudgetKind, limit: float, action: str, **kw: Any) -> Budget:
    return await market.shopper._budgets.set(
        Budget(kind=kind, limit=limit, action=BudgetAction(action), **kw)
    )


async def alerts(market: Market, alert: str) -> list[str]:
    return [e.message for e in await market.audit() if e.data.get("alert") == alert]


async def test_a_block_budget_refuses_before_any_provider_call(market: Market) -> None:
    creates = count_creates(market)
    offer = await market.offer()
    limit = offer.price_per_hour * 2
    await budget(market, BudgetKind.MONTHLY_SPEND, limit, "block", consumer="alice")
    with pytest.raises(BudgetRefused, match="alice's monthly spend budget") as refused:
        await market.provision(offer, hours=3)
    assert "would bring it to" in str(refused.value)
    assert creates == [] and market.live_instances("vastai") == []
    assert market.world.taken["vastai"] == set()
    assert await market.shopper.sessions() == []  # no session row either
    await market.provision(offer, hours=1, consumer="bob")  # bob has no budget
    assert creates == [offer.id]


async def test_the_global_concurrency_cap_counts_everyone(market: Market) -> None:
    await budget(market, BudgetKind.CONCURRENT_SESSIONS, 2, "block")
    await market.provision(consumer="alice")
    await market.provision(consumer="bob")
    with pytest.raises(BudgetRefused, match="the global concurrent sessions budget"):
        await market.provision(consumer="carol")


async def test_a_warn_budget_lets_the_rental_through_with_an_alert(market: Market) -> None:
    offer = await market.offer()
    await budget(market, BudgetKind.BURN_RATE, offer.price_per_hour / 2, "warn")
    session = await market.provision(offer)
    assert session.status == SessionStatus.PROVISIONING
    assert any("renting anyway" in m for m in await alerts(market, "budget_warning"))


async def test_the_balance_refuses_what_it_cannot_pay_and_warns_when_low(market: Market) -> None:
    creates = count_creates(market)
    offer = await market.offer()
    market.world.credit = offer.price_per_hour * 3
    with pytest.raises(BudgetRefused, match="does not cover this rental"):
        await market.provision(offer, hours=4)
    assert creates == []
    await market.provision(offer, hours=2)
    assert creates == [offer.id]
    assert await alerts(market, "low_balance")


async def test_a_stop_budget_stops_that_consumers_dearest_sessions_first(market: Market) -> None:
    cheap = await market.running(consumer="alice")
    dear_offer = next(
        o
        for o in (await market.shopper.offers()).offers
        if o.provider == "vastai" and o.price_per_hour > 2 * (cheap.price_per_hour or 0)
    )
    dear = await market.running(dear_offer, consumer="alice")
    bobs = await market.running(consumer="bob")
    assert dear.price_per_hour and cheap.price_per_hour
    limit = dear.price_per_hour + cheap.price_per_hour / 2  # both together are over it
    await budget(market, BudgetKind.BURN_RATE, limit, "stop", consumer="alice")
    ended = await market.shopper._budgets.enforce()
    assert ended == [dear.id]
    await market.tick()
    assert (await market.shopper.session(dear.id)).status in ("stopping", "ended")
    for kept in (cheap, bobs):
        assert (await market.shopper.session(kept.id)).status == SessionStatus.RUNNING
    assert any(dear.id in m for m in await alerts(market, "budget_stop"))
    assert await market.shopper._budgets.enforce() == []  # within the budget again


async def test_thresholds_fire_once_a_month_even_across_a_restart(market: Market) -> None:
    running = await market.running(consumer="alice", hours=3)
    rate = running.price_per_hour
    assert rate is not None
    created = running.instance_created_at
    assert created is not None
    await budget(market, BudgetKind.MONTHLY_SPEND, rate, "warn", consumer="alice")  # one hour
    elapsed = (market.clock.now() - created).total_seconds()
    await market.advance(0.55 * 3600 - elapsed, step_s=60)
    await market.tick()
    assert [m.split(" is at ")[1][:3] for m in await alerts(market, "budget_threshold")] == ["55%"]
    await market.tick()
    await market.reopen()
    await market.advance(0.3 * 3600, step_s=60)
    await market.tick()
    await market.tick()
    fired = await alerts(market, "budget_threshold")
    assert len(fired) == 2 and " 85% " in fired[1]
    await market.advance(0.2 * 3600, step_s=60)
    await market.tick()
    await market.tick()
    fired = await alerts(market, "budget_threshold")
    assert len(fired) == 3 and "105%" in fired[2]
    assert (await market.shopper.session(running.id)).status == SessionStatus.RUNNING  # warn only


async def test_preview_tells_what_each_budget_would_do_without_acting(market: Market) -> None:
    creates = count_creates(market)
    adapter = market.shopper._providers["vastai"]
    assert adapter is not None
    balance_reads: list[str] = []
    original_balance = adapter.balance

    async def balance() -> float | None:
        balance_reads.append("vastai")
        return await original_balance()

    adapter.balance = balance  # type: ignore[method-assign]
    offer = await market.offer()
    rate = offer.price_per_hour
    spend = await budget(market, BudgetKind.MONTHLY_SPEND, rate * 2, "block", consumer="alice")
    burn = await budget(market, BudgetKind.BURN_RATE, rate / 2, "warn")
    await budget(market, BudgetKind.CONCURRENT_SESSIONS, 1, "block", consumer="bob")
    before = await market.audit()

    checks = await market.shopper._budgets.preview("alice", offer, 3)

    assert sorted(c.budget.id or 0 for c in checks) == [spend.id, burn.id]  # not bob's budget
    by_kind = {c.budget.kind: c for c in checks}
    monthly = by_kind[BudgetKind.MONTHLY_SPEND]
    assert monthly.used == 0 and monthly.after == pytest.approx(rate * 3)
    assert monthly.crosses and monthly.refuses
    assert "would bring it to" in monthly.would()
    warning = by_kind[BudgetKind.BURN_RATE]
    assert warning.crosses and not warning.refuses
    within = await market.shopper._budgets.preview("alice", offer, 1)
    assert not any(c.refuses for c in within)  # one hour stays under the monthly limit
    assert await market.audit() == before  # no alert published
    assert creates == [] and balance_reads == []  # and no provider asked
    with pytest.raises(BudgetRefused, match="alice's monthly spend budget"):
        await market.provision(offer, hours=3)  # admit refuses exactly what preview said
    assert creates == []
