"""The Benchmarks pane: measured tokens/s by GPU and model, with $ per million tokens.

The table shows what `gpushop benchmarks` lists (every measurement, by model then fastest
first) or, once a model is chosen, what `gpushop benchmarks best -m MODEL` ranks: the core ranks
them all once per load, and a model's rows are its part of each ranking. Choosing a
model here (the chooser, or `enter` on a row) posts `ModelChosen`, and the app sets the
inventory's $/Mtok column to that model; "no model" takes the column away.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import count
from typing import ClassVar

from rich.console import JustifyMethod
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import DataTable, Label, Select, Static

from gpushop_tui.core import Facade, Ranked
from gpushop_tui.errors import UserError
from gpushop_tui.models import Benchmark
from gpushop_tui.tui import fmt
from gpushop_tui.tui.pane import CorePane, ModelChosen

NO_MODEL = ""
"""The chooser's value for "no model"."""
COLUMNS: tuple[tuple[str, str, JustifyMethod], ...] = (
    ("model", "MODEL", "left"),
    ("gpu", "GPU", "left"),
    ("count", "N", "right"),
    ("provider", "PROVIDER", "left"),
    ("tps", "TOK/S", "right"),
    ("price", "$/H", "right"),
    ("usd_mtok", "$/Mtok", "right"),
    ("source", "SOURCE", "left"),
)


@dataclass
class BenchmarksLoaded(Message):
    """Every measurement keyed for the table, by model then fastest first; and the same keys
    fastest first, and cheapest per token first (priced ones only)."""

    measurements: dict[str, Ranked]
    fastest: list[str]
    cheapest: list[str]


def keyed(ranked: list[Ranked]) -> dict[str, Ranked]:
    """Stable row keys: an imported measurement's id, else its place among the shipped seed's
    measurements in this order (imports never move the seed's among themselves)."""
    seed = count()
    return {
        f"db{r.measurement.id}" if r.measurement.id is not None else f"seed{next(seed)}": r
        for r in ranked
    }


def money(value: float | None) -> str:
    """`0.153`, or `-` where unknown: the CLI's $/H and $/Mtok cells."""
    return f"{value:.3f}" if value is not None else "-"


def cells(ranked: Ranked) -> tuple[Text, ...]:
    """MODEL, GPU, N, PROVIDER, TOK/S, $/H, $/Mtok and SOURCE, as `gpushop benchmarks`."""
    m = ranked.measurement
    values = (
        m.model,
        m.gpu_name,
        str(m.gpu_count),
        m.provider or "-",
        f"{m.tokens_per_second:g}",
        money(m.price_per_hour),
        money(ranked.usd_per_mtok),
        m.source,
    )
    return tuple(
        Text(value, justify=justify) for value, (_, _, justify) in zip(values, COLUMNS, strict=True)
    )


