"""The API's common ground: auth, request ids, the error shape, body limit, health, ready."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from gpushop_tui.api.app import build_api
from gpushop_tui.api.deps import fields_named
from gpushop_tui.api.tokens import TOKENS_FILE, Principal, TokenBook
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


async def test_health_stays_up_and_ready_says_503_when_the_database_does_not_answer(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A liveness probe must not kill every replica when PostgreSQL is away: /health answers
    200 and says so, /ready is 503 (take this replica out of the proxy) and claims no lease."""
    async with (
        api_market(monkeypatch, isolated_env) as ride,
        ride.client_as(None) as anonymous,
    ):
        assert (await anonymous.get("/health")).json()["database"] == "ok"

        async def unreachable() -> None:
            raise ConnectionRefusedError(111, "Connection refused")

        monkeypatch.setattr(ride.shopper, "supervisor_lease", unreachable)
        health = await anonymous.get("/health")
        assert health.status_code == 200
        assert health.json()["database"] == "unreachable"
        assert health.json()["supervising"] is False and health.json()["supervisor"] is None
        ready = await anonymous.get("/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False


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


async def test_tokens_made_or_revoked_while_serving_count_at_once(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        elsewhere = TokenBook.open(ride.shopper.settings.paths.data_dir)
        carol = elsewhere.for_consumer("carol")
        async with ride.client_as(carol) as client:
            assert (await client.get("/api/v1/sessions")).status_code == 200
            assert elsewhere.revoke("carol") is True
            assert (await client.get("/api/v1/sessions")).status_code == 401
        assert elsewhere.revoke("carol") is False
        assert (await ride.client.get("/api/v1/sessions")).status_code == 200


async def test_a_chunked_body_over_the_limit_is_413(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"{"
        for _ in range(17):
            yield b" " * (1 << 16)
        yield b"}"

    async with api_market(monkeypatch, isolated_env) as ride:
        big = await ride.client.post(
            "/api/v1/sessions", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in big.request.headers
        assert big.status_code == 413, big.text
        assert big.json()["error"]["type"] == "too_large"


async def test_openapi_declares_the_bearer_scheme_on_every_api_operation(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        schema = (await ride.client.get("/openapi.json")).json()
        bearer = schema["components"]["securitySchemes"]["bearer"]
        assert bearer["type"] == "http" and bearer["scheme"] == "bearer"
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                expected = [{"bearer": []}] if path.startswith("/api/") else None
                assert operation.get("security") == expected, (method, path)


async def test_the_401_text_reads_cleanly(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        for token, words in (
            (None, "send 'Authorization: Bearer <token>'"),
            ("gps_wrong", "the bearer token is not valid"),
        ):
            async with ride.client_as(token) as client:
                message = (await client.get("/api/v1/sessions")).json()["error"]["message"]
                assert words in message and "***" not in message


SAMPLE_PATH_VALUES = {"session_id": "nosuch", "budget_id": "1", "offer_id": "vastai:1"}


async def test_every_route_refuses_an_unknown_query_parameter_naming_it(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env) as ride:
        paths = (await ride.client.get("/openapi.json")).json()["paths"]
        assert len(paths) > 15
        for template, operations in paths.items():
            path = template.format(**SAMPLE_PATH_VALUES)
            for method in operations:
                answer = await ride.client.request(method, path, params={"colour": "blue"}, json={})
                assert answer.status_code == 400, (method, path, answer.text)
                error = answer.json()["error"]
                assert error["field"] == "colour", (method, path)
                assert "'colour'" in error["message"], (method, path)


def test_an_unreadable_token_file_keeps_the_tokens_read_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    book = TokenBook.open(tmp_path)
    (tmp_path / TOKENS_FILE).write_text("{not json", encoding="utf-8")
    assert book.principal(book.admin) == Principal(None)
    assert "keeping the tokens read before" in caplog.text
