"""The Sessions pane: every open session with its deadlines, cost and node, and what to do next.

Rows are keyed by session id and diffed on every reload (a `SessionChanged` event, a new node
sample), which reads each session's `SessionView` from the core: rows are added, changed cells
rewritten, closed sessions moved to the history below. The one-second tick rewrites only the
countdown and cost cells whose text changed, computed from the stored absolute deadlines and the
view's `cost_at`, so a skipped tick never drifts; the open sessions' table
(`SessionTable`) writes only those cells. Below the table, the detail panel (`SessionDetail`)
follows the cursor: the ssh command, cost so far and per hour, the deadlines with what each
one does to the session and who enforces it, the node's readings and the last events. `p`
stops a running session and keeps its disk, `P` starts a stopped one again, each after a
confirmation and only where the provider can. Every core call runs in a worker that posts a
typed message back; handlers only touch widgets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, ClassVar, cast

from pydantic import ValidationError
from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.message import Message
from textual.screen import ModalScreen
from textual.theme import Theme
from textual.widgets import Button, Collapsible, DataTable, Input, Static

from gpushop_tui.core import (
    ACTIVE,
    EXPIRY_WARNING,
    HARD_MAX_WARNING,
    Event,
    Facade,
    NodeSample,
    PowerStretch,
    SessionChanged,
    SessionView,
)
from gpushop_tui.errors import UserError
from gpushop_tui.models import (
    MAX_RESERVATION_HOURS,
    AuditEvent,
    CostKind,
    ExtendRequest,
    IdleAction,
    InstanceState,
    Session,
    StoragePolicy,
    validation_problem,
)
from gpushop_tui.models import SessionStatus as Status
from gpushop_tui.tui import fmt
from gpushop_tui.tui.dialogs import ConfirmScreen, TextScreen
from gpushop_tui.tui.pane import CorePane
from gpushop_tui.tui.widgets.session_detail import SessionDetail, labelled
from gpushop_tui.tui.widgets.session_table import NONE, Cell, SessionTable, cell_text
from gpushop_tui.tui.widgets.table import Table

if TYPE_CHECKING:
    from gpushop_tui.tui.app import GpushopApp

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
RECENT_EVENTS = 3
"""How many of the selected session's audit events the detail panel lists, newest last."""
DETAIL_MIN_HEIGHT = 30
"""A terminal this tall shows the detail panel from the start; a shorter one leaves the rows
to the table until `i` asks for the panel."""
STATUS_TONE = {
    Status.RUNNING: "ok",
    Status.STOPPING: "warning",
    Status.STOPPED: "muted",
    Status.ENDED: "muted",
    Status.FAILED: "danger",
}
NODE_WATCHDOG = "node watchdog: "
"""How the core's kill paths name the node's own watchdog (the supervisor's path the panel says
from the app's live lease instead)."""
NOT_ARMED = f"{NODE_WATCHDOG}not "
"""A node watchdog kill path that says the watchdog is not armed as it should be."""
BY = "operator (tui)"
"""Who asked, in the audit log, for a stop or a start from this pane."""


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


def expiry_cell(view: SessionView, now: datetime) -> Cell:
    """An active session's reservation, or when a stopped one's kept disk is destroyed (a
    stopping one is already ending)."""
    session = view.session
    if session.status in ACTIVE:
        return deadline_cell(session.expires_at, now, EXPIRY_WARNING)
    deadline = view.next_deadline
    if deadline is not None and deadline.what == "disk kept until":
        return deadline_cell(deadline.at, now, deadline.warn_before)
    return NONE


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


def static_cells(view: SessionView) -> dict[str, Cell]:
    """The cells that change only when the stored session does."""
    session = view.session
    return {
        "id": (session.id, ""),
        "gpu": (gpu_text(session), ""),
        "status": (view.status_words, STATUS_TONE.get(session.status, "")),
        "consumer": (session.consumer, ""),
        "provider": (session.provider, ""),
        "idle": idle_cell(session),
    }


def ticking_cells(view: SessionView, now: datetime) -> dict[str, Cell]:
    return {"expires": expiry_cell(view, now), "cost": cost_cell(view, now)}


def instance_cell(session: Session) -> Cell:
    tone = {InstanceState.LIVE: "ok", InstanceState.UNKNOWN: "warning"}.get(session.instance, "")
    return session.instance.value, tone


