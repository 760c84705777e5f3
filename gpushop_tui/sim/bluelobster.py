"""Simulated Blue Lobster API (`/api/v1`), with the quirks seen in production.

- `X-API-Key` auth: missing is 401, wrong is 403 (FastAPI-style `detail` bodies).
- `GET /instances/available`: 19 types (2 CPU, 17 GPU), prices in integer cents, `gpu_model`
  a string or a list, no VRAM field; an empty `regions_with_capacity_available` is sold out.
  Capacity is per (type, region) and used up by live instances (one RTX 5090 in all).
- `POST /instances/launch-instance`: flat `{task_id, vm_uuid, assigned_ip, status}` (BL-003);
  a key with a trailing newline (BL-004) or a name failing the regex (BL-002) is a 422 with
  field-level `errors`; sold out is 409 `no_capacity`. `metadata` is not kept (BL-007) and
  `template_name` changes nothing (BL-010).
- `GET /tasks/{id}`: PENDING for `PENDING_S`, PROCESSING until the instance has booted, then
  COMPLETED with `params.vm_uuid`; FAILED when the instance disappeared first, or for the next
  `app.state.fail_launches` launches.
- `GET /instances` is a plain array; `power_status` is null on running instances for every
  other launch (BL-008); after DELETE the instance and its IP linger `DELETE_LINGER_S`, then 404.
- `POST /instances/{uuid}/shutdown` stops the VM at once, keeping its disk, IP and capacity: it
  stays listed (`power_status` "stopped") and can still be deleted; its workload ends and its
  connections drop. `POST .../power-on` boots it again (`boot_s` before SSH answers, the same
  disk and host key); with `start_never_completes` or `start_no_capacity` it stays booting
  (`power_status` null, SSH refused) until shut down again. Both answer the Terraform
  client's `ActionResponse` (`status, message, task_id, instance_id, host, duration_ms,
  new_name`; the values are inferred); a power action in the wrong state is 409
  `invalid_state`; unknown, or deleted or being deleted, is 404.
- Sim-only: instance objects carry `ssh_port` (the loopback port of the SSH node) when known,
  since the real API has no port field (real SSH is the IP on port 22).
"""

from __future__ import annotations

import re
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

PROVIDER = "bluelobster"
PENDING_S = 1.0
DELETE_LINGER_S = 30.0
POWER_MS = {"shutdown": 4120, "power-on": 1630}
"""The `duration_ms` a power action reports (the sim acts at once; the numbers are made up)."""
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]")
KEY_RE = re.compile(
    r"(ssh-rsa|ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-dss) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?"
)
DRIVER = "560.35.05"
CUDA = 12.6
REGIONS = {
    "igl": {"description": "Wilmington", "city": "Wilmington", "state": "DE"},
    "phl": {"description": "Philadelphia", "city": "Philadelphia", "state": "PA"},
}
TEMPLATES = [
    ("UBUNTU-22-04", 100, "Ubuntu 22.04 Server", False),
    ("UBUNTU-22-04-NV", 102, "Ubuntu 22.04 + NVIDIA", True),
    ("UBUNTU-22-04-NV-DK", 101, "Ubuntu 22.04 + NVIDIA + Docker", True),
]


@dataclass(frozen=True)
class Model:
    """A GPU model: how the API names it, its short name in type names, VRAM, price per GPU."""

    api_name: str | list[str]
    short: str
    label: str
    vram_gb: int
    cents: int

    @property
    def name(self) -> str:
        return self.api_name if isinstance(self.api_name, str) else self.api_name[0]


MODELS = (
    Model("RTX 2080 Ti", "2080ti", "RTX 2080 Ti", 11, 12),
    Model("RTX A4000", "a4000", "RTX A4000", 16, 20),
    Model("RTX A5000", "a5000", "RTX A5000", 24, 30),
    Model("RTX A6000", "a6000", "RTX A6000", 48, 55),
    Model(["Quadro RTX 8000", "RTX 8000"], "8000", "RTX 8000", 48, 35),
    Model("RTX 5090", "5090", "RTX 5090", 32, 80),
)
_COUNTS = {"2080ti": (1, 2, 4), "a4000": (1, 2, 4), "a5000": (1, 2, 4), "a6000": (1, 2, 4, 8)}
_COUNTS |= {"8000": (1, 2), "5090": (1, 2)}


@dataclass(frozen=True)
class InstanceType:
    """One launchable type and how many of it each region can still start."""

    name: str
    description: str
    cents: int
    vcpus: int
    memory_gib: int
    storage_gib: int
    gpus: int
    model: Model | None
    capacity: dict[str, int]


