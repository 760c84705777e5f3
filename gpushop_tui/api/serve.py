"""`gpushop --serve`: the supervisor and the JSON API in one asyncio process.

Binds 127.0.0.1 unless `--host` names another address explicitly. SIGTERM or Ctrl-C stops
the API (uvicorn finishes the requests in flight), gives teardowns already under way a grace
period, and never destroys a running instance: the sessions stay for the next supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn

from gpushop_tui.api.app import build_api
from gpushop_tui.api.deps import ApiState
from gpushop_tui.api.tokens import TokenBook
from gpushop_tui.config import Settings, is_loopback
from gpushop_tui.core import Shopper
from gpushop_tui.errors import UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8642
TEARDOWN_GRACE_S = 60.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: it re-raises SIGTERM after shutting down, which
    would end the process before the core is closed. `serve` handles the signals instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def check_bind(host: str | None) -> str:
    """The address to bind: loopback by default; anything else only when asked for by name."""
    if host is None:
        return DEFAULT_HOST
    if not host.strip():
        raise UserError("--host needs an address, e.g. --host 127.0.0.1")
    return host


async def recover_then_ready(shopper: Shopper, api: ApiState) -> None:
    """/ready turns 200 once the supervisor's first pass (startup recovery) is done."""
    await shopper.recovered()
    api.ready.set()


def _stop(server: uvicorn.Server) -> None:
    """First signal: stop taking requests and shut down cleanly; a second one: right away."""
    if server.should_exit:
        server.force_exit = True
    server.should_exit = True


async def serve(
    settings: Settings,
    host: str | None,
    port: int,
    *,
    say: Callable[[str], None] = print,
) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    bind = check_bind(host)
    sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, port))
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {bind}:{port}: {err.strerror or err}") from None
    shopper = await Shopper.open(settings)
    try:
        tokens = TokenBook.open(settings.paths.data_dir)
        api = ApiState(shopper, tokens)
        app = build_api(api)
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=30
        )
        server = _Server(config)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, _stop, server)
        shopper.start_supervisor()
        recovery = asyncio.create_task(recover_then_ready(shopper, api))
        where = f"http://{bind}:{sock.getsockname()[1]}"
        say(f"gpushop API listening on {where} (OpenAPI at {where}/docs)")
        say("Every /api call needs 'Authorization: Bearer <token>' ('gpushop serve-token').")
        if not is_loopback(bind):
            say(f"warning: {bind} is not a loopback address; anyone who can reach it can try.")
        await server.serve(sockets=[sock])
        recovery.cancel()
    finally:
        await shopper.aclose(teardown_grace_s=TEARDOWN_GRACE_S)
        sock.close()
    say("gpushop API stopped; running sessions were left running for the next supervisor.")
    return 0
