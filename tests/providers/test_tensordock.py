"""The TensorDock v2 adapter: parsing on the reference's JSON, then contracts against the simulator.

The JSON in the unit tests is copied from provider-apis.md §2.1. The contract tests talk to the
simulated API over loopback HTTP on a fake clock (instances boot and linger only when the test
advances it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.models import Offer
from gpushop_tui.providers.base import (
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
    parse_label,
)
from gpushop_tui.providers.tensordock import (
    IMAGE,
    TensorDock,
    VmSize,
    classify_error,
    country_code,
    create_body,
    created_id,
    instance_items,
    locations_of,
    normalize_location,
    normalize_offer,
    parse_instance,
    parse_offer_id,
    runcmd,
    size_vm,
    vm_price,
)
from gpushop_tui.sim import tensordock as sim
from gpushop_tui.sim.faults import HttpFault
from gpushop_tui.sim.http import Served, serve
from gpushop_tui.sim.world import World

INSTALL = "ab12cd34"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgpushopTestKey me@host"
NOW = datetime(2026, 1, 1, tzinfo=UTC)

# --------------------------------------------------------------------------- reference JSON

LOCATIONS = {"data":{"locations":[
  {"id":"8dd95ff0-dff9-489c-9b02-b38a366b6ab1","city":"Chubbuck","stateprovince":"Idaho",
   "country":"United States","tier":1,
   "gpus":[
     {"v0Name":"geforcertx4090-pcie-24gb","displayName":"NVIDIA GeForce RTX 4090 PCIe 24GB",
      "max_count":4,"price_per_hr":0.3966,
      "resources":{"max_vcpus":56,"max_ram_gb":331,"max_storage_gb":30200},
      "pricing":{"per_vcpu_hr":0.003,"per_gb_ram_hr":0.002,"per_gb_storage_hr":0.00005},
      "network_features":{"dedicated_ip_available":True,"port_forwarding_available":True,
                          "network_storage_available":False}},
     {"v0Name":"h100-sxm5-80gb","displayName":"H100 SXM5 80GB","max_count":8,"price_per_hr":2.2,
      "resources":{"max_vcpus":128,"max_ram_gb":300,"max_storage_gb":1000},
      "pricing":{"per_vcpu_hr":0.003,"per_gb_ram_hr":0.002,"per_gb_storage_hr":0.00005},
      "network_features":{"dedicated_ip_available":True,"port_forwarding_available":True,
                          "network_storage_available":False}}]}]}}  # fmt: skip
LOCATION_ID = "8dd95ff0-dff9-489c-9b02-b38a366b6ab1"

GET_INSTANCE = {"type":"virtualmachine","id":"468b716a-6747-4cbe-9f13-afc153a21c14",
 "name":"job-7f3a","status":"running","ipAddress":"174.94.145.71",
 "portForwards":[{"internal_port":22,"external_port":20456}],"rateHourly":0.272999}  # fmt: skip

LIST_SPEC = {"data":{"instances":[{"type":"VM","id":"550e8400-e29b-41d4-a716-446655440000",
 "attributes":{"name":"My Instance","status":"running"}}]}}  # fmt: skip

LIST_FLAT = {"data":[{"id":"550e8400-e29b-41d4-a716-446655440000","name":"My Instance",
 "status":"running","ipAddress":"174.94.145.71","gpu_model":"geforcertx4090-pcie-24gb",
 "gpu_count":1,"vcpus":8,"ram_gb":32,"storage_gb":100,"price_per_hour":0.5,
 "created_at":"2026-01-01T00:00:00Z",
 "location_id":"8dd95ff0-dff9-489c-9b02-b38a366b6ab1"}]}  # fmt: skip

CREATED = {"data":{"type":"virtualmachine","id":"468b716a-6747-4cbe-9f13-afc153a21c14",
 "name":"job-7f3a","status":"running"}}  # fmt: skip

VALIDATION = [{"code":"required","message":"Name is required",
 "path":["data","attributes","name"]}]  # fmt: skip


def _reference_offers() -> list[Offer]:
    return [o for loc in locations_of(LOCATIONS) for o in normalize_location(loc, NOW)]


# --------------------------------------------------------------------------- sizing and offers


@pytest.mark.parametrize(
    ("count", "resources", "disk", "expected"),
    [
        (1, None, None, VmSize(8, 32, 100)),
        (1, {"max_vcpus": 56, "max_ram_gb": 331}, 50.0, VmSize(8, 32, 100)),
        (4, {"max_vcpus": 56, "max_ram_gb": 331}, None, VmSize(32, 128, 100)),
        (8, {"max_vcpus": 57, "max_ram_gb": 331}, None, VmSize(56, 256, 100)),
        (8, {"max_vcpus": 128, "max_ram_gb": 300}, None, VmSize(64, 256, 100)),
        (12, {"max_vcpus": 200, "max_ram_gb": 331}, None, VmSize(96, 328, 100)),
        (1, {"max_vcpus": "3", "max_ram_gb": 5}, None, VmSize(2, 8, 100)),
        (1, None, 100.0, VmSize(8, 32, 100)),
        (1, None, 100.5, VmSize(8, 32, 150)),
        (1, None, 420.0, VmSize(8, 32, 450)),
    ],
)
def test_one_sizing_rule_in_the_steps_tensordock_takes(
    count: int, resources: dict[str, Any] | None, disk: float | None, expected: VmSize
) -> None:
    size = size_vm(count, resources, disk)
    assert size == expected
    assert size.vcpus % 2 == 0 and size.storage_gb % 50 == 0 and size.storage_gb >= 100


def test_reference_locations_become_one_offer_per_gpu_count() -> None:
    offers = _reference_offers()
    assert len(offers) == 4 + 8
    assert [o.gpu_count for o in offers if o.gpu_name == "RTX 4090"] == [1, 2, 3, 4]
    two = next(o for o in offers if o.gpu_name == "RTX 4090" and o.gpu_count == 2)
    assert two.id == f"tensordock:{LOCATION_ID}:geforcertx4090-pcie-24gb:2"
    assert two.provider == "tensordock" and two.vram_gb == 24
    assert (two.vcpus, two.ram_gb, two.disk_gb) == (16, 64, 100)
    # GPUs, 16 vCPUs, 64 GB RAM and 100 GB storage: the whole VM, not the GPU price alone
    assert two.price_per_hour == pytest.approx(2 * 0.3966 + 16 * 0.003 + 64 * 0.002 + 0.005)
    assert two.price_per_gpu_hour == pytest.approx(two.price_per_hour / 2)
    assert two.region == "Chubbuck, Idaho" and two.country == "US"
    assert two.reliability == pytest.approx(1 / 3)
    assert two.fetched_at == NOW and not two.interruptible
    assert two.raw["gpu"]["v0Name"] == "geforcertx4090-pcie-24gb"
    assert two.raw["location"]["id"] == LOCATION_ID and "gpus" not in two.raw["location"]
    h100 = next(o for o in offers if o.gpu_name == "H100 SXM" and o.gpu_count == 8)
    assert h100.vram_gb == 80 and (h100.vcpus, h100.ram_gb) == (64, 256)
    assert h100.price_per_hour == pytest.approx(8 * 2.2 + 64 * 0.003 + 256 * 0.002 + 0.005)


def test_offer_records_that_cannot_be_rented_or_read() -> None:
    location = dict(locations_of(LOCATIONS)[0])
    gpu = dict(location["gpus"][0])
    no_ip = {**gpu, "network_features": {"dedicated_ip_available": False}}
    sold_out = {**gpu, "max_count": 0}
    unknown = {**gpu, "v0Name": "quantumx-pcie-40gb", "displayName": "Quantum X 40GB"}
    unpriced = {**gpu, "price_per_hr": None}
    location["gpus"] = [no_ip, sold_out, unknown, unpriced, "junk"]
    offers = normalize_location(location, NOW)
    assert [(o.gpu_name, o.vram_gb) for o in offers] == [("Quantum X 40GB", 40.0)] * 4
    assert normalize_offer({**location, "id": None}, gpu, 1, NOW) is None
    with pytest.raises(ValueError):
        locations_of({"data": {"locations": None}})
    with pytest.raises(ValueError):
        locations_of([])


def test_reliability_region_and_country_are_derived() -> None:
    location = {**locations_of(LOCATIONS)[0], "tier": 3, "stateprovince": None, "country": "Mars"}
    offer = normalize_location(location, NOW)[0]
    assert offer.reliability == 1.0 and offer.region == "Chubbuck" and offer.country is None
    assert country_code("United States") == "US"
    assert country_code("  united   kingdom ") == "GB"
    assert country_code("Canada") == "CA" and country_code("ca") == "CA"
    assert country_code("Atlantis") is None and country_code(None) is None


def test_offer_ids_round_trip_and_malformed_ones_are_refused() -> None:
    for offer in _reference_offers():
        key = parse_offer_id(offer.id)
        assert key.offer_id == offer.id and key.location_id == LOCATION_ID
        assert key.count == offer.gpu_count
    for bad in (
        "vastai:1234",
        "tensordock:abc",
        f"tensordock:{LOCATION_ID}:geforcertx4090-pcie-24gb",
        f"tensordock:{LOCATION_ID}:geforcertx4090-pcie-24gb:0",
        f"tensordock:{LOCATION_ID}:geforcertx4090-pcie-24gb:two",
        "tensordock::geforcertx4090-pcie-24gb:1",
    ):
        with pytest.raises(ValueError):
            parse_offer_id(bad)


# --------------------------------------------------------------------------- create request


def test_create_body_is_the_reference_location_request() -> None:
    key = parse_offer_id(f"tensordock:{LOCATION_ID}:geforcertx4090-pcie-24gb:2")
    body = create_body(key, VmSize(16, 64, 100), "gpushop-ab12cd34-sess01", KEY, None)
    assert body["data"]["type"] == "virtualmachine"
    attrs = body["data"]["attributes"]
    assert attrs["name"] == "gpushop-ab12cd34-sess01" and attrs["type"] == "virtualmachine"
    assert attrs["image"] == IMAGE == "ubuntu2204"
    assert attrs["location_id"] == LOCATION_ID
    assert attrs["resources"] == {
        "vcpu_count": 16,
        "ram_gb": 64,
        "storage_gb": 100,
        "gpus": {"geforcertx4090-pcie-24gb": {"count": 2}},
    }
    assert attrs["useDedicatedIp"] is True and "port_forwards" not in attrs
    assert attrs["ssh_key"] == KEY
    assert set(attrs["cloud_init"]) == {"runcmd"}  # no write_files, no ssh_authorized_keys


def test_runcmd_installs_the_key_for_root_and_user_first() -> None:
    quoted = "ssh-rsa AAAAB3NzaC1yc2E it's me"
    lines = runcmd(quoted, "python3 -m http.server")
    assert sim.runcmd_keys(lines) == {"user": [quoted], "root": [quoted]}
    assert lines.index("mkdir -p /home/user/.ssh") < lines.index(
        "chown -R user:user /home/user/.ssh"
    )
    assert "chmod 600 /home/user/.ssh/authorized_keys" in lines
    assert "chmod 700 /root/.ssh" in lines and "chown -R root:root /root/.ssh" in lines
    key_lines = [i for i, line in enumerate(lines) if "authorized_keys" in line]
    driver_lines = [i for i, line in enumerate(lines) if "dpkg" in line or "nvidia" in line]
    assert max(key_lines) < min(driver_lines)
    assert lines[-1] == "python3 -m http.server"
    assert not any("base64" in line for line in lines)
    assert runcmd(KEY, "  ")[-1] != "  "


# --------------------------------------------------------------------------- instances


def test_get_instance_reference_example() -> None:
    status = parse_instance(GET_INSTANCE)
    assert status is not None
    assert status.instance_id == "468b716a-6747-4cbe-9f13-afc153a21c14"
    assert status.label == "job-7f3a" and status.state == "running" and status.running
    assert (status.ssh_host, status.ssh_port) == ("174.94.145.71", 20456)
    assert status.price_per_hour == pytest.approx(0.272999)
    assert status.raw == GET_INSTANCE


def test_instance_shapes_states_and_ports() -> None:
    wrapped = parse_instance({"data": GET_INSTANCE})
    attributes = parse_instance(
        {"data": {"type": "instance", "id": "x1", "attributes": {**GET_INSTANCE, "id": "x1"}}}
    )
    assert wrapped is not None and wrapped.ssh_port == 20456
    assert attributes is not None and attributes.instance_id == "x1" and attributes.running
    no_forward = parse_instance({**GET_INSTANCE, "portForwards": []})
    assert no_forward is not None and no_forward.ssh_port == 22
    booting = parse_instance({**GET_INSTANCE, "status": "creating", "ipAddress": None})
    assert booting is not None and not booting.running
    assert booting.ssh_host is None and booting.ssh_port is None
    stopped = parse_instance({**GET_INSTANCE, "status": "StoppedDisassociated"})
    assert stopped is not None and stopped.state == "StoppedDisassociated" and not stopped.running
    assert stopped.stopped
    for word, down in (
        ("starting", False),
        ("stopping", False),
        ("stopped", True),
        ("Stopped", True),
    ):
        status = parse_instance({**GET_INSTANCE, "status": word})
        assert status is not None and status.state == word and not status.running
        assert status.stopped is down
    upper = parse_instance({**GET_INSTANCE, "status": "Running"})
    assert upper is not None and upper.running and upper.state == "Running" and not upper.stopped
    deleting = parse_instance({**GET_INSTANCE, "status": "deleting"})
    assert deleting is not None and not deleting.running
    for gone in ("deleted", "Terminated"):
        assert parse_instance({**GET_INSTANCE, "status": gone}) is None
    fallback = parse_instance({"status": "running"}, fallback_id="abc")
    assert fallback is not None and fallback.instance_id == "abc"
    for unreadable in ({"id": "x"}, {"status": "running"}, [], None, "running"):
        with pytest.raises(ValueError):
            parse_instance(unreadable)


def test_both_list_shapes() -> None:
    (spec,) = [parse_instance(i) for i in instance_items(LIST_SPEC)]
    (flat,) = [parse_instance(i) for i in instance_items(LIST_FLAT)]
    assert spec is not None and flat is not None
    assert spec.instance_id == flat.instance_id == "550e8400-e29b-41d4-a716-446655440000"
    assert spec.label == flat.label == "My Instance"
    assert not spec.running  # the SPEC list item carries no IP
    assert flat.running and flat.ssh_host == "174.94.145.71" and flat.ssh_port == 22
    assert flat.price_per_hour == 0.5 and flat.started_at == NOW
    assert instance_items({"data": []}) == [] and instance_items({"data": {"instances": []}}) == []
    for unexpected in ({"data": None}, {"data": {"instances": None}}, {}, [], None, {"data": {}}):
        with pytest.raises(ValueError):
            instance_items(unexpected)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "body", "kind", "words"),
    [
        (200, {"status": 400, "error": "No available nodes found"}, OfferGone, "No available"),
        (200, {"status": 400, "error": "GPU type is out of stock"}, OfferGone, "out of stock"),
        (200, {"status": 400, "error": "No available public IPs on hostnode"}, OfferGone, "IPs"),
        (200, {"status": 400, "error": "no available public ips"}, OfferGone, "public ips"),
        (200, {"status": 400, "error": "Insufficient capacity…"}, CapacityError, "capacity"),
        (400, VALIDATION, ProviderError, "Name is required (data.attributes.name)"),
        (401, {"error": "Invalid API credentials"}, AuthError, "refused"),
        (403, {"error": "Access denied"}, AuthError, "Authorization ID (a UUID)"),
        (402, {"error": "Insufficient balance"}, ProviderError, "balance is too low"),
        (404, {"error": "Instance not found"}, NotFound, "Instance not found"),
        (400, {"status": 400, "error": "SSH port (22) must be forwarded"}, ProviderError, "SSH"),
        (500, "oops", ProviderError, "HTTP 500"),
    ],
)
def test_errors_are_classified(
    status: int, body: Any, kind: type[ProviderError], words: str
) -> None:
    error = classify_error(status, body, "create", instance_id="i-1")
    assert type(error) is kind
    assert words in error.message
    assert error.provider == "tensordock"


def test_created_instance_id_is_read_from_the_reference_answer() -> None:
    assert created_id(CREATED) == "468b716a-6747-4cbe-9f13-afc153a21c14"
    assert created_id({"id": "flat-1"}) == "flat-1"
    assert created_id({"data": {}}) is None and created_id(None) is None


# --------------------------------------------------------------------------- against the simulator


@dataclass
class Td:
    world: World
    clock: FakeClock
    app: Any
    served: Served
    adapter: TensorDock
    raw: httpx.AsyncClient

    def connect(self, key: str | None = None, *, rate: RateLimit | None = None) -> TensorDock:
        return TensorDock.connect(
            self.served.origin + "/api/v2",
            key if key is not None else self.world.keys["tensordock"],
            INSTALL,
            clock=self.clock,
            retry=RetryPolicy(attempts=3, base_s=0.0),
            rate=rate or RateLimit(None),
        )

    def fault(self, endpoint: str, **kwargs: Any) -> HttpFault:
        fault = HttpFault(provider="tensordock", endpoint=endpoint, **kwargs)
        self.world.faults.add(fault)
        return fault

    async def offer(
        self, city: str, gpu: str = "geforcertx4090-pcie-24gb", count: int = 1
    ) -> Offer:
        locations = (await self.raw.get("/locations")).json()["data"]["locations"]
        location = next(loc for loc in locations if loc["city"] == city)
        record = next(g for g in location["gpus"] if g["v0Name"] == gpu)
        offer = normalize_offer(location, record, count, self.clock.now())
        assert offer is not None
        return offer


@pytest.fixture
async def td() -> AsyncIterator[Td]:
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    app = sim.build_app(world)
    served = await serve(app)
    headers = {"Authorization": f"Bearer {world.keys['tensordock']}"}
    async with httpx.AsyncClient(base_url=served.origin + "/api/v2", headers=headers) as raw:
        box = Td(world, clock, app, served, None, raw)  # type: ignore[arg-type]
        box.adapter = box.connect()
        yield box
        await box.adapter.aclose()
    await served.stop()


def _spec(session: str = "sess01", **kwargs: Any) -> CreateSpec:
    return CreateSpec(label=label_for(INSTALL, session), ssh_public_key=KEY + "\n", **kwargs)


async def _rent(td: Td, offer: Offer, session: str = "sess01", **kwargs: Any) -> str:
    ref = await td.adapter.create(offer, _spec(session, **kwargs))
    return ref.instance_id


async def test_offers_from_the_simulator(td: Td) -> None:
    offers = await td.adapter.list_offers()
    assert offers and all(o.provider == "tensordock" for o in offers)
    assert all(o.fetched_at == td.clock.now() for o in offers)
    assert not any(o.region and o.region.startswith("Joplin") for o in offers)  # no dedicated IP
    chubbuck = [o for o in offers if o.region == "Chubbuck, Idaho" and o.gpu_name == "RTX 4090"]
    assert sorted(o.gpu_count for o in chubbuck) == [1, 2, 3, 4]
    assert {o.country for o in offers} == {"US", "CA"}
    winnipeg = next(o for o in offers if o.region == "Winnipeg, Manitoba")
    assert winnipeg.country == "CA" and winnipeg.reliability == pytest.approx(1 / 3)
    for offer in offers:
        size = size_vm(offer.gpu_count, offer.raw["gpu"]["resources"], None)
        assert offer.price_per_hour == vm_price(offer.raw["gpu"], offer.gpu_count, size)
        assert offer.price_per_hour > offer.gpu_count * offer.raw["gpu"]["price_per_hr"]


async def test_create_charges_the_price_shown_and_installs_the_key(td: Td) -> None:
    offers = await td.adapter.list_offers()
    manassas = [o for o in offers if o.region == "Manassas, Virginia" and o.gpu_count == 2]
    assert len({o.gpu_name for o in manassas}) == 3
    for n, offer in enumerate(manassas):
        seen: list[str] = []

        async def sink(instance_id: str, seen: list[str] = seen) -> None:
            assert td.world.get("tensordock", instance_id) is not None
            seen.append(instance_id)

        spec = _spec(f"sess0{n}")
        ref = await td.adapter.create(offer, spec, sink)
        assert seen == [ref.instance_id] and ref.label == spec.label
        assert ref.provider == "tensordock"
        instance = td.world.get("tensordock", ref.instance_id)
        assert instance is not None
        assert instance.price_per_hour == pytest.approx(offer.price_per_hour)
        assert instance.gpu_count == offer.gpu_count and instance.label == spec.label
        assert instance.authorized_keys == [KEY] and instance.extra["root_keys"] == [KEY]
        assert instance.extra["image"] == "ubuntu2204" and instance.extra["dedicated_ip"]
        assert (
            instance.extra["vcpu_count"],
            instance.extra["ram_gb"],
            instance.extra["storage_gb"],
        ) == (offer.vcpus, offer.ram_gb, offer.disk_gb)
        status = await td.adapter.get(ref.instance_id)
        assert status is not None
        assert status.price_per_hour == pytest.approx(offer.price_per_hour)


async def test_create_sizes_from_the_offer_id_when_raw_is_missing(td: Td) -> None:
    listed = await td.offer("Chubbuck", count=2)
    bare = listed.model_copy(update={"raw": {}})
    instance_id = await _rent(td, bare, disk_gb=120)
    instance = td.world.get("tensordock", instance_id)
    assert instance is not None and instance.gpu_count == 2
    assert (instance.extra["vcpu_count"], instance.extra["ram_gb"]) == (16, 64)
    assert instance.extra["storage_gb"] == 150


@pytest.mark.parametrize(
    ("city", "gpu", "count", "words"),
    [
        ("Chubbuck", "h100-sxm5-80gb", 1, "No available nodes found"),  # stale max_count
        ("Winnipeg", "geforcertx3090-pcie-24gb", 2, "No available nodes found"),
        ("Chubbuck", "geforcertx4090-pcie-24gb", 5, "No available nodes found"),
        ("Joplin", "l40-pcie-48gb", 1, "no available public ips"),
    ],
)
async def test_stale_offers_are_offer_gone(
    td: Td, city: str, gpu: str, count: int, words: str
) -> None:
    offer = await td.offer(city, gpu, count)
    with pytest.raises(OfferGone, match=words):
        await _rent(td, offer)
    assert td.world.live("tensordock") == []


async def test_gpu_gone_from_the_location_is_offer_gone(td: Td) -> None:
    manassas_a100 = await td.offer("Manassas", "a100-pcie-80gb")
    chubbuck = await td.offer("Chubbuck")
    moved = normalize_offer(chubbuck.raw["location"], manassas_a100.raw["gpu"], 1, td.clock.now())
    assert moved is not None
    with pytest.raises(OfferGone, match="out of stock"):
        await _rent(td, moved)


async def test_no_node_with_the_resources_is_a_capacity_error(td: Td) -> None:
    offer = await td.offer("Chubbuck")
    with pytest.raises(CapacityError, match="Insufficient capacity"):
        await _rent(td, offer, disk_gb=100_000)
    assert td.world.live("tensordock") == []


async def test_validation_errors_name_the_messages(td: Td) -> None:
    offer = await td.offer("Chubbuck")
    with pytest.raises(ProviderError, match=r"Name is required \(data\.attributes\.name\)") as err:
        await td.adapter.create(offer, CreateSpec(label="", ssh_public_key=KEY))
    assert type(err.value) is ProviderError and err.value.status == 400
    unknown = offer.model_copy(update={"id": offer.id.replace("geforcertx4090-pcie-24gb", "x9")})
    with pytest.raises(ProviderError, match="Unknown GPU model x9"):
        await _rent(td, unknown)
    assert td.world.live("tensordock") == []


async def test_malformed_offer_id_or_key_is_refused_before_any_call(td: Td) -> None:
    offer = await td.offer("Chubbuck")
    sentinel = td.fault("create", status=503, times=1)
    for bad in ("tensordock:nonsense", f"tensordock:{offer.id.split(':')[1]}:gpu:zero"):
        with pytest.raises(ProviderError, match="not a TensorDock offer id"):
            await _rent(td, offer.model_copy(update={"id": bad}))
    with pytest.raises(ProviderError, match="one line"):
        await td.adapter.create(offer, CreateSpec(label="gpushop-x", ssh_public_key="a\nb"))
    assert sentinel in td.world.faults.http and sentinel.times == 1  # no request was sent


async def test_low_balance_is_a_clear_provider_error(td: Td) -> None:
    offer = await td.offer("Chubbuck")
    td.world.credit = 0.5
    with pytest.raises(ProviderError, match="balance is too low") as err:
        await _rent(td, offer)
    assert type(err.value) is ProviderError and err.value.status == 402


async def test_wrong_token_is_auth_error_everywhere(td: Td) -> None:
    offer = await td.offer("Chubbuck")
    instance_id = await _rent(td, offer)
    wrong = td.connect("not-the-token")
    calls = (
        wrong.check(),
        wrong.list_offers(),
        wrong.list_ours(),
        wrong.get(instance_id),
        wrong.destroy(instance_id),
        wrong.create(offer, _spec("sess02")),
    )
    for call in calls:
        with pytest.raises(AuthError, match="HTTP 401"):
            await call
    await wrong.aclose()
    assert [i.id for i in td.world.live("tensordock")] == [instance_id]


async def test_authorization_id_in_place_of_the_token_says_so(td: Td) -> None:
    auth_id = td.connect("8dd95ff0-dff9-489c-9b02-b38a366b6ab1")
    with pytest.raises(AuthError, match=r"Authorization ID \(a UUID\)") as err:
        await auth_id.check()
    assert err.value.status == 403
    assert "8dd95ff0" not in str(err.value)
    await auth_id.aclose()
    await td.adapter.check()


async def test_429_is_retried_and_then_gives_up(td: Td) -> None:
    rate_limited = {"status": 429, "body": '{"error":"Rate limit exceeded."}', "times": 1}
    td.fault("list", **rate_limited)
    assert await td.adapter.list_ours() == []
    td.fault("create", **rate_limited)
    instance_id = await _rent(td, await td.offer("Chubbuck"))
    assert [i.id for i in td.world.live("tensordock")] == [instance_id]
    td.fault("get", status=429)
    with pytest.raises(RateLimited):
        await td.adapter.get(instance_id)


async def test_5xx_is_retried_on_reads_but_not_on_create(td: Td) -> None:
    offer = await td.offer("Chubbuck")
    instance_id = await _rent(td, offer)
    td.fault("get", status=502, times=2)
    status = await td.adapter.get(instance_id)
    assert status is not None and status.instance_id == instance_id
    pending = td.fault("create", status=503, times=2)
    with pytest.raises(TransientError) as err:
        await _rent(td, offer, "sess02")
    assert err.value.ambiguous and pending.times == 1  # one attempt only
    td.fault("list", status=500)
    with pytest.raises(TransientError):
        await td.adapter.list_ours()


async def test_create_answer_without_an_id_is_ambiguous(td: Td) -> None:
    offer = await td.offer("Chubbuck")
    td.fault("create", kind="malformed", times=1)
    with pytest.raises(TransientError, match="may exist") as err:
        await _rent(td, offer)
    assert err.value.ambiguous
    td.fault("create", status=201, body='{"data": {}}', media_type="application/json", times=1)
    with pytest.raises(TransientError) as again:
        await _rent(td, offer)
    assert again.value.ambiguous


async def test_a_list_that_cannot_be_read_raises_never_empty(td: Td) -> None:
    await _rent(td, await td.offer("Chubbuck"))
    json_body = {"media_type": "application/json", "status": 200, "times": 1}
    td.fault("list", kind="empty", times=1)
    with pytest.raises(ProviderBug):
        await td.adapter.list_ours()
    td.fault("list", kind="malformed", times=1)
    with pytest.raises(ProviderBug):
        await td.adapter.list_ours()
    for shape in ('{"data": null}', '{"data": {"instances": null}}', '{"instances": []}'):
        td.fault("list", body=shape, **json_body)
        with pytest.raises(ProviderBug):
            await td.adapter.list_ours()
    td.fault("list", body='{"status": 500, "error": "Internal error"}', **json_body)
    with pytest.raises(ProviderError, match="Internal error"):
        await td.adapter.list_ours()
    td.fault("list", body='{"data": [{"name": "gpushop-ab12cd34-sess09"}]}', **json_body)
    with pytest.raises(ProviderBug, match="without an id"):
        await td.adapter.list_ours()
    assert len(await td.adapter.list_ours()) == 1


async def test_unreadable_get_and_locations_are_provider_bugs(td: Td) -> None:
    instance_id = await _rent(td, await td.offer("Chubbuck"))
    td.fault("get", kind="malformed", times=1)
    with pytest.raises(ProviderBug):
        await td.adapter.get(instance_id)
    td.fault("get", status=200, body="{}", media_type="application/json", times=1)
    with pytest.raises(ProviderBug):
        await td.adapter.get(instance_id)
    td.fault("get", status=404, body="Not Found", times=1)  # not TensorDock's JSON 404
    with pytest.raises(ProviderBug, match="base URL"):
        await td.adapter.get(instance_id)
    td.fault("locations", kind="malformed", times=1)
    with pytest.raises(ProviderBug):
        await td.adapter.list_offers()
    td.fault("locations", status=200, body='{"data": {}}', media_type="application/json", times=1)
    with pytest.raises(ProviderBug):
        await td.adapter.list_offers()
    assert await td.adapter.get(instance_id) is not None


async def test_get_follows_the_boot_to_a_dedicated_ip(td: Td) -> None:
    instance_id = await _rent(td, await td.offer("Chubbuck"))
    instance = td.world.get("tensordock", instance_id)
    assert instance is not None
    creating = await td.adapter.get(instance_id)
    assert creating is not None and creating.state == "creating" and not creating.running
    assert creating.ssh_host is None and creating.label == label_for(INSTALL, "sess01")
    await td.clock.advance(instance.boot_s)
    plain = await td.adapter.get(instance_id)
    assert plain is not None and plain.running
    assert (plain.ssh_host, plain.ssh_port) == ("127.0.0.1", 22)
    instance.ssh_port = 41022
    forwarded = await td.adapter.get(instance_id)
    assert forwarded is not None and forwarded.ssh_port == 41022
    instance.stopped = True
    stopped = await td.adapter.get(instance_id)
    assert stopped is not None and stopped.state == "stopped" and not stopped.running


async def test_gone_instances_read_as_none(td: Td) -> None:
    instance_id = await _rent(td, await td.offer("Chubbuck"))
    await td.world.vanish("tensordock", instance_id)
    assert await td.adapter.get(instance_id) is None
    assert await td.adapter.get("00000000-0000-4000-8000-000000000000") is None
    assert await td.adapter.list_ours() == []
    live = await _rent(td, await td.offer("Chubbuck"), "sess02")
    body = '{"status": 404, "error": "Instance not found"}'  # a 404 inside an HTTP 200
    td.fault("get", status=200, body=body, media_type="application/json", times=1)
    assert await td.adapter.get(live) is None
    assert await td.adapter.get(live) is not None


async def test_destroy_lingers_then_gone_and_again_is_fine(td: Td) -> None:
    instance_id = await _rent(td, await td.offer("Chubbuck"))
    await td.adapter.destroy(instance_id)
    lingering = await td.adapter.get(instance_id)
    assert lingering is not None and lingering.state == "deleting" and not lingering.running
    await td.clock.advance(sim.DELETE_LINGER_S)
    assert await td.adapter.get(instance_id) is None
    await td.adapter.destroy(instance_id)  # already gone: 404, no error
    await td.adapter.destroy("00000000-0000-4000-8000-000000000000")
    td.fault("destroy", status=502, times=1)
    await td.adapter.destroy(instance_id)  # retried, then 404


async def test_destroy_that_does_nothing_is_caught_by_get(td: Td) -> None:
    instance_id = await _rent(td, await td.offer("Chubbuck"))
    td.world.faults.node("tensordock").destroy_noop = 1
    await td.adapter.destroy(instance_id)
    await td.clock.advance(sim.DELETE_LINGER_S)
    still = await td.adapter.get(instance_id)
    assert still is not None and still.state != "deleting"
    await td.adapter.destroy(instance_id)
    await td.clock.advance(sim.DELETE_LINGER_S)
    assert await td.adapter.get(instance_id) is None


async def test_destroy_refused_in_a_200_body_raises(td: Td) -> None:
    instance_id = await _rent(td, await td.offer("Chubbuck"))
    body = '{"status": 400, "error": "Instance is locked"}'
    td.fault("destroy", status=200, body=body, media_type="application/json", times=1)
    with pytest.raises(ProviderError, match="Instance is locked"):
        await td.adapter.destroy(instance_id)


async def _parked(clock: FakeClock) -> None:
    """Yield until some task sleeps on the fake clock (the rate limiter's pump)."""
    for _ in range(100):
        if clock.sleeping:
            return
        await asyncio.sleep(0)
    raise AssertionError("nothing is waiting on the clock")


@pytest.mark.parametrize("shape", ["wrapped", "bare", "alternate"])
async def test_list_ours_reads_both_shapes_and_keeps_only_our_labels(td: Td, shape: str) -> None:
    ours = [await _rent(td, await td.offer("Chubbuck"), s) for s in ("sess01", "sess02")]
    theirs = CreateSpec(label=label_for("ff99ee88", "sess03"), ssh_public_key=KEY)
    await td.adapter.create(await td.offer("Manassas"), theirs)
    await td.adapter.create(await td.offer("Manassas"), CreateSpec("my-own-vm", KEY))
    td.app.state.list_shape = shape
    for _ in range(2):  # "alternate" answers in both shapes in turn
        found = await td.adapter.list_ours()
        assert sorted(s.instance_id for s in found) == sorted(ours)
        assert sorted(parse_label(s.label) for s in found) == [  # type: ignore[type-var]
            (INSTALL, "sess01"),
            (INSTALL, "sess02"),
        ]
        everyone = await td.adapter.list_labelled()
        assert sorted(parse_label(s.label) for s in everyone) == [  # type: ignore[type-var]
            (INSTALL, "sess01"),
            (INSTALL, "sess02"),
            ("ff99ee88", "sess03"),
        ]
    await td.adapter.destroy(ours[0])
    await td.clock.advance(sim.DELETE_LINGER_S)
    assert [s.instance_id for s in await td.adapter.list_ours()] == [ours[1]]


async def test_bad_instance_ids_never_reach_another_path(td: Td) -> None:
    for bad in ("../locations", "a/b", "", "x" * 129, "%2e%2e"):
        with pytest.raises(ProviderError, match="not a TensorDock instance id"):
            await td.adapter.get(bad)
        with pytest.raises(ProviderError, match="not a TensorDock instance id"):
            await td.adapter.destroy(bad)


async def test_stop_and_start_keep_the_instance(td: Td) -> None:
    assert TensorDock.can_stop and TensorDock.INFO.capabilities.can_stop
    instance_id = await _rent(td, await td.offer("Chubbuck"))
    instance = td.world.get("tensordock", instance_id)
    assert instance is not None
    await td.clock.advance(instance.boot_s)
    await td.adapter.stop(instance_id)
    stopping = await td.adapter.get(instance_id)
    assert stopping is not None and (stopping.state, stopping.running) == ("stopping", False)
    await td.clock.advance(instance.stop_s)
    stopped = await td.adapter.get(instance_id)
    assert stopped is not None and (stopped.state, stopped.running) == ("stopped", False)
    await td.adapter.start(instance_id)
    await td.clock.advance(instance.boot_s)
    running = await td.adapter.get(instance_id)
    assert running is not None and running.running
    with pytest.raises(NotFound):
        await td.adapter.stop("00000000-0000-4000-8000-000000000000")
    with pytest.raises(ProviderError, match="not a TensorDock instance id"):
        await td.adapter.start("../locations")


@pytest.mark.parametrize(
    ("body", "capacity"),
    [
        ({"status": 400, "error": sim.NO_GPU_TO_START}, True),
        ({"status": 400, "error": "No available nodes found"}, True),
        ({"status": 400, "error": "Insufficient capacity on available nodes"}, True),
        ({"status": 400, "error": "Instance must be stopped to start it"}, False),
        ({"status": 400, "error": "Insufficient balance: a minimum balance of $1"}, False),
    ],
)
async def test_a_start_that_finds_no_gpu_is_a_capacity_error(
    td: Td, body: dict[str, Any], capacity: bool
) -> None:
    instance_id = await _rent(td, await td.offer("Chubbuck"))
    td.fault("start", status=200, body=json.dumps(body), media_type="application/json", times=1)
    with pytest.raises(ProviderError) as caught:
        await td.adapter.start(instance_id)
    assert isinstance(caught.value, CapacityError) is capacity
    if capacity:
        assert caught.value.message.startswith(f"no capacity to start instance {instance_id}")


async def test_a_stopped_vm_bills_its_storage() -> None:
    offer = _reference_offers()[0]
    assert offer.disk_gb == 100
    adapter = TensorDock.connect("http://td.test/api/v2", "k", INSTALL)
    try:
        assert adapter.stopped_price_per_hour(offer) == pytest.approx(100 * 0.00005)
        bare = offer.model_copy(update={"raw": {}})
        assert adapter.stopped_price_per_hour(bare) == offer.price_per_hour  # does not say
    finally:
        await adapter.aclose()


async def test_rate_limit_parks_the_sixth_call_and_serves_status_first(td: Td) -> None:
    assert TensorDock.rate == RateLimit(per_second=1.5, burst=5)
    assert TensorDock.readiness.ssh_user == "user"
    assert TensorDock.readiness.initial_delay_s == 90 and TensorDock.readiness.probe_dpkg_and_smi
    limited = td.connect(rate=TensorDock.rate)
    gone = "00000000-0000-4000-8000-000000000000"
    for _ in range(5):
        assert await limited.get(gone) is None
    order: list[str] = []

    async def tagged(name: str, call: Any) -> None:
        await call
        order.append(name)

    inventory = asyncio.create_task(tagged("offers", limited.list_offers()))
    await _parked(td.clock)
    status = asyncio.create_task(tagged("get", limited.get(gone)))
    for _ in range(10):
        await asyncio.sleep(0)
    assert order == [] and not inventory.done() and not status.done()
    await td.clock.advance(1.0)  # 1.5 tokens: the status call goes first, though it came last
    await asyncio.wait_for(status, timeout=10)
    assert order == ["get"] and not inventory.done()
    await td.clock.advance(1.0)
    await asyncio.wait_for(inventory, timeout=10)
    assert order == ["get", "offers"]
    await limited.aclose()
