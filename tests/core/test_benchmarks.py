"""Benchmarks: the shipped seed, imports of both formats, rankings, and the join with the menu."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.core import benchmarks
from gpushop_tui.core.benchmarks import (
    Benchmarks,
    UnknownModel,
    estimate,
    estimates,
    usd_per_mtok,
)
from gpushop_tui.core.inventory import Inventory
from gpushop_tui.errors import UserError
from gpushop_tui.models import Benchmark, OfferQuery
from gpushop_tui.store import Store
from tests.core.test_inventory import ScriptedProvider
from tests.support.factories import make_offer

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def measured(gpu: str, tps: float, price: float | None = None, **fields: Any) -> Benchmark:
    return Benchmark(gpu_name=gpu, model="llama3.1:8b", tokens_per_second=tps,
                     price_per_hour=price, **fields)  # fmt: skip


def seed_of(model: str) -> list[Benchmark]:
    return [m for m in benchmarks.seed() if m.model == model]


def cost(ranked: list[benchmarks.Ranked], gpu: str, provider: str) -> list[float]:
    return sorted(
        round(r.usd_per_mtok or 0, 4)
        for r in ranked
        if r.measurement.gpu_name == gpu and r.measurement.provider == provider
    )


# --------------------------------------------------------------------------- the seed


def test_the_seed_reproduces_the_briefs_headline_figures() -> None:
    llama = benchmarks.cheapest(seed_of("llama3.1:8b"))
    top = llama[0]
    assert (top.measurement.gpu_name, top.measurement.provider) == ("RTX 3090", "vastai")
    assert (top.measurement.price_per_hour, top.measurement.tokens_per_second) == (0.08, 145)
    assert top.usd_per_mtok == pytest.approx(0.08 / (145 * 3600) * 1e6)
    assert round(top.usd_per_mtok or 0, 2) == 0.15
    assert benchmarks.cheapest(seed_of("mistral:7b"))[0].measurement.gpu_name == "RTX 3090"
    assert benchmarks.best(seed_of("deepseek-r1:32b"))[0].measurement.gpu_name == "RTX 5090"


@pytest.mark.parametrize(
    ("model", "gpu", "provider", "brief"),
    [
        ("mistral:7b", "RTX 3090", "vastai", [0.14]),
        ("deepseek-r1:32b", "RTX 3090", "vastai", [6.20]),
        ("llama3.1:8b", "RTX 3090", "tensordock", [0.69]),
        ("deepseek-r1:14b", "RTX 5090", "vastai", [0.39]),
        ("deepseek-r1:32b", "RTX 5090", "vastai", [0.80]),
        ("mistral:7b", "RTX 4090", "tensordock", [0.59, 0.68]),
        ("deepseek-r1:14b", "RTX 4090", "tensordock", [1.14, 1.30]),
        ("llama3.1:8b", "RTX 5060 Ti", "vastai", [0.20, 0.23]),
    ],
)
def test_the_seed_matches_the_briefs_cost_table(
    model: str, gpu: str, provider: str, brief: list[float]
) -> None:
    """The brief's "$/Million Tokens" table, a range kept as its two ends (to a cent or so)."""
    assert cost(benchmarks.cheapest(seed_of(model)), gpu, provider) == pytest.approx(
        brief, abs=0.035
    )


def test_the_seed_uses_canonical_gpu_names_and_one_gpu() -> None:
    names = {m.gpu_name for m in benchmarks.seed()}
    assert {"RTX 3090", "RTX 4090", "RTX 5090", "RTX A6000", "A100 80GB PCIe"} <= names
    assert {m.gpu_count for m in benchmarks.seed()} == {1}
    assert {m.source for m in benchmarks.seed()} == {"seed"}


# --------------------------------------------------------------------------- rankings


SAMPLE = [
    measured("RTX 4090", 100, 0.36),  # $1.00/M
    measured("RTX 4090", 120, 0.216),  # $0.50/M
    measured("RTX 3090", 60, 0.108),  # $0.50/M, slower
    measured("H100 SXM", 200),  # no price
]


def test_best_is_fastest_first_and_cheapest_is_lowest_cost_first() -> None:
    fastest = benchmarks.best(SAMPLE)
    assert [r.measurement.tokens_per_second for r in fastest] == [200, 120, 100, 60]
    cheapest = benchmarks.cheapest(SAMPLE)
    assert [(r.measurement.gpu_name, round(r.usd_per_mtok or 0, 4)) for r in cheapest] == [
        ("RTX 4090", 0.5),  # a tie on cost: the faster first
        ("RTX 3090", 0.5),
        ("RTX 4090", 1.0),
    ]
    fast_enough = benchmarks.cheapest(SAMPLE, min_tps=100)
    assert [r.measurement.tokens_per_second for r in fast_enough] == [120, 100]


