"""The Costs pane shows what sessions cost by period, per day and against the budgets."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from gpushop_tui.errors import UserError
from gpushop_tui.models import Budget, BudgetAction, BudgetKind, Session
from gpushop_tui.tui import fmt
from gpushop_tui.tui.costs import SpendChart, parse_range
from gpushop_tui.tui.sessions import SessionsPane
from tests.tui.harness import Cockpit, cockpit

GROUPS = ("consumer", "provider", "gpu")


def cost_so_far(ride: Cockpit, session: Session) -> float:
    """What `session` has cost by now: its price over the fake time since its create call."""
    assert session.instance_created_at is not None and session.price_per_hour is not None
    end = session.instance_gone_at or ride.shopper.clock.now()
    return session.price_per_hour * (end - session.instance_created_at).total_seconds() / 3600


def text(ride: Cockpit, selector: str) -> str:
    return str(ride.one(selector, Static).render())


def rows(ride: Cockpit, grouping: str) -> dict[str, str]:
    table = ride.one(f"#costs-by-{grouping}", DataTable)
    return {str(key.value): str(table.get_cell(key, "usd")) for key in table.rows}


def expected_rows(session: Session, amount: str) -> dict[str, dict[str, str]]:
    return {
        "consumer": {session.consumer: amount},
        "provider": {session.provider: amount},
        "gpu": {session.offer.gpu_name: amount},
    }


async def test_today_shows_a_running_sessions_cost_by_consumer_provider_and_gpu(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        session = await ride.market.running(hours=4)
        await ride.press("3")
        await ride.advance(3600, step_s=60)
        await ride.settle()
        stored = await ride.shopper.session(session.id)
        amount = fmt.usd(cost_so_far(ride, stored), 4)
        summary = text(ride, "#costs-summary")
        assert summary.startswith("Today, Thu 2026-01-01")
        assert f"total {amount} from 2026-01-01 00:00 UTC to 2026-01-01 01:" in summary
        for grouping, expected in expected_rows(stored, amount).items():
            assert rows(ride, grouping) == expected


async def test_figures_reload_every_30_seconds_of_core_time_not_every_tick(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        session = await ride.market.running(hours=4)
        await ride.settle()
        shown = rows(ride, "consumer")
        assert shown == {"alice": fmt.usd(cost_so_far(ride, session), 4)}
        await ride.advance(20)
        assert rows(ride, "consumer") == shown  # the tick came, but within 30 s of the load
        await ride.advance(15)
        assert rows(ride, "consumer") == {"alice": fmt.usd(cost_so_far(ride, session), 4)}
        assert rows(ride, "consumer") != shown


async def test_month_keeps_yesterdays_spend_that_today_no_longer_shows(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        session = await ride.market.running(hours=4)
        await ride.advance(1800, step_s=60)
        await ride.market.run(ride.shopper.done(session.id))
        closed = await ride.market.until(session.id, lambda s: s.instance_gone_at is not None)
        await ride.advance(24 * 3600, step_s=900)
        await ride.press("3")
        assert text(ride, "#costs-summary").startswith("Today, Fri 2026-01-02")
        assert "total $0.0000" in text(ride, "#costs-summary")
        assert all(rows(ride, grouping) == {} for grouping in GROUPS)
        assert ride.one("#costs-group-consumer").border_subtitle == "nothing billed"

        await ride.press("m")
        amount = fmt.usd(cost_so_far(ride, closed), 4)
        summary = text(ride, "#costs-summary")
        assert summary.startswith("This month, January 2026")
        assert f"total {amount} from 2026-01-01 00:00 UTC" in summary
        for grouping, expected in expected_rows(closed, amount).items():
            assert rows(ride, grouping) == expected
        chart = ride.one(SpendChart)
        assert [(day, fmt.usd(spent, 4)) for day, spent in chart.days] == [
            (date(2026, 1, 1), amount),
            (date(2026, 1, 2), "$0.0000"),
        ]
        assert chart.border_subtitle == f"peak {amount} on Jan 01"
        assert str(chart.render()).splitlines()[-1].split() == ["01", "02"]


async def test_a_bad_custom_range_says_why_and_a_good_one_is_shown(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        session = await ride.market.running(hours=4)
        await ride.press("3", "g")
        first, last = ride.one("#costs-from", Input), ride.one("#costs-to", Input)
        assert ride.app.focused is first
        assert (first.value, last.value) == ("2026-01-01", "2026-01-01")

        first.value = "2026-13-01"
        await ride.press("enter")
        problem = "from: '2026-13-01' is not a day like 2026-11-01"
        assert text(ride, "#costs-problem") == f"✗ {problem}"
        assert problem in ride.toasts()
        assert text(ride, "#costs-summary").startswith("Today")  # the period did not change

        first.value, last.value = "2026-01-05", "2026-01-01"
        await ride.press("enter")
        assert text(ride, "#costs-problem") == "✗ to 2026-01-01 is before from 2026-01-05"

        first.value, last.value = "2025-12-30", ""
        await ride.press("enter")
        assert text(ride, "#costs-problem") == ""
        summary = text(ride, "#costs-summary")
        assert summary.startswith("2025-12-30 to 2026-01-01")
        assert f"total {fmt.usd(cost_so_far(ride, session), 4)}" in summary
        assert [day for day, _ in ride.one(SpendChart).days] == [
            date(2025, 12, 30),
            date(2025, 12, 31),
            date(2026, 1, 1),
        ]
        assert ride.app.focused is ride.one("#costs-by-consumer", DataTable)


def test_empty_range_fields_default_like_the_cli() -> None:
    today = date(2026, 3, 17)
    assert parse_range("", "", today) == parse_range("2026-03-01", "2026-03-17", today)
    assert parse_range(" 2026-02-01 ", "", today).last == today
    with pytest.raises(UserError, match="to: 'yesterday' is not a day like 2026-11-01"):
        parse_range("", "yesterday", today)


async def test_budgets_show_their_bar_usage_limit_thresholds_and_action(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("3")
        assert ride.one("#costs-no-budgets").display
        assert not ride.one("#costs-budget-table").display
        session = await ride.market.running(hours=4)
        await ride.advance(3600, step_s=60)
        assert session.price_per_hour is not None and session.instance_created_at is not None
        at_check = ride.shopper.clock.now() + timedelta(seconds=30) - session.instance_created_at
        limit = session.price_per_hour * at_check.total_seconds() / 3600 / 0.6
        spend = await ride.shopper.set_budget(
            Budget(consumer="alice", kind=BudgetKind.MONTHLY_SPEND, limit=limit)
        )
        burn = await ride.shopper.set_budget(
            Budget(
                kind=BudgetKind.BURN_RATE,
                limit=session.price_per_hour / 2,
                action=BudgetAction.BLOCK,
            )
        )
        await ride.advance(30)
        table = ride.one("#costs-budget-table", DataTable)
        assert table.display and not ride.one("#costs-no-budgets").display

        def row(budget: Budget) -> list[str]:
            return [str(cell) for cell in table.get_row(str(budget.id))]

        spent = cost_so_far(ride, await ride.shopper.session(session.id))
        scope, kind, used, amount, action, alerts = row(spend)
        assert (scope, kind, action) == ("alice", "monthly spend", "warn (alerts only)")
        assert used == "███████▎░░░░ 60%"  # 0.6 x 12 cells = 7 cells and 2 eighths
        assert amount == f"${spent:.2f} of ${limit:.2f}/month"
        assert alerts == "passed 50% · next 80%"

        scope, kind, used, amount, action, alerts = row(burn)
        assert (scope, kind, action) == ("(global)", "burn rate", "block (refuses rentals)")
        assert used == "█" * 12 + " 200% OVER"
        assert amount == f"${session.price_per_hour:.2f} of ${burn.limit:.2f}/h"
        assert alerts == "passed 50%, 80%, 100%"

        red = table.get_cell(str(burn.id), "used").style
        ride.app.theme = "nord"
        await ride.settle()
        assert table.get_cell(str(burn.id), "used").style != red  # colours follow the theme


async def test_usable_at_80x24(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with cockpit(monkeypatch, isolated_env, size=(80, 24)) as ride:
        market = ride.market
        await market.running(await market.offer("vastai"), consumer="alice", hours=4)
        await market.running(await market.offer("tensordock"), consumer="bob", hours=4)
        await ride.shopper.set_budget(Budget(kind=BudgetKind.CONCURRENT_SESSIONS, limit=3))
        await ride.press("3", "r")
        screen = ride.app.screen.region
        for selector in ("#costs-by-consumer", "#costs-by-provider", "#costs-by-gpu"):
            table = ride.one(selector, DataTable)
            assert screen.contains_region(table.region)
            assert table.row_count == 2
            assert table.region.height >= 3  # the header and both rows
            assert table.region.width >= 24
        budgets = ride.one("#costs-budget-table", DataTable)
        assert screen.contains_region(budgets.region) and budgets.region.height >= 2
        assert screen.contains_region(ride.one(SpendChart).region)


async def test_a_long_range_charts_the_latest_days_that_fit_and_says_so(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env, size=(80, 24)) as ride:
        await ride.press("3", "g")
        ride.one("#costs-from", Input).value = "2025-09-01"
        await ride.press("enter")
        chart = ride.one(SpendChart)
        assert len(chart.days) == 123  # 2025-09-01 to today, 2026-01-01
        fit = chart.size.width - 1  # a day a cell, and room for the last day's label
        assert fit < 123
        assert chart.border_title == f"Spend per day (last {fit} days)"
        assert str(chart.render()).splitlines()[-1].split()[-1] == "01"  # today is drawn
        await ride.press("t")
        assert chart.border_title == "Spend per day"


async def test_a_sub_cent_cost_reads_the_same_in_the_sessions_and_costs_panes(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        session = await ride.market.running(hours=4)
        await ride.press("2")
        await ride.advance(30)
        await ride.settle()
        stored = await ride.shopper.session(session.id)
        spent = cost_so_far(ride, stored)
        assert 0 < spent < 0.005  # under half a cent: two places would say $0.00
        sessions = ride.one("#sessions-pane", SessionsPane)
        in_sessions = sessions.table.get_cell(session.id, "cost").plain
        await ride.press("3")
        await ride.settle()
        in_costs = rows(ride, "consumer")[stored.consumer]
        assert in_sessions == in_costs == fmt.spent(spent) != "$0.00"
