"""The Lambda Cloud adapter: parsing on the reference's JSON, then contracts against the simulator.

Contract tests talk to the simulated API over loopback HTTP on a FakeClock; waits of the
adapter's own rate limiters are driven by advancing that clock (`drive`), never by real time.
Most run with the simulator's rate limits lifted and the adapter unthrottled; the rate tests
turn both on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.models import Offer
from gpushop_tui.providers.base import (
    AuthError,
    CapacityError,
    CreateSpec,
    NotFound,
    ProviderBug,
    ProviderError,
    RateLimit,
    RateLimited,
    RetryPolicy,
    TransientError,
    label_for,
    parse_label,
)
from gpushop_tui.providers.gpus import lookup_gpu
from gpushop_tui.providers.lambdacloud import (
    LAUNCH_INTERVAL_S,
    ErrorInfo,
    LambdaCloud,
    country_of,
    error_for,
    instance_name,
    is_gone,
    launched_id,
    normalize_offers,
    parse_error,
    parse_instance,
    parse_offer_id,
)
from gpushop_tui.sim import lambdacloud as sim
from gpushop_tui.sim.faults import HttpFault
from gpushop_tui.sim.http import serve
from gpushop_tui.sim.world import World

T = TypeVar("T")
P = "lambda"
INSTALL = "ab12cd34"
LABEL = label_for(INSTALL, "sess01")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgpushopTestKey me@host"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherSessionKey you@host"
FETCHED = datetime(2026, 2, 1, tzinfo=UTC)

# --------------------------------------------------------------------------- reference JSON

INSTANCE_TYPES: dict[str, Any] = json.loads("""
{"data":{"gpu_1x_a10":{"instance_type":{"name":"gpu_1x_a10","description":"1x A10 (24 GB PCIe)",
   "gpu_description":"A10 (24 GB PCIe)","price_cents_per_hour":75,
   "specs":{"vcpus":30,"memory_gib":200,"storage_gib":1400,"gpus":1}},
  "regions_with_capacity_available":[{"name":"us-east-1","description":"Virginia, USA"}]},
 "gpu_8x_h100_sxm5":{"instance_type":{"name":"gpu_8x_h100_sxm5","description":"8x H100 (80 GB SXM5)",
   "gpu_description":"H100 (80 GB SXM5)","price_cents_per_hour":2392,
   "specs":{"vcpus":208,"memory_gib":1800,"storage_gib":24780,"gpus":8}},
  "regions_with_capacity_available":[]}}}
""")  # noqa: E501
INSTANCE: dict[str, Any] = json.loads("""
{"id":"0920582c7ff041399e34823a0be62549","name":"My Instance","ip":"198.51.100.2","private_ip":"10.0.2.100",
 "status":"active","ssh_key_names":["my-key"],"file_system_names":[],
 "region":{"name":"us-west-1","description":"California, USA"},
 "instance_type":{"name":"gpu_1x_a10","description":"1x A10 (24 GB PCIe)","gpu_description":"A10 (24 GB PCIe)",
                  "price_cents_per_hour":75,"specs":{"vcpus":30,"memory_gib":200,"storage_gib":1400,"gpus":1}},
 "hostname":"198.51.100.2","jupyter_token":"03b7","jupyter_url":"https://jupyter-x.lambdaspaces.com/?token=03b7",
 "is_reserved":false,
 "actions":{"migrate":{"available":false,"reason_code":"vm-has-not-launched","reason_description":"…"},
            "rebuild":{"available":true},"restart":{"available":true},"cold_reboot":{"available":true},
            "terminate":{"available":true}},
 "tags":[{"key":"job","value":"7f3a"}]}
