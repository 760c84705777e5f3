"""The Sessions pane's table of open sessions: one row per session, keyed by its id.

The pane computes what each cell shows (text and tone); the table writes a cell only when that
changed and its row is on screen (rows scrolled off are written when they come back), so the
one-second tick repaints just the countdowns and costs in view that moved, and each write
re-renders only its own cell (`TickingTable`). The idle column takes the width the others
leave, so the row ends at the table's edge. The tones take the theme's colours, and a
new theme colours every row again.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.events import Resize
from textual.theme import Theme
from textual.widgets.data_table import ColumnKey

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
    ("idle", "idle", None),
)
"""Key, header and width (None: fit the content; a number: that, or the widest text shown now,
e.g. a stopped session's status words). The first five fit in 80 columns (with no status
wider than its column); whose
session it is, where, and the idle verdict fit in 120 without a horizontal scrollbar. The hard
max, the instance, the node readings and the events are in the detail panel below."""
FILL = "idle"
"""The column that takes the width the others leave, `FILL_LEAST` at least."""
FILL_LEAST = 12


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
        """What each cell shows, or will show once its row scrolls into view."""
        self._pending: dict[str, set[str]] = {}
        """Columns of rows off screen whose new text is not written yet."""
        self._in_view: range | None = None
        """Indices of the rows on screen; None once a scroll, resize or row change moved them."""

    def on_mount(self) -> None:
        for key, label, width in OPEN_COLUMNS:
            self.add_column(label, key=key, width=width)
        self.app.theme_changed_signal.subscribe(self, self._repaint)

    def add_session(self, session_id: str, cells: dict[str, Cell]) -> None:
        """A row for a session, with a cell for every key of `OPEN_COLUMNS`."""
        self._shown[session_id] = cells
        self._in_view = None
        variables = self.app.theme_variables
        self.add_row(
            *(cell_text(cells[key], variables) for key, _, _ in OPEN_COLUMNS), key=session_id
        )
        self._fill()

    def show_cell(self, session_id: str, column: str, cell: Cell, *, fit: bool = False) -> None:
        """Rewrite one cell, only if what it shows changed (each write costs a repaint) and only
        once its row is on screen; `fit` widens a content-fitted column to the new text now."""
        shown = self._shown[session_id]
        if shown.get(column) == cell:
            return
        shown[column] = cell
        if not fit and not self._on_screen(session_id):
            self._pending.setdefault(session_id, set()).add(column)
            return
        self.update_cell(
            session_id, column, cell_text(cell, self.app.theme_variables), update_width=fit
        )
        if fit:
            self._fill()

    def _on_screen(self, session_id: str) -> bool:
        """Whether the session's row is in view (every row is one line high)."""
        if self._in_view is None:
            top = self.scroll_offset.y
            rows = self.size.height - (self.header_height if self.show_header else 0)
            self._in_view = range(top, top + max(0, rows))
        return self.get_row_index(session_id) in self._in_view

    def _write_pending(self) -> None:
        """Write the cells that changed while their rows were off screen and now are on it."""
        variables = self.app.theme_variables
        for session_id in [s for s in self._pending if self._on_screen(s)]:
            cells = self._shown[session_id]
            for column in self._pending.pop(session_id):
                self.update_cell(session_id, column, cell_text(cells[column], variables))

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._in_view = None
        self._write_pending()

    def on_resize(self, event: Resize) -> None:
        self._in_view = None
        self._fill()
        self._write_pending()

    def _fill(self) -> None:
        """Widen a fixed-width column to its widest text shown now (a stopped session's status
        words), back to its own width once none is wider; then widen `FILL` to what the other
        columns leave of the table's width, so the row ends at the table's edge (room kept for
        a vertical scrollbar): no horizontal scrolling while the other columns fit."""
        used: dict[str, int] = {}
        for key, label, width in OPEN_COLUMNS:
            if key == FILL:
                continue
            shown = [cell_len(cells[key][0]) for cells in self._shown.values()]
            if width is None:
                # a fitted column never narrows (DataTable keeps its widest cell ever)
                widest = self.columns[ColumnKey(key)].content_width
                used[key] = max([cell_len(label), widest, *shown])
            else:
                used[key] = max([width, *shown])
                self.set_column_width(key, used[key])
        room = self.size.width - self.styles.scrollbar_size_vertical
        if room <= 0:
            return
        padding = 2 * self.cell_padding
        room -= sum(width + padding for width in used.values())
        self.set_column_width(FILL, max(FILL_LEAST, room - padding))

    def remove_session(self, session_id: str) -> None:
        self.remove_row(session_id)
        self._shown.pop(session_id, None)
        self._pending.pop(session_id, None)
        self._in_view = None
        self._fill()
        self._write_pending()  # the rows below moved up, maybe into view

    def _repaint(self, theme: Theme) -> None:
        """The theme changed: colour every row again from the new theme's variables."""
        variables = self.app.theme_variables
        self._pending.clear()
        for session_id, cells in self._shown.items():
            for column, cell in cells.items():
                self.update_cell(session_id, column, cell_text(cell, variables))
