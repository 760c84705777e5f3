"""Run the whole simulated marketplace: five provider APIs, their SSH nodes, and the control
endpoint, in-process (an async context manager) or as its own process (`__main__`)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gpushop_tui.clock import Clock
from gpushop_tui.sim import bluelobster, lambdacloud, runpod, tensordock, vastai
from gpushop_tui.sim.control import build_control_app
from gpushop_tui.sim.http import Served, serve
from gpushop_tui.sim.node import SshNodes
from gpushop_tui.sim.world import World

API_PREFIX = {
    "vastai": "/api/v0",
    "tensordock": "/api/v2",
    "bluelobster": "/api/v1",
    "runpod": "/v1",
    "lambda": "/api/v1",
}
_APPS = {
    "vastai": vastai,
    "tensordock": tensordock,
    "bluelobster": bluelobster,
    "runpod": runpod,
    "lambda": lambdacloud,
}


@dataclass
class Simulator:
    """A running simulated marketplace."""

    world: World
    urls: dict[str, str]
    control: str

    @property
    def keys(self) -> dict[str, str]:
        """The credential each simulated provider accepts."""
        return dict(self.world.keys)

    @property
    def runpod_graphql_base(self) -> str:
        """Where the official RunPod client's `RUNPOD_API_BASE_URL` points (it posts to
        `{base}/graphql`): the RunPod server's origin, whose REST API is under `/v1`."""
        return self.urls["runpod"].removesuffix(API_PREFIX["runpod"])

    def describe(self) -> dict[str, Any]:
        """The one JSON line the standalone simulator prints."""
        return {
            **self.urls,
            "runpod_graphql_base": self.runpod_graphql_base,
            "control": self.control,
            "keys": self.keys,
        }


def _free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@asynccontextmanager
async def run_simulator(
    *,
    seed: int = 0,
    clock: Clock | None = None,
    timing: Literal["fast", "real"] = "fast",
    state_dir: Path | None = None,
) -> AsyncIterator[Simulator]:
    """Start everything on loopback; with `state_dir`, keep the world (and ports) across runs."""
    world = World(seed=seed, clock=clock, timing=timing, state_dir=state_dir)
    nodes = SshNodes(world, host_key_dir=state_dir / "host_keys" if state_dir else None)
    world.nodes = nodes
    ports_file = state_dir / "ports.json" if state_dir else None
    wanted: dict[str, int] = (
        json.loads(ports_file.read_text()) if ports_file and ports_file.exists() else {}
    )
    servers: dict[str, Served] = {}
    try:
        await world.restore_nodes()
        for name, module in (*_APPS.items(), ("control", None)):
            app = build_control_app(world) if module is None else module.build_app(world)
            port = wanted.get(name, 0)
            servers[name] = await serve(app, port if port and _free(port) else 0)
        if ports_file is not None:
            ports_file.write_text(json.dumps({n: s.port for n, s in servers.items()}))
        yield Simulator(
            world=world,
            urls={p: servers[p].origin + API_PREFIX[p] for p in _APPS},
            control=servers["control"].origin,
        )
    finally:
        # Together: each server takes up to a tick of uvicorn's main loop to notice the stop.
        await asyncio.gather(*(served.stop() for served in servers.values()))
        await nodes.aclose()
