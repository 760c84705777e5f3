"""The gpushop cockpit: one Textual app over the same `Shopper` the other faces use.

The app opens the core in a worker, starts the supervisor (or becomes a viewer when another
process holds the lease), follows the core's event stream, and drives a one-second tick. Each
pane is a `CorePane`; the app hands it the core, every live event and every tick.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import ClassVar

from rich.markup import escape
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.theme import Theme
from textual.widgets import Footer, Header, Static, TabbedContent, TabPane
from textual.worker import Worker

from gpushop_tui import __version__, query
from gpushop_tui.config import Settings
from gpushop_tui.core import (
    EVENTS_LOST,
    Alert,
    CredentialStatus,
    Event,
    Facade,
    InventoryRefreshed,
    Lease,
    RemoteShopper,
    SessionChanged,
    Shopper,
    WebhookFailed,
    remote_token,
)
from gpushop_tui.errors import UserError
from gpushop_tui.models import CostKind, Severity
from gpushop_tui.tui import fmt
from gpushop_tui.tui.benchmarks import BenchmarksPane
from gpushop_tui.tui.costs import CostsPane
from gpushop_tui.tui.dialogs import ConfirmScreen, TextScreen
from gpushop_tui.tui.events import EventsPane
from gpushop_tui.tui.inventory import InventoryPane
from gpushop_tui.tui.pane import (
    CoreEvent,
    CorePane,
    ModelChosen,
    Remember,
    ShowSession,
    tell_failure,
)
from gpushop_tui.tui.prefs import load_prefs, prefs_file, save_prefs
from gpushop_tui.tui.sessions import SessionsPane
from gpushop_tui.tui.styles import styles_dir

CoreOpener = Callable[[AsyncExitStack, Settings], Awaitable[Facade]]
"""Opens the core for the app, registering its clean-up on the stack (tests inject their own)."""

PANES: tuple[tuple[str, str, type[CorePane]], ...] = (
    ("inventory", "Inventory", InventoryPane),
    ("sessions", "Sessions", SessionsPane),
    ("costs", "Costs", CostsPane),
    ("benchmarks", "Benchmarks", BenchmarksPane),
    ("events", "Events", EventsPane),
)
STYLESHEETS = ("app.tcss", "inventory.tcss", "sessions.tcss", "money.tcss")
TOAST_SEVERITY = {
    Severity.INFO: "information",
    Severity.WARNING: "warning",
    Severity.ERROR: "error",
    Severity.CRITICAL: "error",
}

log = logging.getLogger(__name__)


def supervisor_name(lease: Lease) -> str:
    """`pid 4242 on build-box`: the supervising process in words (its holder string is
    `host~digest:pid:token`, the digest telling apart containers that share a hostname)."""
    host = lease.holder.rsplit(":", 2)[0].split("~", 1)[0]
    return f"pid {lease.pid} on {host}"


async def open_core(stack: AsyncExitStack, settings: Settings) -> Facade:
    """The ordinary core over the user's data dir and credentials."""
    shopper = await Shopper.open(settings)
    stack.push_async_callback(shopper.aclose)
    return shopper


async def open_demo_core(stack: AsyncExitStack, settings: Settings) -> Facade:
    """The core over the built-in simulated marketplace, for as long as the app runs."""
    from gpushop_tui.demo import demo_marketplace

    demo = await stack.enter_async_context(demo_marketplace(settings))
    shopper = await Shopper.open(demo.settings, secrets=demo.secrets)
    stack.push_async_callback(shopper.aclose)
    return shopper


def open_remote_core(token: str | None = None) -> CoreOpener:
    """An opener of the remote core: the `gpushop --serve` that `settings.remote` names, with
    `token` (`--token`), else the one GPUSHOP_REMOTE_TOKEN, the keyring or the token file holds."""

    async def open_remote(stack: AsyncExitStack, settings: Settings) -> Facade:
        shopper = await RemoteShopper.open(settings, remote_token(settings, token))
        stack.push_async_callback(shopper.aclose)
        return shopper

    return open_remote


