"""The Costs pane: what was spent today, this month or in a range of local days.

The figures are the CLI's (`gpushop costs` / `costs summary`): the core's per-second cost lines
for the range, grouped by consumer, provider and GPU, and the budgets measured now. A chart
shows the spend of each local day of the period. The pane reloads (in a worker) when the core
opens, when a session changes, when the period changes, and every 30 s of core time while it
shows, because running sessions accrue cost every second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import ClassVar, Literal

from rich.markup import escape
from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.theme import Theme
from textual.widget import Widget
from textual.widgets import DataTable, Input, Label, Static

from gpushop_tui.core import (
    THRESHOLDS,
    CostReport,
    Event,
    Facade,
    Grouping,
    SessionChanged,
    Usage,
    used_text,
)
from gpushop_tui.errors import UserError
from gpushop_tui.models import BudgetAction
from gpushop_tui.tui import fmt
from gpushop_tui.tui.pane import CorePane

RELOAD_EVERY = timedelta(seconds=30)
"""How often (core time) the figures are reloaded while sessions may be accruing."""
GROUPS: tuple[tuple[Grouping, str], ...] = (
    ("consumer", "consumer"),
    ("provider", "provider"),
    ("gpu", "GPU"),
)
EXAMPLE_DAY = "2026-11-01"
ACTIONS = {
    BudgetAction.WARN: "warn (alerts only)",
    BudgetAction.BLOCK: "block (refuses rentals)",
    BudgetAction.STOP: "stop (ends sessions)",
}
"""What crossing a budget does, as `gpushop budgets --help` says it."""
GROUP_ROWS = 10
"""Rows the breakdown tables grow to before they scroll (the chart takes the rest)."""
BAR_CELLS = 12
CHART_TITLE = "Spend per day"
BLOCKS = " ▁▂▃▄▅▆▇█"
PARTIAL = " ▏▎▍▌▋▊▉█"


@dataclass(frozen=True)
class Period:
    """Which local days the pane shows: today, this month so far, or `first`..`last`."""

    kind: Literal["today", "month", "custom"]
    first: date | None = None
    last: date | None = None

    def days(self, today: date) -> tuple[date, date]:
        """The first and last local day (both included)."""
        match self.kind:
            case "today":
                return today, today
            case "month":
                return today.replace(day=1), today
            case "custom":
                assert self.first is not None and self.last is not None
                return self.first, self.last

    def title(self, first: date, last: date) -> str:
        match self.kind:
            case "today":
                return f"Today, {first:%a %Y-%m-%d}"
            case "month":
                return f"This month, {first:%B %Y}"
            case "custom":
                return f"{first} to {last}"


def parse_range(first_text: str, last_text: str, today: date) -> Period:
    """A custom period from the `from` and `to` fields; empty ones default as in `gpushop
    costs` (the first of this month, today). Raises `UserError` naming the bad field."""

    def day(field: str, text: str, default: date) -> date:
        text = text.strip()
        if not text:
            return default
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise UserError(f"{field}: {text!r} is not a day like {EXAMPLE_DAY}") from None

    first = day("from", first_text, today.replace(day=1))
    last = day("to", last_text, today)
    if last < first:
        raise UserError(f"to {last} is before from {first}")
    return Period("custom", first, last)


def thresholds_text(usage: Usage) -> str:
    """Which alert thresholds the budget has passed this month, and the next one."""
    percent = usage.fraction * 100
    passed = [f"{t}%" for t in THRESHOLDS if percent >= t]
    upcoming = [f"{t}%" for t in THRESHOLDS if percent < t]
    parts = [f"passed {', '.join(passed)}" if passed else "none passed"]
    if upcoming:
        parts.append(f"next {upcoming[0]}")
    return " · ".join(parts)


def level(usage: Usage) -> str:
    """`ok`, `warning` (from the 80 % threshold) or `danger` (over)."""
    if usage.over or usage.fraction >= 1:
        return "danger"
    return "warning" if usage.fraction >= 0.8 else "ok"


def bar(fraction: float, cells: int = BAR_CELLS) -> str:
    """A horizontal bar `cells` wide, filled to `fraction` (capped at full) in eighths."""
    eighths = round(min(max(fraction, 0.0), 1.0) * cells * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (PARTIAL[part] if part else "")).ljust(cells, "░")


@dataclass
class CostsLoaded(Message):
    """The cost report of `period` and the budgets now."""

    period: Period
    report: CostReport
    usages: list[Usage]


class SpendChart(Widget):
    """Spend per local day as vertical bars (eighth-block precision) over day-of-month labels.

    Each day gets up to 4 cells; where the period has more days than fit, the latest are
    drawn and the title says so."""

    days: reactive[tuple[tuple[date, float], ...]] = reactive(())

    def on_mount(self) -> None:
        self.border_title = CHART_TITLE

    def _fit(self) -> tuple[int, tuple[tuple[date, float], ...]]:
        """Cells per day, and the days that fit the width."""
        width, days = self.size.width, self.days
        if not days or width < 1:
            return 1, ()
        column = max(1, min(4, width // len(days)))
        fits = width // column if column > 1 else width - 1  # the last label needs 2 cells
        return column, days[-max(1, fits) :]

    def watch_days(self) -> None:
        self._retitle()

    def on_resize(self) -> None:
        self._retitle()

    def _retitle(self) -> None:
        if not self.size.width:
            return  # not shown: nothing is known about what fits
        shown = len(self._fit()[1])
        hidden = len(self.days) - shown
        self.border_title = CHART_TITLE + (f" (last {shown} days)" if hidden > 0 else "")

    def render(self) -> Text:
        column, shown = self._fit()
        if not shown:
            return Text("no days in this period", style="italic")
        peak = max(amount for _, amount in shown)
        rows = max(1, self.size.height - 1)
        heights = [
            0 if peak <= 0 else max(1 if amount > 0 else 0, round(amount / peak * rows * 8))
            for _, amount in shown
        ]
        lines = []
        for row in range(rows, 0, -1):
            line = ""
            for eighths in heights:
                block = BLOCKS[min(8, max(0, eighths - (row - 1) * 8))]
                line += block * max(1, column - 1) + (" " if column > 1 else "")
            lines.append(line.rstrip())
        every = -(-3 // column)  # a label needs 2 cells and a space; the last day has one
        labels = [" "] * (len(shown) * column + 2)
        for index, (day, _) in enumerate(shown):
            if (len(shown) - 1 - index) % every == 0:
                labels[index * column : index * column + 2] = f"{day.day:02d}"
        lines.append("".join(labels).rstrip())
        return Text("\n".join(lines), no_wrap=True, overflow="crop")


class CostsPane(CorePane):
    """Spend by consumer, provider and GPU for a period, spend per day, and the budgets."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "period('today')", "Today"),
        Binding("m", "period('month')", "Month"),
        Binding("g", "custom_range", "Range"),
        Binding("r", "reload", "Reload"),
        Binding("escape", "leave_range", "Back to the tables", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"costs--ok", "costs--warning", "costs--danger"}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.period = Period("today")
        self.loaded_at: datetime | None = None
        """Core time of the figures shown: the tick reloads 30 s after it."""
        self.usages: list[Usage] = []

    def compose(self) -> ComposeResult:
        yield Static("Loading costs…", id="costs-summary")
        with Horizontal(id="costs-range"):
            yield Label("from", classes="costs-range-label")
            yield Input(placeholder="YYYY-MM-DD", id="costs-from", max_length=10)
            yield Label("to", classes="costs-range-label")
            yield Input(placeholder="YYYY-MM-DD", id="costs-to", max_length=10)
            yield Static(id="costs-problem", classes="danger")
        with Horizontal(id="costs-groups"):
            for grouping, label in GROUPS:
                with Vertical(classes="costs-group", id=f"costs-group-{grouping}") as box:
                    box.border_title = f"by {label}"
                    table: DataTable[Text] = DataTable(
                        id=f"costs-by-{grouping}", cursor_type="row", show_cursor=False
                    )
                    table.add_column(label, key="name")
                    table.add_column(Text("USD", justify="right"), key="usd")
                    yield table
        with Vertical(id="costs-budgets") as budgets:
            budgets.border_title = "Budgets"
            yield Static("No budgets (see 'gpushop budgets set --help').", id="costs-no-budgets")
            table = DataTable(id="costs-budget-table", cursor_type="row", show_cursor=False)
            for key, label in (
                ("scope", "SCOPE"),
                ("kind", "KIND"),
                ("used", "USED"),
                ("amount", "OF LIMIT"),
                ("action", "ACTION"),
                ("alerts", "ALERTS 50/80/100%"),
            ):
                table.add_column(label, key=key)
            yield table
        yield SpendChart(id="costs-chart")

    def on_mount(self) -> None:
        self.query_one("#costs-range").display = False
        self.query_one("#costs-budget-table").display = False
        self.app.theme_changed_signal.subscribe(self, self._restyle)

    def focus_main(self) -> None:
        self.query_one("#costs-by-consumer", DataTable).focus()

    # ------------------------------------------------------------------ loading

    def core_ready(self, shopper: Facade) -> None:
        super().core_ready(shopper)
        self.load()

    def core_event(self, event: Event) -> None:
        if isinstance(event, SessionChanged) and self.shopper is not None:
            self.load()

    def tick(self, now: datetime) -> None:
        if self.loaded_at is not None and now - self.loaded_at >= RELOAD_EVERY:
            self.load()

    @work(exclusive=True, group="costs-load", exit_on_error=False)
    async def load(self) -> None:
        """Read the period's cost report and the budgets' usage, and post them."""
        assert self.shopper is not None
        period = self.period
        try:
            report = await self.shopper.cost_report(*period.days(self.shopper.today()))
            usages = await self.shopper.budget_usage()
        except UserError as exc:
            self.notify(fmt.problem(exc), title="Costs", severity="error")
            return
        self.post_message(CostsLoaded(period, report, usages))

    @on(CostsLoaded)
    def loaded(self, message: CostsLoaded) -> None:
        if message.period != self.period:
            return  # a load for a period the user has since left
        report = message.report
        self.loaded_at = report.now
        until = min(report.until, report.now)
        self.query_one("#costs-summary", Static).update(
            # Spaces end the bold runs rather than start the plain ones: read run by run (a
            # screenshot, a screen reader), the words stay apart.
            f"[b]{message.period.title(report.first_day, report.last_day)}   [/b]"
            f"total [b]{fmt.spent(report.total)} [/b]from {_when(report.since)} to {_when(until)}"
        )
        groups = {grouping: report.by(grouping) for grouping, _ in GROUPS}
        for grouping, totals in groups.items():
            self._fill_group(grouping, totals)
        tallest = max(len(totals) for totals in groups.values())
        self.query_one("#costs-groups").styles.height = min(max(tallest, 1), GROUP_ROWS) + 3
        self._fill_chart(report)
        self.usages = message.usages
        self._fill_budgets()

    def _fill_group(self, grouping: Grouping, totals: dict[str, float]) -> None:
        """Update one breakdown table by row key (the name), in name order like the CLI."""
        table = self.query_one(f"#costs-by-{grouping}", DataTable)
        for gone in [k for k in table.rows if k.value not in totals]:
            table.remove_row(gone)
        added = False
        for name, amount in totals.items():
            cell = Text(fmt.spent(amount), justify="right")
            if name in table.rows:
                if table.get_cell(name, "usd") != cell:
                    table.update_cell(name, "usd", cell)
            else:
                table.add_row(Text(name), cell, key=name)
                added = True
        if added:
            table.sort("name", key=str)
        box = self.query_one(f"#costs-group-{grouping}")
        box.border_subtitle = "nothing billed" if not totals else ""

    def _fill_chart(self, report: CostReport) -> None:
        by_day = report.by("day")
        days = []
        day = report.first_day
        while day <= min(report.last_day, report.today):
            days.append((day, by_day.get(day.isoformat(), 0.0)))
            day += timedelta(days=1)
        chart = self.query_one(SpendChart)
        chart.days = tuple(days)
        if days and any(amount for _, amount in days):
            peak_day, peak = max(days, key=lambda item: item[1])
            chart.border_subtitle = f"peak {fmt.spent(peak)} on {peak_day:%b %d}"
        else:
            chart.border_subtitle = "nothing billed"

    def _fill_budgets(self) -> None:
        """Update the budgets table by row key (the budget id)."""
        table = self.query_one("#costs-budget-table", DataTable)
        wanted = {str(u.budget.id): u for u in self.usages}
        for gone in [k for k in table.rows if k.value not in wanted]:
            table.remove_row(gone)
        for key, usage in wanted.items():
            cells = self._budget_cells(usage)
            if key in table.rows:
                for column, cell in cells.items():
                    shown = table.get_cell(key, column)
                    if (shown.plain, shown.style) != (cell.plain, cell.style):
                        table.update_cell(key, column, cell)
            else:
                table.add_row(*cells.values(), key=key)
        table.display = bool(wanted)
        self.query_one("#costs-no-budgets").display = not wanted

    def _budget_cells(self, usage: Usage) -> dict[str, Text]:
        budget = usage.budget
        style: Style = self.get_component_rich_style(f"costs--{level(usage)}", partial=True)
        used = f"{bar(usage.fraction)} {usage.fraction:.0%}" + (" OVER" if usage.over else "")
        return {
            "scope": Text(budget.consumer or "(global)"),
            "kind": Text(budget.kind.value.replace("_", " ")),
            "used": Text(used, style=style),
            "amount": Text(used_text(usage.budget, usage.used)),
            "action": Text(ACTIONS[budget.action]),
            "alerts": Text(thresholds_text(usage)),
        }

    def _restyle(self, theme: Theme) -> None:
        """The budget bars' colours follow the theme."""
        self._fill_budgets()

    # ------------------------------------------------------------------ the period

    def action_period(self, kind: Literal["today", "month"]) -> None:
        self.query_one("#costs-range").display = False
        self._switch(Period(kind))

    def action_custom_range(self) -> None:
        """Show the `from`/`to` fields, filled with the period shown, and focus `from`."""
        if self.shopper is None:
            return
        first, last = self.period.days(self.shopper.today())
        self.query_one("#costs-from", Input).value = first.isoformat()
        self.query_one("#costs-to", Input).value = last.isoformat()
        self.query_one("#costs-problem", Static).update("")
        self.query_one("#costs-range").display = True
        self.query_one("#costs-from", Input).focus()

    @on(Input.Submitted, "#costs-from, #costs-to")
    def range_submitted(self) -> None:
        if self.shopper is None:
            return
        problem = self.query_one("#costs-problem", Static)
        try:
            period = parse_range(
                self.query_one("#costs-from", Input).value,
                self.query_one("#costs-to", Input).value,
                self.shopper.today(),
            )
        except UserError as exc:
            problem.update(f"✗ {escape(exc.message)}")
            self.notify(fmt.problem(exc), title="Costs", severity="error")
            return
        problem.update("")
        self._switch(period)
        self.focus_main()

    def action_leave_range(self) -> None:
        """Back to the tables; the range fields fold away unless a custom range is shown."""
        if self.period.kind != "custom":
            self.query_one("#costs-range").display = False
        self.focus_main()

    def action_reload(self) -> None:
        if self.shopper is not None:
            self.load()

    def _switch(self, period: Period) -> None:
        self.period = period
        if self.shopper is not None:
            self.load()


def _when(moment: datetime) -> str:
    """A UTC instant as local time with its zone, as `gpushop costs` prints it."""
    return f"{moment.astimezone():%Y-%m-%d %H:%M %Z}"
