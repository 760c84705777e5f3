"""Two real processes writing one database at once must never lose an update, on SQLite and
on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.models import SessionStatus
from gpushop_tui.store import Store
from tests.conftest import ROOT
from tests.support.cas_worker import INCREMENTS
from tests.support.factories import make_session


def _start_together(*argvs: list[str]) -> list[object]:
    """Start one worker per argv, release them at the same moment, return their results.

    Asserts that the workers' work overlapped in time: without that, nothing was concurrent.
    """
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.cas_worker", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for argv in argvs
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    reports = []
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert overlapped([(r["started"], r["ended"]) for r in reports]), reports
    return [report["result"] for report in reports]


@pytest.fixture
def store(backend_store: Store) -> Store:
    return backend_store


def overlapped(spans: list[tuple[float, float]]) -> bool:
    """Whether some moment lies inside every (start, end) span."""
    return max(start for start, _ in spans) < min(end for _, end in spans)


def test_overlap_needs_a_moment_common_to_every_span() -> None:
    assert overlapped([(0.0, 2.0), (1.0, 3.0)])
    assert not overlapped([(0.0, 1.0), (1.5, 3.0)])
    assert not overlapped([(0.0, 1.0), (0.5, 2.0), (1.5, 3.0)])


async def test_each_session_is_claimed_by_exactly_one_process(
    store: Store, clock: FakeClock
) -> None:
    sessions = [make_session(clock.now()) for _ in range(60)]
    for session in sessions:
        await store.insert_session(session)
    ids = [s.id for s in sessions]

    won_a, won_b = _start_together(
        [store.where, "claim", "a", *ids], [store.where, "claim", "b", *ids]
    )

    assert isinstance(won_a, list)
    assert isinstance(won_b, list)
    assert not set(won_a) & set(won_b)
    assert set(won_a) | set(won_b) == set(ids)
    for session in await store.list_sessions():
        assert session.status == SessionStatus.PROVISIONING
        assert session.workload == ("a" if session.id in won_a else "b")
        assert session.version == 1


async def test_concurrent_read_modify_write_loses_no_update(store: Store, clock: FakeClock) -> None:
    session = make_session(clock.now(), idle_timeout_min=0)
    await store.insert_session(session)

    lost_a, lost_b = _start_together(
        [store.where, "increment", "a", session.id],
        [store.where, "increment", "b", session.id],
    )

    final = await store.get_session(session.id)
    assert final is not None
    assert final.idle_timeout_min == 2 * INCREMENTS
    assert final.version == 2 * INCREMENTS
    print(f"compare-and-set conflicts retried: {lost_a} + {lost_b}")