def _catalogue() -> list[InstanceType]:
    types = [
        InstanceType("v1_cpu_small", "CPU Only Instance", 3, 1, 8, 250, 0, None,
                     {"igl": 10, "phl": 2}),
        InstanceType("v1_cpu_medium", "CPU Only Instance", 6, 4, 16, 250, 0, None, {"igl": 10}),
    ]  # fmt: skip
    for model in MODELS:
        for n in _COUNTS[model.short]:
            if model.short == "8000":
                capacity: dict[str, int] = {}  # sold out everywhere
            elif model.short == "5090":
                capacity = {"igl": 1} if n == 1 else {}  # only one card exists
            else:
                capacity = {"igl": 3 if n == 1 else 1}
            types.append(
                InstanceType(
                    name=f"v1_gpu_{n}x_{model.short}",
                    description=f"{n}x {model.label} ({model.vram_gb} GB)",
                    cents=model.cents * n,
                    vcpus=(8 if model.short in ("a6000", "8000", "5090") else 4) * n,
                    memory_gib=32 * n,
                    storage_gib=250 * n,
                    gpus=n,
                    model=model,
                    capacity=capacity,
                )
            )
    return types


CATALOGUE = {t.name: t for t in _catalogue()}


def _region(name: str) -> dict[str, Any]:
    info = REGIONS[name]
    location = {"city": info["city"], "state": info["state"], "country": "USA"}
    return {"name": name, "description": info["description"], "location": location}


def _free(world: World, itype: InstanceType, region: str) -> int:
    offer_id = f"{itype.name}:{region}"
    used = sum(1 for i in world.live(PROVIDER) if i.offer_id == offer_id)
    return itype.capacity.get(region, 0) - used


def _offer(world: World, itype: InstanceType) -> dict[str, Any]:
    specs: dict[str, Any] = {
        "vcpus": itype.vcpus,
        "memory_gib": itype.memory_gib,
        "storage_gib": itype.storage_gib,
        "gpus": itype.gpus,
    }
    if itype.model is not None:
        specs["gpu_model"] = itype.model.api_name
    return {
        "id": itype.name,
        "instance_type": {
            "name": itype.name,
            "description": itype.description,
            "gpu_description": "N/A" if itype.model else "",
            "price_cents_per_hour": itype.cents,
            "specs": specs,
        },
        "regions_with_capacity_available": [
            _region(r) for r in REGIONS if _free(world, itype, r) > 0
        ],
    }


def _detail(status: int, code: str, message: str) -> Response:
    return json_response({"detail": {"error": code, "message": message}}, status)


def _invalid(errors: list[dict[str, str]]) -> Response:
    body = {"error": "validation_error", "message": "Request validation failed", "errors": errors}
    return json_response(body, 422)


def _auth(world: World, request: Request) -> Response | None:
    key = request.headers.get("x-api-key")
    if not key:
        return _detail(401, "unauthorized", "Missing API key")
    if key != world.keys[PROVIDER]:
        return _detail(403, "forbidden", "Invalid API key")
    return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _view(instance: SimInstance, now: float) -> dict[str, Any]:
    """An instance object as `GET /instances/{uuid}` answers it."""
    extra = instance.extra
    phase = instance.phase(now)
    if phase == "stopped":
        power: str | None = "stopped"
    elif phase == "running" and instance.destroyed_at is None and extra.get("reports_power"):
        power = "running"
    else:
        power = None
    view: dict[str, Any] = {
        "uuid": instance.id,
        "name": instance.label,
        "host_id": extra["host_id"],
        "region": extra["region"],
        "ip_address": extra["ip"],
        "internal_ip": extra["internal_ip"],
        "cpu_cores": extra["vcpus"],
        "memory": extra["memory"],
        "storage": extra["storage"],
        "gpu_count": instance.gpu_count,
        "gpu_model": extra["gpu_model"],
        "power_status": power,
        "created_at": _iso(instance.created_at),
        "metadata": {},
        "instance_type": extra["instance_type"],
        "price_cents_per_hour": extra["cents"],
        "vm_username": instance.ssh_user,
        "template_name": extra["template_name"],
        "template_display_name": extra["template_display_name"],
        "os_type": "linux",
        "team_id": None,
        "team_name": None,
        "access_type": "owner",
    }
    if instance.ssh_port is not None:
        view["ssh_port"] = instance.ssh_port
    return view


