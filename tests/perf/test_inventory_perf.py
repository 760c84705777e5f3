"""Inventory figures: a cold fan-out against slow providers, Vast normalization, local select."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from gpushop_tui.clock import FakeClock, SystemClock
from gpushop_tui.config import load_settings
from gpushop_tui.core.inventory import Inventory
from gpushop_tui.models import Offer
from gpushop_tui.providers.registry import PROVIDERS, connect_providers
from gpushop_tui.providers.vastai import normalize_offers
from gpushop_tui.query import OfferIndex, parse_query, select
from gpushop_tui.sim.faults import HttpFault
from gpushop_tui.sim.runner import run_simulator
from gpushop_tui.sim.vastai import generate_offers, priced
from gpushop_tui.sim.world import World
from gpushop_tui.store import Store

pytestmark = pytest.mark.perf

LATENCY_S = 0.3


THREE = ("vastai", "tensordock", "bluelobster")
"""The providers before RunPod and Lambda, for the figure beside all five."""


async def test_cold_inventory_of_three_and_of_five_slow_providers(tmp_path: Path) -> None:
    lines = []
    async with run_simulator(seed=0, clock=FakeClock()) as sim:
        sim.world.rate_limited = False  # every run's fresh adapters start at once
        for provider in PROVIDERS:
            sim.world.faults.add(HttpFault(provider=provider, kind="latency", delay_s=LATENCY_S))
        env = {f"{p.upper()}_API_URL": url for p, url in sim.urls.items()}
        settings = load_settings({"GPUSHOP_HOME": str(tmp_path), **env})
        settings.paths.prepare()
        store = await Store.open(settings.paths.db_file)
        try:
            for providers in (THREE, PROVIDERS):
                keys = {p: sim.keys[p] for p in providers}
                timings = []
                for _ in range(3):
                    adapters = connect_providers(settings, keys, "ab12cd34", SystemClock())
                    inventory = Inventory(adapters, clock=SystemClock(), store=store)
                    started = time.perf_counter()
                    view = await inventory.view()
                    timings.append(time.perf_counter() - started)
                    await inventory.aclose()
                    asked = [r for r in view.providers if r.status != "not configured"]
                    assert {r.status for r in asked} == {"ok"}
                    assert {o.provider for o in view.offers} == set(providers)
                median_ms = statistics.median(timings) * 1000
                lines.append(
                    f"cold inventory, {len(providers)} providers at {LATENCY_S * 1000:.0f} ms a "
                    f"request: median {median_ms:.0f} ms over {len(timings)} runs"
                )
        finally:
            await store.aclose()
    print("\n" + "\n".join(lines))


def _raw_vast_rows(count: int) -> list[dict]:
    """`count` search rows: the simulated market repeated, each copy on other machines at
    slightly other prices (as a market of 20,000 offers would be), ids unique."""
    world = World(seed=0)
    offers, _ = generate_offers(world)
    now = world.now()
    rows: list[dict] = []
    while len(rows) < count:
        copy = len(rows) // len(offers)
        for offer in offers[: count - len(rows)]:
            row = priced(offer, 20.0, False, now)
            row["id"] = row["ask_contract_id"] = len(rows) + 1
            row["machine_id"] += copy * 100_000
            row["dph_total"] = round(row["dph_total"] * (1 + copy * 0.0007), 6)
            rows.append(row)
    return rows


def _normalized(count: int) -> list[Offer]:
    return normalize_offers(_raw_vast_rows(count), FakeClock().now())


def test_normalize_20000_vast_offers() -> None:
    rows = _raw_vast_rows(20_000)
    fetched_at = FakeClock().now()
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        offers = normalize_offers(rows, fetched_at)
        timings.append(time.perf_counter() - started)
    assert len(offers) == 20_000
    median_ms = statistics.median(timings) * 1000
    print(f"\nnormalize 20,000 raw Vast offers: median {median_ms:.0f} ms over 5 runs")
    assert median_ms < 200


def test_filter_and_sort_20000_offers() -> None:
    offers = _normalized(20_000)
    started = time.perf_counter()
    index = OfferIndex(offers)  # built once per refresh by the inventory
    print(
        f"\nindex 20,000 offers (once per refresh): {(time.perf_counter() - started) * 1000:.1f} ms"
    )
    queries = [parse_query(q) for q in (
        "", "gpu=4090 price<=0.6 sort=price", "vram>=24 n>=2 rel>=0.95 sort=gpuprice",
        "region=US cuda>=12 sort=-vram",
    )]  # fmt: skip
    for query in queries:
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            chosen = select(index, query)
            timings.append(time.perf_counter() - started)
        median_ms = statistics.median(timings) * 1000
        print(f"\nselect over 20,000 offers, {query.sort} ({len(chosen)} kept): {median_ms:.1f} ms")
        assert median_ms < 20
