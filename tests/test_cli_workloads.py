"""Serving a model from the command line (issue 19): `provision --workload`, `sessions endpoint`
and `sessions tunnel` in child processes against the standalone simulator."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, run_gpushop, sim_env
from tests.test_cli_sessions import as_json, gpushop, one_line_error

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture
def sim(standalone_sim: dict[str, Any]) -> Iterator[dict[str, Any]]:
    httpx.delete(f"{standalone_sim['control']}/faults").raise_for_status()
    yield standalone_sim
    httpx.delete(f"{standalone_sim['control']}/faults").raise_for_status()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--workload", "llm"), "--model: the llm workload needs a model"),
        (("--model", "llama3.1:8b"), "--model: a model needs the llm or vllm workload"),
        (("-w", "custom", "--cmd", "x", "--env", "NOEQ"), "--env: 'NOEQ' is not NAME=VALUE"),
        (("-w", "custom", "--cmd", "x", "--port", "70000"), "--port: "),
        (("--no-benchmark",), "--no-benchmark: only the llm and vllm workloads are measured"),
        (("-w", "custom", "--cmd", "x", "--image", "python:3.12", "-g", "provider=tensordock"),
         "tensordock boots virtual machines, not images: leave the image out"),
    ],
)  # fmt: skip
def test_a_workload_that_cannot_be_run_is_one_sentence_and_rents_nothing(
    sim: dict[str, Any], args: tuple[str, ...], says: str
) -> None:
    query = () if "-g" in args else ("-g", "gpu=4090 provider=vastai")
    result = run_gpushop("provision", "-c", "tests", *query, *args, "--no-wait",
                         env=sim_env(sim, "vastai", "tensordock"))  # fmt: skip
    assert says in one_line_error(result)


def test_a_vllm_rental_hands_over_an_endpoint_that_the_tunnel_reaches_with_the_token(
    sim: dict[str, Any],
) -> None:
    env = sim_env(sim, "vastai")
    result = gpushop(sim, "provision", "-c", "tests", "-g", "gpu=4090 provider=vastai",
                     "--workload", "vllm", "--model", MODEL, "-o", "json", timeout=240)  # fmt: skip
    session = as_json(result)
    assert session["status"] == "running" and session["workload_phase"] == "healthy"
    assert session["endpoint"] == "http://127.0.0.1:8000/v1"
    assert "workload started: vllm serving" in result.stderr  # the phases, as sentences
    assert "benchmark:" in result.stderr
    endpoint = gpushop(sim, "sessions", "endpoint", session["id"][:6])
    assert endpoint.stdout.strip() == session["endpoint"]
    token = gpushop(sim, "sessions", "endpoint", session["id"], "--token").stdout.strip()
    assert len(token) >= 32
    public = gpushop(sim, "sessions", "endpoint", session["id"], "--public").stdout.strip()
    assert public == session["endpoint_public"] and public.startswith("http://127.0.0.1:")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    assert httpx.post(f"{public}/chat/completions", json=body, timeout=30).status_code == 401
    served = httpx.post(f"{public}/chat/completions", json=body, timeout=30,
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert served.status_code == 200 and served.json()["choices"][0]["message"]["content"]
    child_env = os.environ | env | {"PYTHONPATH": str(ROOT)}
    tunnel = subprocess.Popen(
        [sys.executable, "-m", "gpushop_tui", "sessions", "tunnel", session["id"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env,
    )
    try:
        assert tunnel.stdout is not None
        line = tunnel.stdout.readline()
        words = [word for word in line.split() if word.startswith("http://127.0.0.1:")]
        assert words, (line, tunnel.stderr.read() if tunnel.stderr and tunnel.poll() else "")
        url = words[0]
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        refused = httpx.post(f"{url}/chat/completions", json=body, timeout=30)
        served = httpx.post(f"{url}/chat/completions", json=body, timeout=30,
                            headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert refused.status_code == 401
        assert served.status_code == 200 and served.json()["choices"][0]["message"]["content"]
    finally:
        tunnel.send_signal(signal.SIGINT)
        code = tunnel.wait(timeout=30)
    errors = tunnel.stderr.read() if tunnel.stderr else ""
    assert code == 0, errors
    assert "Traceback" not in errors
    measured = json.loads(gpushop(sim, "benchmarks", "list", "-o", "json").stdout)
    mine = [row for row in measured if row.get("session_id") == session["id"]]
    assert mine and mine[0]["source"] == "measured" and mine[0]["tokens_per_second"] > 0
    assert mine[0]["usd_per_mtok"] > 0 and mine[0]["time_to_first_token_s"] is not None
    gpushop(sim, "sessions", "delete", session["id"])


def test_an_endpoint_nothing_guards_is_not_public_and_the_cli_says_how_to_reach_it(
    sim: dict[str, Any],
) -> None:
    result = gpushop(sim, "provision", "-c", "tests", "-g", "gpu=4090 provider=vastai",
                     "-w", "custom", "--cmd", "python3 -m http.server 8080", "--port", "8080",
                     "-o", "json", timeout=240)  # fmt: skip
    session = as_json(result)
    assert session["status"] == "running" and session["endpoint_public"] is None
    refused = gpushop(sim, "sessions", "endpoint", session["id"], "--public")
    says = one_line_error(refused)
    assert f"session {session['id']} has no public endpoint" in says
    assert f"gpushop sessions tunnel {session['id']}" in says
    gpushop(sim, "sessions", "delete", session["id"])


def test_an_llm_rental_runs_ollama_and_hands_over_its_endpoint(sim: dict[str, Any]) -> None:
    result = gpushop(sim, "provision", "-c", "tests", "-g", "gpu=4090 provider=vastai",
                     "--workload", "llm", "--model", "llama3.1:8b", "--no-benchmark",
                     timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "workload pulling model" in result.stderr
    assert "endpoint  http://127.0.0.1:11434/v1 on the node" in result.stdout
    session_id = next(
        line.split()[1] for line in result.stdout.splitlines() if line.startswith("session")
    )
    gpushop(sim, "sessions", "delete", session_id)


def test_demo_endpoint_goes_from_nothing_to_a_curl_that_answers() -> None:
    """The README's one command: rent on the demo marketplace, hold a tunnel, print the curl."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "gpushop_tui", "demo-endpoint", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    try:
        assert demo.stdout is not None
        curl = shlex.split(demo.stdout.readline())
        assert curl[0] == "curl", (curl, demo.stderr.read() if demo.poll() is not None else "")
        url = curl[-1]
        headers = dict(
            value.split(": ", 1) for flag, value in itertools.pairwise(curl) if flag == "-H"
        )
        body = json.loads(curl[curl.index("-d") + 1])
        refused = httpx.post(url, json=body, timeout=30)
        answer = httpx.post(url, json=body, headers=headers, timeout=30)
        assert refused.status_code == 401
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
    finally:
        demo.send_signal(signal.SIGINT)
        code = demo.wait(timeout=60)
    errors = demo.stderr.read() if demo.stderr else ""
    assert code == 0, errors
    assert "Traceback" not in errors