def _task(instance: SimInstance, kind: str, now: float) -> dict[str, Any]:
    """The task record of the launch or delete of `instance`, as of `now`."""
    meta = instance.extra[kind]
    started = meta["created_at"]
    result: dict[str, Any] | None = None
    message = ""
    if kind == "launch_task":
        done_at = instance.created_at + instance.boot_s
        gone_at = instance.destroyed_at
        if gone_at is not None and gone_at <= done_at:
            done_at = gone_at
        if now >= done_at and gone_at == done_at:
            status, message = "FAILED", meta.get("reason") or "Instance was removed during launch"
        elif now < started + PENDING_S:
            status = "PENDING"
        elif now < done_at:
            status = "PROCESSING"
        else:
            status, message = "COMPLETED", "Instance launched"
            result = {"vm_uuid": instance.id, "ip_address": instance.extra["ip"]}
        operation = "launch_instance"
    else:
        done_at = instance.destroyed_at if instance.destroyed_at is not None else float("inf")
        if now < started + PENDING_S:
            status = "PENDING"
        elif now < done_at:
            status = "PROCESSING"
        else:
            status, message = "COMPLETED", "Instance deleted"
        operation = "delete_instance"
    updated = min(now, done_at) if status in ("COMPLETED", "FAILED") else now
    record: dict[str, Any] = {
        "task_id": meta["id"],
        "status": status,
        "operation": operation,
        "message": message,
        "params": {"vm_uuid": instance.id},
        "account_id": "acct-sim",
        "created_at": _iso(started),
        "updated_at": _iso(updated),
    }
    if result is not None:
        record["result"] = result
    return record


def _action(instance: SimInstance, action: str, message: str) -> dict[str, Any]:
    """The `ActionResponse` of a power action that has taken effect."""
    return {
        "status": "success",
        "message": message,
        "task_id": None,
        "instance_id": instance.id,
        "host": instance.extra["host_id"],
        "duration_ms": POWER_MS[action],
        "new_name": None,
    }


def _launch_errors(body: Any) -> list[dict[str, str]]:
    if not isinstance(body, dict):
        return [{"field": "body", "message": "Request body must be a JSON object"}]
    errors = []
    for field in ("region", "instance_type", "ssh_key"):
        if not isinstance(body.get(field), str) or not body[field]:
            errors.append({"field": field, "message": "Field required"})
    key = body.get("ssh_key")
    if isinstance(key, str) and key and not KEY_RE.fullmatch(key):
        message = "Invalid SSH public key format"
        if key != key.rstrip():
            message += ": must not end with whitespace or a newline"
        errors.append({"field": "ssh_key", "message": message})
    name = body.get("name")
    if name is not None and (
        not isinstance(name, str) or len(name) > 64 or not NAME_RE.fullmatch(name)
    ):
        errors.append(
            {
                "field": "name",
                "message": "String should match pattern '^[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]$' "
                "and have at most 64 characters",
            }
        )
    username = body.get("username", "ubuntu")
    if not isinstance(username, str) or not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", username):
        errors.append({"field": "username", "message": "Invalid username"})
    region = body.get("region")
    if isinstance(region, str) and region and region not in REGIONS:
        errors.append({"field": "region", "message": f"Unknown region '{region}'"})
    itype = body.get("instance_type")
    if isinstance(itype, str) and itype and itype not in CATALOGUE:
        errors.append({"field": "instance_type", "message": f"Unknown instance type '{itype}'"})
    return errors


def _short_id(world: World, serial: int, purpose: str) -> str:
    return f"task_{world.rng(PROVIDER, f'{purpose}:{serial}').getrandbits(48):012x}"


