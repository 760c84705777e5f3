"""What every cockpit pane shares: the core it shows, and the hooks the app drives.

The app owns the one `Shopper`, the event subscription and the one-second tick; it hands each
pane the core when it is open, every live core event, and every tick. Panes never await the
network in a handler: they start workers, and workers post results back as messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from rich.markup import escape
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.dom import DOMNode
from textual.message import Message
from textual.worker import Worker, WorkerState

from gpushop_tui.core import Event, Facade
from gpushop_tui.errors import UserError
from gpushop_tui.tui import fmt
from gpushop_tui.tui.prefs import Prefs

log = logging.getLogger(__name__)


def tell_failure(node: DOMNode, event: Worker.StateChanged) -> None:
    """A cockpit worker that failed, as a toast, never as the app's end: every worker runs with
    `exit_on_error=False`, and its node hands its state changes here. A refusal or an
    unreachable server (a `UserError`) is its one sentence; anything else says where the
    details are."""
    if event.state != WorkerState.ERROR:
        return
    error = event.worker.error
    if isinstance(error, UserError):
        node.notify(escape(fmt.problem(error)), severity="error", timeout=15)
        return
    log.error("cockpit task %s failed", event.worker.name, exc_info=error)
    node.notify(
        f"internal error ({type(error).__name__}); details in the log file",
        severity="error",
        timeout=15,
    )


@dataclass
class CoreEvent(Message):
    """A live event from the core's event bus, delivered to the app and then to every pane."""

    event: Event


@dataclass
class ShowSession(Message):
    """Ask the app to bring the sessions pane forward with this session selected."""

    session_id: str


@dataclass
class ModelChosen(Message):
    """The model whose $/M tokens the inventory shows was chosen (on the benchmarks pane)."""

    model: str | None


class Remember(Message):
    """Ask the app to keep these preferences for the next start (fields of `Prefs`)."""

    def __init__(self, **changes: str | None) -> None:
        super().__init__()
        self.changes = changes


class CorePane(Vertical):
    """A pane over the core. Subclasses override the hooks they need."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("y", "copy_id", "Copy id", show=False)]

    shopper: Facade | None = None
    read_only: bool = False
    """True while another process supervises: actions that change sessions still work (the
    database is shared), but nothing here acts on deadlines."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        tell_failure(self, event)

    def remembered(self, prefs: Prefs) -> None:
        """Take back what the cockpit remembered from the last run (before the core opens)."""

    def core_ready(self, shopper: Facade) -> None:
        """The core is open: remember it and load what the pane shows."""
        self.shopper = shopper

    def core_event(self, event: Event) -> None:
        """A live event (session changed, alert, inventory refreshed...)."""

    def resync(self) -> None:
        """Live events were lost: read again all the pane shows."""
        if self.shopper is not None:
            self.core_ready(self.shopper)

    def tick(self, now: datetime) -> None:
        """Once a second, with the core clock's time: recompute countdowns and ages."""

    def selected_id(self) -> str | None:
        """The id of the row under the cursor (an offer's, a session's), for `y` to copy."""
        return None

    def action_copy_id(self) -> None:
        """Copy the selected row's id to the clipboard (OSC 52: works over SSH and in tmux)."""
        copied = self.selected_id()
        if copied is None:
            self.notify("No row with an id is selected.")
            return
        self.app.copy_to_clipboard(copied)
        self.notify(f"Copied {copied}")

    def focus_main(self) -> None:
        """Focus the pane's main widget (its table) when the pane is brought forward."""
        for widget in self.query("*"):
            if widget.focusable:
                widget.focus()
                return
