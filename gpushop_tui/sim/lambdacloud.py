"""Simulated Lambda Cloud API (`/api/v1`), in the shapes of provider-apis.md §4.

- Auth: `Authorization: Bearer <key>` or `Basic base64(<key>:)`; missing or wrong is 401
  `global/invalid-api-key`. Every answer is `{"data": …}`; every error is
  `{"error": {"code", "message", "suggestion"?}}`.
- `GET /instance-types`: a dict keyed by type name, nine types with prices in integer cents;
  capacity is per (type, region) and used up by live instances; one type is sold out everywhere
  (an empty `regions_with_capacity_available`). `GET /regions` lists the four regions.
- `GET/POST /ssh-keys`, `DELETE /ssh-keys/{id}`: a key named like an existing one is 409
  `global/conflict` [INFER]; without `public_key` a pair is generated and `private_key` returned
  once. Keys live with the app (`app.state.ssh_keys`), not the world: a restarted simulator has
  none, while its instances keep the keys they were launched with.
- `POST /instance-operations/launch`: `region_name`, `instance_type_name` and exactly one existing
  `ssh_key_names` entry are required, `name` is at most 64 characters, and a field the API does
  not define is 400 `global/invalid-parameters` naming it [INFER]; no capacity left is 400
  `instance-operations/launch/insufficient-capacity`. The answer is `{"instance_ids": [id]}`.
- Instances read `booting` (no `ip`) until booted, then `active` at 127.0.0.1; after a terminate
  they read `terminating` for `TERMINATE_LINGER_S`, then are gone (404
  `global/object-does-not-exist`, not listed). With `NodeFaults.destroy_stuck` they stay
  `terminating` for ever. A VM powered off from inside reads `unhealthy` [INFER]. Restart reboots
  the VM (`booting` again for the boot time) [INFER].
- Rate limits on the world clock: a token bucket of `RATE_PER_S` requests a second (burst
  `RATE_BURST` [INFER]) over every route, and one launch per `LAUNCH_INTERVAL_S`. Over either,
  429 `global/too-many-requests` [INFER] without Retry-After. `World.rate_limited = False`
  lifts both (tests that drive many calls at one instant).
- Sim-only: instance objects carry `ssh_port` (the loopback port of the SSH node) when known,
  since the real API has no port field (real SSH is `ip` on port 22).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gpushop_tui.sim.http import Handler, endpoint, json_body, json_response, sim_app
from gpushop_tui.sim.world import SimInstance, World

PROVIDER = "lambda"
TERMINATE_LINGER_S = 10.0
"""How long a terminated instance reads `terminating` before it is gone."""
RATE_PER_S = 1.0
RATE_BURST = 5
LAUNCH_INTERVAL_S = 12.0
NAME_MAX = 64
KEY_NAME_MAX = 64
CUDA = 12.4
DRIVER = "550.127.05"
BAD_KEY = ("API key was invalid, expired, or deleted.", "Check your API key or create a new one.")
KEY_RE = re.compile(
    r"(ssh-rsa|ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-dss) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?"
)
LAUNCH_FIELDS = frozenset(
    {
        "region_name",
        "instance_type_name",
        "ssh_key_names",
        "file_system_names",
        "file_system_mounts",
        "hostname",
        "name",
        "image",
        "user_data",
        "tags",
        "firewall_rulesets",
        "quantity",
    }
)
REGIONS = {
    "us-east-1": "Virginia, USA",
    "us-west-1": "California, USA",
    "europe-central-1": "Germany",
    "asia-northeast-1": "Tokyo, Japan",
}


@dataclass(frozen=True)
class InstanceType:
    """One launchable type, what its node's `nvidia-smi` calls the card, and how many of it each
    region can still start."""

    name: str
    gpu_description: str
    smi_name: str
    vram_gb: int
    gpus: int
    cents: int
    vcpus: int
    memory_gib: int
    storage_gib: int
    capacity: dict[str, int] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return f"{self.gpus}x {self.gpu_description}"


CATALOGUE = {
    t.name: t
    for t in (
        InstanceType("gpu_1x_a10", "A10 (24 GB PCIe)", "NVIDIA A10", 24, 1, 75, 30, 200, 1400,
                     {"us-east-1": 2, "us-west-1": 1}),
        InstanceType("gpu_1x_a100_sxm4", "A100 (40 GB SXM4)", "NVIDIA A100-SXM4-40GB", 40, 1,
                     129, 30, 200, 512, {"us-west-1": 1, "europe-central-1": 1}),
        InstanceType("gpu_8x_a100_80gb_sxm4", "A100 (80 GB SXM4)", "NVIDIA A100-SXM4-80GB", 80,
                     8, 1432, 240, 1800, 19500, {"us-east-1": 1}),
        InstanceType("gpu_1x_h100_pcie", "H100 (80 GB PCIe)", "NVIDIA H100 PCIe", 80, 1, 249, 26,
                     200, 1000, {"us-west-1": 2, "asia-northeast-1": 1}),
        InstanceType("gpu_1x_h100_sxm5", "H100 (80 GB SXM5)", "NVIDIA H100 80GB HBM3", 80, 1,
                     329, 26, 225, 2750, {"us-east-1": 2, "us-west-1": 1, "europe-central-1": 1}),
        InstanceType("gpu_8x_h100_sxm5", "H100 (80 GB SXM5)", "NVIDIA H100 80GB HBM3", 80, 8,
                     2392, 208, 1800, 24780, {"us-east-1": 1}),
        InstanceType("gpu_1x_rtx6000", "RTX 6000 (24 GB)", "Quadro RTX 6000", 24, 1, 50, 14, 46,
                     512, {"us-west-1": 1, "asia-northeast-1": 1}),
        InstanceType("gpu_1x_gh200", "GH200 (96 GB)", "NVIDIA GH200 480GB", 96, 1, 149, 64, 432,
                     4000, {"us-east-1": 2}),
        InstanceType("gpu_8x_b200_sxm6", "B200 (180 GB SXM6)", "NVIDIA B200", 180, 8, 3992, 208,
                     2900, 22000),  # sold out everywhere
    )
}  # fmt: skip


@dataclass
class Bucket:
    """A token bucket on the world clock; `take` spends a token if there is one."""

    per_s: float
    burst: int
    tokens: float = 0.0
    stamp: float | None = None

    def take(self, now: float) -> bool:
        if self.stamp is None:
            self.tokens = float(self.burst)
        else:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_s)
        self.stamp = now
        if self.tokens < 1 - 1e-9:  # float slack: a wait of exactly 1/rate must suffice
            return False
        self.tokens = max(0.0, self.tokens - 1)
        return True


def error(status: int, code: str, message: str, suggestion: str | None = None) -> Response:
    """Lambda's error envelope."""
    body: dict[str, Any] = {"code": code, "message": message}
    if suggestion is not None:
        body["suggestion"] = suggestion
    return json_response({"error": body}, status)


