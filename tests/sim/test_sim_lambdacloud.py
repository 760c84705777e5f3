"""The simulated Lambda Cloud API, over real HTTP on loopback, on a fake world clock."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncssh
import httpx
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.sim import lambdacloud
from gpushop_tui.sim.faults import HttpFault
from gpushop_tui.sim.http import serve
from gpushop_tui.sim.node import SshNodes
from gpushop_tui.sim.world import World

P = "lambda"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgpushopTestKey me@host"


@dataclass
class Lc:
    world: World
    clock: FakeClock
    client: httpx.AsyncClient
    app: Any


@contextlib.asynccontextmanager
async def _serving(world: World, clock: FakeClock, *, limits: bool) -> AsyncIterator[Lc]:
    app = lambdacloud.build_app(world)
    world.rate_limited = limits
    served = await serve(app)
    headers = {"Authorization": f"Bearer {world.keys[P]}"}
    try:
        async with httpx.AsyncClient(base_url=served.origin + "/api/v1", headers=headers) as client:
            yield Lc(world, clock, client, app)
    finally:
        await served.stop()


@pytest.fixture
async def lc() -> AsyncIterator[Lc]:
    """The API with its rate limits lifted: most tests send many calls at one instant."""
    clock = FakeClock()
    async with _serving(World(seed=1, clock=clock), clock, limits=False) as made:
        yield made


@pytest.fixture
async def limited() -> AsyncIterator[Lc]:
    """The API with its real rate limits."""
    clock = FakeClock()
    async with _serving(World(seed=1, clock=clock), clock, limits=True) as made:
        yield made


@pytest.fixture
async def lc_nodes() -> AsyncIterator[Lc]:
    """Like `lc`, with a real SSH node on loopback for every instance."""
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    world.nodes = nodes = SshNodes(world)
    try:
        async with _serving(world, clock, limits=False) as made:
            yield made
    finally:
        await nodes.aclose()


async def _add_key(lc: Lc, name: str = "my-key", key: str | None = KEY) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name}
    if key is not None:
        body["public_key"] = key
    response = await lc.client.post("/ssh-keys", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _launch_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "region_name": "us-east-1",
        "instance_type_name": "gpu_1x_a10",
        "ssh_key_names": ["my-key"],
        "name": "gpushop-job-1",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


async def _launch(lc: Lc, **fields: Any) -> httpx.Response:
    return await lc.client.post("/instance-operations/launch", json=_launch_body(**fields))


async def _launched(lc: Lc, **fields: Any) -> str:
    response = await _launch(lc, **fields)
    assert response.status_code == 200, response.text
    (instance_id,) = response.json()["data"]["instance_ids"]
    assert isinstance(instance_id, str)
    return instance_id


def _error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    return response.status_code, body["error"]["code"]


async def test_instance_types_are_a_dict_keyed_by_name(lc: Lc) -> None:
    response = await lc.client.get("/instance-types")
    assert response.status_code == 200
    data = response.json()["data"]
    assert isinstance(data, dict) and len(data) == 9 and set(data) == set(lambdacloud.CATALOGUE)
    a10 = data["gpu_1x_a10"]
    assert a10["instance_type"] == {
        "name": "gpu_1x_a10",
        "description": "1x A10 (24 GB PCIe)",
        "gpu_description": "A10 (24 GB PCIe)",
        "price_cents_per_hour": 75,
        "specs": {"vcpus": 30, "memory_gib": 200, "storage_gib": 1400, "gpus": 1},
    }
    assert a10["regions_with_capacity_available"] == [
        {"name": "us-east-1", "description": "Virginia, USA"},
        {"name": "us-west-1", "description": "California, USA"},
    ]
    assert data["gpu_8x_b200_sxm6"]["regions_with_capacity_available"] == []
    h100 = data["gpu_8x_h100_sxm5"]["instance_type"]
    assert h100["description"] == "8x H100 (80 GB SXM5)" and h100["price_cents_per_hour"] == 2392
    assert all(isinstance(t["instance_type"]["price_cents_per_hour"], int) for t in data.values())
    regions = (await lc.client.get("/regions")).json()["data"]
    assert [r["name"] for r in regions] == list(lambdacloud.REGIONS)


@pytest.mark.parametrize(
    "header",
    [None, "Bearer nope", "Basic " + base64.b64encode(b"nope:").decode(), "Basic !!", "Token x"],
)
async def test_missing_or_wrong_key_is_401_invalid_api_key(lc: Lc, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=str(lc.client.base_url), headers=headers) as client:
        response = await client.get("/instance-types")
    assert _error(response) == (401, "global/invalid-api-key")
    assert "suggestion" in response.json()["error"]


async def test_basic_auth_with_the_key_as_user(lc: Lc) -> None:
    basic = base64.b64encode(f"{lc.world.keys[P]}:".encode()).decode()
    response = await lc.client.get("/ssh-keys", headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200 and response.json() == {"data": []}


async def test_ssh_keys_register_list_and_delete(lc: Lc) -> None:
    key = await _add_key(lc)
    assert set(key) == {"id", "name", "public_key"} and key["public_key"] == KEY
    assert (await lc.client.get("/ssh-keys")).json()["data"] == [key]
    again = await lc.client.post("/ssh-keys", json={"name": "my-key", "public_key": KEY})
    assert _error(again) == (409, "global/conflict")
    bad = await lc.client.post("/ssh-keys", json={"name": "other", "public_key": "hello"})
    assert _error(bad) == (400, "global/invalid-parameters")
    deleted = await lc.client.delete(f"/ssh-keys/{key['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"data": {}}
    assert (await lc.client.get("/ssh-keys")).json()["data"] == []
    assert _error(await lc.client.delete(f"/ssh-keys/{key['id']}")) == (
        404,
        "global/object-does-not-exist",
    )


async def test_a_key_without_public_key_is_generated_and_its_private_key_returned_once(
    lc: Lc,
) -> None:
    made = await _add_key(lc, "generated", key=None)
    private = asyncssh.import_private_key(made["private_key"])
    assert private.export_public_key().decode().strip() == made["public_key"]
    (listed,) = (await lc.client.get("/ssh-keys")).json()["data"]
    assert "private_key" not in listed


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"region_name": None}, "region_name"),
        ({"instance_type_name": None}, "instance_type_name"),
        ({"ssh_key_names": None}, "exactly one"),
        ({"ssh_key_names": []}, "exactly one"),
        ({"ssh_key_names": ["my-key", "my-key"]}, "exactly one"),
        ({"ssh_key_names": ["nobody"]}, "'nobody' does not exist"),
        ({"name": "x" * 65}, "at most 64"),
        ({"ssh_key": KEY, "disk_gb": 50}, "Unknown fields: disk_gb, ssh_key"),
        ({"region_name": "mars-1"}, "Unknown region"),
        ({"instance_type_name": "gpu_1x_z9000"}, "Unknown instance type"),
        ({"quantity": 2}, "quantity"),
        ({"file_system_names": ["shared"]}, "File system"),
    ],
)
async def test_launch_validation(lc: Lc, fields: dict[str, Any], says: str) -> None:
    await _add_key(lc)
    response = await _launch(lc, **fields)
    assert _error(response) == (400, "global/invalid-parameters")
    assert says in response.json()["error"]["message"]
    assert lc.world.live(P) == []


async def test_launch_accepts_the_optional_fields(lc: Lc) -> None:
    await _add_key(lc)
    tags = [{"key": "job", "value": "7f3a"}]
    instance_id = await _launched(
        lc, name="x" * 64, hostname="box", tags=tags, quantity=1, user_data="#cloud-config\n"
    )
    record = (await lc.client.get(f"/instances/{instance_id}")).json()["data"]
    assert record["name"] == "x" * 64 and record["hostname"] == "box" and record["tags"] == tags
    unnamed = await _launched(lc, name=None)
    assert (await lc.client.get(f"/instances/{unnamed}")).json()["data"]["name"] is None


async def test_capacity_is_used_up_by_live_instances(lc: Lc) -> None:
    await _add_key(lc)
    await _launched(lc, instance_type_name="gpu_8x_h100_sxm5")
    full = await _launch(lc, instance_type_name="gpu_8x_h100_sxm5")
    assert _error(full) == (400, "instance-operations/launch/insufficient-capacity")
    assert "suggestion" in full.json()["error"]
    sold_out = await _launch(lc, instance_type_name="gpu_8x_b200_sxm6")
    assert _error(sold_out) == (400, "instance-operations/launch/insufficient-capacity")
    types = (await lc.client.get("/instance-types")).json()["data"]
    assert types["gpu_8x_h100_sxm5"]["regions_with_capacity_available"] == []


async def test_instance_life_booting_active_terminating_gone(lc: Lc) -> None:
    key = await _add_key(lc)
    instance_id = await _launched(lc)
    assert len(instance_id) == 32
    instance = lc.world.get(P, instance_id)
    assert instance is not None
    assert instance.authorized_keys == [KEY] and instance.ssh_user == "ubuntu"
    assert instance.price_per_hour == pytest.approx(0.75) and instance.label == "gpushop-job-1"
    booting = (await lc.client.get(f"/instances/{instance_id}")).json()["data"]
    assert booting["status"] == "booting" and booting["ip"] is None
    assert booting["ssh_key_names"] == [key["name"]]
    assert booting["region"] == {"name": "us-east-1", "description": "Virginia, USA"}
    assert booting["instance_type"]["price_cents_per_hour"] == 75
    assert "ssh_port" not in booting  # no SSH node in this world
    await lc.clock.advance(instance.boot_s)
    instance.ssh_port = 42022
    active = (await lc.client.get(f"/instances/{instance_id}")).json()["data"]
    assert active["status"] == "active" and active["ip"] == "127.0.0.1"
    assert active["ssh_port"] == 42022 and active["actions"]["restart"] == {"available": True}
    listed = (await lc.client.get("/instances")).json()["data"]
    assert [i["id"] for i in listed] == [instance_id]
    body = {"instance_ids": [instance_id]}
    answer = await lc.client.post("/instance-operations/terminate", json=body)
    assert answer.status_code == 200
    (terminated,) = answer.json()["data"]["terminated_instances"]
    assert terminated["id"] == instance_id and terminated["status"] == "terminating"
    twice = await lc.client.post("/instance-operations/terminate", json=body)
    assert twice.json()["data"]["terminated_instances"][0]["status"] == "terminating"
    await lc.clock.advance(lambdacloud.TERMINATE_LINGER_S - 1)
    still = (await lc.client.get(f"/instances/{instance_id}")).json()["data"]
    assert still["status"] == "terminating"
    await lc.clock.advance(1)
    gone = await lc.client.get(f"/instances/{instance_id}")
    assert _error(gone) == (404, "global/object-does-not-exist")
    assert (await lc.client.get("/instances")).json() == {"data": []}
    again = await lc.client.post("/instance-operations/terminate", json=body)
    assert _error(again) == (404, "global/object-does-not-exist")


async def test_destroy_stuck_reads_terminating_for_ever(lc: Lc) -> None:
    await _add_key(lc)
    instance_id = await _launched(lc)
    lc.world.faults.node(P).destroy_stuck = 1
    await lc.client.post("/instance-operations/terminate", json={"instance_ids": [instance_id]})
    await lc.clock.advance(86_400)
    record = (await lc.client.get(f"/instances/{instance_id}")).json()["data"]
    assert record["status"] == "terminating"
    assert [i["status"] for i in (await lc.client.get("/instances")).json()["data"]] == [
        "terminating"
    ]


async def test_terminate_and_restart_refuse_bad_bodies_and_unknown_ids(lc: Lc) -> None:
    for path in ("/instance-operations/terminate", "/instance-operations/restart"):
        empty = await lc.client.post(path, json={"instance_ids": []})
        assert _error(empty) == (400, "global/invalid-parameters")
        unknown = await lc.client.post(path, json={"instance_ids": ["0" * 32]})
        assert _error(unknown) == (404, "global/object-does-not-exist")


async def test_restart_reboots_the_vm(lc: Lc) -> None:
    await _add_key(lc)
    instance_id = await _launched(lc)
    instance = lc.world.get(P, instance_id)
    assert instance is not None
    await lc.clock.advance(instance.boot_s)
    answer = await lc.client.post(
        "/instance-operations/restart", json={"instance_ids": [instance_id]}
    )
    assert answer.status_code == 200
    (restarted,) = answer.json()["data"]["restarted_instances"]
    assert restarted["status"] == "booting"
    await lc.clock.advance(instance.boot_s)
    record = (await lc.client.get(f"/instances/{instance_id}")).json()["data"]
    assert record["status"] == "active"
    await lc.client.post("/instance-operations/terminate", json={"instance_ids": [instance_id]})
    refused = await lc.client.post(
        "/instance-operations/restart", json={"instance_ids": [instance_id]}
    )
    assert _error(refused) == (400, "global/invalid-parameters")


async def test_a_vm_powered_off_from_inside_reads_unhealthy(lc: Lc) -> None:
    await _add_key(lc)
    instance_id = await _launched(lc)
    await lc.world.power_off(P, instance_id)
    record = (await lc.client.get(f"/instances/{instance_id}")).json()["data"]
    assert record["status"] == "unhealthy"


async def test_general_rate_limit_is_a_bucket_on_the_world_clock(limited: Lc) -> None:
    answers = [await limited.client.get("/ssh-keys") for _ in range(lambdacloud.RATE_BURST + 1)]
    assert [a.status_code for a in answers] == [200] * lambdacloud.RATE_BURST + [429]
    assert _error(answers[-1]) == (429, "global/too-many-requests")
    assert "retry-after" not in answers[-1].headers
    await limited.clock.advance(1.0)
    assert (await limited.client.get("/ssh-keys")).status_code == 200
    assert (await limited.client.get("/ssh-keys")).status_code == 429
    await limited.clock.advance(60)
    for _ in range(lambdacloud.RATE_BURST):  # one a second for ever is under the limit
        assert (await limited.client.get("/instances")).status_code == 200
        await limited.clock.advance(1.0)
    for _ in range(20):
        assert (await limited.client.get("/instances")).status_code == 200
        await limited.clock.advance(1.0)


async def test_one_launch_per_12_seconds(limited: Lc) -> None:
    await _add_key(limited)
    await _launched(limited)
    await limited.clock.advance(lambdacloud.LAUNCH_INTERVAL_S - 1)
    early = await _launch(limited, name="gpushop-job-2")
    assert _error(early) == (429, "global/too-many-requests")
    assert len(limited.world.live(P)) == 1
    await limited.clock.advance(1)
    await _launched(limited, name="gpushop-job-2")
    assert len(limited.world.live(P)) == 2


async def test_unauthenticated_calls_do_not_spend_the_rate(limited: Lc) -> None:
    async with httpx.AsyncClient(base_url=str(limited.client.base_url)) as anonymous:
        for _ in range(10):
            assert (await anonymous.get("/instances")).status_code == 401
    assert (await limited.client.get("/instances")).status_code == 200


async def test_http_faults_apply_per_endpoint(lc: Lc) -> None:
    lc.world.faults.add(HttpFault(provider=P, endpoint="list", status=503, times=1))
    assert (await lc.client.get("/instances")).status_code == 503
    assert (await lc.client.get("/instances")).status_code == 200
    lc.world.faults.add(HttpFault(provider=P, endpoint="instance_types", kind="malformed"))
    with pytest.raises(ValueError):
        (await lc.client.get("/instance-types")).json()


async def test_the_registered_key_opens_the_node(lc_nodes: Lc) -> None:
    private = asyncssh.generate_private_key("ssh-ed25519")
    public = private.export_public_key().decode().strip()
    await _add_key(lc_nodes, key=public)
    instance_id = await _launched(lc_nodes)
    instance = lc_nodes.world.get(P, instance_id)
    assert instance is not None and instance.ssh_port is not None
    await lc_nodes.clock.advance(instance.boot_s)
    record = (await lc_nodes.client.get(f"/instances/{instance_id}")).json()["data"]
    assert record["ssh_port"] == instance.ssh_port
    async with asyncssh.connect(
        "127.0.0.1",
        port=record["ssh_port"],
        username="ubuntu",
        client_keys=[private],
        known_hosts=None,
    ) as conn:
        result = await conn.run("nvidia-smi --query-gpu=name --format=csv,noheader", check=True)
    assert str(result.stdout).strip() == "NVIDIA A10"
