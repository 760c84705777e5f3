"""Lambda Cloud and RunPod through the whole core (issue 22), on the fake clock against their
simulator twins: what each brings to the lifecycle beyond an adapter — Lambda's per-session SSH
key, RunPod's provider time limit as a kill path — and that neither is given a node watchdog
it could not honour."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop_tui.core import provisioning
from gpushop_tui.core.supervisor import UNSEEN_GRACE
from gpushop_tui.core.ttl import ProviderTtls
from gpushop_tui.errors import UserError
from gpushop_tui.models import InstanceState, Offer, OfferQuery, Session, SessionStatus
from gpushop_tui.providers.registry import PROVIDERS
from gpushop_tui.sim.faults import HttpFault
from tests.core.market import Market, open_market, open_unlimited
from tests.support.factories import make_session


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Market]:
    async with open_market(monkeypatch, tmp_path, providers=PROVIDERS) as market:
        market.world.rate_limited = False  # the adapters' own limiters are off here too
        yield market


async def lambda_keys(market: Market) -> list[dict[str, Any]]:
    """The SSH keys registered at the simulated Lambda account, through its own API."""
    headers = {"Authorization": f"Bearer {market.sim.keys['lambda']}"}
    async with httpx.AsyncClient(headers=headers) as client:
        answer = await client.get(f"{market.sim.urls['lambda']}/ssh-keys")
    answer.raise_for_status()
    return list(answer.json()["data"])


async def test_a_lambda_rental_registers_its_own_key_and_removes_it_once_destroyed(
    market: Market,
) -> None:
    running = await market.running(await market.offer("lambda"), hours=1)
    assert running.ssh_user == "ubuntu"
    assert running.price_per_hour == market.instance(running).price_per_hour  # charged rate
    assert running.key_path is not None
    public_key = Path(running.key_path + ".pub").read_text().strip()
    keys = await lambda_keys(market)
    assert [(k["name"], k["public_key"].strip()) for k in keys] == [(running.label, public_key)]

    ended = await market.run(market.shopper.done(running.id))
    closed = await market.until(ended.id, lambda s: s.closed, step_s=2)
    assert closed.status == SessionStatus.ENDED
    assert market.world.get("lambda", running.instance_id).phase(market.world.now()) == (
        "destroyed"
    )
    assert await lambda_keys(market) == []


async def test_lambda_gets_no_node_watchdog_and_its_kill_paths_say_so(market: Market) -> None:
    running = await market.running(await market.offer("lambda"), hours=1)
    assert running.watchdog_deadline is None and running.watchdog_error is None
    assert running.provider_ttl_at is None
    assert (running.provider, running.instance_id) not in market.world.watchdogs
    view = await market.shopper.view_of(running)
    assert view.kill_paths[1:] == [
        "node watchdog: none on Lambda Cloud (nothing on the node can end its bill)"
    ]
    alerts = [e.data.get("alert") for e in await market.audit(running.id) if e.kind == "alert"]
    assert "watchdog_not_armed" not in alerts


async def test_lambda_cannot_stop_so_a_stop_is_refused_in_one_sentence(market: Market) -> None:
    running = await market.running(await market.offer("lambda"), hours=1)
    with pytest.raises(UserError, match="Lambda Cloud cannot stop an instance and keep its disk"):
        await market.shopper.stop(running.id, by="operator (cli)")


async def on_demand_pod(market: Market) -> Offer:
    """The cheapest free on-demand RunPod offer (the cheapest of all is a spot bid)."""
    view = await market.shopper.offers(OfferQuery(providers=("runpod",), spot=False))
    return next(o for o in view.offers if o.provider_offer_id not in market.world.taken["runpod"])


def pod_limit(market: Market, session: Session) -> datetime | None:
    """The `terminateAfter` the simulated RunPod holds for the session's pod."""
    ttl = market.instance(session).extra.get("terminate_after")
    return None if ttl is None else datetime.fromtimestamp(ttl, UTC)


