"""The Sessions pane: every open session with its deadlines, cost and node, and what to do next.

Rows are keyed by session id and diffed on every reload (a `SessionChanged` event, a new node
sample), which reads each session's `SessionView` from the core: rows are added, changed cells
rewritten, closed sessions moved to the history below. The one-second tick rewrites only the
countdown and cost cells whose text changed, computed from the stored absolute deadlines and the
view's `cost_at`, so a skipped tick never drifts; the open sessions' table
(`SessionTable`) writes only those cells. Every core call runs in a worker that posts a typed
message back; handlers only touch widgets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import ClassVar

from pydantic import ValidationError
from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.theme import Theme
from textual.widgets import Button, Collapsible, DataTable, Input, Static

from gpushop_tui.core import (
    ACTIVE,
    EXPIRY_WARNING,
    HARD_MAX_WARNING,
    Event,
    NodeSample,
    SessionChanged,
    SessionView,
    Shopper,
)
from gpushop_tui.errors import UserError
from gpushop_tui.models import (
    MAX_RESERVATION_HOURS,
    AuditEvent,
    ExtendRequest,
    InstanceState,
    Session,
    StoragePolicy,
    validation_problem,
)
from gpushop_tui.models import SessionStatus as Status
from gpushop_tui.tui import fmt
from gpushop_tui.tui.dialogs import ConfirmScreen, TextScreen
from gpushop_tui.tui.pane import CorePane
from gpushop_tui.tui.widgets.session_table import NONE, Cell, SessionTable, cell_text
from gpushop_tui.tui.widgets.table import Table

SAMPLED = ("util", "memory", "temp")
HISTORY_COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("id", "session", None),
    ("gpu", "GPU", None),
    ("consumer", "consumer", None),
    ("ended", "how it ended", 50),
    ("cost", "final cost", 10),
    ("at", "ended at", None),
)
HISTORY_LIMIT = 100
"""Closed sessions kept in the history table, most recently ended first."""
STATUS_TONE = {
    Status.RUNNING: "ok",
    Status.STOPPING: "warning",
    Status.STOPPED: "muted",
    Status.FAILED: "danger",
}


def gpu_text(session: Session) -> str:
    """`1x RTX 4090`, the way `gpushop sessions list` writes it."""
    return f"{session.offer.gpu_count}x {session.offer.gpu_name}"


def deadline_cell(deadline: datetime, now: datetime, warn: timedelta) -> Cell:
    """A countdown that says how near it is: `1h 02m`, `! 12m 05s`, `!! 2m 10s`, `overdue 5s`."""
    tone = fmt.urgency(deadline, now, warn)
    text = fmt.countdown(deadline, now)
    if deadline > now and tone != "ok":
        text = ("! " if tone == "warning" else "!! ") + text
    return text, tone


def expiry_cell(session: Session, now: datetime) -> Cell:
    """Only an active session expires (a stopping one is already ending)."""
    if session.status not in ACTIVE:
        return NONE
    return deadline_cell(session.expires_at, now, EXPIRY_WARNING)


def hard_max_cell(session: Session, now: datetime) -> Cell:
    return deadline_cell(session.hard_max_at, now, HARD_MAX_WARNING)


def cost_cell(view: SessionView, now: datetime) -> Cell:
    return fmt.spent(view.cost_at(now)), ""


def sample_cells(sample: tuple[datetime, NodeSample] | None) -> dict[str, Cell]:
    """GPU utilization (the busiest GPU), memory (all GPUs) and temperature (the hottest)."""
    if sample is None:
        return dict.fromkeys(SAMPLED, NONE)
    gpus = sample[1].gpus
    if not gpus:
        return dict.fromkeys(SAMPLED, ("?", "warning"))
    utils = [g.utilization_pct for g in gpus if g.utilization_pct is not None]
    temps = [g.temperature_c for g in gpus if g.temperature_c is not None]
    used = [g.memory_used_mib for g in gpus if g.memory_used_mib is not None]
    total = [g.memory_total_mib for g in gpus if g.memory_total_mib is not None]
    hot = max(temps, default=None)
    return {
        "util": (f"{max(utils):.0f}%", "") if utils else ("?", "warning"),
        "memory": (
            (f"{sum(used) / 1024:.1f}/{sum(total) / 1024:.0f} GiB", "")
            if used and total
            else ("?", "warning")
        ),
        "temp": (
            (f"{hot:.0f}°C", "danger" if hot >= 85 else "") if hot is not None else ("?", "warning")
        ),
    }


def idle_cell(session: Session) -> Cell:
    """The idle verdict with its reason; `off` when the session never idles out."""
    if session.idle_timeout_min == 0:
        return "off", "muted"
    reason = session.idle_reason
    if reason is None:
        return "not sampled yet", "muted"
    return reason, "warning" if reason.startswith("idle") else ""


def static_cells(session: Session) -> dict[str, Cell]:
    """The cells that change only when the stored session does."""
    instance_tone = {InstanceState.LIVE: "ok", InstanceState.UNKNOWN: "warning"}
    return {
        "id": (session.id, ""),
        "gpu": (gpu_text(session), ""),
        "status": (session.status.value, STATUS_TONE.get(session.status, "")),
        "instance": (session.instance.value, instance_tone.get(session.instance, "")),
        "consumer": (session.consumer, ""),
        "provider": (session.provider, ""),
        "idle": idle_cell(session),
    }


def ticking_cells(view: SessionView, now: datetime) -> dict[str, Cell]:
    return {
        "expires": expiry_cell(view.session, now),
        "cost": cost_cell(view, now),
        "hard_max": hard_max_cell(view.session, now),
    }


def ended_at(session: Session) -> datetime:
    return session.instance_gone_at or session.state_entered_at


def how_it_ended(session: Session) -> str:
    """Failed, destroyed (its instance is gone) or what its status says, with the reason."""
    if session.status == Status.FAILED:
        word = "failed"
    elif session.instance == InstanceState.GONE:
        word = "destroyed"
    else:
        word = session.status.value
    return word + (f": {session.error}" if session.error else "")


def history_cells(view: SessionView, now: datetime) -> dict[str, Cell]:
    session = view.session
    ended = how_it_ended(session)
    return {
        "id": (session.id, ""),
        "gpu": (gpu_text(session), ""),
        "consumer": (session.consumer, ""),
        "ended": (ended, "danger" if session.status == Status.FAILED else ""),
        "cost": (fmt.spent(view.cost_at(now)), ""),
        "at": (fmt.local_time(ended_at(session), now), "muted"),
    }


def timeline_text(session_id: str, events: list[AuditEvent], now: datetime) -> str:
    """One line per audit event, oldest first, local times (markup-safe)."""
    if not events:
        return f"No events recorded for session {session_id}."
    return "\n".join(
        f"{fmt.local_time(e.at, now)}  {e.severity.value:<8} {escape(e.message)}" for e in events
    )


class ExtendScreen(ModalScreen[ExtendRequest | None]):
    """Ask by how many hours to push a session's reservation out (default 1)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, session: Session, now: datetime) -> None:
        super().__init__(classes="dialog")
        self.session = session
        self.now = now

    def compose(self) -> ComposeResult:
        s = self.session
        with Vertical(classes="dialog-box"):
            yield Static(f"Extend session {s.id}", classes="dialog-title")
            yield Static(
                f"{gpu_text(s)} on {s.provider} expires in {fmt.countdown(s.expires_at, self.now)}"
                f"; its hard max is in {fmt.countdown(s.hard_max_at, self.now)}. "
                f"Extend by how many hours (at most {MAX_RESERVATION_HOURS:g})?",
                classes="dialog-body",
            )
            yield Input(value="1", type="number", id="extend-hours")
            yield Static("", id="extend-problem", classes="danger")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Extend [enter]", id="yes", variant="primary")
                yield Button("Cancel [esc]", id="no")

    @on(Input.Submitted)
    @on(Button.Pressed, "#yes")
    def submit(self) -> None:
        raw = self.query_one("#extend-hours", Input).value.strip()
        try:
            request = ExtendRequest.model_validate({"hours": raw})
        except ValidationError as err:
            self.query_one("#extend-problem", Static).update(
                validation_problem(err, {"hours": "Hours"})
            )
            return
        self.dismiss(request)

    @on(Button.Pressed, "#no")
    def action_cancel(self) -> None:
        self.dismiss(None)


