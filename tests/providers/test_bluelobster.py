"""The Blue Lobster adapter: parsing on the reference's JSON, then contracts against the simulator.

Contract tests talk to the simulated API over loopback HTTP on a FakeClock; the adapter's own
task polling is driven by advancing that clock (`drive`), never by real time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.models import Offer
from gpushop_tui.providers import bluelobster as bl_mod
from gpushop_tui.providers.base import (
    AuthError,
    CapacityError,
    CreateSpec,
    NotFound,
    OfferGone,
    ProviderBug,
    ProviderError,
    ProviderHttp,
    RateLimit,
    RateLimited,
    RetryPolicy,
    TransientError,
    label_for,
    parse_label,
)
from gpushop_tui.providers.bluelobster import (
    NAME_RE,
    TASK_POLL_S,
    TASK_TIMEOUT_S,
    BlueLobster,
    instance_records,
    normalize_offers,
    parse_error,
    parse_instance,
    parse_launch,
    parse_offer_id,
    parse_task,
    sanitize_name,
    ssh_user,
    task_failure,
)
from gpushop_tui.sim import bluelobster as sim
from gpushop_tui.sim.faults import HttpFault
from gpushop_tui.sim.http import serve
from gpushop_tui.sim.world import Timing, World

T = TypeVar("T")
P = "bluelobster"
INSTALL = "ab12cd34"
LABEL = label_for(INSTALL, "sess01")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgpushopTestKey me@host"
FETCHED = datetime(2026, 2, 1, tzinfo=UTC)

# --------------------------------------------------------------------------- reference JSON

AVAILABLE: dict[str, Any] = json.loads("""
{"data":[
  {"id":"v1_gpu_1x_a5000",
   "instance_type":{"name":"v1_gpu_1x_a5000","description":"1x RTX A5000 (24 GB)","gpu_description":"N/A",
                    "price_cents_per_hour":30,
                    "specs":{"vcpus":4,"memory_gib":32,"storage_gib":250,"gpus":1,"gpu_model":"RTX A5000"}},
   "regions_with_capacity_available":[
      {"name":"igl","description":"Wilmington","location":{"city":"Wilmington","state":"DE","country":"USA"}}]},
  {"id":"v1_gpu_1x_8000",
   "instance_type":{"name":"v1_gpu_1x_8000","description":"1x RTX 8000 (48 GB)","gpu_description":"N/A",
                    "price_cents_per_hour":35,
                    "specs":{"vcpus":8,"memory_gib":32,"storage_gib":250,"gpus":1,
                             "gpu_model":["Quadro RTX 8000","RTX 8000"]}},
   "regions_with_capacity_available":[]},
  {"id":"v1_cpu_small",
   "instance_type":{"name":"v1_cpu_small","description":"CPU Only Instance","gpu_description":"",
                    "price_cents_per_hour":3,"specs":{"vcpus":1,"memory_gib":8,"storage_gib":250,"gpus":0}},
   "regions_with_capacity_available":[{"name":"igl","description":"Wilmington","location":{"city":"Wilmington","state":"DE","country":"USA"}}]}]}
""")  # noqa: E501
LAUNCHED = {
    "task_id": "task_abc123",
    "vm_uuid": "c57916d1-3daf-4cc7-87ab-b821f1027322",
    "assigned_ip": "38.29.145.235",
    "status": "PENDING",
}
TASK = json.loads("""
{"task_id":"task_abc123","status":"PROCESSING","operation":"launch_instance","message":"",
 "params":{"vm_uuid":"c57916d1-…"},"account_id":"…","created_at":"2026-02-23T18:00:00Z","updated_at":"2026-02-23T18:00:41Z"}
""")
INSTANCE = json.loads("""
{"uuid":"c57916d1-3daf-4cc7-87ab-b821f1027322","name":"GPUcompute","host_id":"wil-gpu-26","region":"igl",
 "ip_address":"38.29.145.154","internal_ip":"10.10.0.54","cpu_cores":8,"memory":32,"storage":250,
 "gpu_count":1,"gpu_model":"RTX A6000","power_status":"running","created_at":"2026-08-01T10:26:30Z",
 "metadata":{},"instance_type":"v1_gpu_1x_a6000","price_cents_per_hour":55,"vm_username":"admin",
 "template_name":"UBUNTU-22-04-NV","template_display_name":"Ubuntu 22.04 + NVIDIA","os_type":"linux",
 "team_id":null,"team_name":null,"access_type":"owner"}
