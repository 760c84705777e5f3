"""A simulated Vast.ai REST API (`/api/v0/...` and `/api/v1/instances/`).

Shapes, status words, error bodies and quirks follow the reference (provider-apis.md §1): offer
search by JSON query (POST body or `GET ?q=`), renting an ask, per-instance SSH keys, instance
rows whose `actual_status` walks null → "loading" → "running" with the world clock, keyset-paged
v1 listing, label/stop/start and destroy (`{"instances": null}` with 200 once gone). A stop is
at once `stopped` (disk kept); a start boots again ("loading" → "running"), or, when the host's
GPUs are rented out, waits with `intended_status` running and `actual_status` stopped (the
console's "Scheduling") until a stop cancels it.
"""

from __future__ import annotations

import base64
import binascii
import json
import operator
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gpushop_tui.sim.http import Handler, endpoint, json_response, sim_app
from gpushop_tui.sim.world import INSTANCE_KEY, SimInstance, World

PROVIDER = "vastai"
DEFAULT_LIMIT = 64
DEFAULT_STORAGE_GB = 8.0
V1_MAX_LIMIT = 25
V1_FILTER_COLS = {"actual_status", "gpu_name", "verification", "id", "label"}
SPECIAL_KEYS = {"order", "type", "limit", "allocated_storage", "disable_bundling", "extra"}
INSTANCE_ID_BASE = 31_000_000
LOADING_FRACTION = 0.3
"""The first part of the boot reports `actual_status: null`, the rest "loading"."""
SCHEDULING_MSG = "Waiting for the host's GPUs to become available before starting the container."
"""The `status_msg` of a start waiting for its GPUs (the console's "Scheduling"; [INFER] text):
`intended_status` running, `actual_status` still stopped, no GPU billed."""


@dataclass(frozen=True)
class Card:
    """One GPU model as Vast names and measures it."""

    name: str
    vram_mb: int
    compute_cap: int
    price: float  # typical on-demand $/h per GPU
    mem_bw: float  # GB/s
    power: int  # W
    tflops: float
    weight: int  # how common it is on the market
    datacenter: bool = False


CARDS = (
    Card("RTX 3060", 12288, 860, 0.06, 360.0, 170, 12.7, 6),
    Card("RTX 3070", 8192, 860, 0.07, 448.0, 220, 20.3, 4),
    Card("RTX 3080", 10240, 860, 0.09, 760.3, 320, 29.8, 5),
    Card("RTX 3090", 24576, 860, 0.17, 936.2, 350, 35.6, 10),
    Card("RTX 4070", 12282, 890, 0.10, 504.2, 200, 29.1, 4),
    Card("RTX 4080", 16376, 890, 0.16, 716.8, 320, 48.7, 5),
    Card("RTX 4090", 24564, 890, 0.32, 1008.0, 450, 82.6, 14),
    Card("RTX 5090", 32607, 1200, 0.55, 1792.0, 575, 104.8, 8),
    Card("RTX A4000", 16376, 860, 0.10, 448.0, 140, 19.2, 4),
    Card("RTX A5000", 24564, 860, 0.18, 768.0, 230, 27.8, 4),
    Card("RTX A6000", 49140, 860, 0.40, 768.0, 300, 38.7, 6),
    Card("RTX 6000Ada", 49140, 890, 0.75, 960.0, 300, 91.1, 3),
    Card("Tesla V100", 16384, 700, 0.15, 897.0, 300, 15.7, 3, True),
    Card("A40", 46068, 860, 0.35, 696.0, 300, 37.4, 2, True),
    Card("L40", 46068, 890, 0.60, 864.0, 300, 90.5, 2, True),
    Card("L40S", 46068, 890, 0.65, 864.0, 350, 91.6, 4, True),
    Card("A100 PCIE", 40960, 800, 0.70, 1555.0, 250, 19.5, 3, True),
    Card("A100 SXM4", 81920, 800, 0.90, 2039.0, 400, 19.5, 5, True),
    Card("H100 PCIE", 81559, 900, 1.70, 2039.0, 350, 51.2, 3, True),
    Card("H100 SXM", 81559, 900, 1.95, 3352.0, 700, 66.9, 6, True),
    Card("H100 NVL", 95830, 900, 2.10, 3938.0, 400, 60.0, 2, True),
    Card("H200", 143771, 900, 2.60, 4800.0, 700, 66.9, 3, True),
    Card("B200", 183359, 1000, 3.80, 8000.0, 1000, 80.0, 2, True),
)
DRIVERS = (  # (driver_version, cuda_max_good)
    ("535.183.01", 12.2),
    ("545.29.06", 12.3),
    ("550.127.05", 12.4),
    ("560.35.03", 12.6),
    ("565.57.01", 12.7),
    ("570.133.07", 12.8),
    ("575.57.08", 12.9),
)
PLACES = (  # (free-text geolocation, country code)
    ("Texas, US", "US"),
    ("California, US", "US"),
    ("Oregon, US", "US"),
    ("Virginia, US", "US"),
    ("Utah, US", "US"),
    ("Quebec, CA", "CA"),
    ("Ontario, CA", "CA"),
    ("Norway", "NO"),
    ("Sweden", "SE"),
    ("Bavaria, DE", "DE"),
    ("Noord-Holland, NL", "NL"),
    ("England, GB", "GB"),
    ("Masovian Voivodeship, PL", "PL"),
    ("Prague, CZ", "CZ"),
    ("Uusimaa, FI", "FI"),
    ("Bucharest, RO", "RO"),
    ("Yutakachō, Shinagawa District, Tokyo, JP", "JP"),
    ("Taipei, TW", "TW"),
    (", CN", "CN"),
    ("New South Wales, AU", "AU"),
)
CPUS = (
    ("AMD EPYC 7B13 64-Core Processor", 128, 3.0),
    ("AMD EPYC 7543 32-Core Processor", 64, 2.8),
    ("AMD Ryzen 9 7950X 16-Core Processor", 32, 4.5),
    ("Intel Xeon Gold 6338 CPU @ 2.00GHz", 64, 2.0),
    ("Intel Core i9-13900K", 32, 3.0),
    ("AMD EPYC 9554 64-Core Processor", 128, 3.1),
)
MOBOS = ("H12SSL-i", "ROMED8-2T", "X13DEG-OAD", "PRIME Z790-P", "MZ73-LM0", "ProArt X670E")
DISKS = ("Samsung SSD 990 PRO 4TB", "KIOXIA KCD8XPUG7T68", "WD_BLACK SN850X 2TB", "Micron 7450")


