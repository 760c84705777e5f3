"""HTTP plumbing shared by the simulated providers: JSON answers, fault injection, the watchdog
middleware, serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from gpushop_tui.sim.faults import HttpFault
from gpushop_tui.sim.world import WATCHDOG_AGENT, World

Handler = Callable[[Request], Awaitable[Response]]


def json_response(data: Any, status: int = 200) -> Response:
    """JSON with a Content-Type of exactly `application/json` (the vastai client checks it)."""
    return Response(json.dumps(data), status_code=status, media_type="application/json")


async def json_body(request: Request) -> Any:
    """The request body as JSON, or None when it is not JSON (the caller reports that)."""
    try:
        return json.loads(await request.body())
    except ValueError:
        return None


def forced_response(fault: HttpFault) -> Response | None:
    """The response a non-latency fault forces instead of the normal answer."""
    if fault.kind == "malformed":
        return Response('{"offers": [{"id": 1,', media_type="application/json")
    if fault.kind == "empty":
        return Response(b"", media_type="application/json")
    if fault.kind == "status":
        return Response(
            fault.body, status_code=fault.status, media_type=fault.media_type, headers=fault.headers
        )
    return None


def endpoint(world: World, provider: str, name: str) -> Callable[[Handler], Handler]:
    """Wrap a route handler so that the fault plan is consulted first."""

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            fault = world.faults.take(provider, name)
            if fault is None:
                return await handler(request)
            if fault.kind == "timeout":
                await asyncio.sleep(fault.delay_s or 3600)
                return Response("", status_code=504)
            if fault.kind == "latency":  # the answer leaves `delay_s` after the request came
                started = time.monotonic()
                response = await handler(request)
                await asyncio.sleep(max(0.0, fault.delay_s - (time.monotonic() - started)))
                return response
            forced = forced_response(fault)
            return forced if forced is not None else await handler(request)

        return guarded

    return wrap


class FiresWatchdogs:
    """ASGI middleware: before each HTTP request, the world's due node watchdogs act
    (`World.fire_watchdogs`), so the world is lazily up to date for every answer. A watchdog's
    own API call (its User-Agent) passes straight through: the firing waits for its answer."""

    def __init__(self, app: ASGIApp, world: World) -> None:
        self.app = app
        self.world = world

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            agent = dict(scope["headers"]).get(b"user-agent", b"")
            if agent != WATCHDOG_AGENT.encode():
                await self.world.fire_watchdogs()
        await self.app(scope, receive, send)


def sim_app(world: World, routes: Sequence[BaseRoute]) -> Starlette:
    """A simulator app on `routes` whose requests first fire the world's due watchdogs."""
    return Starlette(routes=routes, middleware=[Middleware(FiresWatchdogs, world=world)])


class _Server(uvicorn.Server):
    """uvicorn without its signal handling: the embedding process owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Served:
    """A running loopback HTTP server."""

    port: int
    server: _Server
    task: asyncio.Task[None]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def serve(app: Starlette, port: int = 0) -> Served:
    """Serve `app` on 127.0.0.1 (`port` 0 picks a free one) until `stop()`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(1000):
        if server.started or task.done():
            break
        await asyncio.sleep(0.005)
    if not server.started:
        task.cancel()
        raise RuntimeError("simulated provider server did not start")
    return Served(sock.getsockname()[1], server, task)
