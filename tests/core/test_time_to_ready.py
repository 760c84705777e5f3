"""Time to ready follows the node, not gpushop's own waits (fake clock, in-process simulator).

A node that boots in 3 s is ready within about a second of it; a TensorDock or Blue Lobster node
that answers SSH before the provider's first-SSH budget (90 s, 60 s) is used then, not after;
a rental's calls to Vast are not queued behind the menu's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gpushop_tui.models import Session
from gpushop_tui.node.keys import create_key_pair
from gpushop_tui.providers.base import CreateSpec, Priority, RateLimiter, label_for
from gpushop_tui.providers.vastai import VastAi
from tests.core.market import Market, open_market


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> AsyncIterator[Market]:
    async with open_market(monkeypatch, isolated_env, timing="fast") as opened:
        yield opened


async def seconds_to_ready(market: Market, provider: str) -> tuple[float, Session]:
    """Fake seconds from the rental to the session running, on a 0.25 s step."""
    session = await market.provision(await market.offer(provider))
    running = await market.until(session.id, lambda s: s.status == "running", step_s=0.25)
    return (running.state_entered_at - session.created_at).total_seconds(), running


async def test_a_node_that_boots_in_3_s_is_ready_within_about_4_s(market: Market) -> None:
    boot_s = market.world.timing["vastai"].boot_s
    took, _ = await seconds_to_ready(market, "vastai")
    print(f"\nvastai, node boots in {boot_s:g} s: ready after {took:.2f} fake s")
    assert took <= boot_s + 1.5


@pytest.mark.parametrize(("provider", "budget_s"), [("tensordock", 90), ("bluelobster", 60)])
async def test_a_node_that_answers_before_the_first_ssh_budget_is_used_then(
    market: Market, provider: str, budget_s: float
) -> None:
    timing = market.world.timing[provider]
    took, running = await seconds_to_ready(market, provider)
    print(
        f"\n{provider}, node boots in {timing.boot_s:g} s, dpkg lock {timing.dpkg_lock_s:g} s: "
        f"ready after {took:.2f} fake s (first-SSH budget {budget_s} s)"
    )
    assert running.host_key is not None
    assert took < budget_s / 3
    assert took >= timing.boot_s + timing.dpkg_lock_s  # the dpkg / nvidia-smi check still holds


async def test_vast_create_key_and_status_go_ahead_of_a_queued_inventory(
    market: Market, tmp_path: Path
) -> None:
    """The lifecycle's calls use the rate limiter's priority lanes: a rental's create, key
    attach and first status call wait for Vast's own rate (1/s), never behind the menu's."""
    adapter = market.shopper._providers["vastai"]
    assert isinstance(adapter, VastAi)
    rate = VastAi.rate
    assert rate.per_second is not None
    adapter.http.limiter = limiter = RateLimiter(market.clock, rate.per_second, rate.burst)
    offer = await market.offer("vastai")
    public_key = await asyncio.to_thread(create_key_pair, tmp_path / "key", "test")
    backlog = [asyncio.ensure_future(limiter.acquire(Priority.BACKGROUND)) for _ in range(16)]
    started = market.clock.monotonic()

    async def rent_and_read() -> None:
        spec = CreateSpec(
            label=label_for(market.shopper.install_id, "lane0test"), ssh_public_key=public_key
        )
        ref = await adapter.create(offer, spec)
        await adapter.get(ref.instance_id)

    rental = asyncio.ensure_future(rent_and_read())
    while not rental.done():
        await asyncio.sleep(0.01)
        await market.clock.advance(0.05)
    await rental
    took = market.clock.monotonic() - started
    waiting = sum(not f.done() for f in backlog)
    for future in backlog:
        future.cancel()
    print(
        f"\nvast create + key + status behind {len(backlog)} queued menu calls: {took:.2f} fake s"
    )
    assert waiting >= len(backlog) - 6  # the menu waited; the rental did not wait for it
    assert took <= 3 / rate.per_second + 1  # three calls at Vast's own rate, at worst
