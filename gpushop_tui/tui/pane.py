"""What every cockpit pane shares: the core it shows, and the hooks the app drives.

The app owns the one `Shopper`, the event subscription and the one-second tick; it hands each
pane the core when it is open, every live core event, and every tick. Panes never await the
network in a handler: they start workers, and workers post results back as messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from textual.containers import Vertical
from textual.message import Message

from gpushop_tui.core import Event, Shopper


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


class CorePane(Vertical):
    """A pane over the core. Subclasses override the hooks they need."""

    shopper: Shopper | None = None
    read_only: bool = False
    """True while another process supervises: actions that change sessions still work (the
    database is shared), but nothing here acts on deadlines."""

    def core_ready(self, shopper: Shopper) -> None:
        """The core is open: remember it and load what the pane shows."""
        self.shopper = shopper

    def core_event(self, event: Event) -> None:
        """A live event (session changed, alert, inventory refreshed...)."""

    def tick(self, now: datetime) -> None:
        """Once a second, with the core clock's time: recompute countdowns and ages."""

    def focus_main(self) -> None:
        """Focus the pane's main widget (its table) when the pane is brought forward."""
        for widget in self.query("*"):
            if widget.focusable:
                widget.focus()
                return
