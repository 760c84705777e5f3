"""Stop and start at every simulated provider, through its adapter, on a fake world clock.

Each provider's server, its real adapter and real SSH nodes on loopback: a stop keeps the node's
disk and host key but ends its workload and connections; a start boots the same machine again.
Then each provider's own start and stop states and the power faults.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncssh
import httpx
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.models import Offer
from gpushop_tui.providers.base import (
    CapacityError,
    CreateSpec,
    Provider,
    ProviderError,
    RateLimit,
    RetryPolicy,
    label_for,
)
from gpushop_tui.providers.bluelobster import BlueLobster
from gpushop_tui.providers.tensordock import TensorDock
from gpushop_tui.providers.vastai import VastAi
from gpushop_tui.sim import bluelobster, tensordock, vastai
from gpushop_tui.sim.control import build_control_app
from gpushop_tui.sim.http import serve
from gpushop_tui.sim.node import SshNodes
from gpushop_tui.sim.world import SimInstance, World

T = TypeVar("T")
INSTALL = "ab12cd34"
SPEC = {"kind": "custom", "model": None, "port": None, "env": {}}
APPS: dict[str, Any] = {
    "vastai": (vastai.build_app, "/api/v0", VastAi),
    "tensordock": (tensordock.build_app, "/api/v2", TensorDock),
    "bluelobster": (bluelobster.build_app, "/api/v1", BlueLobster),
}
PROVIDERS = tuple(APPS)


@dataclass
class Power:
    provider: str
    world: World
    clock: FakeClock
    nodes: SshNodes
    adapter: Provider
    key: asyncssh.SSHKey

    async def offer(self, gpu: str = "geforcertx4090-pcie-24gb", count: int = 1) -> Offer:
        offers = await self.adapter.list_offers()
        if self.provider == "vastai":
            return next(
                o for o in offers if o.gpu_name == "RTX 4090" and o.raw["direct_port_count"] >= 1
            )
        if self.provider == "tensordock":
            return next(
                o
                for o in offers
                if o.region and o.region.startswith("Chubbuck") and o.id.endswith(f":{gpu}:{count}")
            )
        return next(o for o in offers if o.id == "bluelobster:v1_gpu_1x_a5000:igl")

    async def rent(self, session: str = "sess01", offer: Offer | None = None) -> SimInstance:
        """An instance of ours, running, its node accepting our key."""
        public = self.key.export_public_key().decode().strip()
        spec = CreateSpec(label_for(INSTALL, session), public)
        ref = await drive(self.clock, self.adapter.create(offer or await self.offer(), spec))
        instance = self.world.get(self.provider, ref.instance_id)
        assert instance is not None
        await self.clock.advance(instance.boot_s)
        assert instance.phase(self.world.now()) == "running"
        return instance

    def ssh(self, instance: SimInstance) -> Any:
        assert instance.ssh_port is not None
        return asyncssh.connect(
            "127.0.0.1",
            port=instance.ssh_port,
            username=instance.ssh_user,
            client_keys=[self.key],
            known_hosts=None,
            connect_timeout=10,
        )

    async def refused(self, instance: SimInstance) -> None:
        with pytest.raises((OSError, asyncssh.Error)):
            async with self.ssh(instance):
                pass

    async def state(self, instance: SimInstance) -> tuple[str, bool]:
        """The adapter's state word and running flag; its stopped flag is checked on the way."""
        status = await self.adapter.get(instance.id)
        assert status is not None
        word = status.state.lower()
        assert status.stopped is (word in ("stopped", "stoppeddisassociated")), status
        assert not (status.stopped and status.running)
        return status.state, status.running


async def drive(clock: FakeClock, work: Awaitable[T], step: float = 1.0) -> T:
    """Run `work`, moving the fake clock on whenever it (and nothing else) waits on it."""
    task = asyncio.ensure_future(work)
    while not task.done():
        if clock.sleeping:
            await clock.advance(step)
        else:
            await asyncio.wait({task}, timeout=0.002)
    return task.result()


async def _power(provider: str) -> AsyncIterator[Power]:
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    nodes = SshNodes(world)
    world.nodes = nodes
    build, base, cls = APPS[provider]
    served = await serve(build(world))
    adapter = cls.connect(
        served.origin + base,
        world.keys[provider],
        INSTALL,
        clock=clock,
        retry=RetryPolicy(attempts=2, base_s=0.0),
        rate=RateLimit(None),
    )
    yield Power(
        provider, world, clock, nodes, adapter, asyncssh.generate_private_key("ssh-ed25519")
    )
    await adapter.aclose()
    await served.stop()
    await nodes.aclose()


@pytest.fixture(params=PROVIDERS)
async def power(request: pytest.FixtureRequest) -> AsyncIterator[Power]:
    async for made in _power(request.param):
        yield made


