"""`gpushop --serve` as a user runs it, driven with plain curl the way the earlier tool's CLI did.

The earlier implementation's flow (inventory → create → poll until running → done → gone) is
replayed unchanged against our server and the simulator, both as real processes on loopback.
SIGTERM then stops the server without touching the session left running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, run_gpushop, sim_env
from tests.support.serving import serving

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
POLL_S = 0.2
"""Between two status polls, as the earlier CLI did (the server runs on real time here)."""


def curl(base: str, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One plain curl call; (HTTP status, parsed JSON body)."""
    args = ["curl", "-s", "-X", method, "-H", f"Authorization: Bearer {token}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    args += ["-w", "\n%{http_code}", base + path]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout
    text, _, status = out.rpartition("\n")
    return int(status), json.loads(text) if text else None


def poll(base: str, token: str, session_id: str, wanted: set[str], limit_s: float = 90) -> dict:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status, session = curl(base, token, "GET", f"/api/v1/sessions/{session_id}")
        assert status == 200, session
        if session["status"] in wanted:
            return session
        time.sleep(POLL_S)
    raise AssertionError(f"session {session_id} never reached {wanted}: {session}")


@pytest.fixture
def server(
    standalone_sim: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    env = (
        os.environ
        | sim_env(standalone_sim, "vastai")
        | {
            "GPUSHOP_HOME": str(tmp_path / "home"),
            "GPUSHOP_BOOT_DELAY_SCALE": "0.02",
            "PYTHONPATH": str(ROOT),
        }
    )
    with serving(env) as (base, process):
        yield base, run_gpushop("serve-token", env=env).stdout.strip(), process


def test_the_earlier_clis_flow_works_unchanged_and_sigterm_destroys_nothing(
    server: tuple[str, str, subprocess.Popen[str]], standalone_sim: dict[str, Any]
) -> None:
    base, token, process = server
    ready_deadline = time.monotonic() + 30
    while httpx.get(f"{base}/ready").status_code != 200:
        assert time.monotonic() < ready_deadline, "never ready"
        time.sleep(POLL_S)

    status, menu = curl(
        base, token, "GET", "/api/v1/inventory?provider=vastai&gpu_type=RTX%204090&limit=2"
    )
    assert status == 200 and menu["count"] == 2, menu
    first, second = (offer["id"] for offer in menu["offers"])
    request = {"consumer_id": "ci", "workload_type": "interactive", "reservation_hours": 1}
    status, created = curl(base, token, "POST", "/api/v1/sessions", {**request, "offer_id": first})
    assert status == 201, created
    session_id = created["session"]["id"]
    assert created["ssh_private_key"] is None  # only when asked for
    running = poll(base, token, session_id, {"running"})
    assert running["ssh_port"] and running["ssh_host"]

    status, answer = curl(base, token, "POST", f"/api/v1/sessions/{session_id}/done")
    assert status == 202, answer
    gone = poll(base, token, session_id, {"ended"})
    assert gone["status"] == "ended" and gone["status_words"] == "ended (destroyed)"
    world = httpx.get(f"{standalone_sim['control']}/state").json()["instances"]["vastai"]
    [ended] = [i for i in world if (i["label"] or "").endswith(session_id)]
    assert ended["phase"] == "destroyed"

    status, kept = curl(base, token, "POST", "/api/v1/sessions", {**request, "offer_id": second})
    assert status == 201, kept
    kept_id = kept["session"]["id"]
    poll(base, token, kept_id, {"running"})

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=90) == 0
    assert process.stdout is not None
    assert "running sessions were left running" in process.stdout.read()
    world = httpx.get(f"{standalone_sim['control']}/state").json()["instances"]["vastai"]
    [alive] = [i for i in world if (i["label"] or "").endswith(kept_id)]
    assert alive["phase"] != "destroyed"
