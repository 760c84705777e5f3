"""Sessions over the API: rent, read, key, activity, extend, done, delete; scoping; errors."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop_tui.models import Budget, BudgetAction, BudgetKind
from tests.api.harness import ApiRide, api_market

PRIOR_KEYS = {
    "id", "consumer_id", "provider", "gpu_type", "gpu_count", "status", "error", "ssh_host",
    "ssh_port", "ssh_user", "workload_type", "reservation_hours", "idle_threshold_minutes",
    "storage_policy", "price_per_hour", "created_at", "expires_at",
}  # fmt: skip
OUR_KEYS = {
    "offer_id", "instance_id", "instance_state", "hard_max_at", "stopped_at", "idle_reason",
    "cost_usd", "ssh_command", "status_words", "idle_action", "keep_days", "keep_until",
    "disk_usd_per_day", "cycles",
}  # fmt: skip


async def rent(
    ride: ApiRide, client: httpx.AsyncClient | None = None, **body: Any
) -> httpx.Response:
    """POST /api/v1/sessions for the cheapest free vastai offer unless the body names one."""
    if "offer_id" not in body and "query" not in body:
        body["offer_id"] = (await ride.market.offer()).id
    body.setdefault("workload_type", "interactive")
    body.setdefault("reservation_hours", 2)
    body.setdefault("idle_threshold_minutes", 0)
    return await ride.call((client or ride.client).post("/api/v1/sessions", json=body))


async def test_rent_with_the_prior_offer_id_is_idempotent_and_hands_the_key_only_on_ask(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        offer = await ride.market.offer()
        body = {"consumer_id": "alice", "request_id": "job-7", "storage_policy": "destroy"}
        first = await rent(ride, offer_id=f"vastai-{offer.provider_offer_id}", **body)
        assert first.status_code == 201, first.text
        created = first.json()
        assert created["ssh_private_key"] is None and created["retries_attempted"] == 0
        session = created["session"]
        assert session.keys() >= PRIOR_KEYS | OUR_KEYS
        assert session["offer_id"] == offer.id and session["consumer_id"] == "alice"
        assert session["status"] in ("provisioning", "running")
        assert Path(created["key_path"]).exists()

        again = await rent(ride, offer_id=offer.id, return_private_key=True, **body)
        assert again.status_code == 200
        assert again.json()["session"]["id"] == session["id"]
        key = again.json()["ssh_private_key"]
        assert key is not None and "PRIVATE KEY" in key
        assert key == Path(created["key_path"]).read_text()
        assert len(ride.market.live_instances("vastai")) == 1

        recovered = await ride.client.get(f"/api/v1/sessions/{session['id']}/key")
        assert recovered.json() == {"session_id": session["id"], "ssh_private_key": key}
        shown = await ride.client.get(f"/api/v1/sessions/{session['id']}")
        assert "PRIVATE KEY" not in shown.text

        async with ride.client_as(ride.tokens.for_consumer("bob")) as bob:
            reused = await rent(ride, bob, offer_id=offer.id, request_id="job-7")
            assert reused.status_code == 409


async def test_a_session_goes_running_then_activity_extend_done_and_its_key_is_gone(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        created = await rent(ride, consumer_id="alice")
        sid = created.json()["session"]["id"]
        await ride.market.until(sid, lambda s: s.status == "running", step_s=2)
        await ride.market.advance(60)
        running = (await ride.client.get(f"/api/v1/sessions/{sid}")).json()
        assert running["status"] == "running" and running["instance_state"] == "live"
        assert running["ssh_command"].startswith("ssh -i ")
        assert running["cost_usd"] > 0

        touched = await ride.client.post(f"/api/v1/sessions/{sid}/activity")
        assert touched.status_code == 200
        assert datetime.fromisoformat(touched.json()["last_busy_at"]) == ride.market.clock.now()

        extended = await ride.client.post(
            f"/api/v1/sessions/{sid}/extend", json={"additional_hours": 1.5}
        )
        assert extended.status_code == 200
        new_expiry = datetime.fromisoformat(extended.json()["new_expires_at"])
        assert new_expiry == datetime.fromisoformat(running["expires_at"]) + timedelta(hours=1.5)
        past = await ride.client.post(
            f"/api/v1/sessions/{sid}/extend", json={"additional_hours": 12}
        )
        assert past.status_code == 400 and "hard max" in past.json()["error"]["message"]
        assert (
            await ride.client.post(f"/api/v1/sessions/{sid}/extend", json={"additional_hours": 0})
        ).status_code == 422

        done = await ride.client.post(f"/api/v1/sessions/{sid}/done")
        assert done.status_code == 202
        assert done.json()["session_id"] == sid and done.json()["status"] == "stopping"
        await ride.market.until(sid, lambda s: s.closed, step_s=2)
        assert not ride.market.live_instances("vastai")
        gone = await ride.client.get(f"/api/v1/sessions/{sid}/key")
        assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found"
        assert (await ride.client.post(f"/api/v1/sessions/{sid}/done")).status_code == 409
        late = await ride.client.post(
            f"/api/v1/sessions/{sid}/extend", json={"additional_hours": 1}
        )
        assert late.status_code == 409 and late.json()["error"]["type"] == "conflict"
        assert (await ride.client.post(f"/api/v1/sessions/{sid}/activity")).status_code == 409
        deleted = await ride.client.delete(f"/api/v1/sessions/{sid}")
        assert deleted.status_code == 202 and deleted.json()["status"] == "ended"
        closed = (await ride.client.get(f"/api/v1/sessions/{sid}")).json()
        assert closed["ssh_command"] is None and closed["cost_usd"] > 0


async def test_delete_destroys_a_kept_session(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        created = await rent(ride, consumer_id="alice", storage_policy="preserve")
        session = created.json()["session"]
        assert session["storage_policy"] == "keep"
        deleted = await ride.client.delete(f"/api/v1/sessions/{session['id']}")
        assert deleted.status_code == 202
        stored = await ride.market.until(session["id"], lambda s: s.closed, step_s=2)
        assert (stored.status, stored.instance) == ("ended", "gone")
        assert not ride.market.live_instances("vastai")


async def test_scoped_tokens_see_and_act_on_their_own_consumer_only(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride,
        ride.client_as(ride.tokens.for_consumer("alice")) as alice,
        ride.client_as(ride.tokens.for_consumer("bob")) as bob,
    ):
        mine = await rent(ride, alice)
        assert mine.status_code == 201 and mine.json()["session"]["consumer_id"] == "alice"
        sid = mine.json()["session"]["id"]
        for_bob = await rent(ride, alice, consumer_id="bob")
        assert for_bob.status_code == 403 and for_bob.json()["error"]["type"] == "forbidden"
        theirs = await rent(ride, consumer_id="bob")
        assert theirs.status_code == 201

        listed = (await alice.get("/api/v1/sessions")).json()
        assert [s["id"] for s in listed["sessions"]] == [sid] and listed["count"] == 1
        assert (
            await alice.get("/api/v1/sessions", params={"consumer_id": "bob"})
        ).status_code == 403
        assert (await ride.client.get("/api/v1/sessions")).json()["count"] == 2

        assert (await alice.get(f"/api/v1/sessions/{sid}/key")).status_code == 200
        for method, path, body in (
            ("GET", f"/api/v1/sessions/{sid}", None),
            ("GET", f"/api/v1/sessions/{sid}/key", None),
            ("POST", f"/api/v1/sessions/{sid}/activity", None),
            ("POST", f"/api/v1/sessions/{sid}/extend", {"additional_hours": 1}),
            ("POST", f"/api/v1/sessions/{sid}/stop", None),
            ("POST", f"/api/v1/sessions/{sid}/start", {"hours": 1}),
            ("POST", f"/api/v1/sessions/{sid}/done", None),
            ("DELETE", f"/api/v1/sessions/{sid}", None),
        ):
            answer = await bob.request(method, path, json=body)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["error"]["type"] == "not_found"
        assert (await ride.shopper.session(sid)).status != "stopping"


async def test_listing_filters_newest_first(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        ids = []
        for consumer in ("alice", "alice", "bob"):
            ids.append((await rent(ride, consumer_id=consumer)).json()["session"]["id"])
            await ride.market.advance(5)
        await ride.client.post(f"/api/v1/sessions/{ids[0]}/done")
        await ride.market.until(ids[0], lambda s: s.closed, step_s=2)

        everyone = (await ride.client.get("/api/v1/sessions")).json()
        assert [s["id"] for s in everyone["sessions"]] == ids[::-1]
        alices = (await ride.client.get("/api/v1/sessions", params={"consumer_id": "alice"})).json()
        assert [s["id"] for s in alices["sessions"]] == [ids[1], ids[0]]
        ended = (await ride.client.get("/api/v1/sessions", params={"status": "ended"})).json()
        assert [s["id"] for s in ended["sessions"]] == [ids[0]]
        one = (await ride.client.get("/api/v1/sessions", params={"limit": 1})).json()
        assert one["count"] == 1 and one["sessions"][0]["id"] == ids[2]
        other = await ride.client.get("/api/v1/sessions", params={"provider": "tensordock"})
        assert other.json() == {"sessions": [], "count": 0}
        bad = await ride.client.get("/api/v1/sessions", params={"status": "sleeping"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "status"
        nobody = await ride.client.get("/api/v1/sessions", params={"provider": "aws"})
        assert nobody.status_code == 400 and nobody.json()["error"]["field"] == "provider"
        missing = await ride.client.get("/api/v1/sessions/nosuchsession")
        assert missing.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"consumer_id": "alice"}, None),
        ({"consumer_id": "alice", "offer_id": "vastai:1", "query": "gpu=4090"}, None),
        ({"consumer_id": "alice", "offer_id": "vastai:1", "reservation_hours": 13},
         "reservation_hours"),
        ({"consumer_id": "alice", "offer_id": "vastai:1", "storage_policy": "archive"},
         "storage_policy"),
        ({"consumer_id": "no spaces", "offer_id": "vastai:1"}, "consumer_id"),
        ({"offer_id": "vastai:1"}, "consumer_id"),
    ],
)  # fmt: skip
async def test_bad_bodies_are_422_naming_the_field(
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    body: dict[str, Any],
    field: str | None,
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        answer = await ride.client.post("/api/v1/sessions", json=body)
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["type"] == "invalid_body"
        if field is not None:
            assert error["field"] == field


async def test_core_refusals_map_to_their_statuses(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        unknown = await rent(ride, consumer_id="alice", offer_id="vastai-999999999")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["type"] == "not_found"
        assert not unknown.json()["error"].get("retry_suggested")
        bad_query = await rent(ride, consumer_id="alice", query="gpu=4090 vrma>=2")
        assert bad_query.status_code == 400 and "vrma" in bad_query.json()["error"]["message"]
        unconfigured = await rent(ride, consumer_id="alice", offer_id="tensordock-abc")
        assert unconfigured.status_code == 503

        await ride.shopper.set_budget(
            Budget(
                consumer="alice",
                kind=BudgetKind.CONCURRENT_SESSIONS,
                limit=1,
                action=BudgetAction.BLOCK,
            )
        )
        assert (await rent(ride, consumer_id="alice")).status_code == 201
        refused = await rent(ride, consumer_id="alice")
        assert refused.status_code == 409
        assert refused.json()["error"]["type"] == "budget_refused"
        assert len(ride.market.live_instances("vastai")) == 1


async def test_hours_follow_the_one_rule_set_of_every_face(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        short = await rent(ride, consumer_id="alice", reservation_hours=0.25)
        assert short.status_code == 201, short.text
        session = short.json()["session"]
        assert session["reservation_hours"] == 0.25
        too_short = await rent(ride, consumer_id="alice", reservation_hours=0.2)
        assert too_short.status_code == 422
        error = too_short.json()["error"]
        assert error["type"] == "invalid_body" and error["field"] == "reservation_hours"
        assert "reservation_hours" in error["message"]

        extend = f"/api/v1/sessions/{session['id']}/extend"
        quarter = await ride.client.post(extend, json={"additional_hours": 0.25})
        assert quarter.status_code == 200, quarter.text
        assert datetime.fromisoformat(quarter.json()["new_expires_at"]) == datetime.fromisoformat(
            session["expires_at"]
        ) + timedelta(hours=0.25)
        tiny = await ride.client.post(extend, json={"additional_hours": 0.2})
        assert tiny.status_code == 422 and tiny.json()["error"]["field"] == "additional_hours"


async def test_a_request_id_of_another_consumers_session_is_a_conflict(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        first = await rent(ride, consumer_id="alice", request_id="job-9")
        assert first.status_code == 201, first.text
        reused = await rent(ride, consumer_id="bob", request_id="job-9")
        assert reused.status_code == 409, reused.text
        error = reused.json()["error"]
        assert error["type"] == "conflict" and error["field"] == "request_id"
        assert len(ride.market.live_instances("vastai")) == 1
        assert [s.consumer for s in await ride.shopper.sessions()] == ["alice"]


async def test_one_request_id_sent_three_times_at_once_makes_one_session(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        offer = await ride.market.offer()
        body = {
            "consumer_id": "alice",
            "offer_id": offer.id,
            "request_id": "job-3x",
            "reservation_hours": 2,
            "idle_threshold_minutes": 0,
        }
        answers = await ride.call(
            asyncio.gather(*(ride.client.post("/api/v1/sessions", json=body) for _ in range(3)))
        )
        assert sorted(a.status_code for a in answers) == [200, 200, 201], [a.text for a in answers]
        assert len({a.json()["session"]["id"] for a in answers}) == 1
        assert len(await ride.shopper.sessions()) == 1
        assert len(ride.market.live_instances("vastai")) == 1


async def test_an_unknown_offer_is_404_and_a_taken_one_409_neither_to_retry(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        for typo in ("vastia:123", "no-such-offer", "vastai:999999999"):
            unknown = await rent(ride, consumer_id="alice", offer_id=typo)
            assert unknown.status_code == 404, unknown.text
            error = unknown.json()["error"]
            assert error["type"] == "not_found" and error["field"] == "offer_id"
            assert error["hint"] == "unknown_offer" and not error.get("retry_suggested")

        offer = await ride.market.offer()
        assert (await rent(ride, consumer_id="alice", offer_id=offer.id)).status_code == 201
        menu = await ride.client.get("/api/v1/inventory", params={"refresh": True, "limit": 1000})
        assert offer.id not in {o["id"] for o in menu.json()["offers"]}
        taken = await rent(ride, consumer_id="bob", offer_id=offer.id)
        assert taken.status_code == 409, taken.text
        error = taken.json()["error"]
        assert error["type"] == "stale_offer" and error["field"] == "offer_id"
        assert error["retry_suggested"] is False


@pytest.mark.parametrize(
    "extra",
    [{"template_hash_id": "38a9dab6"}, {"launch_mode": "entrypoint"}, {"quantization": "awq"}],
)
async def test_a_body_key_gpushop_cannot_honour_is_refused_not_dropped(
    extra: dict[str, str], isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        answer = await rent(ride, consumer_id="alice", **extra)
        assert answer.status_code == 422, answer.text
        assert next(iter(extra)) in answer.text
        assert await ride.market.shopper.sessions() == []


async def test_the_earlier_keys_of_a_workload_map_onto_ours(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        missing = await rent(ride, consumer_id="alice", workload_type="llm_vllm")
        assert missing.status_code == 422
        assert missing.json()["error"]["message"] == ("model_id: the vllm workload needs a model")
        bad_port = await rent(
            ride, consumer_id="alice", workload_type="custom", on_start_cmd="x",
            exposed_ports=[70000],
        )  # fmt: skip
        assert bad_port.status_code == 422
        assert bad_port.json()["error"]["field"] == "exposed_ports"
        created = await rent(
            ride, consumer_id="alice", workload_type="llm_vllm",
            model_id="Qwen/Qwen2.5-0.5B-Instruct",
        )  # fmt: skip
        assert created.status_code == 201, created.text
        session = created.json()["session"]
        assert (session["workload_type"], session["model_id"]) == (
            "vllm",
            "Qwen/Qwen2.5-0.5B-Instruct",
        )
        ready = await ride.market.until(session["id"], lambda s: s.status == "running", step_s=2)
        assert ready.endpoint == "http://127.0.0.1:8000/v1"
        shown = (await ride.call(ride.client.get(f"/api/v1/sessions/{session['id']}"))).json()
        assert shown["endpoint"] == ready.endpoint and shown["workload_phase"] == "healthy"
        assert shown["endpoint_public"] == ready.endpoint_public is not None
        endpoint = await ride.call(ride.client.get(f"/api/v1/sessions/{session['id']}/endpoint"))
        assert endpoint.status_code == 200
        token = ride.market.shopper._lifecycle.readiness.workloads.token_path(session["id"])
        assert endpoint.json()["token"] == token.read_text().strip()
        assert endpoint.json()["endpoint_public"] == ready.endpoint_public


async def test_an_llm_rental_over_the_api_answers_with_its_ollama_endpoint(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        created = await rent(
            ride, consumer_id="alice", workload_type="llm", model_id="llama3.1:8b", benchmark=False
        )
        assert created.status_code == 201, created.text
        session_id = created.json()["session"]["id"]
        ready = await ride.market.until(session_id, lambda s: s.status == "running", step_s=2)
        shown = (await ride.call(ride.client.get(f"/api/v1/sessions/{session_id}"))).json()
        assert (shown["workload_type"], shown["model_id"]) == ("llm", "llama3.1:8b")
        assert shown["endpoint"] == ready.endpoint == "http://127.0.0.1:11434/v1"
        assert shown["endpoint_public"] is None  # Ollama checks no token: never published
