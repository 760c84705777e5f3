"""The simulator's shared world: instance life on the world clock, faults, persistence, control."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gpushop_tui.clock import FakeClock, SystemClock
from gpushop_tui.sim.control import build_control_app
from gpushop_tui.sim.faults import FaultPlan, HttpFault
from gpushop_tui.sim.http import endpoint, json_response, serve
from gpushop_tui.sim.world import World


async def _create(world: World, instance_id: str = "7", provider: str = "vastai"):
    return await world.create_instance(
        provider,
        instance_id=instance_id,
        offer_id=f"offer-{instance_id}",
        label="gpushop-x-y",
        gpu_name="RTX 4090",
        gpu_count=1,
        vram_mb=24564,
        cuda=12.4,
        price_per_hour=0.4,
    )


async def test_instance_life_follows_the_world_clock() -> None:
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    instance = await _create(world)
    assert instance.phase(world.now()) == "booting"
    assert "offer-7" in world.taken["vastai"]
    await clock.advance(instance.boot_s)
    assert instance.phase(world.now()) == "running"
    assert await world.destroy("vastai", "7", linger_s=30)
    assert instance.phase(world.now()) == "running"
    assert [i.id for i in world.live("vastai")] == ["7"]
    await clock.advance(30)
    assert instance.phase(world.now()) == "destroyed"
    assert world.live("vastai") == []
    assert "offer-7" not in world.taken["vastai"]
    assert not await world.destroy("vastai", "7")


async def test_destroy_noop_and_vanish_faults() -> None:
    world = World(clock=FakeClock())
    instance = await _create(world)
    world.faults.node("vastai").destroy_noop = 2
    assert await world.destroy("vastai", "7")
    assert await world.destroy("vastai", "7")
    assert instance.destroyed_at is None
    assert await world.destroy("vastai", "7")
    assert instance.phase(world.now()) == "destroyed"

    other = await _create(world, "8")
    assert await world.vanish("vastai", "8")
    assert other.phase(world.now()) == "destroyed"
    assert not await world.vanish("vastai", "8")


async def test_node_faults_change_what_new_nodes_report() -> None:
    world = World(clock=FakeClock())
    world.faults.node("tensordock").wrong_gpu = "RTX 3090"
    world.faults.node("tensordock").old_cuda = 11.8
    world.faults.node("tensordock").ssh_refuse_s = 60
    instance = await _create(world, "a", provider="tensordock")
    assert (instance.gpu_name, instance.node_gpu_name) == ("RTX 4090", "RTX 3090")
    assert instance.node_cuda == 11.8
    assert instance.ssh_refuse_until == world.now() + instance.boot_s + 60
    assert instance.ssh_user == "user"
    assert instance.dpkg_locked(world.now() + instance.boot_s)


async def test_state_dir_keeps_the_world(tmp_path: Path) -> None:
    clock = FakeClock()
    world = World(seed=5, clock=clock, state_dir=tmp_path)
    instance = await _create(world)
    instance.authorized_keys.append("ssh-ed25519 AAAAC3Nza test")
    world.save()
    await world.destroy("vastai", "7")
    await _create(world, "9")
    world.next_id("vastai")

    again = World(seed=5, clock=clock, state_dir=tmp_path)
    assert again.get("vastai", "7") == world.get("vastai", "7")
    assert [i.id for i in again.live("vastai")] == ["9"]
    assert again.taken == world.taken
    assert again.counters == world.counters
    assert again.keys == world.keys
    assert World(seed=6).keys != world.keys


async def test_power_off_and_on_follow_the_world_clock_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    world = World(seed=5, clock=clock, state_dir=tmp_path)
    instance = await _create(world, "t1", provider="tensordock")
    await clock.advance(instance.boot_s)
    world.faults.node("tensordock").stopped_vanishes_after_s = 900
    assert await world.power_off("tensordock", "t1")
    assert instance.phase(world.now()) == "stopped" and instance.stopping(world.now())
    assert await world.power_off("tensordock", "t1")  # already stopped: left as it is
    assert not world.power_on("vastai", "t1") and not await world.power_off("vastai", "t1")
    again = World(seed=5, clock=clock, state_dir=tmp_path)
    loaded = again.get("tensordock", "t1")
    assert loaded == instance
    assert loaded is not None and loaded.vanishes_at == world.now() + 900
    timing = world.timing["tensordock"]
    assert timing.release_s is not None
    await clock.advance(timing.stop_s + timing.release_s)
    assert loaded.released(again.now()) and not loaded.stopping(again.now())
    assert again.power_on("tensordock", "t1")
    assert not again.power_on("tensordock", "t1")  # not stopped
    assert loaded.phase(again.now()) == "booting" and not loaded.released(again.now())
    await clock.advance(3600)  # started in time: it no longer vanishes
    assert loaded.phase(again.now()) == "running"
    again.faults.node("tensordock").stopped_vanishes_after_s = 900  # faults are not saved
    assert await again.power_off("tensordock", "t1")
    await clock.advance(900)
    assert loaded.phase(again.now()) == "destroyed" and again.live("tensordock") == []
    assert not again.power_on("tensordock", "t1")


def test_fault_plan_consumes_limited_faults_in_order() -> None:
    plan = FaultPlan()
    plan.add(HttpFault(provider="vastai", endpoint="search", status=429, times=2))
    plan.add(HttpFault(provider="*", endpoint="*", status=503))
    assert plan.take("vastai", "search").status == 429  # type: ignore[union-attr]
    assert plan.take("vastai", "search").status == 429  # type: ignore[union-attr]
    assert plan.take("vastai", "search").status == 503  # type: ignore[union-attr]
    assert plan.take("bluelobster", "launch").status == 503  # type: ignore[union-attr]
    plan.clear()
    assert plan.take("vastai", "search") is None


@pytest.fixture
async def faulty_app() -> AsyncIterator[tuple[World, httpx.AsyncClient]]:
    world = World(clock=FakeClock())

    @endpoint(world, "vastai", "search")
    async def search(request: Request) -> Response:
        return json_response({"offers": []})

    served = await serve(Starlette(routes=[Route("/bundles/", search, methods=["POST"])]))
    async with httpx.AsyncClient(base_url=served.origin) as client:
        yield world, client
    await served.stop()


async def test_http_faults_over_real_http(faulty_app: tuple[World, httpx.AsyncClient]) -> None:
    world, client = faulty_app
    ok = await client.post("/bundles/")
    assert ok.json() == {"offers": []}
    assert ok.headers["content-type"] == "application/json"

    world.faults.add(
        HttpFault(
            provider="vastai",
            endpoint="search",
            status=429,
            body="API requests too frequent",
            times=1,
        )
    )
    limited = await client.post("/bundles/")
    assert (limited.status_code, limited.text) == (429, "API requests too frequent")
    assert "retry-after" not in limited.headers

    world.faults.add(HttpFault(provider="vastai", kind="malformed", times=1))
    with pytest.raises(ValueError):
        (await client.post("/bundles/")).json()

    world.faults.add(HttpFault(provider="vastai", kind="empty", times=1))
    assert (await client.post("/bundles/")).content == b""

    world.faults.add(HttpFault(provider="vastai", kind="timeout", delay_s=2, times=1))
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/bundles/", timeout=0.2)

    world.faults.add(HttpFault(provider="vastai", kind="latency", delay_s=0.2, times=1))
    slow = await client.post("/bundles/")
    assert slow.status_code == 200
    assert slow.elapsed.total_seconds() >= 0.2


async def test_control_endpoint() -> None:
    clock = FakeClock()
    world = World(clock=clock)
    instance = await _create(world)
    served = await serve(build_control_app(world))
    try:
        async with httpx.AsyncClient(base_url=served.origin) as control:
            added = await control.post(
                "/faults", json={"provider": "tensordock", "endpoint": "list", "kind": "empty"}
            )
            assert added.status_code == 201
            assert world.faults.take("tensordock", "list").kind == "empty"  # type: ignore[union-attr]
            bad = await control.post("/faults", json={"provider": "x", "colour": "red"})
            assert bad.status_code == 400

            nodes = await control.put("/faults/nodes/vastai", json={"destroy_noop": 3})
            assert nodes.json()["destroy_noop"] == 3
            assert world.faults.node("vastai").destroy_noop == 3
            assert (await control.delete("/faults")).status_code == 200
            assert world.faults.node("vastai").destroy_noop == 0

            util = await control.put("/instances/vastai/7/gpu_util", json={"gpu_util": 87})
            assert util.status_code == 200
            assert instance.gpu_util == 87
            assert (
                await control.put("/instances/vastai/7/gpu_util", json={"gpu_util": 150})
            ).status_code == 400

            advanced = await control.post("/clock/advance", json={"seconds": 10})
            assert advanced.json()["now"] == world.now()
            state = (await control.get("/state")).json()
            assert state["instances"]["vastai"][0]["phase"] == "running"

            assert (await control.post("/instances/vastai/7/vanish")).status_code == 200
            assert (await control.post("/instances/vastai/7/vanish")).status_code == 404
            assert instance.phase(world.now()) == "destroyed"
    finally:
        await served.stop()

    real = await serve(build_control_app(World(clock=SystemClock())))
    try:
        async with httpx.AsyncClient(base_url=real.origin) as control:
            refused = await control.post("/clock/advance", json={"seconds": 1})
            assert refused.status_code == 409
    finally:
        await real.stop()