# --------------------------------------------------------------------------- offers


def _driver_number(version: str) -> int:
    parts = [int(p) for p in version.split(".")[:3]] + [0, 0, 0]
    return parts[0] * 1_000_000 + parts[1] * 1000 + parts[2]


def generate_offers(world: World) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """The seed's market: offer rows (without storage pricing) and each offer's country code."""
    rng = world.rng(PROVIDER)
    now = world.now()
    offers: list[dict[str, Any]] = []
    countries: dict[int, str] = {}
    weights = [c.weight for c in CARDS]
    next_offer = 18_000_000 + rng.randrange(400_000)
    for m in range(world.vast_machines):
        card = rng.choices(CARDS, weights)[0]
        if card.datacenter:
            total = rng.choices((1, 2, 4, 8), (1, 1, 2, 6))[0]
        else:
            total = rng.choices((1, 2, 4, 8), (5, 3, 3, 2))[0]
        machine_id = 10_000 + m * 7 + rng.randrange(7)
        host_id = 100_000 + rng.randrange(90_000)
        place, country = rng.choice(PLACES)
        drivers = DRIVERS[5:] if card.compute_cap >= 1000 else DRIVERS
        driver, cuda = rng.choice(drivers)
        cpu_name, cpu_cores, cpu_ghz = rng.choice(CPUS)
        cpu_ram = rng.choice((64, 128, 256, 512, 1024)) * 1007 + rng.randrange(900)
        verified = rng.random() < 0.82
        verification = "verified" if verified else rng.choice(("unverified", "deverified"))
        reliability = round(1 - rng.random() ** 2.5 * 0.15, 4)
        external = rng.random() < 0.12
        rentable = rng.random() < 0.95
        datacenter = card.datacenter and rng.random() < 0.7
        inet_down = round(rng.uniform(80, 8000), 1)
        inet_up = round(inet_down * rng.uniform(0.3, 1.0), 1)
        disk_space = round(rng.uniform(40, 3000), 1)
        storage_cost = rng.choice((0.05, 0.08, 0.1, 0.15, 0.2, 0.3))
        machine_factor = rng.uniform(0.75, 1.35)
        start_date = round(now - rng.uniform(1, 120) * 86400, 2)
        end_date = round(now + rng.uniform(7, 200) * 86400, 1)
        ports = rng.choice((0, 50, 99, 199, 499, 999)) if rng.random() < 0.95 else 0
        gpu_base = 300 + m * 8
        slice_size = 1
        while slice_size <= total:
            offer_id = next_offer
            next_offer += rng.randrange(1, 40)
            frac = slice_size / total
            dph_base = round(card.price * slice_size * machine_factor, 4)
            dlperf = round(card.tflops * slice_size * rng.uniform(0.7, 0.95), 3)
            offers.append(
                {
                    "id": offer_id,
                    "ask_contract_id": offer_id,
                    "bundle_id": 1_025_000_000 + offer_id % 1_000_000,
                    "bundled_results": None,
                    "machine_id": machine_id,
                    "host_id": host_id,
                    "hosting_type": 1 if datacenter else 0,
                    "cluster_id": None,
                    "gpu_name": card.name,
                    "num_gpus": slice_size,
                    "gpu_ram": card.vram_mb,
                    "gpu_total_ram": card.vram_mb * slice_size,
                    "gpu_frac": round(frac, 4),
                    "gpu_ids": list(range(gpu_base, gpu_base + slice_size)),
                    "gpu_arch": "nvidia",
                    "compute_cap": card.compute_cap,
                    "gpu_mem_bw": card.mem_bw,
                    "gpu_lanes": 16,
                    "gpu_max_power": card.power,
                    "gpu_max_temp": 83,
                    "gpu_display_active": False,
                    "bw_nvlink": 0.0 if not card.datacenter else round(rng.uniform(100, 450), 1),
                    "total_flops": round(card.tflops * slice_size, 1),
                    "cpu_name": cpu_name,
                    "cpu_arch": "amd64",
                    "cpu_cores": cpu_cores,
                    "cpu_cores_effective": round(cpu_cores * frac, 1),
                    "cpu_ghz": cpu_ghz,
                    "cpu_ram": cpu_ram,
                    "has_avx": 1,
                    "mobo_name": rng.choice(MOBOS),
                    "pci_gen": 5.0 if card.compute_cap >= 900 else 4.0,
                    "pcie_bw": round(rng.uniform(11, 52), 1),
                    "disk_name": rng.choice(DISKS),
                    "disk_space": round(disk_space * frac, 1),
                    "disk_bw": round(rng.uniform(800, 7000), 1),
                    "inet_up": inet_up,
                    "inet_down": inet_down,
                    "inet_up_cost": 0.0025,
                    "inet_down_cost": 0.0025,
                    "internet_up_cost_per_tb": 2.5,
                    "internet_down_cost_per_tb": 2.5,
                    "direct_port_count": ports,
                    "static_ip": rng.random() < 0.6,
                    "public_ipaddr": f"203.0.113.{m % 250 + 1}",
                    "geolocation": place,
                    "geolocode": 1_000_000 + rng.randrange(900_000),
                    "driver_version": driver,
                    "driver_vers": _driver_number(driver),
                    "cuda_max_good": cuda,
                    "os_version": rng.choice(("20.04", "22.04", "24.04")),
                    "vms_enabled": rng.random() < 0.2,
                    "dph_base": dph_base,
                    "min_bid": round(dph_base * rng.uniform(0.35, 0.6), 4),
                    "storage_cost": storage_cost,
                    "vram_costperhour": round(dph_base / (card.vram_mb * slice_size), 8),
                    "credit_discount_max": 0.4,
                    "discount_rate": 0.0,
                    "discounted_hourly": 0.0,
                    "dlperf": dlperf,
                    "reliability": reliability,
                    "reliability2": reliability,
                    "reliability_mult": round(min(reliability, 0.99), 4),
                    "expected_reliability": round(min(reliability, 0.99), 4),
                    "verification": verification,
                    "verified": verified,
                    "vericode": 1 if verified else 0,
                    "is_vm_deverified": False,
                    "external": external,
                    "rentable": rentable,
                    "rented": False,
                    "datacenter": datacenter,
                    "resource_type": "gpu",
                    "start_date": start_date,
                    "end_date": end_date,
                    "time_remaining_isbid": "",
                    "avail_vol_ask_id": None,
                    "avail_vol_dph": None,
                    "avail_vol_size": None,
                    "nw_disk_min_bw": None,
                    "nw_disk_max_bw": None,
                    "nw_disk_avg_bw": None,
                    "logo": "/static/logos/vastai_small2.png",
                    "webpage": None,
                    "hostname": None,
                    "pending_count": 0,
                }
            )
            countries[offer_id] = country
            slice_size *= 2
    return offers, countries


