"""The node watchdog in the simulator, on a fake world clock: a node armed over SSH (the files
gpushop's `arm` writes, then `sh .gpushop/watchdog.sh start`) acts at its deadline on the next
sim request: a Vast node deletes itself through the Vast API with its instance key, a VM powers
off. The instance key reaches its own instance only. And the standalone `--clock fake` sim.

Written against the contract's file formats, not against `node/watchdog.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.sim.faults import HttpFault
from gpushop_tui.sim.runner import Simulator, run_simulator
from gpushop_tui.sim.world import INSTANCE_KEY, PROVIDERS, SimInstance
from tests.conftest import running_sim


@dataclass
class Env:
    sim: Simulator
    clock: FakeClock
    key: asyncssh.SSHKey
    control: httpx.AsyncClient
    vast: httpx.AsyncClient
    """The Vast API with the account key."""
    roots: dict[str, Path] = field(default_factory=dict)
    """Each armed node's home on this machine, by instance id."""

    def now(self) -> int:
        return int(self.sim.world.now())

    async def advance(self, seconds: float) -> dict[str, Any]:
        """`POST /clock/advance`; the answer (world time and every instance's phase)."""
        answer = await self.control.post("/clock/advance", json={"seconds": seconds})
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    async def phase(self, instance: SimInstance) -> str:
        state = (await self.control.get("/state")).json()
        row = next(r for r in state["instances"][instance.provider] if r["id"] == instance.id)
        return str(row["phase"])

    async def rent_vast(self) -> tuple[SimInstance, str]:
        """A running Vast instance created through the API, our key on it; its instance key."""
        offers = (await self.vast.post("/bundles/", json={"limit": 8})).json()["offers"]
        taken = self.sim.world.taken["vastai"]
        offer = next(o for o in offers if str(o["id"]) not in taken)
        created = await self.vast.put(f"/asks/{offer['id']}/", json={"image": "pytorch/pytorch"})
        assert created.status_code == 200, created.text
        answer = created.json()
        instance = self.sim.world.get("vastai", str(answer["new_contract"]))
        assert instance is not None
        return await self._boot(instance), answer["instance_api_key"]

    async def rent_vm(self, provider: str) -> SimInstance:
        """A running VM at `provider` (made in the world directly), our key on it."""
        world = self.sim.world
        number = str(sum(len(v) for v in world.instances.values()) + 1)
        instance = await world.create_instance(
            provider,
            instance_id=f"vm{number}",
            offer_id=f"o{number}",
            label=f"gpushop-test-{number}",
            gpu_name="RTX 4090",
            gpu_count=1,
            vram_mb=24564,
            cuda=12.4,
            price_per_hour=0.5,
        )
        return await self._boot(instance)

    async def _boot(self, instance: SimInstance) -> SimInstance:
        instance.authorized_keys.append(self.key.export_public_key().decode().strip())
        await self.clock.advance(instance.boot_s)
        assert instance.phase(self.sim.world.now()) == "running"
        return instance

    def ssh(self, instance: SimInstance) -> Any:
        return asyncssh.connect(
            "127.0.0.1",
            port=instance.ssh_port,
            username=instance.ssh_user,
            client_keys=[self.key],
            known_hosts=None,
            connect_timeout=10,
        )

    async def write(self, instance: SimInstance, files: dict[str, str]) -> None:
        """Write files on the node over SFTP, as gpushop does."""
        async with self.ssh(instance) as conn, conn.start_sftp_client() as sftp:
            await sftp.makedirs(".gpushop", exist_ok=True)
            for path, text in files.items():
                async with sftp.open(path, "w") as f:
                    await f.write(text)

    async def arm(
        self,
        instance: SimInstance,
        deadline: int,
        action: str = "poweroff",
        *,
        instance_key: str | None = None,
        env: dict[str, str] | None = None,
    ) -> asyncssh.SSHCompletedProcess:
        """What `arm` does: the watchdog's files, then `sh .gpushop/watchdog.sh start`."""
        lines = env or {"GPUSHOP_SESSION": "sess01", "GPUSHOP_ACTION": action}
        if action == "destroy" and env is None:
            lines |= {"GPUSHOP_API": self.sim.urls["vastai"], "GPUSHOP_INSTANCE": instance.id}
        files = {
            ".gpushop/watchdog.sh": "#!/bin/sh\n",
            ".gpushop/watchdog.env": "".join(f"{k}={v}\n" for k, v in lines.items()),
            ".gpushop/deadline": f"{deadline}\n",
        }
        if instance_key is not None:
            files[".gpushop/instance_key"] = instance_key + "\n"
        await self.write(instance, files)
        async with self.ssh(instance) as conn:
            started: asyncssh.SSHCompletedProcess = await conn.run("sh .gpushop/watchdog.sh start")
        dog = self.sim.world.watchdogs.get((instance.provider, instance.id))
        if dog is not None:
            self.roots[instance.id] = dog.root
        return started

    def log(self, instance: SimInstance) -> str:
        """The node's `watchdog.log` (read on this machine: a destroyed node keeps its files)."""
        return (self.roots[instance.id] / ".gpushop" / "watchdog.log").read_text()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = FakeClock()
    async with run_simulator(clock=clock) as sim:
        auth = {"Authorization": f"Bearer {sim.keys['vastai']}"}
        async with (
            httpx.AsyncClient(base_url=sim.control) as control,
            httpx.AsyncClient(base_url=sim.urls["vastai"], headers=auth) as vast,
        ):
            yield Env(sim, clock, asyncssh.generate_private_key("ssh-ed25519"), control, vast)


