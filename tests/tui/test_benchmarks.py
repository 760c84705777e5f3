"""The Benchmarks pane lists the measurements and sets the inventory's $/Mtok model."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Select, Static

from gpushop_tui.core import benchmarks
from gpushop_tui.models import Benchmark
from gpushop_tui.tui.benchmarks import BenchmarksPane, keyed
from gpushop_tui.tui.inventory import InventoryPane
from tests.tui.harness import Cockpit, cockpit


def as_cli(m: Benchmark) -> list[str]:
    """MODEL, GPU, N, PROVIDER, TOK/S, $/H, $/Mtok, SOURCE as `gpushop benchmarks` prints them."""
    price, cost = m.price_per_hour, benchmarks.cost_of(m)
    return [
        m.model,
        m.gpu_name,
        str(m.gpu_count),
        m.provider or "-",
        f"{m.tokens_per_second:g}",
        "-" if price is None else f"{price:.3f}",
        "-" if cost is None else f"{cost:.3f}",
        m.source,
    ]


def shown(ride: Cockpit) -> list[list[str]]:
    table = ride.one("#benchmarks-table", DataTable)
    return [[str(cell) for cell in table.get_row_at(n)] for n in range(table.row_count)]


def chosen_models(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The models the app hands the inventory pane, in order."""
    calls: list[str | None] = []
    set_model = InventoryPane.set_model

    def recording(pane: InventoryPane, model: str | None) -> None:
        calls.append(model)
        set_model(pane, model)

    monkeypatch.setattr(InventoryPane, "set_model", recording)
    return calls


async def test_the_table_lists_every_measurement_like_the_cli(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("4")
        measured = await ride.shopper.benchmark_measurements()
        assert len(measured) == len(benchmarks.seed())
        listed = sorted(measured, key=lambda m: (m.model, -m.tokens_per_second))
        assert shown(ride) == [as_cli(m) for m in listed]
        table = ride.one("#benchmarks-table", DataTable)
        by_key = {key.value: [str(cell) for cell in table.get_row(key)] for key in table.rows}
        ranked = keyed(await ride.shopper.rank_benchmarks("all"))
        assert by_key == {key: as_cli(r.measurement) for key, r in ranked.items()}
        models = {m.model for m in measured}
        summary = str(ride.one("#benchmarks-summary", Static).render())
        assert summary.startswith(f"{len(measured)} measurements of {len(models)} models")
        assert ride.app.focused is table


async def test_choosing_a_model_ranks_it_and_sets_the_inventorys_model(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = chosen_models(monkeypatch)
    async with cockpit(monkeypatch, isolated_env) as ride:
        models = sorted(await ride.shopper.benchmark_models())
        wanted = "llama3.1:8b"
        await ride.press("4", "m")
        chooser = ride.one("#benchmarks-model", Select)
        assert ride.app.focused is chooser
        await ride.press("enter", *["down"] * (models.index(wanted) + 1), "enter")
        assert chooser.value == wanted
        assert calls == [wanted]
        pane = ride.one(BenchmarksPane)
        assert pane.model == wanted
        ranked = benchmarks.best(await ride.shopper.benchmark_measurements(wanted))
        assert shown(ride) == [as_cli(r.measurement) for r in ranked]
        summary = str(ride.one("#benchmarks-summary", Static).render())
        fastest = ranked[0].measurement
        cheapest = benchmarks.cheapest(r.measurement for r in ranked)[0]
        assert summary.startswith(f"{wanted}: {len(ranked)} measurements, fastest first.")
        assert f"Fastest: {fastest.gpu_name} ({fastest.provider}) " in summary
        assert f"${cheapest.usd_per_mtok:.3f}/Mtok" in summary

        await ride.press("n")
        assert calls == [wanted, None]
        assert chooser.value == ""
        assert len(shown(ride)) == len(benchmarks.seed())


async def test_enter_on_a_row_chooses_its_model(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = chosen_models(monkeypatch)
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("4")
        first_mistral = [row[0] for row in shown(ride)].index("mistral:7b")
        await ride.press(*["down"] * first_mistral, "enter")
        assert calls == ["mistral:7b"]
        assert ride.one("#benchmarks-model", Select).value == "mistral:7b"
        assert {row[0] for row in shown(ride)} == {"mistral:7b"}
        await ride.press("enter")  # the same model again changes nothing
        assert calls == ["mistral:7b"]


async def test_an_import_shows_after_reload_without_losing_the_cursor(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("4", "down", "down")
        table = ride.one("#benchmarks-table", DataTable)
        under_cursor = shown(ride)[2]
        data = tmp_path / "mine.csv"
        data.write_text(
            "gpu_name,model,tokens_per_second,price_per_hour\nH100 SXM,mistral:7b,250,2.5\n"
        )
        await ride.shopper.import_benchmarks(data)
        await ride.press("r")
        assert len(shown(ride)) == len(benchmarks.seed()) + 1
        assert shown(ride)[table.cursor_row] == under_cursor
        imported = [row for row in shown(ride) if row[-1] == "mine.csv"]
        assert len(imported) == 1 and imported[0][4:7] == ["250", "2.500", "2.778"]
