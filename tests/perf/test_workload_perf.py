"""Workload figures (issue 19), printed, gating nothing.

1. From `provision` to a healthy vLLM endpoint on the simulator in fast timing, on the fake
   clock: where the simulated seconds go, read from the session's audit trail.
2. A tunnel's added latency per request on loopback: the same `GET /health` straight to the
   stand-in server's real port, then through `Shopper.tunnel` (an SSH direct-tcpip channel).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gpushop_tui.models import SessionStatus
from tests.core.market import Market, open_market

pytestmark = pytest.mark.perf

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
REQUESTS = 200


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> AsyncIterator[Market]:
    async with open_market(monkeypatch, isolated_env) as opened:
        yield opened


async def test_provision_to_a_healthy_endpoint_and_the_tunnels_cost(market: Market) -> None:
    offer = await market.offer("vastai", "4090")
    session = await market.provision(offer, workload={"kind": "vllm", "model": MODEL})
    ready = await market.until(session.id, lambda s: s.status == SessionStatus.RUNNING, step_s=0.25)
    events = await market.audit(session.id)
    start = ready.created_at
    print(f"\nprovision -> healthy vLLM endpoint, fast timing, fake clock: "
          f"{(ready.state_entered_at - start).total_seconds():.2f} s")  # fmt: skip
    for event in sorted(events, key=lambda e: e.at):
        print(f"  +{(event.at - start).total_seconds():6.2f} s  {event.message}")

    instance = market.instance(ready)
    workload = market.world.nodes.workload(instance)
    assert workload is not None and workload.server is not None
    direct_port = workload.server.port
    direct: list[float] = []
    tunneled: list[float] = []
    async with market.shopper.tunnel(session.id) as tunnel, httpx.AsyncClient() as client:
        tunnel_base = tunnel.url.removesuffix("/v1")
        for _ in range(REQUESTS):
            for base, times in (
                (f"http://127.0.0.1:{direct_port}", direct),
                (tunnel_base, tunneled),
            ):
                started = time.perf_counter()
                answer = await client.get(f"{base}/health")
                times.append(time.perf_counter() - started)
                assert answer.status_code == 200
    added = statistics.median(tunneled) - statistics.median(direct)
    print(
        f"GET /health over loopback, {REQUESTS} each (kept-alive connections): "
        f"direct median {statistics.median(direct) * 1000:.2f} ms, "
        f"through the tunnel {statistics.median(tunneled) * 1000:.2f} ms "
        f"(p95 {sorted(tunneled)[int(REQUESTS * 0.95)] * 1000:.2f} ms): "
        f"the tunnel adds {added * 1000:.2f} ms a request"
    )
