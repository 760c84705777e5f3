"""`GET /api/v1/inventory`, `/inventory/compare` and `/inventory/{id}` over the simulator's menu."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gpushop_tui.core import InventoryView, Shopper
from gpushop_tui.models import Benchmark
from tests.api.harness import api_market

PRIOR_KEYS = {
    "id", "provider", "provider_id", "gpu_type", "gpu_count", "vram_gb", "price_per_hour",
    "location", "reliability", "cuda_version", "fetched_at", "interruptible",
}  # fmt: skip
OUR_KEYS = {
    "price_per_gpu_hour", "region", "country", "inet_down_mbps", "usd_per_mtok",
    "usd_per_mtok_measured",
}  # fmt: skip


async def test_prior_parameters_filter_and_page_the_menu_with_provider_status(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai", "tensordock")) as ride:
        everything = (await ride.client.get("/api/v1/inventory", params={"limit": 1000})).json()
        assert everything["count"] == min(everything["total"], 1000) > 0
        offer = everything["offers"][0]
        assert offer.keys() >= PRIOR_KEYS | OUR_KEYS
        assert offer["id"] == f"{offer['provider']}:{offer['provider_id']}"
        prices = [o["price_per_hour"] for o in everything["offers"]]
        assert prices == sorted(prices)
        status = {p["provider"]: p for p in everything["providers"]}
        assert status["vastai"]["status"] == "ok" and status["vastai"]["offers"] > 0
        assert status["bluelobster"]["status"] == "not configured"

        params = {"provider": "vastai", "min_vram": 24, "max_price": 2, "min_gpu_count": 2}
        answer = await ride.client.get("/api/v1/inventory", params=params)
        assert answer.status_code == 200
        filtered = answer.json()["offers"]
        assert filtered and len(filtered) < everything["total"]
        for o in filtered:
            assert o["provider"] == "vastai" and o["vram_gb"] >= 24
            assert o["price_per_hour"] <= 2 and o["gpu_count"] >= 2
        exact = (await ride.client.get("/api/v1/inventory", params={"gpu_count": 1})).json()
        assert exact["offers"] and {o["gpu_count"] for o in exact["offers"]} == {1}

        page = (await ride.client.get("/api/v1/inventory", params={"limit": 3, "offset": 2})).json()
        assert page["count"] == 3 and page["total"] == everything["total"]
        assert [o["id"] for o in page["offers"]] == [o["id"] for o in everything["offers"][2:5]]


async def test_q_takes_the_query_language_and_points_at_a_bad_term(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        answer = await ride.client.get(
            "/api/v1/inventory", params={"q": "vram>=40 sort=vram", "provider": "vastai"}
        )
        assert answer.status_code == 200
        offers = answer.json()["offers"]
        assert offers and all(o["vram_gb"] >= 40 and o["provider"] == "vastai" for o in offers)
        sizes = [o["vram_gb"] * o["gpu_count"] for o in offers]
        assert sizes == sorted(sizes, reverse=True)

        bad = await ride.client.get("/api/v1/inventory", params={"q": "gpu=4090 vrma>=24"})
        assert bad.status_code == 400
        error = bad.json()["error"]
        assert error["type"] == "bad_query" and error["field"] == "q"
        assert error["span"] == [9, 13] and "unknown key 'vrma'" in error["message"]

        clash = await ride.client.get(
            "/api/v1/inventory", params={"q": "provider=tensordock", "provider": "vastai"}
        )
        assert clash.status_code == 400 and clash.json()["error"]["field"] == "provider"


async def test_a_model_prices_offers_per_million_tokens(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        model = sorted(await ride.shopper.benchmark_models())[0]
        plain = (await ride.client.get("/api/v1/inventory")).json()["offers"]
        assert all(o["usd_per_mtok"] is None for o in plain)
        priced = await ride.client.get(
            "/api/v1/inventory", params={"q": f"model={model} sort=usd_per_mtok"}
        )
        costs = [o["usd_per_mtok"] for o in priced.json()["offers"]]
        known = [c for c in costs if c is not None]
        assert known and known == sorted(known) and costs[: len(known)] == known
        unknown = await ride.client.get("/api/v1/inventory", params={"model": "no-such-model"})
        assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "model"


async def test_a_models_estimates_say_which_rest_on_gpushops_own_measurements(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        params = {"model": "llama3.1:8b", "limit": 1000}
        shipped = (await ride.client.get("/api/v1/inventory", params=params)).json()["offers"]
        assert not any(o["usd_per_mtok_measured"] for o in shipped)
        ours = Benchmark(gpu_name="RTX 4090", model="llama3.1:8b", tokens_per_second=190,
                         source="measured", session_id="s00001")  # fmt: skip
        await ride.shopper._inventory.benchmarks.record(ours)
        offers = (await ride.client.get("/api/v1/inventory", params=params)).json()["offers"]
        measured = {o["id"] for o in offers if o["usd_per_mtok_measured"]}
        assert measured and measured == {o["id"] for o in offers if o["gpu_type"] == "RTX 4090"}
        rows = (await ride.client.get("/api/v1/inventory/compare", params=params)).json()["rows"]
        assert {r["gpu_type"] for r in rows if r["usd_per_mtok_measured"]} == {"RTX 4090"}
        assert any(r["usd_per_mtok"] is not None and not r["usd_per_mtok_measured"] for r in rows)
        plain = (await ride.client.get("/api/v1/inventory")).json()["offers"]
        assert not any(o["usd_per_mtok_measured"] for o in plain)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"min_vram": "lots"}, "min_vram"),
        ({"min_reliability": 2}, "min_reliability"),
        ({"provider": "aws"}, "provider"),
        ({"limit": 0}, "limit"),
        ({"gpu_count": 2, "min_gpu_count": 1}, "gpu_count"),
    ],
)
async def test_bad_parameters_are_400_naming_the_field(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, params: dict[str, object], field: str
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        answer = await ride.client.get("/api/v1/inventory", params=params)
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["field"] == field and error["request_id"] == answer.headers["x-request-id"]


async def test_one_offer_by_our_id_or_the_earlier_form(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        listed = (await ride.client.get("/api/v1/inventory")).json()["offers"][0]
        ours = await ride.client.get(f"/api/v1/inventory/{listed['id']}")
        assert ours.status_code == 200 and ours.json()["id"] == listed["id"]
        prior = await ride.client.get(f"/api/v1/inventory/vastai-{listed['provider_id']}")
        assert prior.status_code == 200 and prior.json() == ours.json()
        missing = await ride.client.get("/api/v1/inventory/vastai:999999999")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
        async with ride.client_as(None) as anonymous:
            assert (await anonymous.get(f"/api/v1/inventory/{listed['id']}")).status_code == 401


async def test_the_briefs_gpu_parameter_filters_by_gpu(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai", "tensordock")) as ride:
        answer = await ride.client.get("/api/v1/inventory", params={"gpu": "4090", "min_vram": 24})
        assert answer.status_code == 200, answer.text
        offers = answer.json()["offers"]
        assert offers and all("4090" in o["gpu_type"] and o["vram_gb"] >= 24 for o in offers)
        both = await ride.client.get(
            "/api/v1/inventory", params={"gpu": "4090", "gpu_type": "a100"}
        )
        assert both.status_code == 400 and both.json()["error"]["field"] == "gpu"


async def test_a_capped_provider_answer_says_truncated(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai", "tensordock")) as ride:
        offers = Shopper.offers

        async def capped_vastai(self: Shopper, *args: Any, **kwargs: Any) -> InventoryView:
            view = await offers(self, *args, **kwargs)
            reports = [
                replace(r, truncated=True) if r.provider == "vastai" else r for r in view.providers
            ]
            return replace(view, providers=reports)

        monkeypatch.setattr(Shopper, "offers", capped_vastai)
        status = (await ride.client.get("/api/v1/inventory")).json()["providers"]
        truncated = {p["provider"]: p["truncated"] for p in status}
        assert truncated["vastai"] is True and truncated["tensordock"] is False


async def test_compare_groups_the_same_offers_by_gpu_with_each_providers_best(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai", "tensordock")) as ride:
        params = {"min_vram": 24, "limit": 1000}
        offers = (await ride.client.get("/api/v1/inventory", params=params)).json()["offers"]
        answer = await ride.client.get("/api/v1/inventory/compare", params=params)
        assert answer.status_code == 200, answer.text
        compared = answer.json()
        rows = compared["rows"]
        assert compared["count"] == compared["total"] == len(rows) > 1
        assert compared["matching_offers"] == len(offers) == sum(r["offers"] for r in rows)
        assert [p["provider"] for p in compared["providers"]] == [
            "vastai", "tensordock", "bluelobster", "runpod", "lambda"
        ]  # fmt: skip
        groups = {(o["gpu_type"], o["gpu_count"]) for o in offers}
        assert {(r["gpu_type"], r["gpu_count"]) for r in rows} == groups
        for row in rows:
            key = (row["gpu_type"], row["gpu_count"])
            mine = [o for o in offers if (o["gpu_type"], o["gpu_count"]) == key]
            assert row["price_min"] == min(o["price_per_hour"] for o in mine)
            assert row["price_max"] == max(o["price_per_hour"] for o in mine)
            assert list(row["by_provider"]) == [
                p for p in ("vastai", "tensordock") if any(o["provider"] == p for o in mine)
            ]
            for provider, best in row["by_provider"].items():
                own = [o for o in mine if o["provider"] == provider]
                assert best["offers"] == len(own)
                assert best["price_per_hour"] == min(o["price_per_hour"] for o in own)
            assert row["usd_per_mtok"] is None
        assert any(len(row["by_provider"]) == 2 for row in rows)

        paged: dict[str, str | int] = {"q": "vram>=24 limit=4", "offset": 1, "limit": 2}
        page = (await ride.client.get("/api/v1/inventory/compare", params=paged)).json()
        assert page["total"] == 4 and page["count"] == 2
        assert page["rows"] == rows[1:3]

        model = sorted(await ride.shopper.benchmark_models())[0]
        priced = await ride.client.get("/api/v1/inventory/compare", params={"model": model})
        assert priced.json()["model"] == model
        assert any(r["usd_per_mtok"] is not None for r in priced.json()["rows"])


@pytest.mark.parametrize(
    ("params", "field"),
    [({"min_vram": "lots"}, "min_vram"), ({"provider": "aws"}, "provider"), ({"per": 1}, "per")],
)
async def test_compare_refuses_what_the_inventory_refuses(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, params: dict[str, object], field: str
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        answer = await ride.client.get("/api/v1/inventory/compare", params=params)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["field"] == field
        if field == "per":
            assert "unknown query parameter 'per'" in answer.json()["error"]["message"]
        spec = (await ride.client.get("/openapi.json")).json()
        operation = spec["paths"]["/api/v1/inventory/compare"]["get"]
        assert {p["name"] for p in operation["parameters"]} == {
            p["name"] for p in spec["paths"]["/api/v1/inventory"]["get"]["parameters"]
        }
        assert "ComparisonOut" in str(operation["responses"]["200"])