async def test_a_runpod_rental_sets_runpods_own_limit_at_the_hard_max_and_records_it(
    market: Market,
) -> None:
    running = await market.running(await on_demand_pod(market), hours=1)
    assert (running.ssh_user, running.workload) == ("root", "interactive")
    assert running.price_per_hour == market.instance(running).price_per_hour  # costPerHr
    assert running.provider_ttl_at == running.hard_max_at.replace(microsecond=0)
    assert pod_limit(market, running) == running.hard_max_at.replace(microsecond=0)
    assert running.watchdog_deadline is None and running.watchdog_error is None
    view = await market.shopper.view_of(running)
    assert view.kill_paths[1:] == [
        f"provider time limit: RunPod itself ends the instance at "
        f"{running.hard_max_at:%Y-%m-%d %H:%M} UTC",
        "node watchdog: none on RunPod (nothing on the node can end its bill)",
    ]
    timeline = [e.message for e in await market.audit(running.id)]
    limit = f"RunPod itself ends the instance at {running.hard_max_at:%Y-%m-%d %H:%M} UTC"
    assert limit in timeline


async def test_with_gpushop_gone_runpod_ends_the_pod_at_its_limit(market: Market) -> None:
    running = await market.running(await on_demand_pod(market), hours=1)
    await market.shopper.aclose()  # the operator's gpushop is gone for good
    pod = market.instance(running)
    await market.clock.advance((running.hard_max_at - market.clock.now()).total_seconds() + 60)
    headers = {"Authorization": f"Bearer {market.sim.keys['runpod']}"}
    async with httpx.AsyncClient(headers=headers) as client:  # anyone asks RunPod anything
        (await client.get(f"{market.sim.urls['runpod']}/pods")).raise_for_status()
    assert pod.phase(market.world.now()) == "destroyed"
    assert pod.destroyed_at == pytest.approx(running.hard_max_at.timestamp(), abs=1)
    market.shopper = await open_unlimited(market.clock)


async def test_runpods_limit_follows_a_stop_a_start_and_an_override(market: Market) -> None:
    running = await market.running(await on_demand_pod(market), hours=1, storage="keep")
    keep_grace = timedelta(minutes=10)  # its stop at the hard max must win the race
    assert running.provider_ttl_at == (running.hard_max_at + keep_grace).replace(microsecond=0)
    await market.run(market.shopper.stop(running.id, by="operator (cli)", keep_days=2))
    stopped = await market.until(running.id, lambda s: s.status == SessionStatus.STOPPED)
    assert stopped.keep_until is not None
    assert stopped.provider_ttl_at == stopped.keep_until.replace(microsecond=0)
    assert pod_limit(market, stopped) == stopped.keep_until.replace(microsecond=0)

    await market.advance(3600, step_s=60)
    await market.run(market.shopper.start(running.id, by="operator (cli)", hours=1))
    started = await market.until(running.id, lambda s: s.status == SessionStatus.RUNNING)
    assert started.provider_ttl_at == (started.hard_max_at + keep_grace).replace(microsecond=0)
    assert pod_limit(market, started) == (started.hard_max_at + keep_grace).replace(microsecond=0)

    hours = (started.hard_max_at - started.expires_at).total_seconds() / 3600 + 0.5
    extended = await market.run(
        market.shopper.extend(running.id, hours, override_reason="a long training run")
    )
    assert extended.provider_ttl_at == (extended.hard_max_at + keep_grace).replace(microsecond=0)
    assert pod_limit(market, extended) == (extended.hard_max_at + keep_grace).replace(microsecond=0)


