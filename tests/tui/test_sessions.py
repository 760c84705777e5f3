"""The Sessions pane against the simulator on the fake clock: rows, countdowns and actions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import Input, Static, TabbedContent

from gpushop_tui.core.costs import cost_of
from gpushop_tui.core.supervisor import EXPIRY_WARNING, IDLE_SAMPLE_S, LEASE
from gpushop_tui.models import Session
from gpushop_tui.tui import fmt
from gpushop_tui.tui.dialogs import ConfirmScreen, TextScreen
from gpushop_tui.tui.pane import ShowSession
from gpushop_tui.tui.sessions import ExtendScreen, SessionsPane
from gpushop_tui.tui.widgets.datatable_cells import TickingTable
from gpushop_tui.tui.widgets.session_detail import LABEL_WIDTH
from gpushop_tui.tui.widgets.session_table import OPEN_COLUMNS, SessionTable
from tests.core.market import Market
from tests.tui.harness import Cockpit, cockpit


async def open_pane(ride: Cockpit) -> SessionsPane:
    await ride.press("2")
    return ride.one("#sessions-pane", SessionsPane)


def cell(pane: SessionsPane, session_id: str, column: str) -> str:
    return pane.table.get_cell(session_id, column).plain


def detail_line(pane: SessionsPane, label: str) -> str:
    """The detail panel's value for `label` (it shows the session under the cursor)."""
    for line in pane.detail.text.splitlines():
        if line.startswith(f"{label} "):
            return line[len(label) :].strip()
    raise AssertionError(f"no {label!r} line in the detail panel:\n{pane.detail.text}")


def node_readings(pane: SessionsPane) -> list[str]:
    """GPU utilization, memory and temperature as the detail panel's instance line says them."""
    parts = detail_line(pane, "instance").split(" · ")
    return [part.split(" ", 1)[1] for part in parts[1:]]


def screen_lines(ride: Cockpit) -> list[str]:
    """The whole screen as text, one string per terminal line."""
    return [strip.text for strip in ride.app.screen._compositor.render_strips()]


def dialog_text(ride: Cockpit) -> str:
    return "\n".join(str(w.render()) for w in ride.app.screen.query(Static))


def mmss(left: timedelta) -> str:
    """`12m 05s`: how the pane writes a span under an hour (written out again, not imported)."""
    minutes, seconds = divmod(int(left.total_seconds()), 60)
    return f"{minutes}m {seconds:02d}s"


async def until(ride: Cockpit, session_id: str, check: Callable[[Session], bool]) -> Session:
    """Move the clock (and the app) on, two seconds at a time, until the stored session passes."""
    for _ in range(300):
        stored = await ride.shopper.session(session_id)
        if check(stored):
            return stored
        await ride.advance(2)
    raise AssertionError(f"session {session_id} never got there")


async def running(ride: Cockpit, **fields: object) -> Session:
    """Rent through the market, run the core until the session runs, then let the app catch up."""
    session = await ride.market.running(**fields)
    await ride.advance(0)
    return session


