"""Keys a k9s or lazygit user tries first: escape out of a filter box, j/k, g/G, Home/End, `y`
to copy an id, and the query language on the help screen."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from gpushop_tui.tui.dialogs import TextScreen
from gpushop_tui.tui.inventory import InventoryPane
from tests.tui.harness import Cockpit, cockpit


def footer_says(ride: Cockpit, key: str) -> str | None:
    """What the footer shows for `key` now (None when it is not shown or disabled)."""
    active = ride.app.active_bindings.get(key)
    if active is None or not active.enabled or not active.binding.show:
        return None
    return active.binding.description


async def test_escape_leaves_the_filter_box_and_the_footer_says_so(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        pane = ride.app.query_one(InventoryPane)
        assert footer_says(ride, "escape") is None  # nothing to leave from the table
        await ride.press("slash", *"gpu=4090")
        assert ride.app.focused is ride.one("#inventory-filter", Input)
        assert footer_says(ride, "escape") == "Back to the table"
        await ride.press("escape")
        assert ride.app.focused is pane.shown_table()
        assert ride.one("#inventory-filter", Input).value == "gpu=4090"
        await ride.press("5", "slash")
        assert footer_says(ride, "escape") == "Back to the log"
        await ride.press("escape")
        assert ride.app.focused is ride.one("#events-table", DataTable)


async def test_vim_and_home_end_keys_move_in_the_tables(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        table = await ride.offer_list()
        assert table.row_count > 3 and table.cursor_row == 0
        await ride.press("j", "j")
        assert table.cursor_row == 2
        await ride.press("k")
        assert table.cursor_row == 1
        await ride.press("G")
        assert table.cursor_row == table.row_count - 1
        await ride.press("g")
        assert table.cursor_row == 0
        await ride.press("end")
        assert table.cursor_row == table.row_count - 1
        await ride.press("home")
        assert table.cursor_row == 0
        await ride.market.running()
        await ride.market.running()
        await ride.settle()
        await ride.press("2")
        sessions = ride.one("#sessions-table", DataTable)
        assert sessions.row_count == 2
        await ride.press("G")
        assert sessions.cursor_row == 1
        await ride.press("k")
        assert sessions.cursor_row == 0
        await ride.press("5")
        events = ride.one("#events-table", DataTable)
        assert events.row_count > 2
        await ride.press("G", "k")
        assert events.cursor_row == events.row_count - 2
        await ride.press("g", "j")
        assert events.cursor_row == 1


async def test_y_copies_the_selected_id(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        offer = (await ride.offer_list()).cursor_offer()
        assert offer is not None
        await ride.press("y")
        assert ride.app.clipboard == offer.id
        assert ride.toasts()[-1] == f"Copied {offer.id}"
        session = await ride.market.running()
        await ride.settle()
        await ride.press("2", "y")
        assert ride.app.clipboard == session.id
        assert ride.toasts()[-1] == f"Copied {session.id}"


async def test_help_has_the_query_language(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("question_mark")
        assert isinstance(ride.app.screen, TextScreen)
        text = str(ride.one(".dialog-body", Static).render())
        assert "gpu=4090 vram>=24 price<=0.5" in text
        assert 'quoted (`gpu="RTX 4090"`)' in text
        assert "y copy the row's id" in text
        assert "j/k" in text