""")  # noqa: E501
LAUNCHED = {"data": {"instance_ids": ["0920582c7ff041399e34823a0be62549"]}}


# --------------------------------------------------------------------------- pure parsing


def test_reference_offers_one_per_region_with_capacity() -> None:
    data = INSTANCE_TYPES["data"]
    offers = [o for name, r in data.items() for o in normalize_offers(name, r, FETCHED)]
    assert len(offers) == 1  # the 8x H100 is sold out
    offer = offers[0]
    assert offer.id == "lambda:gpu_1x_a10:us-east-1"
    assert offer.provider == P and offer.provider_offer_id == "gpu_1x_a10:us-east-1"
    assert (offer.gpu_name, offer.gpu_count, offer.vram_gb) == ("A10", 1, 24)
    assert offer.price_per_hour == pytest.approx(0.75)
    assert (offer.vcpus, offer.ram_gb, offer.disk_gb) == (30, 200, 1400)
    assert offer.region == "Virginia, USA" and offer.country == "US"
    assert offer.reliability is None and not offer.interruptible
    assert offer.fetched_at == FETCHED and offer.raw == data["gpu_1x_a10"]


def test_each_region_is_an_offer_and_gpu_names_are_canonical() -> None:
    record = json.loads(json.dumps(INSTANCE_TYPES["data"]["gpu_8x_h100_sxm5"]))
    record["regions_with_capacity_available"] = [
        {"name": "us-east-1", "description": "Virginia, USA"},
        {"name": "europe-central-1", "description": "Germany"},
        {"name": "mars-1"},
    ]
    offers = normalize_offers("gpu_8x_h100_sxm5", record, FETCHED)
    assert [o.id for o in offers] == [
        "lambda:gpu_8x_h100_sxm5:us-east-1",
        "lambda:gpu_8x_h100_sxm5:europe-central-1",
        "lambda:gpu_8x_h100_sxm5:mars-1",
    ]
    assert [(o.region, o.country) for o in offers] == [
        ("Virginia, USA", "US"),
        ("Germany", "DE"),
        ("mars-1", None),
    ]
    assert {(o.gpu_name, o.gpu_count, o.vram_gb, o.price_per_hour) for o in offers} == {
        ("H100 SXM", 8, 80, 23.92)
    }


@pytest.mark.parametrize(
    ("description", "name", "vram"),
    [
        ("H100 (80 GB SXM5)", "H100 SXM", 80),
        ("H100 (80 GB PCIe)", "H100 PCIe", 80),
        ("A100 (40 GB SXM4)", "A100 40GB SXM", 40),
        ("A100 (80 GB SXM4)", "A100 80GB SXM", 80),
        ("GH200 (96 GB)", "GH200", 96),
        ("B200 (180 GB SXM6)", "B200", 180),
    ],
)
def test_gpu_descriptions_map_to_the_catalogue(description: str, name: str, vram: int) -> None:
    record = json.loads(json.dumps(INSTANCE_TYPES["data"]["gpu_1x_a10"]))
    record["instance_type"]["gpu_description"] = description
    (offer,) = normalize_offers("t", record, FETCHED)
    assert (offer.gpu_name, offer.vram_gb) == (name, vram)
    assert lookup_gpu(offer.gpu_name).known


def test_a_spelling_the_catalogue_lacks_keeps_its_stated_vram() -> None:
    record = json.loads(json.dumps(INSTANCE_TYPES["data"]["gpu_1x_a10"]))
    record["instance_type"]["gpu_description"] = "Z9000 (40 GB SXM9)"
    (offer,) = normalize_offers("t", record, FETCHED)
    assert (offer.gpu_name, offer.vram_gb) == ("Z9000", 40)
    del record["instance_type"]["gpu_description"]  # no gpu_description: read the description
    record["instance_type"]["description"] = "1x A10 (24 GB PCIe)"
    assert normalize_offers("t", record, FETCHED)[0].gpu_name == "A10"


def test_lambda_spellings_of_older_cards_are_canonical() -> None:
    record = json.loads(json.dumps(INSTANCE_TYPES["data"]["gpu_1x_a10"]))
    for description, name, vram in (
        ("RTX 6000 (24 GB)", "RTX 6000", 24),
        ("A6000 (48 GB)", "RTX A6000", 48),
    ):
        record["instance_type"]["gpu_description"] = description
        (offer,) = normalize_offers("t", record, FETCHED)
        assert (offer.gpu_name, offer.vram_gb) == (name, vram) and lookup_gpu(name).known


def test_cpu_only_types_give_no_offer_and_bad_records_raise() -> None:
    record = json.loads(json.dumps(INSTANCE_TYPES["data"]["gpu_1x_a10"]))
    record["instance_type"]["specs"]["gpus"] = 0
    assert normalize_offers("cpu_4x_general", record, FETCHED) == []
    with pytest.raises(KeyError):
        normalize_offers("t", {"regions_with_capacity_available": []}, FETCHED)


@pytest.mark.parametrize(
    ("region", "country"),
    [
        ("us-east-1", "US"),
        ("us-west-3", "US"),
        ("us-south-1", "US"),
        ("us-midwest-1", "US"),
        ("europe-central-1", "DE"),
        ("asia-northeast-1", "JP"),
        ("asia-northeast-2", "JP"),
        ("asia-south-1", "IN"),
        ("me-west-1", "IL"),
        ("australia-east-1", None),
    ],
)
def test_country_from_the_region_name(region: str, country: str | None) -> None:
    assert country_of(region) == country


def test_offer_ids_round_trip() -> None:
    assert parse_offer_id("lambda:gpu_1x_a10:us-east-1") == ("gpu_1x_a10", "us-east-1")
    for bad in ("vastai:gpu_1x_a10:us-east-1", "lambda:gpu_1x_a10", "lambda:"):
        with pytest.raises(ValueError):
            parse_offer_id(bad)


def test_error_envelope() -> None:
    body = {"error": {"code": "global/quota-exceeded", "message": "Quota", "suggestion": "Ask"}}
    info = parse_error(body)
    assert info == ErrorInfo("global/quota-exceeded", "Quota", "Ask")
    assert info.text == "Quota (Ask) [global/quota-exceeded]"
    assert parse_error({"error": "nope"}) == ErrorInfo(None, None)
    assert parse_error("oops").text == "no reason given"


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (401, "global/invalid-api-key", AuthError),
        (403, "global/account-inactive", AuthError),
        (403, "global/forbidden", AuthError),
        (403, "global/invalid-address", AuthError),
        (404, "global/object-does-not-exist", NotFound),
        (404, "global/not-found", NotFound),
        (400, "instance-operations/launch/insufficient-capacity", CapacityError),
        (400, "global/quota-exceeded", ProviderError),
        (400, "global/invalid-parameters", ProviderError),
        (400, "instance-operations/launch/file-system-in-wrong-region", ProviderError),
        (409, "global/conflict", ProviderError),
        (401, None, AuthError),
        (403, None, AuthError),
        (404, None, NotFound),
        (400, None, ProviderError),
    ],
)
def test_each_error_code_maps_to_the_taxonomy(
    status: int, code: str | None, kind: type[ProviderError]
) -> None:
    err = error_for(status, ErrorInfo(code, "It went wrong"), "doing it")
    assert type(err) is kind and err.status == status and not err.retryable
    assert "It went wrong" in err.message and "doing it" in err.message


def test_reference_instance_object() -> None:
    status = parse_instance(INSTANCE)
    assert status.instance_id == INSTANCE["id"] and status.label == "My Instance"
    assert status.state == "active" and status.running and not status.stopped
    assert (status.ssh_host, status.ssh_port) == ("198.51.100.2", 22)
    assert status.price_per_hour == pytest.approx(0.75)
    assert status.started_at is None and status.raw == INSTANCE
    assert not is_gone(status)
    assert parse_instance({**INSTANCE, "ssh_port": 42022}).ssh_port == 42022


@pytest.mark.parametrize(
    "state", ["booting", "unhealthy", "terminating", "terminated", "preempted"]
)
def test_only_active_is_running(state: str) -> None:
    ip = None if state == "booting" else "198.51.100.2"
    status = parse_instance({**INSTANCE, "status": state, "ip": ip})
    assert status.state == state and not status.running and not status.stopped
    assert status.ssh_host is None and status.ssh_port is None
    assert is_gone(status) == (state in ("terminated", "preempted"))


def test_instance_records_without_an_id_or_status_raise() -> None:
    for bad in ({"status": "active"}, {"id": "x"}, {"id": "x", "status": None}, "x", None):
        with pytest.raises(ValueError):
            parse_instance(bad)


def test_launch_answers() -> None:
    assert launched_id(LAUNCHED["data"]) == "0920582c7ff041399e34823a0be62549"
    bad: tuple[Any, ...] = ({}, {"instance_ids": []}, {"instance_ids": [""]}, [], None)
    assert [launched_id(b) for b in bad] == [None] * len(bad)


def test_names_fit_the_api() -> None:
    assert instance_name(LABEL) == LABEL
    assert len(instance_name("x" * 80)) == 64


def test_provider_profile() -> None:
    info = LambdaCloud.INFO
    assert (info.name, info.display_name, info.credential_env) == (
        "lambda",
        "Lambda Cloud",
        ("LAMBDA_API_KEY",),
    )
    assert (info.default_base_url, info.base_url_env) == (
        "https://cloud.lambda.ai/api/v1",
        "LAMBDA_API_URL",
    )
    assert (info.provision_budget_s, info.first_ssh_budget_s) == (1800.0, 300.0)
    caps = info.capabilities
    assert not any(
        (
            caps.can_stop,
            caps.provider_ttl,
            caps.spot,
            caps.instance_scoped_key,
            caps.runs_images,
            caps.node_watchdog,
        )
    )
    assert LambdaCloud.name == P and not LambdaCloud.can_stop
    assert LambdaCloud.rate == RateLimit(per_second=1.0, burst=1)
    readiness = LambdaCloud.readiness
    assert (readiness.ssh_user, readiness.initial_delay_s) == ("ubuntu", 300.0)
    assert readiness.probe_dpkg_and_smi
    assert LambdaCloud.auth_headers("k") == {
        "Authorization": "Bearer k",
        "Accept": "application/json",
    }
    assert LAUNCH_INTERVAL_S == 12.0


# --------------------------------------------------------------------------- against the simulator


@dataclass
class Env:
    world: World
    clock: FakeClock
    app: Any
    origin: str
    provider: LambdaCloud
    requests: list[tuple[float, str, str, int]]
    """(clock time, method, path, status) of every answer the adapters got."""

    def connect(self, key: str | None = None, rate: RateLimit | None = None) -> LambdaCloud:
        provider = LambdaCloud.connect(
            self.origin + "/api/v1",
            self.world.keys[P] if key is None else key,
            INSTALL,
            clock=self.clock,
            retry=RetryPolicy(attempts=3, base_s=0.0),
            rate=rate or RateLimit(None),
        )

        async def on_response(response: httpx.Response) -> None:
            request = response.request
            self.requests.append(
                (self.clock.monotonic(), request.method, request.url.path, response.status_code)
            )

        provider.http.client.event_hooks["response"] = [on_response]
        return provider

    def fault(self, endpoint: str, **fields: Any) -> None:
        self.world.faults.add(HttpFault(provider=P, endpoint=endpoint, **fields))

    def answer(self, endpoint: str, status: int, body: Any, times: int | None = 1) -> None:
        """Make `endpoint` answer `body` as JSON with `status`."""
        self.fault(
            endpoint,
            status=status,
            body=json.dumps(body),
            media_type="application/json",
            times=times,
        )

    def ssh_keys(self) -> list[dict[str, str]]:
        keys: dict[str, dict[str, str]] = self.app.state.ssh_keys
        return list(keys.values())

    def launches(self) -> list[float]:
        return [t for t, m, path, _ in self.requests if path.endswith("/launch")]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    app = sim.build_app(world)
    world.rate_limited = False
    served = await serve(app)
    made = Env(world, clock, app, served.origin, provider=None, requests=[])  # type: ignore[arg-type]
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


async def _offer(env: Env, itype: str = "gpu_1x_a10", region: str = "us-east-1") -> Offer:
    offers = await env.provider.list_offers()
    return next(o for o in offers if o.id == f"lambda:{itype}:{region}")


class Sink:
    """An `on_instance` that records each id."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    async def __call__(self, instance_id: str) -> None:
        self.ids.append(instance_id)


