"""The TUI opens over the core without blocking, and reports a broken set-up calmly."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.widgets import Static

from gpushop_tui.config import load_settings
from gpushop_tui.secrets import SecretStore
from gpushop_tui.tui.app import GpushopApp


async def test_home_screen_shows_install_and_credentials(isolated_env: Path) -> None:
    SecretStore({}).set("bluelobster", "bl-tui-secret-123")
    app = GpushopApp(load_settings())
    async with app.run_test() as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.shopper is not None
        text = str(app.query_one("#welcome", Static).render())
        assert f"install {app.shopper.install_id}" in text
        assert "bluelobster  keyring" in text
        assert "vastai       not set" in text
        assert "bl-tui-secret-123" not in text
        await pilot.press("q")
    assert app.return_code == 0


async def test_unusable_data_dir_shows_error_not_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    app = GpushopApp(load_settings({"GPUSHOP_HOME": str(blocker / "home")}))
    async with app.run_test() as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        welcome = app.query_one("#welcome", Static)
        assert welcome.has_class("error")
        assert "cannot be used: Not a directory" in str(welcome.render())
        assert app.shopper is None


async def test_demo_runs_on_the_simulator_and_says_so(isolated_env: Path) -> None:
    app = GpushopApp(load_settings(), demo=True)
    async with app.run_test() as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.shopper is not None
        assert app.title == "gpushop — DEMO"
        text = str(app.query_one("#welcome", Static).render())
        assert "DEMO" in text
        assert "vastai       env" in text
        assert app.settings.vastai_api_url.startswith("http://127.0.0.1:")
        assert (
            app.shopper.secrets.get(
                "vastai",
            )
            is not None
        )
        await pilot.press("q")


async def test_the_tui_supervises_while_it_runs_and_lets_go_when_it_quits(
    isolated_env: Path,
) -> None:
    app = GpushopApp(load_settings(), demo=True)
    async with app.run_test() as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        shopper = app.shopper
        assert shopper is not None
        assert app.settings.boot_delay_scale < 1  # simulated instances boot in seconds
        await asyncio.wait_for(shopper.supervisor.decided.wait(), timeout=30)
        assert shopper.supervisor.holding
        lease = await shopper.supervisor_lease()
        assert lease is not None and lease.holder == shopper.supervisor.holder
        db_file = shopper.store.path
        await pilot.press("q")
    from gpushop_tui.store import Store

    store = await Store.open(db_file)
    try:
        assert await store.get_lease("supervisor") is None  # released on quit
    finally:
        await store.aclose()