class BenchmarksPane(CorePane):
    """Measurements by GPU and model, and the model the inventory prices tokens for."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("m", "choose_model", "Model"),
        Binding("n", "no_model", "No model"),
        Binding("r", "reload", "Reload"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.measurements: dict[str, Ranked] = {}
        """Every measurement by row key, by model then fastest first."""
        self.fastest: list[str] = []
        self.cheapest: list[str] = []
        self.model: str | None = None
        """The model chosen for the inventory's $/Mtok column (None: no model)."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="benchmarks-chooser"):
            yield Label("Inventory $/Mtok model (m)", id="benchmarks-label")
            yield Select(
                [("no model", NO_MODEL)],
                value=NO_MODEL,
                allow_blank=False,
                id="benchmarks-model",
            )
        yield Static("Loading measurements…", id="benchmarks-summary")
        table: DataTable[Text] = DataTable(id="benchmarks-table", cursor_type="row")
        for key, label, justify in COLUMNS:
            table.add_column(Text(label, justify=justify), key=key)
        yield table

    @property
    def table(self) -> DataTable[Text]:
        return self.query_one("#benchmarks-table", DataTable)

    def focus_main(self) -> None:
        self.table.focus()

    # ------------------------------------------------------------------ loading

    def core_ready(self, shopper: Facade) -> None:
        super().core_ready(shopper)
        self.load()

    @work(exclusive=True, group="benchmarks-load", exit_on_error=False)
    async def load(self) -> None:
        assert self.shopper is not None
        try:
            measurements = keyed(await self.shopper.rank_benchmarks("all"))
            fastest = await self.shopper.rank_benchmarks("best")
            cheapest = await self.shopper.rank_benchmarks("cheapest")
        except UserError as exc:
            self.notify(fmt.problem(exc), title="Benchmarks", severity="error")
            return
        key_of = {r.measurement.model_dump_json(): key for key, r in measurements.items()}

        def keys(ranking: list[Ranked]) -> list[str]:
            """The ranking as row keys (one imported meanwhile waits for the next load)."""
            found = (key_of.get(r.measurement.model_dump_json()) for r in ranking)
            return [key for key in found if key is not None]

        self.post_message(BenchmarksLoaded(measurements, keys(fastest), keys(cheapest)))

    @on(BenchmarksLoaded)
    def loaded(self, message: BenchmarksLoaded) -> None:
        self.measurements = message.measurements
        self.fastest, self.cheapest = message.fastest, message.cheapest
        models = sorted({r.measurement.model for r in self.measurements.values()})
        select = self.query_one("#benchmarks-model", Select)
        with select.prevent(Select.Changed):
            select.set_options([("no model", NO_MODEL), *((m, m) for m in models)])
            select.value = self.model if self.model in models else NO_MODEL
        if self.model is not None and self.model not in models:
            self.choose(None)  # its measurements are gone
        else:
            self._show()

    # ------------------------------------------------------------------ choosing a model

    @on(Select.Changed, "#benchmarks-model")
    def model_selected(self, event: Select.Changed) -> None:
        value = event.value
        self.choose(value if isinstance(value, str) and value != NO_MODEL else None)

    @on(DataTable.RowSelected, "#benchmarks-table")
    def row_chosen(self, event: DataTable.RowSelected) -> None:
        assert event.row_key.value is not None
        self.choose(self.measurements[event.row_key.value].measurement.model)

    def choose(self, model: str | None) -> None:
        """Show `model`'s measurements, fastest first, and set the inventory's model."""
        if model == self.model:
            return
        self.model = model
        select = self.query_one("#benchmarks-model", Select)
        with select.prevent(Select.Changed):
            select.value = model or NO_MODEL
        self._show()
        self.post_message(ModelChosen(model))

    def action_choose_model(self) -> None:
        self.query_one("#benchmarks-model", Select).focus()

    def action_no_model(self) -> None:
        self.choose(None)

    def action_reload(self) -> None:
        if self.shopper is not None:
            self.load()

    # ------------------------------------------------------------------ the table

    def _rows(self) -> list[tuple[str, Ranked]]:
        """The rows to show, in order: `benchmarks` (all) or `benchmarks best -m MODEL`."""
        if self.model is None:
            return list(self.measurements.items())
        return self._of_model(self.fastest)

    def _of_model(self, keys: list[str]) -> list[tuple[str, Ranked]]:
        """The chosen model's part of a ranking, in its order."""
        rows = ((key, self.measurements[key]) for key in keys)
        return [(key, r) for key, r in rows if r.measurement.model == self.model]

    def _show(self) -> None:
        """Update the rows in place where the same rows stay in the same order; otherwise
        refill the table, keeping the cursor on its row where that row is still shown."""
        table = self.table
        rows = self._rows()
        if [key.value for key in table.rows] == [key for key, _ in rows]:
            for key, r in rows:
                for (column, _, _), cell in zip(COLUMNS, cells(r), strict=True):
                    if table.get_cell(key, column) != cell:
                        table.update_cell(key, column, cell)
        else:
            current = None
            if table.row_count:
                current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            table.clear()
            for key, r in rows:
                table.add_row(*cells(r), key=key)
            if current is not None and current in table.rows:
                table.move_cursor(row=table.get_row_index(current))
        self._summarize([r.measurement for _, r in rows])

    def _summarize(self, shown: list[Benchmark]) -> None:
        summary = self.query_one("#benchmarks-summary", Static)
        if self.model is None:
            models = {m.model for m in shown}
            summary.update(
                f"{len(shown)} measurements of {len(models)} models, by model then fastest "
                "first. Choose a model (m, or enter on a row) for the inventory's $/Mtok column."
            )
            return
        text = Text.assemble((self.model, "bold"), f": {len(shown)} measurements, fastest first. ")
        if shown:
            fastest = shown[0]
            text.append(f"Fastest: {_config(fastest)} {fastest.tokens_per_second:g} tok/s. ")
        priced = self._of_model(self.cheapest)
        if priced:
            cheapest = priced[0][1]
            text.append(
                f"Cheapest: {_config(cheapest.measurement)} ${money(cheapest.usd_per_mtok)}/Mtok. "
            )
        text.append("The inventory's $/Mtok column uses this model (n: no model).")
        summary.update(text)


def _config(m: Benchmark) -> str:
    """`2x RTX 4090 (vastai)`: the GPU configuration a measurement ran on."""
    count = f"{m.gpu_count}x " if m.gpu_count > 1 else ""
    where = f" ({m.provider})" if m.provider else ""
    return f"{count}{m.gpu_name}{where}"
