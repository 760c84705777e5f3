"""The Events pane shows the audit log, live, and filters it by session and severity."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from gpushop_tui.core.events import Alert, InventoryRefreshed
from gpushop_tui.models import Severity
from gpushop_tui.tui import events as events_pane
from gpushop_tui.tui import fmt
from gpushop_tui.tui.events import EventsPane
from gpushop_tui.tui.pane import CoreEvent
from tests.core.market import Market
from tests.tui.harness import Cockpit, cockpit


def table(ride: Cockpit) -> DataTable[object]:
    return ride.one("#events-table", DataTable)


def keys(ride: Cockpit) -> list[int]:
    return [int(str(key.value)) for key in table(ride).rows]


def column(ride: Cockpit, name: str) -> list[str]:
    shown = table(ride)
    return [str(shown.get_cell(key, name)) for key in shown.rows]


async def alert(
    ride: Cockpit,
    message: str,
    severity: Severity = Severity.WARNING,
    session_id: str | None = None,
) -> Alert:
    """Publish an alert through the core and let the app take it in."""
    published = await ride.shopper._events.publish(
        Alert(message=message, alert="test", severity=severity, session_id=session_id)
    )
    await ride.settle()
    assert isinstance(published, Alert)
    return published


async def test_the_audit_log_is_loaded_then_followed_live_without_duplicates(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def earlier(market: Market) -> None:
        for n in range(3):
            await market.shopper._events.publish(Alert(message=f"earlier {n}", alert="test"))

    async with cockpit(monkeypatch, isolated_env, prepare=earlier) as ride:
        await ride.press("5")
        stored = await ride.shopper.audit_log(limit=100)
        assert keys(ride) == [row.id for row in stored]
        now = ride.shopper.clock.now()
        assert column(ride, "time") == [fmt.local_time(row.at, now) for row in stored]
        assert column(ride, "message")[:3] == ["earlier 0", "earlier 1", "earlier 2"]
        assert column(ride, "severity")[:3] == ["warning"] * 3

        await ride.advance(65)
        live = await alert(ride, "the [b]disk[/b] is full", severity=Severity.ERROR)
        assert keys(ride)[-1] == live.audit_id
        last = table(ride).get_row(str(live.audit_id))
        assert [str(cell) for cell in last] == [
            "00:01:05",
            "error",
            "alert",
            "-",
            "the [b]disk[/b] is full",  # shown as written, not as markup
        ]
        ride.app.post_message(CoreEvent(live))  # delivered twice: shown once
        await ride.shopper._events.publish(
            InventoryRefreshed(message="vastai: 3 offers", provider="vastai", offers=3, ok=True)
        )
        await ride.settle()
        assert keys(ride).count(live.audit_id) == 1
        assert "inventory_refreshed" not in column(ride, "kind")
        assert keys(ride) == sorted(keys(ride))
        status = str(ride.one("#events-status", Static).render())
        assert f"{len(keys(ride))} of {len(keys(ride))} events" in status


async def test_session_and_severity_filters_hide_the_rest(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        first = await ride.market.running()
        second = await ride.market.running()
        await alert(ride, "first is hot", session_id=first.id, severity=Severity.WARNING)
        await alert(ride, "second failed", session_id=second.id, severity=Severity.ERROR)
        await alert(ride, "everyone: critical", severity=Severity.CRITICAL)
        await ride.press("5")
        everything = keys(ride)
        assert {first.id, second.id} <= set(column(ride, "session"))

        await ride.press("slash")
        assert ride.app.focused is ride.one("#events-session", Input)
        await ride.press(*first.id[:4], "enter")
        assert ride.app.focused is table(ride)
        assert set(column(ride, "session")) == {first.id}
        assert "first is hot" in column(ride, "message")
        status = str(ride.one("#events-status", Static).render())
        assert f"session {first.id[:4]}…" in status
        assert f"{len(keys(ride))} of {len(everything)} events" in status

        await ride.press("s")  # warning and worse
        assert column(ride, "message") == ["first is hot"]
        assert "least severity warning" in str(ride.one("#events-status", Static).render())

        ride.one("#events-session", Input).value = ""
        await ride.settle()
        assert column(ride, "message") == ["first is hot", "second failed", "everyone: critical"]
        await ride.press("s")  # error and worse
        assert column(ride, "severity") == ["error", "critical"]
        await ride.press("s", "s")  # critical, then round to info again
        assert keys(ride) == everything


async def test_new_rows_are_followed_unless_the_user_moved_up(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env, size=(80, 24)) as ride:
        await ride.press("5")
        for n in range(40):
            await ride.shopper._events.publish(Alert(message=f"alert {n}", alert="test"))
        await ride.settle()
        shown = table(ride)
        assert shown.row_count > shown.size.height  # more rows than fit
        assert shown.cursor_row == shown.row_count - 1
        assert shown.is_vertical_scroll_end

        await alert(ride, "one more")
        assert shown.cursor_row == shown.row_count - 1
        assert shown.is_vertical_scroll_end

        await ride.press("up", "up", "up")
        under_cursor = shown.cursor_row
        await alert(ride, "and another")
        assert shown.cursor_row == under_cursor
        assert column(ride, "message")[-1] == "and another"
        await ride.press("f")
        assert shown.cursor_row == shown.row_count - 1
        await alert(ride, "followed again")
        assert shown.cursor_row == shown.row_count - 1


async def test_the_table_keeps_the_newest_rows_up_to_its_cap(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_pane, "CAP", 5)
    async with cockpit(monkeypatch, isolated_env) as ride:
        published = [await alert(ride, f"alert {n}") for n in range(8)]
        assert keys(ride) == [event.audit_id for event in published[-5:]]
        assert len(ride.one(EventsPane).rows) == 5

        await ride.press("5", "up", "up")
        shown = table(ride)
        assert column(ride, "message")[shown.cursor_row] == "alert 5"
        await alert(ride, "alert 8")  # drops "alert 3" above the cursor
        assert column(ride, "message") == [f"alert {n}" for n in range(4, 9)]
        assert column(ride, "message")[shown.cursor_row] == "alert 5"


async def test_times_gain_their_date_after_midnight_and_colours_follow_the_theme(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.advance(60)
        early = await alert(ride, "before midnight", severity=Severity.ERROR)
        key = str(early.audit_id)
        assert str(table(ride).get_cell(key, "time")) == "00:01:00"
        await ride.advance(24 * 3600, step_s=1800)
        assert str(table(ride).get_cell(key, "time")) == "Jan 01 00:01"

        before = table(ride).get_cell(key, "severity")
        ride.app.theme = "nord"
        await ride.settle()
        after = table(ride).get_cell(key, "severity")
        assert str(after) == "error"
        assert after.style != before.style  # type: ignore[attr-defined]
