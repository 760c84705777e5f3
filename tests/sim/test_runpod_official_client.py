"""The official `runpod` SDK (PyPI) against the simulated RunPod GraphQL API: the best outside
check that the twin's schema takes what the real client sends and answers what it reads.

Skipped unless the client is installed in /tmp/runpod-venv (CI installs it there; under CI=true a
skip fails).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.sim.http import serve
from gpushop_tui.sim.runpod import TERMINATED_LINGER_S, build_app
from gpushop_tui.sim.world import World

VENV_PYTHON = Path("/tmp/runpod-venv/bin/python")
pytestmark = pytest.mark.skipif(
    not VENV_PYTHON.exists(), reason="the official runpod client is not installed"
)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgpushopTestKey me@host"
GPU = "NVIDIA GeForce RTX 4090"

LIFECYCLE = """
import json, os, sys
import runpod
runpod.api_key = os.environ["RUNPOD_API_KEY"]
gpus = runpod.get_gpus()
gpu = runpod.get_gpu(sys.argv[1])
pod = runpod.create_pod("gpushop-sdk", "runpod/pytorch", sys.argv[1],
                        env={"PUBLIC_KEY": sys.argv[2]}, ports="8888/http,22/tcp")
pods = runpod.get_pods()
one = runpod.get_pod(pod["id"])
runpod.terminate_pod(pod["id"])
after = runpod.get_pod(pod["id"])
print(json.dumps({"gpus": gpus, "gpu": gpu, "pod": pod, "pods": pods, "one": one,
                  "after": after}))
"""
LOOK = """
import json, os, sys
import runpod
runpod.api_key = os.environ["RUNPOD_API_KEY"]
print(json.dumps({"pods": runpod.get_pods(), "pod": runpod.get_pod(sys.argv[1])}))
"""


async def _run(env: dict[str, str], script: str, *args: str) -> Any:
    process = await asyncio.create_subprocess_exec(
        str(VENV_PYTHON),
        "-c",
        script,
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, f"rc={process.returncode}\n{out.decode()}\n{err.decode()}"
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_official_sdk_lists_creates_reads_and_terminates(tmp_path: Path) -> None:
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    served = await serve(build_app(world))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "RUNPOD_API_BASE_URL": served.origin,
        "RUNPOD_API_KEY": world.keys["runpod"],
    }
    try:
        seen = await _run(env, LIFECYCLE, GPU, KEY)
        assert {g["id"] for g in seen["gpus"]} >= {GPU, "NVIDIA H100 80GB HBM3"}
        assert seen["gpu"]["id"] == GPU and seen["gpu"]["lowestPrice"]["uninterruptablePrice"]
        pod_id = seen["pod"]["id"]
        assert seen["pod"]["imageName"] == "runpod/pytorch"
        assert seen["pod"]["env"] == [f"PUBLIC_KEY={KEY}"]
        assert seen["pod"]["machine"]["podHostId"].startswith(pod_id)
        instance = world.get("runpod", pod_id)
        assert instance is not None and instance.authorized_keys == [KEY]
        assert instance.extra["gpu_type_id"] == GPU and instance.extra["mount"] == "/runpod-volume"
        (listed,) = seen["pods"]
        assert listed["id"] == pod_id and listed["machine"]["gpuDisplayName"] == "RTX 4090"
        assert listed["desiredStatus"] == "RUNNING" and listed["gpuCount"] == 1
        assert listed["ports"] == "8888/http,22/tcp"
        assert seen["one"]["id"] == pod_id and seen["one"]["imageName"] == "runpod/pytorch"
        assert seen["after"]["desiredStatus"] == "TERMINATED"
        assert instance.destroyed_at is not None  # the world has it destroyed

        await clock.advance(TERMINATED_LINGER_S)
        later = await _run(env, LOOK, pod_id)
        assert later == {"pods": [], "pod": None}
        assert world.live("runpod") == []
    finally:
        await served.stop()