""")  # noqa: E501
DETAIL_ERROR = {"detail": {"error": "no_capacity", "message": "No capacity available"}}
FIELD_ERROR = {
    "error": "validation_error",
    "message": "Request validation failed",
    "errors": [{"field": "ssh_key", "message": "Invalid SSH public key format"}],
}


# --------------------------------------------------------------------------- pure parsing


def test_reference_offers_one_gpu_offer_with_catalogue_vram_and_dollars() -> None:
    offers = [o for r in AVAILABLE["data"] for o in normalize_offers(r, FETCHED)]
    assert len(offers) == 1  # the RTX 8000 is sold out, the CPU type is not a GPU offer
    offer = offers[0]
    assert offer.id == "bluelobster:v1_gpu_1x_a5000:igl"
    assert offer.provider == P and offer.provider_offer_id == "v1_gpu_1x_a5000:igl"
    assert (offer.gpu_name, offer.gpu_count, offer.vram_gb) == ("RTX A5000", 1, 24)
    assert offer.price_per_hour == pytest.approx(0.30)
    assert (offer.vcpus, offer.ram_gb, offer.disk_gb) == (4, 32, 250)  # 32 GiB is RAM, not VRAM
    assert offer.region == "Wilmington, DE" and offer.country == "US"
    assert offer.reliability is None
    assert offer.fetched_at == FETCHED and offer.raw == AVAILABLE["data"][0]


def test_gpu_model_as_a_list_and_one_offer_per_region() -> None:
    record = json.loads(json.dumps(AVAILABLE["data"][1]))
    record["regions_with_capacity_available"] = [
        AVAILABLE["data"][0]["regions_with_capacity_available"][0],
        {"name": "phl", "description": "Philadelphia", "location": {"state": "PA"}},
    ]
    offers = normalize_offers(record, FETCHED)
    assert [o.id for o in offers] == [
        "bluelobster:v1_gpu_1x_8000:igl",
        "bluelobster:v1_gpu_1x_8000:phl",
    ]
    assert {(o.gpu_name, o.vram_gb, o.price_per_hour) for o in offers} == {("RTX 8000", 48, 0.35)}
    assert offers[1].region == "Philadelphia, PA"


def test_unknown_gpu_is_kept_with_the_vram_its_description_states() -> None:
    record = json.loads(json.dumps(AVAILABLE["data"][0]))
    record["instance_type"]["description"] = "2x RTX Z9000 (40 GB)"
    record["instance_type"]["specs"] |= {"gpu_model": "RTX Z9000", "gpus": 2}
    (offer,) = normalize_offers(record, FETCHED)
    assert (offer.gpu_name, offer.gpu_count, offer.vram_gb) == ("RTX Z9000", 2, 40)
    del record["instance_type"]["specs"]["gpu_model"]  # no model field: read the description
    record["instance_type"]["description"] = "1x RTX A4000 (16 GB)"
    assert normalize_offers(record, FETCHED)[0].gpu_name == "RTX A4000"


def test_offer_ids_round_trip() -> None:
    assert parse_offer_id("bluelobster:v1_gpu_1x_a5000:igl") == ("v1_gpu_1x_a5000", "igl")
    for bad in ("vastai:v1_gpu_1x_a5000:igl", "bluelobster:v1_gpu_1x_a5000", "bluelobster:"):
        with pytest.raises(ValueError):
            parse_offer_id(bad)


NASTY_LABELS = ["job_1-", "-job", "é-job", "a" * 65, "a" * 63 + "_b", "", "x", "--", "My Job!! 7"]


@pytest.mark.parametrize("label", NASTY_LABELS)
def test_sanitized_names_always_match_the_provider_rule(label: str) -> None:
    name = sanitize_name(label)
    assert NAME_RE.fullmatch(name) and len(name) <= 64
    assert not NAME_RE.fullmatch(label) or len(label) > 64  # each input really is invalid


def test_sanitize_keeps_our_labels_and_is_readable() -> None:
    assert sanitize_name(LABEL) == LABEL
    assert sanitize_name(label_for("zzzz9999", "a" * 32)) == label_for("zzzz9999", "a" * 32)
    assert sanitize_name("job_1-") == "job-1"
    assert sanitize_name("My Job!! 7") == "My-Job-7"
    assert sanitize_name("a" * 63 + "_b") == "a" * 63


def test_both_error_shapes_and_fastapi_validation() -> None:
    detail = parse_error(DETAIL_ERROR)
    assert (detail.code, detail.message, detail.fields) == (
        "no_capacity",
        "No capacity available",
        (),
    )
    flat = parse_error(FIELD_ERROR)
    assert flat.code == "validation_error"
    assert flat.text == "Request validation failed; ssh_key: Invalid SSH public key format"
    fastapi = parse_error({"detail": [{"loc": ["body", "name"], "msg": "bad pattern"}]})
    assert fastapi.text == "name: bad pattern"
    assert parse_error({"detail": "Not authenticated"}).text == "Not authenticated"
    assert parse_error("oops").text == "no reason given"


def test_launch_answers_in_every_known_shape() -> None:
    vm = LAUNCHED["vm_uuid"]
    assert parse_launch(LAUNCHED) == ("task_abc123", vm)
    assert parse_launch({"data": {"task_id": "t1", "vm_uuid": vm}}) == ("t1", vm)
    assert parse_launch({"task": {"id": "t2"}, "instance_ids": [vm]}) == ("t2", vm)
    assert parse_launch({"task_id": "t3", "vm_uuids": [vm]}) == ("t3", vm)
    assert parse_launch({"task_id": "t4", "instance_id": vm}) == ("t4", vm)
    assert parse_launch({"task_id": "t5"}) == ("t5", None)
    assert parse_launch({"status": "PENDING"}) == (None, None)
    assert parse_launch([LAUNCHED]) == (None, None)


def test_task_records() -> None:
    assert parse_task(TASK) == ("PROCESSING", "", "c57916d1-…")
    done = {"status": "completed", "message": "ok", "result": {"vm_uuid": "u1"}}
    assert parse_task({"data": done}) == ("COMPLETED", "ok", "u1")
    for bad in ({"task_id": "t"}, [], None):
        with pytest.raises(ValueError):
            parse_task(bad)


def test_task_failures_carry_the_instance_and_name_capacity() -> None:
    capacity = task_failure("t1", "FAILED", "Host out of GPU capacity", "u1")
    assert isinstance(capacity, CapacityError) and capacity.instance_id == "u1"
    other = task_failure("t1", "CANCELLED", "", "u1")
    assert type(other) is ProviderError and other.instance_id == "u1"
    assert "CANCELLED" in other.message and "no reason given" in other.message


def test_reference_instance_object() -> None:
    status = parse_instance(INSTANCE)
    assert status.instance_id == INSTANCE["uuid"] and status.label == "GPUcompute"
    assert status.state == "running" and status.running
    assert (status.ssh_host, status.ssh_port) == ("38.29.145.154", 22)
    assert status.price_per_hour == pytest.approx(0.55)
    assert status.started_at == datetime(2026, 8, 1, 10, 26, 30, tzinfo=UTC)
    assert ssh_user(INSTANCE) == "admin"
    assert ssh_user({**INSTANCE, "vm_username": None}) == "ubuntu"


def test_null_power_status_with_an_ip_is_running_but_not_once_deleting() -> None:
    null_power = {**INSTANCE, "power_status": None}
    assert parse_instance(null_power).running
    assert parse_instance(null_power).state == "running"
    booting = parse_instance({**null_power, "ip_address": None})
    assert not booting.running and booting.state == "provisioning" and booting.ssh_port is None
    stopped = parse_instance({**INSTANCE, "power_status": "stopped"})
    assert not stopped.running and stopped.state == "stopped" and stopped.stopped
    assert not parse_instance(null_power).stopped and not booting.stopped
    assert not parse_instance({**INSTANCE, "power_status": "stopped"}, deleting=True).stopped
    deleting = parse_instance(null_power, deleting=True)
    assert deleting.state == "deleting" and not deleting.running
    assert deleting.ssh_host is None and deleting.ssh_port is None
    assert parse_instance({**INSTANCE, "ssh_port": 42022}).ssh_port == 42022
    with pytest.raises(ValueError):
        parse_instance({"name": "no uuid"})


def test_instance_list_shapes() -> None:
    assert instance_records([INSTANCE]) == [INSTANCE]
    assert instance_records({"data": [INSTANCE]}) == [INSTANCE]
    assert instance_records({"instances": []}) == []
    for odd in ({"instances": None}, {"items": []}, "[]", [INSTANCE, "x"], None):
        with pytest.raises(ValueError):
            instance_records(odd)


def test_provider_profile() -> None:
    assert BlueLobster.name == P
    assert BlueLobster.rate == RateLimit(per_second=2.0, burst=3)
    assert (BlueLobster.readiness.ssh_user, BlueLobster.readiness.initial_delay_s) == ("ubuntu", 60)
    assert BlueLobster.readiness.probe_dpkg_and_smi
    assert BlueLobster.auth_headers("k") == {"X-API-Key": "k", "Accept": "application/json"}
    assert (TASK_POLL_S, TASK_TIMEOUT_S) == (3.0, 300.0)


# --------------------------------------------------------------------------- against the simulator


@dataclass
class Env:
    world: World
    clock: FakeClock
    app: Any
    origin: str
    provider: BlueLobster

    def connect(self, key: str | None = None, rate: RateLimit | None = None) -> BlueLobster:
        return BlueLobster.connect(
            self.origin + "/api/v1",
            self.world.keys[P] if key is None else key,
            INSTALL,
            clock=self.clock,
            retry=RetryPolicy(attempts=3, base_s=0.0),
            rate=rate or RateLimit(None),
        )

    def fault(self, endpoint: str, **fields: Any) -> None:
        self.world.faults.add(HttpFault(provider=P, endpoint=endpoint, **fields))


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    app = sim.build_app(world)
    served = await serve(app)
    made = Env(world, clock, app, served.origin, provider=None)  # type: ignore[arg-type]
    made.provider = made.connect()
    yield made
    await made.provider.aclose()
    await served.stop()


async def drive(clock: FakeClock, work: Awaitable[T], step: float = 1.0) -> T:
    """Run `work`, moving the fake clock on whenever it (and nothing else) waits on the clock."""
    task = asyncio.ensure_future(work)
    while not task.done():
        if clock.sleeping:
            await clock.advance(step)
        else:  # it is waiting on loopback I/O: let that happen
            await asyncio.wait({task}, timeout=0.002)
    return task.result()


async def _offer(env: Env, itype: str = "v1_gpu_1x_a5000") -> Offer:
    offers = await env.provider.list_offers()
    return next(o for o in offers if o.id == f"bluelobster:{itype}:igl")


class Sink:
    """An `on_instance` that records each id and the clock time it arrived."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.ids: list[str] = []
        self.at: list[float] = []

    async def __call__(self, instance_id: str) -> None:
        self.ids.append(instance_id)
        self.at.append(self.clock.monotonic())


