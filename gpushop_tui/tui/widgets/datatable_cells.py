"""The one place the TUI leans on `DataTable` internals: a per-cell render cache.

Textual is pinned to 8.2.x (`textual>=8.2.8,<8.3` in pyproject.toml) because of this module.
`TickingTable` relies on these private parts of Textual 8.2's `DataTable`:

- `_render_cell(row_index, column_index, base_style, width, cursor, hover)` renders one cell and
  keys its render cache on `_update_count`, which it reads while it runs;
- `_update_count` is bumped by every change to the table, `update_cell` included;
- `_row_locations.get_key(row_index)` and `_column_locations.get_key(column_index)` turn the
  indices `_render_cell` is given into row and column keys;
- `_require_update_dimensions` makes the next idle recompute the virtual size, after
  `set_column_width` changed a column's `width`.

A Textual that renders or caches cells otherwise must be checked against tests/tui
(`test_the_ticking_table_paints_what_changed_and_nothing_stale`) and tests/perf before the pin
moves. Nothing else in `gpushop_tui.tui` touches a private attribute of a `DataTable`.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets.data_table import ColumnKey, RowKey

from gpushop_tui.tui.widgets.table import Table


class TickingTable(Table[Text]):
    """A `DataTable` that re-renders only the cells that changed since the last paint.

    `DataTable` keys its cell-render cache on a counter that every change bumps, so rewriting
    one countdown re-renders every visible cell of every column: with 50 sessions a tick's
    repaint took about 45 ms, and about 16 ms this way (tests/perf). Here a cell's cache key
    holds the table's structural generation (every change but `update_cell`) and that cell's
    own version instead; the rendering itself is still DataTable's. While it paints, the
    table's own style (which `render_line` asks for on every line, walking every ancestor's
    styles) is worked out once.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row")
        self._cell_updates = 0
        self._versions: dict[tuple[RowKey | str, ColumnKey | str], int] = {}
        self._painting = False
        self._paint_style: Style | None = None

    @property
    def rich_style(self) -> Style:
        if not self._painting:
            return super().rich_style
        if self._paint_style is None:
            self._paint_style = super().rich_style
        return self._paint_style

    def render_lines(self, crop: Region) -> list[Strip]:
        self._painting, self._paint_style = True, None
        try:
            return super().render_lines(crop)
        finally:
            self._painting, self._paint_style = False, None

    def update_cell(
        self,
        row_key: RowKey | str,
        column_key: ColumnKey | str,
        value: Text,
        *,
        update_width: bool = False,
    ) -> None:
        super().update_cell(row_key, column_key, value, update_width=update_width)
        self._cell_updates += 1
        self._versions[(row_key, column_key)] = self._cell_updates

    def set_column_width(self, column_key: str, width: int) -> None:
        """Give a fixed-width column a new width (a structural change: every row repaints)."""
        column = self.columns[ColumnKey(column_key)]
        if column.width == width:
            return
        column.width = width
        self._update_count += 1
        self._require_update_dimensions = True
        self.refresh()

    def remove_row(self, row_key: RowKey | str) -> None:
        super().remove_row(row_key)
        for column_key in self.columns:
            self._versions.pop((row_key, column_key), None)

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> list[list[Segment]]:
        version = 0
        if row_index >= 0 and column_index >= 0:  # the header and row labels never tick
            cell = (
                self._row_locations.get_key(row_index),
                self._column_locations.get_key(column_index),
            )
            version = self._versions.get(cell, 0)  # type: ignore[arg-type]
        count = self._update_count
        self._update_count = (  # type: ignore[assignment]  # only read as a cache key below
            count - self._cell_updates,
            version,
            row_index,
            width,
        )
        try:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        finally:
            self._update_count = count
