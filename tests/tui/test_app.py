"""The cockpit opens over the core without blocking, supervises, and quits without destroying."""

from __future__ import annotations

from pathlib import Path

import keyring
import pytest
from keyring.backends.fail import Keyring as NoKeyring
from textual.widgets import Static, TabbedContent

from gpushop_tui.config import load_settings
from gpushop_tui.core import EVENTS_LOST, Alert
from gpushop_tui.core.supervisor import LEASE
from gpushop_tui.errors import UserError
from gpushop_tui.models import SessionStatus, StoragePolicy
from gpushop_tui.store import Store
from gpushop_tui.tui.app import GpushopApp, wait_ready
from gpushop_tui.tui.compare import CompareScreen
from gpushop_tui.tui.dialogs import ConfirmScreen, TextScreen
from gpushop_tui.tui.inventory import InventoryPane
from gpushop_tui.tui.rent import RentScreen
from gpushop_tui.tui.sessions import SessionsPane
from tests.core.market import Market
from tests.tui.harness import Cockpit, cockpit, read_by_run, run_together


async def test_unusable_data_dir_shows_error_not_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    app = GpushopApp(load_settings({"GPUSHOP_HOME": str(blocker / "home")}))
    async with app.run_test() as pilot:
        await app.opened.wait()
        await pilot.pause()
        startup = app.query_one("#startup", Static)
        assert startup.has_class("error")
        assert "cannot be used: Not a directory" in str(startup.render())
        assert app.shopper is None
        assert app.sub_title == "not started"


async def test_no_configured_provider_says_how_to_add_one(isolated_env: Path) -> None:
    app = GpushopApp(load_settings(), supervise=False)
    async with app.run_test(notifications=True) as pilot:
        await wait_ready(app)
        await pilot.pause()
        assert any("No provider is configured" in n.message for n in app._notifications)


async def test_demo_runs_on_the_simulator_and_says_so(isolated_env: Path) -> None:
    app = GpushopApp(load_settings(), demo=True)
    async with app.run_test() as pilot:
        shopper = await wait_ready(app)
        await pilot.pause()
        assert app.title == "gpushop DEMO"
        assert shopper.settings.provider("vastai").api_url.startswith("http://127.0.0.1:")
        assert shopper.settings.boot_delay_scale < 1  # simulated instances boot in seconds
        rows, _ = shopper.credentials()
        assert any(row.provider == "vastai" and row.source is not None for row in rows)
        await pilot.press("q")
    assert app.return_code == 0


async def test_the_app_supervises_while_it_runs_and_lets_go_when_it_quits(
    isolated_env: Path,
) -> None:
    app = GpushopApp(load_settings(), demo=True)
    async with app.run_test() as pilot:
        shopper = await wait_ready(app)
        holding, _ = await shopper.supervision()
        await pilot.pause()
        assert holding and shopper.supervising
        lease = await shopper.supervisor_lease()
        assert lease is not None and lease.holder == shopper._supervisor.holder
        db_file = shopper.settings.paths.db_file
        await pilot.press("q")
    store = await Store.open(db_file)
    try:
        assert await store.get_lease("supervisor") is None  # released on quit
    finally:
        await store.aclose()