async def _create(
    env: Env, label: str = LABEL, key: str = KEY, provider: LambdaCloud | None = None, **kw: Any
) -> tuple[Any, Sink]:
    offer = await _offer(env, **kw)
    sink = Sink()
    adapter = provider or env.provider
    ref = await drive(env.clock, adapter.create(offer, CreateSpec(label, key), sink))
    return ref, sink


async def _boot(env: Env, instance_id: str) -> None:
    instance = env.world.get(P, instance_id)
    assert instance is not None
    await env.clock.advance(instance.boot_s)


async def test_offers_from_the_simulator_per_type_and_region(env: Env) -> None:
    offers = await env.provider.list_offers()
    assert not offers.truncated
    assert len(offers) == 14 and len({o.id for o in offers}) == 14
    assert not any("b200" in o.id for o in offers)  # sold out everywhere: no offer
    assert all(o.fetched_at == env.clock.now() for o in offers)
    by_id = {o.id: o for o in offers}
    h100 = by_id["lambda:gpu_8x_h100_sxm5:us-east-1"]
    assert (h100.gpu_name, h100.gpu_count, h100.vram_gb) == ("H100 SXM", 8, 80)
    assert h100.price_per_hour == pytest.approx(23.92)
    assert (h100.vcpus, h100.ram_gb, h100.disk_gb) == (208, 1800, 24780)
    tokyo = by_id["lambda:gpu_1x_h100_pcie:asia-northeast-1"]
    assert (tokyo.gpu_name, tokyo.region, tokyo.country) == ("H100 PCIe", "Tokyo, Japan", "JP")
    assert by_id["lambda:gpu_1x_a100_sxm4:europe-central-1"].country == "DE"
    assert by_id["lambda:gpu_1x_rtx6000:us-west-1"].vram_gb == 24
    assert {o.gpu_name for o in offers} == {
        "A10",
        "A100 40GB SXM",
        "A100 80GB SXM",
        "H100 PCIe",
        "H100 SXM",
        "GH200",
        "RTX 6000",
    }


