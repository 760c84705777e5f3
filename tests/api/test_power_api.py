"""Power off, power on over the API: stop keeps the disk, start brings the session back; who
asked is audited; wrong states, bad bodies, other consumers and providers that cannot stop are
refused."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gpushop_tui.providers.vastai import VastAi
from tests.api.harness import api_market
from tests.api.test_sessions_api import rent


async def test_a_consumer_stops_and_starts_its_session_and_the_audit_log_says_so(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride,
        ride.client_as(ride.tokens.for_consumer("alice")) as alice,
    ):
        sid = (await rent(ride, alice)).json()["session"]["id"]
        await ride.market.until(sid, lambda s: s.status == "running", step_s=2)

        stop = await alice.post(f"/api/v1/sessions/{sid}/stop", json={"keep_days": 2})
        assert stop.status_code == 202, stop.text
        assert stop.json()["status"] == "stopping"
        assert stop.json()["status_words"] == "stopping (keeping the disk)"
        stored = await ride.market.until(sid, lambda s: s.status == "stopped", step_s=2)
        assert stored.instance == "live", "the disk is kept"

        shown = (await alice.get(f"/api/v1/sessions/{sid}")).json()
        assert shown["status"] == "stopped" and shown["keep_days"] == 2
        assert shown["disk_usd_per_day"] > 0
        assert shown["status_words"] == f"stopped (disk kept, ${shown['disk_usd_per_day']:.2f}/day)"
        assert datetime.fromisoformat(shown["keep_until"]) == datetime.fromisoformat(
            shown["stopped_at"]
        ) + timedelta(days=2)
        assert [(c["kind"], c["ended_at"] is None) for c in shown["cycles"]] == [
            ("compute", False),
            ("storage", True),
        ]
        assert shown["cycles"][0]["cost"] > 0 and shown["cycles"][0]["hours"] > 0
        summary = (await alice.get("/api/v1/costs/summary")).json()
        assert summary["gpu_usd_per_hour"] == 0
        assert summary["disk_usd_per_hour"] == summary["burn_usd_per_hour"] > 0
        again = await alice.post(f"/api/v1/sessions/{sid}/stop")
        assert again.status_code == 409 and again.json()["error"]["type"] == "conflict"

        start = await alice.post(f"/api/v1/sessions/{sid}/start", json={"hours": 1})
        assert start.status_code == 202, start.text
        assert start.json()["status"] == "starting" and start.json()["keep_until"] is None
        ready = await ride.market.until(sid, lambda s: s.status == "running", step_s=2)
        assert ready.expires_at == ready.state_entered_at + timedelta(hours=1)  # from running
        assert ready.instance_id == stored.instance_id, "the same instance, on its kept disk"
        shown = (await alice.get(f"/api/v1/sessions/{sid}")).json()
        assert [c["kind"] for c in shown["cycles"]] == ["compute", "storage", "compute"]
        assert shown["disk_usd_per_day"] is None and shown["status_words"] == "running"
        running = await alice.post(f"/api/v1/sessions/{sid}/start")
        assert running.status_code == 409 and "only a stopped session" in running.text

        power = [e for e in await ride.market.audit(sid) if e.kind == "session_power"]
        asked = [(e.data["action"], e.data["by"]) for e in power if e.data["action"] in {
            "stop", "start"}]  # fmt: skip
        assert asked == [("stop", "consumer alice"), ("start", "consumer alice")]


async def test_stop_and_start_refuse_bad_bodies_and_other_consumers(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride,
        ride.client_as(ride.tokens.for_consumer("bob")) as bob,
    ):
        sid = (await rent(ride, consumer_id="alice")).json()["session"]["id"]
        await ride.market.until(sid, lambda s: s.status == "running", step_s=2)
        for action, body, field in (
            ("stop", {"keep_days": 2, "colour": "blue"}, "colour"),
            ("stop", {"keep_days": 0}, "keep_days"),
            ("stop", {"keep_days": 91}, "keep_days"),
            ("start", {"hours": 1, "colour": "blue"}, "colour"),
            ("start", {"hours": 13}, "hours"),
        ):
            answer = await ride.client.post(f"/api/v1/sessions/{sid}/{action}", json=body)
            assert answer.status_code == 422, (action, body, answer.text)
            assert answer.json()["error"]["field"] == field
        for action in ("stop", "start"):
            theirs = await bob.post(f"/api/v1/sessions/{sid}/{action}")
            assert theirs.status_code == 404 and theirs.json()["error"]["type"] == "not_found"
        assert (await ride.shopper.session(sid)).status == "running"

        stop = await ride.client.post(f"/api/v1/sessions/{sid}/stop")
        assert stop.status_code == 202
        power = [e for e in await ride.market.audit(sid) if e.kind == "session_power"]
        assert [e.data["by"] for e in power] == ["operator (api)"]


async def test_a_provider_that_cannot_stop_is_refused_naming_the_way_out(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        sid = (await rent(ride, consumer_id="alice")).json()["session"]["id"]
        await ride.market.until(sid, lambda s: s.status == "running", step_s=2)
        monkeypatch.setattr(VastAi, "can_stop", False)
        refused = await ride.client.post(f"/api/v1/sessions/{sid}/stop")
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["field"], error["hint"]) == ("session_id", "cannot_stop")
        assert "cannot stop an instance and keep its disk" in error["message"]
        assert (await ride.shopper.session(sid)).status == "running"
        idle_stop = await rent(ride, consumer_id="alice", idle_action="stop")
        assert idle_stop.status_code == 400, idle_stop.text
        assert idle_stop.json()["error"]["field"] == "idle_action"


async def test_a_rental_takes_its_idle_action_and_keep_days(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        created = await rent(ride, consumer_id="alice", idle_action="stop", keep_days=3)
        assert created.status_code == 201, created.text
        session = created.json()["session"]
        assert (session["idle_action"], session["keep_days"]) == ("stop", 3)
        stored = await ride.shopper.session(session["id"])
        assert (stored.idle_action, stored.keep_days) == ("stop", 3)
        bad = await rent(ride, consumer_id="alice", keep_days=0)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "keep_days"
