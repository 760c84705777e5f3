"""Stop (keep the disk) and start from the Sessions pane, on the fake clock against the simulator:
the confirmations, the words the pane and the header then show, and the refusals as toasts."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Static

from gpushop_tui.models import IdleAction, SessionStatus
from gpushop_tui.tui import fmt
from gpushop_tui.tui.dialogs import ConfirmScreen
from gpushop_tui.tui.sessions import SessionsPane
from gpushop_tui.tui.widgets.session_detail import LABEL_WIDTH
from tests.tui.harness import Cockpit, cannot_stop, cockpit
from tests.tui.test_sessions import cell, detail_line, open_pane, running, until


def dialog_body(ride: Cockpit) -> str:
    screen = ride.app.screen
    assert isinstance(screen, ConfirmScreen), f"no confirmation, but {screen!r}"
    return str(screen.query_one(".dialog-body", Static).render())


def cycle_kinds(pane: SessionsPane) -> list[str]:
    """The kind of each power-cycle stretch the detail panel lists, oldest first."""
    text = pane.detail.text.split("\ncycles", 1)[1].splitlines()
    stretches = ["cycles" + text[0], *(line for line in text[1:] if "/h · $" in line)]
    return [line[LABEL_WIDTH:].split()[0] for line in stretches]


def footer_keys(ride: Cockpit) -> set[str]:
    """The keys the footer offers now (the active bindings that it shows)."""
    return {key for key, active in ride.app.active_bindings.items() if active.enabled}


@pytest.mark.parametrize("provider", ["vastai", "bluelobster"])
async def test_p_stops_a_session_keeping_its_disk_and_shift_p_starts_it_again(
    provider: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        pane = await open_pane(ride)
        other = await running(ride, offer=await ride.market.offer("tensordock"))
        session = await running(ride, offer=await ride.market.offer(provider), hours=1)
        pane.select(session.id)
        await ride.settle()
        assert "p" in footer_keys(ride) and "P" not in footer_keys(ride)
        await ride.press("P")  # a running session cannot be started
        assert not isinstance(ride.app.screen, ConfirmScreen)

        await ride.press("p")
        body = dialog_body(ride)
        assert "Its GPU stops billing; its disk stays" in body
        assert "for 7 days (until " in body and "unless you start it again (P)" in body
        disk_rate = ride.shopper._providers[provider].stopped_price_per_hour(session.offer)  # type: ignore[union-attr]
        assert f"billing about ${disk_rate * 24:.2f}/day" in body
        await ride.press("n")
        assert (await ride.shopper.session(session.id)).status == SessionStatus.RUNNING

        await ride.press("p", "y")
        assert f"session {session.id}: stopping (keeping the disk)" in ride.toasts()
        stopped = await until(ride, session.id, lambda s: s.status == SessionStatus.STOPPED)
        await ride.advance(0)
        assert stopped.stopped_price_per_hour is not None and stopped.stopped_price_per_hour > 0
        words = f"stopped (disk kept, ${stopped.stopped_price_per_hour * 24:.2f}/day)"
        assert cell(pane, session.id, "status") == words
        painted = pane.table.render_line(1 + pane.table.get_row_index(session.id)).text
        assert words in painted  # the column widens to the words
        assert detail_line(pane, "status") == words
        assert stopped.keep_until is not None
        assert f"(until {fmt.local_time(stopped.keep_until, ride.shopper.now())})" in (
            detail_line(pane, "disk kept")
        )
        assert detail_line(pane, "cycles").startswith("running ")
        assert "hard max" not in pane.detail.text  # it bounds running time, not a kept disk
        assert ride.app.sub_title.startswith("1 running · 1 stopped (disk) · burn $")
        power = [e for e in await ride.market.audit(session.id) if e.kind == "session_power"]
        assert [e.data["by"] for e in power if e.data["action"] == "stop"] == ["operator (tui)"]
        assert "P" in footer_keys(ride) and "p" not in footer_keys(ride)
        assert "e" not in footer_keys(ride)  # only an active session can be extended
        now = ride.shopper.now()
        assert cell(pane, session.id, "expires") == fmt.countdown(stopped.keep_until, now)
        await ride.press("d")
        assert "destroy its instance and the kept disk" in dialog_body(ride)
        await ride.press("n")

        await ride.press("P")
        body = dialog_body(ride)
        assert f"bills again at {fmt.rate(stopped.price_per_hour)}" in body
        assert "new reservation of 1 h" in body and "SSH to answer" in body
        await ride.press("y")
        assert f"session {session.id}: starting" in ride.toasts()
        assert cell(pane, session.id, "status") == "starting"
        back = await until(ride, session.id, lambda s: s.status == SessionStatus.RUNNING)
        await ride.advance(0)
        assert back.instance_id == session.instance_id  # the same instance, the same disk
        assert cell(pane, session.id, "status") == "running"
        assert ride.app.sub_title.startswith("2 running · burn $")
        assert other.id in pane.table.rows
        assert cycle_kinds(pane) == ["running", "stopped", "running"]


async def test_p_is_not_offered_where_the_provider_cannot_stop(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cannot_stop(monkeypatch, "tensordock")
    async with cockpit(monkeypatch, isolated_env) as ride:
        await open_pane(ride)
        session = await running(ride, offer=await ride.market.offer("tensordock"))
        assert "p" not in footer_keys(ride)
        await ride.press("p")
        assert not isinstance(ride.app.screen, ConfirmScreen)
        assert (await ride.shopper.session(session.id)).status == SessionStatus.RUNNING


async def test_a_stop_the_core_refuses_is_one_toast(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The descriptor says it can stop, the adapter cannot: the core's refusal, as a toast."""
    cannot_stop(monkeypatch, "tensordock", descriptor=False)
    async with cockpit(monkeypatch, isolated_env) as ride:
        await open_pane(ride)
        session = await running(ride, offer=await ride.market.offer("tensordock"))
        await ride.press("p", "y")
        refusals = [t for t in ride.toasts() if "cannot stop an instance and keep its disk" in t]
        assert len(refusals) == 1
        assert "only destroying works there: d or x on the Sessions pane" in refusals[0]
        assert (await ride.shopper.session(session.id)).status == SessionStatus.RUNNING


async def test_a_session_stopped_meanwhile_is_a_toast_not_a_traceback(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await open_pane(ride)
        session = await running(ride)
        await ride.press("p")
        assert isinstance(ride.app.screen, ConfirmScreen)
        await ride.shopper.stop(session.id, by="someone else")
        await ride.press("y")
        assert any("only a running session can be stopped" in t for t in ride.toasts())
        assert ride.app.is_running


async def test_the_panel_says_an_idle_stop_keeps_the_disk_where_the_rental_asked(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        pane = await open_pane(ride)
        await running(ride, idle_timeout_min=30, idle_action=IdleAction.STOP)
        assert "then stop it and keep the disk" in detail_line(pane, "idle stop")
        await running(ride, idle_timeout_min=30)
        pane.select((await ride.shopper.sessions())[0].id)
        await ride.settle()
        assert "then done, as at expiry" in detail_line(pane, "idle stop")
