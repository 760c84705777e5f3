"""The audit log, live server-sent events and Prometheus metrics over the API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpushop_tui.core import Alert, Subscription
from gpushop_tui.models import Severity
from gpushop_tui.sim.http import serve
from tests.api.harness import ApiRide, api_market


async def sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, dict[str, Any] | None]]:
    """(event kind, data) per server-sent event; ("comment", None) per comment line."""
    kind, data = "message", None
    async for line in lines:
        if line.startswith(":"):
            yield "comment", None
        elif line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = json.loads(line.removeprefix("data: "))
        elif line == "" and data is not None:
            yield kind, data
            kind, data = "message", None


async def test_audit_lists_filters_and_scopes(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        session = await ride.market.running(consumer="alice")
        await ride.shopper._events.publish(
            Alert(message="disk on fire", alert="test_alert", severity=Severity.CRITICAL)
        )
        everything = (await ride.client.get("/api/v1/audit")).json()
        assert everything["count"] == len(everything["events"]) > 2
        assert everything["events"][-1]["message"] == "disk on fire"

        own = (await ride.client.get("/api/v1/audit", params={"session_id": session.id})).json()
        assert {e["session_id"] for e in own["events"]} == {session.id}
        assert "session_changed" in {e["kind"] for e in own["events"]}
        two = (await ride.client.get("/api/v1/audit", params={"limit": 2})).json()
        assert two["events"] == everything["events"][-2:]

        bad = (await ride.client.get("/api/v1/audit", params={"severity": "error"})).json()
        assert [e["message"] for e in bad["events"]] == ["disk on fire"]

        async with ride.client_as(ride.tokens.for_consumer("bob")) as bob:
            assert (await bob.get("/api/v1/audit")).json()["count"] == 0
            hidden = await bob.get("/api/v1/audit", params={"session_id": session.id})
            assert hidden.status_code == 404 and hidden.json()["error"]["type"] == "not_found"
        async with ride.client_as(ride.tokens.for_consumer("alice")) as alice:
            mine = (await alice.get("/api/v1/audit")).json()
            assert mine["count"] == own["count"]

        for params, field in (({"limit": 0}, "limit"), ({"severity": "loud"}, "severity")):
            answer = await ride.client.get("/api/v1/audit", params=params)
            assert answer.status_code == 400 and answer.json()["error"]["field"] == field


async def test_metrics_need_no_token_and_come_from_the_core(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        await ride.market.running(consumer="alice")
        await ride.market.advance(600, step_s=60)
        for _ in range(2):  # counted once, however often scraped
            await ride.shopper._events.publish(Alert(message="orphan x destroyed", alert="orphan"))
            async with ride.client_as(None) as anonymous:
                answer = await anonymous.get("/metrics")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text)
            for s in family.samples
        }
        assert samples[("gpushop_sessions", (("status", "running"),))] == 1
        assert samples[("gpushop_sessions", (("status", "failed"),))] == 0
        assert samples[("gpushop_orphans_found_total", ())] == 2
        assert samples[("gpushop_alerts_total", (("alert", "orphan"),))] == 2
        assert samples[("gpushop_destroy_failures", ())] == 0
        assert samples[("gpushop_cost_accrued_usd", ())] > 0
        assert samples[("gpushop_provider_up", (("provider", "vastai"),))] == 1
        assert ("gpushop_provider_latency_seconds", (("provider", "vastai"),)) in samples


async def read_until(
    events: AsyncIterator[tuple[str, dict[str, Any] | None]], kind: str, **fields: Any
) -> list[tuple[str, dict[str, Any] | None]]:
    """Every event up to and including the first of `kind` with `fields`."""
    seen = []
    async for event in events:
        seen.append(event)
        name, data = event
        if name == kind and data is not None and all(data.get(k) == v for k, v in fields.items()):
            return seen
    raise AssertionError(f"the stream ended before {kind} {fields}: {seen}")


async def test_events_stream_a_session_going_running(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        ride.app.state.events_heartbeat_s = 0.05
        served = await serve(ride.app)
        headers = {"Authorization": f"Bearer {ride.tokens.admin}"}
        try:
            async with (
                httpx.AsyncClient(base_url=served.origin, headers=headers) as client,
                client.stream("GET", "/api/v1/events") as stream,
            ):
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                events = sse(stream.aiter_lines())
                async with asyncio.timeout(30):
                    assert await anext(events) == ("comment", None)  # subscribed
                    assert await anext(events) == ("comment", None)  # a heartbeat
                    session = await ride.market.provision(consumer="alice")
                    await ride.market.until(session.id, lambda s: s.status == "running")
                    seen = await read_until(
                        events, "session_changed", session_id=session.id, status="running"
                    )
                data = seen[-1][1]
                assert data is not None and data["kind"] == "session_changed"
                assert data["instance"] == "live" and data["audit_id"] > 0
        finally:
            await served.stop()


async def scoped_stream_sees(ride: ApiRide, origin: str) -> list[tuple[str, Any]]:
    """What bob's scoped stream gets while alice rents, an alert fires, and then bob rents."""
    headers = {"Authorization": f"Bearer {ride.tokens.for_consumer('bob')}"}
    async with (
        httpx.AsyncClient(base_url=origin, headers=headers) as client,
        client.stream("GET", "/api/v1/events") as stream,
    ):
        events = sse(stream.aiter_lines())
        async with asyncio.timeout(30):
            assert await anext(events) == ("comment", None)
            await ride.market.running(consumer="alice")
            await ride.shopper._events.publish(Alert(message="global news", alert="test_alert"))
            mine = await ride.market.provision(consumer="bob")
            return await read_until(events, "session_changed", session_id=mine.id)


