"""The Sessions pane's table of open sessions: one row per session, keyed by its id.

The pane computes what each cell shows (text and tone); the table writes a cell only when that
changed, so the one-second tick repaints just the countdowns and costs that moved, and each
write re-renders only its own cell (`TickingTable`). The tones take the theme's colours, and a
new theme colours every row again.
"""

from __future__ import annotations

from rich.text import Text
from textual.theme import Theme

from gpushop_tui.tui.widgets.datatable_cells import TickingTable

Cell = tuple[str, str]
"""What a cell shows: its text and its tone (`ok`, `warning`, `danger`, `muted` or ``)."""
NONE: Cell = ("—", "muted")
TONE_VARIABLES = {"ok": "text-success", "warning": "text-warning", "danger": "text-error"}
OPEN_COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("id", "session", None),
    ("gpu", "GPU", None),
    ("status", "status", 12),
    ("expires", "expires in", 15),
    ("cost", "cost", 10),
    ("consumer", "consumer", None),
    ("provider", "provider", None),
    ("idle", "idle", 24),
    ("hard_max", "hard max in", 15),
    ("instance", "instance", 10),
    ("util", "util", 5),
    ("memory", "memory", 13),
    ("temp", "temp", 5),
    ("event", "last event", 60),
)
"""Key, header and fixed width (None: fit the content). The first five fit in 80 columns; whose
session it is, where, and the idle verdict fit in 120; the hard max, the node readings and the
last event follow."""


def cell_text(cell: Cell, variables: dict[str, str]) -> Text:
    """A cell as drawn, its tone in the colours of the theme's `variables`."""
    text, tone = cell
    if tone == "muted":
        style = "dim"
    elif tone in TONE_VARIABLES:
        style = variables.get(TONE_VARIABLES[tone], "")
        style = f"bold {style}" if tone == "danger" else style
    else:
        style = ""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis", end="")


class SessionTable(TickingTable):
    """Open sessions, one row each, every cell rewritten only when what it shows changed."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: dict[str, dict[str, Cell]] = {}

    def on_mount(self) -> None:
        for key, label, width in OPEN_COLUMNS:
            self.add_column(label, key=key, width=width)
        self.app.theme_changed_signal.subscribe(self, self._repaint)

    def add_session(self, session_id: str, cells: dict[str, Cell]) -> None:
        """A row for a session, with a cell for every key of `OPEN_COLUMNS`."""
        self._shown[session_id] = cells
        variables = self.app.theme_variables
        self.add_row(
            *(cell_text(cells[key], variables) for key, _, _ in OPEN_COLUMNS), key=session_id
        )

    def show_cell(self, session_id: str, column: str, cell: Cell, *, fit: bool = False) -> None:
        """Rewrite one cell, only if what it shows changed (each write costs a repaint); `fit`
        widens a content-fitted column to the new text."""
        shown = self._shown[session_id]
        if shown.get(column) == cell:
            return
        shown[column] = cell
        self.update_cell(
            session_id, column, cell_text(cell, self.app.theme_variables), update_width=fit
        )

    def remove_session(self, session_id: str) -> None:
        self.remove_row(session_id)
        self._shown.pop(session_id, None)

    def _repaint(self, theme: Theme) -> None:
        """The theme changed: colour every row again from the new theme's variables."""
        variables = self.app.theme_variables
        for session_id, cells in self._shown.items():
            for column, cell in cells.items():
                self.update_cell(session_id, column, cell_text(cell, variables))
