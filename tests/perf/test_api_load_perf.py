"""`gpushop --serve` under load: GET /api/v1/sessions with 1,000 sessions in the store.

The server is the real `gpushop --serve` process (its supervisor ticking every second against the
simulator); 50 concurrent clients in this process hit it over loopback for a fixed time, each
waiting for its answer before asking again. Throughput and latency percentiles are printed.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop_tui.config import load_settings
from gpushop_tui.models import InstanceState, SessionStatus
from gpushop_tui.store import Store
from tests.conftest import ROOT, run_gpushop, sim_env
from tests.support.factories import make_session

pytestmark = pytest.mark.perf

SESSIONS = 1000
CLIENTS = 50
DURATION_S = 10.0
MIN_RATE = 300.0
MAX_P99_MS = 100.0


async def fill_store(home: Path) -> None:
    settings = load_settings({"GPUSHOP_HOME": str(home)})
    settings.paths.prepare()
    store = await Store.open(settings.paths.db_file)
    now = datetime.now(UTC)
    try:
        for n in range(SESSIONS):
            started = now - timedelta(hours=n % 240)
            await store.insert_session(
                make_session(
                    started,
                    store.install_id,
                    id=f"load{n:06d}",
                    consumer=f"team{n % 20}",
                    status=SessionStatus.STOPPED,
                    instance=InstanceState.GONE,
                    instance_id=str(900000 + n),
                    instance_created_at=started,
                    instance_gone_at=started + timedelta(minutes=50),
                    price_per_hour=0.4,
                )
            )
    finally:
        await store.aclose()


async def hammer(base: str, token: str) -> tuple[list[float], int]:
    """(latencies in s of every answered request, non-200 answers) over DURATION_S."""
    latencies: list[float] = []
    failures = 0
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:
        deadline = time.perf_counter() + DURATION_S

        async def one_client() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                answer = await client.get("/api/v1/sessions")
                latencies.append(time.perf_counter() - started)
                failures += answer.status_code != 200

        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
    return latencies, failures


def test_sessions_list_under_fifty_concurrent_clients(
    tmp_path: Path, standalone_sim: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    asyncio.run(fill_store(home))
    env = (
        os.environ
        | sim_env(standalone_sim, "vastai")
        | {
            "GPUSHOP_HOME": str(home),
            "GPUSHOP_SUPERVISOR_TICK_S": "1",
            "PYTHONPATH": str(ROOT),
        }
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "gpushop_tui", "--serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", server.stdout.readline())
        assert found
        base = found.group(1)
        token = run_gpushop("serve-token", env=env).stdout.strip()
        first = httpx.get(f"{base}/api/v1/sessions", headers={"Authorization": f"Bearer {token}"})
        assert first.status_code == 200, first.text
        latencies, failures = asyncio.run(hammer(base, token))
    finally:
        server.terminate()
        server.wait(timeout=60)
    rate = len(latencies) / DURATION_S
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000
    print(
        f"\nGET /api/v1/sessions, {SESSIONS} sessions stored ({len(first.json()['sessions'])} per "
        f"page), {CLIENTS} clients, {DURATION_S:g} s: {rate:.0f} req/s, p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, max {ordered[-1] * 1000:.1f} ms, {failures} non-200"
    )
    assert failures == 0
    assert rate >= MIN_RATE
    assert p99 < MAX_P99_MS
