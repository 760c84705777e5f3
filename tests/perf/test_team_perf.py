"""Supervisor lease takeover between two `gpushop --serve` replicas on one PostgreSQL.

Ten times: kill -9 the supervising replica and time until the other says it supervises
(`/health`), then start a fresh replica in the dead one's place. On one host a dead holder's lease
is taken at the survivor's next tick (its pid is gone); across hosts, or for a holder that hangs,
the survivor waits for the lease to expire, so three SIGSTOP rounds time that path too. Figures
are printed; nothing is gated.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_gpushop
from tests.perf.test_api_load_perf import cpu_seconds
from tests.support.postgres import Postgres, fresh_database_for_processes
from tests.support.serving import serving
from tests.test_team_server import health, ready, until

pytestmark = pytest.mark.perf

ROUNDS = 10
HUNG_ROUNDS = 3
LEASE_TTL_S = 10.0
TICK_S = 1.0
"""The defaults are 60 s and 15 s; scaled down so ten rounds fit in a minute or two."""


def rss_bytes(pid: int) -> int:
    """The process's resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(600)
def test_lease_takeover_after_kill_9_and_after_a_hang(tmp_path: Path, postgres: Postgres) -> None:
    with fresh_database_for_processes(postgres) as url, contextlib.ExitStack() as stack:
        env = os.environ | {
            "GPUSHOP_HOME": str(tmp_path / "shared-home"),
            "GPUSHOP_DATABASE_URL": url,
            "GPUSHOP_LEASE_TTL_S": str(LEASE_TTL_S),
            "GPUSHOP_SUPERVISOR_TICK_S": str(TICK_S),
            "PYTHONPATH": str(ROOT),
        }
        run_gpushop("serve-token", env=env)
        replicas = [stack.enter_context(serving(env)) for _ in range(2)]
        for base, _ in replicas:
            until("a replica is ready", lambda b=base: ready(b))

        def holder() -> int:
            return next(n for n, (base, _) in enumerate(replicas) if health(base)["supervising"])

        killed = []
        for _ in range(ROUNDS):
            dead = until("one replica supervises", lambda: [holder()])[0]
            survivor = replicas[1 - dead][0]
            replicas[dead][1].send_signal(signal.SIGKILL)
            started = time.monotonic()
            replicas[dead][1].wait()  # reaped, as its service manager would
            until("the survivor supervises", lambda s=survivor: health(s)["supervising"])
            killed.append(time.monotonic() - started)
            replicas[dead] = stack.enter_context(serving(env))
            until("the new replica is ready", lambda b=replicas[dead][0]: ready(b))

        idle_cpu, idle_s = [cpu_seconds(p.pid) for _, p in replicas], 20.0
        time.sleep(idle_s)  # a measured idle stretch: the replicas' own cost, not a wait for state
        idle_cpu = [
            cpu_seconds(p.pid) - before for (_, p), before in zip(replicas, idle_cpu, strict=True)
        ]
        rss_mb = [rss_bytes(p.pid) / 2**20 for _, p in replicas]

        hung = []
        for _ in range(HUNG_ROUNDS):
            stuck = until("one replica supervises", lambda: [holder()])[0]
            survivor = replicas[1 - stuck][0]
            replicas[stuck][1].send_signal(signal.SIGSTOP)
            started = time.monotonic()
            until("the survivor supervises", lambda s=survivor: health(s)["supervising"], 60)
            hung.append(time.monotonic() - started)
            replicas[stuck][1].send_signal(signal.SIGCONT)
            until(
                "the woken one watches", lambda b=replicas[stuck][0]: not health(b)["supervising"]
            )

    print(
        f"\nlease takeover after kill -9 of the supervising replica ({ROUNDS} rounds, tick "
        f"{TICK_S:g} s, lease {LEASE_TTL_S:g} s): median {statistics.median(killed):.2f} s, "
        f"max {max(killed):.2f} s"
    )
    print(
        f"each replica idle (supervising or watching, no sessions): "
        f"{', '.join(f'{c / idle_s:.1%}' for c in idle_cpu)} of a core, "
        f"{', '.join(f'{m:.0f}' for m in rss_mb)} MiB resident"
    )
    print(
        f"lease takeover from a hung replica (SIGSTOP, {HUNG_ROUNDS} rounds): median "
        f"{statistics.median(hung):.2f} s, max {max(hung):.2f} s (the lease's expiry: at most "
        f"{LEASE_TTL_S:g} s after its last renewal, plus a tick)"
    )