# --------------------------------------------------------------------------- Vast: destroy


async def test_vast_node_destroys_itself_with_its_instance_key_at_the_deadline(env: Env) -> None:
    instance, key = await env.rent_vast()
    armed = await env.arm(instance, env.now() + 60, "destroy", instance_key=key)
    assert (armed.exit_status, armed.stdout, armed.stderr) == (0, "", "")
    assert "started: destroy" in env.log(instance)

    await env.clock.advance(59)
    row = (await env.vast.get(f"/instances/{instance.id}/")).json()["instances"]
    assert row["actual_status"] == "running"

    await env.clock.advance(1)  # the deadline: the next request, of any kind, fires it
    assert (await env.vast.get("/users/current/")).status_code == 200
    assert instance.phase(env.sim.world.now()) == "destroyed"
    assert await env.phase(instance) == "destroyed"
    assert env.sim.world.watchdogs == {}
    log = env.log(instance)
    assert f"DELETE {env.sim.urls['vastai']}/instances/{instance.id}/ -> 200" in log
    assert key not in log and env.sim.keys["vastai"] not in log


async def test_a_failed_destroy_is_logged_and_tried_again_a_minute_later(env: Env) -> None:
    instance, _ = await env.rent_vast()
    await env.arm(instance, env.now() + 10, "destroy")  # the container's key, no key file
    env.sim.world.faults.add(
        HttpFault(provider="vastai", endpoint="destroy", status=500, body="boom", times=1)
    )
    answer = await env.advance(10)
    row = next(r for r in answer["instances"]["vastai"] if r["id"] == instance.id)
    assert row["phase"] == "running"
    assert row["watchdog"] == {"action": "destroy", "deadline": float(env.now())}
    assert "-> 500 boom" in env.log(instance)

    assert await env.phase(instance) == "running"  # not yet a minute later
    await env.advance(60)
    assert await env.phase(instance) == "destroyed"
    assert "-> 200" in env.log(instance).splitlines()[-1]


async def test_an_instance_key_reaches_its_own_instance_only(env: Env) -> None:
    a, key_a = await env.rent_vast()
    b, _ = await env.rent_vast()
    assert a.extra[INSTANCE_KEY] == key_a
    own = {"Authorization": f"Bearer {key_a}"}
    base = env.sim.urls["vastai"]
    async with httpx.AsyncClient(base_url=base, headers=own) as client:
        assert (await client.get(f"/instances/{a.id}/")).status_code == 200
        labelled = await client.put(f"/instances/{a.id}/", json={"label": "mine"})
        assert labelled.status_code == 200
        for refused in (
            await client.get(f"/instances/{b.id}/"),
            await client.delete(f"/instances/{b.id}/"),
            await client.put(f"/instances/{b.id}/", json={"state": "stopped"}),
            await client.get("/users/current/"),
            await client.get("/instances/"),
            await client.post(f"/instances/{a.id}/ssh/", json={"ssh_key": "ssh-ed25519 AAAA"}),
        ):
            assert refused.status_code == 403
            assert refused.json() == {
                "success": False,
                "error": "forbidden",
                "msg": f"this API key is limited to instance {a.id}",
            }
        assert b.phase(env.sim.world.now()) == "running"
        assert (await client.delete(f"/instances/{a.id}/")).status_code == 200
    assert a.phase(env.sim.world.now()) == "destroyed"
    bogus = await env.vast.get("/users/current/", headers={"Authorization": "Bearer nope"})
    assert bogus.status_code == 403 and bogus.json()["error"] == "auth_error"
    state = (await env.control.get("/state")).text
    assert key_a not in state and env.sim.keys["vastai"] not in state