async def test_a_scoped_stream_gets_only_its_consumers_sessions_and_closes_on_disconnect(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = asyncio.Event()
    close = Subscription.close

    def closing(self: Subscription) -> None:
        close(self)
        closed.set()

    monkeypatch.setattr(Subscription, "close", closing)
    async with api_market(monkeypatch, isolated_env) as ride:
        served = await serve(ride.app)
        try:
            seen = await scoped_stream_sees(ride, served.origin)
            async with asyncio.timeout(10):
                await closed.wait()
        finally:
            await served.stop()
        kinds = {name for name, _ in seen}
        assert "alert" not in kinds
        sessions = {data["session_id"] for _, data in seen if data and data.get("session_id")}
        assert len(sessions) == 1  # bob's own, nothing of alice's
        assert ride.shopper._events._subscribers == []

        async with ride.client_as(None) as anonymous:
            refused = await anonymous.get("/api/v1/events")
        assert refused.status_code == 401


async def test_audit_filters_before_the_limit_however_many_newer_events_there_are(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        alices = await ride.market.running(consumer="alice")
        bobs = await ride.market.running(consumer="bob")
        publish = ride.shopper._events.publish
        await publish(
            Alert(message="alice's disk", alert="t", severity=Severity.ERROR, session_id=alices.id)
        )
        for n in range(100):  # 300 newer events, none of them an error of alice's
            await publish(Alert(message=f"global {n}", alert="t", severity=Severity.CRITICAL))
            await publish(Alert(message=f"bob {n}", alert="t", severity=Severity.ERROR,
                                session_id=bobs.id))  # fmt: skip
            await publish(Alert(message=f"chatter {n}", alert="t", session_id=alices.id))

        async with ride.client_as(ride.tokens.for_consumer("alice")) as alice:
            errors = (await alice.get("/api/v1/audit", params={"severity": "error"})).json()
            assert [e["message"] for e in errors["events"]] == ["alice's disk"]
            newest = (await alice.get("/api/v1/audit", params={"limit": 2})).json()
            assert [e["message"] for e in newest["events"]] == ["chatter 98", "chatter 99"]
        of_session = await ride.client.get(
            "/api/v1/audit", params={"session_id": alices.id, "severity": "error", "limit": 1}
        )
        assert [e["message"] for e in of_session.json()["events"]] == ["alice's disk"]
        worst = await ride.client.get("/api/v1/audit", params={"severity": "critical", "limit": 2})
        assert [e["message"] for e in worst.json()["events"]] == ["global 98", "global 99"]