@pytest.fixture
async def td() -> AsyncIterator[Power]:
    async for made in _power("tensordock"):
        yield made


@pytest.fixture
async def vast() -> AsyncIterator[Power]:
    async for made in _power("vastai"):
        yield made


@pytest.fixture
async def bl() -> AsyncIterator[Power]:
    async for made in _power("bluelobster"):
        yield made


async def _setup_workload(conn: asyncssh.SSHClientConnection) -> None:
    """A file of ours on the disk, and the workload launched from `.gpushop`."""
    async with conn.start_sftp_client() as sftp:
        await sftp.mkdir(".gpushop")
        for path, text in {
            "keep.txt": "the model cache\n",
            ".gpushop/launch.sh": "#!/bin/sh\n",
            ".gpushop/workload.json": json.dumps(SPEC),
        }.items():
            async with sftp.open(path, "w") as f:
                await f.write(text)
    assert (await conn.run("sh .gpushop/launch.sh")).exit_status == 0


# --------------------------------------------------------------------------- every provider


async def test_stop_keeps_the_disk_and_start_boots_the_same_machine(power: Power) -> None:
    instance = await power.rent()
    async with power.ssh(instance) as conn:
        host_key = conn.get_server_host_key()
        assert host_key is not None
        await _setup_workload(conn)
        assert power.nodes.workload(instance) is not None
        held = await power.ssh(instance)  # a connection left open across the stop
        await power.adapter.stop(instance.id)
        async with asyncio.timeout(5):
            await held.wait_closed()
    assert power.nodes.workload(instance) is None
    await power.clock.advance(instance.stop_s)
    assert await power.state(instance) == ("stopped", False)
    await power.refused(instance)
    await power.clock.advance(3600)  # stopped stays stopped
    assert await power.state(instance) in {("stopped", False), ("StoppedDisassociated", False)}

    await power.adapter.start(instance.id)
    assert instance.phase(power.world.now()) == "booting"
    booting = {"vastai": ("loading", False), "tensordock": ("starting", False)}
    if power.provider in booting:  # Blue Lobster reads running from the IP (BL-008)
        assert await power.state(instance) == booting[power.provider]
    await power.refused(instance)
    await power.clock.advance(instance.boot_s)
    assert await power.state(instance) == ("running", True)
    async with power.ssh(instance) as conn:
        again = conn.get_server_host_key()
        assert again is not None and again.public_data == host_key.public_data
        assert (await conn.run("cat keep.txt")).stdout == "the model cache\n"
        assert power.nodes.workload(instance) is None  # not running until launched again
        assert (await conn.run("sh .gpushop/launch.sh")).exit_status == 0
        assert power.nodes.workload(instance) is not None


async def test_a_stopped_instance_can_vanish(power: Power) -> None:
    instance = await power.rent()
    power.world.faults.node(power.provider).stopped_vanishes_after_s = 600
    await power.adapter.stop(instance.id)
    await power.clock.advance(599)
    assert await power.adapter.get(instance.id) is not None
    await power.clock.advance(1)
    assert await power.adapter.get(instance.id) is None
    assert all(s.instance_id != instance.id for s in await power.adapter.list_ours())


async def test_a_start_in_time_saves_it_from_vanishing(power: Power) -> None:
    instance = await power.rent()
    power.world.faults.node(power.provider).stopped_vanishes_after_s = 600
    await power.adapter.stop(instance.id)
    await power.clock.advance(instance.stop_s + 1)
    await power.adapter.start(instance.id)
    await power.clock.advance(3600)
    assert await power.state(instance) == ("running", True)


# --------------------------------------------------------------------------- TensorDock


async def test_tensordock_stopping_stopped_then_disassociated(td: Power) -> None:
    instance = await td.rent()
    await td.adapter.stop(instance.id)
    assert await td.state(instance) == ("stopping", False)
    await td.clock.advance(td.world.timing["tensordock"].stop_s)
    assert await td.state(instance) == ("stopped", False)
    release_s = td.world.timing["tensordock"].release_s
    assert release_s is not None
    await td.clock.advance(release_s - 1)
    assert await td.state(instance) == ("stopped", False)
    await td.clock.advance(1)
    assert await td.state(instance) == ("StoppedDisassociated", False)
    with pytest.raises(ProviderError, match="stopped") as caught:
        await td.adapter.stop(instance.id)  # already stopped: a 400
    assert not isinstance(caught.value, CapacityError)
    await td.adapter.start(instance.id)  # the GPU is free again: it comes back
    assert await td.state(instance) == ("starting", False)
    await td.clock.advance(instance.boot_s)
    assert await td.state(instance) == ("running", True)
    with pytest.raises(ProviderError) as refused:
        await td.adapter.start(instance.id)  # running: a 400, not a capacity problem
    assert not isinstance(refused.value, CapacityError)