def build_app(world: World) -> Starlette:
    """The Blue Lobster API over `world`, routed under `/api/v1`."""

    def route(name: str) -> Any:
        return endpoint(world, PROVIDER, name)

    def find(instance_id: str) -> SimInstance | None:
        instance = world.get(PROVIDER, instance_id)
        if instance is None or instance.phase(world.now()) == "destroyed":
            return None
        return instance

    @route("available")
    async def available(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        return json_response({"data": [_offer(world, t) for t in CATALOGUE.values()]})

    @route("templates")
    async def templates(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        items = [
            {"name": n, "vmid": v, "display_name": d, "os_type": "linux", "has_nvidia": nv}
            for n, v, d, nv in TEMPLATES
        ]
        return json_response({"templates": items, "total": len(items)})

    @route("launch")
    async def launch(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        body = await json_body(request)
        if errors := _launch_errors(body):
            return _invalid(errors)
        itype, region = CATALOGUE[body["instance_type"]], body["region"]
        if _free(world, itype, region) <= 0:
            message = f"No capacity available for {itype.name} in {region}"
            return _detail(409, "no_capacity", message)
        serial = world.next_id(PROVIDER)
        rng = world.rng(PROVIDER, f"instance:{serial}")
        instance_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        template = body.get("template_name") or "UBUNTU-22-04-NV"
        display = next((d for n, _, d, _ in TEMPLATES if n == template), template)
        fail = app.state.fail_launches > 0
        if fail:
            app.state.fail_launches -= 1
        model = itype.model
        instance = await world.create_instance(
            PROVIDER,
            instance_id=instance_id,
            offer_id=f"{itype.name}:{region}",
            label=body.get("name") or f"vm-{instance_id[:8]}",
            gpu_name=model.name if model else "",
            gpu_count=itype.gpus,
            vram_mb=(model.vram_gb if model else 0) * 1024,
            cuda=CUDA if model else 0.0,
            price_per_hour=itype.cents / 100,
            authorized_keys=[body["ssh_key"]],
            extra={
                "region": region,
                "instance_type": itype.name,
                "cents": itype.cents,
                "vcpus": itype.vcpus,
                "memory": itype.memory_gib,
                "storage": itype.storage_gib,
                "gpu_model": model.name if model else None,
                "ip": "127.0.0.1",
                "internal_ip": f"10.10.0.{10 + serial % 240}",
                "host_id": f"wil-gpu-{rng.randint(1, 40):02d}",
                "template_name": template,
                "template_display_name": display,
                "reports_power": serial % 2 == 0,
                "launch_task": {
                    "id": _short_id(world, serial, "launch"),
                    "created_at": world.now(),
                    "fail": fail,
                    "reason": "Failed to provision VM on host" if fail else "",
                },
            },
        )
        instance.ssh_user = body.get("username", "ubuntu")
        instance.driver = DRIVER
        if fail:
            instance.destroyed_at = instance.created_at + instance.boot_s
            world.taken[PROVIDER].discard(instance.offer_id)
        world.save()
        extra = instance.extra
        return json_response(
            {
                "task_id": extra["launch_task"]["id"],
                "vm_uuid": instance.id,
                "assigned_ip": extra["ip"],
                "status": "PENDING",
            }
        )

    @route("task")
    async def task(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        task_id = request.path_params["task_id"]
        for instance in world.instances[PROVIDER].values():
            for kind in ("launch_task", "delete_task"):
                if instance.extra.get(kind, {}).get("id") == task_id:
                    return json_response(_task(instance, kind, world.now()))
        return _detail(404, "not_found", "Task not found")

    @route("list")
    async def list_instances(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        now = world.now()
        return json_response([_view(i, now) for i in world.live(PROVIDER)])

    @route("get")
    async def get(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        instance = find(request.path_params["uuid"])
        if instance is None:
            return _detail(404, "not_found", "Instance not found")
        return json_response(_view(instance, world.now()))

    @route("destroy")
    async def destroy(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        instance = find(request.path_params["uuid"])
        if instance is None or instance.destroyed_at is not None:
            return _detail(404, "not_found", "Instance not found")
        serial = world.next_id(PROVIDER)
        task_id = _short_id(world, serial, "delete")
        await world.destroy(PROVIDER, instance.id, linger_s=DELETE_LINGER_S)
        instance.extra["delete_task"] = {"id": task_id, "created_at": world.now()}
        world.save()
        return json_response(
            {
                "task_id": task_id,
                "status": "PENDING",
                "message": "Instance deletion queued",
                "instance_id": instance.id,
            }
        )

    def power_target(request: Request) -> SimInstance | Response:
        """The instance a power action names, or its 404 (unknown, deleted or being deleted)."""
        instance = find(request.path_params["uuid"])
        if instance is None or instance.destroyed_at is not None:
            return _detail(404, "not_found", "Instance not found")
        return instance

    @route("shutdown")
    async def shutdown(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        instance = power_target(request)
        if isinstance(instance, Response):
            return instance
        now = world.now()
        if instance.stopped:
            return _detail(409, "invalid_state", "Instance is already stopped")
        if instance.powered_on_at is None and instance.phase(now) == "booting":
            return _detail(409, "invalid_state", "Instance is still being provisioned")
        await world.power_off(PROVIDER, instance.id)
        return json_response(_action(instance, "shutdown", "Instance shut down"))

    @route("power_on")
    async def power_on(request: Request) -> Response:
        if (denied := _auth(world, request)) is not None:
            return denied
        instance = power_target(request)
        if isinstance(instance, Response):
            return instance
        if not instance.stopped:
            return _detail(409, "invalid_state", "Instance is already running")
        world.power_on(PROVIDER, instance.id, held=world.faults.node(PROVIDER).start_no_capacity)
        return json_response(_action(instance, "power-on", "Instance powered on"))

    app = sim_app(
        world,
        [
            Route("/api/v1/instances/available", available, methods=["GET"]),
            Route("/api/v1/instances/templates", templates, methods=["GET"]),
            Route("/api/v1/instances/launch-instance", launch, methods=["POST"]),
            Route("/api/v1/tasks/{task_id}", task, methods=["GET"]),
            Route("/api/v1/instances", list_instances, methods=["GET"]),
            Route("/api/v1/instances/{uuid}", get, methods=["GET"]),
            Route("/api/v1/instances/{uuid}", destroy, methods=["DELETE"]),
            Route("/api/v1/instances/{uuid}/shutdown", shutdown, methods=["POST"]),
            Route("/api/v1/instances/{uuid}/power-on", power_on, methods=["POST"]),
        ],
    )
    app.state.fail_launches = 0
    return app
