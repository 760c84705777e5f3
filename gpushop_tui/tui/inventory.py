"""The Inventory pane: the merged offer menu, compared by GPU or listed offer by offer, filtered
as you type and sorted by any column.

The pane opens on the comparison (`GpuCompareTable`: one row per GPU model and count, each
provider's best price side by side); `v` switches to the offer list and back, and `enter` on a
comparison row lists that row's offers by writing the filter that selects them.
The filter bar takes the query language (`gpushop_tui.query`). Each keystroke parses the text;
a bad token is shown marked with the parser's reason and the table keeps its last good rows; a
good query re-reads the core's cache (never the network) in a worker. Refreshes run in a worker
on `r` and every `inventory_refresh_s` of core-clock time; a provider that fails keeps its rows
(their age marked `!` while they are kept from an earlier fetch) and the status strip says why.
In the list, `space` marks offers, `c` compares 2-4 marked ones, `enter` opens the rent dialog.
The list itself, and what keeps it cheap with thousands of rows, is `OfferTable`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.events import Resize
from textual.message import Message
from textual.widgets import DataTable, Input, Label, Static

from gpushop_tui.core import (
    Event,
    Facade,
    InventoryComparison,
    InventoryRefreshed,
    InventoryView,
    ProviderReport,
)
from gpushop_tui.errors import UserError
from gpushop_tui.models import OfferQuery, OfferSort, ProvisionRequest, Session
from gpushop_tui.query import QueryError, format_query, parse_query
from gpushop_tui.tui import fmt
from gpushop_tui.tui.compare import CompareScreen
from gpushop_tui.tui.pane import CorePane, Remember, ShowSession
from gpushop_tui.tui.prefs import Prefs
from gpushop_tui.tui.rent import RentScreen
from gpushop_tui.tui.widgets.gpu_compare_table import GpuCompareTable
from gpushop_tui.tui.widgets.offer_table import (
    BY_KEY,
    MEASURED_MARK,
    Freshness,
    OfferTable,
    bold,
)

log = logging.getLogger(__name__)

QUERY_SORT_LABELS: dict[OfferSort, str] = {
    "price": "$/h", "gpu_price": "$/GPU-h", "vram_price": "$/GB of VRAM", "vram": "VRAM",
    "reliability": "Rel", "usd_per_mtok": "$/Mtok",
}  # fmt: skip
"""How the filter's `sort=` keys read, in the words of the table's headers."""


def provider_line(report: ProviderReport, now: datetime | None) -> Content:
    """One provider in the status strip: `vastai ok 1309 offers`, `tensordock stale 2m 10s:
    why (42 offers kept)`, `bluelobster error: why`, `vastai not configured`; an answer the
    provider capped adds `, capped: filter to see the rest`."""
    name = report.provider
    capped = (", capped: filter to see the rest", "$warning") if report.truncated else ""
    match report.status:
        case "ok":
            return Content.assemble((f"{name} ok ", "$success"), f"{report.offers} offers", capped)
        case "stale":
            age = fmt.age(report.fetched_at, now) if now is not None else "?"
            return Content.assemble(
                (f"{name} stale {age}", "$warning"),
                f": {report.error} ({report.offers} offers kept)",
                capped,
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
        Binding("escape", "leave_filter", "Back to the table", key_display="esc"),
        Binding("r", "refresh", "Refresh"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse"),
        Binding("space", "mark", "Mark"),
        Binding("u", "unmark_all", "Unmark all", show=False),
        Binding("c", "compare", "Compare"),
        Binding("enter", "rent", "Rent"),
        Binding("enter", "drill", "Its offers"),
        Binding("v", "toggle_view", "GPUs ⇄ offers"),
    ]
    LIST_ACTIONS = frozenset(
        ("cycle_sort", "reverse_sort", "mark", "unmark_all", "compare", "rent")
    )
    """What only the offer list answers (hidden from the footer while comparing)."""

    @dataclass
    class ViewReady(Message):
        """The menu for `query`, read from the cache; `generation` orders the reads."""

        view: InventoryView
        query: OfferQuery
        generation: int

    @dataclass
    class ComparisonReady(Message):
        """The comparison for `query`, read from the cache; `generation` orders the reads."""

        comparison: InventoryComparison
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
        """The core took the rental asked for in `dialog`: the session is provisioning."""

        session: Session
        dialog: RentScreen

    @dataclass
    class RentFailed(Message):
        """The rental asked for in `dialog` did not go through; `reason` is the sentence for
        the user."""

        reason: str
        dialog: RentScreen

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.parsed = OfferQuery()
        """The last query that parsed."""
        self.model: str | None = None
        """The model chosen on the benchmarks pane; a `model=` in the filter wins over it."""
        self.models: set[str] | None = None
        self.view: InventoryView | None = None
        self.shown_query = OfferQuery()
        self.freshness = Freshness()
        """The core clock at the last tick and the stale providers: the age cells read it."""
        self.table = OfferTable(self.freshness, id="inventory-table")
        self.compare_table = GpuCompareTable(id="inventory-compare")
        self.comparing = True
        """Whether the comparison by GPU is shown (the first view) rather than the offer list."""
        self.comparison: InventoryComparison | None = None
        self.providers: list[ProviderReport] = []
        """Where each provider stands, from the latest answer of either view."""
        self.before_drill: tuple[str, str] | None = None
        """(filter before, filter written) of the last drill into a row: going back to the
        comparison restores the first while the second is still in the box."""
        self.refreshing = False
        self.renting = 0
        self.last_refresh_at: datetime | None = None
        self.last_consumer: str | None = None
        """The consumer of the last rental in this app run: the rent dialog starts with it."""
        self._generation = 0
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
        yield self.compare_table
        self.table.display = False
        yield self.table
        yield Static(id="inventory-providers")

    def focus_main(self) -> None:
        self.shown_table().focus()

    def shown_table(self) -> OfferTable | GpuCompareTable:
        return self.compare_table if self.comparing else self.table

    # ------------------------------------------------------------------ hooks from the app

    def remembered(self, prefs: Prefs) -> None:
        """Open with the filter the user last submitted."""
        if prefs.inventory_filter:
            self.query_one("#inventory-filter", Input).value = prefs.inventory_filter

    def core_ready(self, shopper: Facade) -> None:
        super().core_ready(shopper)
        self.freshness.now = shopper.clock.now()
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

    def resync(self) -> None:
        """Read the menu again from the cache, without asking providers for a new one."""
        self.read_view()

    def tick(self, now: datetime) -> None:
        self.freshness.now = now
        self.show_providers()
        self.table.redraw_ages()
        if self.shopper is None or self.refreshing or self.last_refresh_at is None:
            return
        every_s = self.shopper.settings.inventory_refresh_s
        if (now - self.last_refresh_at).total_seconds() >= every_s:
            self.refresh_offers()

    def set_model(self, model: str | None) -> None:
        """Show $/M tokens for `model` (None: no model column unless the filter names one)."""
        self.model = model
        self.read_view()

    # ------------------------------------------------------------------ the filter

    def action_focus_filter(self) -> None:
        self.query_one("#inventory-filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.focus_main()
        self.remember_filter()

    def remember_filter(self) -> None:
        """Keep the filter the user left (when it parses) for the next start."""
        box = self.query_one("#inventory-filter", Input)
        if not box.has_class("bad-query"):
            self.post_message(Remember(inventory_filter=box.value))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`escape` leaves the filter box, and the footer says so only while it has focus; the
        footer offers each view's own keys only."""
        if action == "leave_filter":
            return self.query_one("#inventory-filter", Input).has_focus
        if action == "drill":
            return self.comparing
        return not (self.comparing and action in self.LIST_ACTIONS)

    def selected_id(self) -> str | None:
        """The offer under the cursor; on a comparison row, the row's best offer."""
        if self.comparing:
            row = self.compare_table.cursor_gpu_row()
            return None if row is None else row.best_offer_id
        return self.table.cursor_offer_id()

    @on(Input.Changed, "#inventory-filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.parse_filter(event.value)

    @on(Input.Submitted, "#inventory-filter")
    def filter_submitted(self) -> None:
        self.focus_main()
        self.remember_filter()

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
        assert self.shopper is not None
        self.post_message(self.ModelsLoaded(await self.shopper.benchmark_models()))

    @on(ModelsLoaded)
    def models_loaded(self, message: ModelsLoaded) -> None:
        self.models = message.models
        self.parse_filter(self.query_one("#inventory-filter", Input).value)

    def read_view(self) -> None:
        """Ask for the shown view of the current query, from the cache; newer asks win."""
        if self.shopper is None:
            return
        self._generation += 1
        if self.comparing:
            self.read_comparison(self.effective_query(), self._generation)
        else:
            self.read_cache(self.effective_query(), self._generation)

    @work(exclusive=True, group="inventory-view", exit_on_error=False)
    async def read_comparison(self, query: OfferQuery, generation: int) -> None:
        assert self.shopper is not None
        try:
            comparison = await self.shopper.cached_comparison(query)
        except UserError as err:
            self.post_message(self.ViewFailed(fmt.problem(err), generation))
            return
        self.post_message(self.ComparisonReady(comparison, query, generation))

    @work(exclusive=True, group="inventory-view", exit_on_error=False)
    async def read_cache(self, query: OfferQuery, generation: int) -> None:
        assert self.shopper is not None
        try:
            view = await self.shopper.cached_offers(query)
        except UserError as err:
            self.post_message(self.ViewFailed(fmt.problem(err), generation))
            return
        self.post_message(self.ViewReady(view, query, generation))

    @on(ViewReady)
    def view_ready(self, message: ViewReady) -> None:
        if message.generation != self._generation:
            return  # an answer to an older query: a newer one is on its way
        self.view = message.view
        self.shown_query = message.query
        self.providers = message.view.providers
        stale = {r.provider for r in message.view.providers if r.status == "stale"}
        restaled, self.freshness.stale = stale != self.freshness.stale, stale
        self.freshness.style = bold(self.app.theme_variables.get("warning"))
        if self.show_rows() or restaled:
            self.table.redraw_ages()
        self.show_providers()
        self.show_summary()

    @on(ComparisonReady)
    def comparison_ready(self, message: ComparisonReady) -> None:
        if message.generation != self._generation:
            return
        self.comparison = message.comparison
        self.shown_query = message.query
        self.providers = message.comparison.providers
        self.compare_table.show(message.comparison, self.size.width or self.app.size.width)
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
        if self.shopper is None or self.refreshing:
            return
        self.refreshing = True
        self.last_refresh_at = self.shopper.clock.now()
        self.show_summary()
        self.fetch_offers()

    @work(exclusive=True, group="inventory-refresh", exit_on_error=False)
    async def fetch_offers(self) -> None:
        assert self.shopper is not None
        problem = None
        try:
            await self.shopper.offers(refresh=True)
        except UserError as err:
            problem = fmt.problem(err)
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

    def show_rows(self) -> bool:
        """Bring the table to the view, at the pane's width. True when rows kept in place now
        show a fresh fetch (their ages moved)."""
        if self.view is None:
            return False
        width = self.size.width or self.app.size.width
        query = self.shown_query
        view = self.view
        return self.table.show(
            view.offers, view.usd_per_mtok, view.measured, query.model, width, query.sort
        )

    def on_resize(self, event: Resize) -> None:
        if self.table.needs_relayout(event.size.width):
            self.show_rows()
        if self.comparison is not None and self.compare_table.needs_relayout(event.size.width):
            self.compare_table.show(self.comparison, event.size.width)

    # ------------------------------------------------------------------ the two views

    def action_toggle_view(self) -> None:
        """Switch between the comparison and the offer list; back on the comparison, a filter
        still as a drill wrote it returns to what it was before."""
        filter_box = self.query_one("#inventory-filter", Input)
        self.show_view(comparing=not self.comparing)
        if self.comparing and self.before_drill and filter_box.value == self.before_drill[1]:
            filter_box.value = self.before_drill[0]  # its Changed message re-reads the view
        self.before_drill = None

    def show_view(self, *, comparing: bool) -> None:
        """Show one view and read its answer to the current filter."""
        self.comparing = comparing
        self.compare_table.display = comparing
        self.table.display = not comparing
        self.focus_main()
        self.refresh_bindings()
        self.read_view()

    @on(DataTable.RowSelected, "#inventory-compare")
    def compare_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_drill()

    def action_drill(self) -> None:
        """List the offers of the comparison row under the cursor: the filter gains that GPU
        model and count (the user sees it, and may edit it)."""
        row = self.compare_table.cursor_gpu_row()
        if row is None:
            self.notify("No GPU row to open: wait for the menu, or loosen the filter.")
            return
        filter_box = self.query_one("#inventory-filter", Input)
        drilled = self.parsed.model_copy(
            update={
                "gpu": row.gpu_name,
                "gpu_exact": True,
                "min_gpus": row.gpu_count,
                "max_gpus": row.gpu_count,
                "limit": None,
            }
        )
        text = format_query(drilled)
        self.before_drill = (filter_box.value, text)
        self.parsed = drilled
        with filter_box.prevent(Input.Changed):
            filter_box.value = text
        self.show_view(comparing=False)

    # ------------------------------------------------------------------ sorting

    def action_cycle_sort(self) -> None:
        """Sort by the next column; after the last, back to the filter's own order."""
        self.table.cycle_sort()
        self.resorted()

    def action_reverse_sort(self) -> None:
        self.table.reverse_sort()
        self.resorted()

    @on(DataTable.HeaderSelected, "#inventory-table")
    def header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.table.header_chosen(str(event.column_key.value))
        self.resorted()

    def resorted(self) -> None:
        """The table took a new order: the summary names it (once there is a menu)."""
        if self.view is not None:
            self.show_summary()

    # ------------------------------------------------------------------ marking and comparing

    def action_mark(self) -> None:
        offer = self.table.cursor_offer()
        if offer is None:
            return
        self.table.toggle_mark(offer)
        self.show_summary()

    def action_unmark_all(self) -> None:
        self.table.unmark_all()
        self.show_summary()

    def action_compare(self) -> None:
        marked = self.table.marked
        count = len(marked)
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
                list(marked.values()),
                {i: estimates[i] for i in marked if i in estimates},
                self.shown_query.model,
                self.freshness.now,
                self.view.measured if self.view is not None else frozenset(),
            )
        )

    # ------------------------------------------------------------------ renting

    @on(DataTable.RowSelected, "#inventory-table")
    def row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_rent()

    def action_rent(self) -> None:
        offer = self.table.cursor_offer()
        if offer is None or self.shopper is None:
            self.notify("No offer to rent: wait for the menu, or loosen the filter.")
            return
        self.app.push_screen(
            RentScreen(
                self.shopper,
                offer,
                self.rent_confirmed,
                consumer=self.last_consumer,
                can_stop=self.shopper.provider_info(offer.provider).capabilities.can_stop,
            )
        )

    def rent_confirmed(self, request: ProvisionRequest, dialog: RentScreen) -> None:
        self.last_consumer = request.consumer
        self.renting += 1
        self.show_summary()
        self.rent(request, dialog)

    @work(group="inventory-rent", exit_on_error=False)
    async def rent(self, request: ProvisionRequest, dialog: RentScreen) -> None:
        """Rent in a worker that nothing cancels (never exclusive: a second rental must not
        cut the first short; the pane's, so closing the dialog does not either); the core
        never retries a create on its own either."""
        assert self.shopper is not None
        try:
            session = await self.shopper.provision(request)
        except UserError as err:
            self.post_message(self.RentFailed(f"Nothing was rented: {fmt.problem(err)}", dialog))
            return
        except Exception:
            log.exception("renting %s failed unexpectedly", request.offer_id)
            self.post_message(
                self.RentFailed(
                    "The rental stopped on an unexpected error (details in the log file); "
                    "the Sessions pane shows whether a session was made.",
                    dialog,
                )
            )
            return
        self.post_message(self.Rented(session, dialog))

    def dialog_open(self, dialog: RentScreen) -> bool:
        """Whether the rent dialog is still on screen (the user may have closed it)."""
        return dialog in self.app.screen_stack

    @on(Rented)
    def rented(self, message: Rented) -> None:
        session = message.session
        self.renting -= 1
        self.show_summary()
        if self.dialog_open(message.dialog):
            message.dialog.went_through()
        self.notify(
            f"Renting {session.offer.gpu_count}x {session.offer.gpu_name} on {session.provider} "
            f"as session {session.id}."
        )
        self.post_message(ShowSession(session.id))

    @on(RentFailed)
    def rent_failed(self, message: RentFailed) -> None:
        self.renting -= 1
        self.show_summary()
        if self.dialog_open(message.dialog):
            message.dialog.refused(message.reason)
        else:
            self.notify(message.reason, severity="error", timeout=15)

    # ------------------------------------------------------------------ status lines

    def show_providers(self) -> None:
        if not self.providers:
            return
        line = fmt.joined(provider_line(report, self.freshness.now) for report in self.providers)
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
        comparison = self.comparison if self.comparing else None
        if comparison is not None:
            parts.append(
                f"{len(comparison.rows)} GPU models and counts from {comparison.offers} of "
                f"{comparison.total} offers"
            )
            if comparison.hidden:
                parts.append(f"{comparison.hidden} hidden after failed rentals")
            parts.append(self.order_text())
            parts.extend(self.mtok_text(any(r.usd_per_mtok_measured for r in comparison.rows)))
        elif view is None or self.comparing:
            parts.append("fetching offers…" if self.refreshing else "no offers yet")
        else:
            parts.append(f"{len(view.offers)} of {view.total} offers")
            if view.hidden:
                parts.append(f"{view.hidden} hidden after failed rentals")
            parts.append(self.order_text())
            parts.extend(self.mtok_text(bool(view.measured)))
        if self.table.marked:
            parts.append(f"{len(self.table.marked)} marked")
        self.query_one("#inventory-summary", Static).update(fmt.joined(parts))

    def mtok_text(self, marked: bool) -> list[str]:
        """`$/Mtok: MODEL` when a model prices the offers, and what `MEASURED_MARK` means when
        a shown estimate has it."""
        model = self.shown_query.model
        if not model:
            return []
        own = f"{MEASURED_MARK} measured on gpushop's own rentals"
        return [f"$/Mtok: {model}", *([own] if marked else [])]

    def order_text(self) -> str:
        """`sorted by $/GPU-h ▲` for a column sort, else the filter's own order."""
        table = self.table
        if table.sort_column is not None and not self.comparing:
            column = BY_KEY[table.sort_column]
            descending = column.descending_first != table.sort_reversed
            return f"sorted by {column.label} {'▼' if descending else '▲'}"
        reversed_here = table.sort_reversed and not self.comparing
        descending = self.shown_query.descending != reversed_here
        label = QUERY_SORT_LABELS[self.shown_query.sort]
        return f"filter order: {label} {'▼' if descending else '▲'}"
