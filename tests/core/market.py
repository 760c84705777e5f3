"""A whole gpushop core on a fake clock against the in-process simulator, for lifecycle tests.

Time moves only when a test says so. Between moves, `quiet()` lets every background task of the
core (session drivers, HTTP to the simulator, SSH to its nodes) run until each one waits on the
fake clock again, so a test reads a state the core has truly reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.config import load_settings
from gpushop_tui.core.shopper import Shopper
from gpushop_tui.models import AuditEvent, Offer, OfferQuery, ProvisionRequest, Session
from gpushop_tui.providers.base import RateLimiter
from gpushop_tui.providers.registry import PROVIDER_INFOS
from gpushop_tui.secrets import CREDENTIAL_ENV
from gpushop_tui.sim.runner import Simulator, run_simulator
from gpushop_tui.sim.world import SimInstance

T = TypeVar("T")


@dataclass
class Market:
    clock: FakeClock
    sim: Simulator
    shopper: Shopper
    home: Path

    @property
    def world(self) -> Any:
        return self.sim.world

    def _tasks(self) -> list[asyncio.Task[Any]]:
        tasks = [t for t in self.shopper._lifecycle._tasks.values() if not t.done()]
        if self.shopper._supervising is not None and not self.shopper._supervising.done():
            tasks.append(self.shopper._supervising)
        return tasks

    async def quiet(self, extra: asyncio.Future[Any] | None = None) -> None:
        """Run the event loop until every core task (and `extra`) waits on the clock or ended."""
        for _ in range(400_000):
            busy = self._tasks() + ([extra] if extra is not None and not extra.done() else [])
            if not busy or self.clock.sleeping >= len(busy):
                # give I/O completions one more chance to wake anyone before calling it quiet
                for _ in range(20):
                    await asyncio.sleep(0)
                busy = self._tasks() + ([extra] if extra is not None and not extra.done() else [])
                if not busy or self.clock.sleeping >= len(busy):
                    return
            await asyncio.sleep(0)
        raise AssertionError("the core never settled on the clock")

    async def advance(self, seconds: float, step_s: float = 1.0) -> None:
        """Move time on by `seconds`, letting the core work at every `step_s`."""
        await self.quiet()
        left = seconds
        while left > 0:
            move = min(step_s, left)
            await self.clock.advance(move)
            await self.quiet()
            left -= move

    async def run(self, call: Awaitable[T], step_s: float = 1.0, limit_s: float = 3600) -> T:
        """Await `call`, moving the clock whenever everything waits on it."""
        task = asyncio.ensure_future(call)
        waited = 0.0
        while waited <= limit_s:
            await self.quiet(task)
            if task.done():
                return task.result()
            await self.clock.advance(step_s)
            waited += step_s
        task.cancel()
        raise AssertionError(f"the call did not finish in {limit_s:g} s of fake time")

    async def until(
        self,
        session_id: str,
        check: Callable[[Session], bool],
        *,
        step_s: float = 1.0,
        limit_s: float = 3600,
    ) -> Session:
        """Advance time until the stored session passes `check`."""
        waited = 0.0
        while True:
            await self.quiet()
            session = await self.shopper.session(session_id)
            if check(session):
                return session
            if waited > limit_s:
                raise AssertionError(f"session never got there in {limit_s:g} s: {session!r}")
            await self.clock.advance(step_s)
            waited += step_s

    async def offer(self, provider: str = "vastai", gpu: str | None = None) -> Offer:
        """The cheapest offer not yet rented in this world (the menu may be a little stale)."""
        view = await self.shopper.offers(OfferQuery(providers=(provider,), gpu=gpu))  # type: ignore[arg-type]
        taken = self.world.taken[provider]
        free = [o for o in view.offers if o.provider_offer_id not in taken]
        assert free, f"no free {provider} offers"
        return free[0]

    async def provision(self, offer: Offer | None = None, **fields: Any) -> Session:
        offer = offer or await self.offer()
        fields.setdefault("consumer", "alice")
        fields.setdefault("idle_timeout_min", 0)
        request = ProvisionRequest(offer_id=offer.id, **fields)
        return await self.run(self.shopper.provision(request))

    async def running(self, offer: Offer | None = None, **fields: Any) -> Session:
        session = await self.provision(offer, **fields)
        return await self.until(session.id, lambda s: s.status == "running", step_s=2)

    def instance(self, session: Session) -> SimInstance:
        assert session.instance_id is not None
        found = self.world.get(session.provider, session.instance_id)
        assert found is not None
        return found

    def live_instances(self, provider: str) -> list[SimInstance]:
        return list(self.world.live(provider))

    async def audit(self, session_id: str | None = None) -> list[AuditEvent]:
        return await self.shopper.audit_log(session_id, limit=1000)

    async def tick(self, **kwargs: Any) -> Any:
        return await self.run(self.shopper._supervisor.tick(drive=True, **kwargs))

    async def reopen(self) -> None:
        """Stop this gpushop process (its tasks, not the sessions) and start a fresh one."""
        await self.shopper.aclose()
        self.shopper = await open_unlimited(self.clock)


async def open_unlimited(clock: FakeClock) -> Shopper:
    """A `Shopper` whose adapters skip the providers' rate limits (they are tested elsewhere)."""
    shopper = await Shopper.open(load_settings(), clock=clock)
    for adapter in shopper._providers.values():
        if adapter is not None:
            adapter.http.limiter = RateLimiter(clock, None)
    return shopper


@asynccontextmanager
async def open_market(
    monkeypatch: pytest.MonkeyPatch,
    home: Path,
    *,
    timing: Literal["fast", "real"] = "fast",
    providers: tuple[str, ...] = ("vastai", "tensordock", "bluelobster"),
    database_url: str | None = None,
) -> AsyncIterator[Market]:
    """The market; its store on PostgreSQL at `database_url`, else SQLite in `home`."""
    clock = FakeClock()
    if database_url is not None:
        monkeypatch.setenv("GPUSHOP_DATABASE_URL", database_url)
    async with run_simulator(seed=3, clock=clock, timing=timing) as sim:
        for info in PROVIDER_INFOS:
            monkeypatch.setenv(info.base_url_env, sim.urls[info.name])
            if info.name in providers:
                monkeypatch.setenv(CREDENTIAL_ENV[info.name], sim.keys[info.name])
        shopper = await open_unlimited(clock)
        market = Market(clock, sim, shopper, home)
        try:
            yield market
        finally:
            await market.shopper.aclose()
