"""The Inventory pane: the merged offer menu, filtered as you type and sorted by any column.

The filter bar takes the query language (`gpushop_tui.query`). Each keystroke parses the text; a
bad token is shown marked with the parser's reason and the table keeps its last good rows; a
good query re-reads the core's cache (never the network) in a worker. Refreshes run in a worker
on `r` and every `inventory_refresh_s` of core-clock time; a provider that fails keeps its rows
(their age marked `!` while they are kept from an earlier fetch) and the status strip says why.
`space` marks offers, `c` compares 2-4 marked ones, `enter` opens the rent dialog.

The table may hold every offer of the menu (thousands), so two things keep a keystroke cheap:
its cells are renderables the DataTable never measures (every column has a fixed width, chosen
for the screen's width), and a change that drops or brings many rows rebuilds the table rather
than calling `remove_row` (O(rows) each) in a loop: the first screenful at once, the rest in
chunks after each paint, the cursor kept on its offer. Small changes, such as a refresh, update
rows in place by key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any, ClassVar, Literal

from rich.console import Console, ConsoleOptions, RenderResult
from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.coordinate import Coordinate
from textual.events import Resize
from textual.message import Message
from textual.widgets import DataTable, Input, Label, Static

from gpushop_tui.core.events import Event, InventoryRefreshed
from gpushop_tui.core.inventory import InventoryView, ProviderReport
from gpushop_tui.core.shopper import Shopper
from gpushop_tui.errors import UserError
from gpushop_tui.models import Offer, OfferQuery, OfferSort, ProvisionRequest, Session
from gpushop_tui.query import QueryError, parse_query
from gpushop_tui.tui import fmt
from gpushop_tui.tui.compare import CompareScreen
from gpushop_tui.tui.pane import CorePane, ShowSession
from gpushop_tui.tui.rent import RentScreen

log = logging.getLogger(__name__)

FIRST_ROWS = 120
"""Rows a rebuild adds at once (at least two screenfuls); the rest follow in chunks."""
CHUNK_ROWS = 600
"""Rows added per paint while a rebuild is still loading."""
REBUILD_AFTER_REMOVALS = 24
"""More rows leaving than this rebuilds the table: `remove_row` costs O(rows) per call."""
SCROLLBAR = 2
"""Columns the table's vertical scrollbar takes."""

Justify = Literal["left", "right"]


