"""Simulated TensorDock v2 API (`/api/v2`), faithful to the quirks seen in production.

- Bearer auth; no header at all is accepted on `GET /locations` only (one client reports that
  it is public), a wrong token is 401, an Authorization-ID UUID in place of the token is 403.
- `GET /locations`: a fixed catalogue, per-GPU `price_per_hr` plus vCPU/RAM/storage pricing.
  `max_count` shows what is left, except for the pairs in `STALE`, which advertise capacity
  they do not have (create answers HTTP 200 with "No available nodes found").
- `POST /instances`: JSON:API envelope; bad bodies get a 400 validation array, capacity
  problems an HTTP 200 error body. Only cloud-init `runcmd` lines that echo a key into
  `/home/user/.ssh/authorized_keys` let the login user (`user`) in; the `ssh_key` field and
  cloud-init `ssh_authorized_keys` install nothing (prior art BUG-002). At locations in
  `IGNORES_PORT_FORWARDS` the requested `port_forwards` are silently dropped (BUG-008).
- `GET /instances/{id}` is unwrapped; `GET /instances` answers in the SPEC shape
  (`app.state.list_shape = "wrapped"`) or the flat shape seen live (`"bare"`); the default
  `"alternate"` starts with wrapped and switches on every call.
- `DELETE /instances/{id}`: the instance reads "deleting" for `DELETE_LINGER_S`, then 404.
- `POST /instances/{id}/stop`: "stopping" for the world's `stop_s`, then "stopped" (disk kept,
  SSH refused, workload ended); `release_s` later the GPU goes back to the location
  ("StoppedDisassociated") and counts as free capacity again. `POST /instances/{id}/start`:
  "starting" for `boot_s`, then "running" with the same disk. A start whose GPU is gone and not
  to be had again (taken by others, or the `start_no_capacity` fault) is refused with
  `NO_GPU_TO_START` in an HTTP-200 error body; a power action in the wrong state is a 400.
"""

from __future__ import annotations

import re
import shlex
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gpushop_tui.sim.http import endpoint, json_body, json_response, sim_app
from gpushop_tui.sim.world import SimInstance, World

PROVIDER = "tensordock"
IMAGES = ("ubuntu2404", "ubuntu2204", "debian12", "windows10")
MIN_STORAGE_GB = 100
DELETE_LINGER_S = 5.0
KEY_FILES = {"/home/user/.ssh/authorized_keys": "user", "/root/.ssh/authorized_keys": "root"}
_KEY_RE = re.compile(r"(ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-\S+)\s+[A-Za-z0-9+/=]+")
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


@dataclass(frozen=True)
class Gpu:
    """A GPU model as TensorDock names it."""

    display: str
    vram_gb: int
    price: float
    cuda: float


GPUS: dict[str, Gpu] = {
    "geforcertx4090-pcie-24gb": Gpu("NVIDIA GeForce RTX 4090 PCIe 24GB", 24, 0.35, 12.4),
    "geforcertx3090-pcie-24gb": Gpu("NVIDIA GeForce RTX 3090 PCIe 24GB", 24, 0.20, 12.2),
    "geforcertx5090-pcie-32gb": Gpu("NVIDIA GeForce RTX 5090 PCIe 32GB", 32, 0.55, 12.8),
    "rtxa4000-pcie-16gb": Gpu("NVIDIA RTX A4000 PCIe 16GB", 16, 0.10, 12.2),
    "rtxa6000-pcie-48gb": Gpu("NVIDIA RTX A6000 PCIe 48GB", 48, 0.40, 12.4),
    "a100-pcie-80gb": Gpu("NVIDIA A100 PCIe 80GB", 80, 1.10, 12.4),
    "h100-sxm5-80gb": Gpu("H100 SXM5 80GB", 80, 2.20, 12.4),
    "l40-pcie-48gb": Gpu("NVIDIA L40 PCIe 48GB", 48, 0.75, 12.4),
    "l4-pcie-24gb": Gpu("NVIDIA L4 PCIe 24GB", 24, 0.30, 12.4),
    "v100-pcie-16gb": Gpu("NVIDIA Tesla V100 PCIe 16GB", 16, 0.18, 12.2),
}

