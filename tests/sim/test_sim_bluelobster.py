"""The simulated Blue Lobster API, over real HTTP on loopback, on a fake world clock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncssh
import httpx
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.sim import bluelobster
from gpushop_tui.sim.faults import HttpFault
from gpushop_tui.sim.http import serve
from gpushop_tui.sim.node import SshNodes
from gpushop_tui.sim.world import World

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgpushopTestKey me@host"


@dataclass
class Bl:
    world: World
    clock: FakeClock
    client: httpx.AsyncClient
    app: Any


@contextlib.asynccontextmanager
async def _serving(world: World, clock: FakeClock) -> AsyncIterator[Bl]:
    app = bluelobster.build_app(world)
    served = await serve(app)
    headers = {"X-API-Key": world.keys["bluelobster"]}
    try:
        async with httpx.AsyncClient(base_url=served.origin + "/api/v1", headers=headers) as client:
            yield Bl(world, clock, client, app)
    finally:
        await served.stop()


@pytest.fixture
async def bl() -> AsyncIterator[Bl]:
    clock = FakeClock()
    async with _serving(World(seed=1, clock=clock), clock) as made:
        yield made


@pytest.fixture
async def bl_nodes() -> AsyncIterator[Bl]:
    """Like `bl`, with a real SSH node on loopback for every instance."""
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    world.nodes = nodes = SshNodes(world)
    try:
        async with _serving(world, clock) as made:
            yield made
    finally:
        await nodes.aclose()


def _launch_body(**fields: Any) -> dict[str, Any]:
    body = {
        "region": "igl",
        "instance_type": "v1_gpu_1x_a5000",
        "ssh_key": KEY,
        "name": "gpushop-job-1",
        "username": "ubuntu",
        "template_name": "UBUNTU-22-04-NV",
        "metadata": {"project": "gpushop"},
    }
    body.update(fields)
    return body


async def _launch(bl: Bl, **fields: Any) -> httpx.Response:
    return await bl.client.post("/instances/launch-instance", json=_launch_body(**fields))


async def _offers(bl: Bl) -> dict[str, dict[str, Any]]:
    response = await bl.client.get("/instances/available")
    assert response.status_code == 200
    return {o["id"]: o for o in response.json()["data"]}


async def test_available_catalogue_matches_the_real_shape(bl: Bl) -> None:
    offers = await _offers(bl)
    assert len(offers) == 19
    assert sum(o["instance_type"]["specs"]["gpus"] == 0 for o in offers.values()) == 2
    a5000 = offers["v1_gpu_1x_a5000"]["instance_type"]
    assert a5000["price_cents_per_hour"] == 30 and isinstance(a5000["price_cents_per_hour"], int)
    assert a5000["description"] == "1x RTX A5000 (24 GB)"
    assert a5000["gpu_description"] == "N/A"
    assert a5000["specs"] == {
        "vcpus": 4,
        "memory_gib": 32,
        "storage_gib": 250,
        "gpus": 1,
        "gpu_model": "RTX A5000",
    }
    rtx8000 = offers["v1_gpu_1x_8000"]
    assert rtx8000["instance_type"]["specs"]["gpu_model"] == ["Quadro RTX 8000", "RTX 8000"]
    assert rtx8000["regions_with_capacity_available"] == []
    assert offers["v1_gpu_1x_a4000"]["instance_type"]["price_cents_per_hour"] == 20
    assert offers["v1_gpu_1x_a6000"]["instance_type"]["price_cents_per_hour"] == 55
    cpu = offers["v1_cpu_small"]
    assert cpu["instance_type"]["price_cents_per_hour"] == 3
    assert "gpu_model" not in cpu["instance_type"]["specs"]
    assert [r["name"] for r in cpu["regions_with_capacity_available"]] == ["igl", "phl"]
    assert offers["v1_gpu_1x_a5000"]["regions_with_capacity_available"] == [
        {
            "name": "igl",
            "description": "Wilmington",
            "location": {"city": "Wilmington", "state": "DE", "country": "USA"},
        }
    ]
    text = str(offers)
    assert "vram" not in text.lower()
    assert offers == await _offers(bl)


async def test_auth_missing_is_401_wrong_is_403(bl: Bl) -> None:
    missing = await bl.client.get("/instances", headers={"X-API-Key": ""})
    assert missing.status_code == 401
    assert missing.json()["detail"]["error"] == "unauthorized"
    wrong = await bl.client.get("/instances/available", headers={"X-API-Key": "nope"})
    assert wrong.status_code == 403
    assert set(wrong.json()["detail"]) == {"error", "message"}


async def test_templates(bl: Bl) -> None:
    body = (await bl.client.get("/instances/templates")).json()
    assert body["total"] == 3
    assert {t["name"] for t in body["templates"]} >= {"UBUNTU-22-04-NV"}


async def test_launch_is_flat_and_the_task_completes_on_the_world_clock(bl: Bl) -> None:
    response = await _launch(bl)
    assert response.status_code == 200
    launched = response.json()
    assert set(launched) == {"task_id", "vm_uuid", "assigned_ip", "status"}
    assert launched["status"] == "PENDING" and launched["task_id"].startswith("task_")
    instance = bl.world.get("bluelobster", launched["vm_uuid"])
    assert instance is not None
    assert instance.authorized_keys == [KEY]
    assert instance.ssh_user == "ubuntu"
    assert instance.price_per_hour == pytest.approx(0.30)
    assert instance.gpu_name == "RTX A5000" and instance.vram_mb == 24 * 1024
    assert instance.driver == "560.35.05"
    task_url = f"/tasks/{launched['task_id']}"
    pending = (await bl.client.get(task_url)).json()
    assert pending["status"] == "PENDING"
    assert pending["operation"] == "launch_instance"
    assert pending["params"] == {"vm_uuid": instance.id}
    await bl.clock.advance(bluelobster.PENDING_S)
    assert (await bl.client.get(task_url)).json()["status"] == "PROCESSING"
    await bl.clock.advance(instance.boot_s)
    done = (await bl.client.get(task_url)).json()
    assert done["status"] == "COMPLETED"
    assert done["params"]["vm_uuid"] == instance.id
    assert done["result"]["vm_uuid"] == instance.id
    missing = await bl.client.get("/tasks/task_nope")
    assert missing.status_code == 404


async def test_instance_objects_and_power_status_quirk(bl: Bl) -> None:
    first = (await _launch(bl)).json()["vm_uuid"]
    second = (await _launch(bl, name="gpushop-job-2")).json()["vm_uuid"]
    instance = bl.world.get("bluelobster", first)
    assert instance is not None
    instance.ssh_port = 42022
    await bl.clock.advance(instance.boot_s)
    view = (await bl.client.get(f"/instances/{first}")).json()
    assert view["uuid"] == first and view["name"] == "gpushop-job-1"
    assert view["ip_address"] == "127.0.0.1" and view["region"] == "igl"
    assert view["cpu_cores"] == 4 and view["memory"] == 32 and view["storage"] == 250
    assert view["gpu_count"] == 1 and view["gpu_model"] == "RTX A5000"
    assert view["instance_type"] == "v1_gpu_1x_a5000"
    assert view["price_cents_per_hour"] == 30
    assert view["vm_username"] == "ubuntu"
    assert view["metadata"] == {}
    assert view["created_at"] == "2026-01-01T00:00:00Z"
    assert view["ssh_port"] == 42022
    other = (await bl.client.get(f"/instances/{second}")).json()
    assert "ssh_port" not in other
    powers = {view["power_status"], other["power_status"]}
    assert powers == {None, "running"}
    listed = (await bl.client.get("/instances")).json()
    assert isinstance(listed, list)
    assert [i["uuid"] for i in listed] == [first, second]
    instance.stopped = True
    assert (await bl.client.get(f"/instances/{first}")).json()["power_status"] == "stopped"
    unknown = await bl.client.get("/instances/00000000-0000-4000-8000-000000000000")
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": {"error": "not_found", "message": "Instance not found"}}


async def test_custom_username_is_the_login_user(bl: Bl) -> None:
    vm = (await _launch(bl, username="admin")).json()["vm_uuid"]
    instance = bl.world.get("bluelobster", vm)
    assert instance is not None and instance.ssh_user == "admin"
    assert (await bl.client.get(f"/instances/{vm}")).json()["vm_username"] == "admin"


async def test_ssh_key_with_trailing_newline_is_rejected(bl: Bl) -> None:
    response = await _launch(bl, ssh_key=KEY + "\n")
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    assert [e["field"] for e in body["errors"]] == ["ssh_key"]
    assert "newline" in body["errors"][0]["message"]
    garbage = await _launch(bl, ssh_key="hello")
    assert garbage.json()["errors"][0]["field"] == "ssh_key"
    assert bl.world.live("bluelobster") == []


@pytest.mark.parametrize("name", ["job-", "-job", "job_1", "a" * 65, "é-job"])
async def test_bad_names_are_field_errors(bl: Bl, name: str) -> None:
    response = await _launch(bl, name=name)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["name"]


async def test_missing_and_unknown_fields(bl: Bl) -> None:
    empty = await bl.client.post("/instances/launch-instance", json={})
    fields = {e["field"] for e in empty.json()["errors"]}
    assert empty.status_code == 422 and fields == {"region", "instance_type", "ssh_key"}
    unknown = await _launch(bl, region="us-east-1", instance_type="gpu_1x_a4000")
    assert {e["field"] for e in unknown.json()["errors"]} == {"region", "instance_type"}
    broken = await bl.client.post("/instances/launch-instance", content=b"{")
    assert broken.status_code == 422
    assert (await _launch(bl, name="a" * 64)).status_code == 200


async def test_sold_out_is_409_no_capacity(bl: Bl) -> None:
    sold_out = await _launch(bl, instance_type="v1_gpu_1x_8000")
    assert sold_out.status_code == 409
    assert sold_out.json()["detail"]["error"] == "no_capacity"
    assert (await _launch(bl, region="phl")).status_code == 409
    assert (await _launch(bl, instance_type="v1_gpu_1x_5090")).status_code == 200
    offers = await _offers(bl)
    assert offers["v1_gpu_1x_5090"]["regions_with_capacity_available"] == []
    again = await _launch(bl, instance_type="v1_gpu_1x_5090", name="second")
    assert again.status_code == 409


async def test_failed_launch_task(bl: Bl) -> None:
    bl.app.state.fail_launches = 1
    launched = (await _launch(bl)).json()
    instance = bl.world.get("bluelobster", launched["vm_uuid"])
    assert instance is not None
    await bl.clock.advance(bluelobster.PENDING_S)
    assert (await bl.client.get(f"/tasks/{launched['task_id']}")).json()["status"] == "PROCESSING"
    await bl.clock.advance(instance.boot_s)
    failed = (await bl.client.get(f"/tasks/{launched['task_id']}")).json()
    assert failed["status"] == "FAILED" and failed["message"]
    assert (await bl.client.get(f"/instances/{instance.id}")).status_code == 404
    good = (await _launch(bl)).json()
    await bl.clock.advance(10)
    assert (await bl.client.get(f"/tasks/{good['task_id']}")).json()["status"] == "COMPLETED"


async def test_vanished_during_launch_fails_the_task(bl: Bl) -> None:
    launched = (await _launch(bl)).json()
    await bl.clock.advance(bluelobster.PENDING_S)
    await bl.world.vanish("bluelobster", launched["vm_uuid"])
    task = (await bl.client.get(f"/tasks/{launched['task_id']}")).json()
    assert task["status"] == "FAILED"


async def test_delete_lingers_with_its_ip_then_404(bl: Bl) -> None:
    vm = (await _launch(bl)).json()["vm_uuid"]
    await bl.clock.advance(10)
    deleted = await bl.client.delete(f"/instances/{vm}")
    assert deleted.status_code == 200
    body = deleted.json()
    assert body["status"] == "PENDING" and body["message"] == "Instance deletion queued"
    assert body["instance_id"] == vm
    lingering = await bl.client.get(f"/instances/{vm}")
    assert lingering.status_code == 200 and lingering.json()["ip_address"] == "127.0.0.1"
    assert [i["uuid"] for i in (await bl.client.get("/instances")).json()] == [vm]
    second = await bl.client.delete(f"/instances/{vm}")
    assert second.status_code == 404
    await bl.clock.advance(bluelobster.PENDING_S)
    assert (await bl.client.get(f"/tasks/{body['task_id']}")).json()["status"] == "PROCESSING"
    await bl.clock.advance(bluelobster.DELETE_LINGER_S)
    assert (await bl.client.get(f"/instances/{vm}")).status_code == 404
    assert (await bl.client.get("/instances")).json() == []
    task = (await bl.client.get(f"/tasks/{body['task_id']}")).json()
    assert task["status"] == "COMPLETED" and task["operation"] == "delete_instance"
    assert (await bl.client.delete(f"/instances/{vm}")).status_code == 404


async def test_injected_faults(bl: Bl) -> None:
    bl.world.faults.add(HttpFault(provider="bluelobster", endpoint="available", times=1))
    failed = await bl.client.get("/instances/available")
    assert failed.status_code == 500
    assert (await bl.client.get("/instances/available")).status_code == 200
    bl.world.faults.add(HttpFault(provider="bluelobster", endpoint="list", kind="empty", times=1))
    empty = await bl.client.get("/instances")
    assert empty.status_code == 200 and empty.content == b""
    assert (await bl.client.get("/instances")).json() == []
    for name, method, path in (
        ("launch", "POST", "/instances/launch-instance"),
        ("task", "GET", "/tasks/x"),
        ("get", "GET", "/instances/x"),
        ("destroy", "DELETE", "/instances/x"),
        ("templates", "GET", "/instances/templates"),
        ("shutdown", "POST", "/instances/x/shutdown"),
        ("power_on", "POST", "/instances/x/power-on"),
    ):
        bl.world.faults.add(HttpFault(provider="bluelobster", endpoint=name, status=502, times=1))
        assert (await bl.client.request(method, path)).status_code == 502
    assert bl.world.live("bluelobster") == []


ACTION_FIELDS = {"status", "message", "task_id", "instance_id", "host", "duration_ms", "new_name"}


async def _power(bl: Bl, vm: str, action: str, **kw: Any) -> httpx.Response:
    return await bl.client.post(f"/instances/{vm}/{action}", **kw)


async def test_shutdown_keeps_the_instance_and_power_on_boots_it_again(bl: Bl) -> None:
    vm = (await _launch(bl, instance_type="v1_gpu_1x_5090")).json()["vm_uuid"]
    instance = bl.world.get("bluelobster", vm)
    assert instance is not None
    instance.extra["reports_power"] = True  # not the BL-008 null, so "running" can be seen
    await bl.clock.advance(instance.boot_s)
    assert (await bl.client.get(f"/instances/{vm}")).json()["power_status"] == "running"
    stopped = await _power(bl, vm, "shutdown")
    assert stopped.status_code == 200
    body = stopped.json()
    assert set(body) == ACTION_FIELDS
    assert body["status"] == "success" and body["instance_id"] == vm
    assert body["host"] == instance.extra["host_id"] and isinstance(body["duration_ms"], int)
    view = (await bl.client.get(f"/instances/{vm}")).json()
    assert view["power_status"] == "stopped" and view["ip_address"] == "127.0.0.1"
    assert instance.phase(bl.world.now()) == "stopped"
    listed = (await bl.client.get("/instances")).json()
    assert [(i["uuid"], i["power_status"]) for i in listed] == [(vm, "stopped")]
    await bl.clock.advance(3600)  # stopped stays stopped, and keeps its disk and its card
    assert (await bl.client.get(f"/instances/{vm}")).json()["power_status"] == "stopped"
    assert (await _offers(bl))["v1_gpu_1x_5090"]["regions_with_capacity_available"] == []
    again = await _power(bl, vm, "shutdown")
    assert again.status_code == 409
    assert again.json()["detail"]["error"] == "invalid_state"
    started = await _power(bl, vm, "power-on")
    assert started.status_code == 200
    assert set(started.json()) == ACTION_FIELDS and started.json()["instance_id"] == vm
    assert instance.phase(bl.world.now()) == "booting"
    assert (await bl.client.get(f"/instances/{vm}")).json()["power_status"] is None
    running = await _power(bl, vm, "power-on")
    assert running.status_code == 409 and running.json()["detail"]["error"] == "invalid_state"
    await bl.clock.advance(instance.boot_s)
    assert instance.phase(bl.world.now()) == "running"
    view = (await bl.client.get(f"/instances/{vm}")).json()
    assert view["power_status"] == "running" and view["created_at"] == "2026-01-01T00:00:00Z"
    assert (await _power(bl, vm, "shutdown")).status_code == 200  # and round again
    assert (await _power(bl, vm, "power-on")).status_code == 200


async def test_shutdown_while_provisioning_is_invalid_state(bl: Bl) -> None:
    vm = (await _launch(bl)).json()["vm_uuid"]
    early = await _power(bl, vm, "shutdown")
    assert early.status_code == 409 and early.json()["detail"]["error"] == "invalid_state"
    instance = bl.world.get("bluelobster", vm)
    assert instance is not None and not instance.stopped


async def test_a_stopped_instance_can_be_deleted(bl: Bl) -> None:
    vm = (await _launch(bl)).json()["vm_uuid"]
    await bl.clock.advance(10)
    assert (await _power(bl, vm, "shutdown")).status_code == 200
    deleted = await bl.client.delete(f"/instances/{vm}")
    assert deleted.status_code == 200 and deleted.json()["instance_id"] == vm
    assert (await bl.client.get(f"/instances/{vm}")).json()["power_status"] == "stopped"
    lingering = await _power(bl, vm, "power-on")  # a delete under way is past powering on
    assert lingering.status_code == 404
    await bl.clock.advance(bluelobster.DELETE_LINGER_S)
    assert (await bl.client.get(f"/instances/{vm}")).status_code == 404
    assert (await bl.client.get("/instances")).json() == []
    for action in ("shutdown", "power-on"):
        gone = await _power(bl, vm, action)
        assert gone.status_code == 404 and gone.json()["detail"]["error"] == "not_found"


async def test_power_actions_need_the_key_and_a_known_instance(bl: Bl) -> None:
    vm = (await _launch(bl)).json()["vm_uuid"]
    await bl.clock.advance(10)
    for action in ("shutdown", "power-on"):
        missing = await _power(bl, vm, action, headers={"X-API-Key": ""})
        assert missing.status_code == 401
        wrong = await _power(bl, vm, action, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 403
        unknown = await _power(bl, "00000000-0000-4000-8000-000000000000", action)
        assert unknown.status_code == 404
    instance = bl.world.get("bluelobster", vm)
    assert instance is not None and instance.phase(bl.world.now()) == "running"


async def test_ssh_is_down_while_stopped_and_back_after_the_reboot(bl_nodes: Bl) -> None:
    bl = bl_nodes
    key = asyncssh.generate_private_key("ssh-ed25519")
    public = key.export_public_key().decode().strip()
    vm = (await _launch(bl, ssh_key=public)).json()["vm_uuid"]
    instance = bl.world.get("bluelobster", vm)
    assert instance is not None and instance.ssh_port is not None
    port = instance.ssh_port

    def connect() -> Any:
        return asyncssh.connect(
            "127.0.0.1",
            port=port,
            username="ubuntu",
            client_keys=[key],
            known_hosts=None,
            connect_timeout=10,
        )

    await bl.clock.advance(instance.boot_s)
    async with connect() as conn:
        assert (await conn.run("echo ok")).stdout == "ok\n"
    assert (await _power(bl, vm, "shutdown")).status_code == 200
    with pytest.raises((OSError, asyncssh.Error)):
        await connect()
    assert (await _power(bl, vm, "power-on")).status_code == 200
    with pytest.raises((OSError, asyncssh.Error)):
        await connect()  # still booting
    await bl.clock.advance(instance.boot_s)
    async with connect() as conn:
        assert (await conn.run("echo ok")).stdout == "ok\n"
    assert (await bl.client.get(f"/instances/{vm}")).json()["ssh_port"] == port
