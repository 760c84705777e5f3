"""Side by side: 2-4 marked offers as columns, their attributes as rows, the cheapest per
GPU-hour starred (the star and the word say it; the colour only adds)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import ClassVar

from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from gpushop_tui.models import Offer
from gpushop_tui.tui import fmt


def _or_dash(value: object | None, text: Callable[[object], str] = str) -> str:
    return "—" if value is None else text(value)


def attributes(
    model: str | None,
    estimates: dict[str, float],
    now: datetime | None,
    measured: frozenset[str] = frozenset(),
) -> list[tuple[str, Callable[[Offer], str]]]:
    """The rows of the comparison: a label and how each offer reads on it (an estimate that
    rests on gpushop's own measurements is marked `*`, as in the menu)."""
    rows: list[tuple[str, Callable[[Offer], str]]] = [
        ("Offer", lambda o: o.id),
        ("Provider", lambda o: o.provider),
        ("GPU", lambda o: o.gpu_name),
        ("GPUs", lambda o: str(o.gpu_count)),
        ("VRAM per GPU", lambda o: f"{o.vram_gb:g} GB"),
        ("VRAM in all", lambda o: f"{o.vram_gb * o.gpu_count:g} GB"),
        ("$/h", lambda o: fmt.rate(o.price_per_hour)),
        ("$/GPU-h", lambda o: fmt.rate(o.price_per_gpu_hour)),
    ]
    if model is not None:
        rows.append(
            (
                f"$/Mtok {model}",
                lambda o: fmt.usd(estimates.get(o.id), 3) + ("*" if o.id in measured else ""),
            )
        )
    rows += [
        ("Region", lambda o: o.region or o.country or "—"),
        ("Reliability", lambda o: _or_dash(o.reliability, lambda r: f"{r:.1%}")),
        ("CUDA", lambda o: _or_dash(o.cuda, lambda c: f"{c:g}")),
        ("Net down", lambda o: _or_dash(o.inet_down_mbps, lambda m: f"{m:,.0f} Mb/s")),
        ("vCPUs", lambda o: _or_dash(o.vcpus, lambda v: f"{v:g}")),
        ("RAM", lambda o: _or_dash(o.ram_gb, lambda r: f"{r:,.0f} GB")),
        ("Disk", lambda o: _or_dash(o.disk_gb, lambda d: f"{d:,.0f} GB")),
        ("Interruptible", lambda o: "yes" if o.interruptible else "no"),
        ("Data age", lambda o: "—" if now is None else fmt.age(o.fetched_at, now)),
    ]
    return rows


class CompareScreen(ModalScreen[None]):
    """The marked offers side by side; `escape` closes."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,c", "dismiss", "Close")]

    def __init__(
        self,
        offers: list[Offer],
        estimates: dict[str, float],
        model: str | None,
        now: datetime | None,
        measured: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(classes="dialog")
        self.offers = offers
        self.estimates = estimates
        self.model = model
        self.now = now
        self.measured = measured

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box wide", id="compare-box"):
            yield Static(f"Compare {len(self.offers)} offers", classes="dialog-title")
            with VerticalScroll(classes="dialog-scroll"):
                yield Static(self.table(), id="compare-table")
            mark = (
                "   * measured on gpushop's own rentals"
                if any(o.id in self.measured for o in self.offers)
                else ""
            )
            yield Static(
                f"★ cheapest per GPU-hour{mark}   [b]escape [/b]close", classes="dialog-hint"
            )

    def table(self) -> Table:
        cheapest = min(o.price_per_gpu_hour for o in self.offers)
        best = Style(color=self.app.theme_variables.get("success"), bold=True)
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        table.add_column("")
        for n, offer in enumerate(self.offers, start=1):
            table.add_column(f"#{n} {offer.provider}", overflow="fold")
        for label, read in attributes(self.model, self.estimates, self.now, self.measured):
            cells: list[Text] = []
            for offer in self.offers:
                text = Text(read(offer))
                if label == "$/GPU-h" and offer.price_per_gpu_hour == cheapest:
                    text = Text(f"{read(offer)} ★ cheapest", style=best)
                cells.append(text)
            table.add_row(Text(label, style="bold"), *cells)
        return table
