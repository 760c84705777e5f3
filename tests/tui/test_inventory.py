"""The inventory pane against the simulator on a fake clock: filter as you type, keep the cursor
across refreshes, sort, say which provider failed while the others stay, compare, fit 80x24."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Input, Static

from gpushop_tui.core import ProviderReport
from gpushop_tui.models import Benchmark, Offer, OfferQuery
from gpushop_tui.sim.faults import HttpFault
from gpushop_tui.tui.compare import CompareScreen, attributes
from gpushop_tui.tui.inventory import InventoryPane, provider_line
from tests.core.market import Market
from tests.tui.harness import Cockpit, cockpit

ESSENTIAL = ("Provider", "GPU", "N", "$/h", "$/GPU-h", "Age")


def pane(ride: Cockpit) -> InventoryPane:
    return ride.app.query_one(InventoryPane)


def offer(ride: Cockpit, offer_id: str) -> Offer:
    """The offer a row of the table shows."""
    shown = pane(ride).table.offer(offer_id)
    assert shown is not None
    return shown


def table(ride: Cockpit) -> DataTable[object]:
    return ride.app.query_one("#inventory-table", DataTable)


async def loaded(ride: Cockpit) -> list[str]:
    """The offer ids in the table, top to bottom, once every row of a rebuild is in."""
    for _ in range(100):
        if not pane(ride).table.filling:
            break
        await ride.pilot.pause()
    return table_ids(ride)


def table_ids(ride: Cockpit) -> list[str]:
    """The offer ids in the table, top to bottom, as it stands."""
    return [str(row.key.value) for row in table(ride).ordered_rows]


def cursor_id(ride: Cockpit) -> str:
    t = table(ride)
    return str(t.coordinate_to_cell_key(Coordinate(t.cursor_row, 0)).row_key.value)


def line(ride: Cockpit, y: int) -> str:
    """What the table draws on its line `y` (0 is the header)."""
    return table(ride).render_line(y).text


def rendered(renderable: object) -> str:
    """A Rich renderable as plain text."""
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(renderable)
    return console.export_text()


def text_of(ride: Cockpit, selector: str) -> str:
    return str(ride.one(selector, Static).render())


async def test_filter_narrows_as_you_type_and_a_bad_token_keeps_the_rows(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("v")  # from the comparison (the first view) to the offer list
        everything = await loaded(ride)
        assert len(everything) == len((await ride.shopper.offers()).offers) > 1000
        assert ride.app.focused is table(ride)  # the first screen answers its keys at once

        await ride.press("slash", *"gpu=4090")
        rtx4090 = await loaded(ride)
        expected = (await ride.shopper.offers(OfferQuery(gpu="4090"))).offers
        assert rtx4090 == [o.id for o in expected]
        assert {offer(ride, i).gpu_name for i in rtx4090} == {"RTX 4090"}
        assert f"{len(rtx4090)} of {len(everything)} offers" in text_of(ride, "#inventory-summary")

        await ride.press(*" prce<1")
        problem = ride.one("#inventory-query-error", Static)
        assert problem.display
        shown = str(problem.render()).splitlines()
        assert "unknown key 'prce' (did you mean 'price'?)" in shown[0]
        assert shown[1:] == ["  gpu=4090 prce<1", "           ^^^^"]  # the caret under the fault
        assert await loaded(ride) == rtx4090  # the table keeps its last good rows

        await ride.press(*["backspace"] * 7, *" price<=0.4")
        assert not problem.display
        cheap = await loaded(ride)
        assert cheap and set(cheap) < set(rtx4090)
        assert all(offer(ride, i).price_per_hour <= 0.4 for i in cheap)


async def test_the_cursor_stays_on_its_offer_across_a_refresh(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("v")  # from the comparison (the first view) to the offer list
        before = await loaded(ride)
        assert table(ride).cursor_row == 0
        await ride.press(*["down"] * 5)
        chosen = cursor_id(ride)
        assert chosen == before[5]
        cheapest = await ride.market.offer()  # the top row: rented elsewhere, so it leaves
        assert cheapest.id == before[0]
        await ride.market.provision(cheapest)
        await ride.press("r")
        after = await loaded(ride)
        assert after == [i for i in before if i != cheapest.id]  # one row left, in place
        assert cursor_id(ride) == chosen  # the cursor followed its offer up a row
        assert table(ride).cursor_row == 4
        assert "refreshing" not in text_of(ride, "#inventory-summary")


async def test_a_refresh_shows_refreshing_and_runs_on_the_core_clock(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("v")  # from the comparison (the first view) to the offer list
        inventory = pane(ride)
        first = inventory.last_refresh_at
        assert first is not None
        inventory.refresh_offers()
        assert text_of(ride, "#inventory-summary").startswith("refreshing…")
        await ride.settle()
        assert not text_of(ride, "#inventory-summary").startswith("refreshing…")
        started = inventory.last_refresh_at
        assert started is not None and started == ride.shopper.clock.now()
        assert "now" in line(ride, 1)
        await ride.advance(30)
        assert line(ride, 1).rstrip().endswith("30s")  # the age column follows the tick
        assert inventory.last_refresh_at == started
        await ride.advance(ride.shopper.settings.inventory_refresh_s - 30)
        assert inventory.last_refresh_at == ride.shopper.clock.now()  # refreshed on the timer


async def test_a_failing_provider_is_reported_while_the_others_stay(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def bluelobster_down(market: Market) -> None:
        market.world.faults.add(HttpFault(provider="bluelobster", status=503, body="down"))

    async with cockpit(monkeypatch, isolated_env, prepare=bluelobster_down) as ride:
        await ride.press("v")  # from the comparison (the first view) to the offer list
        rows = await loaded(ride)
        strip = text_of(ride, "#inventory-providers")
        assert "bluelobster error: " in strip
        assert "vastai ok" in strip and "tensordock ok" in strip
        providers = {i.split(":")[0] for i in rows}
        assert providers == {"vastai", "tensordock"}

        ride.market.world.faults.add(HttpFault(provider="tensordock", status=500))
        await ride.press("r")
        after = await loaded(ride)
        strip = text_of(ride, "#inventory-providers")
        assert "tensordock stale" in strip and "offers kept)" in strip
        assert "vastai ok" in strip and "bluelobster error: " in strip
        assert [i for i in after if i.startswith("tensordock:")] == [
            i for i in rows if i.startswith("tensordock:")
        ]  # its rows stay...
        assert len(after) == len(rows)
        await ride.press("slash", *"provider=tensordock", "enter")
        assert re.search(r" ! \d+s$", line(ride, 1).rstrip())  # ...their age marked as kept


async def test_sort_by_any_column_with_keys_or_a_header_click(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("v")  # from the comparison (the first view) to the offer list

        def values(field: str) -> list[float]:
            return [getattr(offer(ride, i), field) for i in table_ids(ride)]

        await loaded(ride)
        await ride.press("s")  # the first column: provider
        providers = [offer(ride, i).provider for i in await loaded(ride)]
        assert providers == sorted(providers)
        assert "sorted by Provider ▲" in text_of(ride, "#inventory-summary")
        await ride.press(*"ssss", "s")  # N, VRAM, $/h, $/GPU-h
        await loaded(ride)
        assert "sorted by $/GPU-h ▲" in text_of(ride, "#inventory-summary")
        assert values("price_per_gpu_hour") == sorted(values("price_per_gpu_hour"))
        await ride.press("S")
        await loaded(ride)
        assert values("price_per_gpu_hour") == sorted(values("price_per_gpu_hour"), reverse=True)
        assert "$/GPU-h▼" in line(ride, 0)

        t = table(ride)
        x = sum(c.width + 2 for c in list(t.columns.values())[:4]) + 1  # the VRAM header
        await ride.pilot.click(t, offset=(x, 0))
        await ride.settle()
        await loaded(ride)
        assert "sorted by VRAM ▼" in text_of(ride, "#inventory-summary")  # most first
        assert values("vram_gb") == sorted(values("vram_gb"), reverse=True)


async def test_mark_two_offers_and_compare_them(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("v")  # from the comparison (the first view) to the offer list
        ids = await loaded(ride)
        await ride.press("space", "c")
        assert not isinstance(ride.app.screen, CompareScreen)
        assert "Mark 2 to 4 offers to compare them" in ride.toasts()[-1]
        assert line(ride, 1).lstrip().startswith("●")  # the mark is text, not only colour
        await ride.press("down", "down", "space")
        assert "2 marked" in text_of(ride, "#inventory-summary")
        await ride.press("c")
        screen = ride.app.screen
        assert isinstance(screen, CompareScreen)
        shown = rendered(screen.table())
        assert ids[0] in shown and ids[2] in shown
        assert shown.count("★ cheapest") == 1
        await ride.press("escape")
        assert not isinstance(ride.app.screen, CompareScreen)
        await ride.press("space", "u")  # unmark all
        assert "marked" not in text_of(ride, "#inventory-summary")


async def test_a_chosen_model_adds_the_price_per_million_tokens(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("v")  # from the comparison (the first view) to the offer list
        await loaded(ride)
        assert "$/Mtok" not in line(ride, 0)
        pane(ride).set_model("llama3.1:8b")
        await ride.settle()
        await loaded(ride)
        assert "$/Mtok" in line(ride, 0)
        assert "$/Mtok: llama3.1:8b" in text_of(ride, "#inventory-summary")
        await ride.press("slash", *"model=nope")
        problem = str(ride.one("#inventory-query-error", Static).render())
        assert "no benchmark measurements for model 'nope'" in problem


async def test_estimates_from_gpushops_own_measurements_are_marked(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("v", "slash", *"gpu=4090 model=llama3.1:8b", "enter")
        rows = await loaded(ride)
        assert rows and not any(table(ride).get_cell(i, "mtok").text.endswith("*") for i in rows)
        assert "*" not in line(ride, 1)
        assert "measured on gpushop" not in text_of(ride, "#inventory-summary")

        ours = Benchmark(gpu_name="RTX 4090", model="llama3.1:8b", tokens_per_second=190,
                         source="measured", session_id="s00001")  # fmt: skip
        await ride.shopper._inventory.benchmarks.record(ours)
        pane(ride).read_view()  # as a refresh would: the rows stay, their $/Mtok is redrawn
        await ride.settle()
        assert await loaded(ride) == rows
        cells = [table(ride).get_cell(i, "mtok").text for i in rows]
        assert all(cell.startswith("$") and cell.endswith("*") for cell in cells)
        assert f" {cells[0]} " in line(ride, 1), line(ride, 1)  # drawn whole, not cut short
        summary = text_of(ride, "#inventory-summary")
        assert "$/Mtok: llama3.1:8b · * measured on gpushop's own rentals" in summary

        await ride.press("v", "slash", "ctrl+u", *"model=llama3.1:8b sort=usd_per_mtok", "enter")
        lines = compare_lines(ride)
        assert lines[0].rstrip().endswith("$/Mtok")
        marked = [y for y in lines[1:] if y.rstrip().endswith("*")]
        assert marked and all("x RTX 4090 " in y for y in marked)
        assert any("$" in y.split()[-1] and "RTX 4090" not in y for y in lines[1:])
        assert "* measured on gpushop's own rentals" in text_of(ride, "#inventory-summary")


async def test_at_80x24_the_essential_columns_stay_visible(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env, size=(80, 24)) as ride:
        await ride.press("v")  # from the comparison (the first view) to the offer list
        await loaded(ride)
        t = table(ride)
        header = line(ride, 0)
        for label in ESSENTIAL:
            assert f" {label} " in f"{header} "
        assert "Region" not in header  # dropped to make room
        assert t.virtual_size.width <= t.scrollable_content_region.width  # nothing off-screen
        await ride.pilot.resize_terminal(120, 40)
        await ride.settle()
        await loaded(ride)
        assert "Region" in line(ride, 0)  # a wider screen brings the others back


def test_the_provider_strip_says_when_an_answer_was_capped() -> None:
    full = ProviderReport("vastai", "ok", offers=1309)
    capped = ProviderReport("vastai", "ok", offers=3000, truncated=True)
    assert provider_line(full, None).plain == "vastai ok 1309 offers"
    assert provider_line(capped, None).plain == (
        "vastai ok 3000 offers, capped: filter to see the rest"
    )
    stale = ProviderReport("vastai", "stale", offers=3000, error="HTTP 503", truncated=True)
    assert provider_line(stale, None).plain.endswith("kept), capped: filter to see the rest")


def compare_lines(ride: Cockpit) -> list[str]:
    """What the comparison table draws, header first, one line per row."""
    t = ride.app.query_one("#inventory-compare", DataTable)
    return [t.render_line(y).text for y in range(t.row_count + 1)]


async def test_the_pane_opens_on_a_comparison_by_gpu_and_enter_lists_a_rows_offers(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        compare = ride.app.query_one("#inventory-compare", DataTable)
        assert compare.display and not table(ride).display
        assert ride.app.focused is compare
        expected = await ride.shopper.cached_comparison(OfferQuery())
        lines = compare_lines(ride)
        assert lines[0].split()[:5] == ["GPU", "VRAM", "vastai", "tensordock", "bluelobster"]
        assert len(lines) == len(expected.rows) + 1
        shared = next(r for r in expected.rows if len(r.by_provider) == 3)
        shown = next(line for line in lines if f"{shared.gpu_count}x {shared.gpu_name} " in line)
        prices = [f"${b.price_per_hour:.3f}" for b in shared.by_provider.values()]
        assert shown.split()[-5:] == [
            *prices,
            str(shared.offers),
            f"${shared.price_min:.3f}-${shared.price_max:.3f}",
        ]  # side by side, with the offer count and the price range
        assert f"{len(expected.rows)} GPU models and counts from 1365 of 1365 offers" in text_of(
            ride, "#inventory-summary"
        )

        await ride.press("slash", *"model=llama3.1:8b", "enter")
        assert "$/Mtok" in compare_lines(ride)[0]

        await ride.press(*["down"] * expected.rows.index(shared), "enter")
        assert table(ride).display and not compare.display
        box = ride.app.query_one("#inventory-filter", Input)
        assert box.value == (
            f'gpu=="{shared.gpu_name}" n={shared.gpu_count} model=llama3.1:8b'
        )  # the filter that selects the row's offers, there to read and edit
        rows = await loaded(ride)
        assert len(rows) == shared.offers
        assert {(offer(ride, i).gpu_name, offer(ride, i).gpu_count) for i in rows} == {
            (shared.gpu_name, shared.gpu_count)
        }

        await ride.press("v")  # back to the comparison, as it was before the drill
        assert compare.display and box.value == "model=llama3.1:8b"
        assert compare.cursor_row == expected.rows.index(shared)

        # A name inside another ("RTX 3060" in "RTX 3060 Ti"): the drill lists that model only.
        await ride.press("slash", "ctrl+u", "enter")
        within = next(
            r
            for r in expected.rows
            if any(r.gpu_name in o.gpu_name and r.gpu_name != o.gpu_name for o in expected.rows)
        )
        await ride.press("home", *["down"] * expected.rows.index(within), "enter")
        rows = await loaded(ride)
        assert {(offer(ride, i).gpu_name, offer(ride, i).gpu_count) for i in rows} == {
            (within.gpu_name, within.gpu_count)
        }
        assert len(rows) == within.offers


async def test_at_80x24_the_comparison_fits_with_its_columns_apart(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env, size=(80, 24)) as ride:
        compare = ride.app.query_one("#inventory-compare", DataTable)
        header = compare_lines(ride)[0]
        for label in ("GPU", "vastai", "tensordock", "bluelobster", "Offers", "$/h range"):
            assert f" {label} " in f"{header} "
        assert compare.virtual_size.width <= compare.scrollable_content_region.width
        await ride.press("slash", *"model=llama3.1:8b", "enter")
        assert " $/Mtok " in f"{compare_lines(ride)[0]} "
        assert compare.virtual_size.width <= compare.scrollable_content_region.width


async def test_at_80x24_the_filters_sort_column_stays_on_screen(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env, size=(80, 24)) as ride:
        await ride.press("v")
        await loaded(ride)
        assert "Rel" not in line(ride, 0)  # no room for it unless it orders the rows
        await ride.press("slash", *"sort=rel", "enter")
        await loaded(ride)
        assert " Rel " in f"{line(ride, 0)} "
        assert "filter order: Rel ▼" in text_of(ride, "#inventory-summary")
        await ride.press("s")  # a column sort by Provider keeps the filter's column too
        await loaded(ride)
        assert " Rel " in f"{line(ride, 0)} " and "Provider▲" in line(ride, 0)
        await ride.press("slash", *["backspace"] * 8, *"model=llama3.1:8b sort=vram", "enter")
        await loaded(ride)
        assert " VRAM " in f"{line(ride, 0)} "  # at 80 columns a model alone shows $/Mtok, not VRAM
        t = table(ride)
        assert t.virtual_size.width <= t.scrollable_content_region.width


def test_the_side_by_side_marks_an_estimate_from_gpushops_own_measurements() -> None:
    fetched = datetime(2026, 12, 5, tzinfo=UTC)
    offers = [
        Offer(id=f"vastai:{n}", provider="vastai", gpu_name="RTX 4090", gpu_count=1,
              vram_gb=24, price_per_hour=0.3, fetched_at=fetched)
        for n in (1, 2)
    ]  # fmt: skip
    rows = dict(attributes("llama3.1:8b", {"vastai:1": 0.5, "vastai:2": 0.6}, None,
                           frozenset({"vastai:2"})))  # fmt: skip
    read = rows["$/Mtok llama3.1:8b"]
    assert (read(offers[0]), read(offers[1])) == ("$0.500", "$0.600*")
