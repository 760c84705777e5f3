"""Workloads (issue 19): a rental that ends in a model server that answers, or fails and is
destroyed; its endpoint and token; what a provider cannot run is refused."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop_tui.core.workloads import public_ports
from gpushop_tui.errors import UserError
from gpushop_tui.models import (
    InstanceState,
    OfferQuery,
    ProvisionRequest,
    SessionStatus,
    WorkloadSpec,
)
from gpushop_tui.node import workloads as node_workloads
from gpushop_tui.node.workloads import Measurement
from gpushop_tui.sim.world import Timing, WorkloadTiming
from tests.core.market import Market, open_market

CHAT = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8}


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> AsyncIterator[Market]:
    async with open_market(monkeypatch, isolated_env) as opened:
        yield opened


def closed(session: Any) -> bool:
    return bool(session.closed)


async def test_an_llm_rental_runs_once_its_model_answers_and_hands_over_the_endpoint(
    market: Market,
) -> None:
    offer = await market.offer("vastai", "4090")
    session = await market.provision(offer, workload={"kind": "llm", "model": "llama3.1:8b"})
    assert session.workload == "llm" and session.workload_spec is not None
    phases: list[str | None] = []

    def watch(s: Any) -> bool:
        if s.workload_phase not in phases:
            phases.append(s.workload_phase)
        return bool(s.status == SessionStatus.RUNNING)

    ready = await market.until(session.id, watch, step_s=2)
    assert ready.workload_phase == "healthy"
    assert ready.endpoint == "http://127.0.0.1:11434/v1"
    assert ready.endpoint_public is None  # Ollama checks no token: reached by the tunnel only
    assert market.instance(ready).extra["extra_env"] == []  # no port was asked to be published
    assert "starting" in phases and "pulling model" in phases  # the phases were seen on the way
    endpoint = await market.shopper.endpoint(session.id)
    token_file = market.shopper._lifecycle.readiness.workloads.token_path(session.id)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert endpoint.token == token_file.read_text().strip()
    async with market.shopper.tunnel(session.id) as tunnel:
        url = tunnel.url
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(
                f"{url}/chat/completions", json={"model": "llama3.1:8b", **CHAT}
            )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    messages = [e.message for e in await market.audit(session.id)]
    assert any("workload started: llm serving llama3.1:8b" in m for m in messages)
    assert any("the llm workload answers" in m for m in messages)


async def test_a_vllm_endpoint_needs_its_token(market: Market) -> None:
    offer = await market.offer("vastai", "4090")
    session = await market.provision(
        offer, workload={"kind": "vllm", "model": "Qwen/Qwen2.5-0.5B-Instruct"}
    )
    await market.until(session.id, lambda s: s.status == SessionStatus.RUNNING, step_s=2)
    endpoint = await market.shopper.endpoint(session.id)
    body = {"model": "Qwen/Qwen2.5-0.5B-Instruct", **CHAT}
    async with market.shopper.tunnel(session.id) as tunnel, httpx.AsyncClient(timeout=30) as client:
        url = tunnel.url
        refused = await client.post(f"{url}/chat/completions", json=body)
        served = await client.post(
            f"{url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {endpoint.token}"},
        )
    assert refused.status_code == 401
    assert served.status_code == 200, served.text


async def test_a_vllm_endpoint_is_published_where_images_run_and_its_token_guards_it(
    market: Market,
) -> None:
    model = "Qwen/Qwen2.5-0.5B-Instruct"
    offer = await market.offer("vastai", "4090")
    session = await market.provision(
        offer, workload={"kind": "vllm", "model": model, "benchmark": False}
    )
    instance = market.instance(session)
    assert instance.extra["extra_env"] == [["-p 8000:8000", "1"]]  # asked at create
    loading = await market.until(session.id, lambda s: s.workload_phase == "loading")
    assert loading.endpoint_public is None
    published = f"http://127.0.0.1:{instance.extra['published']['8000']}"
    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(httpx.TransportError):  # nothing serves yet: the port is reset
            await client.get(f"{published}/health")
    ready = await market.until(session.id, lambda s: s.status == SessionStatus.RUNNING)
    assert ready.endpoint_public == f"{published}/v1"
    endpoint = await market.shopper.endpoint(session.id)
    assert endpoint.public_url == ready.endpoint_public
    body = {"model": model, **CHAT}
    async with httpx.AsyncClient(timeout=30) as client:
        refused = await client.post(f"{endpoint.public_url}/chat/completions", json=body)
        served = await client.post(
            f"{endpoint.public_url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {endpoint.token}"},
        )
    assert refused.status_code == 401
    assert served.status_code == 200, served.text
    assert served.json()["choices"][0]["message"]["content"]
    messages = [e.message for e in await market.audit(session.id)]
    assert any(f"public at {ready.endpoint_public}" in m for m in messages)


@pytest.mark.parametrize(
    ("workload", "runs_images", "ports"),
    [
        (WorkloadSpec(kind="vllm", model="m"), True, (8000,)),
        (WorkloadSpec(kind="vllm", model="m"), False, ()),
        (WorkloadSpec(kind="llm", model="m"), True, ()),
        (WorkloadSpec(kind="custom", command="serve", ports=(8080,)), True, ()),
        (None, True, ()),
    ],
)
def test_only_vllm_is_published_and_only_where_images_run(
    workload: WorkloadSpec | None, runs_images: bool, ports: tuple[int, ...]
) -> None:
    assert public_ports(workload, runs_images) == ports


async def test_a_model_that_never_loads_fails_the_session_and_the_offer_is_remembered(
    market: Market,
) -> None:
    market.world.faults.node("vastai").workload_never_loads = True
    offer = await market.offer("vastai", "4090")
    session = await market.provision(offer, workload={"kind": "llm", "model": "llama3.1:8b"})
    failed = await market.until(session.id, closed, step_s=15, limit_s=3 * 3600)
    assert failed.status == SessionStatus.FAILED and failed.instance == InstanceState.GONE
    assert failed.error is not None and "did not answer within 12 min" in failed.error
    assert "loading" in failed.error
    assert market.instance(failed).destroyed_at is not None
    assert offer.id in await market.shopper._store.offer_failures_since(failed.created_at)


async def test_a_server_that_dies_while_loading_fails_the_session(market: Market) -> None:
    market.world.faults.node("vastai").workload_dies_after_s = 0.0
    offer = await market.offer("vastai", "4090")
    session = await market.provision(offer, workload={"kind": "llm", "model": "llama3.1:8b"})
    failed = await market.until(session.id, closed, step_s=5, limit_s=3600)
    assert failed.status == SessionStatus.FAILED
    assert failed.error is not None and "failed" in failed.error


async def test_an_image_is_refused_where_the_provider_boots_virtual_machines(
    market: Market,
) -> None:
    offer = await market.offer("tensordock")
    request = ProvisionRequest(
        consumer="alice",
        offer_id=offer.id,
        workload=WorkloadSpec(kind="custom", command="python3 -m http.server 8080", image="x:1"),
    )
    with pytest.raises(UserError) as refused:
        await market.run(market.shopper.provision(request))
    assert refused.value.field == "image" and "virtual machines" in refused.value.message
    assert not market.live_instances("tensordock")


async def test_an_endpoint_is_asked_of_a_session_without_a_workload(market: Market) -> None:
    session = await market.running()
    with pytest.raises(UserError, match="serves no workload"):
        await market.shopper.endpoint(session.id)


async def _chat(market: Market, session_id: str, model: str) -> None:
    """One chat completion through a tunnel that is closed again at once (a tunnel is an SSH
    connection, which alone would keep the session busy)."""
    endpoint = await market.shopper.endpoint(session_id)
    async with market.shopper.tunnel(session_id) as tunnel, httpx.AsyncClient(timeout=30) as client:
        url = tunnel.url
        answer = await client.post(
            f"{url}/chat/completions",
            json={"model": model, **CHAT},
            headers={"Authorization": f"Bearer {endpoint.token}"},
        )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    ("kind", "model"), [("vllm", "Qwen/Qwen2.5-0.5B-Instruct"), ("llm", "llama3.1:8b")]
)
async def test_model_requests_keep_a_session_and_none_let_it_stop_when_idle(
    market: Market, kind: str, model: str
) -> None:
    workload = {"kind": kind, "model": model, "benchmark": False}
    quiet = await market.running(workload=workload, idle_timeout_min=10)
    asked = await market.running(workload=workload, idle_timeout_min=10)
    for _ in range(14):
        await _chat(market, asked.id, model)
        await market.clock.advance(60)
        await market.tick()
    stopped = await market.until(quiet.id, closed)
    assert stopped.status == SessionStatus.ENDED
    kept = await market.shopper.session(asked.id)
    assert kept.status == SessionStatus.RUNNING
    assert kept.idle_reason == "busy: the model server served requests since the last look"


async def test_a_query_rental_with_an_image_never_moves_to_a_provider_that_boots_vms(
    market: Market,
) -> None:
    menu = await market.shopper.offers(OfferQuery(gpu="RTX A4000", gpu_exact=True, max_gpus=1))
    vm_price = min(o.price_per_hour for o in menu.offers if o.provider == "tensordock")
    below = max(
        o.price_per_hour
        for o in menu.offers
        if o.provider == "vastai" and o.price_per_hour < vm_price
    )
    for offer in menu.offers:
        if offer.provider == "vastai":
            market.world.taken["vastai"].add(offer.provider_offer_id)
    # the best match is a Vast offer (taken); the next one a TensorDock VM
    query = f'gpu=="RTX A4000" n=1 provider=vastai,tensordock price>={below}'
    request = ProvisionRequest(
        consumer="bob",
        query=query,
        idle_timeout_min=0,
        workload={"kind": "custom", "command": "python3 serve.py", "image": "python:3.12"},
    )
    session = await market.run(market.shopper.provision(request))
    assert session.closed and session.status == SessionStatus.FAILED
    assert market.live_instances("tensordock") == [] and market.live_instances("bluelobster") == []


async def test_a_slow_load_gets_the_workloads_budget_from_its_launch_not_the_providers(
    market: Market,
) -> None:
    """A 10-minute boot and a 12-minute load: past Vast's 15-minute provisioning budget, yet
    within vLLM's 15 minutes from the launch."""
    market.world.timing = {
        **market.world.timing, "vastai": Timing(boot_s=600, dpkg_lock_s=0)
    }  # fmt: skip
    market.world.workload_timing = {
        **market.world.workload_timing,
        "vllm": WorkloadTiming(installing_s=60, starting_s=0, pulling_s=0, loading_s=660),
    }
    offer = await market.offer("vastai", "4090")
    session = await market.provision(
        offer, workload={"kind": "vllm", "model": "Qwen/Qwen2.5-0.5B-Instruct", "benchmark": False}
    )
    ready = await market.until(session.id, lambda s: s.status != "provisioning", step_s=15)
    assert ready.status == SessionStatus.RUNNING, ready.error
    assert ready.workload_started_at is not None
    assert (ready.state_entered_at - ready.created_at).total_seconds() > 15 * 60