def _invalid(message: str) -> Response:
    return error(400, "global/invalid-parameters", message)


def _missing(what: str) -> Response:
    return error(404, "global/object-does-not-exist", f"{what} does not exist")


def _authorized(world: World, request: Request) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        key = value.strip()
    elif scheme.lower() == "basic":
        try:
            key = base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return False
    else:
        return False
    return bool(key) and key == world.keys[PROVIDER]


def _free(world: World, itype: InstanceType, region: str) -> int:
    offer_id = f"{itype.name}:{region}"
    used = sum(1 for i in world.live(PROVIDER) if i.offer_id == offer_id)
    return itype.capacity.get(region, 0) - used


def _region(name: str) -> dict[str, str]:
    return {"name": name, "description": REGIONS[name]}


def _type_object(itype: InstanceType) -> dict[str, Any]:
    return {
        "name": itype.name,
        "description": itype.description,
        "gpu_description": itype.gpu_description,
        "price_cents_per_hour": itype.cents,
        "specs": {
            "vcpus": itype.vcpus,
            "memory_gib": itype.memory_gib,
            "storage_gib": itype.storage_gib,
            "gpus": itype.gpus,
        },
    }


def _status(instance: SimInstance, now: float) -> str:
    phase = instance.phase(now)
    if instance.destroyed_at is not None:
        return "terminating"
    if phase == "stopped":
        return "unhealthy"
    return "active" if phase == "running" else "booting"


def view(instance: SimInstance, now: float) -> dict[str, Any]:
    """An instance object as `GET /instances/{id}` answers it (a live instance)."""
    extra = instance.extra
    status = _status(instance, now)
    ip = extra["ip"] if status != "booting" else None
    action = {"available": status == "active"}
    record: dict[str, Any] = {
        "id": instance.id,
        "name": instance.label or None,
        "ip": ip,
        "private_ip": extra["private_ip"] if ip else None,
        "status": status,
        "ssh_key_names": extra["ssh_key_names"],
        "file_system_names": [],
        "region": _region(extra["region"]),
        "instance_type": _type_object(CATALOGUE[extra["instance_type"]]),
        "hostname": extra["hostname"],
        "jupyter_token": extra["jupyter_token"],
        "jupyter_url": f"https://jupyter-{instance.id[:12]}.lambdaspaces.com/?token="
        + extra["jupyter_token"],
        "is_reserved": False,
        "actions": {
            "migrate": {
                "available": False,
                "reason_code": "vm-has-not-launched",
                "reason_description": "Migration is not available for this instance",
            },
            "rebuild": action,
            "restart": action,
            "cold_reboot": action,
            "terminate": {"available": status != "terminating"},
        },
        "tags": extra["tags"],
    }
    if instance.ssh_port is not None:
        record["ssh_port"] = instance.ssh_port
    return record