async def test_create_registers_one_key_then_launches_booting_to_active(env: Env) -> None:
    ref, sink = await _create(env)
    assert sink.ids == [ref.instance_id] and ref.provider == P and ref.label == LABEL
    (key,) = env.ssh_keys()
    assert (key["name"], key["public_key"]) == (LABEL, KEY)
    instance = env.world.get(P, ref.instance_id)
    assert instance is not None and instance.authorized_keys == [KEY]
    assert instance.label == LABEL and instance.extra["ssh_key_names"] == [LABEL]
    booting = await env.provider.get(ref.instance_id)
    assert booting is not None and booting.state == "booting" and not booting.running
    assert booting.ssh_host is None and booting.label == LABEL
    assert booting.price_per_hour == pytest.approx(0.75)
    await _boot(env, ref.instance_id)
    instance.ssh_port = 42022
    active = await env.provider.get(ref.instance_id)
    assert active is not None and active.state == "active" and active.running
    assert (active.ssh_host, active.ssh_port) == ("127.0.0.1", 42022)
    instance.ssh_port = None
    real = await env.provider.get(ref.instance_id)
    assert real is not None and real.ssh_port == 22
    launched = [(m, p) for _, m, p, _ in env.requests if m == "POST"]
    assert launched == [
        ("POST", "/api/v1/ssh-keys"),
        ("POST", "/api/v1/instance-operations/launch"),
    ]


