"""The offer table: the merged menu's rows, sorted by any column, marked for comparison.

The table may hold every offer of the menu (thousands), so two things keep a keystroke cheap:
its cells are renderables the DataTable never measures (every column has a fixed width, chosen
for the screen's width), and a change that drops or brings many rows rebuilds the table rather
than calling `remove_row` (O(rows) each) in a loop: the first screenful at once, the rest in
chunks after each paint, the cursor kept on its offer. Small changes, such as a refresh, update
rows in place by key.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any, Literal

from rich.console import Console, ConsoleOptions, RenderResult
from rich.style import Style
from rich.text import Text
from textual.coordinate import Coordinate

from gpushop_tui.models import Offer, OfferSort
from gpushop_tui.tui import fmt
from gpushop_tui.tui.widgets.table import Table

FIRST_ROWS = 120
"""Rows a rebuild adds at once (at least two screenfuls); the rest follow in chunks."""
CHUNK_ROWS = 600
"""Rows added per paint while a rebuild is still loading."""
REBUILD_AFTER_REMOVALS = 24
"""More rows leaving than this rebuilds the table: `remove_row` costs O(rows) per call."""
SCROLLBAR = 2
"""Columns the table's vertical scrollbar takes."""
MEASURED_MARK = "*"
"""After a $/Mtok estimate that rests on tokens/s gpushop measured on its own rentals."""

Justify = Literal["left", "right"]


def _net(mbps: float | None) -> str:
    if mbps is None:
        return "—"
    return f"{mbps / 1000:.1f} Gb" if mbps >= 1000 else f"{mbps:.0f} Mb"


def _provider(offer: Offer) -> str:
    """The provider, marked `spot` for an interruptible offer (its price is a minimum bid)."""
    return f"{offer.provider} spot" if offer.interruptible else offer.provider


@dataclass(frozen=True)
class Column:
    """One column of the offer table: how it reads and how it sorts (None sorts last)."""

    key: str
    label: str
    width: int
    text: Callable[[Offer, float | None], str]
    value: Callable[[Offer, float | None], Any]
    justify: Justify = "left"
    essential: bool = False
    descending_first: bool = False
    """Sorting on it starts with the largest values (more VRAM, more reliable...)."""


COLUMNS: tuple[Column, ...] = (
    Column("mark", "", 1, lambda o, m: "", lambda o, m: None, essential=True),
    Column("provider", "Provider", 11, lambda o, m: _provider(o), lambda o, m: o.provider,
           essential=True),
    Column("gpu", "GPU", 14, lambda o, m: o.gpu_name, lambda o, m: o.gpu_name, essential=True),
    Column("count", "N", 2, lambda o, m: str(o.gpu_count), lambda o, m: o.gpu_count, "right",
           essential=True, descending_first=True),
    Column("vram", "VRAM", 5, lambda o, m: f"{o.vram_gb:g}", lambda o, m: o.vram_gb, "right",
           descending_first=True),
    Column("price", "$/h", 7, lambda o, m: fmt.usd(o.price_per_hour, 3),
           lambda o, m: o.price_per_hour, "right", essential=True),
    Column("gpu_price", "$/GPU-h", 8, lambda o, m: fmt.usd(o.price_per_gpu_hour, 3),
           lambda o, m: o.price_per_gpu_hour, "right", essential=True),
    Column("mtok", "$/Mtok", 8, lambda o, m: fmt.usd(m, 3), lambda o, m: m, "right"),
    Column("region", "Region", 14, lambda o, m: o.region or o.country or "—",
           lambda o, m: o.region or o.country),
    Column("rel", "Rel", 6, lambda o, m: "—" if o.reliability is None else f"{o.reliability:.1%}",
           lambda o, m: o.reliability, "right", descending_first=True),
    Column("cuda", "CUDA", 5, lambda o, m: "—" if o.cuda is None else f"{o.cuda:g}",
           lambda o, m: o.cuda, "right", descending_first=True),
    Column("net", "Net ↓", 6, lambda o, m: _net(o.inet_down_mbps), lambda o, m: o.inet_down_mbps,
           "right", descending_first=True),
    Column("age", "Age", 9, lambda o, m: "", lambda o, m: -o.fetched_at.timestamp(), "right",
           essential=True),
)  # fmt: skip
BY_KEY = {column.key: column for column in COLUMNS}
FACE = attrgetter(
    "price_per_hour", "gpu_count", "vram_gb", "gpu_name", "region", "country", "reliability",
    "cuda", "inet_down_mbps",
)  # fmt: skip
"""What the table shows of an offer: a fetch that changes none of it rewrites no cell."""
OPTIONAL_ORDER = ("mtok", "vram", "region", "rel", "cuda", "net")
"""Which optional columns a narrow screen keeps first (after the sorted ones)."""
SORT_COLUMNS: dict[OfferSort, str] = {
    "price": "price", "gpu_price": "gpu_price", "vram": "vram", "reliability": "rel",
    "usd_per_mtok": "mtok",
}  # fmt: skip
"""The column each of the filter's `sort=` keys orders by (`vram_price` has none)."""