class SessionsPane(CorePane):
    """Open sessions (live countdowns, cost, node readings) and a history of closed ones."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "ssh", "SSH command"),
        Binding("d", "done", "Done"),
        Binding("e", "extend", "Extend"),
        Binding("x", "delete", "Force delete"),
        Binding("t", "timeline", "Timeline", key_display="t/enter"),
    ]
    ROW_ACTIONS: ClassVar[tuple[str, ...]] = ("ssh", "done", "extend", "delete")
    """Actions on an open session (not offered while the history is focused)."""

    @dataclass
    class Loaded(Message):
        """The open sessions as stored now, closed ones to move to the history, seed events."""

        open: list[SessionView]
        closed: list[SessionView]
        last_events: dict[str, str]
        checked: frozenset[str]
        """Session ids named by events that this load looked up."""
        full: bool

    @dataclass
    class Acted(Message):
        """An action succeeded: say so, and show the session as the core returned it."""

        note: str
        view: SessionView

    @dataclass
    class SshReady(Message):
        session_id: str
        command: str

    @dataclass
    class TimelineReady(Message):
        session_id: str
        events: list[AuditEvent]
        now: datetime

    @dataclass
    class Failed(Message):
        """A core call refused (a `UserError`): one sentence for a toast."""

        reason: str

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.table = SessionTable(id="sessions-table")
        self.history_table: Table[Text] = Table(id="sessions-history-table", cursor_type="row")
        self.history = Collapsible(
            self.history_table, title="History: no closed sessions", id="sessions-history"
        )
        self.empty = Static("Loading sessions…", id="sessions-empty")
        self.sessions: dict[str, SessionView] = {}
        """Open sessions by id, in table order."""
        self.closed: dict[str, SessionView] = {}
        """Sessions in the history table."""
        self._last_event: dict[str, str] = {}
        self._sample_at: dict[str, datetime | None] = {}
        self._mentioned: set[str] = set()
        self._pending_select: str | None = None
        self._loaded = False

    def compose(self) -> ComposeResult:
        yield self.empty
        yield self.table
        yield self.history

    def on_mount(self) -> None:
        for key, label, width in HISTORY_COLUMNS:
            self.history_table.add_column(label, key=key, width=width)
        self.app.theme_changed_signal.subscribe(self, self._repaint)

    # ------------------------------------------------------------------ hooks

    def core_ready(self, shopper: Shopper) -> None:
        super().core_ready(shopper)
        self.reload()

    def core_event(self, event: Event) -> None:
        session_id = event.session_id
        if session_id is not None:
            self._last_event[session_id] = event.message
            if session_id in self.sessions:
                self.table.show_cell(session_id, "event", (event.message, ""))
        if isinstance(event, SessionChanged):
            if session_id is not None:
                self._mentioned.add(session_id)
            self.reload()

    def tick(self, now: datetime) -> None:
        if self.shopper is None or not self.sessions:
            return
        sampled = False
        for session_id, view in self.sessions.items():
            for column, cell in ticking_cells(view, now).items():
                self.table.show_cell(session_id, column, cell)
            sample = self.shopper.node_sample(session_id)
            taken = sample[0] if sample else None
            if taken != self._sample_at.get(session_id):
                self._sample_at[session_id] = taken
                for column, cell in sample_cells(sample).items():
                    self.table.show_cell(session_id, column, cell)
                sampled = sampled or taken is not None
        if sampled:
            self.reload()  # the supervisor wrote its idle verdict along with the sample

    def focus_main(self) -> None:
        self.table.focus()

    def select(self, session_id: str) -> None:
        """Move the cursor to `session_id`; if it is not loaded yet, as soon as it arrives."""
        if session_id in self.sessions:
            self._pending_select = None
            self.table.move_cursor(row=self.table.get_row_index(session_id))
            self.table.focus()
        elif session_id in self.closed:
            self._pending_select = None
            self.history.collapsed = False
            self.history_table.move_cursor(row=self.history_table.get_row_index(session_id))
            self.history_table.focus()
        else:
            self._pending_select = session_id

    # ------------------------------------------------------------------ loading

    @work(exclusive=True, group="sessions-load")
    async def reload(self) -> None:
        """Read the open sessions, and the closed ones this pane has not shown as closed yet."""
        shopper = self.shopper
        assert shopper is not None
        mentioned = frozenset(self._mentioned)
        open_views = await shopper.session_views(open_only=True)
        open_ids = {view.session.id for view in open_views}
        full = not self._loaded
        closed: list[Session] = []
        if full:
            everything = await shopper.sessions()
            closed = sorted((s for s in everything if s.closed), key=ended_at, reverse=True)
            closed = closed[:HISTORY_LIMIT]
        else:
            for session_id in sorted((set(self.sessions) | mentioned) - open_ids):
                if session_id in self.closed:
                    continue
                try:
                    session = await shopper.session(session_id)
                except UserError:
                    continue
                if session.closed:
                    closed.append(session)
        last_events: dict[str, str] = {}
        for session_id in sorted(open_ids - set(self._last_event)):
            latest = await shopper.audit_log(session_id, limit=1)
            if latest:
                last_events[session_id] = latest[-1].message
        closed_views = [await shopper.view_of(session) for session in closed]
        self.post_message(self.Loaded(open_views, closed_views, last_events, mentioned, full))

    @on(Loaded)
    def loaded(self, message: Loaded) -> None:
        assert self.shopper is not None
        now = self.shopper.clock.now()
        self._loaded = self._loaded or message.full
        self._mentioned -= message.checked
        for session_id, text in message.last_events.items():
            self._last_event.setdefault(session_id, text)
        fresh = {view.session.id for view in message.open}
        gone = [session_id for session_id in self.sessions if session_id not in fresh]
        with self.app.batch_update():
            for session_id in gone:
                self._remove_open(session_id)
            for view in sorted(message.open, key=lambda v: (v.session.created_at, v.session.id)):
                if view.session.id in self.sessions:
                    self._update_open(view)
                else:
                    self._add_open(view, now)
            self._add_history(message.closed, now)
        unseen = {session_id for session_id in gone if session_id not in self.closed}
        if unseen:
            self._mentioned |= unseen
            self.reload()
        self.empty.update("No open sessions. Rent one on the Inventory pane (press 1).")
        self.empty.display = not self.sessions
        if self._pending_select is not None:
            self.select(self._pending_select)
        self.refresh_bindings()

    def _add_open(self, view: SessionView, now: datetime) -> None:
        session = view.session
        self.sessions[session.id] = view
        sample = self.shopper.node_sample(session.id) if self.shopper else None
        self._sample_at[session.id] = sample[0] if sample else None
        cells = {
            **static_cells(session),
            **ticking_cells(view, now),
            **sample_cells(sample),
            "event": (event, "") if (event := self._last_event.get(session.id)) else NONE,
        }
        self.table.add_session(session.id, cells)

    def _update_open(self, view: SessionView) -> None:
        assert self.shopper is not None
        session = view.session
        self.sessions[session.id] = view
        for column, cell in static_cells(session).items():
            self.table.show_cell(session.id, column, cell, fit=True)
        for column, cell in ticking_cells(view, self.shopper.clock.now()).items():
            self.table.show_cell(session.id, column, cell)

    def _remove_open(self, session_id: str) -> None:
        self.table.remove_session(session_id)
        del self.sessions[session_id]
        self._sample_at.pop(session_id, None)
        self._last_event.pop(session_id, None)

    def _add_history(self, closed: Iterable[SessionView], now: datetime) -> None:
        added = False
        for view in closed:
            if view.session.id in self.closed:
                continue
            self.closed[view.session.id] = view
            cells = history_cells(view, now)
            variables = self.app.theme_variables
            self.history_table.add_row(
                *(cell_text(cells[key], variables) for key, _, _ in HISTORY_COLUMNS),
                key=view.session.id,
            )
            added = True
        if not added:
            return
        for session_id in sorted(self.closed, key=lambda i: ended_at(self.closed[i].session))[
            : max(0, len(self.closed) - HISTORY_LIMIT)
        ]:
            self.history_table.remove_row(session_id)
            del self.closed[session_id]
        self.history_table.sort(
            "id", key=lambda i: ended_at(self.closed[str(i)].session), reverse=True
        )
        count = len(self.closed)
        self.history.title = f"History: {count} closed session{'s' if count != 1 else ''}"

    def _repaint(self, theme: Theme) -> None:
        """The theme changed: colour the history again from the new theme's variables (the
        open sessions' table does its own)."""
        if self.shopper is not None:
            now = self.shopper.clock.now()
            variables = self.app.theme_variables
            for session_id, view in self.closed.items():
                for column, cell in history_cells(view, now).items():
                    self.history_table.update_cell(session_id, column, cell_text(cell, variables))

    # ------------------------------------------------------------------ actions

    def _selected(self) -> tuple[str, bool] | None:
        """The session under the cursor of the focused table, and whether it is open."""
        history = self.history_table.has_focus
        table = self.history_table if history else self.table
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return (key, not history) if key is not None else None

    def selected_id(self) -> str | None:
        selected = self._selected()
        return None if selected is None else selected[0]

    def _selected_open(self) -> SessionView | None:
        selected = self._selected()
        if selected is None or not selected[1]:
            return None
        return self.sessions.get(selected[0])

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.ROW_ACTIONS:
            return True if self._selected_open() is not None else None
        if action == "timeline":
            return True if self._selected() is not None else None
        return True

    def action_ssh(self) -> None:
        if view := self._selected_open():
            self.fetch_ssh(view.session.id)

    def action_done(self) -> None:
        view = self._selected_open()
        if view is None:
            return
        session = view.session
        ending = (
            "stop its instance and keep the disk (the disk still bills)"
            if session.storage_policy == StoragePolicy.KEEP
            else "destroy its instance and everything on its disk"
        )
        self.app.push_screen(
            ConfirmScreen(
                f"Done with session {session.id}?",
                f"This will {ending} ({gpu_text(session)} on {session.provider}, for "
                f"{escape(session.consumer)}).",
                yes="Done",
            ),
            partial(self._done, session.id),
        )

    def _done(self, session_id: str, yes: bool | None) -> None:
        if yes:
            self.end(session_id, force=False)

    def action_extend(self) -> None:
        if (view := self._selected_open()) and self.shopper is not None:
            self.app.push_screen(
                ExtendScreen(view.session, self.shopper.clock.now()),
                partial(self._extend, view.session.id),
            )

    def _extend(self, session_id: str, request: ExtendRequest | None) -> None:
        if request is not None:
            self.extend(session_id, request)

    def action_delete(self) -> None:
        view = self._selected_open()
        if view is None or self.shopper is None:
            return
        session = view.session
        cost = fmt.spent(view.cost_at(self.shopper.clock.now()))
        body = (
            f"Destroy the instance of session {session.id} ({gpu_text(session)} on "
            f"{session.provider}, for {escape(session.consumer)}) now, whatever its storage "
            f"policy? Anything on its disk is lost.\n\nCost so far: {cost}."
        )
        self.app.push_screen(
            ConfirmScreen(f"Force delete session {session.id}?", body, yes="Delete", danger=True),
            partial(self._delete, session.id),
        )

    def _delete(self, session_id: str, yes: bool | None) -> None:
        if yes:
            self.end(session_id, force=True)

    def action_timeline(self) -> None:
        if selected := self._selected():
            self.fetch_timeline(selected[0])

    @on(DataTable.RowSelected)
    def row_chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.fetch_timeline(event.row_key.value)

    # ------------------------------------------------------------------ core calls

    @work(group="sessions-ssh", exclusive=True)
    async def fetch_ssh(self, session_id: str) -> None:
        assert self.shopper is not None
        try:
            command = (await self.shopper.session_view(session_id)).ssh_command
        except UserError as err:
            self.post_message(self.Failed(fmt.problem(err)))
            return
        if command is None:
            self.post_message(self.Failed(f"session {session_id} has no SSH address yet"))
            return
        self.post_message(self.SshReady(session_id, command))

    @work(group="sessions-act")
    async def end(self, session_id: str, *, force: bool) -> None:
        """Done (graceful) or force delete; the row follows through `SessionChanged`."""
        assert self.shopper is not None
        try:
            session = await (self.shopper.delete if force else self.shopper.done)(session_id)
        except UserError as err:
            self.post_message(self.Failed(fmt.problem(err)))
            return
        kept = "" if session.instance.absent else f" (instance {session.instance})"
        note = f"session {session.id}: {session.status}{kept}"
        self.post_message(self.Acted(note, await self.shopper.view_of(session)))

    @work(group="sessions-act")
    async def extend(self, session_id: str, request: ExtendRequest) -> None:
        assert self.shopper is not None
        try:
            session = await self.shopper.extend(session_id, request.hours, request.override_reason)
        except UserError as err:
            self.post_message(self.Failed(fmt.problem(err)))
            return
        now = self.shopper.clock.now()
        note = (
            f"session {session.id} now expires at {fmt.local_time(session.expires_at, now)} "
            f"(in {fmt.countdown(session.expires_at, now)}; hard max in "
            f"{fmt.countdown(session.hard_max_at, now)})"
        )
        self.post_message(self.Acted(note, await self.shopper.view_of(session)))

    @work(group="sessions-timeline", exclusive=True)
    async def fetch_timeline(self, session_id: str) -> None:
        assert self.shopper is not None
        events = await self.shopper.audit_log(session_id)
        self.post_message(self.TimelineReady(session_id, events, self.shopper.clock.now()))

    # ------------------------------------------------------------------ results

    @on(Acted)
    def acted(self, message: Acted) -> None:
        self.notify(escape(message.note))
        session = message.view.session
        if session.id in self.sessions and not session.closed:
            self._update_open(message.view)

    @on(SshReady)
    def show_ssh(self, message: SshReady) -> None:
        self.app.copy_to_clipboard(message.command)
        self.notify(f"ssh command for session {message.session_id} copied to the clipboard")
        self.app.push_screen(
            TextScreen(
                f"SSH to session {message.session_id}",
                f"{escape(message.command)}\n\n[dim]copied to the clipboard[/dim]",
            )
        )

    @on(TimelineReady)
    def show_timeline(self, message: TimelineReady) -> None:
        self.app.push_screen(
            TextScreen(
                f"Session {message.session_id}: timeline",
                timeline_text(message.session_id, message.events, message.now),
            )
        )

    @on(Failed)
    def failed(self, message: Failed) -> None:
        self.notify(escape(message.reason), severity="error", timeout=10)
