"""`Table`: a `DataTable` with the keys k9s and lazygit users reach for first.

`j`/`k` move the cursor a row, `g`/`Home` jump to the first row and `G`/`End` to the last
(a row-cursor `DataTable` only scrolls sideways on Home/End).
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

from textual.binding import Binding, BindingType
from textual.widgets import DataTable

CellType = TypeVar("CellType")


class Table(DataTable[CellType]):
    """A `DataTable` that also moves with `j`/`k`, `g`/`G` and Home/End."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g,home", "scroll_top", "First row", show=False),
        Binding("G,end", "scroll_bottom", "Last row", show=False),
    ]
