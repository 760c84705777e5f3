"""The simulator as its own process: fast start, one JSON line, survives kill -9, clean SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT


def _start(state: Path) -> tuple[subprocess.Popen[str], dict, float]:  # type: ignore[type-arg]
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "gpushop_tui.sim", "--state", str(state), "--seed", "3"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    elapsed = time.perf_counter() - started
    return process, json.loads(line), elapsed


def test_standalone_simulator_keeps_its_world_across_a_crash(tmp_path: Path) -> None:
    state = tmp_path / "state"
    process, info, startup_s = _start(state)
    try:
        print(f"standalone simulator start: {startup_s * 1000:.0f} ms")
        assert startup_s < 2.0
        providers = {"vastai", "tensordock", "bluelobster", "runpod", "lambda"}
        assert set(info) == providers | {"runpod_graphql_base", "control", "keys"}
        assert set(info["keys"]) == providers
        assert info["vastai"].endswith("/api/v0")
        assert info["tensordock"].endswith("/api/v2")
        assert info["bluelobster"].endswith("/api/v1")
        assert info["lambda"].endswith("/api/v1")
        assert info["runpod"] == info["runpod_graphql_base"] + "/v1"
        graphql = httpx.post(
            f"{info['runpod_graphql_base']}/graphql",
            headers={"Authorization": f"Bearer {info['keys']['runpod']}"},
            json={"query": "query { gpuTypes { id } }"},
        )
        assert graphql.status_code == 200 and graphql.json()["data"]["gpuTypes"]
        auth = {"Authorization": f"Bearer {info['keys']['vastai']}"}
        offers = httpx.post(f"{info['vastai']}/bundles/", json={"limit": 3}).json()["offers"]
        offer_id = offers[0]["id"]
        created = httpx.put(
            f"{info['vastai']}/asks/{offer_id}/",
            headers=auth,
            json={"image": "pytorch/pytorch", "disk": 20, "label": "keep-me"},
        )
        contract = created.json()["new_contract"]
    finally:
        process.kill()
        process.wait(timeout=10)

    process, again, _ = _start(state)
    try:
        assert again == info
        listed = httpx.get(f"{again['vastai']}/instances/", headers=auth).json()["instances"]
        assert [(row["id"], row["label"]) for row in listed] == [(contract, "keep-me")]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