async def _create(env: Env, label: str = LABEL, key: str = KEY, **kw: Any) -> tuple[Any, Sink]:
    offer = await _offer(env, **kw)
    sink = Sink(env.clock)
    ref = await drive(env.clock, env.provider.create(offer, CreateSpec(label, key), sink))
    return ref, sink


async def _raw_launch(env: Env, name: str, key: str = KEY) -> httpx.Response:
    body = {"region": "igl", "instance_type": "v1_gpu_1x_a4000", "ssh_key": key, "name": name}
    headers = {"X-API-Key": env.world.keys[P]}
    async with httpx.AsyncClient(base_url=env.origin + "/api/v1", headers=headers) as client:
        return await client.post("/instances/launch-instance", json=body)


async def test_offers_from_the_simulator(env: Env) -> None:
    offers = await env.provider.list_offers()
    assert len(offers) == 14  # 17 GPU types, less the two sold-out RTX 8000s and the 2x 5090
    assert len({o.id for o in offers}) == 14
    assert all(o.fetched_at == env.clock.now() and o.country == "US" for o in offers)
    by_id = {o.id: o for o in offers}
    a6000 = by_id["bluelobster:v1_gpu_8x_a6000:igl"]
    assert (a6000.gpu_name, a6000.gpu_count, a6000.vram_gb) == ("RTX A6000", 8, 48)
    assert a6000.price_per_hour == pytest.approx(4.40)
    assert by_id["bluelobster:v1_gpu_1x_5090:igl"].vram_gb == 32
    assert by_id["bluelobster:v1_gpu_1x_2080ti:igl"].vram_gb == 11
    assert not any("8000" in o.id or "cpu" in o.id for o in offers)


