"""Power cycle figures (issue 20), printed, gating nothing.

On the simulator in *real* timing (each provider's boot time as the reference gives it) and the
fake clock: for each provider, how long a stop takes to be confirmed, how long a start takes
until the session runs again (interactive, and with an Ollama workload that is launched again),
what the stopped hour and the running hour cost, and the wall time the core needed for it all.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gpushop_tui.core import costs
from gpushop_tui.models import Session, SessionStatus, WorkloadSpec
from tests.core.market import Market, open_market

pytestmark = pytest.mark.perf


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> AsyncIterator[Market]:
    async with open_market(monkeypatch, isolated_env, timing="real") as opened:
        yield opened


def settled(session: Session) -> bool:
    return session.status in (SessionStatus.RUNNING, SessionStatus.STOPPED) or session.closed


async def cycle(market: Market, provider: str, workload: WorkloadSpec | None) -> str:
    fields = {} if workload is None else {"workload": workload}
    running = await market.provision(await market.offer(provider), **fields)
    running = await market.until(running.id, settled, step_s=5)
    assert running.status == SessionStatus.RUNNING, running.error
    wall = time.perf_counter()
    asked = market.clock.now()
    await market.shopper.stop(running.id, by="perf")
    stopped = await market.until(running.id, settled, step_s=1)
    stop_s = (market.clock.now() - asked).total_seconds()
    await market.advance(3600, step_s=600)
    asked = market.clock.now()
    await market.shopper.start(running.id, by="perf")
    again = await market.until(running.id, settled, step_s=5)
    start_s = (again.state_entered_at - asked).total_seconds()
    assert again.status == SessionStatus.RUNNING, again.error
    wall = time.perf_counter() - wall
    disk = stopped.stopped_price_per_hour or 0.0
    stretches = ", ".join(f"{e.kind.value} ${e.rate_per_hour:.3f}/h" for e in costs.entries(again))
    kind = "interactive" if workload is None else workload.kind
    return (
        f"  {provider:11s} {kind:11s} stop {stop_s:5.0f} s  start->running {start_s:6.0f} s  "
        f"disk ${disk:.4f}/h vs GPU ${again.price_per_hour or 0:.3f}/h  wall {wall:4.1f} s\n"
        f"    cycles: {stretches}"
    )


async def test_stop_and_start_times_per_provider(market: Market) -> None:
    lines = ["\npower cycle on the simulator, real timing, fake clock:"]
    for provider in ("vastai", "tensordock", "bluelobster"):
        lines.append(await cycle(market, provider, None))
    llm = WorkloadSpec(kind="llm", model="llama3.2:1b", benchmark=False)
    lines.append(await cycle(market, "vastai", llm))
    print("\n".join(lines))