@lru_cache
def bold(color: str | None) -> Style:
    """Bold text in a theme colour (cells are Rich text, so they take the theme's value)."""
    return Style(color=color, bold=True)


def columns_for(width: int, with_mtok: bool, sorted_by: Collection[str] = ()) -> tuple[Column, ...]:
    """The columns that fit `width` cells: every essential one, then the optional ones the rows
    are sorted by (so a narrow screen never hides the order), then the others in
    `OPTIONAL_ORDER` while they fit (the $/Mtok column only when a model prices offers)."""
    room = width - SCROLLBAR - sum(c.width + 2 for c in COLUMNS if c.essential)
    chosen = {c.key for c in COLUMNS if c.essential}
    first = [key for key in OPTIONAL_ORDER if key in sorted_by]
    for key in first + [key for key in OPTIONAL_ORDER if key not in sorted_by]:
        if key == "mtok" and not with_mtok:
            continue
        need = BY_KEY[key].width + 2
        if need <= room:
            chosen.add(key)
            room -= need
    return tuple(c for c in COLUMNS if c.key in chosen)


class Cell:
    """A cell's text, drawn when the row is on screen. A renderable without a measure: the
    columns have fixed widths, so the DataTable does not measure every cell of every row it
    adds, and a row costs few objects to make and to drop."""

    __slots__ = ("justify", "text")

    def __init__(self, text: str, justify: Justify) -> None:
        self.text = text
        self.justify = justify

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(self.text, justify=self.justify, no_wrap=True, overflow="ellipsis")


class Tag:
    """The first cell of a row: the offer it shows (the table sorts rows by it) and `●` when
    the offer is marked for comparison."""

    __slots__ = ("marked", "offer_id", "style")

    def __init__(self, offer_id: str, marked: bool, style: Style) -> None:
        self.offer_id = offer_id
        self.marked = marked
        self.style = style

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text("●", style=self.style) if self.marked else Text(" ")


@dataclass
class Freshness:
    """What every age cell reads when it is drawn: the core clock at the last tick, and the
    providers whose rows are kept from an earlier fetch (their latest refresh failed)."""

    now: datetime | None = None
    stale: set[str] = field(default_factory=set)
    style: Style = field(default_factory=Style)


class AgeCell:
    """How old an offer's data is, computed when drawn from the offer the row shows now, so
    neither a tick nor a refresh rewrites thousands of cells: `12s`, or `! 2m 10s` (warning
    colour) while its provider's refresh fails."""

    __slots__ = ("freshness", "offer_id", "shown")

    def __init__(self, offer_id: str, shown: dict[str, Offer], freshness: Freshness) -> None:
        self.offer_id = offer_id
        self.shown = shown
        self.freshness = freshness

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        offer = self.shown.get(self.offer_id)
        now = self.freshness.now
        age = "—" if now is None or offer is None else fmt.age(offer.fetched_at, now)
        if offer is not None and offer.provider in self.freshness.stale:
            yield Text(f"! {age}", style=self.freshness.style, justify="right", no_wrap=True)
        else:
            yield Text(age, justify="right", no_wrap=True)