TUNNELS = "tunnels"
"""The worker group of the tunnels this pane holds open (one worker per session, by its id)."""


def workload_lines(session: Session, tunnels: dict[str, str]) -> list[tuple[str, Text | str]]:
    """The panel's workload and endpoint lines: what runs, where it stands, how to reach it."""
    spec = session.workload_spec
    if spec is None:
        return []
    what = f"{spec.kind} {spec.model}" if spec.model else f"{spec.kind}: {spec.command}"
    lines: list[tuple[str, Text | str]] = [
        ("workload", f"{what} · {session.workload_phase or 'not started'}")
    ]
    if session.endpoint is not None:
        local = tunnels.get(session.id)
        lines.append(
            (
                "endpoint",
                f"{local} (tunnel open; o closes it)"
                if local
                else f"{session.endpoint} on the node · o opens a tunnel",
            )
        )
    return lines


def done_outcome(session: Session) -> str:
    """What `done` (the user's, the expiry's or the idle stop's) does to this session."""
    if session.status == Status.STOPPED:
        return "destroy its instance and the kept disk, with everything on it"
    if session.storage_policy == StoragePolicy.KEEP:
        return "stop its instance and keep the disk (the disk still bills)"
    return "destroy its instance and everything on its disk"


def idle_outcome(session: Session) -> str:
    """What the idle stop does to this session: stop it and keep the disk, or `done`."""
    if session.idle_action == IdleAction.STOP:
        return "stop it and keep the disk (the disk still bills)"
    return "done, as at expiry"


def ended_at(session: Session) -> datetime:
    return session.instance_gone_at or session.state_entered_at


def how_it_ended(view: SessionView) -> str:
    """A closed session's status words (`ended (destroyed)`, `failed`) with the reason."""
    error = view.session.error
    return view.status_words + (f": {error}" if error else "")


def history_cells(view: SessionView, now: datetime) -> dict[str, Cell]:
    session = view.session
    ended = how_it_ended(view)
    return {
        "id": (session.id, ""),
        "gpu": (gpu_text(session), ""),
        "consumer": (session.consumer, ""),
        "ended": (ended, "danger" if session.status == Status.FAILED else ""),
        "cost": (fmt.spent(view.cost_at(now)), ""),
        "at": (fmt.local_time(ended_at(session), now), "muted"),
    }


def event_line(event: AuditEvent, now: datetime) -> str:
    """`09:41:00  info     message`: one audit event at its local time."""
    return f"{fmt.local_time(event.at, now)}  {event.severity.value:<8} {event.message}"


def timeline_text(session_id: str, events: list[AuditEvent], now: datetime) -> str:
    """One line per audit event, oldest first, local times (markup-safe)."""
    if not events:
        return f"No events recorded for session {session_id}."
    return "\n".join(escape(event_line(e, now)) for e in events)


def supervisor_words(acting: bool | None, holder: str | None) -> str:
    """Who enforces the deadlines below: this app, the process holding the lease, or the next."""
    if acting:
        return "this gpushop supervises: it acts on every deadline here"
    if acting is False:
        return f"{holder or 'another gpushop'} supervises: it acts on every deadline here"
    return "the gpushop that supervises ('gpushop --serve', the cockpit, 'gpushop reconcile')"


def stretch_line(stretch: PowerStretch, now: datetime) -> str:
    """`running 09:00:00 to 11:00:00 · 2h 00m · $0.350/h · $0.7000`: one power cycle's stretch."""
    word = "running" if stretch.kind == CostKind.COMPUTE else "stopped"
    end = "now" if stretch.ended_at is None else fmt.local_time(stretch.ended_at, now)
    return (
        f"{word:<7} {fmt.local_time(stretch.started_at, now)} to {end} · "
        f"{fmt.span(stretch.hours * 3600)} · {fmt.rate(stretch.rate_per_hour)} · "
        f"{fmt.spent(stretch.cost)}"
    )


def money_text(view: SessionView, now: datetime) -> Text:
    """Its status in words, its cost so far and now, and (once it was stopped) each running
    and stopped stretch."""
    spent, rate = fmt.spent(view.cost_at(now)), fmt.rate(view.burn_usd_per_hour)
    lines: list[tuple[str, Text | str]] = [
        ("status", view.status_words),
        ("cost", f"{spent} so far · {rate} now"),
    ]
    stretches = view.cycles(now)
    if len(stretches) > 1:
        lines += [
            ("cycles" if n == 0 else "", stretch_line(stretch, now))
            for n, stretch in enumerate(stretches)
        ]
    return labelled(lines)


