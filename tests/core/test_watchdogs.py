"""The node's own deadline watchdog (issue 21): armed before a session runs, it ends the
instance when no gpushop process is left — on the fake clock against the simulator, whose
nodes run the watchdog the core armed over SSH and call the simulated Vast API with the
instance's own key."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from gpushop_tui.core.provisioning import instance_key_path
from gpushop_tui.logs import configure_logging
from gpushop_tui.models import InstanceState, Session, SessionStatus, StoragePolicy, WorkloadSpec
from gpushop_tui.node import watchdog as node_watchdog
from gpushop_tui.node.ssh import NodeError
from tests.core.market import Market, open_market

GRACE = timedelta(minutes=10)


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Market]:
    async with open_market(monkeypatch, tmp_path) as market:
        yield market


async def operator_gone(market: Market) -> None:
    """Every gpushop process of the operator ends; none ever runs again."""
    await market.shopper.aclose()


async def provider_request(market: Market) -> None:
    """Anyone asks the simulated world anything (its watchdogs act on its clock, lazily)."""
    async with httpx.AsyncClient() as client:
        (await client.get(f"{market.sim.control}/state")).raise_for_status()


def gpu_hours(market: Market, session: Session) -> float:
    """The GPU time the simulated provider billed: from the create until the instance stopped
    or was destroyed (or until now)."""
    instance = market.instance(session)
    now = market.world.now()
    ends = [t for t in (instance.destroyed_at, instance.stopped_at) if t is not None]
    return (min([now, *ends]) - instance.created_at) / 3600


@pytest.mark.parametrize(
    ("provider", "ends_as"),
    [("vastai", "destroyed"), ("tensordock", "stopped"), ("bluelobster", "stopped")],
)
async def test_with_the_operator_gone_the_node_ends_its_own_instance_at_the_deadline(
    market: Market, provider: str, ends_as: str
) -> None:
    running = await market.running(await market.offer(provider), hours=1)
    deadline = running.expires_at + GRACE
    assert running.watchdog_deadline == deadline.replace(microsecond=0)
    assert running.watchdog_error is None
    view = await market.shopper.view_of(running)
    assert any(path.startswith("node watchdog: ends the instance at") for path in view.kill_paths)
    if provider == "vastai":  # the instance's own key is kept beside its SSH key, 0600
        assert running.key_path is not None
        key_file = instance_key_path(Path(running.key_path))
        assert key_file.stat().st_mode & 0o777 == 0o600

    await operator_gone(market)
    await market.clock.advance((deadline - market.clock.now()).total_seconds() - 60)
    await provider_request(market)
    assert market.instance(running).phase(market.world.now()) == "running"
    await market.clock.advance(61)
    await provider_request(market)
    assert market.instance(running).phase(market.world.now()) == ends_as
    await market.clock.advance(24 * 3600)  # a day later, still nobody: the GPU bill stopped
    billed = gpu_hours(market, running)
    assert billed == pytest.approx(
        (deadline - running.instance_created_at).total_seconds() / 3600, abs=0.02
    )  # type: ignore[operator]
    log = (market.world.nodes._root(market.instance(running)) / ".gpushop/watchdog.log").read_text()
    assert ("destroy:" if provider == "vastai" else "poweroff") in log


async def test_an_extend_moves_the_nodes_deadline_so_the_old_one_passes_quietly(
    market: Market,
) -> None:
    running = await market.running(await market.offer("vastai"), hours=1)
    old = running.watchdog_deadline
    extended = await market.run(market.shopper.extend(running.id, 1))
    assert extended.watchdog_deadline == (extended.expires_at + GRACE).replace(microsecond=0)
    assert old is not None and extended.watchdog_deadline is not None
    await operator_gone(market)
    await market.clock.advance((old - market.clock.now()).total_seconds() + 120)
    await provider_request(market)
    assert market.instance(running).phase(market.world.now()) == "running"
    await market.clock.advance((extended.watchdog_deadline - old).total_seconds())
    await provider_request(market)
    assert market.instance(running).phase(market.world.now()) == "destroyed"


async def test_a_session_meant_to_keep_its_disk_is_stopped_by_its_node_not_destroyed(
    market: Market,
) -> None:
    running = await market.running(await market.offer("vastai"), storage=StoragePolicy.KEEP)
    assert running.watchdog_deadline is not None
    await operator_gone(market)
    await market.clock.advance((running.watchdog_deadline - market.clock.now()).total_seconds())
    await provider_request(market)
    instance = market.instance(running)
    assert instance.phase(market.world.now()) == "stopped" and instance.destroyed_at is None


async def test_a_node_that_cannot_be_armed_says_so_loudly_and_stays_usable(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(*args: object, **kwargs: object) -> None:
        raise NodeError("command", "starting the node watchdog exited with 1: curl is missing")

    monkeypatch.setattr(node_watchdog, "arm", refused)
    session = await market.provision(await market.offer("vastai"))
    running = await market.until(session.id, lambda s: s.status == SessionStatus.RUNNING)
    assert running.watchdog_error is not None and "curl is missing" in running.watchdog_error
    # the loop may have started before the failure: the deadline it would hold is kept, so
    # that an extend moves it all the same
    assert running.watchdog_deadline == (running.expires_at + GRACE).replace(microsecond=0)
    alerts = [e.data.get("alert") for e in await market.audit(session.id) if e.kind == "alert"]
    assert alerts.count("watchdog_not_armed") == 1
    view = await market.shopper.view_of(running)
    assert any("node watchdog: not as it should be" in path for path in view.kill_paths)


async def test_an_extend_while_the_workload_loads_moves_the_nodes_deadline(
    market: Market,
) -> None:
    spec = WorkloadSpec(kind="llm", model="llama3.2:1b", benchmark=False)
    session = await market.provision(await market.offer("vastai"), workload=spec)
    loading = await market.until(session.id, lambda s: s.workload_started_at is not None)
    assert loading.status == SessionStatus.PROVISIONING and loading.watchdog_deadline is not None
    extended = await market.run(market.shopper.extend(session.id, 1))
    assert extended.watchdog_deadline == (extended.expires_at + GRACE).replace(microsecond=0)
    assert market.world.watchdogs[("vastai", extended.instance_id)].read_deadline(0) == (
        extended.watchdog_deadline.timestamp()  # type: ignore[union-attr]
    )


async def test_a_move_that_failed_is_retried_by_the_supervisor(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await market.running(await market.offer("vastai"))
    real_move = node_watchdog.move

    async def unreachable(*args: object, **kwargs: object) -> None:
        raise NodeError("connect", "the node did not answer")

    monkeypatch.setattr(node_watchdog, "move", unreachable)
    extended = await market.run(market.shopper.extend(running.id, 1))
    assert extended.watchdog_deadline == running.watchdog_deadline  # still the old one
    assert extended.watchdog_error is not None and "still acts at" in extended.watchdog_error
    monkeypatch.setattr(node_watchdog, "move", real_move)
    await market.tick()
    moved = await market.shopper.session(running.id)
    assert moved.watchdog_deadline == (moved.expires_at + GRACE).replace(microsecond=0)
    assert moved.watchdog_error is None


async def test_a_starting_session_is_armed_for_a_reservation_counted_from_when_it_runs(
    market: Market,
) -> None:
    spec = WorkloadSpec(kind="llm", model="llama3.2:1b", benchmark=False)
    running = await market.running(await market.offer("vastai"), hours=0.25, workload=spec)
    await market.shopper.stop(running.id, by="operator (test)")
    await market.until(running.id, lambda s: s.status == SessionStatus.STOPPED)
    await market.advance(3600, step_s=600)
    await market.shopper.start(running.id, by="operator (test)")
    loading = await market.until(running.id, lambda s: s.workload_started_at is not None)
    assert loading.status == SessionStatus.STARTING and loading.watchdog_deadline is not None
    # armed while the workload loads: not from when the start was asked, but as if it ran now
    at_least = market.clock.now() + timedelta(minutes=15) + GRACE - timedelta(seconds=1)
    assert loading.watchdog_deadline >= at_least.replace(microsecond=0)
    again = await market.until(running.id, lambda s: s.status == SessionStatus.RUNNING)
    assert again.watchdog_deadline == (again.expires_at + GRACE).replace(microsecond=0)


async def test_a_started_session_is_armed_again_and_a_stopped_one_is_not(market: Market) -> None:
    running = await market.running(await market.offer("bluelobster"))
    await market.shopper.stop(running.id, by="operator (test)")
    stopped = await market.until(running.id, lambda s: s.status == SessionStatus.STOPPED)
    assert stopped.watchdog_deadline is None  # it died with the node's power
    assert stopped.instance == InstanceState.LIVE
    await market.shopper.start(running.id, by="operator (test)")
    again = await market.until(running.id, lambda s: s.status == SessionStatus.RUNNING, step_s=2)
    assert again.watchdog_deadline == (again.expires_at + GRACE).replace(microsecond=0)
    assert market.world.watchdogs.get(("bluelobster", again.instance_id)) is not None


async def test_the_deadline_is_never_past_the_hard_max(market: Market) -> None:
    running = await market.running(await market.offer("vastai"), hours=12)
    assert running.watchdog_deadline == running.hard_max_at.replace(microsecond=0)


async def test_the_instance_key_reaches_the_node_but_never_the_database_or_the_log(
    market: Market,
) -> None:
    handler = configure_logging(market.shopper.settings)
    try:
        running = await market.running(await market.offer("vastai"))
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    instance = market.instance(running)
    key = instance.extra["instance_api_key"]
    node_copy = market.world.nodes._root(instance) / ".gpushop" / "instance_key"
    assert node_copy.read_text().strip() == key and node_copy.stat().st_mode & 0o777 == 0o600
    paths = market.shopper.settings.paths
    stored = b"".join(p.read_bytes() for p in paths.db_file.parent.glob(paths.db_file.name + "*"))
    assert key.encode() not in stored
    assert key not in paths.log_file.read_text()
    assert key not in repr(await market.shopper.session(running.id))


async def test_a_node_whose_clock_runs_ahead_still_ends_its_instance_at_our_deadline(
    market: Market,
) -> None:
    market.world.faults.node("vastai").clock_skew_s = 900  # 15 min ahead: more than the grace
    running = await market.running(await market.offer("vastai"), hours=1)
    assert running.watchdog_deadline is not None
    node_file = market.world.nodes._root(market.instance(running)) / ".gpushop" / "deadline"
    assert int(node_file.read_text()) == running.watchdog_deadline.timestamp() + 900
    said = [e.message for e in await market.audit(running.id)]
    assert any("the node's clock is 900 s ahead of ours" in m for m in said)
    await operator_gone(market)
    await market.clock.advance(
        (running.watchdog_deadline - market.clock.now()).total_seconds() - 60
    )
    await provider_request(market)
    assert market.instance(running).phase(market.world.now()) == "running"  # not 15 min early
    await market.clock.advance(61)
    await provider_request(market)
    assert market.instance(running).phase(market.world.now()) == "destroyed"