def test_compare_is_relative_to_the_fastest() -> None:
    compared = benchmarks.compare(SAMPLE[:3])
    assert [r.speedup for r in compared] == pytest.approx([1.0, 100 / 120, 0.5])
    assert [r.cost_efficiency for r in compared] == pytest.approx([1.0, 0.5, 1.0])
    unpriced_base = benchmarks.compare(SAMPLE)
    assert unpriced_base[0].measurement.gpu_name == "H100 SXM"
    assert all(r.cost_efficiency is None for r in unpriced_base)
    assert benchmarks.compare([]) == []


def test_recommend_averages_per_gpu_configuration() -> None:
    two = measured("RTX 4090", 180, 0.8, gpu_count=2)
    summaries = benchmarks.recommend([*SAMPLE, two])
    assert [(s.gpu_name, s.gpu_count, s.samples) for s in summaries] == [
        ("H100 SXM", 1, 1), ("RTX 4090", 2, 1), ("RTX 4090", 1, 2), ("RTX 3090", 1, 1),
    ]  # fmt: skip
    single = summaries[2]
    assert single.avg_tokens_per_second == 110
    assert single.avg_price_per_hour == pytest.approx(0.288)
    assert single.usd_per_mtok == pytest.approx(usd_per_mtok(0.288, 110))
    assert summaries[0].avg_price_per_hour is None and summaries[0].usd_per_mtok is None


# --------------------------------------------------------------------------- the join


def test_estimates_use_the_same_gpu_and_never_assume_more_gpus_scale() -> None:
    rows = [
        measured("RTX 4090", 100),
        measured("RTX 4090", 120),  # averaged with the one above: 110 tok/s
        measured("RTX 4090", 150, gpu_count=2),
        measured("H100 SXM", 300, gpu_count=2),
        measured("A100 80GB PCIe", 90),
    ]
    offers = {
        "one": make_offer(NOW, id="vastai:one", gpu_count=1, price_per_hour=0.396),
        "two": make_offer(NOW, id="vastai:two", gpu_count=2, price_per_hour=0.54),
        "eight": make_offer(NOW, id="vastai:eight", gpu_count=8, price_per_hour=2.16),
        "h100x1": make_offer(NOW, id="vastai:h100x1", gpu_name="H100 SXM", price_per_hour=2.0),
        "sxm": make_offer(NOW, id="vastai:sxm", gpu_name="A100 80GB SXM", price_per_hour=1.0),
        "3090": make_offer(NOW, id="vastai:3090", gpu_name="RTX 3090", price_per_hour=0.1),
    }
    estimates = estimate(offers.values(), rows)
    assert estimates == pytest.approx(
        {
            "vastai:one": 0.396 / (110 * 3600) * 1e6,  # = $1.00
            "vastai:two": 0.54 / (150 * 3600) * 1e6,  # measured with two: $1.00
            "vastai:eight": 2.16 / (150 * 3600) * 1e6,  # as fast as two measured, 4x the price
        }
    )  # no H100 x1 (only measured with two), no A100 SXM (a PCIe measurement), no RTX 3090


def test_only_single_gpu_measurements_price_a_multi_gpu_offer_at_single_gpu_speed() -> None:
    estimates = estimate(
        [make_offer(NOW, id="vastai:x4", gpu_count=4, price_per_hour=1.6)],
        [measured("RTX 4090", 160)],
    )
    assert estimates == {"vastai:x4": pytest.approx(1.6 / (160 * 3600) * 1e6)}


async def test_the_menu_prices_offers_for_a_model_and_refuses_an_unknown_one(
    store: Store, clock: FakeClock
) -> None:
    vast = ScriptedProvider("vastai", clock, [0.3, 0.5])
    inventory = Inventory({"vastai": vast}, clock=clock, store=store)
    try:
        with pytest.raises(UnknownModel, match=r"'llama3:8b' \(did you mean 'llama3.1:8b'\?\)"):
            await inventory.view(OfferQuery(model="llama3:8b"))
        assert vast.calls == 0  # refused before any provider was asked
        view = await inventory.view(OfferQuery(model="llama3.1:8b", sort="usd_per_mtok"))
        tps = 169  # the seed's RTX 4090 on llama3.1:8b
        assert view.usd_per_mtok == pytest.approx(
            {o.id: o.price_per_hour / (tps * 3600) * 1e6 for o in view.offers}
        )
        assert [o.price_per_hour for o in view.offers] == [0.3, 0.5]
        assert (await inventory.view()).usd_per_mtok == {}
    finally:
        await inventory.aclose()