def _launch_problem(body: Any, keys: dict[str, dict[str, str]]) -> str | None:
    """What is wrong with a launch body, in the API's words [INFER]; None when it is fine."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    unknown = sorted(set(body) - LAUNCH_FIELDS)
    if unknown:
        return f"Unknown fields: {', '.join(unknown)}"
    for required in ("region_name", "instance_type_name"):
        if not isinstance(body.get(required), str) or not body[required]:
            return f"Missing required field: {required}"
    names = body.get("ssh_key_names")
    if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
        return "ssh_key_names must list exactly one SSH key name"
    if not any(k["name"] == names[0] for k in keys.values()):
        return f"SSH key '{names[0]}' does not exist"
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > NAME_MAX):
        return f"name must be a string of at most {NAME_MAX} characters"
    if body.get("file_system_names"):
        return "File system does not exist"
    if body.get("quantity", 1) != 1:
        return "quantity must be 1"
    if body["region_name"] not in REGIONS:
        return f"Unknown region: {body['region_name']}"
    if body["instance_type_name"] not in CATALOGUE:
        return f"Unknown instance type: {body['instance_type_name']}"
    return None


def _instance_ids(body: Any) -> list[str] | None:
    ids = body.get("instance_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        return None
    return ids


def build_app(world: World) -> Starlette:
    """The Lambda Cloud API over `world`, routed under `/api/v1`."""
    keys: dict[str, dict[str, str]] = {}
    general = Bucket(RATE_PER_S, RATE_BURST)
    launches = Bucket(1 / LAUNCH_INTERVAL_S, 1)

    def route(name: str, *, launch: bool = False) -> Callable[[Handler], Handler]:
        """Fault plan first (`endpoint`), then auth, then the rate limits."""

        def wrap(handler: Handler) -> Handler:
            async def guarded(request: Request) -> Response:
                if not _authorized(world, request):
                    return error(401, "global/invalid-api-key", *BAD_KEY)
                if world.rate_limited:
                    now = world.clock.monotonic()
                    if not general.take(now) or (launch and not launches.take(now)):
                        return error(429, "global/too-many-requests", "Too many requests")
                return await handler(request)

            return endpoint(world, PROVIDER, name)(guarded)

        return wrap

    def find(instance_id: str) -> SimInstance | None:
        instance = world.get(PROVIDER, instance_id)
        if instance is None or instance.phase(world.now()) == "destroyed":
            return None
        return instance

    @route("instance_types")
    async def instance_types(request: Request) -> Response:
        data = {
            t.name: {
                "instance_type": _type_object(t),
                "regions_with_capacity_available": [
                    _region(r) for r in REGIONS if _free(world, t, r) > 0
                ],
            }
            for t in CATALOGUE.values()
        }
        return json_response({"data": data})

    @route("regions")
    async def regions(request: Request) -> Response:
        return json_response({"data": [_region(r) for r in REGIONS]})

    @route("ssh_keys")
    async def list_keys(request: Request) -> Response:
        return json_response({"data": list(keys.values())})

    @route("add_key")
    async def add_key(request: Request) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict) or set(body) - {"name", "public_key"}:
            return _invalid("Body must be an object with name and optional public_key")
        name, public_key = body.get("name"), body.get("public_key")
        if not isinstance(name, str) or not name.strip() or len(name) > KEY_NAME_MAX:
            return _invalid(f"name must be 1 to {KEY_NAME_MAX} characters")
        if any(k["name"] == name for k in keys.values()):
            return error(409, "global/conflict", f"An SSH key named '{name}' already exists")
        private_key: str | None = None
        if public_key is None:
            pair = asyncssh.generate_private_key("ssh-ed25519")
            private_key = pair.export_private_key().decode()
            public_key = pair.export_public_key().decode().strip()
        elif not isinstance(public_key, str) or not KEY_RE.fullmatch(public_key.strip()):
            return _invalid("Invalid SSH public key")
        serial = world.next_id(PROVIDER)
        key_id = f"{world.rng(PROVIDER, f'key:{serial}').getrandbits(128):032x}"
        keys[key_id] = {"id": key_id, "name": name, "public_key": public_key.strip()}
        data: dict[str, str] = dict(keys[key_id])
        if private_key is not None:
            data["private_key"] = private_key
        return json_response({"data": data})

    @route("delete_key")
    async def delete_key(request: Request) -> Response:
        if keys.pop(request.path_params["key_id"], None) is None:
            return _missing("SSH key")
        return json_response({"data": {}})

    @route("launch", launch=True)
    async def launch(request: Request) -> Response:
        body = await json_body(request)
        if (problem := _launch_problem(body, keys)) is not None:
            return _invalid(problem)
        itype, region = CATALOGUE[body["instance_type_name"]], body["region_name"]
        if _free(world, itype, region) <= 0:
            return error(
                400,
                "instance-operations/launch/insufficient-capacity",
                "Not enough capacity to fulfill launch request.",
                "Choose another instance type or region, or try again later.",
            )
        key = next(k for k in keys.values() if k["name"] == body["ssh_key_names"][0])
        serial = world.next_id(PROVIDER)
        rng = world.rng(PROVIDER, f"instance:{serial}")
        instance_id = f"{rng.getrandbits(128):032x}"
        instance = await world.create_instance(
            PROVIDER,
            instance_id=instance_id,
            offer_id=f"{itype.name}:{region}",
            label=body.get("name") or "",
            gpu_name=itype.smi_name,
            gpu_count=itype.gpus,
            vram_mb=itype.vram_gb * 1024,
            cuda=CUDA,
            price_per_hour=itype.cents / 100,
            authorized_keys=[key["public_key"]],
            extra={
                "region": region,
                "instance_type": itype.name,
                "ssh_key_names": [key["name"]],
                "ip": "127.0.0.1",
                "private_ip": f"10.19.{serial // 250 % 250}.{serial % 250 + 2}",
                "hostname": body.get("hostname"),
                "jupyter_token": f"{rng.getrandbits(128):032x}",
                "tags": body.get("tags") or [],
            },
        )
        instance.driver = DRIVER
        world.save()
        return json_response({"data": {"instance_ids": [instance.id]}})

    @route("list")
    async def list_instances(request: Request) -> Response:
        now = world.now()
        return json_response({"data": [view(i, now) for i in world.live(PROVIDER)]})

    @route("get")
    async def get(request: Request) -> Response:
        instance = find(request.path_params["instance_id"])
        if instance is None:
            return _missing("Instance")
        return json_response({"data": view(instance, world.now())})

    def targets(body: Any) -> list[SimInstance] | Response:
        """The live instances a restart or terminate names, or the error for the whole call."""
        ids = _instance_ids(body)
        if ids is None:
            return _invalid("instance_ids must be a non-empty list of instance ids")
        found = [find(i) for i in ids]
        if any(i is None for i in found):
            return _missing("Instance")
        return [i for i in found if i is not None]

    @route("terminate")
    async def terminate(request: Request) -> Response:
        named = targets(await json_body(request))
        if isinstance(named, Response):
            return named
        for instance in named:
            if instance.destroyed_at is None:
                await world.destroy(PROVIDER, instance.id, linger_s=TERMINATE_LINGER_S)
        now = world.now()
        return json_response({"data": {"terminated_instances": [view(i, now) for i in named]}})

    @route("restart")
    async def restart(request: Request) -> Response:
        named = targets(await json_body(request))
        if isinstance(named, Response):
            return named
        if any(i.destroyed_at is not None for i in named):
            return _invalid("A terminating instance cannot be restarted")
        for instance in named:
            await world.power_off(PROVIDER, instance.id)
            world.power_on(PROVIDER, instance.id)
        now = world.now()
        return json_response({"data": {"restarted_instances": [view(i, now) for i in named]}})

    app = sim_app(
        world,
        [
            Route("/api/v1/instance-types", instance_types, methods=["GET"]),
            Route("/api/v1/regions", regions, methods=["GET"]),
            Route("/api/v1/ssh-keys", list_keys, methods=["GET"]),
            Route("/api/v1/ssh-keys", add_key, methods=["POST"]),
            Route("/api/v1/ssh-keys/{key_id}", delete_key, methods=["DELETE"]),
            Route("/api/v1/instance-operations/launch", launch, methods=["POST"]),
            Route("/api/v1/instance-operations/terminate", terminate, methods=["POST"]),
            Route("/api/v1/instance-operations/restart", restart, methods=["POST"]),
            Route("/api/v1/instances", list_instances, methods=["GET"]),
            Route("/api/v1/instances/{instance_id}", get, methods=["GET"]),
        ],
    )
    app.state.ssh_keys = keys
    return app
