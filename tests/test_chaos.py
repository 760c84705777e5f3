"""Chaos: `kill -9` the one-shot at random points of a rental, restart, and count orphans.

DESIGN.md §3.6: a crash at any point, then a restart, loses no session and leaves no orphan after
one reconcile. Each trial starts a `gpushop` child (a rental that waits for readiness, or the end
of a session from an earlier trial) and SIGKILLs it, then runs one `gpushop reconcile` (the
restart) and checks the simulator's world file against the database: every instance ever created
carries the label of a stored session, and every instance still alive belongs to a session that
is not closed. The first trials kill the child right after it wrote each state of a rental (so
every state is hit, and the test asserts it), powering sessions off and on among them (a stop
that keeps the disk, a start); the rest kill it after a seeded random delay, their rentals on
every provider in turn. The whole test runs on SQLite and again on a real PostgreSQL server
(`GPUSHOP_DATABASE_URL`), half the random trials on each.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop_tui.config import Settings, load_settings
from gpushop_tui.models import Session, SessionStatus
from gpushop_tui.providers.base import parse_label
from gpushop_tui.providers.registry import PROVIDERS, provider_info
from gpushop_tui.store import Store
from tests.conftest import ROOT, running_sim, sim_env
from tests.support.kill_at import STATES, state_of

SEED = 20261123
TRIALS = 5
"""Random-delay trials on each backend, after the planned ones."""
PLANNED = (
    ("pending", "provision"),
    ("provisioning", "provision"),
    ("running", "provision"),
    ("running", "provision"),
    ("running", "provision"),
    ("stopping", "done"),
    ("destroy queue", "delete"),
    ("stopping", "stop"),
    ("starting", "start"),
    ("stopped", "stop"),
)
"""The planned kill points and the command killed there, in order: three running rentals for
the three endings that follow (done, delete, a stop that keeps the disk), the stopped one is
started, and the last running one is stopped (killed once it is stopped)."""
KILL_AFTER_S = (0.0, 3.0)
"""The random delay before the kill: a child needs about 1 s to reach its first provider call,
a Vast rental about 8 s to be ready, an ending about 1 s."""
ACTIONS = ("provision", "done", "delete", "stop", "start")
TARGETS = {
    "done": lambda s: not s.closed,
    "delete": lambda s: not s.closed,
    "stop": lambda s: (
        s.status == SessionStatus.RUNNING and provider_info(s.provider).capabilities.can_stop
    ),
    "start": lambda s: s.status == SessionStatus.STOPPED,
}
"""Which sessions each ending or power command may be given."""
DESTROY_FAILS = {"provider": "vastai", "endpoint": "destroy", "status": 500}
GONE_ENDS_AS = {
    "vastai": "destroyed",
    "tensordock": "stopped",
    "bluelobster": "stopped",
    "runpod": "destroyed",
    "lambda": "running",
}
"""Each provider the operator-gone trial rents on (one session each), and where its instance
stands a day later with no gpushop: Vast's node destroyed it with its own key, the VMs powered
themselves off, RunPod's own time limit ended the pod at the hard max, and a Lambda VM, which
has no kill path but gpushop, runs on."""
NODE_WATCHDOG = ("vastai", "tensordock", "bluelobster")
"""The providers whose nodes end their own instances at their deadline."""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    """A standalone simulator of this test's own, with its state (world.json) in a folder."""
    state = tmp_path / "sim-state"
    with running_sim(state, SEED) as info:
        yield info, state / "world.json"


def child_env(info: dict[str, Any]) -> dict[str, str]:
    """A child's environment: this test's (its data dir and database), and the simulator."""
    return os.environ | sim_env(info, *PROVIDERS) | {"PYTHONPATH": str(ROOT)}