# --------------------------------------------------------------------------- VMs: poweroff


@pytest.mark.parametrize("provider", ["tensordock", "bluelobster"])
async def test_a_vm_powers_off_at_its_deadline(env: Env, provider: str) -> None:
    instance = await env.rent_vm(provider)
    assert (await env.arm(instance, env.now() + 120)).exit_status == 0
    answer = await env.advance(119)
    row = next(r for r in answer["instances"][provider] if r["id"] == instance.id)
    assert row["phase"] == "running" and row["watchdog"]["action"] == "poweroff"

    answer = await env.advance(1)
    row = next(r for r in answer["instances"][provider] if r["id"] == instance.id)
    assert (row["phase"], row["watchdog"]) == ("stopped", None)
    assert instance.stopped and instance.destroyed_at is None
    assert "deadline passed: poweroff" in env.log(instance)


async def test_a_deadline_moved_later_holds_and_an_unreadable_one_keeps_the_last(
    env: Env,
) -> None:
    instance = await env.rent_vm("tensordock")
    start = env.now()
    await env.arm(instance, start + 60)
    await env.advance(30)
    await env.write(instance, {".gpushop/deadline": f"{start + 600}\n"})
    await env.advance(40)  # past the old deadline
    assert await env.phase(instance) == "running"

    await env.write(instance, {".gpushop/deadline": "soon\n"})
    await env.advance(500)
    assert await env.phase(instance) == "running"
    log = env.log(instance)
    later = datetime.fromtimestamp(start + 600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"deadline {later}" in log
    assert f"deadline unreadable; keeping {later}" in log

    await env.advance(30)
    assert await env.phase(instance) == "stopped"


async def test_start_is_idempotent_and_a_stop_drops_the_watchdog(env: Env) -> None:
    instance = await env.rent_vm("bluelobster")
    ident = ("bluelobster", instance.id)
    assert (await env.arm(instance, env.now() + 60)).exit_status == 0
    first = env.sim.world.watchdogs[ident]
    again = await env.arm(instance, env.now() + 9999, env={"GPUSHOP_ACTION": "nonsense"})
    assert again.exit_status == 0
    assert env.sim.world.watchdogs[ident] is first

    await env.sim.world.power_off(*ident)
    assert ident not in env.sim.world.watchdogs
    env.sim.world.power_on(*ident)
    await env.clock.advance(instance.boot_s)
    await env.advance(120)  # the old deadline passes: nothing runs on the restarted VM
    assert await env.phase(instance) == "running"

    broken = await env.arm(instance, env.now() + 60, env={"GPUSHOP_SESSION": "s"})
    assert broken.exit_status == 1 and "GPUSHOP_ACTION" in str(broken.stderr)
    no_api = await env.arm(instance, 1, env={"GPUSHOP_SESSION": "s", "GPUSHOP_ACTION": "destroy"})
    assert no_api.exit_status == 1 and "GPUSHOP_API" in str(no_api.stderr)
    valid = "GPUSHOP_SESSION=s\nGPUSHOP_ACTION=poweroff\n"
    await env.write(instance, {".gpushop/watchdog.env": valid, ".gpushop/deadline": "later\n"})
    async with env.ssh(instance) as conn:
        no_deadline = await conn.run("sh .gpushop/watchdog.sh start")
        assert no_deadline.exit_status == 1 and "deadline" in str(no_deadline.stderr)
        assert (await conn.run("sh .gpushop/watchdog.sh stop")).exit_status == 2
    assert ident not in env.sim.world.watchdogs


# --------------------------------------------------------------------------- standalone


def test_the_standalone_simulator_runs_on_a_fake_clock_when_asked(tmp_path: Path) -> None:
    with running_sim(tmp_path / "fake", 0, "--clock", "fake") as info:
        before = httpx.get(f"{info['control']}/state").json()["now"]
        moved = httpx.post(f"{info['control']}/clock/advance", json={"seconds": 7200})
        assert moved.status_code == 200
        assert moved.json()["now"] == before + 7200
        assert set(moved.json()["instances"]) == set(PROVIDERS)
        assert httpx.get(f"{info['control']}/state").json()["now"] == before + 7200
    with running_sim(tmp_path / "real", 0) as info:
        refused = httpx.post(f"{info['control']}/clock/advance", json={"seconds": 1})
        assert refused.status_code == 409