async def test_the_launch_sends_exactly_what_the_api_takes(env: Env) -> None:
    sent: list[dict[str, Any]] = []

    async def on_request(request: httpx.Request) -> None:
        if request.url.path.endswith("/launch"):
            sent.append(json.loads(request.content))

    env.provider.http.client.event_hooks["request"] = [on_request]
    await _create(env, key=KEY + "\n", itype="gpu_1x_gh200")
    assert sent == [
        {
            "region_name": "us-east-1",
            "instance_type_name": "gpu_1x_gh200",
            "ssh_key_names": [LABEL],
            "name": LABEL,
        }
    ]
    assert env.ssh_keys()[0]["public_key"] == KEY  # the trailing newline is not sent


async def test_each_session_has_its_own_key_and_release_removes_only_its_own(env: Env) -> None:
    other = label_for(INSTALL, "sess02")
    first, _ = await _create(env)
    second, _ = await _create(env, label=other, key=OTHER_KEY)
    assert sorted((k["name"], k["public_key"]) for k in env.ssh_keys()) == sorted(
        [(LABEL, KEY), (other, OTHER_KEY)]
    )
    instances = [env.world.get(P, r.instance_id) for r in (first, second)]
    assert [i.authorized_keys for i in instances if i] == [[KEY], [OTHER_KEY]]
    await env.provider.release(LABEL)
    assert [k["name"] for k in env.ssh_keys()] == [other]
    await env.provider.release(LABEL)  # nothing there is fine
    await env.provider.release(other)
    assert env.ssh_keys() == []


async def test_a_retried_create_replaces_a_stale_key_of_that_name(env: Env) -> None:
    stale = {"name": LABEL, "public_key": OTHER_KEY}
    async with httpx.AsyncClient(
        base_url=env.origin + "/api/v1", headers=LambdaCloud.auth_headers(env.world.keys[P])
    ) as client:
        assert (await client.post("/ssh-keys", json=stale)).status_code == 200
    ref, _ = await _create(env)
    (key,) = env.ssh_keys()
    assert (key["name"], key["public_key"]) == (LABEL, KEY)
    instance = env.world.get(P, ref.instance_id)
    assert instance is not None and instance.authorized_keys == [KEY]


