"""Drive the cockpit on a fake clock against the in-process simulator.

`cockpit()` opens a `Market` (tests/core/market.py) and runs the real app over its core with
`App.run_test()`. `Cockpit.settle()` lets the core, the app's workers and its message queue
finish what they started, moving the fake clock only when everything waits on it, so a test
reads a screen the app has truly reached. `StableCore` opens the same kind of core inside the
app's own event loop, for snapshot tests (which run the app themselves) and screenshots.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
from rich.cells import cell_len
from textual.pilot import Pilot
from textual.strip import Strip
from textual.widget import Widget
from textual.worker import WorkerState

from gpushop_tui.clock import FakeClock
from gpushop_tui.config import Settings
from gpushop_tui.core.shopper import Shopper
from gpushop_tui.demo import demo_marketplace
from gpushop_tui.providers.base import RateLimiter
from gpushop_tui.providers.registry import ADAPTERS
from gpushop_tui.tui.app import GpushopApp, wait_ready
from gpushop_tui.tui.inventory import InventoryPane
from gpushop_tui.tui.widgets.offer_table import OfferTable
from tests.core.market import Market, open_market

W = TypeVar("W", bound=Widget)

ALWAYS_RUNNING = {"follow", "tunnels"}
"""Worker groups that live as long as the app, or until the user closes them (the event feed, a
tunnel held open), so settling ignores them."""

STABLE_START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
"""Where the snapshot clock starts: a fixed Monday morning, UTC."""


@dataclass
class Cockpit:
    app: GpushopApp
    pilot: Pilot[None]
    market: Market

    @property
    def shopper(self) -> Shopper:
        assert self.app.shopper is not None
        return self.app.shopper

    def busy_workers(self) -> list[object]:
        return [
            w
            for w in self.app.workers
            if w.state in (WorkerState.PENDING, WorkerState.RUNNING)
            and w.group not in ALWAYS_RUNNING
        ]

    async def settle(self, limit_s: float = 600) -> None:
        """Run until the core and every worker are done or parked on the fake clock.

        Moves fake time (a second at a time, at most `limit_s`) only when every busy worker and
        core task waits on the clock, e.g. a rental whose create call is being retried.
        """
        moved = 0.0
        async with asyncio.timeout(60):
            while True:
                await self.market.quiet()
                await self.pilot.pause()
                busy = self.busy_workers()
                if not busy:
                    await self.market.quiet()
                    await self.pilot.pause()
                    if not self.busy_workers() and not self.app.query_one(OfferTable).filling:
                        return
                    continue
                if self.market.clock.sleeping >= len(self.market._tasks()) + len(busy):
                    if moved >= limit_s:
                        raise AssertionError(f"workers still busy after {limit_s:g} s: {busy}")
                    await self.market.clock.advance(1)
                    moved += 1
                else:
                    for _ in range(50):
                        await asyncio.sleep(0)

    async def advance(self, seconds: float, step_s: float = 1.0) -> None:
        """Move fake time on, let everything react, then run the app's one-second tick."""
        await self.market.advance(seconds, step_s)
        await self.settle()
        self.app.tick()
        await self.pilot.pause()

    async def press(self, *keys: str) -> None:
        await self.pilot.press(*keys)
        await self.settle()

    async def offer_list(self) -> OfferTable:
        """The Inventory pane's offer list, switched to with `v` (as a user would) when the
        pane shows its comparison by GPU."""
        pane = self.app.query_one(InventoryPane)
        if pane.comparing:
            await self.press("v")
        return pane.table

    def one(self, selector: str | type[W], expect: type[W] | None = None) -> W:
        """The one widget matching `selector` on the current screen."""
        if expect is None:
            return self.app.screen.query_one(selector)  # type: ignore[arg-type, return-value]
        return self.app.screen.query_one(selector, expect)  # type: ignore[arg-type]

    def toasts(self) -> list[str]:
        """Every notification shown so far (and not yet expired), oldest first."""
        return [n.message for n in self.app._notifications]


