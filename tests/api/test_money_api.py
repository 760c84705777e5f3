"""Costs, budgets and benchmark rankings over the API, with consumer scoping."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.api.harness import api_market

# Local days are UTC days here, so the fake clock's first hours stay in one month.
pytestmark = pytest.mark.usefixtures("utc_local_time")


def error_of(answer: httpx.Response, status: int) -> dict[str, object]:
    assert answer.status_code == status, answer.text
    error: dict[str, object] = answer.json()["error"]
    assert error["request_id"] == answer.headers["x-request-id"]
    return error


async def test_costs_per_session_and_over_local_days(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        market = ride.market
        session = await market.running(consumer="alice")
        await market.advance(1800, step_s=60)
        now = market.clock.now()
        billed = (await ride.shopper.session_view(session.id)).cost_at(now)
        assert billed > 0

        one = (await ride.client.get("/api/v1/costs", params={"session_id": session.id})).json()
        assert one == {"session_id": session.id, "total_cost": round(billed, 6), "currency": "USD"}

        month = (await ride.client.get("/api/v1/costs")).json()
        assert (month["start_date"], month["end_date"]) == ("2026-01-01", "2026-01-31")
        assert month["total_cost"] == pytest.approx(billed, abs=1e-5)
        assert month["by_consumer"] == {"alice": pytest.approx(billed, abs=1e-5)}
        assert list(month["by_provider"]) == [session.provider]
        assert month["daily"] == [{"date": "2026-01-01", "cost": pytest.approx(billed, abs=1e-5)}]
        assert month["session_count"] == 1 and month["currency"] == "USD"

        daily = (await ride.client.get("/api/v1/costs", params={"period": "daily"})).json()
        assert (daily["start_date"], daily["end_date"]) == ("2026-01-01", "2026-01-01")
        from_start = await ride.client.get("/api/v1/costs", params={"start_date": "2026-01-05"})
        assert from_start.json()["end_date"] == "2026-01-31"
        assert from_start.json()["total_cost"] == 0
        to_end = await ride.client.get("/api/v1/costs", params={"end_date": "2026-02-10"})
        assert to_end.json()["start_date"] == "2026-02-01"
        others = await ride.client.get("/api/v1/costs", params={"consumer_id": "bob"})
        assert others.json()["total_cost"] == 0 and others.json()["consumer_id"] == "bob"

        summary = (await ride.client.get("/api/v1/costs/summary")).json()
        assert summary["today_cost"] == pytest.approx(billed, abs=1e-5)
        assert summary["burn_usd_per_hour"] == pytest.approx(session.price_per_hour)

        unknown = await ride.client.get("/api/v1/costs", params={"session_id": "nope"})
        assert error_of(unknown, 404)["type"] == "not_found"
        backwards = await ride.client.get(
            "/api/v1/costs", params={"start_date": "2026-01-05", "end_date": "2026-01-04"}
        )
        assert error_of(backwards, 400)["field"] == "end_date"
        bad_day = await ride.client.get("/api/v1/costs", params={"start_date": "2026-13-01"})
        assert error_of(bad_day, 400)["field"] == "start_date"
        far = await ride.client.get("/api/v1/costs", params={"end_date": "9999-12-31"})
        assert error_of(far, 400)["field"] == "end_date"
        bad_period = await ride.client.get("/api/v1/costs", params={"period": "weekly"})
        assert error_of(bad_period, 400)["field"] == "period"


async def test_a_scoped_token_sees_only_its_consumers_costs(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        session = await ride.market.running(consumer="alice")
        await ride.market.advance(600, step_s=60)
        async with (
            ride.client_as(ride.tokens.for_consumer("bob")) as bob,
            ride.client_as(ride.tokens.for_consumer("alice")) as alice,
        ):
            hidden = await bob.get("/api/v1/costs", params={"session_id": session.id})
            assert error_of(hidden, 404)["type"] == "not_found"
            forbidden = await bob.get("/api/v1/costs", params={"consumer_id": "alice"})
            assert error_of(forbidden, 403)["type"] == "forbidden"
            mine = (await bob.get("/api/v1/costs")).json()
            assert mine["consumer_id"] == "bob" and mine["total_cost"] == 0
            bob_summary = (await bob.get("/api/v1/costs/summary")).json()
            assert bob_summary["by_consumer"] == {} and bob_summary["burn_usd_per_hour"] == 0
            own = await alice.get("/api/v1/costs", params={"session_id": session.id})
            assert own.json()["total_cost"] > 0
            assert (await alice.get("/api/v1/costs")).json()["by_consumer"].keys() == {"alice"}


async def test_budgets_are_listed_with_usage_and_written_by_the_operator_only(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        await ride.market.running(consumer="alice")
        first = await ride.client.put(
            "/api/v1/budgets", json={"kind": "monthly_spend", "limit": 10, "action": "block"}
        )
        assert first.status_code == 200, first.text
        budget = first.json()
        assert budget["consumer"] is None and budget["action"] == "block"
        again = await ride.client.put(
            "/api/v1/budgets", json={"kind": "monthly_spend", "limit": 20, "action": "warn"}
        )
        assert again.json() == {**budget, "limit": 20, "action": "warn"}
        alice_budget = (
            await ride.client.put(
                "/api/v1/budgets",
                json={"consumer": "alice", "kind": "concurrent_sessions", "limit": 1},
            )
        ).json()

        listed = (await ride.client.get("/api/v1/budgets")).json()
        assert listed["count"] == 2
        concurrent = next(b for b in listed["budgets"] if b["id"] == alice_budget["id"])
        assert concurrent["used"] == 1 and concurrent["fraction"] == 1
        assert concurrent["thresholds_passed"] == [50, 80, 100] and concurrent["over"] is False

        async with ride.client_as(ride.tokens.for_consumer("alice")) as alice:
            own = (await alice.get("/api/v1/budgets")).json()
            assert [b["id"] for b in own["budgets"]] == [alice_budget["id"]]
            put = await alice.put("/api/v1/budgets", json={"kind": "burn_rate", "limit": 5})
            assert error_of(put, 403)["type"] == "forbidden"
            delete = await alice.delete(f"/api/v1/budgets/{budget['id']}")
            assert error_of(delete, 403)["type"] == "forbidden"

        for body, field in (
            ({"kind": "monthly_spend", "limit": -1}, "limit"),
            ({"kind": "yearly", "limit": 1}, "kind"),
            ({"kind": "burn_rate", "limit": 1, "consumer": "no spaces"}, "consumer"),
        ):
            invalid = await ride.client.put("/api/v1/budgets", json=body)
            error = error_of(invalid, 422)
            assert error["type"] == "invalid_body" and error["field"] == field

        gone = await ride.client.delete(f"/api/v1/budgets/{budget['id']}")
        assert gone.status_code == 204 and gone.content == b""
        assert error_of(await ride.client.delete(f"/api/v1/budgets/{budget['id']}"), 404)
        assert error_of(await ride.client.delete("/api/v1/budgets/0"), 400)["field"] == "budget_id"
        assert (await ride.client.get("/api/v1/budgets")).json()["count"] == 1


async def test_benchmark_lists_and_rankings(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        client = ride.client
        listed = (await client.get("/api/v1/benchmarks", params={"limit": 3})).json()
        assert listed["count"] == 3 == len(listed["benchmarks"])
        of_model = (
            await client.get("/api/v1/benchmarks", params={"model": "llama3.1:8b", "gpu": "4090"})
        ).json()
        assert of_model["count"] >= 1
        assert all(b["gpu_name"] == "RTX 4090" for b in of_model["benchmarks"])

        params = {"model": "LLaMA3.1:8b"}
        best = (await client.get("/api/v1/benchmarks/best", params=params)).json()
        assert best["model"] == "llama3.1:8b" and best["ranking"] == "best"
        speeds = [b["tokens_per_second"] for b in best["benchmarks"]]
        assert speeds == sorted(speeds, reverse=True) and best["count"] == len(speeds) > 1

        cheapest = await client.get(
            "/api/v1/benchmarks/cheapest", params={**params, "min_tps": 100}
        )
        rows = cheapest.json()["benchmarks"]
        prices = [b["usd_per_mtok"] for b in rows]
        assert prices == sorted(prices) and all(b["tokens_per_second"] >= 100 for b in rows)

        compared = (await client.get("/api/v1/benchmarks/compare", params=params)).json()
        assert compared["benchmarks"][0]["speedup"] == 1
        assert all(b["speedup"] <= 1 for b in compared["benchmarks"])

        advice = (await client.get("/api/v1/benchmarks/recommendations", params=params)).json()
        averages = [r["avg_tokens_per_second"] for r in advice["recommendations"]]
        assert averages == sorted(averages, reverse=True) and advice["count"] == len(averages)

        unknown = await client.get("/api/v1/benchmarks/best", params={"model": "gpt-9"})
        error = error_of(unknown, 400)
        assert error["field"] == "model" and "gpt-9" in str(error["message"])
        assert error_of(await client.get("/api/v1/benchmarks/compare"), 400)["field"] == "model"
        too_many = await client.get("/api/v1/benchmarks", params={"limit": 201})
        assert error_of(too_many, 400)["field"] == "limit"


async def test_post_budgets_creates_or_replaces_like_put(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        body = {"consumer": "atlas", "kind": "monthly_spend", "limit": 100}
        made = await ride.client.post("/api/v1/budgets", json=body)
        assert made.status_code == 200, made.text
        budget = made.json()
        assert budget["consumer"] == "atlas" and budget["limit"] == 100
        replaced = await ride.client.post("/api/v1/budgets", json={**body, "limit": 50})
        assert replaced.json() == {**budget, "limit": 50}
        listed = (await ride.client.get("/api/v1/budgets")).json()
        assert [b["id"] for b in listed["budgets"]] == [budget["id"]]
        async with ride.client_as(ride.tokens.for_consumer("atlas")) as atlas:
            refused = await atlas.post("/api/v1/budgets", json=body)
            assert error_of(refused, 403)["type"] == "forbidden"
        invalid = await ride.client.post("/api/v1/budgets", json={**body, "limit": -1})
        assert error_of(invalid, 422)["field"] == "limit"
