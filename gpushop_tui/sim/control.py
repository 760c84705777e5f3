"""The simulator's control endpoint: faults, vanishing instances, GPU load, and fake time.

Loopback only, for tests and fault-injection runs against a standalone simulator.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gpushop_tui.clock import FakeClock
from gpushop_tui.sim.faults import HttpFault, NodeFaults
from gpushop_tui.sim.http import json_response, sim_app
from gpushop_tui.sim.world import PROVIDERS, World


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _pick(cls: type, body: Any) -> dict[str, Any]:
    """The fields of dataclass `cls` present in `body`; unknown keys are an error."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    known = {f.name for f in fields(cls)}
    unknown = set(body) - known
    if unknown:
        raise ValueError(f"unknown fields: {sorted(unknown)}")
    return body


def _instances(world: World) -> dict[str, list[dict[str, Any]]]:
    """Every instance ever created, per provider: its phase now and its node's watchdog (action
    and deadline, without its key), if one runs."""
    now = world.now()
    rows: dict[str, list[dict[str, Any]]] = {}
    for provider in PROVIDERS:
        rows[provider] = []
        for i in world.instances[provider].values():
            dog = world.watchdogs.get((provider, i.id))
            rows[provider].append(
                {
                    "id": i.id,
                    "label": i.label,
                    "phase": i.phase(now),
                    "ssh_port": i.ssh_port,
                    "gpu_util": i.gpu_util,
                    "watchdog": None
                    if dog is None
                    else {"action": dog.action, "deadline": dog.deadline},
                }
            )
    return rows


def build_control_app(world: World) -> Starlette:
    """Routes: GET /state (world time and every instance's phase); POST|DELETE /faults;
    PUT /faults/nodes/{provider}; POST /instances/{provider}/{id}/vanish;
    PUT /instances/{provider}/{id}/gpu_util; POST /clock/advance (only when the world runs on a
    FakeClock; due watchdogs act before it answers with the time and the instances)."""

    async def state(request: Request) -> Response:
        return json_response(
            {"now": world.now(), "faults": world.faults.to_json(), "instances": _instances(world)}
        )

    async def add_fault(request: Request) -> Response:
        try:
            fault = HttpFault(**_pick(HttpFault, await request.json()))
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))
        world.faults.add(fault)
        return json_response(asdict(fault), 201)

    async def clear_faults(request: Request) -> Response:
        world.faults.clear()
        return json_response({"cleared": True})

    async def node_faults(request: Request) -> Response:
        provider = request.path_params["provider"]
        if provider not in PROVIDERS:
            return _error(404, f"unknown provider {provider}")
        try:
            world.faults.nodes[provider] = NodeFaults(**_pick(NodeFaults, await request.json()))
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))
        return json_response(asdict(world.faults.nodes[provider]))

    async def vanish(request: Request) -> Response:
        provider, instance_id = request.path_params["provider"], request.path_params["id"]
        if provider not in PROVIDERS or not await world.vanish(provider, instance_id):
            return _error(404, "no such live instance")
        return json_response({"vanished": instance_id})

    async def gpu_util(request: Request) -> Response:
        provider, instance_id = request.path_params["provider"], request.path_params["id"]
        instance = world.get(provider, instance_id) if provider in PROVIDERS else None
        if instance is None:
            return _error(404, "no such instance")
        body = await request.json()
        value = body.get("gpu_util") if isinstance(body, dict) else None
        if not isinstance(value, int) or not 0 <= value <= 100:
            return _error(400, "gpu_util must be an integer 0-100")
        instance.gpu_util = value
        world.save()
        return json_response({"gpu_util": value})

    async def advance(request: Request) -> Response:
        if not isinstance(world.clock, FakeClock):
            return _error(409, "the simulator runs on the real clock")
        body = await request.json()
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if not isinstance(seconds, int | float) or seconds < 0:
            return _error(400, "seconds must be a non-negative number")
        await world.advance_clock(float(seconds))
        return json_response({"now": world.now(), "instances": _instances(world)})

    return sim_app(
        world,
        [
            Route("/state", state, methods=["GET"]),
            Route("/faults", add_fault, methods=["POST"]),
            Route("/faults", clear_faults, methods=["DELETE"]),
            Route("/faults/nodes/{provider}", node_faults, methods=["PUT"]),
            Route("/instances/{provider}/{id}/vanish", vanish, methods=["POST"]),
            Route("/instances/{provider}/{id}/gpu_util", gpu_util, methods=["PUT"]),
            Route("/clock/advance", advance, methods=["POST"]),
        ],
    )
