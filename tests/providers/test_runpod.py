"""The RunPod adapter: parsing on the reference's JSON, then contracts against the simulator.

Contract tests talk to the simulated REST and GraphQL APIs over loopback HTTP on a FakeClock;
anything that waits on that clock (the rate limiter, Retry-After) is driven by advancing it
(`drive`), never by real time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
from graphql import parse, validate

from gpushop_tui.clock import FakeClock
from gpushop_tui.models import Offer
from gpushop_tui.providers.base import (
    DEFAULT_DISK_GB,
    AuthError,
    CapacityError,
    CreateSpec,
    NotFound,
    OfferGone,
    ProviderBug,
    ProviderError,
    RateLimit,
    RateLimited,
    RetryPolicy,
    TransientError,
    label_for,
)
from gpushop_tui.providers.runpod import (
    DEFAULT_IMAGE,
    GpuType,
    OfferKey,
    PriceKey,
    RunPod,
    classify,
    country_of,
    error_text,
    graphql_messages,
    graphql_url,
    normalize_offers,
    offer_id,
    offer_key,
    parse_catalogue,
    parse_offer_id,
    parse_pod,
    pod_body,
    price_query,
    rent_input,
    squash,
)
from gpushop_tui.sim import runpod as sim
from gpushop_tui.sim.faults import HttpFault
from gpushop_tui.sim.http import serve
from gpushop_tui.sim.world import World

T = TypeVar("T")
P = "runpod"
INSTALL = "ab12cd34"
LABEL = label_for(INSTALL, "sess01")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgpushopTestKey me@host"
FETCHED = datetime(2026, 2, 1, tzinfo=UTC)
RTX4090 = "NVIDIA GeForce RTX 4090"

# --------------------------------------------------------------------------- reference JSON

CATALOGUE = json.loads("""
{"countryCodes":["US","RO",null],
 "dataCenters":[{"id":"US-KS-2","name":"US-KS-2","listed":true},
                {"id":"EU-RO-1","name":"EU-RO-1","listed":true},
                {"id":"EU-SE-9","name":"EU-SE-9","listed":false}],
 "gpuTypes":[
   {"id":"NVIDIA GeForce RTX 4090","displayName":"RTX 4090","manufacturer":"Nvidia","memoryInGb":24,
    "secureCloud":true,"communityCloud":true,"maxGpuCount":2},
   {"id":"NVIDIA A100 80GB PCIe","displayName":"A100 PCIe","manufacturer":"Nvidia","memoryInGb":80,
    "secureCloud":true,"communityCloud":false,"maxGpuCount":8},
   {"displayName":"no id"}]}
""")
POD = json.loads("""
{"id":"xedezhzb9la3ye","name":"gpushop-ab12cd34-sess01","desiredStatus":"RUNNING",
 "imageName":"runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04","gpuCount":1,
 "costPerHr":0.69,"containerDiskInGb":20,"volumeInGb":50,"memoryInGb":41,"vcpuCount":6,
 "ports":["22/tcp","8888/http"],"env":{"PUBLIC_KEY":"ssh-ed25519 AAAA me"},
 "machine":{"podHostId":"xedezhzb9la3ye-64410b2f","gpuDisplayName":"RTX 4090"},
 "publicIp":"203.0.113.7","portMappings":{"22":22130,"8888":22131},
 "lastStatusChange":"Rented by User: Fri Apr 10 2026 09:12:44 GMT+0000 (Coordinated Universal Time)",
 "lastStartedAt":"2026-04-10T09:12:44Z","uptimeSeconds":312,"interruptible":false}