async def test_insufficient_capacity_is_a_capacity_error_and_drops_the_key(env: Env) -> None:
    offer = await _offer(env, "gpu_8x_h100_sxm5")
    await drive(env.clock, env.provider.create(offer, CreateSpec(LABEL, KEY)))
    other = label_for(INSTALL, "sess02")
    with pytest.raises(CapacityError) as caught:
        await drive(env.clock, env.provider.create(offer, CreateSpec(other, OTHER_KEY)))
    err = caught.value
    assert err.status == 400 and err.instance_id is None and not err.retryable
    assert "insufficient-capacity" in err.message
    assert [k["name"] for k in env.ssh_keys()] == [LABEL]
    assert len(env.world.live(P)) == 1


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (401, "global/invalid-api-key", AuthError),
        (403, "global/account-inactive", AuthError),
        (403, "global/forbidden", AuthError),
        (403, "global/invalid-address", AuthError),
        (400, "global/quota-exceeded", ProviderError),
        (400, "global/invalid-parameters", ProviderError),
        (400, "instance-operations/launch/file-system-in-wrong-region", ProviderError),
        (409, "global/conflict", ProviderError),
        (404, "global/not-found", NotFound),
    ],
)
async def test_each_launch_error_code_reaches_the_caller_mapped(
    env: Env, status: int, code: str, kind: type[ProviderError]
) -> None:
    offer = await _offer(env)
    body = {"error": {"code": code, "message": f"Refused: {code}", "suggestion": "Fix it"}}
    env.answer("launch", status, body)
    with pytest.raises(ProviderError) as caught:
        await drive(env.clock, env.provider.create(offer, CreateSpec(LABEL, KEY)))
    err = caught.value
    assert type(err) is kind and err.status == status and f"Refused: {code}" in err.message
    assert env.world.live(P) == [] and env.ssh_keys() == []


async def test_launch_5xx_is_ambiguous_not_retried_and_keeps_the_key(env: Env) -> None:
    env.fault("launch", status=502, times=1)
    offer = await _offer(env)
    with pytest.raises(TransientError) as caught:
        await env.provider.create(offer, CreateSpec(LABEL, KEY))
    assert caught.value.ambiguous
    assert env.world.live(P) == []  # a retry would have launched one
    assert [k["name"] for k in env.ssh_keys()] == [LABEL]  # for the lookup by label, then release


@pytest.mark.parametrize(
    "answer", [None, {"instance_ids": []}, {"nothing": 1}, {"data": {"instance_ids": []}}]
)
async def test_launch_2xx_we_cannot_read_is_ambiguous(env: Env, answer: Any) -> None:
    if answer is None:
        env.fault("launch", kind="malformed", times=1)
    else:
        env.answer("launch", 200, answer)
    offer = await _offer(env)
    with pytest.raises(TransientError) as caught:
        await env.provider.create(offer, CreateSpec(LABEL, KEY))
    assert caught.value.ambiguous


async def test_auth_failures(env: Env) -> None:
    wrong = env.connect(key="nope")
    try:
        with pytest.raises(AuthError) as caught:
            await wrong.check()
        assert caught.value.status == 401 and "global/invalid-api-key" in caught.value.message
        assert "nope" not in str(caught.value)
        offer = await _offer(env)
        calls = (
            wrong.list_offers(),
            wrong.list_ours(),
            wrong.get("x"),
            wrong.destroy("x"),
            wrong.release(LABEL),
            wrong.create(offer, CreateSpec(LABEL, KEY)),
        )
        for call in calls:
            with pytest.raises(AuthError):
                await call
    finally:
        await wrong.aclose()
    await env.provider.check()


async def test_the_sim_refuses_calls_faster_than_allowed(env: Env) -> None:
    env.world.rate_limited = True
    for _ in range(sim.RATE_BURST):
        await env.provider.check()
    with pytest.raises(RateLimited):  # an unthrottled adapter: three tries at one instant
        await env.provider.check()
    assert [s for *_, s in env.requests][-3:] == [429, 429, 429]
    await env.clock.advance(1.0)
    await env.provider.check()


async def test_the_adapters_own_limits_keep_it_under_the_sims(env: Env) -> None:
    env.world.rate_limited = True
    paced = env.connect(rate=LambdaCloud.rate)
    try:
        await drive(env.clock, asyncio.gather(*(paced.check() for _ in range(8))), step=0.25)
        assert env.clock.monotonic() == pytest.approx(7.0, abs=0.26)  # one a second
        other = label_for(INSTALL, "sess02")
        first, _ = await _create(env, provider=paced)
        second, _ = await _create(env, label=other, key=OTHER_KEY, provider=paced)
        assert len(env.world.live(P)) == 2 and first.instance_id != second.instance_id
        assert all(s != 429 for *_, s in env.requests)
        one, two = env.launches()
        assert two - one >= LAUNCH_INTERVAL_S  # the second create waited for Lambda's 12 s
    finally:
        await paced.aclose()