def test_an_estimate_says_whether_it_rests_on_gpushops_own_measurements() -> None:
    own = {"source": "measured", "session_id": "s00001"}
    rows = [
        measured("RTX 4090", 100, source="seed"),
        measured("RTX 4090", 140, **own),  # averaged with the shipped one: 120 tok/s
        measured("RTX 4090", 200, gpu_count=2, source="mine.csv"),
        measured("L40S", 90, **own),
        measured("A100 80GB PCIe", 90, source="seed"),
    ]
    offers = [
        make_offer(NOW, id="vastai:x1", price_per_hour=0.432),
        make_offer(NOW, id="vastai:x2", gpu_count=2, price_per_hour=0.72),
        make_offer(NOW, id="vastai:x4", gpu_count=4, price_per_hour=1.44),
        make_offer(NOW, id="vastai:l40s", gpu_name="L40S", gpu_count=2, price_per_hour=0.648),
        make_offer(NOW, id="vastai:a100", gpu_name="A100 80GB PCIe", price_per_hour=0.324),
        make_offer(NOW, id="vastai:3090", gpu_name="RTX 3090", price_per_hour=0.1),
    ]
    priced = estimates(offers, rows)
    assert priced.usd_per_mtok == pytest.approx(
        {"vastai:x1": 1.0, "vastai:x2": 1.0, "vastai:x4": 2.0, "vastai:l40s": 2.0,
         "vastai:a100": 1.0}
    )  # fmt: skip
    assert priced.usd_per_mtok == estimate(offers, rows)
    # x2 and x4 rest on the imported two-GPU row only; the L40S pair on its own single-GPU row
    assert priced.measured == {"vastai:x1", "vastai:l40s"}
    assert estimates(offers, []).usd_per_mtok == {}


async def test_the_menu_marks_the_offers_priced_by_a_measurement_of_its_own(
    store: Store, clock: FakeClock
) -> None:
    vast = ScriptedProvider("vastai", clock, [0.3, 0.5])
    inventory = Inventory({"vastai": vast}, clock=clock, store=store)
    query = OfferQuery(model="llama3.1:8b")
    try:
        shipped = await inventory.view(query)
        assert shipped.usd_per_mtok and shipped.measured == frozenset()
        fields = {"model": "llama3.1:8b", "source": "measured", "session_id": "s00001"}
        await inventory.benchmarks.record(
            Benchmark(gpu_name="RTX 4090", gpu_count=2, tokens_per_second=400, **fields)
        )
        await inventory.benchmarks.record(
            Benchmark(gpu_name="H100 SXM", tokens_per_second=300, **fields)
        )
        assert (await inventory.view(query)).measured == frozenset()  # other configurations
        await inventory.benchmarks.record(
            Benchmark(gpu_name="RTX 4090", tokens_per_second=190, **fields)
        )
        view = await inventory.view(query)
        assert view.measured == {"vastai:0", "vastai:1"}
        tps = (169 + 169 + 190) / 3  # the seed's two rows and ours
        assert view.usd_per_mtok == pytest.approx(
            {o.id: o.price_per_hour / (tps * 3600) * 1e6 for o in view.offers}
        )
        assert (await inventory.view()).measured == frozenset()
    finally:
        await inventory.aclose()


# --------------------------------------------------------------------------- imports


def result(gpu: str = "NVIDIA GeForce RTX 4090", **overrides: Any) -> dict[str, Any]:
    """One benchmark result as the earlier implementation wrote it (prior-art §2.8)."""
    data: dict[str, Any] = {
        "id": "bench-1",
        "timestamp": "2026-01-31T12:00:00Z",
        "hardware": {"gpu_name": gpu, "gpu_memory_mib": 24564, "gpu_count": 1,
                     "driver_version": "550.54.15", "cuda_version": "12.4"},
        "model": {"name": "Qwen2:7B", "family": "qwen2", "runtime": "ollama"},
        "test_config": {"duration_minutes": 5, "max_tokens": 500, "concurrent_reqs": 1},
        "results": {"total_requests": 40, "total_errors": 0, "avg_tokens_per_second": 151.5,
                    "p50_tokens_per_second": 152.0},
        "gpu_stats": {"avg_utilization_pct": 91.0},
        "provider": "vastai",
        "location": "US",
        "price_per_hour": 0.31,
    }  # fmt: skip
    data.update(overrides)
    return data


