"""`RemoteShopper` against answers no healthy `gpushop --serve` gives (an HTML proxy page, a
redirect, a newer server's event, a bad session id), over an in-process transport: each is one
sentence naming the URL, and the live stream outlives an event it cannot read."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop_tui.config import load_settings
from gpushop_tui.core import Alert, RemoteShopper, SessionNotFound, remote_token
from gpushop_tui.core.remote import RemoteUnavailable
from gpushop_tui.errors import UserError

URL = "http://127.0.0.1:8765"
SNAPSHOT = {
    "provider_names": [],
    "providers": {},
    "configured": [],
    "provision_budgets_s": {},
    "reports": {},
    "credentials": [],
}
ALERT = {"message": "budget at 80%", "severity": "warning", "alert": "budget"}
Handler = Callable[[httpx.Request], httpx.Response]


def _events(*frames: str, gate: asyncio.Event | None = None) -> httpx.Response:
    """An event stream: its opening comment, then (once `gate` is set) `frames`, then its end."""

    async def body() -> AsyncIterator[bytes]:
        yield b": subscribed\n\n"
        if gate is not None:
            await gate.wait()
        for frame in frames:
            yield frame.encode()

    return httpx.Response(200, content=body(), headers={"content-type": "text/event-stream"})


def _server(calls: Handler, events: Callable[[], httpx.Response] = _events) -> httpx.MockTransport:
    """A server whose snapshot is sound, whose event stream `events` gives (at each connection)
    and whose other answers `calls` gives."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/facade":
            return httpx.Response(200, json=SNAPSHOT)
        if request.url.path == "/api/v1/events":
            return events()
        return calls(request)

    return httpx.MockTransport(handle)


async def _open(transport: httpx.MockTransport, url: str = URL) -> RemoteShopper:
    return await RemoteShopper.open(load_settings(), "tok", url=url, transport=transport)


def _answer(status: int, body: Any, **headers: str) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers={"x-request-id": "rq-1", **headers})

    return handle


