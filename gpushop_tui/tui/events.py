"""The Events pane: the audit log, live, newest at the bottom, filterable by session and severity.

It loads the most recent audit rows once the core is open, then appends every persisted live
event (one with an `audit_id`) that it does not hold yet. The view follows new rows while the
cursor sits on the newest row at the bottom; move the cursor up and it stays where it is (`f`
follows again). At most `CAP` rows are kept, the oldest dropped first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import ClassVar

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.theme import Theme
from textual.widgets import DataTable, Input, Static

from gpushop_tui.core import Event, Facade
from gpushop_tui.errors import UserError
from gpushop_tui.models import AuditEvent, Severity
from gpushop_tui.tui import fmt
from gpushop_tui.tui.pane import CorePane
from gpushop_tui.tui.widgets.table import Table

CAP = 2000
"""Most rows the pane keeps; the oldest go first."""
SEVERITIES = (Severity.INFO, Severity.WARNING, Severity.ERROR, Severity.CRITICAL)
RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}
COLUMNS = (("time", "TIME"), ("severity", "SEVERITY"), ("kind", "KIND"), ("session", "SESSION"))
REMOVE_IN_PLACE = 200
"""A filter that hides more rows than this rebuilds the table (each removal is O(rows))."""


@dataclass
class AuditLoaded(Message):
    """The most recent audit rows, oldest first."""

    rows: list[AuditEvent]


class EventsPane(CorePane):
    """The audit log as a table keyed by audit id, oldest at the top, newest at the bottom."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter_session", "Session filter", key_display="/"),
        Binding("s", "cycle_severity", "Least severity"),
        Binding("f", "follow", "Follow newest"),
        Binding("escape", "leave_filter", "Back to the log", key_display="esc"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {f"events--{s}" for s in SEVERITIES}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: dict[int, AuditEvent] = {}
        """Every audit row held, by id, in id order (shown or filtered out)."""
        self.session_prefix = ""
        self.least = Severity.INFO
        self._day: date | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="events-filters"):
            yield Input(placeholder="session id prefix (/)", id="events-session")
            yield Static(id="events-status")
        table: Table[Text | str] = Table(id="events-table", cursor_type="row")
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        table.add_column("MESSAGE", key="message")
        yield table

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, self._restyle)
        self._show_status()

    @property
    def table(self) -> DataTable[Text | str]:
        return self.query_one("#events-table", DataTable)

    def focus_main(self) -> None:
        self.table.focus()

    # ------------------------------------------------------------------ loading

    def core_ready(self, shopper: Facade) -> None:
        super().core_ready(shopper)
        self.load()

    @work(exclusive=True, group="events-load", exit_on_error=False)
    async def load(self) -> None:
        assert self.shopper is not None
        try:
            rows = await self.shopper.audit_log(limit=CAP)
        except UserError as exc:
            self.notify(fmt.problem(exc), title="Events", severity="error")
            return
        self.post_message(AuditLoaded(rows))

    @on(AuditLoaded)
    def loaded(self, message: AuditLoaded) -> None:
        for row in message.rows:
            assert row.id is not None
            self.rows.setdefault(row.id, row)
        self.rows = dict(sorted(self.rows.items()))
        self._trim()
        self._rebuild(follow=True)

    def core_event(self, event: Event) -> None:
        if event.audit_id is None or event.audit_id in self.rows:
            return
        row = event.audit_event()
        newest = max(self.rows, default=0)
        self.rows[event.audit_id] = row
        if event.audit_id < newest:  # two publishers finished out of order: keep id order
            self.rows = dict(sorted(self.rows.items()))
            self._trim()
            self._rebuild(follow=self._following())
            return
        following, current = self._following(), self._cursor_key()
        if self._matches(row):
            self.table.add_row(*self._cells(row), key=str(event.audit_id))
        self._trim()
        self._place_cursor(following, current)
        self._show_status()

    def tick(self, now: datetime) -> None:
        """At local midnight, yesterday's times gain their date."""
        today = now.astimezone().date()
        if self._day is not None and today != self._day:
            table = self.table
            for key in table.rows:
                assert key.value is not None
                table.update_cell(key, "time", fmt.local_time(self.rows[int(key.value)].at, now))
        self._day = today

    # ------------------------------------------------------------------ filtering

    def _matches(self, row: AuditEvent) -> bool:
        if self.session_prefix and not (row.session_id or "").startswith(self.session_prefix):
            return False
        return RANK[row.severity] >= RANK[self.least]

    @on(Input.Changed, "#events-session")
    def session_typed(self, event: Input.Changed) -> None:
        self.session_prefix = event.value.strip()
        self._refilter()

    @on(Input.Submitted, "#events-session")
    def session_submitted(self) -> None:
        self.focus_main()

    def action_filter_session(self) -> None:
        self.query_one("#events-session", Input).focus()

    def action_leave_filter(self) -> None:
        self.focus_main()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`escape` leaves the session filter, and the footer says so only while it has focus."""
        if action == "leave_filter":
            return self.query_one("#events-session", Input).has_focus
        return True

    def selected_id(self) -> str | None:
        """The session id of the event under the cursor (events without one have none)."""
        key = self._cursor_key()
        return None if key is None else self.rows[int(key)].session_id

    def action_follow(self) -> None:
        self._to_newest()

    def action_cycle_severity(self) -> None:
        self.least = SEVERITIES[(RANK[self.least] + 1) % len(SEVERITIES)]
        self._refilter()

    def _refilter(self) -> None:
        """Show the rows the filters let through: remove the hidden ones where the filter only
        narrowed a little, else rebuild (rows coming back must return in id order)."""
        table = self.table
        wanted = {i for i, row in self.rows.items() if self._matches(row)}
        shown = [int(key.value) for key in table.rows if key.value is not None]
        hidden = [i for i in shown if i not in wanted]
        if wanted <= set(shown) and len(hidden) <= REMOVE_IN_PLACE:
            following, current = self._following(), self._cursor_key()
            for i in hidden:
                table.remove_row(str(i))
            self._place_cursor(following, current)
        else:
            self._rebuild(follow=self._following())
        self._show_status()

    # ------------------------------------------------------------------ the table

    def _following(self) -> bool:
        """Whether the cursor sits on the newest row (the user has not moved up)."""
        table = self.table
        return table.cursor_row >= table.row_count - 1

    def _cursor_key(self) -> str | None:
        """The audit id (row key) under the cursor, if there is a row."""
        table = self.table
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _place_cursor(self, following: bool, current: str | None) -> None:
        """After rows came or went: on the newest row when following, else back on the row
        it was on (rows removed above it would otherwise shift it), else the newest."""
        table = self.table
        if not following and current is not None and current in table.rows:
            table.move_cursor(row=table.get_row_index(current))
        else:
            self._to_newest()

    def _to_newest(self) -> None:
        table = self.table
        if table.row_count:
            table.move_cursor(row=table.row_count - 1)

    def _rebuild(self, *, follow: bool) -> None:
        """Fill the table again from the held rows, keeping the cursor on its row."""
        table = self.table
        current = self._cursor_key()
        table.clear()
        for audit_id, row in self.rows.items():
            if self._matches(row):
                table.add_row(*self._cells(row), key=str(audit_id))
        self._place_cursor(follow, current)
        self._show_status()

    def _trim(self) -> None:
        """Drop the oldest rows beyond `CAP`."""
        while len(self.rows) > CAP:
            oldest = next(iter(self.rows))
            del self.rows[oldest]
            if str(oldest) in self.table.rows:
                self.table.remove_row(str(oldest))

    def _cells(self, row: AuditEvent) -> tuple[Text | str, ...]:
        assert self.shopper is not None
        message = " ".join(row.message.split())
        return (
            fmt.local_time(row.at, self.shopper.clock.now()),
            self._severity(row.severity),
            Text(row.kind),
            Text(row.session_id or "-"),
            Text(message[:300]),
        )

    def _severity(self, severity: Severity) -> Text:
        """The severity in words, coloured by the theme."""
        return Text(
            severity.value, style=self.get_component_rich_style(f"events--{severity}", partial=True)
        )

    def _restyle(self, theme: Theme) -> None:
        """Severity colours follow the theme."""
        table = self.table
        for key in table.rows:
            assert key.value is not None
            table.update_cell(key, "severity", self._severity(self.rows[int(key.value)].severity))

    def _show_status(self) -> None:
        shown, held = self.table.row_count, len(self.rows)
        session = f" · session {escape(self.session_prefix)}…" if self.session_prefix else ""
        self.query_one("#events-status", Static).update(
            f"least severity [b]{self.least} [/b](s){session} · {shown} of {held} events"
        )