def cannot_stop(monkeypatch: pytest.MonkeyPatch, provider: str, *, descriptor: bool = True) -> None:
    """Make `provider` unable to stop an instance and keep its disk: its adapter (the core
    refuses) and, unless `descriptor` is False, its descriptor (the faces stop offering it)."""
    [adapter] = [a for a in ADAPTERS if a.INFO.name == provider]
    monkeypatch.setattr(adapter, "can_stop", False)
    if descriptor:
        info = adapter.INFO
        capabilities = dataclasses.replace(info.capabilities, can_stop=False)
        monkeypatch.setattr(adapter, "INFO", dataclasses.replace(info, capabilities=capabilities))


@asynccontextmanager
async def cockpit(
    monkeypatch: pytest.MonkeyPatch,
    home: Path,
    *,
    size: tuple[int, int] = (120, 40),
    providers: tuple[str, ...] = ("vastai", "tensordock", "bluelobster"),
    supervise: bool = True,
    prepare: Callable[[Market], Awaitable[None]] | None = None,
) -> AsyncIterator[Cockpit]:
    """The real app over a `Market` core, running headless at `size`.

    `prepare` runs against the market before the app starts (e.g. to hand the supervisor lease
    to another process).
    """
    async with open_market(monkeypatch, home, providers=providers) as market:
        if prepare is not None:
            await prepare(market)

        async def opener(stack: AsyncExitStack, settings: Settings) -> Shopper:
            return market.shopper

        app = GpushopApp(market.shopper.settings, opener=opener, supervise=supervise)
        async with app.run_test(size=size, notifications=True) as pilot:
            await wait_ready(app)
            ride = Cockpit(app, pilot, market)
            await ride.settle()
            yield ride


class StableCore:
    """A core on a fake clock over the seeded simulator, opened inside the app's own loop.

    Everything it shows is fixed: the clock starts at `STABLE_START`, the simulator's world is
    seeded, and session ids count up (`s00001`, ...).
    """

    def __init__(self, home: Path, seed: int = 3) -> None:
        self.home = home
        self.seed = seed
        self.market: Market | None = None

    async def __call__(self, stack: AsyncExitStack, settings: Settings) -> Shopper:
        clock = FakeClock(STABLE_START)
        demo = await stack.enter_async_context(demo_marketplace(settings, self.seed, clock))
        shopper = await Shopper.open(demo.settings, clock=clock, secrets=demo.secrets)
        stack.push_async_callback(shopper.aclose)
        for adapter in shopper._providers.values():
            if adapter is not None:
                adapter.http.limiter = RateLimiter(clock, None)
        ids = itertools.count(1)
        shopper._lifecycle.new_session_id = lambda: f"s{next(ids):05d}"
        self.market = Market(clock, demo.simulator, shopper, self.home)
        return shopper

    async def ride(self, app: GpushopApp, pilot: Pilot[None]) -> Cockpit:
        """A `Cockpit` over the running app, once its core is open and settled."""
        await wait_ready(app)
        assert self.market is not None
        ride = Cockpit(app, pilot, self.market)
        await ride.settle()
        return ride


FRAME = str.maketrans({chr(c): " " for c in range(0x2500, 0x25A0)})
"""Box-drawing and block characters: frames and bars, not words."""


def read_by_run(strip: Strip) -> str:
    """One screen line as a screenshot's text is read: each styled run on its own, without
    the spaces at its edges, placed at the column where the run starts."""
    line = ""
    column = 0
    for segment in strip:
        words = segment.text.strip()
        if words:
            line = line.ljust(column) + words if len(line) < column else line + words
        column += cell_len(segment.text)
    return line


def run_together(app: GpushopApp, widget: Widget) -> list[tuple[str, str]]:
    """The lines of `widget` whose words differ when read run by run: (on screen, by run)."""
    region = widget.region
    strips = app.screen._compositor.render_strips()
    differ = []
    for y in range(region.y, region.bottom):
        strip = strips[y].crop(region.x, region.right)
        shown, by_run = strip.text.translate(FRAME), read_by_run(strip).translate(FRAME)
        if shown.split() != by_run.split():
            differ.append((shown.rstrip(), by_run.rstrip()))
    return differ
