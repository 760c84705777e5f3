"""The detail panel's kill paths: what ends the instance if nobody does, one line each, on the
fake clock against the simulator (whose nodes arm the watchdog for real); a watchdog that is not
armed in the warning colour."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpushop_tui.tui.sessions import SessionsPane
from gpushop_tui.tui.widgets.session_detail import LABEL_WIDTH
from tests.tui.harness import cockpit
from tests.tui.test_sessions import detail_line, open_pane, running


def kill_path_block(pane: SessionsPane) -> list[str]:
    """The panel's kill-path lines: the labelled one and those under it, values only."""
    lines = pane.detail.deadlines.text.plain.splitlines()
    first = next(n for n, line in enumerate(lines) if line.startswith("kill path "))
    block = [lines[first]]
    block += [line for line in lines[first + 1 :] if not line[:LABEL_WIDTH].strip()]
    return [line[LABEL_WIDTH:] for line in block]


@pytest.mark.parametrize("provider", ["vastai", "tensordock"])
async def test_the_detail_panel_lists_the_supervisor_and_the_armed_node_watchdog(
    provider: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env, size=(120, 40)) as ride:
        pane = await open_pane(ride)
        session = await running(ride, offer=await ride.market.offer(provider))
        pane.select(session.id)
        await ride.settle()
        view = await ride.shopper.session_view(session.id)
        deadline = view.session.watchdog_deadline
        assert deadline is not None, "the simulated node armed its watchdog"
        armed = f"node watchdog: ends the instance at {deadline:%Y-%m-%d %H:%M} UTC"
        assert armed in view.kill_paths
        assert detail_line(pane, "kill path").startswith("this gpushop supervises")
        assert kill_path_block(pane) == [
            "this gpushop supervises: it acts on every deadline here",
            armed,
        ]
        assert "not armed" not in pane.detail.text


async def test_a_watchdog_not_armed_is_said_in_the_warning_colour(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUSHOP_NODE_WATCHDOG", "0")
    async with cockpit(monkeypatch, isolated_env, size=(120, 40)) as ride:
        pane = await open_pane(ride)
        session = await running(ride, offer=await ride.market.offer("vastai"))
        pane.select(session.id)
        await ride.settle()
        view = await ride.shopper.session_view(session.id)
        assert view.session.watchdog_deadline is None
        assert "node watchdog: not armed" in view.kill_paths
        assert kill_path_block(pane)[1:] == ["node watchdog: not armed"]
        text = pane.detail.deadlines.text
        start = text.plain.index("node watchdog: not armed")
        warning = ride.app.theme_variables["text-warning"]
        styles = {str(span.style) for span in text.spans if span.start <= start < span.end}
        assert warning in styles, (warning, text.spans)
