"""The comparison table: one row per GPU model and count, each provider's best price side by side.

It shows an `InventoryComparison` (a few dozen rows, so every change lays it out afresh, the
cursor kept on its GPU row). Every column has a fixed width, one column per provider that
answers the query; on a narrow screen the optional columns ($/Mtok, the price range, VRAM) go
in that order of keeping, so the providers' prices and the offer count always fit 80 columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from rich.text import Text
from textual.coordinate import Coordinate

from gpushop_tui.core import GpuRow, InventoryComparison, ProviderReport
from gpushop_tui.tui import fmt
from gpushop_tui.tui.widgets.offer_table import MEASURED_MARK, SCROLLBAR, Justify
from gpushop_tui.tui.widgets.table import Table

PRICE_WIDTH = 7
"""`$25.600`: an offer's price per hour, as the offer list writes it."""


def price_range(row: GpuRow) -> str:
    """`$0.300-$1.200`, or one price when every offer of the row costs the same."""
    low, high = fmt.usd(row.price_min, 3), fmt.usd(row.price_max, 3)
    return low if low == high else f"{low}-{high}"


def mtok(row: GpuRow) -> str:
    """The row's lowest $/Mtok, `MEASURED_MARK` after it where it rests on gpushop's own
    measurements."""
    return fmt.usd(row.usd_per_mtok, 3) + (MEASURED_MARK if row.usd_per_mtok_measured else "")


@dataclass(frozen=True)
class CompareColumn:
    """One column of the comparison: its header, width and how a row reads in it."""

    key: str
    label: str
    width: int
    text: Callable[[GpuRow], str]
    justify: Justify = "right"


GPU = CompareColumn("gpu", "GPU", 17, lambda r: f"{r.gpu_count}x {r.gpu_name}", "left")
OFFERS = CompareColumn("offers", "Offers", 6, lambda r: str(r.offers))
MTOK = CompareColumn("mtok", "$/Mtok", 8, mtok)
RANGE = CompareColumn("range", "$/h range", 15, price_range)
VRAM = CompareColumn("vram", "VRAM", 5, lambda r: f"{r.vram_gb:g}")
OPTIONAL = (MTOK, RANGE, VRAM)
"""The columns a narrow screen drops, the last first."""


@lru_cache
def provider_column(provider: str) -> CompareColumn:
    """A provider's best price for the row (`—` where it has no offer of it); one per
    provider, so an update with the same providers keeps the columns."""

    def best(row: GpuRow) -> str:
        found = row.by_provider.get(provider)
        return "—" if found is None else fmt.usd(found.price_per_hour, 3)

    return CompareColumn(f"provider:{provider}", provider, max(len(provider), PRICE_WIDTH), best)


def compare_columns(
    width: int, providers: list[ProviderReport], model: str | None
) -> tuple[CompareColumn, ...]:
    """The columns that fit `width` cells: the GPU, one per provider with a menu, the offer
    count, then the optional ones in `OPTIONAL` order while they fit ($/Mtok only for a model)."""
    prices = [provider_column(r.provider) for r in providers if r.status != "not configured"]
    room = width - SCROLLBAR - sum(c.width + 2 for c in (GPU, *prices, OFFERS))
    kept: set[CompareColumn] = set()
    for column in OPTIONAL:
        if column.width + 2 <= room and (column is not MTOK or model is not None):
            kept.add(column)
            room -= column.width + 2
    order = (GPU, VRAM, *prices, OFFERS, RANGE, MTOK)
    return tuple(c for c in order if c in kept or c not in OPTIONAL)


def row_key(row: GpuRow) -> str:
    """`RTX 4090|2`: a GPU model and count, which the cursor follows across updates."""
    return f"{row.gpu_name}|{row.gpu_count}"


class GpuCompareTable(Table[Text]):
    """The comparison's rows keyed by GPU model and count; the cheapest provider's price in
    each row is bold."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.rows_shown: dict[str, GpuRow] = {}
        self.shown_columns: tuple[CompareColumn, ...] = ()
        self._comparison: InventoryComparison | None = None

    def show(self, comparison: InventoryComparison, width: int) -> None:
        """Lay out `comparison` at `width` cells, the cursor kept on its GPU row (unless it is
        on the top row: the top stays the top, the best match of a new filter)."""
        self._comparison = comparison
        cursor = self.cursor_row_key() if self.cursor_row > 0 else None
        columns = compare_columns(width, comparison.providers, comparison.model)
        with self.app.batch_update():
            if columns != self.shown_columns:
                self.clear(columns=True)
                for column in columns:
                    label = Text(column.label, justify=column.justify)
                    self.add_column(label, width=column.width, key=column.key)
                self.shown_columns = columns
            else:
                self.clear()
            self.rows_shown = {}
            for row in comparison.rows:
                key = row_key(row)
                self.rows_shown[key] = row
                self.add_row(*(self.cell(column, row) for column in columns), key=key)
        if cursor in self.rows_shown:
            self.move_cursor(row=self.get_row_index(cursor), animate=False)

    def needs_relayout(self, width: int) -> bool:
        """Whether `width` cells call for other columns than the comparison shown has."""
        comparison = self._comparison
        return comparison is not None and (
            compare_columns(width, comparison.providers, comparison.model) != self.shown_columns
        )

    def cell(self, column: CompareColumn, row: GpuRow) -> Text:
        text = column.text(row)
        cheapest = column.key == f"provider:{self.cheapest_provider(row)}"
        return Text(
            text,
            style="bold" if cheapest else "",
            justify=column.justify,
            no_wrap=True,
            overflow="ellipsis",
        )

    @staticmethod
    def cheapest_provider(row: GpuRow) -> str | None:
        """The provider with the row's lowest price (the first in menu order on a tie)."""
        if not row.by_provider:
            return None
        return min(row.by_provider, key=lambda p: row.by_provider[p].price_per_hour)

    def cursor_row_key(self) -> str | None:
        if self.row_count == 0 or not self.shown_columns:
            return None
        return str(self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value)

    def cursor_gpu_row(self) -> GpuRow | None:
        """The comparison row under the cursor."""
        key = self.cursor_row_key()
        return None if key is None else self.rows_shown.get(key)