# city, state/province, country, tier, dedicated IPs available, {v0Name: max_count}
_SITES: tuple[tuple[str, str, str, int, bool, dict[str, int]], ...] = (
    ("Chubbuck", "Idaho", "United States", 1, True,
     {"geforcertx4090-pcie-24gb": 4, "h100-sxm5-80gb": 8, "geforcertx5090-pcie-32gb": 2}),
    ("Manassas", "Virginia", "United States", 3, True,
     {"geforcertx4090-pcie-24gb": 2, "rtxa6000-pcie-48gb": 4, "a100-pcie-80gb": 2}),
    ("Orlando", "Florida", "United States", 2, True,
     {"geforcertx3090-pcie-24gb": 4, "rtxa4000-pcie-16gb": 8, "l4-pcie-24gb": 2}),
    ("Joplin", "Missouri", "United States", 2, False,
     {"l40-pcie-48gb": 2, "v100-pcie-16gb": 4, "geforcertx4090-pcie-24gb": 1}),
    ("Winnipeg", "Manitoba", "Canada", 1, True,
     {"geforcertx3090-pcie-24gb": 2, "rtxa4000-pcie-16gb": 4}),
)  # fmt: skip
STALE = {("Chubbuck", "h100-sxm5-80gb"), ("Winnipeg", "geforcertx3090-pcie-24gb")}
"""(city, v0Name) pairs that advertise capacity but never have a free node."""
IGNORES_PORT_FORWARDS = {"Winnipeg"}
"""Cities where `port_forwards` are silently ignored (BUG-008)."""
PRICING = {"per_vcpu_hr": 0.003, "per_gb_ram_hr": 0.002, "per_gb_storage_hr": 0.00005}
NO_GPU_TO_START = "Not enough GPUs available on the hostnode to start this instance"
"""[INFER] words: TensorDock's errors come as `{"status": 400, "error": "…"}`, capacity ones with
HTTP 200 (as "No available nodes found" does at create); the real text is not documented."""


@dataclass(frozen=True)
class Site:
    """One location with its GPUs."""

    id: str
    city: str
    stateprovince: str
    country: str
    tier: int
    dedicated_ip: bool
    gpus: dict[str, int]
    prices: dict[str, float]


def sites(world: World) -> list[Site]:
    """The locations of this world (ids and prices fixed by the seed)."""
    rng = world.rng(PROVIDER)
    out = []
    for city, state, country, tier, dedicated, gpus in _SITES:
        site_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        prices = {n: round(GPUS[n].price * rng.uniform(0.9, 1.2), 4) for n in gpus}
        out.append(Site(site_id, city, state, country, tier, dedicated, gpus, prices))
    return out


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _soft_error(message: str) -> Response:
    """TensorDock's HTTP-200-with-an-error body."""
    return json_response({"status": 400, "error": message}, 200)


def _auth(world: World, request: Request, *, optional: bool = False) -> Response | None:
    header = request.headers.get("authorization")
    if header is None and optional:
        return None
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token == world.keys[PROVIDER]:
        return None
    if scheme.lower() == "bearer" and _UUID_RE.match(token):
        return _error(403, "Access denied")
    return _error(401, "Invalid API credentials")


def _used(world: World, offer_id: str) -> int:
    """GPUs of `offer_id` held by instances: a stopped one holds its GPU until it is released."""
    now = world.now()
    return sum(
        i.gpu_count for i in world.live(PROVIDER) if i.offer_id == offer_id and not i.released(now)
    )


def _gpu_entry(world: World, site: Site, name: str) -> dict[str, Any]:
    gpu = GPUS[name]
    advertised = site.gpus[name]
    stale = (site.city, name) in STALE
    left = advertised if stale else max(0, advertised - _used(world, f"{site.id}:{name}"))
    return {
        "v0Name": name,
        "displayName": gpu.display,
        "max_count": left,
        "price_per_hr": site.prices[name],
        "resources": {
            "max_vcpus": 16 * advertised,
            "max_ram_gb": 64 * advertised,
            "max_storage_gb": 2000 * advertised,
        },
        "pricing": dict(PRICING),
        "network_features": {
            "dedicated_ip_available": site.dedicated_ip,
            "port_forwarding_available": True,
            "network_storage_available": False,
        },
    }


def _location(world: World, site: Site) -> dict[str, Any]:
    gpus = [_gpu_entry(world, site, n) for n in site.gpus]
    return {
        "id": site.id,
        "city": site.city,
        "stateprovince": site.stateprovince,
        "country": site.country,
        "tier": site.tier,
        "gpus": [g for g in gpus if g["max_count"] > 0],
    }


def _issue(code: str, message: str, *path: str) -> dict[str, Any]:
    return {"code": code, "message": message, "path": ["data", "attributes", *path]}