def _one_sentence(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and URL in text, text
    return text


async def test_an_html_page_or_a_redirect_is_one_sentence_naming_the_url(
    isolated_env: Path,
) -> None:
    html = httpx.MockTransport(
        lambda request: httpx.Response(
            200, text="<html>sign in</html>", headers={"content-type": "text/html"}
        )
    )
    with pytest.raises(RemoteUnavailable) as proxy:
        await _open(html)
    assert "cannot read (text/html" in _one_sentence(proxy.value)

    moved = httpx.MockTransport(
        lambda request: httpx.Response(
            301, headers={"location": f"https://gpus.example.org{request.url.path}"}
        )
    )
    with pytest.raises(RemoteUnavailable) as redirect:
        await _open(moved)
    assert "redirects to https://gpus.example.org; use that URL" in _one_sentence(redirect.value)


async def test_an_answer_it_cannot_read_is_one_sentence_with_the_request_id(
    isolated_env: Path,
) -> None:
    for body in ({"no": "result"}, {"result": {"id": 3}}, ["not", "an", "object"]):
        shopper = await _open(_server(_answer(200, body)))
        try:
            with pytest.raises(RemoteUnavailable) as failed:
                await shopper.session("abcdef")
            assert "(request id rq-1)" in _one_sentence(failed.value)
        finally:
            await shopper.aclose()
    shopper = await _open(_server(_answer(200, {"nope": 1})))
    try:
        with pytest.raises(RemoteUnavailable):
            await shopper.key_path("abcdef")
    finally:
        await shopper.aclose()


@pytest.mark.parametrize(
    ("status", "error", "raised", "says"),
    [
        (404, {"type": "unknown_member", "message": "no member"}, RemoteUnavailable, "version"),
        (404, {"type": "not_found", "message": "Not Found"}, RemoteUnavailable, "version"),
        (404, {"type": "not_found", "message": "no session 'x'"}, SessionNotFound, "no session"),
        (503, {"type": "provider_unavailable", "message": "vastai: down"}, UserError, "provider"),
        (500, {"type": "internal", "message": "internal error"}, RemoteUnavailable, "failed"),
    ],
)
async def test_server_errors_are_told_apart(
    isolated_env: Path, status: int, error: dict[str, Any], raised: type[Exception], says: str
) -> None:
    shopper = await _open(_server(_answer(status, {"error": error})))
    try:
        with pytest.raises(UserError) as failed:
            await shopper.session("abcdef")
        assert type(failed.value) is raised
        assert says in str(failed.value) and "(request id rq-1)" in str(failed.value)
    finally:
        await shopper.aclose()


async def test_the_live_stream_skips_what_it_cannot_read_and_says_when_events_were_lost(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    newer = json.dumps(ALERT | {"colour": "red"})
    gate = asyncio.Event()
    frames = (
        f"event: alert\ndata: {newer}\n\n",
        "event: alert\ndata: {not json\n\n",
        "event: alert\ndata: [1]\n\n",
        f"event: alert\ndata: {json.dumps(ALERT)}\n\n",
        'event: dropped\ndata: {"dropped": 4}\n\n',
    )
    connections: list[None] = []

    def stream() -> httpx.Response:
        connections.append(None)
        return _events(*frames, gate=gate) if len(connections) == 1 else _events()

    caplog.set_level(logging.WARNING, "gpushop_tui.core.remote")
    shopper = await _open(_server(_answer(404, {}), stream))
    with shopper.subscribe() as events:
        gate.set()
        first = await asyncio.wait_for(events.get(), 10)
        lost = await asyncio.wait_for(events.get(), 10)
        again = await asyncio.wait_for(events.get(), 10)
    assert isinstance(first, Alert) and first.alert == "budget"
    assert isinstance(lost, Alert) and "fell behind" in lost.message
    assert isinstance(again, Alert) and "made again" in again.message
    assert shopper._stream is not None and not shopper._stream.done()
    await shopper.aclose()
    skipped = [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()]
    assert len(skipped) == 3, skipped


async def test_a_background_refresh_is_held_and_its_failure_logged(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shopper = await _open(_server(_answer(500, {"error": {"message": "boom"}})))
    shopper.refresh_offers_in_background()
    (task,) = shopper._background
    await asyncio.wait([task])
    await asyncio.sleep(0)
    assert not shopper._background
    assert any("boom" in r.getMessage() for r in caplog.records)
    await shopper.aclose()


async def test_a_servers_session_id_names_no_file_outside_the_keys_dir(
    isolated_env: Path,
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/session_id"):
            return httpx.Response(200, json={"result": "../../evil"})
        return httpx.Response(200, json={"session_id": "x", "ssh_private_key": "KEY"})

    shopper = await _open(_server(handle))
    try:
        with pytest.raises(RemoteUnavailable) as refused:
            await shopper.key_path("abcdef")
        assert "not a session id" in _one_sentence(refused.value)
    finally:
        await shopper.aclose()
    assert not list(isolated_env.rglob("evil*"))


async def test_fetched_keys_are_private_files_in_a_private_dir(isolated_env: Path) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/session_id"):
            return httpx.Response(200, json={"result": "abcdef12"})
        return httpx.Response(200, json={"session_id": "abcdef12", "ssh_private_key": "KEY\n"})

    shopper = await _open(_server(handle))
    keys = shopper.settings.paths.keys_dir / "remote"
    keys.mkdir(parents=True, mode=0o755)
    keys.chmod(0o755)
    try:
        path = await shopper.key_path("abc")
    finally:
        await shopper.aclose()
    assert path == keys / "abcdef12.key" and path.read_text() == "KEY\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700


async def test_plain_http_to_another_machine_is_warned_about_once(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    far = "http://10.1.2.3:8000"
    for _ in range(2):
        shopper = await _open(_server(_answer(404, {})), far)
        await shopper.aclose()
    warned = capsys.readouterr().err.strip().splitlines()
    assert len(warned) == 1 and far in warned[0] and "https" in warned[0], warned
    shopper = await _open(_server(_answer(404, {})))
    await shopper.aclose()
    assert capsys.readouterr().err == "", "loopback is not warned about"


@pytest.mark.parametrize("kind", ["directory", "not utf-8", "link"])
def test_a_token_file_it_cannot_read_is_one_sentence(isolated_env: Path, kind: str) -> None:
    settings = load_settings()
    path = settings.paths.data_dir / "remote_token"
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "directory":
        path.mkdir(mode=0o700)
    elif kind == "not utf-8":
        path.write_bytes(b"\xff\xfe token")
        path.chmod(0o600)
    else:
        real = isolated_env / "elsewhere"
        real.write_text("gps_token")
        real.chmod(0o600)
        os.symlink(real, path)
    with pytest.raises(UserError) as refused:
        remote_token(settings)
    message = refused.value.message
    assert "\n" not in message and str(path) in message, message
