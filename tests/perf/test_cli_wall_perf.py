"""Wall time of whole one-shot commands against the standalone simulator (issue 18 §15).

Two figures, printed, not gating: `gpushop inventory 'provider=vastai gpu=4090' -o json` beside
the official `vastai search offers` on the same simulated Vast API (runs interleaved, so a busy
machine slows both alike), and a cold `gpushop inventory` with three and with all five providers
answering every request after 300 ms, as a multiple of one request (RunPod's menu takes two
GraphQL requests, one after the other: its data centres, then every price in one aliased query).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop_tui.providers.registry import PROVIDERS
from tests.conftest import ROOT, running_sim, sim_env

pytestmark = pytest.mark.perf

RUNS = 7
LATENCY_S = 0.3
VASTAI = Path("/tmp/vastai-venv/bin/vastai")


@pytest.fixture
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with running_sim(tmp_path_factory.mktemp("sim-state"), seed=7) as info:
        yield info


def _timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), argv
    return elapsed


def _summary(times: list[float]) -> str:
    return (
        f"median {statistics.median(times) * 1000:.0f} ms "
        f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f})"
    )


def test_gpushop_beside_the_official_vast_client(sim: dict[str, Any], tmp_path: Path) -> None:
    if not VASTAI.exists():
        pytest.fail(f"{VASTAI} is missing: .ci/run installs the official client there")
    env = os.environ | sim_env(sim, "vastai") | {"PYTHONPATH": str(ROOT)}
    ours = [sys.executable, "-m", "gpushop_tui", "inventory", "provider=vastai gpu=4090",
            "-o", "json"]  # fmt: skip
    official = [str(VASTAI), "--url", sim["vastai"].removesuffix("/api/v0"), "--api-key",
                sim["keys"]["vastai"], "--raw", "search", "offers",
                "gpu_name=RTX_4090"]  # fmt: skip
    gpushop_times: list[float] = []
    vastai_times: list[float] = []
    for run in range(RUNS):
        home = {"GPUSHOP_HOME": str(tmp_path / f"home-{run}"), "HOME": str(tmp_path)}
        gpushop_times.append(_timed(ours, env | home))
        vastai_times.append(_timed(official, env | home))
    ratio = statistics.median(gpushop_times) / statistics.median(vastai_times)
    print(
        f"\ngpushop inventory 'provider=vastai gpu=4090' -o json: {_summary(gpushop_times)}"
        f"\nvastai --raw search offers gpu_name=RTX_4090:       {_summary(vastai_times)}"
        f"\ngpushop / vastai: {ratio:.2f}x over {RUNS} interleaved runs"
    )


THREE = ("vastai", "tensordock", "bluelobster")
"""The providers before RunPod and Lambda, for the figure beside all five."""


def test_cold_cli_inventory_of_three_and_of_five_slow_providers(
    sim: dict[str, Any], tmp_path: Path
) -> None:
    for provider in PROVIDERS:
        fault = {"provider": provider, "kind": "latency", "delay_s": LATENCY_S}
        httpx.post(f"{sim['control']}/faults", json=fault).raise_for_status()
    argv = [sys.executable, "-m", "gpushop_tui", "inventory", "-o", "json"]
    lines = []
    for providers in (THREE, PROVIDERS):
        env = os.environ | sim_env(sim, *providers) | {"PYTHONPATH": str(ROOT)}
        times = [
            _timed(argv, env | {"GPUSHOP_HOME": str(tmp_path / f"home-{len(providers)}-{run}")})
            for run in range(RUNS)
        ]
        lines.append(
            f"cold gpushop inventory, {len(providers)} providers at {LATENCY_S * 1000:.0f} ms "
            f"a request: {_summary(times)}, {statistics.median(times) / LATENCY_S:.2f}x one request"
        )
    print("\n" + "\n".join(lines))
