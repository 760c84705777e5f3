"""`gpushop --serve` under load: GET /api/v1/sessions with 1,000 sessions in the store.

The server is the real `gpushop --serve` process (its supervisor ticking every second against the
simulator); 50 concurrent clients in this process hit it over loopback for a fixed time, each
waiting for its answer before asking again. Throughput and latency percentiles are printed, for
the store on SQLite and on a real PostgreSQL server in the same run.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop_tui.config import load_settings
from gpushop_tui.models import InstanceState, SessionStatus
from gpushop_tui.store import Store
from tests.conftest import ROOT, run_gpushop, sim_env
from tests.support.factories import make_session
from tests.support.postgres import fresh_database_for_processes

pytestmark = pytest.mark.perf

SESSIONS = 1000
CLIENTS = 50
DURATION_S = 10.0
MIN_RATE = 300.0
"""The open-loop run's offered load, requests per second."""


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (SQLite in the data dir), or a fresh database on the throwaway PostgreSQL."""
    if request.param == "sqlite":
        yield None
        return
    with fresh_database_for_processes(request.getfixturevalue("postgres")) as url:
        yield url


async def fill_store(home: Path, database_url: str | None) -> None:
    settings = load_settings({"GPUSHOP_HOME": str(home)})
    settings.paths.prepare()
    store = await Store.open(settings.paths.db_file, database_url)
    now = datetime.now(UTC)
    try:
        for n in range(SESSIONS):
            started = now - timedelta(hours=n % 240)
            await store.insert_session(
                make_session(
                    started,
                    store.install_id,
                    id=f"load{n:06d}",
                    consumer=f"team{n % 20}",
                    status=SessionStatus.STOPPED,
                    instance=InstanceState.GONE,
                    instance_id=str(900000 + n),
                    instance_created_at=started,
                    instance_gone_at=started + timedelta(minutes=50),
                    price_per_hour=0.4,
                )
            )
    finally:
        await store.aclose()


class Connection:
    """One keep-alive HTTP/1.1 connection that asks for the sessions list (a lean client, so the
    measuring side costs far less than the server it measures)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, base: str) -> Connection:
        host, port = base.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def get(self, request: bytes) -> int:
        """Send `request`, read the whole answer; its status code."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        found = re.search(rb"(?i)content-length: *(\d+)", head)
        assert found, head
        await self.reader.readexactly(int(found.group(1)))
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


async def hammer(base: str, token: str, offered_per_s: float | None) -> tuple[list[float], int]:
    """(latency in s of every answered request, non-200 answers) over DURATION_S.

    Fifty clients, each on its own connection. With `offered_per_s` they start requests on a
    fixed shared schedule (open loop: a slow answer does not lower the offered load); without,
    each asks again as soon as it is answered (closed loop: the most the server gives).
    """
    request = (
        f"GET /api/v1/sessions HTTP/1.1\r\nHost: {base.removeprefix('http://')}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    failures = 0
    connections = [await Connection.open(base) for _ in range(CLIENTS)]
    begun = time.perf_counter()
    deadline = begun + DURATION_S
    ticket = 0

    async def one_client(connection: Connection) -> None:
        nonlocal failures, ticket
        while True:
            if offered_per_s is not None:
                due = begun + ticket / offered_per_s
                ticket += 1
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            started = time.perf_counter()
            if started >= deadline:
                return
            status = await connection.get(request)
            latencies.append(time.perf_counter() - started)
            failures += status != 200

    try:
        await asyncio.gather(*(one_client(c) for c in connections))
    finally:
        for connection in connections:
            connection.close()
    return latencies, failures


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def figures(latencies: list[float]) -> tuple[float, float, float]:
    """(requests per second, p50 ms, p99 ms)."""
    ordered = sorted(latencies)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return len(ordered) / DURATION_S, statistics.median(ordered) * 1000, p99 * 1000


def test_sessions_list_under_fifty_concurrent_clients(
    tmp_path: Path, standalone_sim: dict[str, Any], database_url: str | None
) -> None:
    home = tmp_path / "home"
    asyncio.run(fill_store(home, database_url))
    env = (
        os.environ
        | sim_env(standalone_sim, "vastai")
        | {
            "GPUSHOP_HOME": str(home),
            "GPUSHOP_SUPERVISOR_TICK_S": "1",
            "PYTHONPATH": str(ROOT),
        }
        | ({"GPUSHOP_DATABASE_URL": database_url} if database_url else {})
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "gpushop_tui", "--serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", server.stdout.readline())
        assert found
        base = found.group(1)
        token = run_gpushop("serve-token", env=env).stdout.strip()
        first = httpx.get(f"{base}/api/v1/sessions", headers={"Authorization": f"Bearer {token}"})
        assert first.status_code == 200, first.text
        busy = cpu_seconds(server.pid)
        most = asyncio.run(hammer(base, token, None))
        busy, most_cpu = cpu_seconds(server.pid), cpu_seconds(server.pid) - busy
        steady = asyncio.run(hammer(base, token, MIN_RATE))
        steady_cpu = cpu_seconds(server.pid) - busy
    finally:
        server.terminate()
        server.wait(timeout=60)
    page = len(first.json()["sessions"])
    runs = (("flat out", most, most_cpu), (f"{MIN_RATE:g} req/s offered", steady, steady_cpu))
    for name, (latencies, failures), cpu in runs:
        rate, p50, p99 = figures(latencies)
        print(
            f"\n{'PostgreSQL' if database_url else 'SQLite'}: "
            f"GET /api/v1/sessions ({SESSIONS} stored, {page} per page), {CLIENTS} clients, "
            f"{name}, {DURATION_S:g} s: {rate:.0f} req/s answered, p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms, {failures} non-200; server busy {cpu / DURATION_S:.0%} of a core"
        )
        assert failures == 0