async def test_create_reports_the_instance_at_once_then_waits_for_completed(env: Env) -> None:
    polls: list[float] = []

    async def on_request(request: httpx.Request) -> None:
        if "/tasks/" in request.url.path:
            polls.append(env.clock.monotonic())

    env.provider.http.client.event_hooks["request"] = [on_request]
    ref, sink = await _create(env, key=KEY + "\n")  # the trailing newline is stripped (BL-004)
    assert sink.ids == [ref.instance_id] and sink.at == [0.0]  # before any task poll
    assert ref.provider == P and ref.label == LABEL
    instance = env.world.get(P, ref.instance_id)
    assert instance is not None and instance.authorized_keys == [KEY]
    assert instance.label == LABEL and instance.ssh_user == "ubuntu"
    assert (
        instance.extra["instance_type"] == "v1_gpu_1x_a5000" and instance.extra["region"] == "igl"
    )
    assert instance.extra["template_name"] == "UBUNTU-22-04-NV"
    assert polls[0] == 0.0 and len(polls) >= 2
    assert all(b - a == pytest.approx(TASK_POLL_S) for a, b in itertools.pairwise(polls))
    assert env.clock.monotonic() >= instance.boot_s  # returned only once the task COMPLETED
    assert instance.phase(env.world.now()) == "running"


