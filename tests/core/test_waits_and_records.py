"""Issue 17: every lifecycle wait is cut short by a change of the session; a closing process
finishes the records it started; lost instances alert; reconciliation checks providers at
once; and the idle and stuck rules hold.

All on the fake clock against the in-process simulator (tests/core/market.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gpushop_tui.models import InstanceState, Session, SessionStatus
from gpushop_tui.node.ssh import connect
from gpushop_tui.sim.faults import HttpFault
from gpushop_tui.sim.node import _Shell
from tests.core.market import Market, open_market, open_unlimited


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> AsyncIterator[Market]:
    async with open_market(monkeypatch, isolated_env) as opened:
        yield opened


# --------------------------------------------------------------------------- A: waits wake


@pytest.mark.parametrize(
    ("provider", "end"),
    [("tensordock", "done"), ("bluelobster", "done"), ("tensordock", "delete")],
)
async def test_ending_a_session_during_the_first_ssh_wait_destroys_at_once(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path, provider: str, end: str
) -> None:
    async with open_market(monkeypatch, isolated_env, timing="real") as market:
        session = await market.provision(await market.offer(provider))
        await market.advance(15)
        waiting = await market.shopper.session(session.id)
        assert waiting.status == SessionStatus.PROVISIONING and waiting.host_key is None
        await getattr(market.shopper, end)(session.id)
        await market.advance(2)
        assert market.instance(session).destroyed_at is not None
        ending = await market.shopper.session(session.id)
        assert ending.instance in (InstanceState.DESTROYING, InstanceState.GONE)


# --------------------------------------------------------------------------- C: records


async def test_closing_right_after_the_row_closes_still_records_the_close(
    market: Market,
) -> None:
    running = await market.running()
    store = market.shopper._store
    original = store.update_session
    closing = asyncio.Event()
    closer: list[asyncio.Task[None]] = []

    async def close_when_closed(session_id: str, expect: Any, **changes: Any) -> Session | None:
        updated = await original(session_id, expect, **changes)
        if updated is not None and updated.id == running.id and updated.closed and not closer:
            closer.append(asyncio.create_task(market.shopper.aclose()))  # as a one-shot exits
            closing.set()
            for _ in range(5):
                await asyncio.sleep(0)
        return updated

    store.update_session = close_when_closed  # type: ignore[method-assign]
    await market.shopper.done(running.id)
    for _ in range(300):
        if closing.is_set():
            break
        await market.advance(1)
    assert closing.is_set()
    await closer[0]
    market.shopper = await open_unlimited(market.clock)
    events = await market.audit(running.id)
    assert any("is gone" in e.message for e in events), [e.message for e in events]
    keys_dir = market.shopper.settings.paths.keys_dir
    assert sorted(p.name for p in keys_dir.glob(f"{running.id}*")) == []


# --------------------------------------------------------------------------- E: alerts, retries


async def test_a_running_instance_that_vanishes_is_a_warning_and_an_alert(market: Market) -> None:
    running = await market.running()
    await market.world.vanish("vastai", running.instance_id)
    await market.run(market.shopper._supervisor.reconcile())
    failed = await market.shopper.session(running.id)
    assert failed.status == SessionStatus.FAILED and failed.instance == InstanceState.GONE
    events = await market.audit(running.id)
    alerts = [e for e in events if e.kind == "alert" and e.data.get("alert") == "instance_vanished"]
    assert alerts and alerts[0].severity == "warning", [(e.kind, e.message) for e in events]
    gone = [e for e in events if e.kind == "session_changed" and "is gone" in e.message]
    assert gone and gone[0].severity == "warning"


# --------------------------------------------------------------------------- 4: reconcile


async def test_reconcile_checks_slow_providers_at_the_same_time(market: Market) -> None:
    delay = 1.5
    for provider in ("tensordock", "bluelobster"):
        market.world.faults.add(HttpFault(provider, "list", kind="latency", delay_s=delay))
    started = time.monotonic()
    reports = await market.shopper._supervisor.reconcile()
    took = time.monotonic() - started
    assert all(r.ok for r in reports), reports
    assert {r.provider for r in reports} == {"vastai", "tensordock", "bluelobster"}
    assert delay <= took < 1.8 * delay, took


async def test_a_provider_that_never_answers_does_not_hold_up_reconcile(market: Market) -> None:
    supervisor = market.shopper._supervisor
    supervisor.settings = supervisor.settings.model_copy(update={"http_timeout_s": 0.25})
    market.world.faults.add(HttpFault("tensordock", "list", kind="timeout", delay_s=3))
    started = time.monotonic()
    reports = await supervisor.reconcile()
    assert time.monotonic() - started < 5
    by_name = {r.provider: r for r in reports}
    assert not by_name["tensordock"].ok and by_name["vastai"].ok and by_name["bluelobster"].ok


# --------------------------------------------------------------------------- 7: idle and stuck


async def test_a_logged_in_ssh_user_holds_off_the_idle_stop(market: Market) -> None:
    running = await market.running(idle_timeout_min=5)
    conn = await connect(market.shopper._lifecycle.address(running), timeout_s=10)
    async with conn:
        for _ in range(10):
            await market.clock.advance(60)
            await market.tick()
        held = await market.shopper.session(running.id)
        assert held.status == SessionStatus.RUNNING
        assert held.idle_reason == "busy: 1 SSH connection(s)"
    for _ in range(8):
        await market.clock.advance(60)
        await market.tick()
    ended = await market.until(running.id, lambda s: s.closed)
    assert ended.status == SessionStatus.ENDED


async def _ss_fails(self: _Shell, args: list[str], stdin: str) -> tuple[str, str, int]:
    return "", "ss: command not found\n", 127


@pytest.mark.parametrize("signal", ["gpu", "ssh"])
async def test_an_idle_signal_that_cannot_be_read_counts_as_busy(
    market: Market, monkeypatch: pytest.MonkeyPatch, signal: str
) -> None:
    running = await market.running(idle_timeout_min=5)
    if signal == "gpu":
        market.instance(running).node_gpu_count = 0  # nvidia-smi: "No devices were found"
    else:
        monkeypatch.setattr(_Shell, "__init__", _with_ss(_Shell.__init__))
    for _ in range(10):
        await market.clock.advance(60)
        await market.tick()
    still = await market.shopper.session(running.id)
    assert still.status == SessionStatus.RUNNING
    words = "GPU utilization unknown" if signal == "gpu" else "SSH connections unknown"
    assert still.idle_reason is not None and still.idle_reason.startswith(f"busy: {words}")


def _with_ss(init: Any) -> Any:
    """The sim shell's command table binds `_ss` at construction: rebind it to the patch."""

    def patched(self: _Shell, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.commands["ss"] = lambda argv, stdin: _ss_fails(self, argv, stdin)

    return patched


async def test_the_stuck_in_provisioning_backstop_fails_an_undriven_session(
    market: Market,
) -> None:
    market.world.faults.node("vastai").ssh_refuse_s = 10 * 3600
    session = await market.provision()
    task = market.shopper._lifecycle._tasks[session.id]
    task.cancel()  # the process that drove it is gone; only the supervisor's rules remain
    await market.quiet()
    budget = market.shopper.provision_budget("vastai")
    await market.clock.advance((budget + timedelta(minutes=3)).total_seconds())
    await market.tick(reconcile=False)
    failed = await market.until(session.id, lambda s: s.closed, step_s=5)
    assert failed.status == SessionStatus.FAILED
    assert "stuck in provisioning" in (failed.error or "")
    assert market.instance(failed).destroyed_at is not None


async def test_ending_a_session_whose_creator_left_before_its_id_finds_it_by_label(
    market: Market,
) -> None:
    rented = await market.provision(await market.offer("bluelobster"))
    await market.reopen()  # that one-shot exits before the provider named its instance:
    stored = await market.shopper.session(rented.id)
    await market.shopper._store.update_session(  # the row as such a crash leaves it
        rented.id,
        {"version": stored.version},
        instance_id=None,
        instance=InstanceState.CREATING,
        state_entered_at=market.clock.now(),
    )
    session = await market.shopper.session(rented.id)
    asked = market.clock.now()
    await market.shopper.done(session.id)
    gone = await market.until(session.id, lambda s: s.closed)
    assert gone.instance_id is not None and market.instance(gone).destroyed_at is not None
    destroying = [e for e in await market.audit(session.id) if e.message.startswith("destroying")]
    assert (destroying[0].at - asked).total_seconds() < 5  # at once, not a reconciliation later
