"""The simulated RunPod (REST v1 and GraphQL), over real HTTP on loopback, on a fake world clock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncssh
import httpx
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.sim import runpod
from gpushop_tui.sim.http import serve
from gpushop_tui.sim.node import SshNodes
from gpushop_tui.sim.world import World

P = "runpod"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgpushopTestKey me@host"
RTX4090 = "NVIDIA GeForce RTX 4090"


@dataclass
class Rp:
    world: World
    clock: FakeClock
    origin: str
    rest: httpx.AsyncClient
    key: str

    async def gql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        response = await self.rest.post(self.origin + "/graphql", json=body)
        assert response.status_code == 200, response.text
        return response.json()


@contextlib.asynccontextmanager
async def _serving(world: World, clock: FakeClock, *, limits: bool = True) -> AsyncIterator[Rp]:
    world.rate_limited = limits
    served = await serve(runpod.build_app(world))
    headers = {"Authorization": f"Bearer {world.keys[P]}"}
    try:
        async with httpx.AsyncClient(base_url=served.origin + "/v1", headers=headers) as rest:
            yield Rp(world, clock, served.origin, rest, world.keys[P])
    finally:
        await served.stop()


@pytest.fixture
async def rp() -> AsyncIterator[Rp]:
    clock = FakeClock()
    async with _serving(World(seed=1, clock=clock), clock, limits=False) as made:
        yield made


def _body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "gpushop-job-1",
        "imageName": "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
        "gpuTypeIds": [RTX4090],
        "gpuCount": 1,
        "cloudType": "SECURE",
        "dataCenterIds": ["US-KS-2"],
        "containerDiskInGb": 20,
        "volumeInGb": 50,
        "volumeMountPath": "/workspace",
        "ports": ["22/tcp", "8000/tcp", "8888/http"],
        "supportPublicIp": True,
        "env": {"PUBLIC_KEY": KEY},
    }
    body.update(fields)
    return body


async def _create(rp: Rp, **fields: Any) -> dict[str, Any]:
    response = await rp.rest.post("/pods", json=_body(**fields))
    assert response.status_code == 201, response.text
    pod: dict[str, Any] = response.json()
    return pod


PRICES = """
query {
  a: gpuTypes(input: {id: "NVIDIA H100 PCIe"}) {
    id
    one: lowestPrice(input: {gpuCount: 1, dataCenterId: "EU-RO-1", secureCloud: true}) {
      minimumBidPrice uninterruptablePrice minVcpu minMemory stockStatus countryCode }
    two: lowestPrice(input: {gpuCount: 2, dataCenterId: "EU-RO-1", secureCloud: true}) {
      stockStatus minVcpu }
    community: lowestPrice(input: {gpuCount: 1, dataCenterId: "EU-RO-1", secureCloud: false}) {
      stockStatus }
  }
  b: gpuTypes(input: {id: "NVIDIA GeForce RTX 4090"}) {
    high: lowestPrice(input: {gpuCount: 1, dataCenterId: "US-KS-2", secureCloud: true}) {
      stockStatus uninterruptablePrice minimumBidPrice countryCode }
    medium: lowestPrice(input: {gpuCount: 8, dataCenterId: "US-KS-2", secureCloud: true}) {
      stockStatus }
    low: lowestPrice(input: {gpuCount: 8, dataCenterId: "US-KS-2", secureCloud: false}) {
      stockStatus }
    anywhere: lowestPrice(input: {gpuCount: 1}) { uninterruptablePrice countryCode }
    canada: lowestPrice(input: {gpuCount: 1, countryCode: "CA"}) { stockStatus countryCode }
  }
}
"""


async def test_catalogue_and_lowest_prices(rp: Rp) -> None:
    body = await rp.gql(
        "query { countryCodes dataCenters { id name listed } gpuTypes { id displayName "
        "memoryInGb secureCloud communityCloud maxGpuCount securePrice communitySpotPrice } }"
    )
    data = body["data"]
    assert "errors" not in body
    assert data["countryCodes"] == ["CA", "RO", "US"]
    assert {"id": "EU-SE-1", "name": "Stockholm, SE", "listed": False} in data["dataCenters"]
    types = {t["id"]: t for t in data["gpuTypes"]}
    assert len(types) == 8
    assert types["NVIDIA GeForce RTX 3090"]["secureCloud"] is False
    assert types["NVIDIA GeForce RTX 3090"]["maxGpuCount"] == 4
    assert types["NVIDIA H100 80GB HBM3"]["communityCloud"] is False
    assert types[RTX4090] == {
        "id": RTX4090,
        "displayName": "RTX 4090",
        "memoryInGb": 24,
        "secureCloud": True,
        "communityCloud": True,
        "maxGpuCount": 8,
        "securePrice": 0.69,
        "communitySpotPrice": 0.2,
    }

    prices = (await rp.gql(PRICES))["data"]
    (h100,) = prices["a"]
    assert h100["one"] == {
        "minimumBidPrice": 1.25,
        "uninterruptablePrice": 2.39,
        "minVcpu": 16.0,
        "minMemory": 188.0,
        "stockStatus": "Low",
        "countryCode": "RO",
    }
    assert h100["two"] == {"stockStatus": None, "minVcpu": None}  # one card in all
    assert h100["community"] == {"stockStatus": None}
    (rtx,) = prices["b"]
    assert rtx["high"] == {
        "stockStatus": "High",
        "uninterruptablePrice": 0.69,
        "minimumBidPrice": 0.35,
        "countryCode": "US",
    }
    assert (rtx["medium"]["stockStatus"], rtx["low"]["stockStatus"]) == ("Medium", "Low")
    assert rtx["anywhere"] == {"uninterruptablePrice": 0.34, "countryCode": "US"}  # community
    assert rtx["canada"] == {"stockStatus": "Medium", "countryCode": "CA"}


async def test_pods_use_up_stock(rp: Rp) -> None:
    query = (
        'query { gpuTypes(input: {id: "NVIDIA H100 PCIe"}) { lowestPrice(input: {gpuCount: 1, '
        'dataCenterId: "EU-RO-1", secureCloud: true}) { stockStatus } } }'
    )
    assert (await rp.gql(query))["data"]["gpuTypes"][0]["lowestPrice"]["stockStatus"] == "Low"
    await _create(rp, gpuTypeIds=["NVIDIA H100 PCIe"], dataCenterIds=["EU-RO-1"])
    assert (await rp.gql(query))["data"]["gpuTypes"][0]["lowestPrice"]["stockStatus"] is None
    again = await rp.rest.post(
        "/pods", json=_body(gpuTypeIds=["NVIDIA H100 PCIe"], dataCenterIds=["EU-RO-1"])
    )
    assert again.status_code == 400
    assert again.json() == {"error": runpod.NO_INSTANCES}


async def test_graphql_refuses_unknown_fields_and_arguments_with_200(rp: Rp) -> None:
    for query in (
        "query { gpuTypes { id vramGb } }",
        'query { gpuTypes(filter: {id: "x"}) { id } }',
        'query { gpuTypes { lowestPrice(input: {gpuCount: 1, region: "US"}) { stockStatus } } }',
        "query { gpuTypes { id ",
        'mutation { podTerminate(input: {podId: "x"}) { id } }',
    ):
        body = await rp.gql(query)
        assert body["errors"] and body["errors"][0]["message"], query
        assert body.get("data") is None
    bad = await rp.rest.post(rp.origin + "/graphql", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["errors"]


async def test_auth_by_bearer_or_api_key_else_401(rp: Rp) -> None:
    async with httpx.AsyncClient(base_url=rp.origin) as bare:
        assert (await bare.get("/v1/pods")).status_code == 401
        assert (await bare.get("/v1/pods")).json() == {"error": "Unauthorized"}
        wrong = await bare.get("/v1/pods", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await bare.get("/v1/pods", params={"api_key": rp.key})).json() == []
        gql = await bare.post("/graphql", json={"query": "query { countryCodes }"})
        assert gql.status_code == 401 and gql.json()["errors"]
        keyed = await bare.post(
            "/graphql", params={"api_key": rp.key}, json={"query": "query { countryCodes }"}
        )
        assert keyed.status_code == 200 and keyed.json()["data"]["countryCodes"]


async def test_create_validates_its_body(rp: Rp) -> None:
    cases = [
        (_body(bogus=1, alsoBogus=2), "unknown field(s): alsoBogus, bogus"),
        (
            _body(gpuTypeIds=["NVIDIA GeForce RTX 9999"]),
            "unknown GPU type: NVIDIA GeForce RTX 9999",
        ),
        (_body(dataCenterIds=["MARS-1"]), "unknown data center(s): MARS-1"),
        (_body(ports=["22"]), "invalid port '22': expected <port>/<tcp|http|udp>"),
        (_body(cloudType="ALL"), "cloudType must be SECURE or COMMUNITY"),
        (_body(imageName=None), "imageName is required"),
        (_body(env={"PUBLIC_KEY": 1}), "env must be an object of strings"),
        (_body(terminateAfter="tomorrow"), "terminateAfter: invalid date-time 'tomorrow'"),
        (_body(volumeInGb=-1), "volumeInGb must be a non-negative integer"),
        ([], "request body must be a JSON object"),
    ]
    for body, error in cases:
        response = await rp.rest.post("/pods", json=body)
        assert (response.status_code, response.json()) == (400, {"error": error})
    assert rp.world.live(P) == []


async def test_pod_object_while_booting_and_running(rp: Rp) -> None:
    pod = await _create(rp, gpuCount=2)
    instance = rp.world.get(P, pod["id"])
    assert instance is not None
    assert len(pod["id"]) == 14 and pod["id"].isalnum()
    assert instance.authorized_keys == [KEY] and instance.ssh_user == "root"
    assert instance.extra["publish"] == [8000]
    assert pod["desiredStatus"] == "RUNNING" and pod["publicIp"] is None
    assert pod["portMappings"] is None
    assert pod["costPerHr"] == pytest.approx(1.38) and instance.price_per_hour == pytest.approx(
        1.38
    )
    assert pod["machine"]["gpuDisplayName"] == "RTX 4090" and pod["interruptible"] is False
    assert pod["env"] == {"PUBLIC_KEY": KEY} and pod["ports"] == _body()["ports"]
    assert (pod["vcpuCount"], pod["memoryInGb"]) == (12, 82)
    instance.ssh_port = 42022
    await rp.clock.advance(instance.boot_s)
    view = (await rp.rest.get(f"/pods/{pod['id']}")).json()
    assert view["publicIp"] == "127.0.0.1"
    assert view["portMappings"]["22"] == 42022 and set(view["portMappings"]) == {"22", "8000"}
    assert view["uptimeSeconds"] == int(instance.boot_s)
    assert view["lastStartedAt"] == "2026-01-01T00:00:00Z"
    listed = (await rp.rest.get("/pods")).json()
    assert [p["id"] for p in listed] == [pod["id"]]
    unknown = await rp.rest.get("/pods/nosuchpod")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "pod not found"})


async def test_terminate_after_ends_a_pod_running_or_stopped_and_patch_moves_it(rp: Rp) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    running = await _create(rp, terminateAfter=(start + timedelta(hours=1)).isoformat())
    stopped = await _create(rp, terminateAfter="2026-01-01T00:30:00Z")
    assert running["terminateAfter"] == "2026-01-01T01:00:00Z"
    await rp.clock.advance(10)
    assert (await rp.rest.post(f"/pods/{stopped['id']}/stop")).status_code == 200
    moved = await rp.rest.patch(
        f"/pods/{running['id']}", json={"terminateAfter": "2026-01-01T02:00:00Z"}
    )
    assert moved.status_code == 200 and moved.json()["terminateAfter"] == "2026-01-01T02:00:00Z"
    refused = await rp.rest.patch(f"/pods/{running['id']}", json={"gpuCount": 2})
    assert (refused.status_code, refused.json()) == (400, {"error": "unknown field(s): gpuCount"})
    await rp.clock.advance(3600)  # an hour and 10 s
    assert (await rp.rest.get(f"/pods/{stopped['id']}")).status_code == 404
    ended = rp.world.get(P, stopped["id"])
    assert ended is not None and ended.destroyed_at == start.timestamp() + 1800
    assert (await rp.rest.get(f"/pods/{running['id']}")).json()["desiredStatus"] == "RUNNING"
    await rp.clock.advance(3600)
    listed = (await rp.rest.get("/pods")).json()
    assert rp.world.live(P) == []  # its bill ended at its limit
    assert [(p["id"], p["desiredStatus"]) for p in listed] == [(running["id"], "TERMINATED")]
    await rp.clock.advance(runpod.TERMINATED_LINGER_S)
    assert (await rp.rest.get("/pods")).json() == []


async def test_stop_start_and_no_gpu_to_start(rp: Rp) -> None:
    pod = await _create(rp, gpuTypeIds=["NVIDIA H100 PCIe"], dataCenterIds=["EU-RO-1"])
    pod_id = pod["id"]
    instance = rp.world.get(P, pod_id)
    assert instance is not None
    await rp.clock.advance(instance.boot_s)
    stopped = await rp.rest.post(f"/pods/{pod_id}/stop")
    assert stopped.status_code == 200 and stopped.json()["desiredStatus"] == "EXITED"
    assert stopped.json()["publicIp"] is None
    twice = await rp.rest.post(f"/pods/{pod_id}/stop")
    assert (twice.status_code, twice.json()) == (400, {"error": "pod is not running"})
    await rp.clock.advance(instance.stop_s)
    started = await rp.rest.post(f"/pods/{pod_id}/start")
    assert started.status_code == 200 and started.json()["desiredStatus"] == "RUNNING"
    assert instance.phase(rp.world.now()) == "booting"
    await rp.clock.advance(instance.boot_s)
    assert (await rp.rest.get(f"/pods/{pod_id}")).json()["publicIp"] == "127.0.0.1"

    # Stopped long enough, its one GPU goes back to the market and someone else takes it.
    await rp.rest.post(f"/pods/{pod_id}/stop")
    assert instance.release_s is not None
    await rp.clock.advance(instance.stop_s + instance.release_s)
    other = await _create(rp, gpuTypeIds=["NVIDIA H100 PCIe"], dataCenterIds=["EU-RO-1"])
    refused = await rp.rest.post(f"/pods/{pod_id}/start")
    assert (refused.status_code, refused.json()) == (400, {"error": runpod.NO_FREE_GPUS})
    assert (await rp.rest.delete(f"/pods/{other['id']}")).status_code == 204
    assert (await rp.rest.post(f"/pods/{pod_id}/start")).status_code == 200

    await rp.clock.advance(instance.boot_s)
    await rp.rest.post(f"/pods/{pod_id}/stop")
    await rp.clock.advance(instance.stop_s)
    rp.world.faults.node(P).start_no_capacity = True
    refused = await rp.rest.post(f"/pods/{pod_id}/start")
    assert (refused.status_code, refused.json()) == (400, {"error": runpod.NO_FREE_GPUS})
    rp.world.faults.node(P).start_no_capacity = False
    rp.world.faults.node(P).start_never_completes = True
    assert (await rp.rest.post(f"/pods/{pod_id}/start")).status_code == 200
    await rp.clock.advance(3600)
    view = (await rp.rest.get(f"/pods/{pod_id}")).json()
    assert view["desiredStatus"] == "RUNNING" and view["publicIp"] is None


async def test_delete_lingers_terminated_then_404_and_a_stuck_one_stays(rp: Rp) -> None:
    pod = await _create(rp)
    assert (await rp.rest.delete(f"/pods/{pod['id']}")).status_code == 204
    gone = (await rp.rest.get(f"/pods/{pod['id']}")).json()
    assert gone["desiredStatus"] == "TERMINATED" and gone["publicIp"] is None
    await rp.clock.advance(runpod.TERMINATED_LINGER_S)
    assert (await rp.rest.get(f"/pods/{pod['id']}")).status_code == 404
    assert (await rp.rest.delete(f"/pods/{pod['id']}")).status_code == 404

    stuck = await _create(rp)
    rp.world.faults.node(P).destroy_stuck = 1
    assert (await rp.rest.delete(f"/pods/{stuck['id']}")).status_code == 204
    await rp.clock.advance(86_400)
    view = (await rp.rest.get(f"/pods/{stuck['id']}")).json()
    assert view["desiredStatus"] == "EXITED" and view["publicIp"] is None
    fields = "desiredStatus runtime { uptimeInSeconds }"
    query = f'query {{ pod(input: {{podId: "{stuck["id"]}"}}) {{ {fields} }} }}'
    assert (await rp.gql(query))["data"]["pod"] == {"desiredStatus": "EXITED", "runtime": None}
    assert [p["id"] for p in (await rp.rest.get("/pods")).json()] == [stuck["id"]]


async def test_rate_limit_on_the_world_clock() -> None:
    clock = FakeClock()
    async with _serving(World(seed=1, clock=clock), clock) as rp:
        codes = [(await rp.rest.get("/pods")).status_code for _ in range(int(runpod.RATE_PER_S))]
        assert codes == [200] * int(runpod.RATE_PER_S)
        refused = await rp.rest.post(rp.origin + "/graphql", json={"query": "{ countryCodes }"})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json() == {"error": "Too Many Requests"}
        await clock.advance(1.0)
        assert (await rp.rest.get("/pods")).status_code == 200


RENT = """
mutation Rent($input: PodRentInterruptableInput!) {
  podRentInterruptable(input: $input) { id costPerHr podType desiredStatus env ports }
}
"""


async def test_spot_rent_by_bid_per_gpu(rp: Rp) -> None:
    rent = {
        "bidPerGpu": 0.3,
        "gpuTypeId": RTX4090,
        "gpuCount": 2,
        "cloudType": "SECURE",
        "dataCenterId": "US-KS-2",
        "name": "spot-1",
        "imageName": "runpod/pytorch",
        "ports": "22/tcp,8000/tcp",
        "env": [{"key": "PUBLIC_KEY", "value": KEY}],
        "supportPublicIp": True,
        "startSsh": True,
        "terminateAfter": "2026-01-01T05:00:00Z",
    }
    low = await rp.gql(RENT, {"input": rent})
    assert low["errors"][0]["message"] == runpod.BID_TOO_LOW  # the minimum is 0.35 per GPU
    assert low["data"] == {"podRentInterruptable": None}
    ok = (await rp.gql(RENT, {"input": rent | {"bidPerGpu": 0.4}}))["data"]["podRentInterruptable"]
    assert ok["costPerHr"] == pytest.approx(0.8) and ok["podType"] == "INTERRUPTABLE"
    assert ok["env"] == [f"PUBLIC_KEY={KEY}"] and ok["ports"] == "22/tcp,8000/tcp"
    instance = rp.world.get(P, ok["id"])
    assert instance is not None and instance.extra["bid"] == 0.4
    assert instance.extra["terminate_after"] == datetime(2026, 1, 1, 5, tzinfo=UTC).timestamp()
    assert instance.authorized_keys == [KEY]
    no_spot = await rp.gql(RENT, {"input": rent | {"gpuTypeId": "NVIDIA H100 80GB HBM3"}})
    assert no_spot["errors"][0]["message"] == runpod.NO_INSTANCES


async def test_graphql_pod_lifecycle_and_terminate_is_a_scalar(rp: Rp) -> None:
    deploy = (
        'mutation { podFindAndDeployOnDemand(input: {name: "x", imageName: "img", '
        'cloudType: ALL, gpuTypeId: "NVIDIA RTX A6000", dataCenterId: null, gpuCount: 1, '
        'volumeInGb: 0, containerDiskInGb: 10, env: [{key: "A", value: "b"}]}) '
        "{ id imageName env machineId machine { podHostId } } }"
    )
    made = (await rp.gql(deploy))["data"]["podFindAndDeployOnDemand"]
    pod_id = made["id"]
    assert made["env"] == ["A=b"] and made["machine"]["podHostId"].startswith(pod_id)
    instance = rp.world.get(P, pod_id)
    assert instance is not None and instance.price_per_hour == pytest.approx(0.33)  # community
    instance.ssh_port = 42022
    await rp.clock.advance(instance.boot_s)
    fields = "id desiredStatus runtime { ports { ip isIpPublic privatePort publicPort type } }"
    listed = (await rp.gql(f"query {{ myself {{ pods {{ {fields} }} }} }}"))["data"]["myself"]
    assert listed["pods"][0]["runtime"]["ports"] == [
        {
            "ip": "127.0.0.1",
            "isIpPublic": True,
            "privatePort": 22,
            "publicPort": 42022,
            "type": "tcp",
        }
    ]
    stop = f'mutation {{ podStop(input: {{podId: "{pod_id}"}}) {{ id desiredStatus }} }}'
    assert (await rp.gql(stop))["data"]["podStop"]["desiredStatus"] == "EXITED"
    await rp.clock.advance(instance.stop_s)
    resume = (
        f'mutation {{ podResume(input: {{podId: "{pod_id}", gpuCount: 1}}) {{ desiredStatus }} }}'
    )
    assert (await rp.gql(resume))["data"]["podResume"]["desiredStatus"] == "RUNNING"
    terminate = f'mutation {{ podTerminate(input: {{podId: "{pod_id}"}}) }}'
    assert await rp.gql(terminate) == {"data": {"podTerminate": None}}
    await rp.clock.advance(runpod.TERMINATED_LINGER_S)
    one = f'query {{ pod(input: {{podId: "{pod_id}"}}) {{ id }} }}'
    assert await rp.gql(one) == {"data": {"pod": None}}
    missing = await rp.gql(terminate)
    assert missing["errors"][0]["message"] == "pod not found"


async def test_ssh_and_published_ports_answer_where_the_pod_says() -> None:
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    world.nodes = nodes = SshNodes(world)
    key = asyncssh.generate_private_key("ssh-ed25519")
    public = key.export_public_key().decode().strip()
    try:
        async with _serving(world, clock, limits=False) as rp:
            pod = await _create(rp, env={"PUBLIC_KEY": public})
            instance = world.get(P, pod["id"])
            assert instance is not None and instance.ssh_port is not None
            await clock.advance(instance.boot_s)
            view = (await rp.rest.get(f"/pods/{pod['id']}")).json()
            assert view["portMappings"]["22"] == instance.ssh_port
            assert view["portMappings"]["8000"] == instance.extra["published"]["8000"]
            async with asyncssh.connect(
                view["publicIp"],
                port=view["portMappings"]["22"],
                username="root",
                client_keys=[key],
                known_hosts=None,
                connect_timeout=10,
            ) as conn:
                assert (await conn.run("echo ok")).stdout == "ok\n"
    finally:
        await nodes.aclose()
