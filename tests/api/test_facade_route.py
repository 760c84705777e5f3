"""`POST /api/v1/facade/{member}`, the wire of a remote façade: a consumer-scoped token reaches
only its own consumer's sessions and no operator call, arguments are bounded and complete, and
a member that is not remote is told from an absent session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.harness import ApiRide, api_market
from tests.api.test_sessions_api import rent


async def _call(client: httpx.AsyncClient, member: str, **body: Any) -> httpx.Response:
    return await client.post(f"/api/v1/facade/{member}", json=body)


def _error(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    return error


async def _session_of(ride: ApiRide, consumer: str) -> dict[str, Any]:
    created = await rent(ride, consumer_id=consumer)
    assert created.status_code == 201, created.text
    found = await _call(ride.client, "session", session_id=created.json()["session"]["id"])
    assert found.status_code == 200, found.text
    result: dict[str, Any] = found.json()["result"]
    return result


async def test_a_consumer_token_reaches_only_its_own_sessions_and_no_operator_call(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride,
        ride.client_as(ride.tokens.for_consumer("alice")) as alice,
    ):
        bob = await _session_of(ride, "bob")
        bobs = bob["id"]
        for member in ("check_providers", "reconcile_once", "cleanup_orphans", "delete_budget"):
            body = {"budget_id": 1} if member == "delete_budget" else {}
            assert _error(await _call(alice, member, **body), 403)["type"] == "forbidden"
        bound: list[tuple[str, dict[str, Any]]] = [
            ("session", {"session_id": bobs}),
            ("session_view", {"session_id": bobs}),
            ("session_id", {"given": bobs}),
            ("session_id", {"given": bobs[:3]}),
            ("done", {"session_id": bobs}),
            ("delete", {"session_id": bobs}),
            ("stop", {"session_id": bobs, "by": "alice"}),
            ("extend", {"session_id": bobs, "hours": 1}),
            ("touch", {"session_id": bobs}),
            ("view_of", {"session": bob}),
            ("view_of", {"session": bob | {"consumer": "alice"}}),
        ]
        for member, body in bound:
            error = _error(await _call(alice, member, **body), 404)
            assert error["type"] == "not_found", (member, error)
            if body.get("given") == bobs[:3]:
                assert bobs not in error["message"], "a prefix tells nothing of others' ids"
        for member in ("audit_log", "sessions", "session_views", "cost_report"):
            refused = await _call(alice, member, consumer="bob")
            assert _error(refused, 403)["type"] == "forbidden", member
        assert (await ride.shopper.session(bobs)).status == bob["status"], "untouched"

        mine = await _call(alice, "sessions")
        assert mine.status_code == 200 and mine.json()["result"] == []
        for member, body in bound[:3]:
            answer = await _call(ride.client, member, **body)
            assert answer.status_code == 200, (member, answer.text)
        assert (await _call(ride.client, "session_id", given=bobs[:3])).json()["result"] == bobs
        listed = await _call(ride.client, "sessions", consumer="bob")
        assert [s["id"] for s in listed.json()["result"]] == [bobs]
        ended = await ride.call(_call(ride.client, "done", session_id=bobs))
        assert ended.status_code == 200, ended.text


async def test_arguments_are_complete_bounded_and_known_and_members_are_told_apart(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        missing = _error(await _call(ride.client, "session"), 422)
        assert missing["field"] == "session_id" and "session_id" in missing["message"]
        assert _error(await _call(ride.client, "extend", session_id="abcdef"), 422)["field"] == (
            "hours"
        )
        unknown = _error(await _call(ride.client, "sessions", colour="red"), 422)
        assert unknown["field"] == "colour"
        for member, body, field in (
            ("sessions", {"limit": -1}, "limit"),
            ("session_views", {"limit": 0}, "limit"),
            ("audit_log", {"limit": 1001}, "limit"),
            ("wait_settled", {"session_id": "abcdef", "timeout_s": 0}, "timeout_s"),
            ("wait_settled", {"session_id": "abcdef", "timeout_s": 3601}, "timeout_s"),
            ("session", {"session_id": "a" * 129}, "session_id"),
            ("session_id", {"given": "a" * 129}, "given"),
            ("sessions", {"consumer": "c" * 129}, "consumer"),
        ):
            error = _error(await _call(ride.client, member, **body), 422)
            assert error["type"] == "invalid_body" and error["field"] == field, (member, error)
        assert (await _call(ride.client, "audit_log", limit=1000)).status_code == 200
        not_remote = _error(await _call(ride.client, "ssh_argv", session_id="abcdef"), 404)
        assert not_remote["type"] == "unknown_member"
        absent = _error(await _call(ride.client, "session", session_id="abcdef"), 404)
        assert absent["type"] == "not_found"