def deadlines_text(
    view: SessionView, now: datetime, variables: dict[str, str], supervisor: str
) -> Text:
    """Each deadline the supervisor enforces on this session, when, and what it does then; and
    what ends the instance if nobody does."""
    session = view.session
    done = f"done: {done_outcome(session)}"
    lines: list[tuple[str, Text | str]] = []
    if session.status in (Status.PROVISIONING, Status.STARTING, Status.RUNNING):
        expiry = cell_text(expiry_cell(view, now), variables)
        at = fmt.local_time(session.expires_at, now)
        lines.append(("expiry", expiry.append(f" (at {at}) · then {done}")))
    if session.status == Status.STOPPED and view.keep_until is not None:
        kept = cell_text(expiry_cell(view, now), variables)
        at = fmt.local_time(view.keep_until, now)
        then = f" (until {at}) · then its disk is destroyed, unless started again (P)"
        lines.append(("disk kept", kept.append(then)))
    elif session.status == Status.RUNNING and session.idle_timeout_min > 0:
        verdict = session.idle_reason or "not sampled yet"
        idle = f"after {session.idle_timeout_min:g} min idle · then {idle_outcome(session)} · now: "
        lines.append(("idle stop", idle + verdict))
    elif session.idle_timeout_min == 0:
        lines.append(("idle stop", Text("off", style="dim")))
    if not session.instance.absent and session.status != Status.STOPPED:
        hard_max = cell_text(hard_max_cell(session, now), variables)
        at = fmt.local_time(session.hard_max_at, now)
        then = f" (at {at}) · then force delete, whatever the storage policy"
        lines.append(("hard max", hard_max.append(then)))
    lines += kill_path_lines(view, supervisor, variables)
    return labelled(lines)


def kill_path_lines(
    view: SessionView, supervisor: str, variables: dict[str, str]
) -> list[tuple[str, Text | str]]:
    """What ends the instance if nobody does, one line each: who supervises (as this app knows
    it now, fresher than the view's lease), then the node's own watchdog in the core's words, a
    watchdog not armed as it should be in the warning colour."""
    node = [path for path in view.kill_paths if path.startswith(NODE_WATCHDOG)]
    lines: list[Text | str] = [supervisor]
    lines += [
        cell_text((path, "warning"), variables) if path.startswith(NOT_ARMED) else path
        for path in node
    ]
    return [("kill path" if n == 0 else "", line) for n, line in enumerate(lines)]


def node_text(
    session: Session, sample: tuple[datetime, NodeSample] | None, variables: dict[str, str]
) -> Text:
    """The instance's state and the supervisor's latest GPU readings of its node."""
    readings = sample_cells(sample)
    value = cell_text(instance_cell(session), variables)
    for label, column in (("GPU", "util"), ("memory", "memory"), ("temp", "temp")):
        value.append(f" · {label} ").append(cell_text(readings[column], variables))
    return labelled([("instance", value)])