class OfferTable(Table[Any]):
    """The menu's offers, one row each keyed by offer id: sorted by the filter or by a column
    (`sort_column`, `sort_reversed`), `●` on the offers marked for comparison, each row's age
    drawn from the `Freshness` it is given."""

    def __init__(self, freshness: Freshness, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.freshness = freshness
        self.sort_column: str | None = None
        """The column the user sorts by; None keeps the filter's own order."""
        self.sort_reversed = False
        self.filter_sort: OfferSort = "price"
        """The filter's own order (`sort=`): its column stays on screen too."""
        self.marked: dict[str, Offer] = {}
        """The offers marked for comparison, by id (kept when a filter hides them)."""
        self.shown_columns: tuple[Column, ...] = ()
        self._offers: list[Offer] | None = None
        """The menu last shown, in the filter's own order."""
        self._estimates: Mapping[str, float] = {}
        self._measured: Collection[str] = frozenset()
        """The offer ids whose estimate rests on gpushop's own measurements (`MEASURED_MARK`)."""
        self._shown: dict[str, Offer] = {}
        self._order: list[str] = []
        self._priced_by: str | None = None
        self._pending: list[Offer] = []
        self._build = 0
        self._width = 0

    @property
    def filling(self) -> bool:
        """Whether a rebuild still has rows to add."""
        return bool(self._pending)

    def offer(self, offer_id: str) -> Offer | None:
        """The offer a row of the table shows."""
        return self._shown.get(offer_id)

    # ------------------------------------------------------------------ showing a menu

    def show(
        self,
        offers: list[Offer],
        estimates: Mapping[str, float],
        measured: Collection[str],
        model: str | None,
        width: int,
        filter_sort: OfferSort = "price",
    ) -> bool:
        """Bring the table to a menu (`estimates`: $/Mtok by offer id for `model`, `measured`
        the ids whose estimate rests on gpushop's own measurements, in the filter's
        `filter_sort` order) at `width` cells: in place by row key when little changed, else
        rebuilt. True when rows kept in place now show a fresh fetch (their ages moved)."""
        for offer in offers:
            if offer.id in self.marked:
                self.marked[offer.id] = offer
        priced_before = self._estimates, self._measured
        self._offers, self._estimates, self._measured = offers, estimates, measured
        self._width, self.filter_sort = width, filter_sort
        ordered = self.ordered(offers)
        columns = self.columns_at(width, model)
        wanted = {offer.id for offer in ordered}
        leaving = [offer_id for offer_id in self._order if offer_id not in wanted]
        arriving = sum(1 for offer in ordered if offer.id not in self._shown)
        if (
            columns != self.shown_columns
            or self._pending
            or len(leaving) > REBUILD_AFTER_REMOVALS
            or arriving > FIRST_ROWS
        ):
            self.rebuild(ordered, columns, model)
            return False
        cursor = self.followed_offer_id()
        refetched = False
        repriced = self._priced_by != model
        self._priced_by = model
        with self.app.batch_update():
            for offer_id in leaving:
                self.remove_row(offer_id)
                del self._shown[offer_id]
            for offer in ordered:
                before = self._shown.get(offer.id)
                if before is None:
                    self.append_offer(offer)
                    continue
                if before is not offer:
                    self._shown[offer.id] = offer  # a fresh fetch: the age cell reads it
                    refetched = True
                if (
                    repriced
                    or (before is not offer and FACE(before) != FACE(offer))
                    or self._price_moved(offer.id, *priced_before)
                ):
                    self.update_offer(offer)
            order = [offer.id for offer in ordered]
            if order != self._order_after(leaving, ordered):
                self.reorder(order)
            self._order = order
        self.keep_cursor(cursor)
        return refetched

    def _price_moved(
        self, offer_id: str, estimates: Mapping[str, float], measured: Collection[str]
    ) -> bool:
        """Whether an offer's $/Mtok cell reads otherwise than under the earlier `estimates` and
        `measured` of the same model (a new measurement of it arrived)."""
        return estimates.get(offer_id) != self._estimates.get(offer_id) or (
            (offer_id in measured) != (offer_id in self._measured)
        )

    def needs_relayout(self, width: int) -> bool:
        """Whether `width` cells call for other columns than the menu shown has."""
        return self._offers is not None and (
            self.columns_at(width, self._priced_by) != self.shown_columns
        )

    def columns_at(self, width: int, model: str | None) -> tuple[Column, ...]:
        """The columns for `width` cells, keeping the ones the rows are sorted by: the user's
        column and the filter's."""
        keys = (self.sort_column, SORT_COLUMNS.get(self.filter_sort))
        return columns_for(width, model is not None, [key for key in keys if key is not None])

    def _order_after(self, leaving: list[str], offers: list[Offer]) -> list[str]:
        """The table's order once `leaving` went and new rows were appended."""
        gone = set(leaving)
        kept = [offer_id for offer_id in self._order if offer_id not in gone]
        known = set(kept)
        return kept + [offer.id for offer in offers if offer.id not in known]

    def reorder(self, order: list[str]) -> None:
        rank = {offer_id: i for i, offer_id in enumerate(order)}
        self.sort("mark", key=lambda tag: rank[tag.offer_id])

    def rebuild(self, offers: list[Offer], columns: tuple[Column, ...], model: str | None) -> None:
        """Lay the table out afresh: the rows up to a screenful past the cursor's offer now,
        the rest in chunks after each paint; the cursor stays on its offer."""
        cursor = self.followed_offer_id()
        offset = self.cursor_row - round(self.scroll_y)
        self._build += 1
        if columns != self.shown_columns:
            self.clear(columns=True)
            for column in columns:
                self.add_column(self.header(column), width=column.width, key=column.key)
            self.shown_columns = columns
        else:
            self.clear()
        self._shown.clear()
        self._order = []
        self._priced_by = model
        index = next((i for i, o in enumerate(offers) if o.id == cursor), None)
        first = max(FIRST_ROWS, 2 * self.size.height, (index or 0) + self.size.height + 1)
        self.append_offers(offers[:first])
        self._pending = offers[first:]
        if index is not None:
            self.move_cursor(row=index, animate=False, scroll=False)
            self.call_after_refresh(self.scroll_to, y=max(0, index - offset), animate=False)
        if self._pending:
            self.call_after_refresh(self.load_more, self._build)

    def load_more(self, build: int) -> None:
        """Add the next chunk of a rebuild, unless a newer one took over."""
        if build != self._build or not self._pending:
            return
        chunk, self._pending = self._pending[:CHUNK_ROWS], self._pending[CHUNK_ROWS:]
        self.append_offers(chunk)
        if self._pending:
            self.call_after_refresh(self.load_more, build)

    def append_offers(self, offers: Iterable[Offer]) -> None:
        for offer in offers:
            self.append_offer(offer)

    def append_offer(self, offer: Offer) -> None:
        mtok = self._estimates.get(offer.id)
        self.add_row(*(self.cell(c, offer, mtok) for c in self.shown_columns), key=offer.id)
        self._shown[offer.id] = offer
        self._order.append(offer.id)

    def update_offer(self, offer: Offer) -> None:
        """Rewrite the cells that changed in a row whose offer now reads otherwise (a new price,
        or a new model's $/Mtok)."""
        mtok = self._estimates.get(offer.id)
        for column in self.shown_columns:
            if column.key in ("mark", "age"):
                continue
            cell = self.cell(column, offer, mtok)
            if cell.text != self.get_cell(offer.id, column.key).text:
                self.update_cell(offer.id, column.key, cell)

    def cell(self, column: Column, offer: Offer, mtok: float | None) -> Any:
        if column.key == "mark":
            return Tag(offer.id, offer.id in self.marked, self.mark_style)
        if column.key == "age":
            return AgeCell(offer.id, self._shown, self.freshness)
        text = column.text(offer, mtok)
        if column.key == "mtok" and offer.id in self._measured:
            text += MEASURED_MARK
        return Cell(text, column.justify)

    def header(self, column: Column) -> Text:
        """A column's header, with ▲/▼ on the one the table is sorted by."""
        if column.key != self.sort_column:
            return Text(column.label, justify=column.justify)
        descending = column.descending_first != self.sort_reversed
        arrow = "▼" if descending else "▲"
        return Text(f"{column.label}{arrow}", style="bold", justify=column.justify)

    @property
    def mark_style(self) -> Style:
        return bold(self.app.theme_variables.get("accent"))

    def redraw_ages(self) -> None:
        """Draw the age of the rows on screen again: each age cell computes itself when drawn,
        so setting the same cell anew is what makes the table draw it afresh."""
        if not self.shown_columns or self.row_count == 0 or not self.is_on_screen:
            return
        top = round(self.scroll_y)
        for row in range(top, min(self.row_count, top + self.size.height)):
            row_key = self.coordinate_to_cell_key(Coordinate(row, 0)).row_key
            self.update_cell(row_key, "age", self.get_cell(row_key, "age"))

    # ------------------------------------------------------------------ cursor

    def cursor_offer_id(self) -> str | None:
        if self.row_count == 0 or not self.shown_columns:
            return None
        row_key = self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key
        return str(row_key.value)

    def followed_offer_id(self) -> str | None:
        """The offer the cursor follows through a change: the one under it, unless the cursor
        is on the top row (the top stays the top: the best match of a new filter)."""
        return self.cursor_offer_id() if self.cursor_row > 0 else None

    def cursor_offer(self) -> Offer | None:
        offer_id = self.cursor_offer_id()
        return None if offer_id is None else self.offer(offer_id)

    def keep_cursor(self, offer_id: str | None) -> None:
        """Put the cursor back on `offer_id` where rows above it came or went."""
        if offer_id is None or offer_id not in self._shown:
            return
        index = self.get_row_index(offer_id)
        if index != self.cursor_row:
            shift = index - self.cursor_row
            self.move_cursor(row=index, animate=False, scroll=False)
            self.scroll_to(y=self.scroll_y + shift, animate=False)

    # ------------------------------------------------------------------ sorting

    def ordered(self, offers: list[Offer]) -> list[Offer]:
        """`offers` (in the filter's own order) in the order the user asked for: the filter's,
        or by a column (unknown values last either way); `sort_reversed` reverses."""
        if self.sort_column is None:
            return offers[::-1] if self.sort_reversed else list(offers)
        column = BY_KEY[self.sort_column]
        known: list[tuple[Any, Offer]] = []
        unknown: list[Offer] = []
        for offer in offers:
            value = column.value(offer, self._estimates.get(offer.id))
            if value is None:
                unknown.append(offer)
            else:
                known.append((value, offer))
        descending = column.descending_first != self.sort_reversed
        known.sort(key=lambda pair: pair[0], reverse=descending)
        return [offer for _, offer in known] + unknown

    def cycle_sort(self) -> None:
        """Sort by the next column; after the last, back to the filter's own order."""
        keys = [column.key for column in self.shown_columns if column.key != "mark"]
        if self.sort_column in keys:
            at = keys.index(self.sort_column) + 1
            self.sort_by(keys[at] if at < len(keys) else None)
        else:
            self.sort_by(keys[0] if keys else None)

    def reverse_sort(self) -> None:
        self.sort_reversed = not self.sort_reversed
        self.resort()

    def header_chosen(self, key: str) -> None:
        """A click on a header: sort by its column, reversed when it is already the one (the
        mark column goes back to the filter's own order)."""
        if key == self.sort_column:
            self.reverse_sort()
        else:
            self.sort_by(None if key == "mark" else key)

    def sort_by(self, column: str | None) -> None:
        self.sort_column = column
        self.sort_reversed = False
        self.resort()

    def resort(self) -> None:
        """Show the current rows in the new order (and the arrow on the sorted header)."""
        if self._offers is None:
            return
        for column in self.shown_columns:
            self.columns[column.key].label = self.header(column)  # type: ignore[index]
        cursor = self.followed_offer_id()
        columns = self.columns_at(self._width, self._priced_by)
        if self._pending or columns != self.shown_columns:
            self.rebuild(self.ordered(self._offers), columns, self._priced_by)
        else:
            order = [offer.id for offer in self.ordered(self._offers)]
            self.reorder(order)
            self._order = order
            self.keep_cursor(cursor)

    # ------------------------------------------------------------------ marking

    def toggle_mark(self, offer: Offer) -> None:
        """Mark `offer` for comparison, or unmark it."""
        if self.marked.pop(offer.id, None) is None:
            self.marked[offer.id] = offer
        self.update_cell(offer.id, "mark", Tag(offer.id, offer.id in self.marked, self.mark_style))

    def unmark_all(self) -> None:
        for offer_id in list(self.marked):
            del self.marked[offer_id]
            if offer_id in self._shown:
                self.update_cell(offer_id, "mark", Tag(offer_id, False, self.mark_style))