def _remaining(seconds: float) -> str:
    days = max(0, int(seconds // 86400))
    hours = max(0, int(seconds % 86400 // 3600))
    months, days = divmod(days, 30)
    return f"{months} Mon {days} D {hours} Hr" if months else f"{days} D {hours} Hr"


def priced(offer: dict[str, Any], storage_gb: float, bid: bool, now: float) -> dict[str, Any]:
    """The offer as search returns it: storage for `storage_gb` priced into `dph_total`."""
    row = dict(offer)
    storage = round(storage_gb * offer["storage_cost"] / 720, 6)
    compute = offer["min_bid"] if bid else offer["dph_base"]
    total = round(compute + storage, 6)
    breakdown = {
        "gpuCostPerHour": compute,
        "diskHour": storage,
        "totalHour": total,
        "discountTotalHour": 0.0,
        "discountedTotalPerHour": total,
    }
    duration = round(offer["end_date"] - now, 1)
    row.update(
        dph_total=total,
        dph_total_adj=total,
        discounted_dph_total=total,
        storage_total_cost=storage,
        is_bid=bid,
        search=breakdown,
        instance=dict(breakdown),
        dlperf_per_dphtotal=round(offer["dlperf"] / total, 2),
        flops_per_dphtotal=round(offer["total_flops"] / total, 2),
        score=round(offer["dlperf"] / offer["dph_base"] ** 0.5 * offer["reliability2"] ** 4, 2),
        duration=duration,
        time_remaining=_remaining(duration),
    )
    return row


# --------------------------------------------------------------------------- query matching


class QueryError(ValueError):
    """A query that the server refuses with 400 invalid_args."""


def _coerce(value: Any, like: Any) -> Any:
    """A query value made comparable with an offer value (numbers may arrive as strings)."""
    if isinstance(like, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes")
        return bool(value)
    if isinstance(like, int | float):
        if isinstance(value, bool):
            return int(value)
        try:
            return float(value)
        except (TypeError, ValueError) as err:
            raise QueryError(f"invalid numeric value {value!r}") from err
    return value if isinstance(value, str) or value is None else str(value)


OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _field_matches(actual: Any, ops: Any) -> bool:
    if not isinstance(ops, dict):
        ops = {"eq": ops}
    for op, wanted in ops.items():
        if op in ("in", "notin"):
            values = wanted if isinstance(wanted, list) else [wanted]
            found = actual is not None and any(actual == _coerce(v, actual) for v in values)
            if found != (op == "in"):
                return False
            continue
        if op not in OPS:
            raise QueryError(f"unknown operator {op!r}")
        if actual is None:
            if op == "eq" and wanted is None:
                continue
            return op == "neq" and wanted is not None
        compare = _coerce(wanted, actual)
        try:
            if not OPS[op](actual, compare):
                return False
        except TypeError as err:
            raise QueryError(f"cannot compare with {wanted!r}") from err
    return True


def offer_matches(row: dict[str, Any], country: str, query: dict[str, Any]) -> bool:
    """Whether an offer passes every field constraint of a search query."""
    for key, ops in query.items():
        if key in SPECIAL_KEYS or ops in ({}, None):
            continue
        if key == "geolocation":
            actual: Any = country
            if isinstance(ops, dict) and any(
                isinstance(v, str) and len(v) > 2 for v in ops.values()
            ):
                actual = row["geolocation"]
        elif key == "driver_version":
            actual = row["driver_vers"]
            ops = {
                op: [_driver_number(str(x)) for x in v]
                if isinstance(v, list)
                else _driver_number(str(v))
                for op, v in (ops if isinstance(ops, dict) else {"eq": ops}).items()
            }
        elif key == "os_version":
            actual = row.get("os_version")
        elif key not in row:
            continue  # the real API ignores columns it does not filter on
        else:
            actual = row[key]
        if not _field_matches(actual, ops):
            return False
    return True


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, bool):
        return (1, int(value))
    return (1, value)


def apply_order(rows: list[dict[str, Any]], order: Any) -> list[dict[str, Any]]:
    """Sort by a list of `[field, "asc"|"desc"]` pairs (first pair is the primary key)."""
    if not order:
        return rows
    if isinstance(order, list) and order and isinstance(order[0], str):
        order = [order]
    if not isinstance(order, list):
        raise QueryError("order must be a list of [field, direction] pairs")
    for pair in reversed(order):
        if not isinstance(pair, list | tuple) or not pair:
            raise QueryError("order must be a list of [field, direction] pairs")
        field = str(pair[0])
        desc = len(pair) > 1 and str(pair[1]).lower() == "desc"
        rows.sort(key=lambda r, f=field: _sort_key(r.get(f)), reverse=desc)
    return rows


# --------------------------------------------------------------------------- instances


def _err(status: int, error: str, msg: str, **extra: Any) -> Response:
    return json_response({"success": False, "error": error, "msg": msg, **extra}, status)


def _env_pairs(env: Any) -> list[list[str]]:
    """`env` as a list of `[name, value]` pairs, from the CLI's dict or the SPEC's string form."""
    if isinstance(env, dict):
        return [[str(k), str(v)] for k, v in env.items()]
    pairs: list[list[str]] = []
    if isinstance(env, str):
        tokens = env.split()
        i = 0
        while i < len(tokens):
            flag = tokens[i]
            if flag in ("-e", "-p", "-h", "-v", "-n") and i + 1 < len(tokens):
                arg = tokens[i + 1]
                if flag == "-e" and "=" in arg:
                    name, value = arg.split("=", 1)
                    pairs.append([name, value])
                elif flag != "-e":
                    pairs.append([f"{flag} {arg}", "1"])
                i += 2
            else:
                i += 1
    return pairs


def _requested_ports(extra_env: list[list[str]]) -> list[str]:
    """The container ports `-p` entries ask for, Docker-style ("8000/tcp"), 22 left out (SSH is
    mapped anyway)."""
    keys: list[str] = []
    for name, _ in extra_env:
        if not name.startswith("-p "):
            continue
        inner = name[3:].split(":")[-1]
        key = inner if "/" in inner else f"{inner}/tcp"
        if key != "22/tcp" and key not in keys:
            keys.append(key)
    return keys


def _publish(extra_env: list[list[str]]) -> list[int]:
    """The TCP node ports the sim's nodes publish for the `-p` entries (`extra["publish"]`)."""
    keys = _requested_ports(extra_env)
    return [int(key[:-4]) for key in keys if key.endswith("/tcp") and key[:-4].isdigit()]


def _mapped_ports(instance: SimInstance) -> dict[str, list[dict[str, str]]]:
    """Docker-style port map: 22/tcp is the SSH node's real port, `-p` requests follow it. A TCP
    port the node publishes answers on its real loopback port; any other (UDP, or a world
    without SSH nodes) gets a made-up one that nothing listens on."""
    ports: dict[str, list[dict[str, str]]] = {}
    base = instance.ssh_port
    if base is not None:
        ports["22/tcp"] = [
            {"HostIp": "0.0.0.0", "HostPort": str(base)},
            {"HostIp": "::", "HostPort": str(base)},
        ]
    published: dict[str, int] = instance.extra.get("published", {})
    host = 40_000 + int(instance.id) % 20_000
    for key in _requested_ports(instance.extra.get("extra_env", [])):
        host += 1
        real = published.get(key.removesuffix("/tcp")) if key.endswith("/tcp") else None
        ports[key] = [{"HostIp": "0.0.0.0", "HostPort": str(real or host)}]
    return ports


def instance_row(instance: SimInstance, now: float) -> dict[str, Any]:
    """The instance as `GET /instances/{id}/` reports it at world time `now`."""
    x = instance.extra
    phase = instance.phase(now)
    image = x.get("image", "")
    runtype = x.get("runtype", "ssh_proxy")
    elapsed = now - instance.created_at
    actual: str | None
    intended = "stopped" if instance.stopped else "running"
    contract = intended
    if phase == "running":
        actual = "running"
        status_msg = f"success, running {image.replace(':', '_')}/ssh"
    elif phase == "stopped":
        actual = "stopped"
        status_msg = "Container stopped by user."
    elif phase == "destroyed":
        actual = "offline"
        status_msg = "Instance destroyed."
    elif instance.start_held:
        actual, contract, status_msg = "stopped", "stopped", SCHEDULING_MSG
    elif instance.powered_on_at is not None:
        actual, status_msg = "loading", "Starting container..."
    elif elapsed < instance.boot_s * LOADING_FRACTION:
        actual, status_msg = None, None
    else:
        actual = "loading"
        status_msg = f"Pulling image {image}..."
    running = phase == "running"
    storage = x.get("storage_total_cost", 0.0)
    breakdown = {
        "gpuCostPerHour": x.get("dph_base", instance.price_per_hour),
        "diskHour": storage,
        "totalHour": instance.price_per_hour,
        "discountTotalHour": 0,
        "discountedTotalPerHour": instance.price_per_hour,
    }
    ports = _mapped_ports(instance) if running else None
    return {
        "id": int(instance.id),
        "machine_id": x.get("machine_id"),
        "host_id": x.get("host_id"),
        "bundle_id": x.get("bundle_id"),
        "label": instance.label or None,
        "template_id": None,
        "template_hash_id": x.get("template_hash_id"),
        "template_name": None,
        "actual_status": actual,
        "intended_status": intended,
        "cur_state": contract,
        "next_state": intended,
        "status_msg": status_msg,
        "image_uuid": image,
        "image_args": x.get("args", []),
        "image_runtype": runtype,
        "extra_env": x.get("extra_env", []),
        "onstart": x.get("onstart"),
        "jupyter_token": x.get("jupyter_token"),
        "ssh_host": "127.0.0.1" if running and instance.ssh_port is not None else None,
        "ssh_idx": "0",
        "ssh_port": instance.ssh_port if running else None,
        "machine_dir_ssh_port": None,
        "public_ipaddr": "127.0.0.1" if running else None,
        "local_ipaddrs": "10.0.0.5 172.17.0.1 \n",
        "ports": ports,
        "direct_port_count": x.get("direct_port_count", 0),
        "direct_port_start": None,
        "direct_port_end": None,
        "static_ip": x.get("static_ip", False),
        "geolocation": x.get("geolocation"),
        "country_code": None,
        "gpu_name": instance.gpu_name,
        "num_gpus": instance.gpu_count,
        "gpu_ram": instance.vram_mb,
        "gpu_totalram": instance.vram_mb,
        "gpu_frac": x.get("gpu_frac"),
        "gpu_util": float(instance.gpu_util) if running else None,
        "gpu_temp": 38.0 if running else None,
        "gpu_arch": "nvidia",
        "gpu_lanes": 16,
        "gpu_mem_bw": x.get("gpu_mem_bw"),
        "bw_nvlink": x.get("bw_nvlink", 0.0),
        "cpu_name": x.get("cpu_name"),
        "cpu_arch": "amd64",
        "cpu_cores": x.get("cpu_cores"),
        "cpu_cores_effective": x.get("cpu_cores_effective"),
        "cpu_ram": x.get("cpu_ram"),
        "cpu_util": 0.01 if running else None,
        "mem_limit": None,
        "mem_usage": 2.1 if running else None,
        "vmem_usage": 0.5 if running else None,
        "disk_name": x.get("disk_name"),
        "disk_space": x.get("disk"),
        "disk_bw": x.get("disk_bw"),
        "disk_util": 0.05 if running else None,
        "disk_usage": 0.05 if running else None,
        "inet_up": x.get("inet_up"),
        "inet_down": x.get("inet_down"),
        "dph_base": x.get("dph_base"),
        "dph_total": instance.price_per_hour,
        "storage_cost": x.get("storage_cost"),
        "storage_total_cost": storage,
        "vram_costperhour": x.get("vram_costperhour"),
        "min_bid": x.get("min_bid"),
        "is_bid": x.get("is_bid", False),
        "search": breakdown,
        "instance": dict(breakdown),
        "credit_balance": None,
        "credit_discount": None,
        "credit_discount_max": 0.4,
        "reliability2": x.get("reliability2"),
        "verification": x.get("verification", "verified"),
        "rentable": True,
        "external": x.get("external", False),
        "dlperf": x.get("dlperf"),
        "total_flops": x.get("total_flops"),
        "score": None,
        "os_version": x.get("os_version"),
        "mobo_name": x.get("mobo_name"),
        "pci_gen": x.get("pci_gen"),
        "driver_version": instance.driver,
        "cuda_max_good": instance.cuda,
        "compute_cap": x.get("compute_cap"),
        "start_date": instance.created_at,
        "end_date": x.get("end_date"),
        "duration": round(max(0.0, now - instance.created_at), 1),
        "uptime_mins": round(max(0.0, now - instance.created_at - instance.boot_s) / 60, 1)
        if running
        else None,
        "client_run_time": round(max(0.0, elapsed) / 3600, 3),
        "host_run_time": round(max(0.0, elapsed) / 3600, 3),
        "time_remaining": _remaining((x.get("end_date") or now) - now),
        "time_remaining_isbid": "",
        "volume_info": [],
        "webpage": None,
        "logo": "/static/logos/vastai_small2.png",
    }


# --------------------------------------------------------------------------- the app


def build_app(world: World) -> Starlette:
    """The simulated Vast.ai API for `world` (clients use base `http://HOST:PORT/api/v0`)."""
    offers, countries = generate_offers(world)
    by_id = {o["id"]: o for o in offers}
    gpu_names = sorted({c.name for c in CARDS})
    user_id = 100_000 + world.rng(PROVIDER, "user").randrange(800_000)

    def authorized(request: Request, instance_id: str | None = None) -> Response | None:
        """None when the request's key may do this: the account key anything, an instance's
        own key (the create answer's `instance_api_key`) only calls on that instance, passed
        as `instance_id`; otherwise the error answer."""
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else ""
        key = key or request.query_params.get("api_key", "")
        if not key:
            return _err(401, "auth_error", "Authentication credentials were not provided.")
        if key == world.keys[PROVIDER]:
            return None
        owner = next(
            (i for i in world.instances[PROVIDER].values() if i.extra.get(INSTANCE_KEY) == key),
            None,
        )
        if owner is None:
            return _err(403, "auth_error", "Invalid user key")
        if owner.id != instance_id:
            return _err(403, "forbidden", f"this API key is limited to instance {owner.id}")
        return None

    async def body_json(request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as err:
            raise QueryError("request body is not valid JSON") from err

    def live_instance(raw_id: str) -> SimInstance | None:
        instance = world.get(PROVIDER, raw_id)
        if instance is None or instance.phase(world.now()) == "destroyed":
            return None
        return instance

    async def set_state(instance: SimInstance, state: str) -> None:
        """Stop (the disk is kept; a start still waiting for GPUs is cancelled) or start (a boot
        of `boot_s`; with `start_no_capacity` the host's GPUs are rented out and the start waits
        as `scheduling`). Asking for the state it is already headed to changes nothing."""
        if state == "stopped":
            await world.power_off(PROVIDER, instance.id)
        else:
            held = world.faults.node(PROVIDER).start_no_capacity
            world.power_on(PROVIDER, instance.id, held=held)

    def not_found(raw_id: str) -> Response:
        return _err(404, "no_such_instance", f"Instance {raw_id} not found.")

    async def search(request: Request) -> Response:
        try:
            if request.method == "GET":
                q = request.query_params.get("q")
                query = json.loads(q) if q else {}
            else:
                query = await body_json(request)
            if isinstance(query, dict) and isinstance(query.get("q"), dict):
                query = query["q"]  # `PUT /search/asks/` wraps the query
            if not isinstance(query, dict):
                raise QueryError("query must be a JSON object")
            kind = str(query.get("type", "on-demand")).lower()
            if kind not in ("on-demand", "ondemand", "bid", "interruptible", "reserved"):
                raise QueryError(f"invalid type {kind!r}")
            bid = kind in ("bid", "interruptible")
            storage = float(query.get("allocated_storage") or DEFAULT_STORAGE_GB)
            limit = int(query["limit"]) if query.get("limit") is not None else DEFAULT_LIMIT
            now = world.now()
            taken = world.taken[PROVIDER]
            rows = [
                row
                for row in (
                    priced(o, storage, bid, now) for o in offers if str(o["id"]) not in taken
                )
                if offer_matches(row, countries[row["id"]], query)
            ]
            rows = apply_order(rows, query.get("order") or [["score", "desc"]])
        except (QueryError, ValueError, TypeError) as err:
            return _err(400, "invalid_args", f"error 400: Invalid args: {err}")
        return json_response({"offers": rows[: max(0, limit)]})

    async def gpu_names_route(request: Request) -> Response:
        return json_response({"gpu_names": gpu_names})

    async def user(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        return json_response(
            {
                "id": user_id,
                "username": f"sim{user_id}",
                "email": f"sim{user_id}@example.com",
                "fullname": "Simulated User",
                "credit": round(world.credit, 4),
                "balance": 0.0,
                "can_pay": world.credit > 0,
                "has_billing": True,
                "billed_expected": 0.0,
                "billed_verified": 0.0,
                "ssh_key": None,
                "is_host": False,
                "host_only": False,
                "user": True,
                "rights": None,
                "email_verified": True,
                "last4": "4242",
                "paid_expected": 0.0,
                "paid_verified": 0.0,
            }
        )

    async def create(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        raw_id = request.path_params["ask_id"]
        try:
            body = await body_json(request)
            if not isinstance(body, dict):
                raise QueryError("body must be a JSON object")
            ask_id = int(raw_id)
        except (QueryError, ValueError) as err:
            return _err(
                400,
                "invalid_args",
                f"error 400/3467: Invalid args: 'id' is required and must be a valid offer ID"
                f" ({err})",
                ask_id=raw_id,
            )
        offer = by_id.get(ask_id)
        if offer is None:
            return _err(
                404,
                "invalid_args",
                f"error 404/3603: no_such_ask Instance type by id {ask_id} is not available.",
                ask_id=ask_id,
            )
        if str(ask_id) in world.taken[PROVIDER] or not offer["rentable"]:
            status, code = (410, 3907) if body.get("cancel_unavail") else (400, 3907)
            return _err(
                status,
                "no_such_ask",
                f"error {status}/{code}: no_such_ask Instance type {ask_id} is no longer"
                " available.",
                ask_id=ask_id,
            )
        image = body.get("image")
        if not image and not body.get("template_hash_id"):
            return _err(400, "invalid_args", "error 400: Invalid args: 'image' is required.")
        label = body.get("label") or ""
        if len(str(label)) > 256:
            return _err(400, "label_too_long", "Label must be at most 256 characters.")
        price = body.get("price")
        try:
            disk = float(body.get("disk") or 10.0)
            bid_price = float(price) if price is not None else None
        except (TypeError, ValueError):
            return _err(400, "invalid_args", "error 400: Invalid args: bad disk or price.")
        if bid_price is not None and not 0.001 <= bid_price <= 128:
            return _err(400, "invalid_price", f"Invalid bid price {bid_price}.")
        if world.credit <= 0:
            return _err(400, "missing_billing", "No credit or billing method on the account.")
        storage = round(disk * offer["storage_cost"] / 720, 6)
        compute = bid_price if bid_price is not None else offer["dph_base"]
        contract = INSTANCE_ID_BASE + world.next_id(PROVIDER)
        env_pairs = _env_pairs(body.get("env"))
        keep = [
            "machine_id",
            "host_id",
            "bundle_id",
            "geolocation",
            "gpu_frac",
            "gpu_mem_bw",
            "bw_nvlink",
            "cpu_name",
            "cpu_cores",
            "cpu_cores_effective",
            "cpu_ram",
            "disk_name",
            "disk_bw",
            "inet_up",
            "inet_down",
            "dph_base",
            "storage_cost",
            "vram_costperhour",
            "min_bid",
            "reliability2",
            "verification",
            "external",
            "dlperf",
            "total_flops",
            "os_version",
            "mobo_name",
            "pci_gen",
            "compute_cap",
            "end_date",
            "direct_port_count",
            "static_ip",
        ]
        extra = {k: offer[k] for k in keep}
        extra.update(
            dph_base=round(compute, 6),
            storage_total_cost=storage,
            is_bid=bid_price is not None,
            image=image or "",
            disk=disk,
            runtype=body.get("runtype") or ("args" if body.get("args") else "ssh"),
            onstart=body.get("onstart"),
            args=body.get("args") or [],
            extra_env=env_pairs,
            publish=_publish(env_pairs),
            template_hash_id=body.get("template_hash_id"),
            jupyter_token=secrets.token_hex(32),
        )
        extra[INSTANCE_KEY] = secrets.token_hex(32)
        instance = await world.create_instance(
            PROVIDER,
            instance_id=str(contract),
            offer_id=str(ask_id),
            label=str(label),
            gpu_name=offer["gpu_name"],
            gpu_count=offer["num_gpus"],
            vram_mb=offer["gpu_ram"],
            cuda=offer["cuda_max_good"],
            price_per_hour=round(compute + storage, 6),
            extra=extra,
        )
        instance.driver = offer["driver_version"]
        world.save()
        return json_response(
            {"success": True, "new_contract": contract, INSTANCE_KEY: extra[INSTANCE_KEY]}
        )

    async def attach_ssh(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        raw_id = request.path_params["instance_id"]
        try:
            body = await body_json(request)
        except QueryError:
            body = {}
        key = body.get("ssh_key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key.strip():
            return _err(400, "no_ssh_key", "No ssh key provided")
        instance = live_instance(raw_id)
        if instance is None:
            return not_found(raw_id)
        key = key.strip()
        if key not in instance.authorized_keys:
            instance.authorized_keys.append(key)
            world.save()
        return json_response({"success": True, "msg": "SSH key attached successfully"})

    async def get_one(request: Request) -> Response:
        if (denied := authorized(request, request.path_params["instance_id"])) is not None:
            return denied
        instance = live_instance(request.path_params["instance_id"])
        if instance is None:
            return json_response({"instances": None})
        return json_response({"instances": instance_row(instance, world.now())})

    async def list_v0(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        now = world.now()
        rows = [instance_row(i, now) for i in world.live(PROVIDER)]
        return json_response({"instances_found": len(rows), "instances": rows})

    async def list_v1(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        params = request.query_params
        try:
            filters = json.loads(params.get("select_filters") or "{}")
            order_by = json.loads(params.get("order_by") or '[{"col": "id", "dir": "asc"}]')
            cols = json.loads(params.get("select_cols") or '["*"]')
            limit = int(params.get("limit") or V1_MAX_LIMIT)
        except ValueError as err:
            return _err(400, "invalid_args", f"error 400: Invalid args: {err}")
        limit = 5 if limit <= 0 else min(limit, V1_MAX_LIMIT)
        if not isinstance(filters, dict):
            return _err(400, "invalid_args", "error 400: select_filters must be an object")
        bad = sorted(set(filters) - V1_FILTER_COLS)
        if bad:
            return _err(400, "invalid_args", f"error 400: cannot filter on column(s) {bad}")
        first = order_by[0] if isinstance(order_by, list) and order_by else {}
        col = str(first.get("col", "id")) if isinstance(first, dict) else "id"
        desc = isinstance(first, dict) and str(first.get("dir", "asc")).lower() == "desc"
        now = world.now()
        try:
            rows = [
                r
                for r in (instance_row(i, now) for i in world.live(PROVIDER))
                if all(_field_matches(r.get(k), ops) for k, ops in filters.items())
            ]
        except QueryError as err:
            return _err(400, "invalid_args", f"error 400: Invalid args: {err}")

        def key(row: dict[str, Any]) -> list[Any]:
            return [*_sort_key(row.get(col)), row["id"]]

        rows.sort(key=key, reverse=desc)
        total = len(rows)
        label_counts: dict[str, int] = {}
        for row in rows:
            label_counts[row["label"] or ""] = label_counts.get(row["label"] or "", 0) + 1
        token = params.get("after_token")
        if token:
            try:
                cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
                last = list(cursor["k"])
                if cursor.get("c") != col or len(last) != 3:
                    raise ValueError("cursor does not match this query")
                if desc:
                    rows = [r for r in rows if key(r) < last]
                else:
                    rows = [r for r in rows if key(r) > last]
            except (ValueError, KeyError, TypeError, binascii.Error):
                return _err(400, "invalid_token", "Invalid pagination token.")
        page = rows[:limit]
        next_token = None
        if len(rows) > limit:
            cursor = {"c": col, "k": key(page[-1])}
            next_token = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()
        if isinstance(cols, list) and cols and "*" not in cols:
            page = [{c: r.get(c) for c in ["id", *cols]} for r in page]
        return json_response(
            {
                "success": True,
                "instances_found": len(page),
                "total_instances": total,
                "label_counts": label_counts,
                "next_token": next_token,
                "instances": page,
            }
        )

    async def update(request: Request) -> Response:
        if (denied := authorized(request, request.path_params["instance_id"])) is not None:
            return denied
        raw_id = request.path_params["instance_id"]
        try:
            body = await body_json(request)
        except QueryError as err:
            return _err(400, "invalid_args", f"error 400: Invalid args: {err}")
        if not isinstance(body, dict) or ("label" not in body and "state" not in body):
            return _err(400, "invalid_args", "error 400: Invalid args: nothing to change.")
        instance = live_instance(raw_id)
        if instance is None:
            return not_found(raw_id)
        answer: dict[str, Any] = {"success": True}
        if "state" in body:
            if body["state"] not in ("stopped", "running"):
                return _err(400, "invalid_args", f"error 400: invalid state {body['state']!r}")
            await set_state(instance, body["state"])
        if "label" in body:
            label = "" if body["label"] is None else str(body["label"])
            if len(label) > 1024:
                return _err(400, "label_too_long", "Label must be at most 1024 characters.")
            instance.label = label
            answer["msg"] = f"label for {raw_id} set to '{label}'"
        world.save()
        return json_response(answer)

    async def bulk_update(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        try:
            body = await body_json(request)
            ids = [str(int(i)) for i in body["ids"]]
            state = body["state"]
            if state not in ("stopped", "running"):
                raise ValueError(state)
        except (QueryError, ValueError, KeyError, TypeError) as err:
            return _err(400, "invalid_args", f"error 400: Invalid args: {err}")
        for raw_id in ids:
            if (instance := live_instance(raw_id)) is not None:
                await set_state(instance, state)
        world.save()
        return json_response({"success": True})

    async def destroy(request: Request) -> Response:
        if (denied := authorized(request, request.path_params["instance_id"])) is not None:
            return denied
        raw_id = request.path_params["instance_id"]
        if not await world.destroy(PROVIDER, raw_id):
            return not_found(raw_id)
        return json_response({"success": True})

    def routes(path: str, name: str, handler: Handler, methods: list[str]) -> list[Route]:
        guarded = endpoint(world, PROVIDER, name)(handler)
        return [
            Route(path.rstrip("/"), guarded, methods=methods),
            Route(path.rstrip("/") + "/", guarded, methods=methods),
        ]

    v0 = "/api/v0"
    table = [
        *routes(f"{v0}/bundles/", "search", search, ["GET", "POST"]),
        *routes(f"{v0}/search/asks/", "search", search, ["PUT", "POST"]),
        *routes(f"{v0}/gpu_names/unique/", "gpu_names", gpu_names_route, ["GET"]),
        *routes(f"{v0}/users/current/", "user", user, ["GET"]),
        *routes(f"{v0}/asks/{{ask_id}}/", "create", create, ["PUT"]),
        *routes(f"{v0}/instances/{{instance_id}}/ssh/", "attach_ssh", attach_ssh, ["POST"]),
        *routes(f"{v0}/instances/", "list", list_v0, ["GET"]),
        *routes(f"{v0}/instances/", "update", bulk_update, ["PUT"]),
        *routes(f"{v0}/instances/{{instance_id}}/", "get", get_one, ["GET"]),
        *routes(f"{v0}/instances/{{instance_id}}/", "update", update, ["PUT"]),
        *routes(f"{v0}/instances/{{instance_id}}/", "destroy", destroy, ["DELETE"]),
        *routes("/api/v1/instances/", "list_v1", list_v1, ["GET"]),
    ]
    return sim_app(world, table)