async def test_failed_launch_task_raises_with_the_instance_id(env: Env) -> None:
    env.app.state.fail_launches = 1
    with pytest.raises(ProviderError) as caught:
        await _create(env)
    err = caught.value
    assert type(err) is ProviderError and not err.retryable
    assert err.instance_id is not None and err.instance_id in env.world.instances[P]
    assert "FAILED" in err.message and "Failed to provision VM on host" in err.message
    assert await env.provider.get(err.instance_id) is None  # the sim removed it


async def test_launch_task_failed_for_capacity_is_a_capacity_error(env: Env) -> None:
    offer = await _offer(env)
    seen: list[str] = []

    async def vanish_for_capacity(instance_id: str) -> None:
        seen.append(instance_id)
        instance = env.world.get(P, instance_id)
        assert instance is not None
        instance.extra["launch_task"]["reason"] = "Host has no GPU capacity left"
        await env.world.vanish(P, instance_id)

    create = env.provider.create(offer, CreateSpec(LABEL, KEY), vanish_for_capacity)
    with pytest.raises(CapacityError) as caught:
        await drive(env.clock, create)
    assert caught.value.instance_id == seen[0]


async def test_task_timeout_is_a_failure_never_success(env: Env) -> None:
    env.world.timing = {**env.world.timing, P: Timing(boot_s=3600, dpkg_lock_s=0)}
    with pytest.raises(TransientError) as caught:
        await _create(env)
    err = caught.value
    assert err.ambiguous and err.instance_id is not None
    assert TASK_TIMEOUT_S <= env.clock.monotonic() < TASK_TIMEOUT_S + TASK_POLL_S
    assert [i.id for i in env.world.live(P)] == [err.instance_id]  # it exists: record, clean up


async def test_transient_task_poll_failures_keep_polling(env: Env) -> None:
    env.fault("task", status=502, times=4)  # a whole poll (3 tries) and one more try fail
    ref, _ = await _create(env)
    assert env.world.get(P, ref.instance_id) is not None


async def test_auth_lost_while_polling_carries_the_instance_id(env: Env) -> None:
    body = json.dumps({"detail": {"error": "forbidden", "message": "Invalid API key"}})
    env.fault("task", status=403, body=body, media_type="application/json", times=1)
    with pytest.raises(AuthError) as caught:
        await _create(env)
    assert caught.value.instance_id is not None
    assert caught.value.instance_id in env.world.instances[P]


async def test_stale_offer_409_no_capacity_is_offer_gone(env: Env) -> None:
    offer = await _offer(env, "v1_gpu_1x_5090")  # only one card exists
    await drive(env.clock, env.provider.create(offer, CreateSpec(LABEL, KEY)))
    again = env.provider.create(offer, CreateSpec(label_for(INSTALL, "sess02"), KEY))
    with pytest.raises(OfferGone) as caught:
        await drive(env.clock, again)
    assert "no capacity" in caught.value.message.lower()
    assert caught.value.instance_id is None
    assert len(env.world.live(P)) == 1


async def test_validation_errors_name_the_fields(env: Env) -> None:
    offer = await _offer(env)
    elsewhere = offer.model_copy(update={"id": "bluelobster:v1_gpu_1x_a5000:us-east-1"})
    with pytest.raises(ProviderError) as caught:
        await env.provider.create(elsewhere, CreateSpec(LABEL, KEY))
    assert caught.value.status == 422 and "region: Unknown region 'us-east-1'" in str(caught.value)
    with pytest.raises(ProviderError) as bad_key:
        await env.provider.create(offer, CreateSpec(LABEL, "hello"))
    assert "ssh_key: Invalid SSH public key format" in bad_key.value.message
    assert env.world.live(P) == []