async def test_a_rental_appears_then_runs_with_its_countdown(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        pane = await open_pane(ride)
        assert pane.table.row_count == 0
        assert pane.empty.display
        session = await ride.market.provision()
        await ride.settle()
        assert cell(pane, session.id, "status") in ("pending", "provisioning")
        assert not pane.empty.display
        stored = await until(ride, session.id, lambda s: s.status == "running")
        assert cell(pane, stored.id, "status") == "running"
        assert detail_line(pane, "instance").startswith("live · ")
        now = ride.shopper.clock.now()
        left = stored.expires_at - now
        assert cell(pane, stored.id, "expires") == mmss(left)
        await ride.advance(30)
        later = ride.shopper.clock.now()
        assert later - now >= timedelta(seconds=30)
        assert cell(pane, stored.id, "expires") == mmss(left - (later - now))
        painted = pane.table.render_line(1 + pane.table.get_row_index(stored.id)).text
        assert mmss(left - (later - now)) in painted
        assert cell(pane, stored.id, "cost") == fmt.spent(cost_of(stored, later))


async def test_countdown_turns_warning_then_danger_and_says_so(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        pane = await open_pane(ride)
        session = await running(ride, hours=1)
        theme = ride.app.theme_variables
        expires = pane.table.get_cell(session.id, "expires")
        assert not expires.plain.startswith("!")
        assert theme["text-warning"] not in str(expires.style)

        left = session.expires_at - ride.shopper.clock.now()
        await ride.advance((left - EXPIRY_WARNING).total_seconds() + 60, step_s=60)
        expires = pane.table.get_cell(session.id, "expires")
        assert expires.plain == "! " + mmss(session.expires_at - ride.shopper.clock.now())
        assert expires.plain.startswith("! 14m")
        assert theme["text-warning"] in str(expires.style)
        ride.app.theme = "textual-light"  # colours follow the theme switcher
        await ride.settle()
        light = ride.app.theme_variables["text-warning"]
        assert light != theme["text-warning"]
        assert light in str(pane.table.get_cell(session.id, "expires").style)
        theme = ride.app.theme_variables

        await ride.advance(12 * 60, step_s=60)
        expires = pane.table.get_cell(session.id, "expires")
        assert expires.plain == "!! " + mmss(session.expires_at - ride.shopper.clock.now())
        assert expires.plain.startswith("!! 2m")
        assert theme["text-error"] in str(expires.style)
        assert "its reservation ends in" in pane.detail.text  # the supervisor's warning


async def test_an_unsupervised_session_past_its_expiry_says_overdue(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env, supervise=False) as ride:
        pane = await open_pane(ride)
        session = await running(ride, hours=1)
        left = session.expires_at - ride.shopper.clock.now()
        await ride.advance(left.total_seconds() + 62, step_s=60)
        expires = pane.table.get_cell(session.id, "expires")
        assert expires.plain == "overdue " + mmss(ride.shopper.clock.now() - session.expires_at)
        assert expires.plain.startswith("overdue 1m")
        assert ride.app.theme_variables["text-error"] in str(expires.style)


async def test_extend_by_two_hours_moves_the_expiry(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        pane = await open_pane(ride)
        session = await running(ride, hours=1)
        await ride.press("e")
        assert isinstance(ride.app.screen, ExtendScreen)
        assert ride.one("#extend-hours", Input).value == "1"
        await ride.press("backspace", "2", "enter")
        assert not isinstance(ride.app.screen, ExtendScreen)
        stored = await ride.shopper.session(session.id)
        assert stored.expires_at == session.expires_at + timedelta(hours=2)
        now = ride.shopper.clock.now()
        assert cell(pane, session.id, "expires") == fmt.countdown(stored.expires_at, now)
        assert cell(pane, session.id, "expires").startswith("2h 5")
        assert any(f"session {session.id} now expires" in t for t in ride.toasts())

        await ride.press("e", "backspace", "1", "2", "enter")  # past the 12 h hard max
        assert any("past its hard max" in t for t in ride.toasts())
        assert (await ride.shopper.session(session.id)).expires_at == stored.expires_at


async def test_done_closes_the_session_into_the_history(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        pane = await open_pane(ride)
        session = await running(ride)
        assert session.id in pane.table.rows
        await ride.press("d")
        ask = ride.app.screen
        assert isinstance(ask, ConfirmScreen)
        assert "destroy its instance and everything on its disk" in str(
            ask.query_one(".dialog-body", Static).render()
        )
        await ride.press("n")
        assert (await ride.shopper.session(session.id)).status == "running"
        await ride.press("d", "y")
        assert any(f"session {session.id}: stopping" in t for t in ride.toasts())
        gone = await until(ride, session.id, lambda s: s.closed)
        assert gone.status == "ended"
        await ride.advance(0)
        assert session.id not in pane.table.rows
        assert session.id in pane.history_table.rows
        ended = pane.history_table.get_cell(session.id, "ended").plain
        assert ended == "ended (destroyed)"  # its instance is gone, not merely stopped
        final = pane.history_table.get_cell(session.id, "cost").plain
        assert final == fmt.spent(cost_of(gone, ride.shopper.clock.now()))
        assert pane.history.collapsed
        assert pane.history.title == "History: 1 closed session"
        assert ride.market.live_instances(session.provider) == []
        assert pane.empty.display


async def test_force_delete_names_the_session_and_its_cost_and_asks(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        pane = await open_pane(ride)
        session = await running(ride)
        await ride.advance(600, step_s=60)
        await ride.press("x")
        assert isinstance(ride.app.screen, ConfirmScreen)
        assert ride.app.screen.danger
        text = dialog_text(ride)
        stored = await ride.shopper.session(session.id)
        assert session.id in text
        assert f"1x {session.offer.gpu_name}" in text
        assert f"Cost so far: {fmt.spent(cost_of(stored, ride.shopper.clock.now()))}" in text
        assert cost_of(stored, ride.shopper.clock.now()) > 0
        await ride.press("n")
        assert not isinstance(ride.app.screen, ConfirmScreen)
        assert (await ride.shopper.session(session.id)).status == "running"
        assert ride.market.instance(session).phase(ride.market.world.now()) == "running"

        await ride.press("x", "y")
        assert any(f"session {session.id}: stopping" in t for t in ride.toasts())
        await until(ride, session.id, lambda s: s.closed)
        await ride.advance(0)
        assert session.id in pane.history_table.rows
        assert ride.market.live_instances(session.provider) == []


async def test_the_ssh_command_is_shown_and_copied(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        pane = await open_pane(ride)
        session = await running(ride)
        assert pane.check_action("tunnel", ()) is None  # no endpoint: `o` is shown disabled
        await ride.press("s")
        assert isinstance(ride.app.screen, TextScreen)
        text = dialog_text(ride)
        assert session.key_path is not None and session.ssh_port is not None
        assert f"-i {session.key_path}" in text
        assert f"-p {session.ssh_port}" in text
        assert "copied" in text
        assert ride.app.clipboard.startswith("ssh -i ")
        assert f"-p {session.ssh_port}" in ride.app.clipboard
        assert any("copied to the clipboard" in t for t in ride.toasts())


async def test_the_timeline_lists_the_sessions_audit_events(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await open_pane(ride)
        session = await running(ride)
        events = await ride.market.audit(session.id)
        assert len(events) >= 3
        for key in ("t", "enter"):
            await ride.press(key)
            assert isinstance(ride.app.screen, TextScreen)
            text = dialog_text(ride)
            for event in events:
                assert event.message in text
            now = ride.shopper.clock.now()
            assert fmt.local_time(events[0].at, now) in text
            await ride.press("escape")


async def test_gpu_readings_show_once_the_supervisor_sampled_the_node(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        pane = await open_pane(ride)
        session = await running(ride, idle_timeout_min=30)
        assert ride.shopper.node_sample(session.id) is None
        assert node_readings(pane)[0] == "—"
        assert cell(pane, session.id, "idle") == "not sampled yet"
        ride.market.instance(session).gpu_util = 73
        await ride.advance(IDLE_SAMPLE_S + 15, step_s=5)
        sample = ride.shopper.node_sample(session.id)
        assert sample is not None and sample[1].gpus
        gpu = sample[1].gpus[0]
        assert gpu.memory_used_mib is not None and gpu.memory_total_mib is not None
        assert node_readings(pane) == [
            "73%",
            f"{gpu.memory_used_mib / 1024:.1f}/{gpu.memory_total_mib / 1024:.0f} GiB",
            f"{gpu.temperature_c:.0f}°C",
        ]
        assert cell(pane, session.id, "idle") == "busy: GPU 73%"


async def test_select_waits_for_a_session_that_has_not_arrived_yet(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env) as ride:
        await ride.press("3")
        pane = ride.app.query_one("#sessions-pane", SessionsPane)
        first = await ride.market.provision()
        await ride.settle()
        ride.shopper._lifecycle.new_session_id = lambda: "future000001"
        ride.app.post_message(ShowSession("future000001"))
        await ride.settle()
        assert ride.one("#panes", TabbedContent).active == "sessions"
        assert pane.table.row_count == 1
        await ride.market.provision(await ride.market.offer("tensordock"))
        await ride.settle()
        assert list(pane.table.rows) == [first.id, "future000001"]
        assert pane.table.cursor_row == 1
        pane.select(first.id)
        assert pane.table.cursor_row == 0


async def test_the_essential_columns_fit_in_80_columns(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env, size=(80, 24)) as ride:
        pane = await open_pane(ride)
        session = await running(ride)
        await ride.market.provision(await ride.market.offer("tensordock"))
        await ride.settle()
        table = pane.table
        columns = [c.key.value for c in table.ordered_columns]
        assert columns[:5] == ["id", "gpu", "status", "expires", "cost"]
        essential = sum(c.get_render_width(table) for c in table.ordered_columns[:5])
        assert essential <= table.scrollable_content_region.width
        assert table.scroll_x == 0
        assert table.region.height >= 4  # header and both rows stay visible
        assert cell(pane, session.id, "expires").startswith("5")


async def test_the_ticking_table_paints_what_changed_and_nothing_stale() -> None:
    """Its own cell cache must never show an old value, after updates, removals or sorts."""

    class Table(App[None]):
        def compose(self) -> ComposeResult:
            yield TickingTable(id="t")

    app = Table()
    async with app.run_test(size=(60, 10)) as pilot:
        table = app.query_one(TickingTable)
        table.add_column("id", key="id")
        table.add_column("left", key="left", width=8)
        for n in range(3):
            table.add_row(Text(f"row{n}"), Text(f"{n}m 00s"), key=f"r{n}")
        await pilot.pause()

        def line(y: int) -> str:
            return table.render_line(y).text

        assert "row1" in line(2) and "1m 00s" in line(2)
        table.update_cell("r1", "left", Text("0m 59s"))
        await pilot.pause()
        assert "0m 59s" in line(2)
        assert "0m 00s" in line(1) and "2m 00s" in line(3)
        table.remove_row("r0")
        await pilot.pause()
        assert "row1" in line(1) and "0m 59s" in line(1)
        assert "row2" in line(2) and "2m 00s" in line(2)
        table.update_cell("r2", "left", Text("1m 59s"))
        table.sort("id", key=lambda cell: cell.plain, reverse=True)
        await pilot.pause()
        assert "row2" in line(1) and "1m 59s" in line(1)
        assert "row1" in line(2) and "0m 59s" in line(2)


async def test_a_row_off_screen_is_written_when_it_scrolls_into_view() -> None:
    """The tick skips rows out of view; scrolling to one shows what it says now, not before."""

    class Sessions(App[None]):
        def compose(self) -> ComposeResult:
            yield SessionTable(id="t")

    app = Sessions()
    async with app.run_test(size=(120, 6)) as pilot:  # the header and five rows in view
        table = app.query_one(SessionTable)
        cells = {key: (key, "") for key, _, _ in OPEN_COLUMNS}
        for n in range(10):
            table.add_session(f"s{n:05d}", {**cells, "expires": (f"{n}m 00s", "")})
        await pilot.pause()
        table.show_cell("s00001", "expires", ("0m 59s", ""))
        table.show_cell("s00009", "expires", ("8m 59s", ""))
        assert table.get_cell("s00001", "expires").plain == "0m 59s"
        assert table.get_cell("s00009", "expires").plain == "9m 00s"  # not written yet
        table.action_scroll_bottom()
        await pilot.pause()
        assert table.get_cell("s00009", "expires").plain == "8m 59s"
        assert "8m 59s" in table.render_line(table.size.height - 1).text


async def test_a_viewer_shows_no_node_readings_but_its_actions_still_work(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hand_lease_away(market: Market) -> None:
        shopper = market.shopper
        assert await shopper._store.acquire_lease(
            LEASE, "build-box:4242:abc123", 4242, shopper.clock.now(), 3600
        )

    async with cockpit(monkeypatch, isolated_env, prepare=hand_lease_away) as ride:
        pane = await open_pane(ride)
        assert pane.read_only
        session = await running(ride, idle_timeout_min=30)
        await ride.advance(IDLE_SAMPLE_S + 15, step_s=5)
        assert node_readings(pane) == ["—"] * 3
        await ride.press("d", "y")
        await until(ride, session.id, lambda s: s.closed)
        await ride.advance(0)
        assert session.id in pane.history_table.rows
        assert ride.market.live_instances(session.provider) == []


async def test_at_120_columns_whose_where_and_idle_show_without_scrolling(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env, size=(120, 40)) as ride:
        pane = await open_pane(ride)
        session = await running(ride, consumer="alice")
        await ride.settle()
        table = pane.table
        right_edges: dict[str, int] = {}
        edge = 0
        for key, column in table.columns.items():
            edge += column.get_render_width(table)
            right_edges[str(key.value)] = edge
        visible = table.scrollable_content_region.width
        for key in ("consumer", "provider", "idle"):
            assert right_edges[key] <= visible, (key, right_edges, visible)
        assert cell(pane, session.id, "consumer") == "alice"
        assert cell(pane, session.id, "provider") == session.provider


async def test_the_detail_panel_follows_the_cursor_and_ticks(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env, size=(120, 40)) as ride:
        pane = await open_pane(ride)
        first = await running(
            ride, offer=await ride.market.offer("tensordock"), hours=1, idle_timeout_min=30
        )
        second = await running(ride, storage="keep")
        assert pane.detail.display
        assert pane.table.cursor_row == 0
        assert pane.detail.border_title == f"session {first.id}"
        view = await ride.shopper.session_view(first.id)
        assert view.ssh_command is not None
        assert detail_line(pane, "ssh") == view.ssh_command[: len(detail_line(pane, "ssh"))]
        now = ride.shopper.clock.now()
        assert detail_line(pane, "cost") == (
            f"{fmt.spent(view.cost_at(now))} so far · {fmt.rate(view.burn_usd_per_hour)} now"
        )
        expiry = detail_line(pane, "expiry")
        assert expiry.startswith(f"{fmt.countdown(first.expires_at, now)} (at ")
        assert "then done: destroy its instance and everything on its disk" in expiry
        verdict = view.session.idle_reason or "not sampled yet"
        idle = detail_line(pane, "idle stop")
        assert idle == f"after 30 min idle · then done, as at expiry · now: {verdict}"
        hard_max = detail_line(pane, "hard max")
        assert hard_max.startswith(fmt.countdown(first.hard_max_at, now))
        assert "then force delete, whatever the storage policy" in hard_max
        assert detail_line(pane, "kill path").startswith("this gpushop supervises")
        events = await ride.shopper.audit_log(first.id, limit=3)
        lines = pane.detail.text.splitlines()
        assert [line[10:] for line in lines[-3:]] == [
            f"{fmt.local_time(e.at, now)}  {e.severity.value:<8} {e.message}" for e in events
        ]

        await ride.advance(30)
        later = ride.shopper.clock.now()
        assert detail_line(pane, "expiry").startswith(fmt.countdown(first.expires_at, later))
        assert detail_line(pane, "cost").startswith(fmt.spent(view.cost_at(later)))

        await ride.press("down")
        assert pane.detail.border_title == f"session {second.id}"
        assert "keep the disk (the disk still bills)" in detail_line(pane, "expiry")
        assert detail_line(pane, "idle stop") == "off"
        last = (await ride.shopper.audit_log(second.id, limit=1))[0]
        assert pane.detail.text.endswith(last.message)


async def test_at_120_columns_the_table_has_no_horizontal_scrollbar(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env, size=(120, 40)) as ride:
        pane = await open_pane(ride)
        for provider in ("vastai", "tensordock", "bluelobster"):
            await running(ride, offer=await ride.market.offer(provider), consumer="research-team")
        table = pane.table
        assert table.row_count == 3
        assert table.virtual_size.width <= table.scrollable_content_region.width
        assert not table.show_horizontal_scrollbar
        assert table.scroll_x == 0


async def test_at_80x24_the_detail_panel_waits_for_i_and_leaves_the_table_its_rows(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env, size=(80, 24)) as ride:
        pane = await open_pane(ride)
        for provider in ("vastai", "tensordock", "bluelobster"):
            await running(ride, offer=await ride.market.offer(provider))
        assert not pane.detail.display
        assert pane.table.region.height >= 1 + 3  # the header and every row
        await ride.press("i")
        assert pane.detail.display
        assert pane.detail.region.height > 0
        assert pane.table.region.height >= 1 + 3
        assert pane.detail.region.y >= pane.table.region.bottom  # below the table, not over it
        await ride.press("i")
        assert not pane.detail.display


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 50)])
async def test_every_word_of_the_pane_is_separated_and_aligned(
    size: tuple[int, int], isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cockpit(monkeypatch, isolated_env, size=size) as ride:
        pane = await open_pane(ride)
        await running(ride, idle_timeout_min=30)
        await running(ride, offer=await ride.market.offer("tensordock"), consumer="bob")
        if not pane.detail.display:
            await ride.press("i")
        screen = screen_lines(ride)
        table = pane.table
        header = screen[table.region.y]
        shown = header[table.region.x : table.region.right]
        x = 0
        for column in table.ordered_columns:
            width = column.get_render_width(table)
            if x + width > len(shown):
                break
            label = shown[x : x + width]
            assert label.strip() == column.label.plain, (label, header)
            assert label.startswith(" ") and label.endswith(" "), label  # padded both sides
            x += width
        detail = pane.detail.region
        starts: set[int] = set()
        for line in screen[detail.y + 1 : detail.bottom]:  # below its title
            text = line[detail.x : detail.right]
            label, value = text[: 1 + LABEL_WIDTH], text[1 + LABEL_WIDTH :]
            assert label.startswith(" ") and label.endswith(" "), text  # padded, then a gap
            assert value.strip() and not value.startswith(" "), text
            starts.add(len(text) - len(value))
        assert starts == {1 + LABEL_WIDTH}  # every value starts in one column


async def test_the_panel_shows_the_workload_and_o_opens_a_tunnel_to_its_endpoint(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = "Qwen/Qwen2.5-0.5B-Instruct"
    async with cockpit(monkeypatch, isolated_env) as ride:
        await open_pane(ride)
        session = await running(ride, workload={"kind": "vllm", "model": model, "benchmark": False})
        pane = ride.app.query_one(SessionsPane)
        assert pane.check_action("tunnel", ()) is True  # the cursor is on a session with one
        if not pane.detail.display:
            await ride.press("i")
        assert detail_line(pane, "workload") == f"vllm {model} · healthy"
        assert detail_line(pane, "endpoint") == (
            "http://127.0.0.1:8000/v1 on the node · o opens a tunnel"
        )
        await ride.press("o")
        url = await _tunnel_url(ride, pane, session.id)
        assert detail_line(pane, "endpoint") == f"{url} (tunnel open; o closes it)"
        token = (await ride.shopper.endpoint(session.id)).token
        assert token not in " ".join(ride.toasts())  # the token is never shown
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(
                f"{url}/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert answer.status_code == 200
        await ride.press("o")
        for _ in range(200):
            if session.id not in pane.tunnels:
                break
            await ride.pilot.pause()
        assert session.id not in pane.tunnels
        assert "closed" in ride.toasts()[-1]


async def _tunnel_url(ride: Cockpit, pane: SessionsPane, session_id: str) -> str:
    """The tunnel's local URL once its worker has it (it opens an SSH connection first)."""
    for _ in range(400):
        if session_id in pane.tunnels:
            return pane.tunnels[session_id]
        await ride.pilot.pause()
    raise AssertionError("the tunnel never opened")
