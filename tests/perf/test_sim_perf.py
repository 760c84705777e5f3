"""Simulator figures: a 1,000-offer Vast search over loopback, and the standalone start."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import httpx
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.sim.runner import run_simulator
from tests.conftest import ROOT

pytestmark = pytest.mark.perf


async def test_vast_search_for_1000_offers() -> None:
    async with (
        run_simulator(seed=0, clock=FakeClock()) as sim,
        httpx.AsyncClient(base_url=sim.urls["vastai"]) as http,
    ):
        query = {"rentable": {"eq": True}, "limit": 1000, "order": [["dph_total", "asc"]]}
        timings = []
        for _ in range(30):
            started = time.perf_counter()
            response = await http.post("/bundles/", json=query)
            offers = response.json()["offers"]
            timings.append(time.perf_counter() - started)
            assert len(offers) == 1000
    median_ms = statistics.median(timings) * 1000
    worst_ms = max(timings) * 1000
    print(f"\nPOST /bundles/ limit=1000: median {median_ms:.1f} ms, worst {worst_ms:.1f} ms")
    assert median_ms < 100


def test_standalone_simulator_start(tmp_path) -> None:
    timings = []
    for run in range(5):
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "gpushop_tui.sim", "--state", str(tmp_path / str(run))],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
        )
        try:
            assert process.stdout is not None
            json.loads(process.stdout.readline())
            timings.append(time.perf_counter() - started)
        finally:
            process.terminate()
            process.wait(timeout=10)
    median_s = statistics.median(timings)
    print(f"\nstandalone simulator start: median {median_s * 1000:.0f} ms over 5 starts")
    assert median_s < 2.0
