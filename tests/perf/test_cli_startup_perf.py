"""The one-shot CLI's fixed cost: from launching `gpushop inventory` to its first HTTP request.

A stub HTTP server in this process notes `time.perf_counter()` (CLOCK_MONOTONIC, shared by every
process on Linux) when the first request line arrives; the clock was read just before the child
started. All three providers point at the stub, so the figure includes building their clients.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gpushop_tui.providers.registry import PROVIDER_INFOS
from gpushop_tui.secrets import CREDENTIAL_ENV

pytestmark = pytest.mark.perf

ROOT = Path(__file__).resolve().parents[2]
FIXED_COST_LIMIT_S = 0.15
RUNS = 7


class _Stub(BaseHTTPRequestHandler):
    """Answers every request 401 at once (no retries), noting when a run's first one arrived."""

    first: list[float]

    def _answer(self) -> None:
        if not self.first:
            self.first.append(time.perf_counter())
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output to the figures."""


@contextmanager
def _stub_server() -> Iterator[tuple[str, list[float]]]:
    """A loopback HTTP stub: its URL and the list its first request's time lands in."""
    first: list[float] = []
    handler = type("Stub", (_Stub,), {"first": first})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", first
    finally:
        server.shutdown()
        server.server_close()


def test_cli_fixed_cost_before_first_request(tmp_path: Path) -> None:
    """Median time from process start to the first request of `gpushop inventory`."""
    with _stub_server() as (url, first):
        env = os.environ | {"PYTHONPATH": str(ROOT), "GPUSHOP_HOME": str(tmp_path)}
        env |= {info.base_url_env: url for info in PROVIDER_INFOS}
        env |= {variable: "perf-key" for variable in CREDENTIAL_ENV.values()}
        costs = []
        for _ in range(RUNS):
            first.clear()
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "gpushop_tui", "inventory", "-o", "json"],
                capture_output=True,
                env=env,
                cwd=ROOT,
                timeout=60,
                check=False,
            )
            assert first, "gpushop inventory sent no request to the stub"
            costs.append(first[0] - start)
    median = statistics.median(costs)
    print(
        f"gpushop inventory fixed cost: median {median * 1000:.0f} ms "
        f"(min {min(costs) * 1000:.0f}, max {max(costs) * 1000:.0f}, {RUNS} runs; "
        f"target < {FIXED_COST_LIMIT_S * 1000:.0f} ms)"
    )