def gpushop(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gpushop_tui", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def killed_at(env: dict[str, str], state: str, args: list[str]) -> None:
    """Run `gpushop ARGS` until it has written `state` and been SIGKILLed right there."""
    child = subprocess.run(
        [sys.executable, "-m", "tests.support.kill_at", state, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, f"{args} was not killed at {state}: {child}"


def sessions_at(env: dict[str, str]) -> list[Session]:
    """Every stored session of the data dir `env` names, oldest first."""
    found = sessions(load_settings(env))
    return sorted(found.values(), key=lambda s: s.created_at)


def sessions(settings: Settings | None = None) -> dict[str, Session]:
    """Every stored session, read straight from this test's database."""

    async def read() -> dict[str, Session]:
        settings_now = settings or load_settings()
        settings_now.paths.prepare()
        store = await Store.open(settings_now.paths.db_file, settings_now.database_url)
        try:
            return {s.id: s for s in await store.list_sessions()}
        finally:
            await store.aclose()

    return asyncio.run(read())


def phase(session: Session | None) -> str:
    """Where a rental stood when its process was killed."""
    if session is None:
        return "before the session row"
    return f"{session.status}/{session.instance}"


def reconcile(env: dict[str, str]) -> None:
    """The restart after a kill: one `gpushop reconcile`, which must succeed."""
    restart = subprocess.run(
        [sys.executable, "-m", "gpushop_tui", "reconcile"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert restart.returncode == 0, restart.stdout + restart.stderr


def audit(world_file: Path, stored: dict[str, Session]) -> tuple[list[str], set[str]]:
    """Instances without a stored session (lost), and alive ones of closed sessions (orphans)."""
    world = json.loads(world_file.read_text())
    now = time.time()
    lost, orphans = [], set()
    for provider, instances in world["instances"].items():
        for instance in instances:
            parsed = parse_label(instance["label"])
            session = stored.get(parsed[1]) if parsed else None
            name = f"{provider}:{instance['id']} ({instance['label']})"
            if session is None:
                lost.append(name)
            alive = instance["destroyed_at"] is None or instance["destroyed_at"] > now
            if alive and (session is None or session.closed):
                orphans.add(name)
    return lost, orphans


@pytest.mark.timeout(420)
def test_kill_9_at_every_state_and_at_random_points_then_one_reconcile_leaves_no_orphan(
    world: tuple[dict[str, Any], Path], database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if database_url is not None:
        monkeypatch.setenv("GPUSHOP_DATABASE_URL", database_url)
    info, world_file = world
    env = child_env(info)
    rng = random.Random(f"{SEED}:{database_url is None}")
    started = time.monotonic()
    killed: Counter[str] = Counter()
    orphans: set[str] = set()
    hit = []
    for trial, (state, action) in enumerate(PLANNED):
        before = sessions()
        if action == "provision":
            args = ["provision", "-c", f"planned{trial}", "-g", "gpu=4090 provider=vastai"]
        else:
            wanted = SessionStatus.STOPPED if action == "start" else SessionStatus.RUNNING
            ready = sorted(sid for sid, s in before.items() if s.status == wanted)
            assert ready, f"no session to {action} at {state}"
            args = ["sessions", action, ready[0]]
        if state == "destroy queue":  # the destroy call fails, so the teardown is queued
            httpx.post(f"{info['control']}/faults", json=DESTROY_FAILS).raise_for_status()
        killed_at(env, state, args)
        httpx.delete(f"{info['control']}/faults").raise_for_status()
        after = sessions()
        if args[0] == "provision":
            (written,) = [s for sid, s in after.items() if sid not in before]
        else:
            written = after[args[2]]
        hit.append(state_of(written))
        killed[f"planned {' '.join(args[:2])}: {phase(written)}"] += 1
        reconcile(env)
        lost, found = audit(world_file, sessions())
        assert not lost, f"planned kill at {state}: instances without a session: {lost}"
        orphans |= found
    assert hit == [state for state, _ in PLANNED]
    assert set(hit) == set(STATES)

    rentals = 0
    provider = ""
    for trial in range(TRIALS):
        before = sessions()
        action = rng.choice(ACTIONS)
        targets = sorted(
            s.id for s in before.values() if action != "provision" and TARGETS[action](s)
        )
        if not targets:
            action = "provision"
        if action == "provision":
            provider = PROVIDERS[rentals % len(PROVIDERS)]  # every provider in turn
            rentals += 1
            args = ["provision", "-c", f"chaos{trial}", "-g", f"provider={provider} spot=false"]
            target = None
        else:
            target = rng.choice(targets)
            args = ["sessions", action, target]
        delay = rng.uniform(*KILL_AFTER_S)
        child = gpushop(env, *args)
        try:
            child.wait(timeout=delay)
            outcome = "finished"
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            after = sessions()
            new = [s for sid, s in after.items() if sid not in before]
            outcome = phase(after.get(target) if target else (new[0] if new else None))
        where = f"{action} on {provider}" if action == "provision" else action
        killed[f"{where}: {outcome}"] += 1

        reconcile(env)
        lost, found = audit(world_file, sessions())
        assert not lost, f"trial {trial}: instances without a session: {lost}"
        orphans |= found

    backend = "PostgreSQL" if database_url else "SQLite"
    print(f"chaos on {backend}: {len(PLANNED)} planned + {TRIALS} random, {len(orphans)} orphans")
    print(f"chaos: {time.monotonic() - started:.0f} s; where the kills landed:")
    for where, count in sorted(killed.items()):
        print(f"  {count:2d}  {where}")
    assert not orphans, f"orphans: {sorted(orphans)}"

    for session in sessions().values():
        if not session.closed:
            ended = gpushop(env, "sessions", "delete", session.id, "--no-wait")
            assert ended.wait(timeout=60) == 0
    final = subprocess.run(
        [sys.executable, "-m", "gpushop_tui", "reconcile"], env=env, timeout=180, check=False
    )
    assert final.returncode == 0
    stored = sessions()
    lost, _ = audit(world_file, stored)
    assert not lost
    world_now = json.loads(world_file.read_text())
    alive = [
        i["id"]
        for items in world_now["instances"].values()
        for i in items
        if i["destroyed_at"] is None or i["destroyed_at"] > time.time()
    ]
    assert alive == [], f"still alive after the clean-up: {alive}"
    assert all(s.closed or s.instance_id is None for s in stored.values())


def advance(info: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Move the fake-clock simulator's time on (its due watchdogs act before it answers)."""
    answer = httpx.post(f"{info['control']}/clock/advance", json={"seconds": seconds}, timeout=60)
    answer.raise_for_status()
    return dict(answer.json())


@pytest.mark.timeout(300)
def test_operator_machine_gone_the_nodes_end_their_own_instances(tmp_path: Path) -> None:
    """Rent on each provider, SIGKILL gpushop right after the session runs, never run gpushop
    again, and skip a day on the simulator's fake clock: Vast's node destroyed its instance with
    its own key, the VMs powered themselves off, RunPod ended its pod at the hard max by itself;
    each GPU bill stops at its kill path's time, and only Lambda's (it has none) runs on."""
    state = tmp_path / "sim-state"
    with running_sim(state, SEED, "--clock", "fake") as info:
        env = os.environ | sim_env(info, *GONE_ENDS_AS) | {"PYTHONPATH": str(ROOT)}
        for provider in GONE_ENDS_AS:
            args = ["provision", "-c", "gone", "-t", "1", "-g", f"provider={provider} spot=false"]
            child = subprocess.Popen(
                [sys.executable, "-m", "tests.support.kill_at", "running", *args],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 120
            while child.poll() is None:  # the world's boot time passes only when moved
                assert time.monotonic() < deadline, f"{provider}: the rental never ran"
                advance(info, 2)
                time.sleep(0.05)
            assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
        stored = {s.provider: s for s in sessions_at(env)}
        assert sorted(stored) == sorted(GONE_ENDS_AS)
        assert all(s.status == SessionStatus.RUNNING for s in stored.values())
        watched = [
            s for s in stored.values() if provider_info(s.provider).capabilities.node_watchdog
        ]
        assert tuple(s.provider for s in watched) == NODE_WATCHDOG
        assert all(s.watchdog_deadline is not None for s in watched), [
            s.watchdog_error for s in watched
        ]
        assert stored["runpod"].provider_ttl_at == stored["runpod"].hard_max_at.replace(
            microsecond=0
        )
        assert stored["lambda"].provider_ttl_at is None
        armed = advance(info, 0)["instances"]  # each node's deadline, in its own clock
        deadlines = {p: (rows[0]["watchdog"] or {}).get("deadline") for p, rows in armed.items()}
        assert [p for p, deadline in deadlines.items() if deadline] == list(NODE_WATCHDOG)
        after = advance(info, 24 * 3600)
        phases = {p: [i["phase"] for i in rows] for p, rows in after["instances"].items()}
        assert phases == {p: [ends_as] for p, ends_as in GONE_ENDS_AS.items()}
        world = json.loads((state / "world.json").read_text())
        lines = []
        for provider, session in stored.items():
            (instance,) = world["instances"][provider]
            ended = [t for t in (instance["destroyed_at"], instance["stopped_at"]) if t]
            if provider in NODE_WATCHDOG:
                assert ended == [pytest.approx(deadlines[provider], abs=1)], provider
            elif provider == "runpod":
                assert session.provider_ttl_at is not None
                assert ended == [pytest.approx(session.provider_ttl_at.timestamp(), abs=1)]
            else:
                assert ended == [] and deadlines[provider] is None  # Lambda: nothing ends it
            hours = (min([*ended, after["now"]]) - instance["created_at"]) / 3600
            rate = session.price_per_hour or 0
            lines.append(
                f"  {provider:12s} ${rate:.3f}/h: billed {hours:5.2f} h, ${hours * rate:.3f}; "
                f"${(after['now'] - instance['created_at']) / 3600 * rate:.3f} without a kill path"
            )
        print("\noperator gone for a day after 1 h rentals on each provider:\n" + "\n".join(lines))
