"""The cockpit opens over the core without blocking, supervises, and quits without destroying."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Static, TabbedContent

from gpushop_tui.config import load_settings
from gpushop_tui.store import Store
from gpushop_tui.tui.app import GpushopApp, wait_ready
from tests.tui.harness import cockpit


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
        assert shopper.settings.vastai_api_url.startswith("http://127.0.0.1:")
        assert shopper.settings.boot_delay_scale < 1  # simulated instances boot in seconds
        assert shopper.secrets.get("vastai") is not None
        await pilot.press("q")
    assert app.return_code == 0


async def test_the_app_supervises_while_it_runs_and_lets_go_when_it_quits(
    isolated_env: Path,
) -> None:
    app = GpushopApp(load_settings(), demo=True)
    async with app.run_test() as pilot:
        shopper = await wait_ready(app)
        await shopper.supervisor.decided.wait()
        await pilot.pause()
        assert shopper.supervisor.holding
        lease = await shopper.supervisor_lease()
        assert lease is not None and lease.holder == shopper.supervisor.holder
        db_file = shopper.store.path
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