@pytest.mark.parametrize("label", ["job_1-", "é-job " + "a" * 70])
async def test_the_adapter_never_sends_what_the_api_rejects(env: Env, label: str) -> None:
    assert (await _raw_launch(env, label)).status_code == 422
    assert (await _raw_launch(env, "fine", key=KEY + "\n")).status_code == 422
    ref, _ = await _create(env, label=label, key=KEY + "\r\n")
    instance = env.world.get(P, ref.instance_id)
    assert instance is not None and instance.label == sanitize_name(label) == ref.label
    assert instance.authorized_keys == [KEY]


async def test_launch_5xx_is_ambiguous_and_not_retried(env: Env) -> None:
    env.fault("launch", status=502, times=1)
    offer = await _offer(env)
    with pytest.raises(TransientError) as caught:
        await env.provider.create(offer, CreateSpec(LABEL, KEY))
    assert caught.value.ambiguous
    assert env.world.live(P) == []  # a retry would have launched one


async def test_launch_2xx_that_is_not_json_is_ambiguous(env: Env) -> None:
    env.fault("launch", kind="malformed", times=1)
    offer = await _offer(env)
    with pytest.raises(TransientError) as caught:
        await env.provider.create(offer, CreateSpec(LABEL, KEY))
    assert caught.value.ambiguous


async def test_auth_failures(env: Env) -> None:
    wrong = env.connect(key="nope")
    missing = env.connect(key="")
    try:
        with pytest.raises(AuthError) as forbidden:
            await wrong.check()
        assert forbidden.value.status == 403
        with pytest.raises(AuthError) as unauthorized:
            await missing.check()
        assert unauthorized.value.status == 401
        for call in (wrong.list_offers(), wrong.list_ours(), wrong.get("x"), wrong.destroy("x")):
            with pytest.raises(AuthError):
                await call
        offer = await _offer(env)
        with pytest.raises(AuthError):
            await wrong.create(offer, CreateSpec(LABEL, KEY))
        assert "nope" not in str(forbidden.value)
    finally:
        await wrong.aclose()
        await missing.aclose()
    await env.provider.check()


async def test_rate_limited_then_ok_and_for_good(env: Env) -> None:
    env.fault("list", status=429, times=2)
    assert await env.provider.list_ours() == []
    env.fault("list", status=429, times=3)
    with pytest.raises(RateLimited):
        await env.provider.list_ours()


async def test_5xx_is_retried_then_succeeds(env: Env) -> None:
    env.fault("available", status=503, times=2)
    assert len(await env.provider.list_offers()) == 14
    env.fault("get", status=500, times=2)
    assert await env.provider.get("00000000-0000-4000-8000-000000000000") is None


async def test_list_errors_and_odd_shapes_raise_never_empty(env: Env) -> None:
    env.fault("list", status=500, times=3)
    with pytest.raises(TransientError):
        await env.provider.list_ours()
    env.fault("list", kind="malformed", times=1)
    with pytest.raises(ProviderBug):
        await env.provider.list_ours()
    env.fault("list", kind="empty", times=1)
    with pytest.raises(ProviderBug):
        await env.provider.list_ours()
    env.fault("list", status=200, body='{"instances": null}', media_type="application/json")
    with pytest.raises(ProviderBug):
        await env.provider.list_ours()
    with pytest.raises(ProviderBug):
        await env.provider.list_labelled()
    env.world.faults.clear()
    env.fault("available", kind="malformed", times=1)
    with pytest.raises(ProviderBug):
        await env.provider.list_offers()
    env.fault("available", status=200, body='{"data": null}', media_type="application/json")
    with pytest.raises(ProviderBug):
        await env.provider.list_offers()


async def test_get_of_a_gone_instance_is_none_and_destroying_it_is_fine(env: Env) -> None:
    gone = "00000000-0000-4000-8000-000000000000"
    assert await env.provider.get(gone) is None
    await env.provider.destroy(gone)
    env.fault("get", kind="malformed", times=1)
    with pytest.raises(ProviderBug):
        await env.provider.get(gone)


