"""The Inventory pane (placeholder until it is built)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from gpushop_tui.tui.pane import CorePane


class InventoryPane(CorePane):
    """Inventory."""

    def compose(self) -> ComposeResult:
        yield Static("Inventory")

    def set_model(self, model: str | None) -> None:
        """Show $/M tokens for `model` (None: no model column)."""