def _net(mbps: float | None) -> str:
    if mbps is None:
        return "—"
    return f"{mbps / 1000:.1f} Gb" if mbps >= 1000 else f"{mbps:.0f} Mb"


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
    Column("provider", "Provider", 11, lambda o, m: o.provider, lambda o, m: o.provider,
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
    Column("mtok", "$/Mtok", 7, lambda o, m: fmt.usd(m, 3), lambda o, m: m, "right"),
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
QUERY_SORT_LABELS: dict[OfferSort, str] = {
    "price": "$/h", "gpu_price": "$/GPU-h", "vram_price": "$/GB of VRAM", "vram": "VRAM",
    "reliability": "Rel", "usd_per_mtok": "$/Mtok",
}  # fmt: skip
"""How the filter's `sort=` keys read, in the words of the table's headers."""
FACE = attrgetter(
    "price_per_hour", "gpu_count", "vram_gb", "gpu_name", "region", "country", "reliability",
    "cuda", "inet_down_mbps",
)  # fmt: skip
"""What the table shows of an offer: a fetch that changes none of it rewrites no cell."""
OPTIONAL_ORDER = ("mtok", "vram", "region", "rel", "cuda", "net")
"""Which optional columns a narrow screen keeps first."""


@lru_cache
def bold(color: str | None) -> Style:
    """Bold text in a theme colour (cells are Rich text, so they take the theme's value)."""
    return Style(color=color, bold=True)


def columns_for(width: int, with_mtok: bool) -> tuple[Column, ...]:
    """The columns that fit `width` cells: every essential one, then optional ones in
    `OPTIONAL_ORDER` while they fit (the $/Mtok column only when a model prices offers)."""
    room = width - SCROLLBAR - sum(c.width + 2 for c in COLUMNS if c.essential)
    chosen = {c.key for c in COLUMNS if c.essential}
    for key in OPTIONAL_ORDER:
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


def provider_line(report: ProviderReport, now: datetime | None) -> Content:
    """One provider in the status strip: `vastai ok 1309 offers`, `tensordock stale 2m 10s:
    why (42 offers kept)`, `bluelobster error: why`, `vastai not configured`."""
    name = report.provider
    match report.status:
        case "ok":
            return Content.assemble((f"{name} ok", "$success"), f" {report.offers} offers")
        case "stale":
            age = fmt.age(report.fetched_at, now) if now is not None else "?"
            return Content.assemble(
                (f"{name} stale {age}", "$warning"),
                f": {report.error} ({report.offers} offers kept)",
            )
        case "error":
            return Content.assemble((f"{name} error", "$error"), f": {report.error}")
    return Content.styled(f"{name} not configured", "$text-muted")


def query_error_text(err: QueryError) -> Content:
    """The query with the bad span marked (and a caret under it, for when colour is not seen),
    then the parser's reason."""
    start, end = err.start, max(err.end, err.start + 1)
    shown = err.text + (" " if end > len(err.text) else "")
    return Content.assemble(
        ("bad query: ", "bold $error"),
        err.reason,
        "\n  ",
        shown[:start],
        (shown[start:end], "bold reverse $error"),
        shown[end:],
        "\n  ",
        " " * start,
        ("^" * (end - start), "bold $error"),
    )


class InventoryPane(CorePane):
    """The live offer menu: filter, sort, mark and compare, rent."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_filter", "Filter", key_display="/"),
        Binding("r", "refresh", "Refresh"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse"),
        Binding("space", "mark", "Mark"),
        Binding("u", "unmark_all", "Unmark all", show=False),
        Binding("c", "compare", "Compare"),
        Binding("enter", "rent", "Rent"),
    ]

    @dataclass
    class ViewReady(Message):
        """The menu for `query`, read from the cache; `generation` orders the reads."""

        view: InventoryView
        query: OfferQuery
        generation: int

    @dataclass
    class ViewFailed(Message):
        """Reading the menu failed with a reason for the user (e.g. an unmeasured model)."""

        reason: str
        generation: int

    @dataclass
    class Refreshed(Message):
        """A refresh of every provider ended; `problem` when it could not run at all."""

        problem: str | None

    @dataclass
    class ModelsLoaded(Message):
        """The models benchmarks can price offers by (what `model=` may name)."""

        models: set[str]

    @dataclass
    class Rented(Message):
        """The core took the rental: the session is provisioning."""

        session: Session

    @dataclass
    class RentFailed(Message):
        """The rental did not go through; `reason` is the sentence for the user."""

        reason: str

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.parsed = OfferQuery()
        """The last query that parsed."""
        self.model: str | None = None
        """The model chosen on the benchmarks pane; a `model=` in the filter wins over it."""
        self.models: set[str] | None = None
        self.view: InventoryView | None = None
        self.shown_query = OfferQuery()
        self.sort_column: str | None = None
        """The column the user sorts by; None keeps the filter's own order."""
        self.sort_reversed = False
        self.marked: dict[str, Offer] = {}
        self.freshness = Freshness()
        self.refreshing = False
        self.renting = 0
        self.last_refresh_at: datetime | None = None
        self.last_consumer: str | None = None
        """The consumer of the last rental in this app run: the rent dialog starts with it."""
        self._generation = 0
        self._columns: tuple[Column, ...] = ()
        self._shown: dict[str, Offer] = {}
        self._order: list[str] = []
        self._priced_by: str | None = None
        self._pending: list[Offer] = []
        self._build = 0
        self._strip = ""

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        with Horizontal(id="inventory-filter-bar"):
            yield Label("Filter", id="inventory-filter-label")
            yield Input(
                placeholder="gpu=4090 vram>=24 price<=0.5 n>=2 region=US sort=gpuprice",
                id="inventory-filter",
                compact=True,
            )
        yield Static(id="inventory-query-error")
        yield Static("Waiting for the core…", id="inventory-summary")
        yield DataTable(id="inventory-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="inventory-providers")

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one("#inventory-table", DataTable)

    @property
    def loading(self) -> bool:
        """Whether a rebuild still has rows to add."""
        return bool(self._pending)

    def offer(self, offer_id: str) -> Offer | None:
        """The offer a row of the table shows."""
        return self._shown.get(offer_id)

    def focus_main(self) -> None:
        self.table.focus()

    # ------------------------------------------------------------------ hooks from the app

    def core_ready(self, core: Shopper) -> None:
        super().core_ready(core)
        self.freshness.now = core.clock.now()
        self.call_after_refresh(self.take_first_focus)
        self.load_models()
        self.refresh_offers()

    def take_first_focus(self) -> None:
        """On the first screen, focus the table so its keys (/, r, s, enter...) work at once."""
        if self.is_on_screen and not self.has_focus_within:
            self.focus_main()

    def core_event(self, event: Event) -> None:
        if isinstance(event, InventoryRefreshed):
            self.read_view()

    def tick(self, now: datetime) -> None:
        self.freshness.now = now
        self.show_providers()
        self.redraw_ages()
        if self.core is None or self.refreshing or self.last_refresh_at is None:
            return
        if (now - self.last_refresh_at).total_seconds() >= self.core.settings.inventory_refresh_s:
            self.refresh_offers()

    def set_model(self, model: str | None) -> None:
        """Show $/M tokens for `model` (None: no model column unless the filter names one)."""
        self.model = model
        self.read_view()

    # ------------------------------------------------------------------ the filter

    def action_focus_filter(self) -> None:
        self.query_one("#inventory-filter", Input).focus()

    @on(Input.Changed, "#inventory-filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.parse_filter(event.value)

    @on(Input.Submitted, "#inventory-filter")
    def filter_submitted(self) -> None:
        self.table.focus()

    def parse_filter(self, text: str) -> None:
        """Re-read the menu for a query that parses; mark the fault of one that does not."""
        problem = self.query_one("#inventory-query-error", Static)
        try:
            query = parse_query(text, self.models)
        except QueryError as err:
            problem.update(query_error_text(err))
            problem.display = True
            self.query_one("#inventory-filter", Input).add_class("bad-query")
            return
        problem.display = False
        self.query_one("#inventory-filter", Input).remove_class("bad-query")
        self.parsed = query
        self.read_view()

    def effective_query(self) -> OfferQuery:
        if self.parsed.model is None and self.model is not None:
            return self.parsed.model_copy(update={"model": self.model})
        return self.parsed

    # ------------------------------------------------------------------ reading the menu

    @work(exclusive=True, group="inventory-models", exit_on_error=False)
    async def load_models(self) -> None:
        assert self.core is not None
        self.post_message(self.ModelsLoaded(await self.core.benchmarks.models()))

    @on(ModelsLoaded)
    def models_loaded(self, message: ModelsLoaded) -> None:
        self.models = message.models
        self.parse_filter(self.query_one("#inventory-filter", Input).value)

    def read_view(self) -> None:
        """Ask for the menu of the current query, from the cache; newer asks win."""
        if self.core is None:
            return
        self._generation += 1
        self.read_cache(self.effective_query(), self._generation)

    @work(exclusive=True, group="inventory-view", exit_on_error=False)
    async def read_cache(self, query: OfferQuery, generation: int) -> None:
        assert self.core is not None
        try:
            view = await self.core.inventory.cached_view(query)
        except UserError as err:
            self.post_message(self.ViewFailed(err.message, generation))
            return
        self.post_message(self.ViewReady(view, query, generation))

    @on(ViewReady)
    def view_ready(self, message: ViewReady) -> None:
        if message.generation != self._generation:
            return  # an answer to an older query: a newer one is on its way
        self.view = message.view
        self.shown_query = message.query
        stale = {r.provider for r in message.view.providers if r.status == "stale"}
        restaled, self.freshness.stale = stale != self.freshness.stale, stale
        self.freshness.style = bold(self.app.theme_variables.get("warning"))
        for offer in message.view.offers:
            if offer.id in self.marked:
                self.marked[offer.id] = offer
        if self.show_rows() or restaled:
            self.redraw_ages()
        self.show_providers()
        self.show_summary()

    @on(ViewFailed)
    def view_failed(self, message: ViewFailed) -> None:
        if message.generation == self._generation:
            self.notify(message.reason, severity="error", timeout=10)

    # ------------------------------------------------------------------ refreshing

    def action_refresh(self) -> None:
        if self.refreshing:
            self.notify("Already refreshing the offers.", timeout=3)
            return
        self.refresh_offers()

    def refresh_offers(self) -> None:
        """Fetch every provider's offers again, in a worker, with "refreshing…" shown meanwhile."""
        if self.core is None or self.refreshing:
            return
        self.refreshing = True
        self.last_refresh_at = self.core.clock.now()
        self.show_summary()
        self.fetch_offers()

    @work(exclusive=True, group="inventory-refresh", exit_on_error=False)
    async def fetch_offers(self) -> None:
        assert self.core is not None
        problem = None
        try:
            await self.core.offers(refresh=True)
        except UserError as err:
            problem = err.message
        finally:
            self.post_message(self.Refreshed(problem))

    @on(Refreshed)
    def refreshed(self, message: Refreshed) -> None:
        self.refreshing = False
        if message.problem:
            self.notify(message.problem, severity="error", timeout=10)
        self.read_view()
        self.show_summary()

    # ------------------------------------------------------------------ the table

    def ordered(self, view: InventoryView) -> list[Offer]:
        """The view's offers in the order the user asked for: the filter's own, or by a column
        (unknown values last either way); `S` reverses."""
        offers = view.offers
        if self.sort_column is None:
            return offers[::-1] if self.sort_reversed else list(offers)
        column = BY_KEY[self.sort_column]
        estimates = view.usd_per_mtok
        known: list[tuple[Any, Offer]] = []
        unknown: list[Offer] = []
        for offer in offers:
            value = column.value(offer, estimates.get(offer.id))
            if value is None:
                unknown.append(offer)
            else:
                known.append((value, offer))
        descending = column.descending_first != self.sort_reversed
        known.sort(key=lambda pair: pair[0], reverse=descending)
        return [offer for _, offer in known] + unknown

    def show_rows(self) -> bool:
        """Bring the table to the view: in place by row key when little changed, else rebuilt.
        True when rows kept in place now show a fresh fetch (their ages moved)."""
        if self.view is None:
            return False
        offers = self.ordered(self.view)
        width = self.size.width or self.app.size.width
        columns = columns_for(width, self.shown_query.model is not None)
        wanted = {offer.id for offer in offers}
        leaving = [offer_id for offer_id in self._order if offer_id not in wanted]
        arriving = sum(1 for offer in offers if offer.id not in self._shown)
        if (
            columns != self._columns
            or self._pending
            or len(leaving) > REBUILD_AFTER_REMOVALS
            or arriving > FIRST_ROWS
        ):
            self.rebuild(offers, columns)
            return False
        table = self.table
        cursor = self.followed_offer_id()
        refetched = False
        estimates = self.view.usd_per_mtok
        repriced = self._priced_by != self.shown_query.model
        self._priced_by = self.shown_query.model
        with self.app.batch_update():
            for offer_id in leaving:
                table.remove_row(offer_id)
                del self._shown[offer_id]
            for offer in offers:
                before = self._shown.get(offer.id)
                if before is None:
                    self.add_row(offer, estimates.get(offer.id))
                    continue
                if before is not offer:
                    self._shown[offer.id] = offer  # a fresh fetch: the age cell reads it
                    refetched = True
                if repriced or (before is not offer and FACE(before) != FACE(offer)):
                    self.update_row(offer, estimates.get(offer.id))
            order = [offer.id for offer in offers]
            if order != self._order_after(leaving, offers):
                self.reorder(order)
            self._order = order
        self.keep_cursor(cursor)
        return refetched

    def _order_after(self, leaving: list[str], offers: list[Offer]) -> list[str]:
        """The table's order once `leaving` went and new rows were appended."""
        gone = set(leaving)
        kept = [offer_id for offer_id in self._order if offer_id not in gone]
        known = set(kept)
        return kept + [offer.id for offer in offers if offer.id not in known]

    def reorder(self, order: list[str]) -> None:
        rank = {offer_id: i for i, offer_id in enumerate(order)}
        self.table.sort("mark", key=lambda tag: rank[tag.offer_id])

    def rebuild(self, offers: list[Offer], columns: tuple[Column, ...]) -> None:
        """Lay the table out afresh: the rows up to a screenful past the cursor's offer now,
        the rest in chunks after each paint; the cursor stays on its offer."""
        table = self.table
        cursor = self.followed_offer_id()
        offset = table.cursor_row - round(table.scroll_y)
        self._build += 1
        if columns != self._columns:
            table.clear(columns=True)
            for column in columns:
                table.add_column(self.label(column), width=column.width, key=column.key)
            self._columns = columns
        else:
            table.clear()
        self._shown.clear()
        self._order = []
        self._priced_by = self.shown_query.model
        index = next((i for i, o in enumerate(offers) if o.id == cursor), None)
        first = max(FIRST_ROWS, 2 * table.size.height, (index or 0) + table.size.height + 1)
        self.add_rows(offers[:first])
        self._pending = offers[first:]
        if index is not None:
            table.move_cursor(row=index, animate=False, scroll=False)
            table.call_after_refresh(table.scroll_to, y=max(0, index - offset), animate=False)
        if self._pending:
            self.call_after_refresh(self.load_more, self._build)

    def load_more(self, build: int) -> None:
        """Add the next chunk of a rebuild, unless a newer one took over."""
        if build != self._build or not self._pending:
            return
        chunk, self._pending = self._pending[:CHUNK_ROWS], self._pending[CHUNK_ROWS:]
        self.add_rows(chunk)
        if self._pending:
            self.call_after_refresh(self.load_more, build)

    def add_rows(self, offers: Iterable[Offer]) -> None:
        estimates = self.view.usd_per_mtok if self.view is not None else {}
        for offer in offers:
            self.add_row(offer, estimates.get(offer.id))

    def add_row(self, offer: Offer, mtok: float | None) -> None:
        self.table.add_row(*(self.cell(c, offer, mtok) for c in self._columns), key=offer.id)
        self._shown[offer.id] = offer
        self._order.append(offer.id)

    def update_row(self, offer: Offer, mtok: float | None) -> None:
        """Rewrite the cells that changed in a row whose offer now reads otherwise (a new price,
        or a new model's $/Mtok)."""
        table = self.table
        for column in self._columns:
            if column.key in ("mark", "age"):
                continue
            cell = self.cell(column, offer, mtok)
            if cell.text != table.get_cell(offer.id, column.key).text:
                table.update_cell(offer.id, column.key, cell)

    def cell(self, column: Column, offer: Offer, mtok: float | None) -> Any:
        if column.key == "mark":
            return Tag(offer.id, offer.id in self.marked, self.mark_style)
        if column.key == "age":
            return AgeCell(offer.id, self._shown, self.freshness)
        return Cell(column.text(offer, mtok), column.justify)

    def label(self, column: Column) -> Text:
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
        table = self.table
        if not self._columns or table.row_count == 0 or not table.is_on_screen:
            return
        top = round(table.scroll_y)
        for row in range(top, min(table.row_count, top + table.size.height)):
            row_key = table.coordinate_to_cell_key(Coordinate(row, 0)).row_key
            table.update_cell(row_key, "age", table.get_cell(row_key, "age"))

    # ------------------------------------------------------------------ cursor

    def cursor_offer_id(self) -> str | None:
        table = self.table
        if table.row_count == 0 or not self._columns:
            return None
        row_key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key
        return str(row_key.value)

    def followed_offer_id(self) -> str | None:
        """The offer the cursor follows through a change: the one under it, unless the cursor
        is on the top row (the top stays the top: the best match of a new filter)."""
        return self.cursor_offer_id() if self.table.cursor_row > 0 else None

    def cursor_offer(self) -> Offer | None:
        offer_id = self.cursor_offer_id()
        return None if offer_id is None else self.offer(offer_id)

    def keep_cursor(self, offer_id: str | None) -> None:
        """Put the cursor back on `offer_id` where rows above it came or went."""
        table = self.table
        if offer_id is None or offer_id not in self._shown:
            return
        index = table.get_row_index(offer_id)
        if index != table.cursor_row:
            shift = index - table.cursor_row
            table.move_cursor(row=index, animate=False, scroll=False)
            table.scroll_to(y=table.scroll_y + shift, animate=False)

    def on_resize(self, event: Resize) -> None:
        if (
            self.view is not None
            and columns_for(event.size.width, self.shown_query.model is not None) != self._columns
        ):
            self.show_rows()

    # ------------------------------------------------------------------ sorting

    def action_cycle_sort(self) -> None:
        """Sort by the next column; after the last, back to the filter's own order."""
        keys = [column.key for column in self._columns if column.key != "mark"]
        if self.sort_column in keys:
            at = keys.index(self.sort_column) + 1
            self.sort_by(keys[at] if at < len(keys) else None)
        else:
            self.sort_by(keys[0] if keys else None)

    def action_reverse_sort(self) -> None:
        self.sort_reversed = not self.sort_reversed
        self.resort()

    @on(DataTable.HeaderSelected, "#inventory-table")
    def header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key == self.sort_column:
            self.action_reverse_sort()
        else:
            self.sort_by(None if key == "mark" else key)

    def sort_by(self, column: str | None) -> None:
        self.sort_column = column
        self.sort_reversed = False
        self.resort()

    def resort(self) -> None:
        """Show the current rows in the new order (and the arrow on the sorted header)."""
        if self.view is None:
            return
        for column in self._columns:
            self.table.columns[column.key].label = self.label(column)  # type: ignore[index]
        cursor = self.followed_offer_id()
        if self._pending:
            self.rebuild(self.ordered(self.view), self._columns)
        else:
            order = [offer.id for offer in self.ordered(self.view)]
            self.reorder(order)
            self._order = order
            self.keep_cursor(cursor)
        self.show_summary()

    # ------------------------------------------------------------------ marking and comparing

    def action_mark(self) -> None:
        offer = self.cursor_offer()
        if offer is None:
            return
        if self.marked.pop(offer.id, None) is None:
            self.marked[offer.id] = offer
        self.table.update_cell(
            offer.id, "mark", Tag(offer.id, offer.id in self.marked, self.mark_style)
        )
        self.show_summary()

    def action_unmark_all(self) -> None:
        for offer_id in list(self.marked):
            del self.marked[offer_id]
            if offer_id in self._shown:
                self.table.update_cell(offer_id, "mark", Tag(offer_id, False, self.mark_style))
        self.show_summary()

    def action_compare(self) -> None:
        count = len(self.marked)
        if not 2 <= count <= 4:
            self.notify(
                f"Mark 2 to 4 offers to compare them (space marks the offer under the cursor, "
                f"u unmarks all); {count} marked.",
                severity="warning",
            )
            return
        estimates = self.view.usd_per_mtok if self.view is not None else {}
        self.app.push_screen(
            CompareScreen(
                list(self.marked.values()),
                {i: estimates[i] for i in self.marked if i in estimates},
                self.shown_query.model,
                self.freshness.now,
            )
        )

    # ------------------------------------------------------------------ renting

    @on(DataTable.RowSelected, "#inventory-table")
    def row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_rent()

    def action_rent(self) -> None:
        offer = self.cursor_offer()
        if offer is None or self.core is None:
            self.notify("No offer to rent: wait for the menu, or loosen the filter.")
            return
        adapter = self.core.providers.get(offer.provider)
        self.app.push_screen(
            RentScreen(
                self.core,
                offer,
                consumer=self.last_consumer,
                can_stop=adapter is not None and adapter.can_stop,
            ),
            self.rent_answered,
        )

    def rent_answered(self, request: ProvisionRequest | None) -> None:
        if request is None:
            return
        self.last_consumer = request.consumer
        self.renting += 1
        self.show_summary()
        self.rent(request)

    @work(group="inventory-rent", exit_on_error=False)
    async def rent(self, request: ProvisionRequest) -> None:
        """Rent in a worker that nothing cancels (never exclusive: a second rental must not
        cut the first short); the core never retries a create on its own either."""
        assert self.core is not None
        try:
            session = await self.core.provision(request)
        except UserError as err:
            self.post_message(self.RentFailed(f"Nothing was rented: {err.message}"))
            return
        except Exception:
            log.exception("renting %s failed unexpectedly", request.offer_id)
            self.post_message(
                self.RentFailed(
                    "The rental stopped on an unexpected error (details in the log file); "
                    "the Sessions pane shows whether a session was made."
                )
            )
            return
        self.post_message(self.Rented(session))

    @on(Rented)
    def rented(self, message: Rented) -> None:
        session = message.session
        self.renting -= 1
        self.show_summary()
        self.notify(
            f"Renting {session.offer.gpu_count}x {session.offer.gpu_name} on {session.provider} "
            f"as session {session.id}."
        )
        self.post_message(ShowSession(session.id))

    @on(RentFailed)
    def rent_failed(self, message: RentFailed) -> None:
        self.renting -= 1
        self.show_summary()
        self.notify(message.reason, severity="error", timeout=15)

    # ------------------------------------------------------------------ status lines

    def show_providers(self) -> None:
        if self.view is None:
            return
        line = Content(" · ").join(
            provider_line(report, self.freshness.now) for report in self.view.providers
        )
        if line.plain != self._strip:  # most ticks change nothing: skip the relayout
            self._strip = line.plain
            self.query_one("#inventory-providers", Static).update(line)

    def show_summary(self) -> None:
        parts: list[Content | str] = []
        if self.refreshing:
            parts.append(Content.styled("refreshing…", "bold $accent"))
        if self.renting:
            parts.append(Content.styled(f"renting ({self.renting})…", "bold $accent"))
        view = self.view
        if view is None:
            parts.append("fetching offers…" if self.refreshing else "no offers yet")
        else:
            parts.append(f"{len(view.offers)} of {view.total} offers")
            if view.hidden:
                parts.append(f"{view.hidden} hidden after failed rentals")
            parts.append(self.order_text())
            if self.shown_query.model:
                parts.append(f"$/Mtok: {self.shown_query.model}")
        if self.marked:
            parts.append(f"{len(self.marked)} marked")
        self.query_one("#inventory-summary", Static).update(Content(" · ").join(parts))

    def order_text(self) -> str:
        """`sorted by $/GPU-h ▲` for a column sort, else the filter's own order."""
        if self.sort_column is not None:
            column = BY_KEY[self.sort_column]
            descending = column.descending_first != self.sort_reversed
            return f"sorted by {column.label} {'▼' if descending else '▲'}"
        descending = self.shown_query.descending != self.sort_reversed
        label = QUERY_SORT_LABELS[self.shown_query.sort]
        return f"filter order: {label} {'▼' if descending else '▲'}"
