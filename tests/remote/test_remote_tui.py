"""The cockpit against a real `gpushop --serve` over loopback: the sessions pane shows the
server's sessions (a consumer token's own only) and follows changes live over /events."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from textual.pilot import Pilot

from gpushop_tui.config import load_settings
from gpushop_tui.tui.app import GpushopApp, open_remote_core, wait_ready
from gpushop_tui.tui.sessions import SessionsPane
from tests.remote.conftest import Served


async def _settle(pilot: Pilot[None], check: Callable[[], bool], limit_s: float = 30) -> None:
    """Let the app run until `check` holds, or fail after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, "the cockpit never showed it"
        await pilot.pause(0.05)


def _rent(served: Served, consumer: str) -> str:
    result = served.remote("provision", "-c", consumer, "-g", "4090", "--no-wait", "-o", "json")
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["id"])


async def test_the_cockpit_shows_the_servers_sessions_and_follows_them_live(
    served: Served, client_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = await asyncio.to_thread(_rent, served, "alice")
    theirs = await asyncio.to_thread(_rent, served, "bob")
    monkeypatch.setenv("GPUSHOP_REMOTE", served.url)
    monkeypatch.setenv("GPUSHOP_REMOTE_TOKEN", served.alice_token)
    app = GpushopApp(load_settings(), opener=open_remote_core())
    async with app.run_test() as pilot:
        shopper = await wait_ready(app)
        assert shopper.remote == served.url
        pane = app.query_one(SessionsPane)
        await _settle(pilot, lambda: mine in pane.table.rows)
        assert theirs not in pane.table.rows
        await _settle(pilot, lambda: "the server supervises" in app.sub_title)
        assert served.url in app.sub_title
        async with httpx.AsyncClient(base_url=served.url) as api:
            answer = await api.delete(
                f"/api/v1/sessions/{mine}", headers={"Authorization": f"Bearer {served.token}"}
            )
        assert answer.status_code == 202, answer.text
        await _settle(pilot, lambda: mine in pane.history_table.rows)
        assert mine not in pane.table.rows
    await asyncio.to_thread(served.remote, "sessions", "delete", theirs)
