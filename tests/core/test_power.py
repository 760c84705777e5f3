"""Power off, power on (issue 20): stop keeps the disk, start brings the same disk back and
waits like a rental, a stopped disk ends by its own keep time, and every power cycle is billed
and audited. All on the fake clock against the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from gpushop_tui.core import costs
from gpushop_tui.core.views import SessionView
from gpushop_tui.errors import Hint, UserError
from gpushop_tui.models import (
    Budget,
    BudgetAction,
    BudgetKind,
    CostKind,
    IdleAction,
    InstanceState,
    Session,
    SessionStatus,
    StoragePolicy,
    WorkloadSpec,
)
from tests.core.market import Market, open_market


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Market]:
    async with open_market(monkeypatch, tmp_path) as market:
        yield market


def closed(session: Session) -> bool:
    return session.closed


def settled(session: Session) -> bool:
    return session.status in (SessionStatus.RUNNING, SessionStatus.STOPPED) or session.closed


async def stop(market: Market, session: Session, **kwargs: object) -> Session:
    await market.shopper.stop(session.id, by="operator (test)", **kwargs)  # type: ignore[arg-type]
    return await market.until(session.id, lambda s: s.status != SessionStatus.STOPPING)


async def start(market: Market, session: Session, **kwargs: object) -> Session:
    await market.shopper.start(session.id, by="operator (test)", **kwargs)  # type: ignore[arg-type]
    return await market.until(session.id, settled, step_s=2)


@pytest.mark.parametrize("provider", ["vastai", "tensordock", "bluelobster"])
async def test_stop_then_start_runs_again_on_the_same_disk(market: Market, provider: str) -> None:
    running = await market.running(await market.offer(provider))
    marker = Path(market.home) / "marker.txt"
    marker.write_text("kept across the power cycle\n")
    await market.run(market.shopper.transfer(running.id, "upload", marker, "marker.txt"))
    await market.advance(600, step_s=30)

    stopped = await stop(market, running)
    assert stopped.status == SessionStatus.STOPPED and stopped.instance == InstanceState.LIVE
    assert market.instance(stopped).stopped and market.instance(stopped).destroyed_at is None
    assert stopped.stopped_at is not None and stopped.stopped_price_per_hour is not None
    assert costs.burn_rate(stopped) == stopped.stopped_price_per_hour
    await market.advance(3 * 3600, step_s=600)

    started_at = market.clock.now()
    again = await start(market, stopped)
    assert again.status == SessionStatus.RUNNING, again.error
    assert again.instance_id == running.instance_id  # the same instance, not a new rental
    assert again.hard_max_at == started_at + timedelta(hours=market.shopper.settings.hard_max_hours)
    # the new reservation counts from when it runs again, not from the wait for it
    assert again.expires_at == again.state_entered_at + timedelta(hours=running.reservation_hours)
    back = market.home / "back.txt"
    await market.run(market.shopper.transfer(again.id, "download", back, "marker.txt"))
    assert back.read_text() == "kept across the power cycle\n"

    kinds = [(e.kind, e.ended_at is None) for e in costs.entries(again)]
    assert kinds == [(CostKind.COMPUTE, False), (CostKind.STORAGE, False), (CostKind.COMPUTE, True)]
    compute, storage, gpu_again = costs.entries(again)
    assert compute.ended_at == stopped.stopped_at
    assert storage.started_at == stopped.stopped_at and storage.ended_at == gpu_again.started_at
    assert started_at < gpu_again.started_at <= again.state_entered_at  # the disk bills the boot
    assert storage.rate_per_hour == stopped.stopped_price_per_hour
    three_hours_of_disk = 3 * storage.rate_per_hour
    assert storage.amount(market.clock.now()) == pytest.approx(three_hours_of_disk, rel=0.01)

    power = [e for e in await market.audit(running.id) if e.kind == "session_power"]
    assert [(e.data["action"], e.data["by"]) for e in power] == [
        ("stop", "operator (test)"),
        ("start", "operator (test)"),
    ]


async def test_a_stopped_workload_is_launched_again_and_healthy_before_running(
    market: Market,
) -> None:
    spec = WorkloadSpec(kind="llm", model="llama3.2:1b", benchmark=False)
    running = await market.running(workload=spec, idle_timeout_min=30, idle_action="stop")
    assert running.endpoint is not None
    # seed 004: idle for 30 minutes -> stopped, by the idle policy
    for _ in range(40):
        await market.advance(60, step_s=60)
        await market.tick()
    stopped = await market.until(running.id, lambda s: s.status == SessionStatus.STOPPED)
    assert stopped.instance == InstanceState.LIVE and market.instance(stopped).stopped
    power = [e for e in await market.audit(running.id) if e.kind == "session_power"]
    assert power[-1].data["action"] == "stop" and power[-1].data["by"].startswith("idle policy")
    assert market.world.nodes.workload(market.instance(stopped)) is None  # it died with the node

    phases: list[str | None] = []
    await market.shopper.start(running.id, by="operator (test)")
    while (now := await market.shopper.session(running.id)).status == SessionStatus.STARTING:
        phases.append(now.workload_phase)
        await market.advance(1)
    assert now.status == SessionStatus.RUNNING and now.workload_phase == "healthy"
    assert "starting" in phases or "pulling model" in phases or "loading" in phases
    endpoint = await market.shopper.endpoint(running.id)
    assert endpoint.url == running.endpoint
    assert market.world.nodes.workload(market.instance(now)) is not None


async def test_a_session_kept_for_its_own_days_is_destroyed_then_and_confirmed_gone(
    market: Market,
) -> None:
    running = await market.running(await market.offer("bluelobster"))
    stopped = await stop(market, running, keep_days=2)
    assert stopped.keep_until == stopped.stopped_at + timedelta(days=2)  # type: ignore[operator]
    await market.clock.advance(2 * 86400 - 3600)
    await market.tick()
    warned = [
        e for e in await market.audit(running.id) if e.data.get("alert") == "disk_expiry_soon"
    ]
    assert warned, "no warning before the kept disk ends"
    assert (await market.shopper.session(running.id)).status == SessionStatus.STOPPED
    await market.clock.advance(3601)
    await market.tick()
    gone = await market.until(running.id, closed)
    assert gone.status == SessionStatus.ENDED and gone.instance == InstanceState.GONE
    assert market.instance(gone).destroyed_at is not None
    assert SessionView(gone, None).status_words == "ended (destroyed)"


async def test_a_start_that_cannot_get_its_gpu_back_keeps_the_disk_and_says_why(
    market: Market,
) -> None:
    running = await market.running(await market.offer("tensordock"))
    stopped = await stop(market, running)
    await market.advance(3600, step_s=60)  # the GPU is released (StoppedDisassociated)
    market.world.faults.node("tensordock").start_no_capacity = True
    back = await start(market, stopped)
    assert back.status == SessionStatus.STOPPED and back.instance == InstanceState.LIVE
    assert back.error is not None and "no capacity to start" in back.error
    assert market.instance(back).destroyed_at is None
    words = SessionView(back, None).status_words
    assert words.startswith("stopped (disk kept, $") and "no capacity to start" in words
    market.world.faults.node("tensordock").start_no_capacity = False
    again = await start(market, back)  # the user decides: try again, and now it works
    assert again.status == SessionStatus.RUNNING and again.error is None


async def test_a_start_that_never_completes_goes_back_to_stopped_within_its_budget(
    market: Market,
) -> None:
    running = await market.running(await market.offer("vastai"))
    stopped = await stop(market, running)
    market.world.faults.node("vastai").start_no_capacity = True  # the host is rented out
    asked = market.clock.now()
    back = await start(market, stopped)
    budget = market.shopper.provision_budget("vastai")
    assert back.status == SessionStatus.STOPPED and back.error is not None
    assert "not running after" in back.error
    assert market.clock.now() - asked <= budget + timedelta(minutes=3)
    instance = market.instance(back)
    assert instance.stopped and instance.destroyed_at is None  # the start was called off
    adapter = market.shopper._providers["vastai"]
    assert adapter is not None and back.instance_id is not None
    status = await adapter.get(back.instance_id)
    assert status is not None and status.stopped and status.state != "scheduling"


async def test_a_stopped_instance_that_vanishes_is_failed_and_alerted(market: Market) -> None:
    running = await market.running(await market.offer("vastai"))
    market.world.faults.node("vastai").stopped_vanishes_after_s = 600
    stopped = await stop(market, running)
    await market.advance(900, step_s=60)
    await market.tick(reconcile=True)
    gone = await market.until(running.id, closed)
    assert gone.status == SessionStatus.FAILED and gone.instance == InstanceState.GONE
    alerts = [e.data.get("alert") for e in await market.audit(running.id) if e.kind == "alert"]
    assert "instance_vanished" in alerts
    assert stopped.stopped_at is not None


async def test_stop_and_start_are_refused_in_the_wrong_state_or_where_nothing_can_stop(
    market: Market,
) -> None:
    running = await market.running(await market.offer("vastai"))
    with pytest.raises(UserError, match="only a stopped session can be started"):
        await market.shopper.start(running.id, by="operator (test)")
    adapter = market.shopper._providers["vastai"]
    assert adapter is not None
    adapter.can_stop = False  # type: ignore[misc]
    with pytest.raises(UserError) as refused:
        await market.shopper.stop(running.id, by="operator (test)")
    assert refused.value.hint == Hint.CANNOT_STOP and "cannot stop" in refused.value.message
    assert (await market.shopper.session(running.id)).status == SessionStatus.RUNNING


async def test_the_hard_max_bounds_running_time_and_a_keep_session_is_stopped_there(
    market: Market,
) -> None:
    running = await market.running(storage=StoragePolicy.KEEP, hours=12)
    await market.shopper.extend(running.id, 1, override_reason="a long job")  # past the max
    moved = await market.shopper.session(running.id)
    await market.clock.advance((moved.hard_max_at - market.clock.now()).total_seconds() + 1)
    await market.tick()
    stopped = await market.until(running.id, lambda s: s.status != SessionStatus.STOPPING)
    assert stopped.status == SessionStatus.STOPPED and stopped.instance == InstanceState.LIVE
    hard_max = [e for e in await market.audit(running.id) if e.data.get("alert") == "hard_max"]
    assert hard_max and hard_max[0].message.endswith("stopping its instance, keeping the disk")


async def test_a_disk_budget_destroys_the_dearest_kept_disks(market: Market) -> None:
    first = await stop(market, await market.running(await market.offer("vastai")))
    second = await stop(market, await market.running(await market.offer("bluelobster")))
    day = {s.id: (s.stopped_price_per_hour or 0) * 24 for s in (first, second)}
    dearer, cheaper = sorted(day, key=day.__getitem__, reverse=True)
    limit = day[cheaper] + (day[dearer] - day[cheaper]) / 2 + 0.001
    await market.shopper.set_budget(
        Budget(kind=BudgetKind.DISK_PER_DAY, limit=limit, action=BudgetAction.STOP)
    )
    usage = await market.shopper.budget_usage()
    assert usage[0].used == pytest.approx(sum(day.values()))
    await market.tick()
    assert (await market.until(dearer, closed)).instance == InstanceState.GONE
    assert (await market.shopper.session(cheaper)).status == SessionStatus.STOPPED


async def test_a_stopped_session_bills_its_disk_apart_from_gpu_time(market: Market) -> None:
    running = await market.running(await market.offer("vastai"))
    other = await market.running(await market.offer("vastai"))
    await stop(market, running)
    report = await market.shopper.cost_report()
    assert [b.session.id for b in report.disk_billing] == [running.id]
    assert [b.session.id for b in report.gpu_billing] == [other.id]
    view = await market.shopper.session_view(running.id)
    assert view.disk_usd_per_day == pytest.approx((view.session.stopped_price_per_hour or 0) * 24)
    deadline = view.next_deadline
    assert deadline is not None and deadline.what == "disk kept until"
    assert view.status_words == f"stopped (disk kept, ${view.disk_usd_per_day:.2f}/day)"
    assert [c.kind for c in view.cycles(market.clock.now())] == [
        CostKind.COMPUTE,
        CostKind.STORAGE,
    ]


async def test_done_on_a_stopped_session_destroys_its_disk(market: Market) -> None:
    stopped = await stop(market, await market.running(await market.offer("vastai")))
    await market.shopper.done(stopped.id)
    gone = await market.until(stopped.id, closed)
    assert gone.status == SessionStatus.ENDED and market.instance(gone).destroyed_at is not None


async def test_idle_stop_is_refused_at_rental_where_the_provider_cannot_stop(
    market: Market,
) -> None:
    adapter = market.shopper._providers["vastai"]
    assert adapter is not None
    adapter.can_stop = False  # type: ignore[misc]
    with pytest.raises(UserError) as refused:
        await market.provision(idle_action=IdleAction.STOP)
    assert refused.value.field == "idle_action" and refused.value.hint == Hint.CANNOT_STOP


async def test_a_stopped_instance_started_behind_our_back_is_stopped_again(
    market: Market,
) -> None:
    stopped = await stop(market, await market.running(await market.offer("bluelobster")))
    assert stopped.instance_id is not None
    market.world.power_on("bluelobster", stopped.instance_id)  # from the provider's console
    await market.advance(30)
    await market.tick(reconcile=True)
    again = await market.until(stopped.id, lambda s: s.status == SessionStatus.STOPPED)
    assert market.instance(again).stopped
    alerts = [e.data.get("alert") for e in await market.audit(stopped.id)]
    assert "stopped_instance_up" in alerts


async def test_a_start_is_admitted_by_the_budgets_like_a_rental(market: Market) -> None:
    stopped = await stop(market, await market.running(await market.offer("vastai")))
    rate = stopped.price_per_hour or 0
    await market.shopper.set_budget(
        Budget(kind=BudgetKind.BURN_RATE, limit=rate / 2, action=BudgetAction.BLOCK)
    )
    with pytest.raises(UserError, match="refused by the global burn rate budget"):
        await market.shopper.start(stopped.id, by="operator (test)")
    assert (await market.shopper.session(stopped.id)).status == SessionStatus.STOPPED


async def test_a_start_bills_the_disk_until_the_gpu_runs_and_its_reservation_counts_from_then(
    market: Market,
) -> None:
    stopped = await stop(market, await market.running(await market.offer("vastai")))
    market.world.faults.node("vastai").start_no_capacity = True  # waits for GPUs: no GPU bill
    failed = await start(market, stopped)
    assert failed.status == SessionStatus.STOPPED
    assert [e.kind for e in costs.entries(failed)] == [
        CostKind.COMPUTE,
        CostKind.STORAGE,
        CostKind.STORAGE,
    ]
    market.world.faults.node("vastai").start_no_capacity = False
    await market.shopper.start(failed.id, by="operator (test)", hours=1)
    running = await market.until(failed.id, settled, step_s=2)
    assert running.status == SessionStatus.RUNNING
    compute = costs.entries(running)[-1]
    assert compute.kind == CostKind.COMPUTE and compute.ended_at is None
    assert running.expires_at >= compute.started_at + timedelta(hours=1)


async def test_a_reservation_does_not_end_a_start_that_waits_for_its_gpu(market: Market) -> None:
    stopped = await stop(market, await market.running(await market.offer("bluelobster")))
    market.world.faults.node("bluelobster").start_never_completes = True
    await market.shopper.start(stopped.id, by="operator (test)", hours=0.25)
    for _ in range(60):  # the supervisor enforces deadlines every minute, past the 15 min
        await market.advance(60, step_s=30)
        await market.tick()
    back = await market.until(stopped.id, settled, step_s=30)
    assert back.status == SessionStatus.STOPPED and back.instance == InstanceState.LIVE
    assert market.instance(back).destroyed_at is None


async def test_an_idle_stop_session_is_stopped_not_destroyed_when_its_reservation_ends(
    market: Market,
) -> None:
    running = await market.running(await market.offer("vastai"), idle_action="stop")
    await market.clock.advance((running.expires_at - market.clock.now()).total_seconds() + 1)
    await market.tick()
    ended = await market.until(running.id, lambda s: s.status != SessionStatus.STOPPING)
    assert ended.status == SessionStatus.STOPPED and ended.instance == InstanceState.LIVE


async def test_done_while_stopping_to_keep_the_disk_destroys_it(market: Market) -> None:
    running = await market.running(await market.offer("tensordock"))
    await market.shopper.stop(running.id, by="operator (test)")
    ending = await market.shopper.done(running.id)
    assert ending.status == SessionStatus.STOPPING and not ending.keep_disk
    gone = await market.until(running.id, closed)
    assert gone.status == SessionStatus.ENDED and market.instance(gone).destroyed_at is not None


async def test_a_disk_that_vanishes_while_being_kept_is_a_failure_not_an_end(
    market: Market,
) -> None:
    running = await market.running(await market.offer("tensordock"))
    await market.shopper.stop(running.id, by="operator (test)")
    assert running.instance_id is not None
    await market.world.vanish("tensordock", running.instance_id)
    gone = await market.until(running.id, closed)
    assert gone.status == SessionStatus.FAILED
    alerts = [e.data.get("alert") for e in await market.audit(running.id)]
    assert "instance_vanished" in alerts


async def test_a_session_stopped_before_power_cycles_were_kept_bills_and_ends_in_full(
    market: Market,
) -> None:
    """A row as migration 0006 leaves a kept disk of schema 5: no keep time, no cycles."""
    stopped = await stop(market, await market.running(await market.offer("vastai")))
    legacy = await market.shopper._store.update_session(
        stopped.id, {"version": stopped.version}, keep_until=None, cycles=[]
    )
    assert legacy is not None and legacy.stopped_at is not None
    assert [e.kind for e in costs.entries(legacy)] == [CostKind.COMPUTE, CostKind.STORAGE]
    assert costs.entries(legacy)[0].ended_at == legacy.stopped_at
    await market.tick()
    kept = await market.shopper.session(stopped.id)
    assert kept.keep_until == legacy.stopped_at + timedelta(days=7)
    again = await start(market, kept)
    assert [e.kind for e in costs.entries(again)][:2] == [CostKind.COMPUTE, CostKind.STORAGE]
