"""The Sessions pane (placeholder until it is built)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from gpushop_tui.tui.pane import CorePane


class SessionsPane(CorePane):
    """Sessions."""

    def compose(self) -> ComposeResult:
        yield Static("Sessions")

    def select(self, session_id: str) -> None:
        """Move the cursor to `session_id`."""