async def test_a_limit_runpod_will_not_move_is_alerted_and_moved_by_the_supervisor_later(
    market: Market,
) -> None:
    running = await market.running(await on_demand_pod(market), hours=1)
    refuse = HttpFault(provider="runpod", endpoint="update", status=500, times=None)
    market.world.faults.add(refuse)
    hours = (running.hard_max_at - running.expires_at).total_seconds() / 3600 + 0.5
    extended = await market.run(
        market.shopper.extend(running.id, hours, override_reason="the run needs it")
    )
    assert extended.provider_ttl_at == running.hard_max_at.replace(microsecond=0)  # still held
    assert pod_limit(market, extended) == running.hard_max_at.replace(microsecond=0)
    alerts = [e for e in await market.audit(running.id) if e.kind == "alert"]
    assert [e.data.get("alert") for e in alerts].count("provider_ttl_not_moved") == 1
    market.world.faults.clear()
    await market.tick()
    moved = await market.shopper.session(running.id)
    assert moved.provider_ttl_at == moved.hard_max_at.replace(microsecond=0)
    assert pod_limit(market, moved) == moved.hard_max_at.replace(microsecond=0)


async def test_a_runpod_spot_offer_is_rented_as_spot_at_its_bid_per_gpu(market: Market) -> None:
    view = await market.shopper.offers(OfferQuery(providers=("runpod",), spot=True, min_gpus=2))
    spot = view.offers[0]
    assert spot.interruptible and spot.gpu_count >= 2
    running = await market.running(spot, hours=1)
    pod = market.instance(running)
    assert pod.extra.get("bid") == pytest.approx(spot.price_per_hour / spot.gpu_count)
    assert running.price_per_hour == pytest.approx(spot.price_per_hour, rel=0.05)
    on_demand = await market.shopper.offers(OfferQuery(providers=("runpod",), spot=False))
    assert on_demand.offers and not any(o.interruptible for o in on_demand.offers)


async def test_a_limit_runpod_does_not_report_is_alerted_and_never_shown_as_a_kill_path(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit asked for at create did not take (a create without it stands in for a field
    RunPod dropped): the session records what RunPod reports, which is none, and says so."""
    monkeypatch.setattr(provisioning, "provider_ttl", lambda adapter, session: None)
    running = await market.running(await on_demand_pod(market), hours=1)
    assert pod_limit(market, running) is None
    assert running.provider_ttl_at is None
    alerts = [e for e in await market.audit(running.id) if e.kind == "alert"]
    assert [e.data.get("alert") for e in alerts].count("provider_ttl_missing") == 1
    view = await market.shopper.view_of(running)
    assert not any(path.startswith("provider time limit") for path in view.kill_paths)


async def test_a_lambda_create_that_produced_nothing_leaves_no_key_behind(market: Market) -> None:
    offer = await market.offer("lambda")
    market.world.faults.add(HttpFault(provider="lambda", endpoint="launch", status=502, times=1))
    session = await market.provision(offer, hours=1)
    failed = await market.until(session.id, lambda s: s.instance_id is None and s.error is not None)
    assert [k["name"] for k in await lambda_keys(market)] == [failed.label]  # outcome unknown
    await market.advance(UNSEEN_GRACE.total_seconds() + 60, step_s=30)
    await market.tick(reconcile=True)
    closed = await market.shopper.session(session.id)
    assert closed.closed and market.live_instances("lambda") == []
    assert await lambda_keys(market) == []


def test_a_limit_is_kept_in_whole_seconds_as_providers_keep_it() -> None:
    """RunPod answers `terminateAfter` in whole seconds: a hard max with microseconds must not
    read as a limit out of place (the supervisor would move it again every pass)."""
    now = datetime(2026, 12, 6, 0, 40, 4, 768693, tzinfo=UTC)
    session = make_session(
        now,
        status=SessionStatus.RUNNING,
        instance=InstanceState.LIVE,
        instance_id="pod1",
        provider_ttl_at=(now + timedelta(hours=12)).replace(microsecond=0),
    )
    assert ProviderTtls.wanted(session) == session.provider_ttl_at
    assert not ProviderTtls(rows=None, providers={}).out_of_date(session)  # type: ignore[arg-type]
    stopped = session.model_copy(
        update={"status": SessionStatus.STOPPED, "keep_until": now + timedelta(days=7)}
    )
    assert ProviderTtls.wanted(stopped) == (now + timedelta(days=7)).replace(microsecond=0)