def _validate(body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The attributes of a create request and the validation issues found in it."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return {}, [{"code": "invalid_type", "message": "Expected object", "path": ["data"]}]
    attrs = data.get("attributes")
    if not isinstance(attrs, dict):
        issue = {
            "code": "invalid_type",
            "message": "Expected object",
            "path": ["data", "attributes"],
        }
        return {}, [issue]
    issues = []
    if data.get("type") != "virtualmachine":
        issues.append(
            {
                "code": "invalid_literal",
                "message": "Expected virtualmachine",
                "path": ["data", "type"],
            }
        )
    if not isinstance(attrs.get("name"), str) or not attrs["name"].strip():
        issues.append(_issue("required", "Name is required", "name"))
    if attrs.get("image") not in IMAGES:
        issues.append(_issue("invalid_enum_value", f"Image must be one of {list(IMAGES)}", "image"))
    if "location_id" not in attrs and "hostnode_id" not in attrs:
        issues.append(_issue("required", "location_id or hostnode_id is required", "location_id"))
    has_key, has_key_id = bool(attrs.get("ssh_key")), bool(attrs.get("ssh_key_id"))
    if has_key == has_key_id:
        message = "Provide either ssh_key or ssh_key_id" if has_key else "SSH key is required"
        issues.append(_issue("custom" if has_key else "required", message, "ssh_key"))
    res = attrs.get("resources")
    if not isinstance(res, dict):
        issues.append(_issue("required", "Resources are required", "resources"))
        return attrs, issues
    for field, step, low in (("vcpu_count", 2, 2), ("ram_gb", 1, 1), ("storage_gb", 1, 1)):
        value = res.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            issues.append(
                _issue("invalid_type", f"{field} must be a positive integer", "resources", field)
            )
        elif value % step:
            issues.append(
                _issue("custom", f"{field} must be a multiple of {step}", "resources", field)
            )
    storage = res.get("storage_gb")
    if isinstance(storage, int) and 0 < storage < MIN_STORAGE_GB:
        issues.append(
            _issue(
                "too_small",
                f"Storage must be at least {MIN_STORAGE_GB} GB",
                "resources",
                "storage_gb",
            )
        )
    gpus = res.get("gpus")
    if not isinstance(gpus, dict) or not gpus:
        issues.append(_issue("too_small", "At least one GPU is required", "resources", "gpus"))
    else:
        for name, spec in gpus.items():
            count = spec.get("count") if isinstance(spec, dict) else None
            if name not in GPUS:
                issues.append(
                    _issue("invalid_enum_value", f"Unknown GPU model {name}", "resources", "gpus")
                )
            elif not isinstance(count, int) or isinstance(count, bool) or count < 1:
                issues.append(
                    _issue("too_small", "GPU count must be at least 1", "resources", "gpus", name)
                )
    return attrs, issues


def runcmd_keys(runcmd: Any) -> dict[str, list[str]]:
    """The public keys each account gets from `echo '<key>' >> <authorized_keys>` runcmd lines."""
    found: dict[str, list[str]] = {"user": [], "root": []}
    if not isinstance(runcmd, list):
        return found
    for entry in runcmd:
        line = shlex.join(map(str, entry)) if isinstance(entry, list) else str(entry)
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:
            continue
        for at, token in enumerate(tokens):
            if token not in (">>", ">") or at + 1 >= len(tokens):
                continue
            account = KEY_FILES.get(tokens[at + 1])
            start = at
            while start > 0 and tokens[start - 1] not in (";", "&&", "||", "|"):
                start -= 1
            words = tokens[start:at]
            if account is None or not words or words[0] != "echo":
                continue
            text = " ".join(w for w in words[1:] if not w.startswith("-"))
            if _KEY_RE.match(text) and text not in found[account]:
                found[account].append(text)
    return found


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(instance: SimInstance, now: float) -> str:
    if instance.destroyed_at is not None:
        return "deleting"
    phase = instance.phase(now)
    if phase == "booting":
        first_half = now < instance.created_at + instance.boot_s / 2
        return "creating" if instance.powered_on_at is None and first_half else "starting"
    if phase == "running":
        return "running"
    if instance.stopping(now):
        return "stopping"
    return "StoppedDisassociated" if instance.released(now) else "stopped"


def _gpu_free_for(world: World, instance: SimInstance) -> bool:
    """Whether the location still has the GPUs of a stopped instance that released them."""
    site = next((s for s in sites(world) if s.id == instance.extra.get("location_id")), None)
    gpu = instance.extra.get("gpu")
    if site is None or gpu not in site.gpus or (site.city, gpu) in STALE:
        return False
    return instance.gpu_count <= site.gpus[gpu] - _used(world, instance.offer_id)


def _power_answer(instance: SimInstance, status: str) -> Response:
    """The SPEC's answer to a start or stop."""
    data = {"type": "instance", "id": instance.id, "attributes": {"status": status}}
    return json_response({"data": data})


def _reachable(instance: SimInstance, now: float) -> bool:
    return instance.destroyed_at is None and instance.phase(now) == "running"


def _port_forwards(instance: SimInstance, now: float) -> list[dict[str, int]]:
    forwards: list[dict[str, int]] = []
    if not _reachable(instance, now) or instance.ssh_port is None:
        return forwards
    if instance.extra.get("dedicated_ip") or instance.extra.get("forwards_honoured"):
        forwards.append({"internal_port": 22, "external_port": instance.ssh_port})
    return forwards


def _view(instance: SimInstance, now: float) -> dict[str, Any]:
    """The unwrapped object `GET /instances/{id}` answers."""
    return {
        "type": "virtualmachine",
        "id": instance.id,
        "name": instance.label,
        "status": _status(instance, now),
        "ipAddress": "127.0.0.1" if _reachable(instance, now) else None,
        "portForwards": _port_forwards(instance, now),
        "rateHourly": instance.price_per_hour,
        "location_id": instance.extra.get("location_id"),
        "image": instance.extra.get("image"),
        "resources": {
            "vcpu_count": instance.extra.get("vcpu_count"),
            "ram_gb": instance.extra.get("ram_gb"),
            "storage_gb": instance.extra.get("storage_gb"),
            "gpus": {instance.extra.get("gpu"): {"count": instance.gpu_count}},
        },
    }


def _flat(instance: SimInstance, now: float) -> dict[str, Any]:
    """An item of the flat (observed) list shape."""
    view = _view(instance, now)
    return {
        "id": instance.id,
        "name": instance.label,
        "status": view["status"],
        "ipAddress": view["ipAddress"],
        "gpu_model": instance.extra.get("gpu"),
        "gpu_count": instance.gpu_count,
        "vcpus": instance.extra.get("vcpu_count"),
        "ram_gb": instance.extra.get("ram_gb"),
        "storage_gb": instance.extra.get("storage_gb"),
        "price_per_hour": instance.price_per_hour,
        "created_at": _iso(instance.created_at),
        "location_id": instance.extra.get("location_id"),
    }


def build_app(world: World) -> Starlette:
    """The TensorDock v2 API over `world`, routed under `/api/v2`."""

    def route(name: str) -> Any:
        return endpoint(world, PROVIDER, name)

    @route("locations")
    async def locations(request: Request) -> Response:
        if (denied := _auth(world, request, optional=True)) is not None:
            return denied
        return json_response({"data": {"locations": [_location(world, s) for s in sites(world)]}})

    @route("create")
    async def create(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        body = await json_body(request)
        attrs, issues = _validate(body)
        if issues:
            return json_response(issues, 400)
        if world.credit < 1.0:
            return _error(402, "Insufficient balance: a minimum balance of $1 is required")
        if "location_id" not in attrs:
            return _soft_error("No available nodes found")
        site = next((s for s in sites(world) if s.id == attrs["location_id"]), None)
        res = attrs["resources"]
        (gpu_name, spec), *_ = res["gpus"].items()
        count = spec["count"]
        if site is None:
            return _soft_error("No available nodes found")
        if gpu_name not in site.gpus:
            return _soft_error("GPU type is out of stock")
        offer_id = f"{site.id}:{gpu_name}"
        if (site.city, gpu_name) in STALE or count > site.gpus[gpu_name] - _used(world, offer_id):
            return _soft_error("No available nodes found")
        limits = _gpu_entry(world, site, gpu_name)["resources"]
        if (
            res["vcpu_count"] > limits["max_vcpus"]
            or res["ram_gb"] > limits["max_ram_gb"]
            or res["storage_gb"] > limits["max_storage_gb"]
        ):
            return _soft_error(
                "Insufficient capacity on available nodes for the requested resources"
            )
        dedicated = attrs.get("useDedicatedIp") is True
        if dedicated and not site.dedicated_ip:
            return _soft_error("no available public ips")
        forwards = attrs.get("port_forwards") or []
        forwards_ssh = any(isinstance(f, dict) and f.get("internal_port") == 22 for f in forwards)
        if not dedicated and not forwards_ssh and attrs["image"] != "windows10":
            return json_response(
                {"status": 400, "error": "SSH port (22) must be forwarded for Ubuntu VMs"}, 400
            )
        cloud_init = attrs.get("cloud_init") if isinstance(attrs.get("cloud_init"), dict) else {}
        keys = runcmd_keys(cloud_init.get("runcmd"))
        gpu = GPUS[gpu_name]
        price = (
            count * site.prices[gpu_name]
            + res["vcpu_count"] * PRICING["per_vcpu_hr"]
            + res["ram_gb"] * PRICING["per_gb_ram_hr"]
            + res["storage_gb"] * PRICING["per_gb_storage_hr"]
        )
        serial = world.next_id(PROVIDER)
        instance_id = str(
            uuid.UUID(int=world.rng(PROVIDER, f"id:{serial}").getrandbits(128), version=4)
        )
        instance = await world.create_instance(
            PROVIDER,
            instance_id=instance_id,
            offer_id=offer_id,
            label=attrs["name"],
            gpu_name=gpu.display,
            gpu_count=count,
            vram_mb=gpu.vram_gb * 1024,
            cuda=gpu.cuda,
            price_per_hour=round(price, 6),
            authorized_keys=keys["user"],
            extra={
                "location_id": site.id,
                "city": site.city,
                "gpu": gpu_name,
                "vcpu_count": res["vcpu_count"],
                "ram_gb": res["ram_gb"],
                "storage_gb": res["storage_gb"],
                "image": attrs["image"],
                "dedicated_ip": dedicated,
                "forwards_honoured": forwards_ssh and site.city not in IGNORES_PORT_FORWARDS,
                "root_keys": keys["root"],
            },
        )
        answer = {"type": "virtualmachine", "id": instance.id, "name": instance.label}
        return json_response({"data": {**answer, "status": "creating"}}, 201)

    @route("get")
    async def get(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        instance = world.get(PROVIDER, request.path_params["id"])
        now = world.now()
        if instance is None or instance.phase(now) == "destroyed":
            return _error(404, "Instance not found")
        return json_response(_view(instance, now))

    @route("list")
    async def list_instances(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        now = world.now()
        shape = app.state.list_shape
        if shape == "alternate":
            app.state.list_calls += 1
            shape = "wrapped" if app.state.list_calls % 2 else "bare"
        live = world.live(PROVIDER)
        if shape == "bare":
            return json_response({"data": [_flat(i, now) for i in live]})
        items = [
            {
                "type": "virtualmachine",
                "id": i.id,
                "attributes": {"name": i.label, "status": _status(i, now)},
            }
            for i in live
        ]
        return json_response({"data": {"instances": items}})

    @route("destroy")
    async def destroy(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        if not await world.destroy(PROVIDER, request.path_params["id"], linger_s=DELETE_LINGER_S):
            return _error(404, "Instance not found")
        message = {"message": "Instance deleted successfully"}
        return json_response({"data": {"type": "success", "attributes": message}})

    def power_target(request: Request) -> SimInstance | Response:
        """The instance a start or stop names, or its 404 (unknown, deleted or being deleted)."""
        instance = world.get(PROVIDER, request.path_params["id"])
        if (
            instance is None
            or instance.destroyed_at is not None
            or instance.phase(world.now()) == "destroyed"
        ):
            return _error(404, "Instance not found")
        return instance

    @route("stop")
    async def stop(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        instance = power_target(request)
        if isinstance(instance, Response):
            return instance
        if instance.stopped:
            return _error(400, "Instance is already stopped")  # [INFER] words
        await world.power_off(PROVIDER, instance.id)
        return _power_answer(instance, "stopping")

    @route("start")
    async def start(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        instance = power_target(request)
        if isinstance(instance, Response):
            return instance
        now = world.now()
        if not instance.stopped or instance.stopping(now):
            return _error(400, "Instance must be stopped to start it")  # [INFER] words
        if world.faults.node(PROVIDER).start_no_capacity:
            instance.released_at = min(now, instance.released_at or now)
            world.save()
            return _soft_error(NO_GPU_TO_START)
        if instance.released(now) and not _gpu_free_for(world, instance):
            return _soft_error(NO_GPU_TO_START)
        world.power_on(PROVIDER, instance.id)
        return _power_answer(instance, "starting")

    app = sim_app(
        world,
        [
            Route("/api/v2/locations", locations, methods=["GET"]),
            Route("/api/v2/instances", create, methods=["POST"]),
            Route("/api/v2/instances", list_instances, methods=["GET"]),
            Route("/api/v2/instances/{id}", get, methods=["GET"]),
            Route("/api/v2/instances/{id}", destroy, methods=["DELETE"]),
            Route("/api/v2/instances/{id}/stop", stop, methods=["POST"]),
            Route("/api/v2/instances/{id}/start", start, methods=["POST"]),
        ],
    )
    app.state.list_shape = "alternate"
    app.state.list_calls = 0
    return app