class GpushopApp(App[None]):
    """The cockpit. All I/O runs in workers; live data arrives as messages."""

    CSS_PATH: ClassVar[list[str]] = [str(styles_dir() / name) for name in STYLESHEETS]  # type: ignore[misc]
    TITLE = "gpushop"
    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(str(n), f"show_pane('{pane}')", title, show=False)
            for n, (pane, title, _) in enumerate(PANES, start=1)
        ),
        Binding("f1,question_mark", "help", "Help"),
        Binding("q", "request_quit", "Quit"),
    ]

    @dataclass
    class CoreReady(Message):
        """The core is open."""

        shopper: Facade

    @dataclass
    class CoreFailed(Message):
        """The core could not be opened; `reason` is one sentence for the user."""

        reason: str

    @dataclass
    class Supervising(Message):
        """Whether this app supervises, and if not, who does (`supervisor`: "pid N on HOST")."""

        acting: bool
        supervisor: str | None

    @dataclass
    class Burn(Message):
        """How many sessions bill right now, how many of those are stopped (billing storage
        only), and the total rate (USD/h)."""

        billing: int
        stopped: int
        usd_per_hour: float

    def __init__(
        self,
        settings: Settings,
        *,
        demo: bool = False,
        opener: CoreOpener | None = None,
        supervise: bool = True,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.demo = demo
        self.opener = opener or (open_demo_core if demo else open_core)
        self.supervise = supervise
        self.shopper: Facade | None = None
        self.acting: bool | None = None
        self.supervisor_holder: str | None = None
        """Who supervises when this app only views: "pid N on HOST"."""
        self.running = 0
        """Sessions billing compute (running or on their way), not stopped ones."""
        self.stopped = 0
        """Stopped sessions that still bill for their disk."""
        self.burn_usd_per_hour = 0.0
        self._resources = AsyncExitStack()
        self._frozen = False
        self._asking_quit = False
        self.opened = asyncio.Event()
        """Set once opening the core succeeded or failed."""
        self.prefs_path = prefs_file(settings)
        self.prefs = load_prefs(self.prefs_path)

    # ------------------------------------------------------------------ layout

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        tell_failure(self, event)

    def compose(self) -> ComposeResult:
        yield Header(icon="▣")
        yield Static("Opening gpushop…", id="startup")
        notice = Static(id="notice")
        notice.display = False
        yield notice
        with TabbedContent(initial=PANES[0][0], id="panes"):
            for pane_id, title, pane_type in PANES:
                with TabPane(title, id=pane_id):
                    yield pane_type(id=f"{pane_id}-pane")
        yield Footer()

    def on_mount(self) -> None:
        if self.prefs.theme in self.available_themes:
            self.theme = self.prefs.theme
        self.theme_changed_signal.subscribe(self, self.remember_theme)
        for pane in self.panes():
            pane.remembered(self.prefs)
        self.title = "gpushop DEMO" if self.demo else "gpushop"
        self.sub_title = "opening…"
        self.open_shopper()

    def format_title(self, title: str, sub_title: str) -> Content:
        """`gpushop — 2 running · …`: the space before the dash belongs to the title's run, so
        text read run by run (a screenshot, a screen reader) keeps the words apart."""
        if not sub_title:
            return Content(title)
        return Content.assemble(f"{title} ", Content(f"— {sub_title}").stylize("dim"))

    def remember_theme(self, theme: Theme) -> None:
        """Save a newly chosen theme, so the next start opens with it."""
        if theme.name != self.prefs.theme:
            self.remember({"theme": theme.name})

    @on(Remember)
    def remember_asked(self, message: Remember) -> None:
        self.remember(message.changes)

    def remember(self, changes: dict[str, str | None]) -> None:
        """Keep `changes` (fields of `Prefs`) for the next start; a toast if they cannot be."""
        self.prefs = load_prefs(self.prefs_path).model_copy(update=changes)
        try:
            save_prefs(self.prefs_path, self.prefs)
        except OSError as exc:
            self.notify(
                f"Not remembered for the next start: {self.prefs_path} cannot be written "
                f"({exc.strerror or exc}).",
                severity="warning",
            )

    def panes(self) -> Iterable[CorePane]:
        return self.query(CorePane)

    def focus_active_pane(self) -> None:
        """Keys go to the pane on screen, not the tab bar."""
        active = self.query_one("#panes", TabbedContent).active
        self.query_one(f"#{active}-pane", CorePane).focus_main()

    # ------------------------------------------------------------------ opening the core

    @work(exclusive=True, group="open", exit_on_error=False)
    async def open_shopper(self) -> None:
        try:
            shopper = await self.opener(self._resources, self.settings)
        except UserError as exc:
            self.post_message(self.CoreFailed(exc.message))
            return
        except Exception as exc:
            log.exception("the core did not open")
            self.post_message(
                self.CoreFailed(f"internal error ({type(exc).__name__}); details in the log file")
            )
            return
        self.post_message(self.CoreReady(shopper))

    @on(CoreReady)
    def core_ready(self, message: CoreReady) -> None:
        self.shopper = message.shopper
        self.query_one("#startup", Static).display = False
        if self.supervise:
            message.shopper.start_supervisor()
            self.watch_lease()
        self.follow_events()
        for pane in self.panes():
            pane.core_ready(message.shopper)
        self.refresh_burn()
        self.set_interval(1.0, self.tick)
        self.call_after_refresh(self.focus_active_pane)
        rows, problem = message.shopper.credentials()
        missing = [row.provider for row in rows if row.source is None]
        if len(missing) == len(rows):
            self.notify(
                "No provider is configured: add a key with 'gpushop keys set PROVIDER', "
                "or try 'gpushop --demo'.",
                severity="warning",
                timeout=15,
            )
        if problem and not self.demo and (len(missing) == len(rows) or self._keyring_used(rows)):
            self.show_notice(f"OS keyring: {problem}")
        self.opened.set()

    @staticmethod
    def _keyring_used(rows: list[CredentialStatus]) -> bool:
        """Whether the keyring matters: some credential is not from the environment. When
        every configured credential comes from env vars, a missing keyring changes nothing."""
        return not all(row.source == "env" for row in rows if row.source is not None)

    def show_notice(self, text: str) -> None:
        """A one-line warning under the header: it stays put and covers nothing (a toast would
        sit on the provider strip)."""
        notice = self.query_one("#notice", Static)
        notice.update(Content.styled(text, "$warning"))
        notice.display = True

    @on(CoreFailed)
    def core_failed(self, message: CoreFailed) -> None:
        startup = self.query_one("#startup", Static)
        startup.add_class("error")
        startup.update(f"gpushop cannot start: {escape(message.reason)}")
        self.query_one("#panes").display = False
        self.sub_title = "not started"
        self.notify(message.reason, severity="error", timeout=15)
        self.opened.set()

    async def on_unmount(self) -> None:
        await self._resources.aclose()

    # ------------------------------------------------------------------ live data

    @work(group="follow", exit_on_error=False)
    async def follow_events(self) -> None:
        """Forward every core event to the UI thread as a message, for as long as the app runs."""
        assert self.shopper is not None
        with self.shopper.subscribe() as subscription:
            async for event in subscription:
                self.post_message(CoreEvent(event))

    @on(CoreEvent)
    def core_event(self, message: CoreEvent) -> None:
        event = message.event
        for pane in self.panes():
            pane.core_event(event)
        if isinstance(event, SessionChanged):
            self.refresh_burn()
        if isinstance(event, Alert) and event.alert == EVENTS_LOST:
            for pane in self.panes():
                pane.resync()
            self.refresh_burn()
        if isinstance(event, InventoryRefreshed) and not self._frozen:
            # The core, the simulator (in demo) and the first menu live as long as the app:
            # keep them out of the collector, whose full passes would otherwise stall keys.
            gc.freeze()
            self._frozen = True
        if isinstance(event, Alert | WebhookFailed) or event.severity in (
            Severity.ERROR,
            Severity.CRITICAL,
        ):
            self.toast(event)

    def toast(self, event: Event) -> None:
        self.notify(
            event.message,
            title=event.session_id and f"session {event.session_id}",
            severity=TOAST_SEVERITY[event.severity],  # type: ignore[arg-type]
            timeout=8 if event.severity == Severity.INFO else 15,
        )

    @work(exclusive=True, group="burn", exit_on_error=False)
    async def refresh_burn(self) -> None:
        assert self.shopper is not None
        billing = await self.shopper.billing_now()
        stopped = sum(1 for billed in billing if billed.kind == CostKind.STORAGE)
        burn = sum(billed.usd_per_hour for billed in billing)
        self.post_message(self.Burn(len(billing), stopped, burn))

    @on(Burn)
    def show_burn(self, message: Burn) -> None:
        self.running = message.billing - message.stopped
        self.stopped = message.stopped
        self.burn_usd_per_hour = message.usd_per_hour
        self.show_status()

    @work(group="lease", exit_on_error=False)
    async def watch_lease(self) -> None:
        """Say once the supervisor has decided whether this app acts or only views."""
        assert self.shopper is not None
        holding, lease = await self.shopper.supervision()
        self.post_message(self.Supervising(holding, lease and supervisor_name(lease)))

    @on(Supervising)
    def show_supervising(self, message: Supervising) -> None:
        self.acting = message.acting
        self.supervisor_holder = message.supervisor
        for pane in self.panes():
            pane.read_only = not message.acting
        if not message.acting and not self.remote:
            supervisor = message.supervisor or "another process"
            self.notify(
                f"Viewer mode: {supervisor} supervises these sessions; "
                "this window shows them and can still act on them.",
                severity="warning",
                timeout=15,
            )
        self.show_status()

    def show_status(self) -> None:
        parts = [f"{self.running} running"]
        if self.stopped:
            parts.append(f"{self.stopped} stopped (disk)")
        parts.append(f"burn {fmt.usd(self.burn_usd_per_hour)}/h")
        if self.remote:
            parts.append(f"remote {self.remote} — the server supervises")
        elif self.acting is False:
            parts.append(f"viewer — supervised by {self.supervisor_holder or 'another process'}")
        self.sub_title = " · ".join(parts)

    @property
    def remote(self) -> str | None:
        """The `gpushop --serve` URL the cockpit works on; None on the local database."""
        return None if self.shopper is None else self.shopper.remote

    def tick(self) -> None:
        if self.shopper is None:
            return
        now: datetime = self.shopper.clock.now()
        for pane in self.panes():
            pane.tick(now)

    # ------------------------------------------------------------------ navigation

    @on(ShowSession)
    def show_session(self, message: ShowSession) -> None:
        self.action_show_pane("sessions")
        self.query_one(SessionsPane).select(message.session_id)

    @on(ModelChosen)
    def model_chosen(self, message: ModelChosen) -> None:
        self.query_one(InventoryPane).set_model(message.model)

    def action_show_pane(self, pane: str) -> None:
        self.query_one("#panes", TabbedContent).active = pane
        self.query_one(f"#{pane}-pane", CorePane).focus_main()

    def action_help(self) -> None:
        lines = [
            "[b]Panes  [/b]" + "   ".join(f"{n} {t}" for n, (_, t, _) in enumerate(PANES, 1)),
            "[b]Anywhere  [/b]ctrl+p command palette (theme, panes, refresh)   ? or F1 this help"
            "   q, ctrl+q or ctrl+c quit",
            "[b]Tables  [/b]j/k or ↑/↓ move   g/G or Home/End first/last row   y copy the row's id",
            "",
        ]
        for _, title, pane_type in PANES:
            keys = [
                f"{b.key_display or b.key} {b.description}"
                for b in pane_type.BINDINGS
                if isinstance(b, Binding) and b.description
            ]
            if keys:
                lines.append(f"[b]{title}  [/b]" + "   ".join(keys))
        lines += [
            "",
            "Quitting never destroys an instance: running sessions keep their expiry, idle stop "
            "and hard max, enforced by the next gpushop that supervises ('gpushop --serve', this "
            "app, or 'gpushop reconcile' from cron).",
            "",
            "[b]The filter (query language)[/b]",
            escape(inspect.cleandoc(query.__doc__ or "")),
        ]
        self.push_screen(TextScreen(f"gpushop {__version__} — keys", "\n".join(lines)))

    # ------------------------------------------------------------------ quitting

    async def action_quit(self) -> None:
        """`ctrl+q` and the palette's Quit ask as `q` does."""
        self.action_request_quit()

    def action_help_quit(self) -> None:
        """`ctrl+c` asks as `q` does (Textual's default only says which key quits)."""
        self.action_request_quit()

    def action_request_quit(self) -> None:
        """Every way out comes here: quit at once, or ask first while sessions bill."""
        if self._asking_quit:
            return
        if self.running == 0 and self.stopped == 0:
            self.exit()
            return
        supervised_elsewhere = self.acting is False
        stopped = f" ({self.stopped} stopped, keeping their disk)" if self.stopped else ""
        body = (
            f"{self.running} session(s) are running{stopped} and billing "
            f"{fmt.usd(self.burn_usd_per_hour)}/h. Quitting does not destroy them. "
            + (
                "Another gpushop supervises them."
                if supervised_elsewhere
                else "Their expiry, idle stop and hard max are enforced again as soon as gpushop "
                "supervises: reopen gpushop, keep 'gpushop --serve' running, or run "
                "'gpushop reconcile' from cron."
            )
        )
        self._asking_quit = True
        self.push_screen(ConfirmScreen("Quit gpushop?", body, yes="Quit"), self._quit_answered)

    def _quit_answered(self, yes: bool | None) -> None:
        self._asking_quit = False
        if yes:
            self.exit()

    # ------------------------------------------------------------------ commands

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for pane, title, _ in PANES:
            yield SystemCommand(
                f"Show {title}", f"Switch to the {title} pane", partial(self.action_show_pane, pane)
            )
        yield SystemCommand("Help", "Keys and what quitting does", self.action_help)
        if self.shopper is not None:
            yield SystemCommand(
                "Refresh offers",
                "Fetch every provider's offers again, in the background",
                self.shopper.refresh_offers_in_background,
            )


async def wait_ready(app: GpushopApp, timeout_s: float = 30) -> Facade:
    """Wait (for tests and the screenshot command) until `app` has opened its core."""
    async with asyncio.timeout(timeout_s):
        await app.opened.wait()
    if app.shopper is None:
        raise AssertionError("the core did not open")
    return app.shopper