async def test_null_power_status_reads_running_from_the_ip(env: Env) -> None:
    first, _ = await _create(env)
    second, _ = await _create(env, label=label_for(INSTALL, "sess02"))
    statuses = [await env.provider.get(r.instance_id) for r in (first, second)]
    assert all(s is not None for s in statuses)
    powers = {s.raw["power_status"] for s in statuses if s is not None}
    assert powers == {None, "running"}  # the sim nulls it for every other launch (BL-008)
    for status in statuses:
        assert status is not None and status.running and status.state == "running"
        assert (status.ssh_host, status.ssh_port) == ("127.0.0.1", 22)
        assert status.price_per_hour == pytest.approx(0.30)


async def test_the_sims_ssh_port_is_used_when_present(env: Env) -> None:
    ref, _ = await _create(env)
    instance = env.world.get(P, ref.instance_id)
    assert instance is not None
    instance.ssh_port = 42022
    status = await env.provider.get(ref.instance_id)
    assert status is not None and status.ssh_port == 42022


async def test_lingering_ip_after_delete_never_reads_running(env: Env) -> None:
    ref, _ = await _create(env)
    vm = ref.instance_id
    await env.provider.destroy(vm)
    raw = env.world.get(P, vm)
    assert raw is not None and sim._view(raw, env.world.now())["ip_address"] == "127.0.0.1"
    status = await env.provider.get(vm)
    assert status is not None  # still there: not gone until the provider says 404
    assert status.state == "deleting" and not status.running and status.ssh_host is None
    (listed,) = await env.provider.list_ours()
    assert listed.state == "deleting" and not listed.running
    restarted = env.connect()  # a new process knows nothing of the delete...
    try:
        await restarted.destroy(vm)  # ...the repeated delete answers 404, which is fine
        again = await restarted.get(vm)
        assert again is not None and again.state == "deleting" and not again.running
        await env.clock.advance(sim.DELETE_LINGER_S)
        assert await env.provider.get(vm) is None
        assert await restarted.get(vm) is None
        assert await env.provider.list_ours() == []
    finally:
        await restarted.aclose()


async def test_a_delete_that_did_nothing_is_not_gone(env: Env) -> None:
    ref, _ = await _create(env)
    env.world.faults.node(P).destroy_noop = 1
    await env.provider.destroy(ref.instance_id)
    await env.clock.advance(sim.DELETE_LINGER_S * 2)
    status = await env.provider.get(ref.instance_id)
    assert status is not None and status.state == "deleting"
    await env.provider.destroy(ref.instance_id)  # the destroy queue tries again
    await env.clock.advance(sim.DELETE_LINGER_S)
    assert await env.provider.get(ref.instance_id) is None


async def test_list_ours_keeps_only_this_installations_labels(env: Env) -> None:
    ours, _ = await _create(env)
    assert (await _raw_launch(env, label_for("zz99zz99", "sess02"))).status_code == 200
    assert (await _raw_launch(env, "my-own-box")).status_code == 200
    listed = await env.provider.list_ours()
    assert [s.instance_id for s in listed] == [ours.instance_id]
    assert parse_label(listed[0].label) == (INSTALL, "sess01")
    assert len(env.world.live(P)) == 3
    everyone = await env.provider.list_labelled()
    assert sorted(parse_label(s.label) for s in everyone) == [  # type: ignore[type-var]
        (INSTALL, "sess01"),
        ("zz99zz99", "sess02"),
    ]
    raw = [sim._view(i, env.world.now()) for i in env.world.live(P)]
    body = json.dumps({"data": raw})
    env.fault("list", status=200, body=body, media_type="application/json", times=1)
    assert [s.instance_id for s in await env.provider.list_ours()] == [ours.instance_id]


async def test_the_default_rate_limit_paces_calls_on_the_clock(env: Env) -> None:
    paced = env.connect(rate=BlueLobster.rate)
    try:
        await drive(env.clock, asyncio.gather(*(paced.check() for _ in range(6))), step=0.1)
        assert env.clock.monotonic() == pytest.approx(1.5, abs=0.11)  # 3 at once, then 2/s
    finally:
        await paced.aclose()