async def test_launches_are_spaced_12_s_even_when_the_rest_is_unthrottled(env: Env) -> None:
    env.world.rate_limited = True
    offer = await _offer(env, "gpu_1x_h100_sxm5")
    await env.clock.advance(10)  # the offer listing's token back
    labels = [label_for(INSTALL, f"sess0{n}") for n in range(2)]
    creates = [env.provider.create(offer, CreateSpec(label, KEY)) for label in labels]
    await drive(env.clock, asyncio.gather(*creates), step=0.5)
    one, two = env.launches()
    assert two - one >= LAUNCH_INTERVAL_S and all(s != 429 for *_, s in env.requests)


async def test_lists_that_fail_raise_never_empty(env: Env) -> None:
    await _create(env)
    env.fault("list", status=500, times=3)
    with pytest.raises(TransientError):
        await env.provider.list_ours()
    for kind in ("malformed", "empty"):
        env.fault("list", kind=kind, times=1)
        with pytest.raises(ProviderBug):
            await env.provider.list_ours()
    odd: tuple[Any, ...] = ({"instances": []}, {"data": None}, {"data": {"id": "x"}}, [])
    for body in (*odd, {"data": ["x"]}):
        env.answer("list", 200, body)
        with pytest.raises(ProviderBug):
            await env.provider.list_labelled()
    env.answer("list", 200, {"data": [{"name": LABEL, "status": "active"}]})  # no id
    with pytest.raises(ProviderBug):
        await env.provider.list_ours()
    env.fault("instance_types", kind="malformed", times=1)
    with pytest.raises(ProviderBug):
        await env.provider.list_offers()
    not_types: tuple[Any, ...] = ({"data": []}, {"types": {}})
    for types in not_types:
        env.answer("instance_types", 200, types)
        with pytest.raises(ProviderBug):
            await env.provider.list_offers()
    assert len(await env.provider.list_ours()) == 1


async def test_5xx_is_retried_then_succeeds(env: Env) -> None:
    env.fault("instance_types", status=503, times=2)
    assert len(await env.provider.list_offers()) == 14
    env.fault("get", status=500, times=2)
    assert await env.provider.get("0" * 32) is None


async def test_destroy_terminating_then_gone(env: Env) -> None:
    ref, _ = await _create(env)
    await _boot(env, ref.instance_id)
    await env.provider.destroy(ref.instance_id)
    status = await env.provider.get(ref.instance_id)
    assert status is not None and status.state == "terminating" and not status.running
    assert status.ssh_host is None
    (listed,) = await env.provider.list_ours()
    assert listed.state == "terminating"
    await env.provider.destroy(ref.instance_id)  # again, while terminating: fine
    await env.clock.advance(sim.TERMINATE_LINGER_S)
    assert await env.provider.get(ref.instance_id) is None
    assert await env.provider.list_ours() == []
    await env.provider.destroy(ref.instance_id)  # gone: a 404, which is fine
    await env.provider.release(LABEL)
    assert env.ssh_keys() == []


async def test_destroy_stuck_keeps_reading_terminating(env: Env) -> None:
    ref, _ = await _create(env)
    env.world.faults.node(P).destroy_stuck = 1
    await env.provider.destroy(ref.instance_id)
    await env.clock.advance(7 * 86_400)
    status = await env.provider.get(ref.instance_id)
    assert status is not None and status.state == "terminating" and not status.running
    assert [s.state for s in await env.provider.list_ours()] == ["terminating"]
    await env.provider.destroy(ref.instance_id)  # the destroy queue tries again: accepted
    assert await env.provider.get(ref.instance_id) is not None


async def test_terminate_of_an_unknown_id_is_fine(env: Env) -> None:
    await env.provider.destroy("0" * 32)
    env.fault("terminate", status=500, times=2)  # retried: terminate is safe to repeat
    await env.provider.destroy("0" * 32)
    env.answer("terminate", 400, {"error": {"code": "global/invalid-parameters", "message": "x"}})
    with pytest.raises(ProviderError):
        await env.provider.destroy("0" * 32)


async def test_terminated_and_preempted_read_gone(env: Env) -> None:
    for state in ("terminated", "preempted"):
        env.answer("get", 200, {"data": {**INSTANCE, "status": state}})
        assert await env.provider.get(INSTANCE["id"]) is None
        record = {**INSTANCE, "name": LABEL, "status": state}
        env.answer("list", 200, {"data": [record]})
        assert await env.provider.list_ours() == []


