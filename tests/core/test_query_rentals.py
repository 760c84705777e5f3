"""A rental by query that loses its offer to someone else takes the next match (issue 17 E)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from gpushop_tui.models import (
    Budget,
    BudgetAction,
    BudgetKind,
    InstanceState,
    OfferQuery,
    ProvisionRequest,
    SessionStatus,
)
from tests.core.market import Market, open_market

QUERY = "gpu=4090 provider=vastai sort=price"


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> AsyncIterator[Market]:
    async with open_market(monkeypatch, isolated_env, providers=("vastai",)) as opened:
        yield opened


async def test_a_query_rental_whose_cheapest_offer_is_taken_rents_the_next_match(
    market: Market,
) -> None:
    menu = await market.shopper.offers(OfferQuery(providers=("vastai",), gpu="4090"))  # type: ignore[arg-type]
    cheapest, second = menu.offers[:2]
    market.world.taken["vastai"].add(cheapest.provider_offer_id)  # a concurrent rental wins it
    request = ProvisionRequest(consumer="bob", query=QUERY, idle_timeout_min=0)
    session = await market.run(market.shopper.provision(request))
    running = await market.until(session.id, lambda s: s.status == "running", step_s=2)
    assert running.id == session.id and running.label == session.label
    assert running.offer_id == second.id and running.offer.id == second.id
    assert running.price_per_hour == second.price_per_hour
    assert market.instance(running).offer_id == second.provider_offer_id
    assert [i.offer_id for i in market.live_instances("vastai")] == [second.provider_offer_id]
    moved = [e.message for e in await market.audit(session.id)]
    assert any(cheapest.id in m and second.id in m and "taken" in m for m in moved), moved
    since = market.clock.now() - timedelta(hours=1)
    assert cheapest.id in await market.shopper._store.offer_failures_since(since)
    assert second.id not in await market.shopper._store.offer_failures_since(since)


async def test_a_query_rental_gives_up_after_a_few_taken_offers(market: Market) -> None:
    menu = await market.shopper.offers(OfferQuery(providers=("vastai",), gpu="4090"))  # type: ignore[arg-type]
    assert len(menu.offers) > 4
    for offer in menu.offers:
        market.world.taken["vastai"].add(offer.provider_offer_id)
    request = ProvisionRequest(consumer="bob", query=QUERY, idle_timeout_min=0)
    session = await market.run(market.shopper.provision(request))
    assert session.closed and session.status == SessionStatus.FAILED
    assert session.instance == InstanceState.NONE and "create failed" in (session.error or "")
    since = market.clock.now() - timedelta(hours=1)
    assert len(await market.shopper._store.offer_failures_since(since)) == 3
    assert market.live_instances("vastai") == []


async def test_an_offer_id_rental_whose_offer_is_taken_still_fails(market: Market) -> None:
    offer = await market.offer()
    market.world.taken["vastai"].add(offer.provider_offer_id)
    session = await market.provision(offer)
    assert session.closed and session.status == SessionStatus.FAILED
    assert session.offer_id == offer.id and "create failed" in (session.error or "")
    assert market.live_instances("vastai") == []


async def test_moving_to_the_next_match_does_not_count_the_session_twice(market: Market) -> None:
    """A blocking limit of one session lets the rental move: it is still one session."""
    await market.shopper.set_budget(
        Budget(
            consumer="bob",
            kind=BudgetKind.CONCURRENT_SESSIONS,
            limit=1,
            action=BudgetAction.BLOCK,
        )
    )
    menu = await market.shopper.offers(OfferQuery(providers=("vastai",), gpu="4090"))  # type: ignore[arg-type]
    cheapest, second = menu.offers[:2]
    market.world.taken["vastai"].add(cheapest.provider_offer_id)
    request = ProvisionRequest(consumer="bob", query=QUERY, idle_timeout_min=0)
    session = await market.run(market.shopper.provision(request))
    running = await market.until(session.id, lambda s: s.status == "running", step_s=2)
    assert running.offer_id == second.id