async def test_tensordock_start_without_capacity_keeps_the_disk(td: Power) -> None:
    instance = await td.rent()
    async with td.ssh(instance) as conn:
        await _setup_workload(conn)
    await td.adapter.stop(instance.id)
    await td.clock.advance(instance.stop_s)
    td.world.faults.node("tensordock").start_no_capacity = True
    with pytest.raises(CapacityError, match="no capacity to start"):
        await td.adapter.start(instance.id)
    assert await td.state(instance) == ("StoppedDisassociated", False)
    td.world.faults.node("tensordock").start_no_capacity = False
    await td.adapter.start(instance.id)
    await td.clock.advance(instance.boot_s)
    async with td.ssh(instance) as conn:
        assert (await conn.run("cat keep.txt")).stdout == "the model cache\n"


async def test_tensordock_released_gpu_taken_by_another_renter(td: Power) -> None:
    gpu = "geforcertx5090-pcie-32gb"  # Chubbuck has two
    instance = await td.rent(offer=await td.offer(gpu, 2))
    await td.adapter.stop(instance.id)
    release_s = td.world.timing["tensordock"].release_s
    assert release_s is not None
    await td.clock.advance(instance.stop_s + release_s)
    other = await td.adapter.create(
        await td.offer(gpu, 2), CreateSpec(label_for(INSTALL, "sess02"), "ssh-ed25519 AAAA x")
    )
    with pytest.raises(CapacityError, match="no capacity to start"):
        await td.adapter.start(instance.id)
    await td.adapter.destroy(other.instance_id)
    await td.clock.advance(tensordock.DELETE_LINGER_S)
    await td.adapter.start(instance.id)
    assert await td.state(instance) == ("starting", False)


async def test_tensordock_start_that_never_completes_stays_starting(td: Power) -> None:
    instance = await td.rent()
    await td.adapter.stop(instance.id)
    await td.clock.advance(instance.stop_s)
    td.world.faults.node("tensordock").start_never_completes = True
    await td.adapter.start(instance.id)
    await td.clock.advance(3600)
    assert await td.state(instance) == ("starting", False)
    await td.refused(instance)


# --------------------------------------------------------------------------- Vast


@pytest.mark.parametrize("fault", ["start_no_capacity", "start_never_completes"])
async def test_vast_start_without_gpus_stays_scheduling_until_stopped(
    vast: Power, fault: str
) -> None:
    instance = await vast.rent()
    await vast.adapter.stop(instance.id)
    setattr(vast.world.faults.node("vastai"), fault, True)
    await vast.adapter.start(instance.id)
    await vast.clock.advance(3600)
    status = await vast.adapter.get(instance.id)
    assert status is not None and (status.state, status.running) == ("scheduling", False)
    assert not status.stopped  # on its way up: neither running nor stopped
    raw = status.raw
    assert (raw["intended_status"], raw["actual_status"]) == ("running", "stopped")
    assert "GPUs" in raw["status_msg"] and raw["ssh_port"] is None
    await vast.refused(instance)
    await vast.adapter.stop(instance.id)  # cancels the start
    assert await vast.state(instance) == ("stopped", False)
    setattr(vast.world.faults.node("vastai"), fault, False)
    await vast.adapter.start(instance.id)
    await vast.clock.advance(instance.boot_s)
    assert await vast.state(instance) == ("running", True)


# --------------------------------------------------------------------------- Blue Lobster


@pytest.mark.parametrize("fault", ["start_no_capacity", "start_never_completes"])
async def test_bluelobster_start_that_never_completes_stays_booting(bl: Power, fault: str) -> None:
    instance = await bl.rent()
    await bl.adapter.stop(instance.id)
    setattr(bl.world.faults.node("bluelobster"), fault, True)
    await bl.adapter.start(instance.id)
    await bl.clock.advance(3600)
    assert instance.phase(bl.world.now()) == "booting"
    status = await bl.adapter.get(instance.id)
    assert status is not None and status.raw["power_status"] is None
    await bl.refused(instance)
    await bl.adapter.stop(instance.id)
    assert await bl.state(instance) == ("stopped", False)


# --------------------------------------------------------------------------- control


async def test_power_faults_through_the_control_endpoint(vast: Power) -> None:
    transport = httpx.ASGITransport(app=build_control_app(vast.world))
    async with httpx.AsyncClient(transport=transport, base_url="http://control") as control:
        body = {"start_no_capacity": True, "stopped_vanishes_after_s": 30.0}
        answer = await control.put("/faults/nodes/vastai", json=body)
        assert answer.status_code == 200
        assert answer.json()["start_no_capacity"] is True
        assert answer.json()["start_never_completes"] is False
    faults = vast.world.faults.node("vastai")
    assert faults.start_no_capacity and faults.stopped_vanishes_after_s == 30.0
