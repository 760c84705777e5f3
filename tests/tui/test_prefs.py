"""The cockpit remembers the theme and the Inventory filter across starts; a bad preferences
file never stops it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from gpushop_tui.config import load_settings
from gpushop_tui.tui.app import GpushopApp, wait_ready
from gpushop_tui.tui.inventory import InventoryPane
from gpushop_tui.tui.prefs import Prefs, load_prefs, prefs_file, save_prefs
from tests.tui.harness import cockpit


async def theme_at_start() -> str:
    """The theme a fresh cockpit opens with, over the same installation."""
    app = GpushopApp(load_settings(), supervise=False)
    async with app.run_test() as pilot:
        await wait_ready(app)
        await pilot.pause()
        return app.theme


async def test_a_chosen_theme_is_the_next_starts_theme(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = await theme_at_start()
    assert default != "nord"
    async with cockpit(monkeypatch, isolated_env) as ride:
        ride.app.theme = "nord"  # what the palette's theme picker does
        await ride.pilot.pause()
    path = prefs_file(load_settings())
    assert load_prefs(path).theme == "nord"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert await theme_at_start() == "nord"


async def test_a_corrupt_or_strange_prefs_file_gives_the_defaults(isolated_env: Path) -> None:
    path = prefs_file(load_settings())
    assert load_prefs(path) == Prefs()  # missing
    path.parent.mkdir(parents=True, exist_ok=True)
    for text in ("{not json", '{"theme": 7}', "[]", '{"theme": "no-such-theme"}'):
        path.write_text(text)
        assert await theme_at_start() == "textual-dark"
    path.write_text("{not json")
    assert load_prefs(path) == Prefs()


def test_saving_keeps_every_key_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "tui.json"
    save_prefs(path, Prefs(theme="nord", inventory_filter="gpu=4090"))
    save_prefs(path, load_prefs(path).model_copy(update={"theme": "gruvbox"}))
    assert load_prefs(path) == Prefs(theme="gruvbox", inventory_filter="gpu=4090")
    assert [p.name for p in path.parent.iterdir()] == ["tui.json"]


async def test_the_last_filter_left_is_the_next_starts_filter(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("slash", *"gpu=4090 n=1", "enter")
        await ride.press("slash", "ctrl+u", *"gpu=4090 nope=1")  # never submitted, never kept
        await ride.press("escape")
    assert load_prefs(prefs_file(load_settings())).inventory_filter == "gpu=4090 n=1"
    async with cockpit(monkeypatch, isolated_env) as ride:
        assert ride.one("#inventory-filter", Input).value == "gpu=4090 n=1"
        shown = await ride.shopper.cached_comparison(ride.app.query_one(InventoryPane).parsed)
        assert [(row.gpu_name, row.gpu_count) for row in shown.rows] == [("RTX 4090", 1)]
        assert ride.app.query_one("#inventory-compare", DataTable).row_count == 1
