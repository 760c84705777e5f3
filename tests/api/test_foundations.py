"""The API's common ground: auth, request ids, the error shape, body limit, health, ready."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from gpushop_tui.api.app import build_api
from gpushop_tui.api.deps import fields_named
from gpushop_tui.api.tokens import TOKENS_FILE, TokenBook
from gpushop_tui.core import SessionConflict
from gpushop_tui.errors import Hint, UserError
from tests.api.harness import BASE, api_market


async def test_health_is_open_and_ready_waits_for_startup_recovery(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        api_market(monkeypatch, isolated_env, ready=False) as ride,
        ride.client_as(None) as anonymous,
    ):
        health = await anonymous.get("/health")
        assert health.status_code == 200 and health.json()["ready"] is False
        assert (await anonymous.get("/ready")).status_code == 503
        ride.api.ready.set()
        answer = await anonymous.get("/ready")
        assert answer.status_code == 200 and answer.json()["ready"] is True


async def test_api_calls_need_a_valid_bearer_token(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        for token in (None, "gps_wrong", ride.tokens.admin + "x"):
            async with ride.client_as(token) as client:
                answer = await client.get("/api/v1/sessions")
                assert answer.status_code == 401
                error = answer.json()["error"]
                assert error["type"] == "unauthorized"
                assert error["request_id"] == answer.headers["x-request-id"]
                assert ride.tokens.admin not in answer.text


async def test_request_ids_are_echoed_when_sane_and_made_otherwise(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        echoed = await ride.client.get("/health", headers={"X-Request-ID": "job-42.a_b"})
        assert echoed.headers["x-request-id"] == "job-42.a_b"
        made = await ride.client.get("/health", headers={"X-Request-ID": "<script>"})
        assert made.headers["x-request-id"] != "<script>"
        assert len(made.headers["x-request-id"]) == 32


async def test_unknown_paths_and_big_bodies_get_the_error_shape(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        missing = await ride.client.get("/api/v1/nothing-here")
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "not_found"
        big = await ride.client.post(
            "/api/v1/sessions",
            content=b"{" + b" " * (1 << 20) + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert big.status_code == 413
        assert big.json()["error"]["type"] == "too_large"


def test_tokens_live_in_a_private_file_and_scoped_ones_name_their_consumer(
    tmp_path: Path,
) -> None:
    book = TokenBook.open(tmp_path)
    path = tmp_path / TOKENS_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    alice = book.for_consumer("alice")
    again = TokenBook.open(tmp_path)
    assert again.admin == book.admin
    assert again.for_consumer("alice") == alice
    assert again.principal(book.admin).consumer is None  # type: ignore[union-attr]
    assert again.principal(alice).consumer == "alice"  # type: ignore[union-attr]
    assert again.principal("gps_nope") is None


def _failing_routes(app: FastAPI) -> None:
    """Routes that raise core errors the way the core does: a field in its words, a hint."""
    router = APIRouter()

    @router.get("/past-hard-max")
    async def past_hard_max() -> None:
        with fields_named({"hours": "additional_hours"}):
            raise UserError("past its hard max", field="hours", hint=Hint.NEEDS_OVERRIDE)

    @router.get("/conflict")
    async def conflict() -> None:
        raise SessionConflict("already stopping")

    app.include_router(router)


async def test_core_errors_carry_their_field_in_api_words_and_their_hint(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        app = build_api(ride.api, installers=(_failing_routes,))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
            past = await c.get("/past-hard-max")
            assert past.status_code == 400
            assert past.json()["error"] == {
                "type": "bad_request",
                "message": "past its hard max",
                "request_id": past.headers["x-request-id"],
                "field": "additional_hours",
                "hint": "needs_override",
            }
            conflict = (await c.get("/conflict")).json()["error"]
            assert conflict["type"] == "conflict" and conflict.keys().isdisjoint({"field", "hint"})