async def test_get_is_none_only_when_lambda_says_so(env: Env) -> None:
    assert await env.provider.get("0" * 32) is None
    env.fault("get", status=404, body="Not Found", times=1)  # a bare 404: not proof
    with pytest.raises(ProviderBug):
        await env.provider.get("0" * 32)
    env.fault("get", kind="malformed", times=1)
    with pytest.raises(ProviderBug):
        await env.provider.get("0" * 32)
    env.answer("get", 200, {"instance": INSTANCE})
    with pytest.raises(ProviderBug):
        await env.provider.get("0" * 32)


async def test_list_ours_keeps_only_this_installations_labels(env: Env) -> None:
    ours, _ = await _create(env)
    theirs, _ = await _create(env, label=label_for("zz99zz99", "sess02"), key=OTHER_KEY)
    async with httpx.AsyncClient(
        base_url=env.origin + "/api/v1", headers=LambdaCloud.auth_headers(env.world.keys[P])
    ) as client:
        await client.post("/ssh-keys", json={"name": "mine", "public_key": KEY})
        body = {"region_name": "us-east-1", "instance_type_name": "gpu_1x_h100_sxm5"}
        for name in ("my-own-box", None):
            launch = {**body, "ssh_key_names": ["mine"]} | ({"name": name} if name else {})
            assert (await client.post("/instance-operations/launch", json=launch)).is_success
    listed = await env.provider.list_ours()
    assert [s.instance_id for s in listed] == [ours.instance_id]
    assert parse_label(listed[0].label) == (INSTALL, "sess01")
    everyone = await env.provider.list_labelled()
    assert {s.instance_id for s in everyone} == {ours.instance_id, theirs.instance_id}
    assert len(env.world.live(P)) == 4


async def test_no_stop_or_start(env: Env) -> None:
    ref, _ = await _create(env)
    for call in (env.provider.stop(ref.instance_id), env.provider.start(ref.instance_id)):
        with pytest.raises(ProviderError):
            await call


async def test_a_bad_offer_id_is_refused_before_any_call(env: Env) -> None:
    offer = await _offer(env)
    wrong = offer.model_copy(update={"id": "lambda:gpu_1x_a10"})
    with pytest.raises(ProviderError):
        await env.provider.create(wrong, CreateSpec(LABEL, KEY))
    assert env.ssh_keys() == [] and env.world.live(P) == []


async def test_an_unknown_region_is_the_apis_invalid_parameters(env: Env) -> None:
    offer = await _offer(env)
    elsewhere = offer.model_copy(update={"id": "lambda:gpu_1x_a10:mars-1"})
    with pytest.raises(ProviderError) as caught:
        await drive(env.clock, env.provider.create(elsewhere, CreateSpec(LABEL, KEY)))
    err = caught.value
    assert type(err) is ProviderError and err.status == 400
    assert "global/invalid-parameters" in err.message and "mars-1" in err.message
    assert env.ssh_keys() == []


async def test_a_404_for_a_missing_route_is_not_a_missing_instance(env: Env) -> None:
    ref, _ = await _create(env)
    route_gone = {"error": {"code": "global/not-found", "message": "Not found"}}
    env.answer("get", 404, route_gone)
    with pytest.raises(ProviderBug, match="not saying it is gone"):
        await env.provider.get(ref.instance_id)


class LosesTheFirstKeyAnswer(httpx.AsyncBaseTransport):
    """Passes every request on, but answers the first `POST /ssh-keys` with a 502 after the
    twin has registered the key: an answer lost on the way back."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.lost = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/ssh-keys") and not self.lost:
            self.lost = True
            await response.aread()
            return httpx.Response(502, request=request)
        return response


async def test_a_key_whose_registration_answer_was_lost_is_taken_as_ours(env: Env) -> None:
    """The first POST took effect but its answer was lost (502); the retry meets the key under
    that name (409 `global/conflict`). It is this very key, so the launch goes on with it."""
    client = env.provider.http.client
    client._transport = LosesTheFirstKeyAnswer(client._transport)
    ref, _ = await _create(env)
    assert [(k["name"], k["public_key"]) for k in env.ssh_keys()] == [(LABEL, KEY)]
    instance = env.world.get(P, ref.instance_id)
    assert instance is not None and instance.authorized_keys == [KEY]


async def test_offers_that_cannot_be_read_at_all_are_a_provider_bug_not_an_empty_menu(
    env: Env,
) -> None:
    env.answer("instance_types", 200, {"data": {"gpu_1x_x": {"instance_type": "odd"}}})
    with pytest.raises(ProviderBug, match="none of the 1 instance types could be read"):
        await env.provider.list_offers()
    env.answer("instance_types", 200, {"data": {}})
    assert list(await env.provider.list_offers()) == []  # sold out everywhere is not a bug