async def test_a_vllm_server_that_refuses_the_endpoint_token_never_runs(market: Market) -> None:
    market.world.faults.node("vastai").workload_wrong_token = True
    offer = await market.offer("vastai", "4090")
    session = await market.provision(
        offer, workload={"kind": "vllm", "model": "Qwen/Qwen2.5-0.5B-Instruct", "benchmark": False}
    )
    failed = await market.until(session.id, closed, step_s=15, limit_s=3600)
    assert failed.status == SessionStatus.FAILED
    messages = [e.message for e in await market.audit(session.id)]
    assert any("refuses the endpoint token" in m for m in messages), messages


async def test_a_tunnel_says_it_closed_when_its_session_ends(market: Market) -> None:
    session = await market.running(
        workload={"kind": "llm", "model": "llama3.1:8b", "benchmark": False}
    )
    async with market.shopper.tunnel(session.id) as tunnel:
        ended = asyncio.ensure_future(tunnel.closed())
        await market.run(market.shopper.delete(session.id))
        await market.until(session.id, closed)
        await asyncio.wait_for(ended, timeout=30)  # a real-time bound, not a sleep
    assert ended.done()


async def test_a_model_server_that_dies_after_the_session_runs_is_said_and_idles_out(
    market: Market,
) -> None:
    market.world.faults.node("vastai").workload_dies_after_s = 120.0
    running = await market.running(
        workload={"kind": "vllm", "model": "Qwen/Qwen2.5-0.5B-Instruct", "benchmark": False},
        idle_timeout_min=10,
    )
    for _ in range(16):
        await market.clock.advance(60)
        await market.tick()
    ended = await market.until(running.id, closed)
    assert ended.status == SessionStatus.ENDED  # not kept "busy" by an unreadable counter
    assert ended.workload_phase == "failed: the server exited"
    alerts = [e for e in await market.audit(running.id) if e.kind == "alert"]
    assert [e.message for e in alerts if "model server" in e.message] == [
        f"session {running.id}: its model server failed (the server exited); the endpoint "
        "answers nothing, and the session is stopped when it turns idle"
    ]


async def test_a_done_during_the_benchmark_is_carried_out_at_once(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver that measures also ends the session, without waiting for a supervisor."""

    async def slow_measure(*args: Any, **kwargs: Any) -> Measurement:
        await market.clock.sleep(40)
        return Measurement(tokens_per_second=100.0, time_to_first_token_s=0.1,
                           completion_tokens=256)  # fmt: skip

    monkeypatch.setattr(node_workloads, "measure", slow_measure)
    offer = await market.offer("vastai", "4090")
    session = await market.provision(
        offer, workload={"kind": "vllm", "model": "Qwen/Qwen2.5-0.5B-Instruct"}
    )
    await market.until(session.id, lambda s: s.workload_phase == "benchmarking")
    await market.run(market.shopper.done(session.id))
    ended = await market.until(session.id, closed, limit_s=600)  # no supervisor tick here
    assert ended.status == SessionStatus.ENDED and ended.instance == InstanceState.GONE