async def test_number_keys_switch_panes(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        tabs = ride.one("#panes", TabbedContent)
        assert tabs.active == "inventory"
        for key, pane in (("2", "sessions"), ("3", "costs"), ("4", "benchmarks"), ("5", "events")):
            await ride.press(key)
            assert tabs.active == pane


async def test_quitting_with_running_sessions_asks_and_destroys_nothing(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        session = await ride.market.running()
        await ride.settle()
        assert ride.app.running == 1
        assert ride.app.sub_title.startswith("1 running · burn $")
        await ride.press("q")
        dialog = ride.app.screen
        assert isinstance(dialog, ConfirmScreen)
        body = str(dialog.query_one(".dialog-body", Static).render())
        assert "1 session(s) are running" in body
        assert "Quitting does not destroy them" in body
        await ride.press("n")
        assert not isinstance(ride.app.screen, ConfirmScreen)
        assert ride.app.is_running
        await ride.press("q", "y")
        assert not ride.app.is_running
        assert ride.market.instance(session).destroyed_at is None  # still there, still billing
        stored = await ride.market.shopper.session(session.id)
        assert stored.status == "running"


async def test_another_supervisor_makes_this_app_a_viewer_and_says_by_whom(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = "build-box~1a2b3c:4242:abc123"

    async def hand_lease_away(market: Market) -> None:
        shopper = market.shopper
        assert await shopper._store.acquire_lease(
            LEASE, other, 4242, shopper.clock.now(), shopper.settings.lease_ttl_s
        )

    async with cockpit(monkeypatch, isolated_env, prepare=hand_lease_away) as ride:
        assert ride.app.acting is False
        assert not ride.shopper.supervising
        assert "viewer — supervised by pid 4242 on build-box" in ride.app.sub_title
        assert any("Viewer mode: pid 4242 on build-box supervises" in t for t in ride.toasts())
        assert all(pane.read_only for pane in ride.app.panes())


async def test_help_lists_every_pane_and_says_quitting_destroys_nothing(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("question_mark")
        help_screen = ride.app.screen
        assert isinstance(help_screen, TextScreen)
        text = str(help_screen.query_one(".dialog-body", Static).render())
        for title in ("Inventory", "Sessions", "Costs", "Benchmarks", "Events"):
            assert title in text
        assert "Quitting never destroys an instance" in text
        await ride.press("escape")
        assert not isinstance(ride.app.screen, TextScreen)


async def test_command_palette_offers_the_panes_and_a_refresh(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        titles = [c.title for c in ride.app.get_system_commands(ride.app.screen)]
        for title in ("Show Sessions", "Show Costs", "Refresh offers", "Help"):
            assert title in titles
        assert any("theme" in t.lower() for t in titles)  # Textual's theme switcher stays
        show_costs = next(
            c for c in ride.app.get_system_commands(ride.app.screen) if c.title == "Show Costs"
        )
        show_costs.callback()
        await ride.settle()
        assert ride.one("#panes", TabbedContent).active == "costs"


async def test_every_way_out_asks_while_sessions_bill(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.market.running()
        await ride.settle()
        for key in ("ctrl+q", "ctrl+c"):
            await ride.press(key)
            assert isinstance(ride.app.screen, ConfirmScreen), key
            await ride.press(key)  # asking again does not stack a second question
            await ride.press("n")
            assert not isinstance(ride.app.screen, ConfirmScreen)
            assert ride.app.is_running
        [palette_quit] = [
            c for c in ride.app.get_system_commands(ride.app.screen) if c.title == "Quit"
        ]
        await palette_quit.callback()  # type: ignore[misc]
        await ride.settle()
        assert isinstance(ride.app.screen, ConfirmScreen)
        await ride.press("y")
        assert not ride.app.is_running


async def test_the_header_does_not_count_a_stopped_session_as_running(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        session = await ride.market.running(storage=StoragePolicy.KEEP)
        await ride.market.running()
        await ride.shopper.done(session.id)
        await ride.market.until(session.id, lambda s: s.status == SessionStatus.STOPPED)
        await ride.settle()
        assert ride.app.sub_title.startswith("1 running · 1 stopped (disk) · burn $")
        await ride.press("q")
        body = str(ride.one(".dialog-body", Static).render())
        assert "1 session(s) are running (1 stopped, keeping their disk)" in body


def no_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no OS keyring (a headless Linux box)."""
    monkeypatch.setattr(keyring, "get_keyring", NoKeyring)


async def test_no_keyring_warning_in_the_demo(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_keyring(monkeypatch)
    app = GpushopApp(load_settings(), demo=True, supervise=False)
    async with app.run_test(notifications=True) as pilot:
        await wait_ready(app)
        await pilot.pause()
        assert not any("keyring" in n.message for n in app._notifications)
        assert not app.query_one("#notice", Static).display


async def test_no_keyring_warning_when_every_credential_is_in_the_environment(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_keyring(monkeypatch)
    async with cockpit(monkeypatch, isolated_env, providers=("vastai",)) as ride:
        assert not any("keyring" in t for t in ride.toasts())
        assert not ride.app.query_one("#notice", Static).display


async def test_a_needed_keyring_warning_is_a_line_not_a_toast(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_keyring(monkeypatch)
    app = GpushopApp(load_settings(), supervise=False)
    async with app.run_test(notifications=True) as pilot:
        await wait_ready(app)
        await pilot.pause()
        notice = app.query_one("#notice", Static)
        assert notice.display
        assert "no OS keyring is available" in str(notice.render())
        assert not any("keyring" in n.message for n in app._notifications)


async def screens_read_apart(ride: Cockpit) -> dict[str, list[tuple[str, str]]]:
    """Every screen the app itself draws, each checked for words that run together."""
    found = {}

    async def check(name: str, selector: str) -> None:
        await ride.settle()
        found[name] = run_together(ride.app, ride.app.screen.query_one(selector))

    await check("header", "Header")
    await check("inventory", "#inventory-pane")
    await ride.offer_list()
    await check("offer list", "#inventory-pane")
    for pane in ("costs", "benchmarks", "events"):
        await ride.press(str(["costs", "benchmarks", "events"].index(pane) + 3))
        await check(pane, f"#{pane}-pane")
    await ride.press("question_mark")
    await check("help", ".dialog-box")
    await ride.press("escape")
    offer = await ride.market.offer("tensordock")
    ride.app.push_screen(RentScreen(ride.shopper, offer, lambda *_: None, can_stop=True))
    await ride.pilot.press(*"alice", "tab", "2")
    await check("rent", ".dialog-box")
    await ride.press("escape")
    ride.app.push_screen(CompareScreen([offer, await ride.market.offer()], {}, None, None))
    await check("compare", ".dialog-box")
    await ride.press("escape")
    await ride.press("q")
    await check("quit", ".dialog-box")
    await ride.press("n")
    return found


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 50)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_words_stay_apart_when_read_run_by_run(
    size: tuple[int, int], isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A screenshot's text (or a screen reader) reads each styled run apart; a space that
    starts a run is lost there, and `gpushop — 2 running` read `gpushop—  2 running`."""
    async with cockpit(monkeypatch, isolated_env, size=size) as ride:
        await ride.market.running(await ride.market.offer("vastai"), consumer="alice")
        await ride.market.running(await ride.market.offer("bluelobster"), consumer="bob")
        await ride.advance(20 * 60, step_s=30)
        found = await screens_read_apart(ride)
        assert {name: lines for name, lines in found.items() if lines} == {}
        header = ride.app.screen._compositor.render_strips()[0]
        assert "gpushop — 2 running · burn $" in read_by_run(header)


async def test_a_failing_core_call_is_a_toast_and_the_cockpit_stays(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that stops answering mid-session (remote), or any refusal a worker meets, is
    one toast: the cockpit never ends on it, whichever pane's worker met it."""
    async with cockpit(monkeypatch, isolated_env) as ride:

        async def unreachable(*args: object, **kwargs: object) -> object:
            raise UserError("the gpushop server at https://gpushop.example.test does not answer")

        monkeypatch.setattr(ride.market.shopper, "billing_now", unreachable)
        monkeypatch.setattr(ride.market.shopper, "session_views", unreachable)
        ride.app.refresh_burn()
        ride.app.query_one("#sessions-pane", SessionsPane).reload()
        await ride.settle()
        assert ride.app.is_running
        told = [n.message for n in ride.app._notifications]
        assert sum("does not answer" in message for message in told) == 2

        async def broken(*args: object, **kwargs: object) -> object:
            raise KeyError("bug")

        monkeypatch.setattr(ride.market.shopper, "billing_now", broken)
        ride.app.refresh_burn()
        await ride.settle()
        assert ride.app.is_running
        assert any("internal error (KeyError)" in n.message for n in ride.app._notifications)


async def test_lost_live_events_make_the_panes_read_again(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote cockpit whose event stream broke cannot know what it missed: on the remote
    façade's `EVENTS_LOST` alert the panes read what they show again (the menu from the cache,
    not from the providers)."""
    async with cockpit(monkeypatch, isolated_env) as ride:
        read: list[str] = []
        sessions = ride.app.query_one("#sessions-pane", SessionsPane)
        inventory = ride.app.query_one("#inventory-pane", InventoryPane)
        monkeypatch.setattr(sessions, "reload", lambda: read.append("sessions"))
        monkeypatch.setattr(inventory, "read_view", lambda: read.append("menu"))
        monkeypatch.setattr(inventory, "refresh_offers", lambda: read.append("providers"))
        ride.market.shopper._events.deliver(
            Alert(message="the live events were interrupted", alert=EVENTS_LOST)
        )
        await ride.settle()
        assert sorted(read) == ["menu", "sessions"]