def test_a_result_json_becomes_a_canonical_measurement(tmp_path: Path) -> None:
    path = tmp_path / "run-1.json"
    path.write_text(json.dumps(result()))
    [m] = benchmarks.read_file(path)
    assert m == Benchmark(
        gpu_name="RTX 4090", gpu_count=1, model="qwen2:7b", tokens_per_second=151.5,
        runtime="ollama", provider="vastai", price_per_hour=0.31,
        measured_at=datetime(2026, 1, 31, 12, tzinfo=UTC), source="run-1.json",
    )  # fmt: skip


def test_a_list_of_results_with_go_zero_values(tmp_path: Path) -> None:
    a100 = result("NVIDIA A100 PCIe", timestamp="0001-01-01T00:00:00Z", price_per_hour=0)
    a100["hardware"] |= {"gpu_memory_mib": 40960, "gpu_count": 0}
    path = tmp_path / "runs.json"
    path.write_text(json.dumps([result("NVIDIA A100-SXM4-80GB"), a100]))
    sxm, pcie = benchmarks.read_file(path)
    assert sxm.gpu_name == "A100 80GB SXM"
    assert (pcie.gpu_name, pcie.gpu_count, pcie.measured_at, pcie.price_per_hour) == (
        "A100 40GB PCIe", 1, None, None,
    )  # fmt: skip


def test_a_csv_in_the_simple_format(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(
        "gpu_name,model,tokens_per_second,gpu_count,price_per_hour,note\n"
        "GeForce RTX 3090,Llama3.1:8B,140.5,,0.1,rented on a Tuesday\n"
        "H100 SXM5 80GB,llama3.1:70b,38,2,,\n"
    )
    first, second = benchmarks.read_file(path)
    assert (first.gpu_name, first.model, first.gpu_count, first.price_per_hour) == (
        "RTX 3090", "llama3.1:8b", 1, 0.1,
    )  # fmt: skip
    assert (second.gpu_name, second.gpu_count, second.price_per_hour) == ("H100 SXM", 2, None)
    assert first.source == "mine.csv"


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("gone.csv", None, "cannot read"),
        ("empty.csv", "", "no 'gpu_name' column"),
        ("header.csv", "gpu_name,model,tokens_per_second\n", "holds no measurements"),
        ("bytes.csv", b"\xff\xfe\x00gpu", "is not a UTF-8 text file"),
        ("typo.csv", "gpu_name,model,tps\nRTX 4090,x,1\n", "unknown column 'tps'"),
        ("zero.csv", "gpu_name,model,tokens_per_second\nRTX 4090,x,0\n",
         "zero.csv line 2: tokens_per_second: Input should be greater than 0"),
        ("word.csv", "gpu_name,model,tokens_per_second\nRTX 4090,x,1\nRTX 4090,x,fast\n",
         "word.csv line 3: tokens_per_second"),
        ("wide.csv", "gpu_name,model,tokens_per_second\nRTX 4090,x,1,2\n", "more cells"),
        ("broken.json", '{"hardware": ', "broken.json is not valid JSON"),
        ("shape.json", '{"hardware": {"gpu_name": "RTX 4090"}}',
         "shape.json is not a benchmark result (model: Field required)"),
        ("failed.json", json.dumps([result(), result(results={"avg_tokens_per_second": 0})]),
         "failed.json entry 2 is not a benchmark result (results.avg_tokens_per_second"),
        ("naive.json", json.dumps(result(timestamp="2026-01-31T12:00:00")), "measured_at"),
    ],
)  # fmt: skip
def test_a_bad_file_is_one_sentence(
    tmp_path: Path, name: str, content: str | bytes | None, says: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(UserError) as caught:
        benchmarks.read_file(path)
    assert says in caught.value.message
    assert "\n" not in caught.value.message


async def test_imports_persist_join_the_seed_and_replace_themselves(
    store: Store, tmp_path: Path
) -> None:
    catalogue = Benchmarks(store)
    path = tmp_path / "runs.json"
    path.write_text(json.dumps([result(), result("RTX 4090", price_per_hour=0.3)]))
    assert await catalogue.import_file(path) == (2, 0)
    assert "qwen2:7b" in await catalogue.models()
    path.write_text(json.dumps(result(gpu="RTX 5090")))
    assert await catalogue.import_file(path) == (1, 2)  # the same file again: no double count
    [imported] = await catalogue.measurements("qwen2:7b")
    assert (imported.gpu_name, imported.source) == ("RTX 5090", "runs.json")
    assert imported.measured_at == datetime(2026, 1, 31, 12, tzinfo=UTC)
    llama = await catalogue.measurements("llama3.1:8b", gpu="3090")
    assert {(m.gpu_name, m.source) for m in llama} == {("RTX 3090", "seed")}
    with pytest.raises(UnknownModel, match="models measured: deepseek-r1:14b, "):
        await catalogue.measurements("gpt-5")
