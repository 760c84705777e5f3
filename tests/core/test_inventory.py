"""The inventory service: concurrent fan-out, per-provider cache, stale offers, failure memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.config import Settings
from gpushop_tui.core.events import EventBus, InventoryRefreshed
from gpushop_tui.core.inventory import Inventory
from gpushop_tui.models import Offer, OfferQuery
from gpushop_tui.providers.base import (
    CreateSpec,
    InstanceIdSink,
    InstanceRef,
    Provider,
    ProviderHttp,
    RateLimit,
    Readiness,
    TransientError,
)
from gpushop_tui.providers.vastai import VastAi
from gpushop_tui.query import parse_query
from gpushop_tui.sim.http import serve
from gpushop_tui.sim.vastai import build_app
from gpushop_tui.sim.world import World
from gpushop_tui.store import Store


class ScriptedProvider(Provider):
    """A provider whose list_offers answers what the test says, when the test says."""

    readiness = Readiness("root", 0, False)
    rate = RateLimit(None)

    def __init__(self, name: str, clock: FakeClock, prices: list[float]) -> None:
        super().__init__(ProviderHttp(name, "http://127.0.0.1:9", {}, clock=clock), "ab12cd34")  # type: ignore[arg-type]
        self.name = name  # type: ignore[misc]
        self.clock = clock
        self.prices = prices
        self.calls = 0
        self.queries: list[OfferQuery | None] = []
        self.failure: Exception | None = None
        self.gate: asyncio.Event | None = None

    @staticmethod
    def auth_headers(key: str) -> dict[str, str]:
        return {}

    async def list_offers(self, query: OfferQuery | None = None) -> list[Offer]:
        self.calls += 1
        self.queries.append(query)
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return [
            Offer(
                id=f"{self.name}:{i}",
                provider=self.name,
                gpu_name="RTX 4090",
                gpu_count=1,  # type: ignore[arg-type]
                vram_gb=24,
                price_per_hour=p,
                region=f"r{i}",
                fetched_at=self.clock.now(),
            )
            for i, p in enumerate(self.prices)
        ]

    async def create(
        self, offer: Offer, spec: CreateSpec, on_instance: InstanceIdSink | None = None
    ) -> InstanceRef:
        raise NotImplementedError

    async def get(self, instance_id: str) -> Any:
        raise NotImplementedError

    async def list_ours(self) -> list[Any]:
        raise NotImplementedError

    async def destroy(self, instance_id: str) -> None:
        raise NotImplementedError

    async def check(self) -> None:
        raise NotImplementedError


@pytest.fixture
async def world(
    store: Store, clock: FakeClock
) -> AsyncIterator[tuple[Inventory, dict[str, ScriptedProvider], EventBus]]:
    providers = {
        "vastai": ScriptedProvider("vastai", clock, [0.3, 0.5]),
        "tensordock": ScriptedProvider("tensordock", clock, [0.4]),
    }
    events = EventBus(store, clock)
    inventory = Inventory(
        {**providers, "bluelobster": None}, clock=clock, store=store, events=events, ttl_s=60
    )
    yield inventory, providers, events
    await inventory.aclose()


async def test_all_providers_are_asked_at_once_and_merged(world: Any) -> None:
    inventory, providers, _ = world
    for p in providers.values():
        p.gate = asyncio.Event()
    pending = asyncio.create_task(inventory.view())
    for _ in range(20):
        await asyncio.sleep(0)
    assert [p.calls for p in providers.values()] == [1, 1]  # both in flight together
    for p in providers.values():
        p.gate.set()
    view = await pending
    assert [o.price_per_hour for o in view.offers] == [0.3, 0.4, 0.5]
    statuses = {r.provider: r.status for r in view.providers}
    assert statuses == {"vastai": "ok", "tensordock": "ok"} | dict.fromkeys(
        ("bluelobster", "runpod", "lambda"), "not configured"
    )


async def test_cache_is_used_until_it_expires(world: Any, clock: FakeClock) -> None:
    inventory, providers, _ = world
    await inventory.view()
    await clock.advance(59)
    await inventory.view()
    assert providers["vastai"].calls == 1
    await clock.advance(2)
    await inventory.view()
    assert providers["vastai"].calls == 2
    await inventory.view(refresh=True)
    assert providers["vastai"].calls == 3


async def test_a_failing_provider_keeps_its_last_offers_marked_stale(
    world: Any, clock: FakeClock
) -> None:
    inventory, providers, events = world
    subscription = events.subscribe()
    await inventory.view()
    providers["vastai"].failure = TransientError("vastai", "GET /bundles/ answered HTTP 503")
    await clock.advance(300)
    view = await inventory.view()
    vast = next(r for r in view.providers if r.provider == "vastai")
    assert vast.status == "stale" and vast.age_s == pytest.approx(300)
    assert "503" in (vast.error or "") and "stale (5 min old)" in vast.describe()
    assert len(view.offers) == 3  # the last good offers are still on the menu
    refreshed = [e async for e in _drain(subscription)]
    assert any(isinstance(e, InventoryRefreshed) and not e.ok for e in refreshed)
    providers["vastai"].failure = None
    view = await inventory.view()
    assert next(r for r in view.providers if r.provider == "vastai").status == "ok"


async def test_a_provider_that_never_answered_is_an_error_not_a_blank_menu(world: Any) -> None:
    inventory, providers, _ = world
    providers["tensordock"].failure = RuntimeError("adapter bug")
    view = await inventory.view()
    reports = {r.provider: r for r in view.providers}
    assert reports["tensordock"].status == "error"
    assert [o.provider for o in view.offers] == ["vastai", "vastai"]


async def test_a_slow_provider_times_out_without_holding_up_the_rest(
    store: Store, clock: FakeClock
) -> None:
    slow = ScriptedProvider("vastai", clock, [0.1])
    slow.gate = asyncio.Event()  # never opened
    fast = ScriptedProvider("tensordock", clock, [0.2])
    inventory = Inventory({"vastai": slow, "tensordock": fast}, clock=clock, store=store,
                          timeout_s=0.05)  # fmt: skip
    view = await inventory.view()
    reports = {r.provider: r for r in view.providers}
    assert reports["vastai"].status == "error" and reports["vastai"].error == "no answer in time"
    assert [o.id for o in view.offers] == ["tensordock:0"]
    await inventory.aclose()


async def test_failed_offers_are_demoted_then_hidden_and_it_survives_a_restart(
    world: Any, clock: FakeClock, settings: Settings
) -> None:
    inventory, _, _ = world
    view = await inventory.view()
    cheapest = view.offers[0]
    assert cheapest.id == "vastai:0"
    await inventory.record_failure(cheapest, "no_such_ask")
    view = await inventory.view()
    assert view.offers[-1].id == "vastai:0"  # demoted below dearer offers
    await inventory.record_failure(cheapest, "boot never finished")
    await inventory.record_failure(cheapest, "ssh never answered")
    # a restart: a new store and inventory over the same database file
    reopened = await Store.open(settings.paths.db_file)
    again = Inventory(dict(world[1]), clock=clock, store=reopened)
    view = await again.view()
    assert "vastai:0" not in [o.id for o in view.offers] and view.hidden == 1
    await clock.advance(timedelta(minutes=31).total_seconds())
    view = await again.view()
    assert view.offers[-1].id == "vastai:0" and view.hidden == 0  # back, still demoted
    await reopened.aclose()


async def _drain(subscription: Any) -> AsyncIterator[Any]:
    while True:
        try:
            async with asyncio.timeout(0.01):
                yield await subscription.get()
        except TimeoutError:
            return


# --------------------------------------------------------------------------- a large market

LARGE_MARKET = 8000
"""Machines on a simulated Vast market of over 20,000 offers: more than one search returns."""


@dataclass
class VastMarket:
    inventory: Inventory
    vast: VastAi
    world: World
    searches: list[dict[str, Any]]
    """Every search body the adapter sent, in order."""

    async def h100s(self) -> int:
        """H100 offers on the market that our search can rent (rentable, verified, free)."""
        return len(await self.vast_names_like("H100"))

    async def vast_names_like(self, prefix: str) -> list[dict[str, Any]]:
        rows = await _all_rows(self.vast)
        return [r for r in rows if r["gpu_name"].startswith(prefix)]


async def _all_rows(vast: VastAi) -> list[dict[str, Any]]:
    query = {"rentable": {"eq": True}, "rented": {"eq": False}, "verified": {"eq": True}}
    answer = await vast.http.client.post("/bundles/", json={**query, "limit": 10**6})
    rows: list[dict[str, Any]] = answer.json()["offers"]
    return rows


@asynccontextmanager
async def vast_market(store: Store, clock: FakeClock, machines: int) -> AsyncIterator[VastMarket]:
    world = World(seed=1, clock=clock, vast_machines=machines)
    served = await serve(build_app(world))
    vast = VastAi.connect(
        served.origin + "/api/v0", world.keys["vastai"], "ab12cd34", clock=clock,
        rate=RateLimit(None),
    )  # fmt: skip
    searches: list[dict[str, Any]] = []
    original = vast.http.request

    async def recorded(method: str, url: str, **kwargs: Any) -> Any:
        if url == "/bundles/":
            searches.append(kwargs["json"])
        return await original(method, url, **kwargs)

    vast.http.request = recorded  # type: ignore[method-assign]
    inventory = Inventory({"vastai": vast}, clock=clock, store=store, timeout_s=60)
    try:
        yield VastMarket(inventory, vast, world, searches)
    finally:
        await inventory.aclose()
        await served.stop()


async def test_a_gpu_query_on_a_large_market_finds_every_offer_of_that_gpu(
    store: Store, clock: FakeClock
) -> None:
    async with vast_market(store, clock, LARGE_MARKET) as market:
        everything = await market.inventory.view()
        vast = next(r for r in everything.providers if r.provider == "vastai")
        answer = await market.vast.http.client.post("/bundles/", json={"limit": 10**6})
        assert vast.truncated and len(answer.json()["offers"]) > 20_000
        h100 = await market.inventory.view(parse_query("gpu=h100"))
        assert len(h100.offers) == await market.h100s() > 2000
        assert all(o.gpu_name.startswith("H100") for o in h100.offers)
        assert not next(r for r in h100.providers if r.provider == "vastai").truncated
        # an H100 found by the narrowed search can be rented: the inventory finds it by id
        assert await market.inventory.find(h100.offers[-1].id) == h100.offers[-1]
        searches = len(market.searches)
        await market.inventory.view(parse_query("gpu=h100"))  # the same question, cached
        assert len(market.searches) == searches


async def test_a_market_smaller_than_the_cap_answers_every_query_from_one_search(
    store: Store, clock: FakeClock
) -> None:
    async with vast_market(store, clock, 650) as market:
        view = await market.inventory.view()
        assert not next(r for r in view.providers if r.provider == "vastai").truncated
        h100 = await market.inventory.view(parse_query("gpu=h100"))
        assert len(h100.offers) == await market.h100s() > 0
        assert len(market.searches) == 1


async def test_a_one_shot_sends_its_filters_to_each_provider_instead_of_the_whole_market(
    world: Any,
) -> None:
    inventory, providers, _ = world
    query = OfferQuery(gpu="4090", max_price=0.45)
    view = await inventory.view(query, whole_menu=False)
    assert providers["vastai"].queries == [query]  # its own search, no whole-market fetch
    assert providers["tensordock"].queries == [query]
    assert sorted(o.price_per_hour for o in view.offers) == [0.3, 0.4]
    reports = {r.provider: r for r in view.providers}
    assert reports["vastai"].status == "ok" and reports["vastai"].offers == 2
    assert reports["vastai"].latency_ms is not None

    providers["tensordock"].failure = TransientError("tensordock", "down for maintenance")
    failed = await inventory.view(OfferQuery(gpu="4090", max_price=0.5), whole_menu=False)
    reports = {r.provider: r for r in failed.providers}
    assert reports["tensordock"].status == "error"  # failing, not an empty menu
    assert "down for maintenance" in (reports["tensordock"].error or "")
    assert {o.provider for o in failed.offers} == {"vastai"}


async def test_a_query_without_filters_still_reads_the_whole_market_in_a_one_shot(
    world: Any,
) -> None:
    inventory, providers, _ = world
    view = await inventory.view(OfferQuery(limit=1), whole_menu=False)
    assert providers["vastai"].queries == [None]
    assert len(view.offers) == 1