async def test_stop_and_start_use_the_power_endpoints() -> None:
    seen: list[tuple[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        if request.url.path.endswith("/busy/shutdown"):
            body = {"detail": {"error": "invalid_state", "message": "Instance is not running"}}
            return httpx.Response(409, json=body)
        if "/gone/" in request.url.path:
            return httpx.Response(404, json={"detail": {"error": "not_found", "message": "no"}})
        return httpx.Response(200, json={"status": "PENDING", "task_id": "t1"})

    http = ProviderHttp(
        P,
        "https://bl.test/api/v1",
        BlueLobster.auth_headers("k"),
        clock=FakeClock(),
        transport=httpx.MockTransport(answer),
    )
    provider = BlueLobster(http, INSTALL)
    try:
        await provider.stop("u1")
        await provider.start("u1")
        assert seen == [
            ("POST", "/api/v1/instances/u1/shutdown"),
            ("POST", "/api/v1/instances/u1/power-on"),
        ]
        with pytest.raises(ProviderError) as busy:
            await provider.stop("busy")
        assert busy.value.status == 409 and "Instance is not running" in busy.value.message
        with pytest.raises(NotFound):
            await provider.start("gone")
    finally:
        await provider.aclose()


async def test_stop_keeps_the_instance_and_start_brings_it_back(env: Env) -> None:
    ref, _ = await _create(env)
    vm = ref.instance_id
    instance = env.world.get(P, vm)
    assert instance is not None
    before = await env.provider.get(vm)
    assert before is not None and before.running
    await env.provider.stop(vm)
    stopped = await env.provider.get(vm)
    assert stopped is not None and not stopped.running and stopped.state == "stopped"
    assert stopped.raw["power_status"] == "stopped" and stopped.ssh_host == "127.0.0.1"
    (listed,) = await env.provider.list_ours()  # still ours, still listed
    assert listed.instance_id == vm and listed.state == "stopped" and not listed.running
    await env.clock.advance(3600)
    still = await env.provider.get(vm)
    assert still is not None and not still.running
    with pytest.raises(ProviderError) as twice:  # the API refuses a power action out of state
        await env.provider.stop(vm)
    assert twice.value.status == 409 and not isinstance(twice.value, NotFound)
    await env.provider.start(vm)
    assert instance.phase(env.world.now()) == "booting"  # the VM boots again: SSH not yet up
    started = await env.provider.get(vm)
    assert started is not None and started.running and started.state == "running"
    await env.clock.advance(instance.boot_s)
    assert instance.phase(env.world.now()) == "running"
    await env.provider.stop(vm)  # a stopped instance can still be destroyed
    await env.provider.destroy(vm)
    deleting = await env.provider.get(vm)
    assert deleting is not None and deleting.state == "deleting" and not deleting.running
    with pytest.raises(NotFound):
        await env.provider.start(vm)
    await env.clock.advance(sim.DELETE_LINGER_S)
    assert await env.provider.get(vm) is None
    assert await env.provider.list_ours() == []
    with pytest.raises(NotFound):
        await env.provider.stop(vm)


async def test_power_actions_on_unknown_instances_and_with_a_bad_key(env: Env) -> None:
    gone = "00000000-0000-4000-8000-000000000000"
    for call in (env.provider.stop(gone), env.provider.start(gone)):
        with pytest.raises(NotFound):
            await call
    ref, _ = await _create(env)
    wrong = env.connect(key="nope")
    try:
        for call in (wrong.stop(ref.instance_id), wrong.start(ref.instance_id)):
            with pytest.raises(AuthError):
                await call
    finally:
        await wrong.aclose()
    status = await env.provider.get(ref.instance_id)
    assert status is not None and status.running


async def test_a_5xx_on_stop_is_retried(env: Env) -> None:
    ref, _ = await _create(env)
    env.fault("shutdown", status=502, times=2)
    await env.provider.stop(ref.instance_id)
    status = await env.provider.get(ref.instance_id)
    assert status is not None and status.state == "stopped"


async def test_module_constants_are_what_create_sends(env: Env) -> None:
    sent: list[dict[str, Any]] = []

    async def on_request(request: httpx.Request) -> None:
        if request.url.path.endswith("/launch-instance"):
            sent.append(json.loads(request.content))

    env.provider.http.client.event_hooks["request"] = [on_request]
    await _create(env, key=KEY + "\n")
    assert sent == [
        {
            "region": "igl",
            "instance_type": "v1_gpu_1x_a5000",
            "ssh_key": KEY,
            "name": LABEL,
            "username": bl_mod.USERNAME,
            "template_name": bl_mod.TEMPLATE,
        }
    ]
    assert (bl_mod.USERNAME, bl_mod.TEMPLATE) == ("ubuntu", "UBUNTU-22-04-NV")
