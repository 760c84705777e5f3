"""The Events pane (placeholder until it is built)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from gpushop_tui.tui.pane import CorePane


class EventsPane(CorePane):
    """Events."""

    def compose(self) -> ComposeResult:
        yield Static("Events")
