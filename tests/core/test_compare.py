"""The comparison view's one rule (issue 18 §12): the menu grouped by GPU model and count, each
provider's best price side by side, offer counts and price ranges, rows cut by the query's limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpushop_tui.core import InventoryView, ProviderReport
from gpushop_tui.core.compare import compare_by_gpu
from gpushop_tui.models import Benchmark, Offer, OfferQuery
from tests.core.market import Market, open_market

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)


def offer(offer_id: str, gpu: str, count: int, price: float, vram: float = 24) -> Offer:
    provider = offer_id.split(":", 1)[0]
    return Offer(
        id=offer_id,
        provider=provider,
        gpu_name=gpu,
        gpu_count=count,
        vram_gb=vram,
        price_per_hour=price,
        fetched_at=NOW,
    )


REPORTS = [ProviderReport(name, "ok") for name in ("vastai", "tensordock", "bluelobster")]


def view(
    offers: list[Offer],
    estimates: dict[str, float] | None = None,
    measured: frozenset[str] = frozenset(),
) -> InventoryView:
    return InventoryView(
        offers=offers, providers=REPORTS, total=len(offers) + 3, hidden=1,
        usd_per_mtok=estimates or {}, measured=measured,
    )  # fmt: skip


def test_offers_of_one_gpu_model_and_count_become_one_row_with_each_providers_best() -> None:
    offers = [
        offer("tensordock:a", "RTX 4090", 1, 0.35),
        offer("vastai:b", "RTX 4090", 1, 0.40),
        offer("vastai:c", "RTX 4090", 1, 0.30),
        offer("vastai:d", "RTX 4090", 2, 0.80),
        offer("bluelobster:e", "H100 SXM", 1, 2.10, vram=80),
    ]
    comparison = compare_by_gpu(view(offers))
    assert [(row.gpu_name, row.gpu_count) for row in comparison.rows] == [
        ("RTX 4090", 1),
        ("RTX 4090", 2),
        ("H100 SXM", 1),
    ]
    single = comparison.rows[0]
    assert (single.offers, single.price_min, single.price_max) == (3, 0.30, 0.40)
    assert single.best_offer_id == "tensordock:a"  # the first under the view's sort
    assert list(single.by_provider) == ["vastai", "tensordock"]  # the menu's provider order
    assert single.by_provider["vastai"].offer_id == "vastai:c"
    assert single.by_provider["vastai"].price_per_hour == 0.30
    assert single.by_provider["vastai"].offers == 2
    assert single.by_provider["tensordock"].price_per_hour == 0.35
    assert comparison.rows[1].price_per_gpu_hour_min == pytest.approx(0.40)
    assert comparison.rows[2].vram_gb == 80
    assert (comparison.offers, comparison.total, comparison.hidden) == (5, 8, 1)


def test_a_limit_counts_rows_and_a_model_brings_the_rows_cheapest_tokens() -> None:
    offers = [
        offer("vastai:a", "RTX 3060", 1, 0.10),
        offer("vastai:b", "RTX 4090", 1, 0.30),
        offer("tensordock:c", "RTX 4090", 1, 0.32),
        offer("vastai:d", "A100", 1, 1.10),
    ]
    estimates = {"vastai:b": 0.20, "tensordock:c": 0.18}
    comparison = compare_by_gpu(view(offers, estimates), limit=2, model="llama3.1:8b")
    assert [row.gpu_name for row in comparison.rows] == ["RTX 3060", "RTX 4090"]
    assert comparison.offers == 4
    assert comparison.model == "llama3.1:8b"
    assert comparison.rows[0].usd_per_mtok is None
    assert comparison.rows[1].usd_per_mtok == 0.18


def test_a_rows_estimate_says_whether_it_rests_on_gpushops_own_measurements() -> None:
    offers = [
        offer("vastai:a", "RTX 4090", 1, 0.30),
        offer("tensordock:b", "RTX 4090", 1, 0.32),
        offer("vastai:c", "A100", 1, 1.10),
        offer("vastai:d", "RTX 3060", 1, 0.10),
    ]
    estimates = {"vastai:a": 0.20, "tensordock:b": 0.18, "vastai:c": 0.9}
    measured = frozenset({"vastai:a", "tensordock:b"})
    rows = compare_by_gpu(view(offers, estimates, measured), model="llama3.1:8b").rows
    assert [(r.gpu_name, r.usd_per_mtok, r.usd_per_mtok_measured) for r in rows] == [
        ("RTX 4090", 0.18, True),
        ("A100", 0.9, False),
        ("RTX 3060", None, False),
    ]


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> AsyncIterator[Market]:
    async with open_market(monkeypatch, isolated_env) as opened:
        yield opened


async def test_the_facade_groups_the_whole_filtered_menu_before_cutting_rows(
    market: Market,
) -> None:
    everything = await market.shopper.offers()
    expected_rows = {(o.gpu_name, o.gpu_count) for o in everything.offers}
    comparison = await market.shopper.compare_offers()
    assert {(r.gpu_name, r.gpu_count) for r in comparison.rows} == expected_rows
    assert sum(row.offers for row in comparison.rows) == len(everything.offers)

    cut = await market.shopper.compare_offers(OfferQuery(limit=2))
    assert len(cut.rows) == 2
    assert cut.offers == len(everything.offers)  # the limit cut rows, not the offers grouped
    assert cut.rows == comparison.rows[:2]

    cached = await market.shopper.cached_comparison(OfferQuery(gpu="4090"))
    assert cached.rows and all("4090" in row.gpu_name for row in cached.rows)


async def test_the_facades_rows_carry_the_menus_measured_flag(market: Market) -> None:
    query = OfferQuery(model="llama3.1:8b")
    ours = Benchmark(gpu_name="RTX 4090", model="llama3.1:8b", tokens_per_second=190,
                     source="measured", session_id="s00001")  # fmt: skip
    await market.shopper._inventory.benchmarks.record(ours)
    offers = await market.shopper.offers(query)
    comparison = await market.shopper.compare_offers(query)
    # every count of the card: the seed has no RTX 4090 measured with more than one either
    flagged = [r for r in comparison.rows if r.usd_per_mtok_measured]
    assert flagged and flagged == [r for r in comparison.rows if r.gpu_name == "RTX 4090"]
    assert any(r.usd_per_mtok is not None for r in comparison.rows if r not in flagged)
    assert offers.measured == {o.id for o in offers.offers if o.gpu_name == "RTX 4090"}