""")  # noqa: E501


def _types() -> list[GpuType]:
    return parse_catalogue(CATALOGUE)[0]


# --------------------------------------------------------------------------- pure parsing


def test_graphql_url_from_the_rest_base() -> None:
    assert graphql_url("https://rest.runpod.io/v1") == "https://api.runpod.io/graphql"
    assert graphql_url("https://rest.runpod.io/v1/") == "https://api.runpod.io/graphql"
    assert graphql_url("http://127.0.0.1:41234/v1") == "http://127.0.0.1:41234/graphql"
    assert graphql_url("http://sim.test/runpod/v1") == "http://sim.test/runpod/graphql"
    assert graphql_url("http://sim.test") == "http://sim.test/graphql"


def test_countries_of_data_centres() -> None:
    cases = {"US-KS-2": "US", "EU-RO-1": "RO", "CA-MTL-1": "CA", "EUR-IS-1": "IS", "OC-AU-1": "AU"}
    assert {dc: country_of(dc) for dc in cases} == cases
    assert country_of("SOMEWHERE") is None


def test_catalogue_skips_unlisted_centres_and_types_without_an_id() -> None:
    gpus, dcs = parse_catalogue(CATALOGUE)
    assert dcs == ["US-KS-2", "EU-RO-1"]
    assert [g.id for g in gpus] == [RTX4090, "NVIDIA A100 80GB PCIe"]
    assert gpus[1].clouds() == [True] and gpus[0].clouds() == [True, False]
    for bad in ({"gpuTypes": []}, {"dataCenters": []}, None, []):
        with pytest.raises(ValueError):
            parse_catalogue(bad)


def test_one_price_query_with_aliases_that_the_schema_accepts() -> None:
    text, keys = price_query(_types(), ["US-KS-2", "EU-RO-1"])
    # RTX 4090: 2 centres x counts 1, 2 x 2 clouds; A100: 2 centres x 1, 2, 4, 8 x secure.
    assert len(keys) == 8 + 8
    assert keys[("t0", "p0")] == PriceKey(_types()[0], "US-KS-2", 1, True)
    assert keys[("t1", "p7")] == PriceKey(_types()[1], "EU-RO-1", 8, True)
    assert not any(k.count > k.gpu.max_count for k in keys.values())
    assert 't0: gpuTypes(input: {id: "NVIDIA GeForce RTX 4090"})' in text
    assert (
        'p1: lowestPrice(input: {gpuCount: 1, dataCenterId: "US-KS-2", secureCloud: false})'
    ) in text
    assert validate(sim.SCHEMA, parse(text)) == []
    assert price_query([], ["US-KS-2"])[1] == {}


def _answer(keys: dict[tuple[str, str], PriceKey], prices: dict[str, dict[str, Any]]) -> Any:
    data: dict[str, Any] = {}
    for (t, p), key in keys.items():
        entry = data.setdefault(t, [{"id": key.gpu.id}])[0]
        entry[p] = prices.get(p, {"stockStatus": None, "uninterruptablePrice": 0.5})
    return data


def test_offers_per_gpu_prices_times_count_and_spot_where_bid() -> None:
    types = _types()[:1]
    _, keys = price_query(types, ["US-KS-2", "EU-RO-1"])
    stocked = {
        "stockStatus": "High",
        "uninterruptablePrice": 0.69,
        "minimumBidPrice": 0.35,
        "minVcpu": 12,
        "minMemory": 82,
        "countryCode": "US",
    }
    data = _answer(keys, {"p2": stocked, "p5": stocked | {"minimumBidPrice": None}})
    offers = normalize_offers(data, keys, FETCHED)
    by_id = {o.id: o for o in offers}
    assert sorted(by_id) == [
        "runpod:NVIDIA-GeForce-RTX-4090.EU-RO-1.1.community",
        "runpod:NVIDIA-GeForce-RTX-4090.US-KS-2.2.secure",
        "runpod:NVIDIA-GeForce-RTX-4090.US-KS-2.2.secure.spot",
    ]
    on_demand = by_id["runpod:NVIDIA-GeForce-RTX-4090.US-KS-2.2.secure"]
    spot = by_id["runpod:NVIDIA-GeForce-RTX-4090.US-KS-2.2.secure.spot"]
    assert (on_demand.gpu_name, on_demand.vram_gb, on_demand.gpu_count) == ("RTX 4090", 24, 2)
    assert on_demand.price_per_hour == pytest.approx(1.38) and not on_demand.interruptible
    assert spot.price_per_hour == pytest.approx(0.70) and spot.interruptible
    assert (on_demand.vcpus, on_demand.ram_gb, on_demand.region) == (12, 82, "US-KS-2")
    assert on_demand.country == "US" and on_demand.fetched_at == FETCHED
    assert on_demand.raw["gpuTypeId"] == RTX4090 and on_demand.raw["cloudType"] == "SECURE"
    assert spot.raw["bidPerGpu"] == 0.35 and on_demand.raw["bidPerGpu"] is None
    community = by_id["runpod:NVIDIA-GeForce-RTX-4090.EU-RO-1.1.community"]
    assert community.price_per_hour == pytest.approx(0.69)
    assert community.country == "US"  # as the answer says; the id's prefix is the fallback
    no_country = normalize_offers(
        _answer(keys, {"p5": stocked | {"countryCode": None}}), keys, FETCHED
    )
    assert {o.country for o in no_country} == {"RO"}
    missing = {("t9", "p0"): keys[("t0", "p0")]}
    with pytest.raises(ValueError):
        normalize_offers(data, missing, FETCHED)


def test_offer_ids_are_safe_and_parse_back() -> None:
    key = PriceKey(
        GpuType("NVIDIA A100-SXM4-80GB", "A100 SXM", 80, True, False, 8), "EU-RO-1", 4, True
    )
    assert offer_id(key, False) == "runpod:NVIDIA-A100-SXM4-80GB.EU-RO-1.4.secure"
    spot = offer_id(key, True)
    assert spot == "runpod:NVIDIA-A100-SXM4-80GB.EU-RO-1.4.secure.spot"
    assert parse_offer_id(spot) == OfferKey(None, "NVIDIA-A100-SXM4-80GB", "EU-RO-1", 4, True, True)
    assert squash("NVIDIA GeForce RTX 4090") == "NVIDIA-GeForce-RTX-4090"
    for bad in (
        "vastai:X.US-KS-2.1.secure",
        "runpod:X.US-KS-2.1.cloudy",
        "runpod:X.US-KS-2.1.secure.bid",
        "runpod:X.US-KS-2",
    ):
        with pytest.raises(ValueError):
            parse_offer_id(bad)


def _offer(**raw: Any) -> Offer:
    return Offer(
        id="runpod:NVIDIA-GeForce-RTX-4090.US-KS-2.2.community.spot",
        provider=P,
        gpu_name="RTX 4090",
        gpu_count=2,
        vram_gb=24,
        price_per_hour=0.4,
        interruptible=True,
        fetched_at=FETCHED,
        raw=raw,
    )


def test_offer_key_from_raw_else_from_the_id() -> None:
    raw = {"gpuTypeId": RTX4090, "dataCenterId": "US-KS-2", "cloudType": "COMMUNITY"}
    assert offer_key(_offer(**raw)) == OfferKey(
        RTX4090, "NVIDIA-GeForce-RTX-4090", "US-KS-2", 2, False, True
    )
    assert offer_key(_offer()) == OfferKey(
        None, "NVIDIA-GeForce-RTX-4090", "US-KS-2", 2, False, True
    )


def test_create_bodies() -> None:
    key = OfferKey(RTX4090, "x", "US-KS-2", 2, True, False)
    spec = CreateSpec(
        LABEL,
        KEY + "\n",
        disk_gb=30.2,
        ports=(8000, 22),
        terminate_at=datetime(2026, 1, 1, 14, tzinfo=UTC) + timedelta(minutes=5),
    )
    body = pod_body(key, RTX4090, spec)
    assert body == {
        "name": LABEL,
        "imageName": DEFAULT_IMAGE,
        "gpuTypeIds": [RTX4090],
        "gpuCount": 2,
        "cloudType": "SECURE",
        "dataCenterIds": ["US-KS-2"],
        "containerDiskInGb": 20,
        "volumeInGb": 31,
        "volumeMountPath": "/workspace",
        "ports": ["22/tcp", "8000/tcp"],
        "supportPublicIp": True,
        "env": {"PUBLIC_KEY": KEY},
        "terminateAfter": "2026-01-01T14:05:00Z",
    }
    rent = rent_input(key, RTX4090, spec, 0.35)
    assert rent["bidPerGpu"] == 0.35 and rent["ports"] == "22/tcp,8000/tcp"
    assert rent["env"] == [{"key": "PUBLIC_KEY", "value": KEY}]
    assert rent["dataCenterId"] == "US-KS-2" and rent["gpuTypeId"] == RTX4090
    assert rent["terminateAfter"] == "2026-01-01T14:05:00Z" and rent["startSsh"] is True
    assert "terminateAfter" not in pod_body(key, RTX4090, CreateSpec(LABEL, KEY))
    assert pod_body(key, RTX4090, CreateSpec(LABEL, KEY, image="me/img"))["imageName"] == "me/img"


def test_the_reference_pod_object() -> None:
    status = parse_pod(POD)
    assert status is not None and status.running and status.state == "running"
    assert (status.ssh_host, status.ssh_port) == ("203.0.113.7", 22130)
    assert status.public_ip == "203.0.113.7" and status.ports == {22: 22130, 8888: 22131}
    assert status.price_per_hour == pytest.approx(0.69) and status.label == POD["name"]
    assert status.started_at == datetime(2026, 4, 10, 9, 12, 44, tzinfo=UTC)
    assert not status.stopped


def test_pod_states() -> None:
    booting = parse_pod({**POD, "publicIp": "", "portMappings": None})
    assert booting is not None and booting.state == "starting" and not booting.running
    assert booting.ssh_host is None and booting.ports == {}
    no_ssh = parse_pod({**POD, "portMappings": {"8888": 1}})
    assert no_ssh is not None and not no_ssh.running
    exited = parse_pod({**POD, "desiredStatus": "EXITED", "publicIp": None})
    assert exited is not None and exited.stopped and exited.state == "exited"
    assert not exited.running
    assert parse_pod({**POD, "desiredStatus": "TERMINATED"}) is None
    deleting = parse_pod(POD, terminating=True)
    assert deleting is not None and deleting.state == "terminating"
    assert not deleting.running and not deleting.stopped and deleting.ssh_host is None
    odd = parse_pod({**POD, "portMappings": {"22": "x", "x": 1, "8888": 70000}})
    assert odd is not None and odd.ports == {} and not odd.running
    with pytest.raises(ValueError):
        parse_pod({"name": "no id"})


def test_error_shapes_and_their_classes() -> None:
    assert graphql_messages({"errors": [{"message": "a"}, {"nope": 1}, "b"]}) == [
        "a",
        "unnamed error",
        "b",
    ]
    assert graphql_messages({"data": {}}) == [] and graphql_messages([]) == []
    assert error_text({"error": "pod not found"}) == "pod not found"
    assert error_text({"message": "bad"}) == "bad"
    assert error_text({"errors": [{"message": "x"}]}) == "x"
    assert (
        error_text("Internal thing") == "Internal thing" and error_text(None) == "no reason given"
    )
    assert isinstance(classify(sim.NO_INSTANCES, "m"), OfferGone)
    assert isinstance(classify(sim.NO_FREE_GPUS, "m", status=400), CapacityError)
    assert isinstance(classify("Unauthorized", "m"), AuthError)
    assert isinstance(classify("whatever", "m", status=403), AuthError)
    assert isinstance(classify("pod not found", "m", status=404), NotFound)
    assert type(classify("something else", "m", status=400)) is ProviderError


def test_provider_profile() -> None:
    info = RunPod.INFO
    assert (info.name, info.display_name, info.credential_env) == (P, "RunPod", ("RUNPOD_API_KEY",))
    assert (info.default_base_url, info.base_url_env) == (
        "https://rest.runpod.io/v1",
        "RUNPOD_API_URL",
    )
    assert (info.provision_budget_s, info.first_ssh_budget_s) == (1200.0, 120.0)
    caps = info.capabilities
    assert caps.can_stop and caps.provider_ttl and caps.spot and caps.runs_images
    assert not caps.instance_scoped_key and not caps.node_watchdog
    assert RunPod.can_stop and RunPod.rate == RateLimit(per_second=4.0, burst=4)
    assert (RunPod.readiness.ssh_user, RunPod.readiness.initial_delay_s) == ("root", 120.0)
    assert not RunPod.readiness.probe_dpkg_and_smi
    assert RunPod.auth_headers("k") == {"Authorization": "Bearer k", "Accept": "application/json"}


# --------------------------------------------------------------------------- against the simulator


@dataclass
class Env:
    world: World
    clock: FakeClock
    origin: str
    provider: RunPod
    sent: list[tuple[str, str, Any]] = field(default_factory=list)
    """(method, path, JSON body) of every request `provider` made."""

    def connect(self, key: str | None = None, rate: RateLimit | None = None) -> RunPod:
        return RunPod.connect(
            self.origin + "/v1",
            self.world.keys[P] if key is None else key,
            INSTALL,
            clock=self.clock,
            retry=RetryPolicy(attempts=3, base_s=0.0),
            rate=rate or RateLimit(None),
        )

    def fault(self, endpoint: str, **fields: Any) -> None:
        self.world.faults.add(HttpFault(provider=P, endpoint=endpoint, **fields))

    def mutations(self) -> list[str]:
        return [
            b["query"].split("(")[0]
            for m, p, b in self.sent
            if p == "/graphql" and "mutation" in b["query"]
        ]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    world.rate_limited = False
    served = await serve(sim.build_app(world))
    made = Env(world, clock, served.origin, provider=None)  # type: ignore[arg-type]
    made.provider = made.connect()

    async def record(request: httpx.Request) -> None:
        body = json.loads(request.content) if request.content else None
        made.sent.append((request.method, request.url.path, body))

    made.provider.http.client.event_hooks["request"] = [record]
    yield made
    await made.provider.aclose()
    await served.stop()


async def drive(clock: FakeClock, work: Awaitable[T], step: float = 0.05) -> T:
    """Run `work`, moving the fake clock on whenever it (and nothing else) waits on the clock."""
    task = asyncio.ensure_future(work)
    while not task.done():
        if clock.sleeping:
            await clock.advance(step)
        else:  # it is waiting on loopback I/O: let that happen
            await asyncio.wait({task}, timeout=0.002)
    return task.result()


async def _offer_of(env: Env, wanted: str) -> Offer:
    offers = await env.provider.list_offers()
    return next(o for o in offers if o.id == f"runpod:{wanted}")


async def _create(env: Env, wanted: str, **spec: Any) -> tuple[Offer, str]:
    offer = await _offer_of(env, wanted)
    ids: list[str] = []

    async def sink(pod_id: str) -> None:
        ids.append(pod_id)

    ref = await env.provider.create(offer, CreateSpec(spec.pop("label", LABEL), KEY, **spec), sink)
    assert ids == [ref.instance_id]
    return offer, ref.instance_id


async def test_offers_from_the_simulator(env: Env) -> None:
    offers = await env.provider.list_offers()
    assert not offers.truncated
    assert all(o.fetched_at == env.clock.now() for o in offers)
    ids = {o.id for o in offers}
    assert len(ids) == len(offers) == 108
    assert [m for m, p, _ in env.sent] == ["POST", "POST"]  # the catalogue, then every price
    rtx = [o for o in offers if o.id.startswith("runpod:NVIDIA-GeForce-RTX-4090.US-KS-2.")]
    assert len(rtx) == 16  # counts 1-8 x secure/community x on-demand/spot
    by_id = {o.id: o for o in offers}
    eight = by_id["runpod:NVIDIA-GeForce-RTX-4090.US-KS-2.8.community"]
    assert eight.price_per_hour == pytest.approx(8 * 0.34) and eight.country == "US"
    assert by_id["runpod:NVIDIA-GeForce-RTX-4090.US-KS-2.8.community.spot"].price_per_hour == (
        pytest.approx(8 * 0.20)
    )
    # stockStatus null (none there, too few, or not in that cloud) is no offer
    assert not any(i.startswith("runpod:NVIDIA-H100-80GB-HBM3.US-TX-3") for i in ids)
    assert "runpod:NVIDIA-H100-PCIe.EU-RO-1.2.secure" not in ids
    assert not any("RTX-3090" in i and ".secure" in i for i in ids)
    assert not any("EU-SE-1" in i for i in ids)  # not listed
    # no minimum bid, no spot offer
    assert "runpod:NVIDIA-H100-80GB-HBM3.US-KS-2.1.secure" in ids
    assert not any(
        i.startswith("runpod:NVIDIA-H100-80GB-HBM3") and i.endswith(".spot") for i in ids
    )
    h100 = by_id["runpod:NVIDIA-H100-80GB-HBM3.US-KS-2.8.secure"]
    assert (h100.gpu_name, h100.vram_gb) == ("H100 SXM", 80)
    assert by_id["runpod:NVIDIA-A100-SXM4-80GB.US-TX-3.1.secure"].gpu_name == "A100 80GB SXM"
    assert by_id["runpod:NVIDIA-GeForce-RTX-3090.EU-RO-1.1.community"].country == "RO"
    assert by_id["runpod:NVIDIA-RTX-A6000.CA-MTL-1.1.secure"].country == "CA"
    assert all(
        o.price_per_hour
        == pytest.approx(o.raw["lowestPrice"]["uninterruptablePrice"] * o.gpu_count)
        for o in offers
        if not o.interruptible
    )


async def test_on_demand_create_over_rest_with_a_ttl_the_twin_honours(env: Env) -> None:
    ttl = env.clock.now() + timedelta(hours=2)
    offer, pod_id = await _create(
        env, "NVIDIA-GeForce-RTX-4090.US-KS-2.2.secure", ports=(8000,), terminate_at=ttl
    )
    creates = [(m, p, b) for m, p, b in env.sent if p == "/v1/pods" and m == "POST"]
    assert len(creates) == 1 and env.mutations() == []  # never podRentInterruptable
    body = creates[0][2]
    assert body["terminateAfter"] == "2026-01-01T02:00:00Z"
    assert body["gpuTypeIds"] == [RTX4090] and body["dataCenterIds"] == ["US-KS-2"]
    assert body["cloudType"] == "SECURE" and body["gpuCount"] == 2
    instance = env.world.get(P, pod_id)
    assert instance is not None and instance.authorized_keys == [KEY]
    assert instance.price_per_hour == pytest.approx(offer.price_per_hour)
    assert instance.extra["publish"] == [8000]
    await env.clock.advance(2 * 3600 - 1)
    assert await env.provider.get(pod_id) is not None
    await env.clock.advance(1)
    assert await env.provider.get(pod_id) is None
    assert await env.provider.list_ours() == []


async def test_move_ttl_moves_the_pods_end(env: Env) -> None:
    start = env.clock.now()
    _, pod_id = await _create(
        env, "NVIDIA-RTX-A6000.US-KS-2.1.secure", terminate_at=start + timedelta(hours=1)
    )
    await env.provider.move_ttl(pod_id, start + timedelta(hours=3))
    assert env.sent[-1][0] == "PATCH" and env.sent[-1][2] == {
        "terminateAfter": "2026-01-01T03:00:00Z"
    }
    await env.clock.advance(2 * 3600)
    status = await env.provider.get(pod_id)
    assert status is not None and status.running
    await env.provider.stop(pod_id)  # the limit ends a stopped pod too
    await env.clock.advance(3600)
    assert await env.provider.get(pod_id) is None
    with pytest.raises(NotFound):
        await env.provider.move_ttl(pod_id, start + timedelta(hours=9))


async def test_spot_create_bids_per_gpu_through_graphql_only(env: Env) -> None:
    offer, pod_id = await _create(
        env,
        "NVIDIA-A100-80GB-PCIe.US-KS-2.4.secure.spot",
        terminate_at=env.clock.now() + timedelta(hours=1),
    )
    assert offer.interruptible and offer.price_per_hour == pytest.approx(4 * 0.82)
    assert not [p for m, p, _ in env.sent if m == "POST" and p == "/v1/pods"]
    assert env.mutations() == ["mutation RentInterruptable"]
    rent = env.sent[-1][2]["variables"]["input"]
    assert rent["bidPerGpu"] == pytest.approx(offer.price_per_hour / offer.gpu_count)
    assert rent["bidPerGpu"] == pytest.approx(0.82)  # not the total: SkyPilot's 8x bid
    assert (rent["gpuTypeId"], rent["gpuCount"], rent["cloudType"]) == (
        "NVIDIA A100 80GB PCIe",
        4,
        "SECURE",
    )
    assert rent["terminateAfter"] == "2026-01-01T01:00:00Z"
    instance = env.world.get(P, pod_id)
    assert instance is not None and instance.extra["bid"] == pytest.approx(0.82)
    assert instance.price_per_hour == pytest.approx(offer.price_per_hour)
    status = await env.provider.get(pod_id)
    assert status is not None and status.raw["interruptible"] is True


async def test_ssh_address_from_public_ip_and_port_mappings(env: Env) -> None:
    _, pod_id = await _create(env, "NVIDIA-L40S.US-TX-3.1.secure", ports=(8000,))
    instance = env.world.get(P, pod_id)
    assert instance is not None
    booting = await env.provider.get(pod_id)
    assert booting is not None and booting.state == "starting" and not booting.running
    assert booting.ssh_host is None
    instance.ssh_port = 42022
    instance.extra["published"] = {"8000": 43000}
    await env.clock.advance(instance.boot_s)
    status = await env.provider.get(pod_id)
    assert status is not None and status.running and status.state == "running"
    assert (status.ssh_host, status.ssh_port) == ("127.0.0.1", 42022)
    assert status.public_ip == "127.0.0.1" and status.ports == {22: 42022, 8000: 43000}
    assert status.price_per_hour == pytest.approx(0.86)


async def test_stop_start_and_no_gpu_to_start(env: Env) -> None:
    _, pod_id = await _create(env, "NVIDIA-RTX-A6000.CA-MTL-1.1.secure")
    instance = env.world.get(P, pod_id)
    assert instance is not None
    await env.clock.advance(instance.boot_s)
    await env.provider.stop(pod_id)
    stopped = await env.provider.get(pod_id)
    assert stopped is not None and stopped.stopped and not stopped.running
    assert stopped.state == "exited" and stopped.ssh_host is None
    (listed,) = await env.provider.list_ours()
    assert listed.stopped
    with pytest.raises(ProviderError) as twice:
        await env.provider.stop(pod_id)
    assert twice.value.status == 400 and "not running" in twice.value.message
    await env.clock.advance(instance.stop_s)
    await env.provider.start(pod_id)
    await env.clock.advance(instance.boot_s)
    started = await env.provider.get(pod_id)
    assert started is not None and started.running
    await env.provider.stop(pod_id)
    await env.clock.advance(instance.stop_s)
    env.world.faults.node(P).start_no_capacity = True
    with pytest.raises(CapacityError) as no_gpu:
        await env.provider.start(pod_id)
    assert "not enough free GPUs" in no_gpu.value.message
    assert env.provider.stopped_price_per_hour(_offer()) == pytest.approx(
        DEFAULT_DISK_GB * 0.20 / 730, abs=1e-6
    )
    with pytest.raises(NotFound):
        await env.provider.start("nosuchpod")


async def test_graphql_200_with_errors_is_an_error_never_empty(env: Env) -> None:
    broke = json.dumps({"data": None, "errors": [{"message": "Something went wrong"}]})
    env.fault("graphql", status=200, body=broke, media_type="application/json", times=1)
    with pytest.raises(ProviderError) as caught:
        await env.provider.list_offers()
    assert type(caught.value) is ProviderError and "Something went wrong" in caught.value.message
    # the second request (the prices) failing is no different
    catalogue = json.dumps({"data": CATALOGUE})
    partial = json.dumps({"data": {"t0": None}, "errors": [{"message": "Timeout"}]})
    for body in (catalogue, partial):
        env.fault("graphql", status=200, body=body, media_type="application/json", times=1)
    with pytest.raises(ProviderError) as second:
        await env.provider.list_offers()
    assert "Timeout" in second.value.message
    denied = json.dumps({"errors": [{"message": "Unauthorized: invalid api key"}]})
    env.fault("graphql", status=200, body=denied, media_type="application/json", times=1)
    with pytest.raises(AuthError):
        await env.provider.list_offers()
    env.fault(
        "graphql",
        status=200,
        body='{"data": {"gpuTypes": null}}',
        media_type="application/json",
        times=1,
    )
    with pytest.raises(ProviderBug):
        await env.provider.list_offers()
    env.fault("graphql", kind="malformed", times=1)
    with pytest.raises(ProviderBug):
        await env.provider.list_offers()


async def test_stale_offers_are_offer_gone_on_both_paths(env: Env) -> None:
    offers = {o.id: o for o in await env.provider.list_offers()}
    on_demand = offers["runpod:NVIDIA-H100-PCIe.EU-RO-1.1.secure"]
    spot = offers["runpod:NVIDIA-H100-PCIe.EU-RO-1.1.secure.spot"]
    await env.provider.create(on_demand, CreateSpec(LABEL, KEY))  # the only card
    for stale in (on_demand, spot):
        with pytest.raises(OfferGone) as caught:
            await env.provider.create(stale, CreateSpec(label_for(INSTALL, "sess02"), KEY))
        assert "no longer any instances" in caught.value.message
        assert caught.value.instance_id is None
    assert len(env.world.live(P)) == 1


async def test_rest_error_shapes(env: Env) -> None:
    offer = await _offer_of(env, "NVIDIA-RTX-A6000.US-KS-2.1.secure")
    elsewhere = offer.model_copy(update={"raw": offer.raw | {"dataCenterId": "MARS-1"}})
    with pytest.raises(ProviderError) as caught:
        await env.provider.create(elsewhere, CreateSpec(LABEL, KEY))
    assert caught.value.status == 400 and "unknown data center(s): MARS-1" in caught.value.message
    env.fault("create", status=502, times=1)
    with pytest.raises(TransientError) as ambiguous:
        await env.provider.create(offer, CreateSpec(LABEL, KEY))
    assert ambiguous.value.ambiguous and env.world.live(P) == []  # not retried
    env.fault("create", kind="malformed", times=1)
    with pytest.raises(TransientError) as malformed:
        await env.provider.create(offer, CreateSpec(LABEL, KEY))
    assert malformed.value.ambiguous
    env.fault("create", status=201, body='{"name": "x"}', media_type="application/json", times=1)
    with pytest.raises(TransientError) as no_id:
        await env.provider.create(offer, CreateSpec(LABEL, KEY))
    assert no_id.value.ambiguous
    spot = await _offer_of(env, "NVIDIA-RTX-A6000.US-KS-2.1.secure.spot")
    env.fault(
        "graphql",
        status=200,
        body='{"data": {"podRentInterruptable": {}}}',
        media_type="application/json",
        times=1,
    )
    with pytest.raises(TransientError) as spot_no_id:
        await env.provider.create(spot, CreateSpec(LABEL, KEY))
    assert spot_no_id.value.ambiguous
    env.fault("get", status=400, body="plain words", times=1)
    with pytest.raises(ProviderError) as plain:
        await env.provider.get("x")
    assert "plain words" in plain.value.message


async def test_an_offer_without_raw_finds_its_gpu_type_by_name(env: Env) -> None:
    offer = await _offer_of(env, "NVIDIA-GeForce-RTX-4090.EU-RO-1.1.community")
    bare = offer.model_copy(update={"raw": {}})
    ref = await env.provider.create(bare, CreateSpec(LABEL, KEY))
    instance = env.world.get(P, ref.instance_id)
    assert instance is not None and instance.extra["gpu_type_id"] == RTX4090
    assert instance.extra["cloud"] == "COMMUNITY" and instance.extra["dc"] == "EU-RO-1"
    gone = bare.model_copy(update={"id": "runpod:NVIDIA-GeForce-RTX-9999.EU-RO-1.1.community"})
    with pytest.raises(OfferGone):
        await env.provider.create(gone, CreateSpec(LABEL, KEY))


async def test_401_is_an_auth_error_everywhere(env: Env) -> None:
    wrong = env.connect(key="nope")
    try:
        with pytest.raises(AuthError) as caught:
            await wrong.check()
        assert caught.value.status == 401 and "nope" not in str(caught.value)
        offer = await _offer_of(env, "NVIDIA-RTX-A6000.US-KS-2.1.secure")
        spot = await _offer_of(env, "NVIDIA-RTX-A6000.US-KS-2.1.secure.spot")
        for call in (
            wrong.list_offers(),
            wrong.list_ours(),
            wrong.get("x"),
            wrong.destroy("x"),
            wrong.stop("x"),
            wrong.create(offer, CreateSpec(LABEL, KEY)),
            wrong.create(spot, CreateSpec(LABEL, KEY)),
        ):
            with pytest.raises(AuthError):
                await call
    finally:
        await wrong.aclose()
    await env.provider.check()


async def test_429_is_retried_then_rate_limited(env: Env) -> None:
    env.fault("list", status=429, times=2)
    assert await env.provider.list_ours() == []
    env.fault("list", status=429, times=3)
    with pytest.raises(RateLimited):
        await env.provider.list_ours()
    env.fault("graphql", status=429, times=3)
    with pytest.raises(RateLimited):
        await env.provider.list_offers()


async def test_the_adapters_limiter_stays_under_the_twins_limit() -> None:
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    served = await serve(sim.build_app(world))  # the twin's own limit: 10 a second
    refused: list[str] = []

    async def count(response: httpx.Response) -> None:
        if response.status_code == 429:
            refused.append(response.request.url.path)

    paced = RunPod.connect(served.origin + "/v1", world.keys[P], INSTALL, clock=clock)
    eager = RunPod.connect(
        served.origin + "/v1", world.keys[P], INSTALL, clock=clock, rate=RateLimit(None)
    )
    try:
        paced.http.client.event_hooks["response"] = [count]
        calls = [paced.check() for _ in range(30)] + [paced.list_offers() for _ in range(5)]
        await drive(clock, asyncio.gather(*calls))
        assert refused == []
        assert clock.monotonic() >= (40 - 4) / 4 - 0.1  # 4 at once, then 4 a second
        await clock.advance(1)
        eager.http.client.event_hooks["response"] = [count]
        await drive(clock, asyncio.gather(*(eager.check() for _ in range(15))))
        assert refused  # without it the twin refuses, and Retry-After carries it through
    finally:
        await paced.aclose()
        await eager.aclose()
        await served.stop()


async def test_a_list_that_fails_raises_never_empty(env: Env) -> None:
    env.fault("list", status=500, times=3)
    with pytest.raises(TransientError):
        await env.provider.list_ours()
    env.fault("list", kind="malformed", times=1)
    with pytest.raises(ProviderBug):
        await env.provider.list_ours()
    env.fault("list", kind="empty", times=1)
    with pytest.raises(ProviderBug):
        await env.provider.list_labelled()
    for body in ('{"pods": []}', "null", '["x"]'):
        env.fault("list", status=200, body=body, media_type="application/json", times=1)
        with pytest.raises(ProviderBug):
            await env.provider.list_ours()
    env.fault("get", kind="malformed", times=1)
    with pytest.raises(ProviderBug):
        await env.provider.get("x")


async def test_destroy_is_gone_at_once_and_unknown_is_fine(env: Env) -> None:
    _, pod_id = await _create(env, "NVIDIA-GeForce-RTX-4090.US-KS-2.1.secure")
    assert len(await env.provider.list_ours()) == 1
    await env.provider.destroy(pod_id)
    assert await env.provider.get(pod_id) is None  # TERMINATED is gone for good
    assert await env.provider.list_ours() == []
    await env.clock.advance(sim.TERMINATED_LINGER_S)
    assert await env.provider.get(pod_id) is None  # then 404
    await env.provider.destroy(pod_id)
    await env.provider.destroy("nosuchpod")


async def test_a_stuck_destroy_is_never_gone(env: Env) -> None:
    _, pod_id = await _create(env, "NVIDIA-GeForce-RTX-4090.US-KS-2.1.secure")
    env.world.faults.node(P).destroy_stuck = 1
    await env.provider.destroy(pod_id)
    for _ in range(3):
        await env.clock.advance(3600)
        status = await env.provider.get(pod_id)
        assert status is not None and status.state == "terminating"
        assert not status.running and not status.stopped
    (listed,) = await env.provider.list_ours()
    assert listed.state == "terminating"
    restarted = env.connect()  # a new process knows nothing of the delete
    try:
        status = await restarted.get(pod_id)
        assert status is not None and not status.running
        await restarted.destroy(pod_id)
        assert await restarted.get(pod_id) is not None
    finally:
        await restarted.aclose()


async def test_list_ours_keeps_only_this_installations_pods(env: Env) -> None:
    _, ours = await _create(env, "NVIDIA-GeForce-RTX-4090.US-KS-2.1.secure")
    await _create(
        env, "NVIDIA-GeForce-RTX-4090.US-KS-2.1.secure", label=label_for("zz99zz99", "sess02")
    )
    await _create(env, "NVIDIA-GeForce-RTX-4090.US-KS-2.1.secure", label="my-own-pod")
    assert [s.instance_id for s in await env.provider.list_ours()] == [ours]
    assert len(await env.provider.list_labelled()) == 2


def test_a_pod_reports_its_own_limit_and_a_price_written_as_text() -> None:
    status = parse_pod({**POD, "terminateAfter": "2026-04-10T21:12:44Z", "costPerHr": "0.74"})
    assert status is not None
    assert status.terminate_at == datetime(2026, 4, 10, 21, 12, 44, tzinfo=UTC)
    assert status.price_per_hour == pytest.approx(0.74)
    plain = parse_pod({k: v for k, v in POD.items() if k != "terminateAfter"})
    assert plain is not None and plain.terminate_at is None


async def test_a_404_that_does_not_say_the_pod_is_not_found_proves_nothing(env: Env) -> None:
    _, pod_id = await _create(env, "NVIDIA-GeForce-RTX-4090.US-KS-2.1.secure")
    env.fault("get", status=404, body="<html>404 Not Here</html>", media_type="text/html", times=1)
    with pytest.raises(ProviderBug, match="HTTP 404"):
        await env.provider.get(pod_id)
    assert await env.provider.get(pod_id) is not None  # it was there all along
    await env.provider.destroy(pod_id)
    await env.clock.advance(sim.TERMINATED_LINGER_S + 1)
    assert await env.provider.get(pod_id) is None  # RunPod's own "pod not found"


async def test_a_spot_rental_refused_for_no_known_reason_may_have_taken_effect(env: Env) -> None:
    offer = await _offer_of(env, "NVIDIA-A100-80GB-PCIe.US-KS-2.4.secure.spot")
    broke = json.dumps({"data": None, "errors": [{"message": "Something went wrong"}]})
    env.fault("graphql", status=200, body=broke, media_type="application/json", times=1)
    with pytest.raises(TransientError) as caught:
        await env.provider.create(offer, CreateSpec(LABEL, KEY))
    assert caught.value.ambiguous
    gone = json.dumps({"errors": [{"message": sim.NO_INSTANCES}]})
    env.fault("graphql", status=200, body=gone, media_type="application/json", times=1)
    with pytest.raises(OfferGone):  # a refusal we know is no doubt at all
        await env.provider.create(offer, CreateSpec(LABEL, KEY))
