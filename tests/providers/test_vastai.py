"""The Vast.ai adapter: parsing on the reference's JSON, then every path against the simulator.

Parsing tests use the examples of provider-apis.md §1.3 and §1.6 written out literally. Contract
tests talk to the simulated Vast API over loopback HTTP on a fake clock: nothing sleeps in real
time; calls that wait (Retry-After, the rate limit, key-attach rounds) are driven by advancing
the clock while they are parked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.models import Offer, OfferQuery
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
from gpushop_tui.providers.vastai import (
    IMAGE,
    SEARCH_DISK_GB,
    SEARCH_LIMIT,
    VastAi,
    normalize_offer,
    normalize_offers,
    parse_instance,
    place_of,
    quota_exhausted,
    search_body,
)
from gpushop_tui.sim.faults import HttpFault, vast_search_quota_exhausted
from gpushop_tui.sim.http import serve
from gpushop_tui.sim.vastai import build_app
from gpushop_tui.sim.world import SimInstance, World

T = TypeVar("T")
INSTALL = "ab12cd34"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBxq8vTestKeyOnlyForTests test@gpushop\n"
FETCHED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# provider-apis.md §1.3: an offer with all commonly present fields.
REFERENCE_OFFER = r"""
{
  "id": 18422097, "ask_contract_id": 18422097, "bundle_id": 1025337761, "bundled_results": null,
  "machine_id": 31288, "host_id": 112045, "hosting_type": 0, "cluster_id": null,
  "gpu_name": "RTX 4090", "num_gpus": 2, "gpu_ram": 24564, "gpu_total_ram": 49128,
  "gpu_frac": 0.25, "gpu_ids": [301, 302], "gpu_arch": "nvidia", "compute_cap": 890,
  "gpu_mem_bw": 917.8, "gpu_lanes": 16, "gpu_max_power": 450, "gpu_max_temp": 83,
  "gpu_display_active": false, "bw_nvlink": 0.0, "total_flops": 164.9,
  "cpu_name": "AMD EPYC 7B13 64-Core Processor", "cpu_arch": "amd64", "cpu_cores": 128,
  "cpu_cores_effective": 32.0, "cpu_ghz": 3.0, "cpu_ram": 515897, "has_avx": 1,
  "mobo_name": "H12SSL-i", "pci_gen": 4.0, "pcie_bw": 24.7,
  "disk_name": "Samsung SSD 990 PRO 4TB", "disk_space": 411.3, "disk_bw": 5123.4,
  "inet_up": 852.1, "inet_down": 1720.4, "inet_up_cost": 0.0025, "inet_down_cost": 0.0025,
  "internet_up_cost_per_tb": 2.5, "internet_down_cost_per_tb": 2.5,
  "direct_port_count": 199, "static_ip": true, "public_ipaddr": "203.0.113.41",
  "geolocation": "Texas, US", "geolocode": 1121856,
  "driver_version": "550.127.05", "driver_vers": 550127005, "cuda_max_good": 12.4,
  "os_version": "22.04", "vms_enabled": false,
  "dph_base": 0.70, "dph_total": 0.7069, "dph_total_adj": 0.7069, "min_bid": 0.3712,
  "storage_cost": 0.10, "storage_total_cost": 0.000694, "vram_costperhour": 0.0000144,
  "credit_discount_max": 0.4, "discount_rate": 0.0, "discounted_hourly": 0.0,
  "discounted_dph_total": 0.7069,
  "search":   {"gpuCostPerHour": 0.70, "diskHour": 0.0069, "totalHour": 0.7069,
               "discountTotalHour": 0.0, "discountedTotalPerHour": 0.7069},
  "instance": {"gpuCostPerHour": 0.70, "diskHour": 0.0069, "totalHour": 0.7069,
               "discountTotalHour": 0.0, "discountedTotalPerHour": 0.7069},
  "dlperf": 131.2, "dlperf_per_dphtotal": 185.6, "flops_per_dphtotal": 233.3, "score": 612.4,
  "reliability": 0.9971, "reliability2": 0.9971, "reliability_mult": 0.99,
  "expected_reliability": 0.99,
  "verification": "verified", "vericode": 1, "is_vm_deverified": false, "external": false,
  "rentable": true, "rented": false, "is_bid": false, "resource_type": "gpu",
  "start_date": 1760000000.83, "end_date": 1773014400.0, "duration": 11433599.2,
  "time_remaining": "4 Mon 12 D 8 Hr", "time_remaining_isbid": "", "rn": 1,
  "avail_vol_ask_id": null, "avail_vol_dph": null, "avail_vol_size": null,
  "nw_disk_min_bw": null, "nw_disk_max_bw": null, "nw_disk_avg_bw": null,
  "logo": "/static/logos/vastai_small2.png", "webpage": null, "hostname": null, "pending_count": 0
}
"""

# provider-apis.md §1.6: the instance object, running, with direct SSH mapped.
REFERENCE_INSTANCE = r"""
{
  "id": 12345678, "machine_id": 31288, "host_id": 112045, "bundle_id": 1025337761,
  "label": "job-7f3a", "template_id": null, "template_hash_id": null, "template_name": null,
  "actual_status": "running", "intended_status": "running", "cur_state": "running",
  "next_state": "running",
  "status_msg": "success, running pytorch/pytorch_2.4.0-cuda12.4-cudnn9-runtime/ssh",
  "image_uuid": "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime", "image_args": [],
  "image_runtype": "ssh_direc ssh_proxy",
  "extra_env": [["-p 8000:8000", "1"], ["HF_HOME", "/workspace/hf"]],
  "onstart": "echo ready > /root/ready", "jupyter_token": "df77e270…",
  "ssh_host": "ssh4.vast.ai", "ssh_idx": "4", "ssh_port": 35678, "machine_dir_ssh_port": 40001,
  "public_ipaddr": "203.0.113.41", "local_ipaddrs": "10.0.0.5 172.17.0.1 \n",
  "ports": {"22/tcp":  [{"HostIp":"0.0.0.0","HostPort":"40123"},
                       {"HostIp":"::","HostPort":"40123"}],
            "8000/tcp":[{"HostIp":"0.0.0.0","HostPort":"40124"},
                        {"HostIp":"::","HostPort":"40124"}],
            "8080/tcp":[{"HostIp":"0.0.0.0","HostPort":"40125"}]},
  "direct_port_count": 3, "direct_port_start": 40123, "direct_port_end": 40126, "static_ip": true,
  "geolocation": "Texas, US", "country_code": null,
  "gpu_name": "RTX 4090", "num_gpus": 2, "gpu_ram": 24564, "gpu_totalram": 24564, "gpu_frac": 0.25,
  "gpu_util": 0.0, "gpu_temp": 38.0, "gpu_arch": "nvidia", "gpu_lanes": 16, "gpu_mem_bw": 917.8,
  "bw_nvlink": 0.0, "cpu_name": "AMD EPYC 7B13 64-Core Processor", "cpu_arch": "amd64",
  "cpu_cores": 128, "cpu_cores_effective": 32.0, "cpu_ram": 515897, "cpu_util": 0.01,
  "mem_limit": 128.9, "mem_usage": 2.1, "vmem_usage": 0.5,
  "disk_name": "Samsung SSD 990 PRO 4TB", "disk_space": 40.0, "disk_bw": 5123.4,
  "disk_util": 0.05, "disk_usage": 0.05, "inet_up": 852.1, "inet_down": 1720.4,
  "dph_base": 0.70, "dph_total": 0.7056, "storage_cost": 0.10, "storage_total_cost": 0.0056,
  "vram_costperhour": 0.0000144, "min_bid": 0.3712, "is_bid": false,
  "search": {"gpuCostPerHour": 0.70, "diskHour": 0.0056, "totalHour": 0.7056,
             "discountTotalHour": 0, "discountedTotalPerHour": 0.7056},
  "instance": {"gpuCostPerHour": 0.70, "diskHour": 0.0056, "totalHour": 0.7056,
               "discountTotalHour": 0, "discountedTotalPerHour": 0.7056},
  "credit_balance": null, "credit_discount": null, "credit_discount_max": 0.4,
  "reliability2": 0.9971, "verification": "verified", "rentable": true, "external": false,
  "dlperf": 131.2, "dlperf_per_dphtotal": 185.9, "flops_per_dphtotal": 233.7, "total_flops": 164.9,
  "score": null, "os_version": "22.04", "mobo_name": "H12SSL-i", "pci_gen": 4.0, "pcie_bw": 24.7,
  "driver_version": "550.127.05", "cuda_max_good": 12.4, "compute_cap": 890,
  "start_date": 1760003601.52, "end_date": 1773014400.0, "duration": 13011.8, "uptime_mins": 12.3,
  "client_run_time": 1.2, "host_run_time": 1.0,
  "time_remaining": "4 Mon 12 D 8 Hr", "time_remaining_isbid": "",
  "volume_info": [], "webpage": null, "logo": "/static/logos/vastai_small2.png"
}
"""


def offer_row(**changes: Any) -> dict[str, Any]:
    """The reference offer, with some fields changed (a value of ... deletes the field)."""
    row = json.loads(REFERENCE_OFFER)
    for key, value in changes.items():
        if value is ...:
            row.pop(key, None)
        else:
            row[key] = value
    return row


def instance_row(**changes: Any) -> dict[str, Any]:
    row = json.loads(REFERENCE_INSTANCE)
    row.update(changes)
    return row


def json_fault(endpoint: str, status: int, body: Any, times: int | None = None) -> HttpFault:
    return HttpFault(
        provider="vastai",
        endpoint=endpoint,
        status=status,
        body=json.dumps(body),
        media_type="application/json",
        times=times,
    )


# --------------------------------------------------------------------------- search body


def test_search_body_without_a_query_fetches_the_whole_rentable_market() -> None:
    assert search_body(None, 50) == {
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "verified": {"eq": True},
        "type": "on-demand",
        "order": [["dph_total", "asc"]],
        "limit": 3000,
        "allocated_storage": 50.0,
    }
    assert SEARCH_LIMIT == 3000


VAST_NAMES = (
    "A100 PCIE", "A100 SXM4", "H100 NVL", "H100 PCIE", "H100 SXM", "H200", "Q RTX 8000",
    "RTX 3090", "RTX 4090", "RTX 6000Ada", "Tesla V100", "Some Future Card",
)  # fmt: skip


def test_search_body_pushes_down_what_the_query_says() -> None:
    query = OfferQuery(
        gpu="RTX 4090",
        min_gpus=2,
        max_gpus=4,
        min_vram_gb=24,
        max_vram_gb=48,
        min_price=0.2,
        max_price=1.5,
        min_reliability=0.98,
        min_cuda=12.4,
        region="us,CA",
        strict=("min_gpus", "max_price"),
    )
    body = search_body(query, 80.0, VAST_NAMES)
    assert body["gpu_name"] == {"in": ["RTX 4090"]}
    assert body["num_gpus"] == {"gte": 2, "lte": 4}
    assert all(type(v) is int for v in body["num_gpus"].values())  # numbers, never "2"
    assert type(body["limit"]) is int
    assert body["dph_total"] == {"gte": 0.2, "lte": 1.5}  # strict bounds stay inclusive
    assert body["reliability2"] == {"gte": 0.98}
    assert body["cuda_max_good"] == {"gte": 12.4}
    # MB with gpuhunt's 7 % either side: a 24 GB card reports 24564, never exactly 24576
    assert body["gpu_ram"] == {"gte": pytest.approx(24 * 1024 * 0.93), "lte": 48 * 1024 * 1.07}
    assert body["geolocation"] == {"in": ["US", "CA"]}
    assert body["allocated_storage"] == 80.0
    assert body["type"] == "on-demand"
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize(
    ("gpu", "names"),
    [
        ("h100", ["H100 NVL", "H100 PCIE", "H100 SXM"]),
        ("H100 SXM", ["H100 SXM"]),
        ("a100 80gb", ["A100 PCIE", "A100 SXM4"]),  # which A100 PCIE it is, gpu_ram decides
        ("rtx 8000,v100", ["Q RTX 8000", "Tesla V100"]),
        ("6000 ada", ["RTX 6000Ada"]),
        ("future", ["Some Future Card"]),  # unknown names are matched as Vast spells them
    ],
)
def test_the_gpu_text_goes_as_every_vast_name_it_can_match(gpu: str, names: list[str]) -> None:
    body = search_body(OfferQuery(gpu=gpu), 50, VAST_NAMES)
    assert body["gpu_name"] == {"in": names}


def test_what_cannot_be_pushed_down_is_left_to_the_local_filter() -> None:
    # no known name matches, or the names are not known: the GPU is filtered locally
    assert "gpu_name" not in search_body(OfferQuery(gpu="b300"), 50, VAST_NAMES)
    assert "gpu_name" not in search_body(OfferQuery(gpu="4090"), 50, ())
    # a region that is not a country code matches free text, which Vast cannot filter on
    assert "geolocation" not in search_body(OfferQuery(region="us,texas"), 50, VAST_NAMES)


def test_search_prices_the_disk_a_create_asks_for() -> None:
    assert CreateSpec(label="x", ssh_public_key="k").disk_gb == SEARCH_DISK_GB


# --------------------------------------------------------------------------- offers


def test_reference_offer_normalizes() -> None:
    row = offer_row()
    offer = normalize_offer(row, FETCHED)
    assert offer.id == "vastai:18422097" and offer.provider_offer_id == "18422097"
    assert offer.provider == "vastai"
    assert (offer.gpu_name, offer.gpu_count, offer.vram_gb) == ("RTX 4090", 2, 24.0)
    assert offer.price_per_hour == 0.7069  # dph_total: storage included
    assert offer.vcpus == 32.0
    assert offer.ram_gb == pytest.approx(515897 * 32 / 128 / 1024)  # the offer's share, GB
    assert offer.disk_gb == 411.3
    assert (offer.region, offer.country) == ("Texas, US", "US")
    assert offer.reliability == 0.9971
    assert offer.cuda == 12.4
    assert offer.inet_down_mbps == 1720.4
    assert offer.interruptible is False
    assert offer.fetched_at == FETCHED
    assert offer.raw == row and offer.raw["search"]["totalHour"] == 0.7069


@pytest.mark.parametrize(
    ("name", "ram_mb", "canonical", "vram"),
    [
        ("RTX 5090", 32607, "RTX 5090", 32.0),  # not 31 (prior-art §4.1)
        ("RTX 4090", 24564, "RTX 4090", 24.0),
        ("A100 SXM4", 81920, "A100 80GB SXM", 80.0),
        ("A100 PCIE", 40960, "A100 40GB PCIe", 40.0),
        ("H100 NVL", 95830, "H100 NVL", 94.0),
        ("Tesla V100", 32768, "V100 32GB", 32.0),
        ("RTX 6000Ada", 49140, "RTX 6000 Ada", 48.0),
        ("Q RTX 8000", 49152, "RTX 8000", 48.0),
        ("Zephyr X9", 24564, "Zephyr X9", 24.0),  # unknown: kept, VRAM rounded from MB
    ],
)
def test_vram_is_the_cards_real_size(name: str, ram_mb: int, canonical: str, vram: float) -> None:
    offer = normalize_offer(offer_row(gpu_name=name, gpu_ram=ram_mb), FETCHED)
    assert (offer.gpu_name, offer.vram_gb) == (canonical, vram)


@pytest.mark.parametrize(
    ("text", "region", "country"),
    [
        ("Texas, US", "Texas, US", "US"),
        ("Norway", "Norway", "NO"),
        (", CN", "CN", "CN"),
        (
            "Yutakachō, Shinagawa District, Tokyo, JP",
            "Yutakachō, Shinagawa District, Tokyo, JP",
            "JP",
        ),
        ("Quebec, ca", "Quebec, ca", "CA"),
        ("England, UK", "England, UK", "GB"),
        ("Atlantis", "Atlantis", None),
        ("Texas, U5", "Texas, U5", None),
        (" , ", None, None),
        ("", None, None),
    ],
)
def test_country_from_free_text_geolocation(
    text: str, region: str | None, country: str | None
) -> None:
    assert place_of(text) == (region, country)


@pytest.mark.parametrize("value", [None, 42, ["US"]])
def test_missing_or_odd_geolocation_is_none(value: Any) -> None:
    offer = normalize_offer(offer_row(geolocation=value), FETCHED)
    assert (offer.region, offer.country) == (None, None)


def test_reliability_falls_back_and_unknowns_stay_none() -> None:
    offer = normalize_offer(offer_row(reliability2=None, reliability=0.91), FETCHED)
    assert offer.reliability == 0.91
    bare = normalize_offer(
        offer_row(reliability2=..., reliability=..., cuda_max_good=..., cpu_cores=None), FETCHED
    )
    assert (bare.reliability, bare.cuda, bare.ram_gb) == (None, None, None)
    assert normalize_offer(offer_row(id=..., ask_contract_id=555), FETCHED).id == "vastai:555"


def test_bad_rows_lose_a_bad_optional_field_or_are_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows: list[Any] = [
        offer_row(id=1),
        offer_row(id=2, reliability2=1.7, inet_down=-5),  # optional and wrong: None
        offer_row(id=3, dph_total=None),  # no price: not an offer
        offer_row(id=4, num_gpus=0),
        offer_row(id=..., ask_contract_id=...),
        "not an object",
        offer_row(id=7, gpu_name=None),  # no GPU name: nothing to show
    ]
    offers = normalize_offers(rows, FETCHED)
    assert [o.id for o in offers] == ["vastai:1", "vastai:2"]
    assert (offers[1].reliability, offers[1].inet_down_mbps) == (None, None)
    assert offers[1].cuda == 12.4 and offers[1].raw["reliability2"] == 1.7
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["vastai: 5 of 7 offers could not be read"]


def test_offers_none_of_which_can_be_read_are_a_bug() -> None:
    with pytest.raises(ProviderBug):
        normalize_offers([{"id": 1}, {"id": 2}], FETCHED)
    with pytest.raises(ProviderBug):
        normalize_offer(offer_row(dph_total="free"), FETCHED)
    assert normalize_offers([], FETCHED) == []


# --------------------------------------------------------------------------- 429 forms


def test_only_the_daily_quota_429_is_final() -> None:
    now = datetime(2026, 5, 3, 23, 59, 59, tzinfo=UTC)
    quota = httpx.Response(
        429, json={"error": "search_quota_exceeded", "msg": "Daily search quota exceeded."}
    )
    final = quota_exhausted(quota, now)
    assert isinstance(final, RateLimited)
    assert final.until == datetime(2026, 5, 4, tzinfo=UTC)
    assert "2026-05-04 00:00 UTC" in final.message
    at_midnight = quota_exhausted(quota, datetime(2026, 5, 4, tzinfo=UTC))
    assert at_midnight is not None and at_midnight.until == datetime(2026, 5, 5, tzinfo=UTC)
    for ordinary in (
        httpx.Response(429, text="API requests too frequent"),
        httpx.Response(429, json={"detail": "API requests too frequent endpoint threshold=4.5"}),
        httpx.Response(429, json={"success": False, "error": "rate_limit_exceeded", "msg": "x"}),
    ):
        assert quota_exhausted(ordinary, now) is None


# --------------------------------------------------------------------------- instances


def test_reference_instance_parses_with_direct_ssh() -> None:
    row = instance_row()
    status = parse_instance(row)
    assert status.provider == "vastai" and status.instance_id == "12345678"
    assert status.label == "job-7f3a"
    assert (status.state, status.running) == ("running", True)
    assert (status.ssh_host, status.ssh_port) == ("203.0.113.41", 40123)
    assert status.price_per_hour == 0.7056
    assert status.started_at == datetime.fromtimestamp(1760003601.52, UTC)
    assert status.raw == row


def test_instance_without_mapped_ports_uses_the_proxy() -> None:
    loading = parse_instance(instance_row(actual_status="loading", ports=None))
    assert (loading.state, loading.running) == ("loading", False)
    assert (loading.ssh_host, loading.ssh_port) == ("ssh4.vast.ai", 35678)
    jupyter = parse_instance(instance_row(ports={}, image_runtype="jupyter_direc ssh_proxy"))
    assert (jupyter.ssh_host, jupyter.ssh_port) == ("ssh4.vast.ai", 35679)
    fresh = parse_instance(
        instance_row(actual_status=None, ports=None, ssh_host=None, ssh_port=None, label="")
    )
    assert (fresh.state, fresh.running, fresh.label) == ("creating", False, None)
    assert (fresh.ssh_host, fresh.ssh_port) == (None, None)
    stopped = parse_instance(instance_row(actual_status="stopped", start_date=None))
    assert (stopped.running, stopped.started_at) == (False, None)
    scheduling = parse_instance(
        instance_row(actual_status="stopped", intended_status="running", cur_state="stopped")
    )  # a start waiting for the host's GPUs: the console's "Scheduling"
    assert (scheduling.state, scheduling.running, scheduling.stopped) == (
        "scheduling",
        False,
        False,
    )
    by_user = parse_instance(instance_row(actual_status="stopped", intended_status="stopped"))
    assert (by_user.state, by_user.running, by_user.stopped) == ("stopped", False, True)
    assert not parse_instance(instance_row()).stopped and not loading.stopped


def test_published_ports_and_the_public_address_are_read_from_the_docker_style_map() -> None:
    status = parse_instance(instance_row())
    assert status.public_ip == "203.0.113.41"
    assert status.ports == {22: 40123, 8000: 40124, 8080: 40125}
    odd = {
        "8000/tcp": [{"HostIp": "::", "HostPort": ""}, {"HostIp": "0.0.0.0", "HostPort": "41000"}],
        "8081/udp": [{"HostIp": "0.0.0.0", "HostPort": "41001"}],
        "9000/tcp": None,
        "http": [{"HostPort": "41002"}],
    }
    assert parse_instance(instance_row(ports=odd)).ports == {8000: 41000}
    loading = parse_instance(instance_row(actual_status="loading", ports=None, public_ipaddr=""))
    assert (loading.ports, loading.public_ip) == ({}, None)


def test_unreadable_instances_are_a_bug() -> None:
    with pytest.raises(ProviderBug):
        parse_instance(instance_row(id=None))
    with pytest.raises(ProviderBug):
        parse_instance(["not", "an", "object"])
    with pytest.raises(ProviderBug):
        parse_instance(instance_row(ports=None, ssh_port=70000))


# --------------------------------------------------------------------------- the simulator


@dataclass
class Sim:
    world: World
    clock: FakeClock
    origin: str
    vast: VastAi = field(init=False)

    def connect(self, key: str | None = None, base: str = "/api/v0", **kw: Any) -> VastAi:
        """Another adapter on the same simulator (test-wide retry policy, no rate limit)."""
        kw.setdefault("rate", RateLimit(None))
        return VastAi.connect(
            self.origin + base,
            key or self.world.keys["vastai"],
            INSTALL,
            clock=self.clock,
            retry=RetryPolicy(attempts=3, base_s=0.0),
            **kw,
        )

    def fault(self, fault: HttpFault) -> HttpFault:
        self.world.faults.add(fault)
        return fault

    async def offer(self, gpu: str = "RTX 4090") -> Offer:
        """A cheap rentable offer of `gpu` that allows direct SSH."""
        offers = await self.vast.list_offers()
        return next(o for o in offers if o.gpu_name == gpu and o.raw["direct_port_count"] >= 1)

    async def rent(self, session: str = "sess0001") -> str:
        offer = await self.offer()
        ref = await self.vast.create(offer, CreateSpec(label_for(INSTALL, session), KEY))
        return ref.instance_id

    def instance(self, instance_id: str) -> SimInstance:
        found = self.world.get("vastai", instance_id)
        assert found is not None
        return found


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    served = await serve(build_app(world))
    env = Sim(world, clock, served.origin)
    env.vast = env.connect()
    yield env
    await env.vast.aclose()
    await served.stop()


async def parked(clock: FakeClock, task: asyncio.Future[Any], sleepers: int = 1) -> None:
    """Let `task` run (its HTTP calls included) until it finishes or `sleepers` wait on `clock`."""
    for _ in range(200_000):
        if task.done() or clock.sleeping >= sleepers:
            return
        await asyncio.sleep(0)
    raise AssertionError("the call neither finished nor parked on the clock")


async def drive(clock: FakeClock, call: Awaitable[T], step_s: float = 1.0) -> T:
    """Await `call`, moving the fake clock on by `step_s` whenever it waits on it."""
    task = asyncio.ensure_future(call)
    for _ in range(600):
        await parked(clock, task)
        if task.done():
            return task.result()
        await clock.advance(step_s)
    raise AssertionError("the call did not finish in 600 steps of fake time")


# --------------------------------------------------------------------------- offers


async def test_list_offers_loses_no_row_of_the_search(sim: Sim) -> None:
    offers = await sim.vast.list_offers()
    async with httpx.AsyncClient(base_url=sim.origin) as client:  # the same search, by hand
        answer = await client.post("/api/v0/bundles/", json=search_body(None, SEARCH_DISK_GB))
    rows = answer.json()["offers"]
    assert offers and [o.id for o in offers] == [f"vastai:{row['id']}" for row in rows]
    assert len(rows) < SEARCH_LIMIT  # the limit did not cut the market


async def test_list_offers_normalizes_every_row(sim: Sim) -> None:
    offers = await sim.vast.list_offers()
    assert len(offers) > 1000 and len({o.id for o in offers}) == len(offers)
    assert all(o.id.startswith("vastai:") and o.fetched_at == sim.clock.now() for o in offers)
    assert all(o.raw["rentable"] and o.raw["verified"] and not o.raw["rented"] for o in offers)
    for offer in offers:
        storage = SEARCH_DISK_GB * offer.raw["storage_cost"] / 720
        assert offer.price_per_hour == pytest.approx(offer.raw["dph_base"] + storage, abs=2e-6)
        assert offer.price_per_hour == offer.raw["dph_total"]
        assert offer.country is not None and offer.interruptible is False
    prices = [o.price_per_hour for o in offers]
    assert prices == sorted(prices)
    vram = {o.gpu_name: o.vram_gb for o in offers}
    assert vram["RTX 4090"] == 24 and vram["RTX 5090"] == 32 and vram["A100 80GB SXM"] == 80
    assert vram["H100 SXM"] == 80 and vram["H200"] == 141 and vram["RTX 6000 Ada"] == 48
    assert {o.country for o in offers if o.region == "Norway"} == {"NO"}


async def test_list_offers_pushes_the_query_down(sim: Sim) -> None:
    everything = await sim.vast.list_offers()
    query = OfferQuery(gpu="4090", min_gpus=2, max_price=3.0, min_reliability=0.95, min_cuda=12.4)
    some = await sim.vast.list_offers(query)
    assert 0 < len(some) < len(everything)
    assert all(o.gpu_count >= 2 and o.price_per_hour <= 3.0 for o in some)
    assert all((o.reliability or 0) >= 0.95 and (o.cuda or 0) >= 12.4 for o in some)
    assert {o.gpu_name for o in some} == {"RTX 4090"}
    assert not everything.truncated and not some.truncated


async def test_a_capped_search_says_so_and_a_narrowed_one_finds_every_match() -> None:
    clock = FakeClock()
    world = World(seed=1, clock=clock, vast_machines=8000)  # over 20,000 offers
    served = await serve(build_app(world))
    env = Sim(world, clock, served.origin)
    vast = env.connect()
    try:
        everything = await vast.list_offers()
        assert len(everything) == SEARCH_LIMIT and everything.truncated
        h100 = await vast.list_offers(OfferQuery(gpu="h100"))
        async with httpx.AsyncClient(base_url=served.origin) as client:
            market = (await client.post("/api/v0/bundles/", json={"limit": 10**6})).json()
            body = {**search_body(None, SEARCH_DISK_GB), "limit": 10**6}
            rows = (await client.post("/api/v0/bundles/", json=body)).json()["offers"]
        assert len(market["offers"]) > 20_000
        expected = sorted(f"vastai:{r['id']}" for r in rows if r["gpu_name"].startswith("H100"))
        assert sorted(o.id for o in h100) == expected and len(expected) > 2000
        assert not h100.truncated
    finally:
        await vast.aclose()
        await served.stop()


async def test_plain_text_429_is_backed_off_and_retried(sim: Sim) -> None:
    sim.fault(
        HttpFault(
            provider="vastai", endpoint="search", status=429, body="API requests too frequent",
            times=2,
        )
    )  # fmt: skip
    assert await sim.vast.list_offers()
    assert sim.world.faults.http == []


async def test_retry_after_is_honoured(sim: Sim) -> None:
    sim.fault(
        HttpFault(
            provider="vastai", endpoint="search", status=429, body="", times=1,
            headers={"Retry-After": "7"},
        )
    )  # fmt: skip
    task = asyncio.ensure_future(sim.vast.list_offers())
    await parked(sim.clock, task)
    await sim.clock.advance(6.5)
    assert not task.done()
    await sim.clock.advance(0.5)
    assert await task


async def test_daily_search_quota_is_final_until_utc_midnight(sim: Sim) -> None:
    fault = sim.fault(vast_search_quota_exhausted(times=2))
    with pytest.raises(RateLimited) as caught:
        await sim.vast.list_offers()
    assert caught.value.until == datetime(2026, 1, 2, tzinfo=UTC)  # the clock starts 2026-01-01
    assert fault.times == 1  # asked once, not retried


async def test_5xx_is_retried_then_succeeds(sim: Sim) -> None:
    sim.fault(HttpFault(provider="vastai", endpoint="search", status=503, times=2))
    assert await sim.vast.list_offers()
    sim.fault(HttpFault(provider="vastai", endpoint="search", status=502))
    with pytest.raises(TransientError):
        await sim.vast.list_offers()


@pytest.mark.parametrize("kind", ["malformed", "empty"])
async def test_search_answer_not_json_is_a_bug(sim: Sim, kind: str) -> None:
    sim.fault(HttpFault(provider="vastai", endpoint="search", kind=kind))  # type: ignore[arg-type]
    with pytest.raises(ProviderBug):
        await sim.vast.list_offers()


@pytest.mark.parametrize("body", [{"offers": None}, {"bundles": []}, ["offers"]])
async def test_search_answer_of_another_shape_is_a_bug(sim: Sim, body: Any) -> None:
    sim.fault(json_fault("search", 200, body))
    with pytest.raises(ProviderBug):
        await sim.vast.list_offers()


# --------------------------------------------------------------------------- create


async def test_create_rents_hands_the_id_on_first_then_attaches_the_key(sim: Sim) -> None:
    offer = await sim.offer()
    label = label_for(INSTALL, "sess0001")
    seen: list[tuple[str, list[str] | None]] = []

    async def on_instance(instance_id: str) -> None:
        instance = sim.world.get("vastai", instance_id)
        seen.append((instance_id, list(instance.authorized_keys) if instance else None))

    ref = await sim.vast.create(offer, CreateSpec(label, KEY), on_instance)
    assert (ref.provider, ref.label) == ("vastai", label)
    assert seen == [(ref.instance_id, [])]  # known at once, before the key step
    instance = sim.world.get("vastai", ref.instance_id)
    assert instance is not None and instance.offer_id == offer.provider_offer_id
    assert instance.authorized_keys == [KEY.strip()]
    assert instance.label == label
    assert instance.extra["image"] == IMAGE and instance.extra["disk"] == SEARCH_DISK_GB
    assert instance.extra["runtype"] == "ssh_direc ssh_proxy"
    assert instance.price_per_hour == pytest.approx(offer.price_per_hour, abs=2e-6)


async def test_create_sends_the_specs_image_disk_and_onstart(sim: Sim) -> None:
    offer = await sim.offer()
    proxied = offer.model_copy(update={"raw": {**offer.raw, "direct_port_count": 0}})
    spec = CreateSpec(
        label_for(INSTALL, "sess0002"), KEY, image="pytorch/pytorch", disk_gb=20, onstart="echo hi"
    )
    ref = await sim.vast.create(proxied, spec)
    extra = sim.instance(ref.instance_id).extra
    assert (extra["image"], extra["disk"], extra["onstart"]) == ("pytorch/pytorch", 20.0, "echo hi")
    assert extra["runtype"] == "ssh_proxy"  # no open ports on the host: Vast's proxy only


async def test_create_asks_to_publish_the_specs_ports_and_only_those(sim: Sim) -> None:
    published = await sim.vast.create(
        await sim.offer(), CreateSpec(label_for(INSTALL, "sess0003"), KEY, ports=(8000,))
    )
    assert sim.instance(published.instance_id).extra["extra_env"] == [["-p 8000:8000", "1"]]
    plain = await sim.vast.create(
        await sim.offer(), CreateSpec(label_for(INSTALL, "sess0004"), KEY)
    )
    assert sim.instance(plain.instance_id).extra["extra_env"] == []


async def test_a_taken_offer_is_gone_with_410(sim: Sim) -> None:
    offer = await sim.offer()
    await sim.vast.create(offer, CreateSpec(label_for(INSTALL, "sess0001"), KEY))
    with pytest.raises(OfferGone) as caught:
        await sim.vast.create(offer, CreateSpec(label_for(INSTALL, "sess0002"), KEY))
    assert caught.value.status == 410  # cancel_unavail was sent
    assert caught.value.instance_id is None and len(sim.world.live("vastai")) == 1


async def test_an_unknown_offer_is_gone(sim: Sim) -> None:
    offer = (await sim.offer()).model_copy(update={"id": "vastai:1"})
    with pytest.raises(OfferGone) as caught:
        await sim.vast.create(offer, CreateSpec(label_for(INSTALL, "sess0001"), KEY))
    assert caught.value.status == 404 and "no_such_ask" in caught.value.message


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"success": False, "error": "no_such_ask", "msg": "error 400: no_such_ask gone"}),
        (
            403,
            {
                "success": False,
                "error": "invalid_args",
                "msg": "error 403/3586: Offer 1234567 is not your own. Hosts can only rent their"
                " own machines.",
                "ask_id": 1234567,
            },
        ),
    ],
)
async def test_stale_and_foreign_offers_are_gone(sim: Sim, status: int, body: Any) -> None:
    offer = await sim.offer()
    sim.fault(json_fault("create", status, body))
    with pytest.raises(OfferGone):
        await sim.vast.create(offer, CreateSpec(label_for(INSTALL, "sess0001"), KEY))


async def test_create_with_a_bad_key_is_an_auth_error(sim: Sim) -> None:
    offer = await sim.offer()
    bad = sim.connect(key="wrong")
    with pytest.raises(AuthError):
        await bad.create(offer, CreateSpec(label_for(INSTALL, "sess0001"), KEY))
    await bad.aclose()
    assert sim.world.live("vastai") == []


async def test_other_create_refusals_carry_vasts_message(sim: Sim) -> None:
    offer = await sim.offer()
    sim.world.credit = 0
    with pytest.raises(ProviderError) as caught:
        await sim.vast.create(offer, CreateSpec(label_for(INSTALL, "sess0001"), KEY))
    assert type(caught.value) is ProviderError and caught.value.status == 400
    assert "No credit or billing method" in caught.value.message


async def test_5xx_on_create_is_ambiguous_and_not_retried(sim: Sim) -> None:
    offer = await sim.offer()
    fault = sim.fault(HttpFault(provider="vastai", endpoint="create", status=500, times=2))
    with pytest.raises(TransientError) as caught:
        await sim.vast.create(offer, CreateSpec(label_for(INSTALL, "sess0001"), KEY))
    assert caught.value.ambiguous is True
    assert fault.times == 1  # one request only


@pytest.mark.parametrize(
    "fault",
    [
        HttpFault(provider="vastai", endpoint="create", kind="malformed"),
        json_fault("create", 200, {"success": True}),
        json_fault("create", 200, {"success": True, "new_contract": 0}),
    ],
)
async def test_create_answer_without_an_instance_id_is_ambiguous(
    sim: Sim, fault: HttpFault
) -> None:
    offer = await sim.offer()
    sim.fault(fault)
    with pytest.raises(TransientError) as caught:
        await sim.vast.create(offer, CreateSpec(label_for(INSTALL, "sess0001"), KEY))
    assert caught.value.ambiguous is True


async def test_a_contract_made_but_refused_carries_the_instance(sim: Sim) -> None:
    offer = await sim.offer()
    sim.fault(json_fault("create", 200, {"success": False, "new_contract": 777, "msg": "low bid"}))
    seen: list[str] = []

    async def on_instance(instance_id: str) -> None:
        seen.append(instance_id)

    with pytest.raises(CapacityError) as caught:
        await sim.vast.create(offer, CreateSpec(label_for(INSTALL, "sess0001"), KEY), on_instance)
    assert seen == ["777"] and caught.value.instance_id == "777"
    assert "low bid" in caught.value.message


async def test_key_attach_is_tried_again_after_a_pause(sim: Sim) -> None:
    offer = await sim.offer()
    sim.fault(HttpFault(provider="vastai", endpoint="attach_ssh", status=503, times=4))
    started = sim.clock.monotonic()
    spec = CreateSpec(label_for(INSTALL, "sess0001"), KEY)
    ref = await drive(sim.clock, sim.vast.create(offer, spec))
    assert sim.clock.monotonic() - started >= 5  # one pause between rounds
    assert sim.instance(ref.instance_id).authorized_keys == [KEY.strip()]


@pytest.mark.parametrize(
    "fault",
    [
        HttpFault(provider="vastai", endpoint="attach_ssh", status=503),
        json_fault("attach_ssh", 400, {"success": False, "error": "no_ssh_key", "msg": "No key"}),
        json_fault("attach_ssh", 403, {"success": False, "error": "auth_error", "msg": "nope"}),
    ],
)
async def test_key_attach_that_fails_carries_the_instance(sim: Sim, fault: HttpFault) -> None:
    offer = await sim.offer()
    sim.fault(fault)
    seen: list[str] = []

    async def on_instance(instance_id: str) -> None:
        seen.append(instance_id)

    spec = CreateSpec(label_for(INSTALL, "sess0001"), KEY)
    with pytest.raises(ProviderError) as caught:
        await drive(sim.clock, sim.vast.create(offer, spec, on_instance))
    assert len(seen) == 1 and caught.value.instance_id == seen[0]
    assert sim.world.get("vastai", seen[0]) is not None  # it exists, and bills
    assert "SSH key" in caught.value.message


# --------------------------------------------------------------------------- get


async def test_get_follows_the_instance_to_running_and_reads_our_label(sim: Sim) -> None:
    instance_id = await sim.rent("sess0001")
    first = await sim.vast.get(instance_id)
    assert first is not None and (first.state, first.running) == ("creating", False)
    assert (first.ssh_host, first.ssh_port) == (None, None)
    assert parse_label(first.label) == (INSTALL, "sess0001")
    assert first.started_at == sim.clock.now()
    sim.instance(instance_id).ssh_port = 2222
    await sim.clock.advance(1.5)
    loading = await sim.vast.get(instance_id)
    assert loading is not None and (loading.state, loading.running) == ("loading", False)
    await sim.clock.advance(2)
    running = await sim.vast.get(instance_id)
    assert running is not None and (running.state, running.running) == ("running", True)
    assert (running.ssh_host, running.ssh_port) == ("127.0.0.1", 2222)
    assert running.price_per_hour == sim.instance(instance_id).price_per_hour


async def test_get_reads_gone_only_when_vast_says_so(sim: Sim) -> None:
    assert await sim.vast.get("31999999") is None  # {"instances": null} with 200
    sim.fault(
        json_fault(
            "get",
            404,
            {"success": False, "error": "no_such_instance", "msg": "Instance 5 not found."},
        )
    )
    assert await sim.vast.get("5") is None
    sim.fault(json_fault("get", 404, {"success": False, "msg": "Instance 6 not found."}))
    assert await sim.vast.get("6") is None


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (HttpFault(provider="vastai", endpoint="get", status=404, body="Not Found"), ProviderBug),
        (json_fault("get", 404, {"detail": "Not Found"}), ProviderBug),
        (json_fault("get", 404, {"success": False, "msg": "Invalid user key"}), AuthError),
        (HttpFault(provider="vastai", endpoint="get", kind="malformed"), ProviderBug),
        (json_fault("get", 200, {"instance": {"id": 5}}), ProviderBug),
        (json_fault("get", 200, {"instances": {"id": 6}}), ProviderBug),  # not the one asked
        (json_fault("get", 200, {"instances": [{"id": 5}, {"id": 5}]}), ProviderBug),
        (HttpFault(provider="vastai", endpoint="get", status=503), TransientError),
    ],
)
async def test_get_never_reads_doubt_as_gone(
    sim: Sim, fault: HttpFault, error: type[Exception]
) -> None:
    sim.fault(fault)
    with pytest.raises(error):
        await sim.vast.get("5")


async def test_a_wrong_base_url_never_reads_as_gone(sim: Sim) -> None:
    wrong = sim.connect(base="/api/v9")
    with pytest.raises(ProviderBug):
        await wrong.get("5")
    with pytest.raises(ProviderBug):
        await wrong.destroy("5")
    with pytest.raises(ProviderError):
        await wrong.list_ours()
    await wrong.aclose()


async def test_get_retries_5xx(sim: Sim) -> None:
    instance_id = await sim.rent()
    sim.fault(HttpFault(provider="vastai", endpoint="get", status=502, times=2))
    assert (await sim.vast.get(instance_id)) is not None


# --------------------------------------------------------------------------- destroy


async def test_destroy_then_gone_then_destroy_again(sim: Sim) -> None:
    instance_id = await sim.rent()
    await sim.vast.destroy(instance_id)
    assert sim.world.live("vastai") == []
    assert await sim.vast.get(instance_id) is None
    await sim.vast.destroy(instance_id)  # 404 no_such_instance: already gone, fine


async def test_destroy_is_a_request_accepted_not_proof(sim: Sim) -> None:
    instance_id = await sim.rent()
    sim.world.faults.node("vastai").destroy_noop = 1
    await sim.vast.destroy(instance_id)
    assert await sim.vast.get(instance_id) is not None


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (HttpFault(provider="vastai", endpoint="destroy", status=500), TransientError),
        (json_fault("destroy", 200, {"success": False, "msg": "try later"}), ProviderError),
        (
            HttpFault(provider="vastai", endpoint="destroy", status=404, body="Not Found"),
            ProviderBug,
        ),
        (json_fault("destroy", 401, {"error": "auth_error", "msg": "no key"}), AuthError),
    ],
)
async def test_destroy_that_fails_raises(
    sim: Sim, fault: HttpFault, error: type[Exception]
) -> None:
    instance_id = await sim.rent()
    sim.fault(fault)
    with pytest.raises(error):
        await sim.vast.destroy(instance_id)
    assert len(sim.world.live("vastai")) == 1


# --------------------------------------------------------------------------- list_ours


async def test_list_ours_follows_pages_and_keeps_only_our_labels(sim: Sim) -> None:
    ours: dict[str, str] = {}
    for n in range(40):
        if n % 6 == 1:
            label = label_for("zz99yy88", f"other{n:04d}")  # another installation
        elif n % 6 == 3:
            label = ["", "job-7f3a", f"gpushop-{INSTALL}"][n % 3]
        else:
            label = label_for(INSTALL, f"sess{n:04d}")
        instance = await sim.world.create_instance(
            "vastai", instance_id=str(31_000_100 + n), offer_id=str(n), label=label,
            gpu_name="RTX 4090", gpu_count=1, vram_mb=24564, cuda=12.4, price_per_hour=0.4,
        )  # fmt: skip
        if (parse_label(label) or ("",))[0] == INSTALL:
            ours[instance.id] = label
    assert len(ours) > 25  # more than one page of ours alone
    listed = await sim.vast.list_ours()
    assert {s.instance_id: s.label for s in listed} == ours
    assert all(s.provider == "vastai" for s in listed)
    labelled = await sim.vast.list_labelled()
    assert {parse_label(s.label)[0] for s in labelled} == {INSTALL, "zz99yy88"}  # type: ignore[index]
    assert {s.instance_id for s in labelled} == set(ours) | {
        str(31_000_100 + n) for n in range(40) if n % 6 == 1
    }


async def test_list_ours_sees_instances_created_through_the_adapter(sim: Sim) -> None:
    assert await sim.vast.list_ours() == []
    instance_id = await sim.rent("sess0009")
    [status] = await sim.vast.list_ours()
    assert status.instance_id == instance_id
    assert parse_label(status.label) == (INSTALL, "sess0009")
    await sim.vast.destroy(instance_id)
    assert await sim.vast.list_ours() == []


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (HttpFault(provider="vastai", endpoint="list_v1", status=500), TransientError),
        (HttpFault(provider="vastai", endpoint="list_v1", kind="malformed"), ProviderBug),
        (HttpFault(provider="vastai", endpoint="list_v1", kind="empty"), ProviderBug),
        (json_fault("list_v1", 200, {"success": True}), ProviderBug),
        (json_fault("list_v1", 200, {"instances": None, "next_token": None}), ProviderBug),
        (json_fault("list_v1", 200, {"instances": ["x"], "next_token": None}), ProviderBug),
        (json_fault("list_v1", 200, {"instances": [], "next_token": "same"}), ProviderBug),
        (json_fault("list_v1", 200, {"instances": [], "next_token": 7}), ProviderBug),
        (json_fault("list_v1", 400, {"error": "invalid_token", "msg": "Bad token"}), ProviderError),
        (json_fault("list_v1", 200, {"success": False, "msg": "busy"}), ProviderError),
        (json_fault("list_v1", 403, {"error": "auth_error", "msg": "Invalid user key"}), AuthError),
    ],
)
async def test_a_list_in_doubt_raises_never_reads_empty(
    sim: Sim, fault: HttpFault, error: type[Exception]
) -> None:
    sim.fault(fault)
    with pytest.raises(error):
        await sim.vast.list_ours()


async def test_a_list_of_every_install_in_doubt_raises_never_reads_empty(sim: Sim) -> None:
    sim.fault(HttpFault(provider="vastai", endpoint="list_v1", kind="malformed"))
    with pytest.raises(ProviderBug):
        await sim.vast.list_labelled()


async def test_an_unreadable_row_of_ours_raises(sim: Sim) -> None:
    row = instance_row(label=label_for(INSTALL, "sess0001"), ssh_port=70000, ports=None)
    sim.fault(json_fault("list_v1", 200, {"instances": [row], "next_token": None}))
    with pytest.raises(ProviderBug):
        await sim.vast.list_ours()


# --------------------------------------------------------------------------- the rest


async def test_stop_and_start(sim: Sim) -> None:
    instance_id = await sim.rent()
    await sim.clock.advance(10)
    await sim.vast.stop(instance_id)
    stopped = await sim.vast.get(instance_id)
    assert stopped is not None and (stopped.state, stopped.running) == ("stopped", False)
    await sim.vast.start(instance_id)
    booting = await sim.vast.get(instance_id)
    assert booting is not None and (booting.state, booting.running) == ("loading", False)
    await sim.clock.advance(sim.instance(instance_id).boot_s)
    started = await sim.vast.get(instance_id)
    assert started is not None and started.running
    with pytest.raises(NotFound):
        await sim.vast.stop("42")


async def test_balance_and_check(sim: Sim) -> None:
    await sim.vast.check()
    assert await sim.vast.balance() == 100.0
    sim.world.credit = 12.5
    assert await sim.vast.balance() == 12.5
    sim.fault(json_fault("user", 200, {"credit": "lots"}))
    with pytest.raises(ProviderBug):
        await sim.vast.balance()


async def test_a_bad_key_is_an_auth_error_everywhere(sim: Sim) -> None:
    bad = sim.connect(key="not-the-key")
    for call in (bad.check(), bad.balance(), bad.get("5"), bad.list_ours(), bad.destroy("5")):
        with pytest.raises(AuthError):
            await call
    assert await bad.list_offers()  # search needs no key
    await bad.aclose()
    assert "not-the-key" not in str(AuthError("vastai", "x"))


def test_class_settings() -> None:
    assert VastAi.name == "vastai"
    assert VastAi.rate == RateLimit(per_second=1.0, burst=2)
    assert (VastAi.readiness.ssh_user, VastAi.readiness.initial_delay_s) == ("root", 0)
    assert VastAi.readiness.probe_dpkg_and_smi is False
    assert VastAi.auth_headers("k") == {"Authorization": "Bearer k"}


async def test_the_rate_limit_paces_calls(sim: Sim) -> None:
    paced = sim.connect(rate=VastAi.rate)
    task = asyncio.gather(*(paced.balance() for _ in range(3)))
    await parked(sim.clock, task)
    assert not task.done()  # two went at once (the burst), the third waits its turn
    await sim.clock.advance(0.9)
    assert not task.done()
    await sim.clock.advance(0.1)
    await parked(sim.clock, task, sleepers=10**6)
    assert await task == [100.0, 100.0, 100.0]
    await paced.aclose()


async def test_status_calls_go_before_inventory_when_the_rate_limit_bites(sim: Sim) -> None:
    paced = sim.connect(rate=VastAi.rate)
    await paced.balance()
    await paced.balance()  # the burst is spent
    offers = asyncio.ensure_future(paced.list_offers())
    await parked(sim.clock, offers)
    status = asyncio.ensure_future(paced.get("31999999"))
    await sim.clock.advance(1.0)  # one token: the status call takes it, though it came second
    await parked(sim.clock, status, sleepers=2)
    assert status.done() and status.result() is None
    assert not offers.done()
    await sim.clock.advance(1.0)
    await parked(sim.clock, offers, sleepers=2)
    assert await offers
    await paced.aclose()
