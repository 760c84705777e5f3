"""Session JSON names its kill paths: the supervisor and the node's own watchdog, which the
simulated node arms for real during readiness; an extend moves it; a closed session has none."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.api.harness import api_market
from tests.api.test_sessions_api import rent


def armed_words(deadline: str) -> str:
    """The kill path of a watchdog armed for `deadline` (as the API writes times)."""
    return (
        f"node watchdog: ends the instance at {datetime.fromisoformat(deadline):%Y-%m-%d %H:%M} UTC"
    )


async def test_a_running_session_names_its_armed_node_watchdog_and_extend_moves_it(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_market(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        answer = await rent(ride, consumer_id="alice", reservation_hours=1)
        assert answer.status_code == 201, answer.text
        created = answer.json()["session"]
        sid = created["id"]
        await ride.market.until(sid, lambda s: s.status == "running", step_s=2)

        shown = (await ride.client.get(f"/api/v1/sessions/{sid}")).json()
        assert shown["watchdog_error"] is None
        deadline = datetime.fromisoformat(shown["watchdog_deadline"])
        expires = datetime.fromisoformat(shown["expires_at"])
        assert deadline == (expires + timedelta(minutes=10)).replace(microsecond=0)
        assert shown["kill_paths"][0].startswith("supervisor: ")
        assert shown["kill_paths"][1:] == [armed_words(shown["watchdog_deadline"])]
        listed = (await ride.client.get("/api/v1/sessions")).json()["sessions"]
        assert [s["kill_paths"] for s in listed if s["id"] == sid] == [shown["kill_paths"]]

        extend = await ride.client.post(
            f"/api/v1/sessions/{sid}/extend", json={"additional_hours": 1}
        )
        assert extend.status_code == 200, extend.text
        await ride.market.until(
            sid, lambda s: s.watchdog_deadline == deadline + timedelta(hours=1), step_s=2
        )
        moved = (await ride.client.get(f"/api/v1/sessions/{sid}")).json()
        assert moved["kill_paths"][1:] == [armed_words(moved["watchdog_deadline"])]

        assert (await ride.client.delete(f"/api/v1/sessions/{sid}")).status_code == 202
        await ride.market.until(sid, lambda s: s.closed, step_s=2)
        closed = (await ride.client.get(f"/api/v1/sessions/{sid}")).json()
        assert closed["kill_paths"] == []