def events_text(events: list[AuditEvent], now: datetime) -> Text:
    if not events:
        return labelled([("events", Text("none recorded yet", style="dim"))])
    return labelled(
        (("events" if n == 0 else "", event_line(e, now)) for n, e in enumerate(events))
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
        Binding("s", "ssh", "SSH", tooltip="Show the ssh command and copy it"),
        Binding("d", "done", "Done"),
        Binding("e", "extend", "Extend"),
        Binding("x", "delete", "Force delete"),
        Binding("p", "stop", "Stop", tooltip="Power off and keep the disk (it still bills)"),
        Binding("P", "start", "Start", tooltip="Power a stopped session on again"),
        Binding("t", "timeline", "Timeline", key_display="t/enter"),
        Binding("i", "toggle_detail", "Details"),
        Binding("o", "tunnel", "Tunnel"),
    ]
    ROW_ACTIONS: ClassVar[tuple[str, ...]] = ("ssh", "done", "extend", "delete")
    """Actions on an open session (not offered while the history is focused)."""
    POWER: ClassVar[dict[str, Status]] = {"stop": Status.RUNNING, "start": Status.STOPPED}
    """Stop and start, and the status each is offered in (where the provider can stop)."""

    @dataclass
    class Loaded(Message):
        """The open sessions as stored now, and closed ones to move to the history."""

        open: list[SessionView]
        closed: list[SessionView]
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
    class RecentEvents(Message):
        """The last few audit events of the session the detail panel shows."""

        session_id: str
        events: list[AuditEvent]

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
        self.detail = SessionDetail(id="sessions-detail")
        self.detail.display = False
        self.sessions: dict[str, SessionView] = {}
        """Open sessions by id, in table order."""
        self.closed: dict[str, SessionView] = {}
        """Sessions in the history table."""
        self._detail_id: str | None = None
        """The open session the detail panel shows (the one under the table's cursor)."""
        self._detail_wanted: bool | None = None
        """Whether the user asked for the panel (`i`); None: shown when the terminal is tall."""
        self._recent: list[AuditEvent] = []
        self.tunnels: dict[str, str] = {}
        """Sessions whose endpoint this cockpit forwards now: the local base URL of each."""
        self._sample_at: dict[str, datetime | None] = {}
        self._mentioned: set[str] = set()
        self._pending_select: str | None = None
        self._loaded = False

    def compose(self) -> ComposeResult:
        yield self.empty
        yield self.table
        yield self.detail
        yield self.history

    def on_mount(self) -> None:
        for key, label, width in HISTORY_COLUMNS:
            self.history_table.add_column(label, key=key, width=width)
        self.app.theme_changed_signal.subscribe(self, self._repaint)

    # ------------------------------------------------------------------ hooks

    def core_ready(self, shopper: Facade) -> None:
        super().core_ready(shopper)
        self.reload()

    def core_event(self, event: Event) -> None:
        session_id = event.session_id
        if session_id is not None and session_id == self._detail_id:
            self.fetch_recent(session_id)
        if isinstance(event, SessionChanged):
            if session_id is not None:
                self._mentioned.add(session_id)
            self.reload()

    def tick(self, now: datetime) -> None:
        if self.shopper is None or not self.sessions:
            return
        sampled = False
        show_cell = self.table.show_cell
        node_sample = self.shopper.node_sample
        for session_id, view in self.sessions.items():
            for column, cell in ticking_cells(view, now).items():
                show_cell(session_id, column, cell)
            sample = node_sample(session_id)
            taken = sample[0] if sample else None
            if taken != self._sample_at.get(session_id):
                self._sample_at[session_id] = taken
                sampled = sampled or taken is not None
        self._show_detail(now, full=sampled)
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

    @work(exclusive=True, group="sessions-load", exit_on_error=False)
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
        closed_views = [await shopper.view_of(session) for session in closed]
        self.post_message(self.Loaded(open_views, closed_views, mentioned, full))

    @on(Loaded)
    def loaded(self, message: Loaded) -> None:
        assert self.shopper is not None
        now = self.shopper.clock.now()
        self._loaded = self._loaded or message.full
        self._mentioned -= message.checked
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
        self._follow_cursor()
        self.refresh_bindings()

    def _add_open(self, view: SessionView, now: datetime) -> None:
        session = view.session
        self.sessions[session.id] = view
        sample = self.shopper.node_sample(session.id) if self.shopper else None
        self._sample_at[session.id] = sample[0] if sample else None
        self.table.add_session(session.id, {**static_cells(view), **ticking_cells(view, now)})

    def _update_open(self, view: SessionView) -> None:
        assert self.shopper is not None
        session = view.session
        self.sessions[session.id] = view
        for column, cell in static_cells(view).items():
            self.table.show_cell(session.id, column, cell, fit=True)
        now = self.shopper.clock.now()
        for column, cell in ticking_cells(view, now).items():
            self.table.show_cell(session.id, column, cell)
        if session.id == self._detail_id:
            self._show_detail(now, full=True)

    def _remove_open(self, session_id: str) -> None:
        self.table.remove_session(session_id)
        del self.sessions[session_id]
        self._sample_at.pop(session_id, None)

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

    # ------------------------------------------------------------------ detail panel

    @on(DataTable.RowHighlighted, "#sessions-table")
    def cursor_moved(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._follow_cursor()
        self.refresh_bindings()  # stop and start depend on the session under the cursor

    def _follow_cursor(self) -> None:
        """Point the detail panel at the open session under the table's cursor."""
        session_id: str | None = None
        if self.table.row_count:
            row = self.table.coordinate_to_cell_key(self.table.cursor_coordinate).row_key
            session_id = row.value
        self.detail.display = session_id is not None and self._detail_shown()
        if session_id == self._detail_id:
            return
        self._detail_id = session_id
        self._recent = []
        if session_id is None or self.shopper is None:
            return
        self.detail.border_title = f"session {session_id}"
        self._show_detail(self.shopper.clock.now(), full=True)
        self.fetch_recent(session_id)

    def _detail_shown(self) -> bool:
        if self._detail_wanted is not None:
            return self._detail_wanted
        return self.app.size.height >= DETAIL_MIN_HEIGHT

    def _show_detail(self, now: datetime, *, full: bool) -> None:
        """Rewrite the panel's ticking sections (cost, deadlines), or all of them if `full`."""
        view = self.sessions.get(self._detail_id or "")
        if view is None or self.shopper is None:
            return
        detail = self.detail
        variables = self.app.theme_variables
        app = cast("GpushopApp", self.app)
        supervisor = supervisor_words(app.acting, app.supervisor_holder)
        detail.money.show(money_text(view, now))
        detail.deadlines.show(deadlines_text(view, now, variables, supervisor))
        if full:
            session = view.session
            ssh = view.ssh_command or Text("no SSH address yet", style="dim")
            detail.access.show(labelled([("ssh", ssh), *workload_lines(session, self.tunnels)]))
            sample = self.shopper.node_sample(session.id)
            detail.node.show(node_text(session, sample, variables))
            detail.events.show(events_text(self._recent, now))

    def on_resize(self, event: Resize) -> None:
        self.detail.display = self._detail_id is not None and self._detail_shown()

    def action_toggle_detail(self) -> None:
        """Show or hide the detail panel (it starts hidden on a short terminal)."""
        self._detail_wanted = not self.detail.display
        self.detail.display = self._detail_id is not None and self._detail_wanted

    def _repaint(self, theme: Theme) -> None:
        """The theme changed: colour the history again from the new theme's variables (the
        open sessions' table does its own), and the detail panel."""
        if self.shopper is not None:
            now = self.shopper.clock.now()
            self._show_detail(now, full=True)
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
        if action == "extend":
            view = self._selected_open()
            return True if view is not None and view.session.status in ACTIVE else None
        if action in self.ROW_ACTIONS:
            return True if self._selected_open() is not None else None
        if action == "timeline":
            return True if self._selected() is not None else None
        if action == "tunnel":
            view = self._selected_open()
            return True if view is not None and view.session.endpoint is not None else None
        if action in self.POWER:
            # hidden, not dimmed, where it does not apply: the footer has room for one of them
            view = self._selected_open()
            return view is not None and self._can_power(view, action)
        return True

    def _can_power(self, view: SessionView, action: str) -> bool:
        """Whether `action` (stop or start) applies to the session: its status, and a provider
        that stops an instance and keeps its disk."""
        session = view.session
        if session.status != self.POWER[action] or self.shopper is None:
            return False
        return self.shopper.provider_info(session.provider).capabilities.can_stop

    def action_ssh(self) -> None:
        if view := self._selected_open():
            self.fetch_ssh(view.session.id)

    def action_done(self) -> None:
        view = self._selected_open()
        if view is None:
            return
        session = view.session
        self.app.push_screen(
            ConfirmScreen(
                f"Done with session {session.id}?",
                f"This will {done_outcome(session)} ({gpu_text(session)} on "
                f"{session.provider}, for {escape(session.consumer)}).",
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

    def action_stop(self) -> None:
        """Ask, then power the session off and keep its disk (`p`)."""
        view = self._selected_open()
        if view is None or self.shopper is None or not self._can_power(view, "stop"):
            return
        session = view.session
        days = view.keep_days or 0.0
        now = self.shopper.clock.now()
        until = fmt.local_time(now + timedelta(days=days), now)
        disk = (
            f"about ${view.stopped_usd_per_day:.2f}/day"
            if view.stopped_usd_per_day is not None
            else "the provider's disk rate"
        )
        body = (
            f"{gpu_text(session)} on {session.provider}, for {escape(session.consumer)}. "
            f"Its GPU stops billing; its disk stays, billing {disk}, for "
            f"{days:g} days (until {until}) unless you start it again (P). Then the disk is "
            "destroyed with everything on it."
        )
        self.app.push_screen(
            ConfirmScreen(f"Stop session {session.id}?", body, yes="Stop"),
            partial(self._power, session.id, "stop"),
        )

    def action_start(self) -> None:
        """Ask, then power a stopped session on again for a new reservation (`P`)."""
        view = self._selected_open()
        if view is None or not self._can_power(view, "start"):
            return
        session = view.session
        health = "the workload to be healthy" if session.workload_spec else "the GPUs to check out"
        body = (
            f"{gpu_text(session)} on {session.provider}, for {escape(session.consumer)}. "
            f"Its GPU bills again at {fmt.rate(session.price_per_hour)} for a new reservation "
            f"of {session.reservation_hours:g} h, with its hard max, counted from now. gpushop "
            f"waits for the instance to run, SSH to answer and {health}; if the GPU cannot be "
            "had back, the session stays stopped and keeps its disk."
        )
        self.app.push_screen(
            ConfirmScreen(f"Start session {session.id}?", body, yes="Start"),
            partial(self._power, session.id, "start"),
        )

    def _power(self, session_id: str, action: str, yes: bool | None) -> None:
        if yes:
            self.power(session_id, action)

    def action_timeline(self) -> None:
        if selected := self._selected():
            self.fetch_timeline(selected[0])

    @on(DataTable.RowSelected)
    def row_chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.fetch_timeline(event.row_key.value)

    # ------------------------------------------------------------------ core calls

    @work(group="sessions-ssh", exclusive=True, exit_on_error=False)
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

    def action_tunnel(self) -> None:
        """Open a tunnel to the selected session's endpoint, or close the one that is open."""
        view = self._selected_open()
        if view is None or self.shopper is None:
            return
        session_id = view.session.id
        held = [w for w in self.workers if w.group == TUNNELS and w.name == session_id]
        if held:
            for worker in held:
                worker.cancel()
            return
        self.run_worker(
            self._hold_tunnel(session_id), name=session_id, group=TUNNELS, exit_on_error=False
        )

    async def _hold_tunnel(self, session_id: str) -> None:
        """Keep the tunnel open until closed (`o` again), the session ends or the app quits."""
        assert self.shopper is not None
        try:
            async with self.shopper.tunnel(session_id) as tunnel:
                self.tunnels[session_id] = tunnel.url
                self.notify(
                    f"Tunnel open: session {session_id}'s endpoint answers at {tunnel.url}; "
                    "o closes it."
                )
                self._show_detail(self.shopper.now(), full=True)
                await tunnel.closed()
        except UserError as err:
            self.post_message(self.Failed(fmt.problem(err)))
        finally:
            if self.tunnels.pop(session_id, None) is not None:
                self.notify(f"Tunnel to session {session_id} closed.")
                self._show_detail(self.shopper.now(), full=True)

    @work(group="sessions-act", exit_on_error=False)
    async def end(self, session_id: str, *, force: bool) -> None:
        """Done (graceful) or force delete; the row follows through `SessionChanged`."""
        assert self.shopper is not None
        try:
            session = await (self.shopper.delete if force else self.shopper.done)(session_id)
        except UserError as err:
            self.post_message(self.Failed(fmt.problem(err)))
            return
        view = await self.shopper.view_of(session)
        kept = "" if session.instance.absent else f" (instance {session.instance})"
        self.post_message(self.Acted(f"session {session.id}: {view.status_words}{kept}", view))

    @work(group="sessions-act", exit_on_error=False)
    async def power(self, session_id: str, action: str) -> None:
        """Stop (keep the disk) or start; the row follows through `SessionChanged`."""
        assert self.shopper is not None
        call = self.shopper.stop if action == "stop" else self.shopper.start
        try:
            session = await call(session_id, by=BY)
        except UserError as err:
            self.post_message(self.Failed(fmt.problem(err)))
            return
        view = await self.shopper.view_of(session)
        self.post_message(self.Acted(f"session {session.id}: {view.status_words}", view))

    @work(group="sessions-act", exit_on_error=False)
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

    @work(group="sessions-recent", exclusive=True, exit_on_error=False)
    async def fetch_recent(self, session_id: str) -> None:
        assert self.shopper is not None
        events = await self.shopper.audit_log(session_id, limit=RECENT_EVENTS)
        self.post_message(self.RecentEvents(session_id, events))

    @work(group="sessions-timeline", exclusive=True, exit_on_error=False)
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

    @on(RecentEvents)
    def show_recent(self, message: RecentEvents) -> None:
        if message.session_id == self._detail_id and self.shopper is not None:
            self._recent = message.events
            self._show_detail(self.shopper.clock.now(), full=True)

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
