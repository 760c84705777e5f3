"""The simulated TensorDock v2 API, over real HTTP on loopback, on a fake world clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.sim import tensordock
from gpushop_tui.sim.faults import HttpFault
from gpushop_tui.sim.http import serve
from gpushop_tui.sim.world import World

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgpushopTestKey me@host"
ROOT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRootOnlyKey root@host"


@dataclass
class Td:
    world: World
    clock: FakeClock
    client: httpx.AsyncClient
    app: Any


@pytest.fixture
async def td() -> AsyncIterator[Td]:
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    app = tensordock.build_app(world)
    served = await serve(app)
    headers = {"Authorization": f"Bearer {world.keys['tensordock']}"}
    async with httpx.AsyncClient(base_url=served.origin + "/api/v2", headers=headers) as client:
        yield Td(world, clock, client, app)
    await served.stop()


async def _locations(td: Td) -> list[dict[str, Any]]:
    response = await td.client.get("/locations")
    assert response.status_code == 200
    return response.json()["data"]["locations"]


async def _site(td: Td, city: str) -> dict[str, Any]:
    return next(loc for loc in await _locations(td) if loc["city"] == city)


def _body(location_id: str, gpu: str = "geforcertx4090-pcie-24gb", **attrs: Any) -> dict:
    attributes = {
        "name": "gpushop-job-1",
        "type": "virtualmachine",
        "image": "ubuntu2204",
        "location_id": location_id,
        "resources": {
            "vcpu_count": 8,
            "ram_gb": 32,
            "storage_gb": 100,
            "gpus": {gpu: {"count": 1}},
        },
        "useDedicatedIp": True,
        "ssh_key": KEY,
        "cloud_init": {
            "runcmd": [
                "mkdir -p /root/.ssh /home/user/.ssh",
                f"echo '{KEY}' >> /root/.ssh/authorized_keys",
                f"echo '{KEY}' >> /home/user/.ssh/authorized_keys",
                "chown -R user:user /home/user/.ssh",
            ]
        },
    }
    attributes.update(attrs)
    return {"data": {"type": "virtualmachine", "attributes": attributes}}


async def _create(td: Td, body: dict) -> httpx.Response:
    return await td.client.post("/instances", json=body)


async def test_locations_are_deterministic_and_priced_per_component(td: Td) -> None:
    first = await _locations(td)
    assert first == await _locations(td)
    other = World(seed=1, clock=FakeClock())
    assert [s.id for s in tensordock.sites(other)] == [loc["id"] for loc in first]
    chubbuck = next(loc for loc in first if loc["city"] == "Chubbuck")
    assert chubbuck["stateprovince"] == "Idaho" and chubbuck["country"] == "United States"
    assert chubbuck["tier"] in (1, 2, 3)
    gpu = next(g for g in chubbuck["gpus"] if g["v0Name"] == "geforcertx4090-pcie-24gb")
    assert gpu["displayName"] == "NVIDIA GeForce RTX 4090 PCIe 24GB"
    assert gpu["max_count"] == 4
    assert set(gpu["resources"]) == {"max_vcpus", "max_ram_gb", "max_storage_gb"}
    assert set(gpu["pricing"]) == {"per_vcpu_hr", "per_gb_ram_hr", "per_gb_storage_hr"}
    assert gpu["network_features"]["dedicated_ip_available"] is True
    joplin = next(loc for loc in first if loc["city"] == "Joplin")
    assert all(not g["network_features"]["dedicated_ip_available"] for g in joplin["gpus"])


async def test_auth_wrong_token_is_401_and_auth_id_is_403(td: Td) -> None:
    bad = await td.client.get("/instances", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert bad.json() == {"error": "Invalid API credentials"}
    auth_id = "Bearer 8dd95ff0-dff9-489c-9b02-b38a366b6ab1"
    denied = await td.client.get("/instances/x", headers={"Authorization": auth_id})
    assert denied.status_code == 403
    assert denied.json() == {"error": "Access denied"}
    anonymous = httpx.AsyncClient(base_url=str(td.client.base_url))
    async with anonymous:
        assert (await anonymous.get("/locations")).status_code == 200
        assert (await anonymous.post("/instances", json={})).status_code == 401
        wrong = await anonymous.get("/locations", headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401


async def test_create_installs_only_runcmd_keys_and_prices_the_whole_vm(td: Td) -> None:
    site = await _site(td, "Chubbuck")
    created = await _create(td, _body(site["id"]))
    assert created.status_code == 201
    data = created.json()["data"]
    assert data["type"] == "virtualmachine" and data["name"] == "gpushop-job-1"
    assert data["status"] in ("creating", "running")
    assert "ipAddress" not in data
    instance = td.world.get("tensordock", data["id"])
    assert instance is not None
    assert instance.authorized_keys == [KEY]
    assert instance.ssh_user == "user"
    assert instance.gpu_name == "NVIDIA GeForce RTX 4090 PCIe 24GB"
    assert instance.vram_mb == 24 * 1024
    gpu = next(g for g in site["gpus"] if g["v0Name"] == "geforcertx4090-pcie-24gb")
    pricing = gpu["pricing"]
    expected = (
        gpu["price_per_hr"]
        + 8 * pricing["per_vcpu_hr"]
        + 32 * pricing["per_gb_ram_hr"]
        + 100 * pricing["per_gb_storage_hr"]
    )
    assert instance.price_per_hour == pytest.approx(expected)
    assert instance.offer_id == f"{site['id']}:geforcertx4090-pcie-24gb"
    after = await _site(td, "Chubbuck")
    left = next(g for g in after["gpus"] if g["v0Name"] == "geforcertx4090-pcie-24gb")
    assert left["max_count"] == 3


async def test_ssh_key_field_alone_grants_nothing(td: Td) -> None:
    site = await _site(td, "Manassas")
    body = _body(site["id"], cloud_init={"ssh_authorized_keys": [KEY], "runcmd": []})
    created = await _create(td, body)
    assert created.status_code == 201
    instance = td.world.get("tensordock", created.json()["data"]["id"])
    assert instance is not None and instance.authorized_keys == []


async def test_runcmd_parsing_handles_root_only_quoting_and_compound_lines() -> None:
    quoted = "ssh-rsa AAAAB3NzaC1yc2E it'''s me"
    keys = tensordock.runcmd_keys(
        [
            f"echo '{ROOT_KEY}' >> /root/.ssh/authorized_keys",
            "mkdir -p /home/user/.ssh && echo 'ssh-rsa AAAAB3NzaC1yc2E it'\\''s me'"
            " >> /home/user/.ssh/authorized_keys && chmod 600 /home/user/.ssh/authorized_keys",
            "echo 'not a key' >> /home/user/.ssh/authorized_keys",
            f"echo '{KEY}' >> /tmp/elsewhere",
            ["sh", "-c", "true"],
        ]
    )
    assert keys["root"] == [ROOT_KEY]
    assert keys["user"] == [quoted.replace("'''", "'")]
    assert tensordock.runcmd_keys("not a list") == {"user": [], "root": []}


async def test_root_only_key_does_not_let_user_in(td: Td) -> None:
    site = await _site(td, "Manassas")
    runcmd = [f"echo '{ROOT_KEY}' >> /root/.ssh/authorized_keys"]
    created = await _create(td, _body(site["id"], cloud_init={"runcmd": runcmd}))
    instance = td.world.get("tensordock", created.json()["data"]["id"])
    assert instance is not None
    assert instance.authorized_keys == []
    assert instance.extra["root_keys"] == [ROOT_KEY]


async def test_validation_errors_are_a_json_array(td: Td) -> None:
    site = await _site(td, "Chubbuck")
    body = _body(site["id"], name="", image="ubuntu1804")
    body["data"]["attributes"]["resources"]["storage_gb"] = 50
    response = await _create(td, body)
    assert response.status_code == 400
    issues = response.json()
    assert isinstance(issues, list)
    assert {
        "code": "required",
        "message": "Name is required",
        "path": ["data", "attributes", "name"],
    } in issues
    paths = [i["path"][-1] for i in issues]
    assert "image" in paths and "storage_gb" in paths
    assert all(set(i) == {"code", "message", "path"} for i in issues)
    nothing = await td.client.post("/instances", content=b"not json")
    assert nothing.status_code == 400
    assert nothing.json()[0]["path"] == ["data"]
    both = _body(site["id"], ssh_key_id="abc")
    assert (await _create(td, both)).status_code == 400
    no_gpu = _body(site["id"])
    no_gpu["data"]["attributes"]["resources"]["gpus"] = {}
    assert (await _create(td, no_gpu)).json()[0]["path"][-1] == "gpus"
    odd_cpu = _body(site["id"])
    odd_cpu["data"]["attributes"]["resources"]["vcpu_count"] = 3
    assert (await _create(td, odd_cpu)).status_code == 400
    unknown_gpu = await _create(td, _body(site["id"], gpu="rtx9999-pcie-1gb"))
    assert unknown_gpu.status_code == 400
    assert td.world.live("tensordock") == []


async def test_capacity_errors_come_as_http_200(td: Td) -> None:
    chubbuck = await _site(td, "Chubbuck")
    expected = {"status": 400, "error": "No available nodes found"}
    unknown = await _create(td, _body("00000000-0000-4000-8000-000000000000"))
    assert (unknown.status_code, unknown.json()) == (200, expected)
    stale = await _create(td, _body(chubbuck["id"], gpu="h100-sxm5-80gb"))
    assert (stale.status_code, stale.json()) == (200, expected)
    assert any(g["v0Name"] == "h100-sxm5-80gb" for g in chubbuck["gpus"])
    too_many = _body(chubbuck["id"])
    too_many["data"]["attributes"]["resources"]["gpus"]["geforcertx4090-pcie-24gb"]["count"] = 5
    assert (await _create(td, too_many)).json() == expected
    absent = await _create(td, _body(chubbuck["id"], gpu="a100-pcie-80gb"))
    assert absent.status_code == 200 and absent.json()["error"] == "GPU type is out of stock"
    huge = _body(chubbuck["id"])
    huge["data"]["attributes"]["resources"]["ram_gb"] = 10_000
    assert "Insufficient capacity" in (await _create(td, huge)).json()["error"]
    joplin = await _site(td, "Joplin")
    no_ip = await _create(td, _body(joplin["id"], gpu="l40-pcie-48gb"))
    assert no_ip.status_code == 200 and no_ip.json()["error"] == "no available public ips"
    assert td.world.live("tensordock") == []


async def test_sold_out_gpu_disappears_and_then_fails(td: Td) -> None:
    joplin = await _site(td, "Joplin")
    body = _body(
        joplin["id"],
        useDedicatedIp=False,
        port_forwards=[{"internal_port": 22, "external_port": 20000}],
    )
    assert (await _create(td, body)).status_code == 201
    after = await _site(td, "Joplin")
    assert "geforcertx4090-pcie-24gb" not in [g["v0Name"] for g in after["gpus"]]
    again = await _create(td, body)
    assert again.json() == {"status": 400, "error": "No available nodes found"}


async def test_ssh_must_be_forwarded_without_dedicated_ip(td: Td) -> None:
    site = await _site(td, "Chubbuck")
    response = await _create(td, _body(site["id"], useDedicatedIp=False))
    assert response.status_code == 400
    assert response.json()["error"] == "SSH port (22) must be forwarded for Ubuntu VMs"


async def test_get_follows_the_boot_and_reports_the_ssh_forward(td: Td) -> None:
    site = await _site(td, "Chubbuck")
    instance_id = (await _create(td, _body(site["id"]))).json()["data"]["id"]
    instance = td.world.get("tensordock", instance_id)
    assert instance is not None
    instance.ssh_port = 41022
    booting = (await td.client.get(f"/instances/{instance_id}")).json()
    assert "data" not in booting
    assert booting["status"] == "creating"
    assert booting["ipAddress"] is None and booting["portForwards"] == []
    await td.clock.advance(instance.boot_s * 0.6)
    assert (await td.client.get(f"/instances/{instance_id}")).json()["status"] == "starting"
    await td.clock.advance(instance.boot_s)
    running = (await td.client.get(f"/instances/{instance_id}")).json()
    assert running["type"] == "virtualmachine" and running["id"] == instance_id
    assert running["name"] == "gpushop-job-1"
    assert running["status"] == "running"
    assert running["ipAddress"] == "127.0.0.1"
    assert running["portForwards"] == [{"internal_port": 22, "external_port": 41022}]
    assert running["rateHourly"] == pytest.approx(instance.price_per_hour)
    instance.ssh_port = None
    plain = (await td.client.get(f"/instances/{instance_id}")).json()
    assert plain["portForwards"] == []
    instance.stopped = True
    assert (await td.client.get(f"/instances/{instance_id}")).json()["status"] == "stopped"


async def test_port_forwards_are_silently_ignored_at_some_locations(td: Td) -> None:
    site = await _site(td, "Winnipeg")
    forwards = [{"internal_port": 22, "external_port": 20000}]
    body = _body(site["id"], gpu="rtxa4000-pcie-16gb", useDedicatedIp=False, port_forwards=forwards)
    created = await _create(td, body)
    assert created.status_code == 201
    instance = td.world.get("tensordock", created.json()["data"]["id"])
    assert instance is not None
    instance.ssh_port = 41023
    await td.clock.advance(instance.boot_s)
    view = (await td.client.get(f"/instances/{instance.id}")).json()
    assert view["status"] == "running" and view["portForwards"] == []


async def test_list_has_both_shapes(td: Td) -> None:
    site = await _site(td, "Chubbuck")
    instance_id = (await _create(td, _body(site["id"]))).json()["data"]["id"]
    first = (await td.client.get("/instances")).json()
    second = (await td.client.get("/instances")).json()
    assert first == {
        "data": {
            "instances": [
                {
                    "type": "virtualmachine",
                    "id": instance_id,
                    "attributes": {"name": "gpushop-job-1", "status": "creating"},
                }
            ]
        }
    }
    (flat,) = second["data"]
    assert flat["id"] == instance_id and flat["gpu_model"] == "geforcertx4090-pcie-24gb"
    assert flat["gpu_count"] == 1 and flat["vcpus"] == 8 and flat["ram_gb"] == 32
    assert flat["storage_gb"] == 100 and flat["location_id"] == site["id"]
    assert flat["created_at"] == "2026-01-01T00:00:00Z"
    assert set(flat) >= {"name", "status", "ipAddress", "price_per_hour"}
    td.app.state.list_shape = "bare"
    assert isinstance((await td.client.get("/instances")).json()["data"], list)
    assert isinstance((await td.client.get("/instances")).json()["data"], list)
    td.app.state.list_shape = "wrapped"
    assert "instances" in (await td.client.get("/instances")).json()["data"]


async def test_delete_lingers_as_deleting_then_404(td: Td) -> None:
    site = await _site(td, "Chubbuck")
    instance_id = (await _create(td, _body(site["id"]))).json()["data"]["id"]
    deleted = await td.client.delete(f"/instances/{instance_id}")
    assert deleted.status_code == 200
    assert deleted.json() == {
        "data": {"type": "success", "attributes": {"message": "Instance deleted successfully"}}
    }
    lingering = (await td.client.get(f"/instances/{instance_id}")).json()
    assert lingering["status"] == "deleting" and lingering["ipAddress"] is None
    await td.clock.advance(tensordock.DELETE_LINGER_S)
    gone = await td.client.get(f"/instances/{instance_id}")
    assert (gone.status_code, gone.json()) == (404, {"error": "Instance not found"})
    again = await td.client.delete(f"/instances/{instance_id}")
    assert (again.status_code, again.json()) == (404, {"error": "Instance not found"})
    assert (await td.client.delete("/instances/nope")).status_code == 404
    td.app.state.list_shape = "wrapped"
    assert (await td.client.get("/instances")).json() == {"data": {"instances": []}}


async def test_injected_faults(td: Td) -> None:
    td.world.faults.add(HttpFault(provider="tensordock", endpoint="locations", times=1))
    failed = await td.client.get("/locations")
    assert failed.status_code == 500 and failed.text == "Internal Server Error"
    assert (await td.client.get("/locations")).status_code == 200
    td.world.faults.add(HttpFault(provider="tensordock", endpoint="list", kind="empty", times=1))
    empty = await td.client.get("/instances")
    assert empty.status_code == 200 and empty.content == b""
    assert (await td.client.get("/instances")).json()["data"] is not None
    for name, call in (
        ("create", td.client.post("/instances", json={})),
        ("get", td.client.get("/instances/x")),
        ("destroy", td.client.delete("/instances/x")),
    ):
        td.world.faults.add(HttpFault(provider="tensordock", endpoint=name, status=503, times=1))
        assert (await call).status_code == 503


async def test_low_balance_is_refused(td: Td) -> None:
    site = await _site(td, "Chubbuck")
    td.world.credit = 0.5
    response = await _create(td, _body(site["id"]))
    assert response.status_code == 402
    assert "balance" in response.json()["error"]
