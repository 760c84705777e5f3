"""Sessions from rental to the provider's word that the instance is gone, on a fake clock.

Every test runs the real core (store, adapters, asyncssh) against the in-process simulator over
loopback; DESIGN.md §3's invariants are named where a test proves one.
"""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gpushop_tui.core.sessions import SessionProgress
from gpushop_tui.errors import UserError
from gpushop_tui.models import (
    InstanceState,
    ProvisionRequest,
    Session,
    SessionStatus,
    StoragePolicy,
)
from gpushop_tui.providers.base import TransientError, parse_label
from gpushop_tui.sim.faults import HttpFault
from tests.core.market import Market, open_market


@pytest.fixture
async def market(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path, database_url: str | None
) -> AsyncIterator[Market]:
    """Every lifecycle test runs on SQLite and on a real PostgreSQL server."""
    async with open_market(monkeypatch, isolated_env, database_url=database_url) as opened:
        yield opened


def closed(session: Session) -> bool:
    return session.closed


# --------------------------------------------------------------------------- provisioning


async def test_the_session_is_committed_before_the_provider_is_called(market: Market) -> None:
    """Invariant 1: pending row (with key and label) first; the instance id the moment known."""
    adapter = market.shopper._providers["vastai"]
    assert adapter is not None
    original = adapter.create
    seen: dict[str, Any] = {}

    async def spying_create(offer: Any, spec: Any, on_instance: Any = None) -> Any:
        session_id = parse_label(spec.label)[1]  # type: ignore[index]
        row = await market.shopper._store.get_session(session_id)
        seen["at_call"] = row

        async def spying_sink(instance_id: str) -> None:
            await on_instance(instance_id)
            seen["after_sink"] = await market.shopper._store.get_session(session_id)

        return await original(offer, spec, spying_sink)

    adapter.create = spying_create  # type: ignore[method-assign]
    session = await market.provision()
    at_call = seen["at_call"]
    assert at_call is not None and at_call.status == SessionStatus.PROVISIONING
    assert at_call.instance == InstanceState.CREATING and at_call.instance_id is None
    assert at_call.label == f"gpushop-{market.shopper.install_id}-{session.id}"
    assert Path(at_call.key_path).exists()
    assert seen["after_sink"].instance_id == session.instance_id is not None
    assert seen["after_sink"].instance == InstanceState.LIVE


async def test_a_rental_becomes_running_with_a_pinned_host_key(market: Market) -> None:
    offer = await market.offer("vastai", "4090")
    session = await market.provision(offer, hours=2)
    assert session.status == SessionStatus.PROVISIONING
    running = await market.until(session.id, lambda s: s.status == "running")
    instance = market.instance(running)
    assert instance.label == running.label  # invariant 2: the label is on the instance
    assert running.instance == InstanceState.LIVE
    assert (running.ssh_user, running.ssh_host, running.ssh_port) == (
        "root",
        "127.0.0.1",
        instance.ssh_port,
    )
    assert running.host_key is not None and running.host_key.startswith("ssh-ed25519 ")
    key = Path(running.key_path or "")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.with_suffix(".pub").read_text().split()[1] in "".join(instance.authorized_keys)
    known = market.shopper._lifecycle.known_hosts_path(running.id).read_text()
    assert running.host_key.split()[1] in known and f"[127.0.0.1]:{running.ssh_port}" in known
    assert running.expires_at - running.created_at == timedelta(hours=2)
    assert running.hard_max_at - running.created_at == timedelta(hours=12)


async def test_the_same_request_id_never_rents_twice(market: Market) -> None:
    offer = await market.offer()
    first = await market.provision(offer, request_id="job-42")
    again = await market.provision(offer, request_id="job-42")
    assert again.id == first.id
    assert len(market.live_instances("vastai")) == 1


async def test_provision_by_query_takes_the_best_match(market: Market) -> None:
    cheapest = await market.offer("vastai", "4090")
    request = ProvisionRequest(consumer="bob", query="gpu=4090 provider=vastai sort=price")
    session = await market.run(market.shopper.provision(request))
    assert session.offer_id == cheapest.id


@pytest.mark.parametrize(
    ("request_fields", "words"),
    [
        ({"offer_id": "vastai:999999999"}, "not in the current menu"),
        ({"offer_id": "nonsense"}, "should look like"),
        ({"query": "gpu=4090 vram>=9999"}, "no offer matches"),
        ({"query": "gpu=4090 colour=red"}, "colour"),
    ],
)
async def test_bad_rentals_are_one_clear_sentence_and_rent_nothing(
    market: Market, request_fields: dict[str, Any], words: str
) -> None:
    with pytest.raises(UserError, match=words):
        await market.run(
            market.shopper.provision(ProvisionRequest(consumer="bob", **request_fields))
        )
    assert await market.shopper.sessions() == []
    assert market.live_instances("vastai") == []


async def test_keep_is_refused_where_the_provider_cannot_stop(market: Market) -> None:
    offer = await market.offer("tensordock")
    adapter = market.shopper._providers["tensordock"]
    assert adapter is not None
    adapter.can_stop = False  # type: ignore[misc]
    with pytest.raises(UserError, match="cannot stop"):
        await market.provision(offer, storage=StoragePolicy.KEEP)


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ({"wrong_gpu": "RTX 3090"}, "RTX 3090"),
        ({"old_cuda": 11.8}, "CUDA 11.8"),
        ({"fewer_gpus": 1}, "GPUs"),
    ],
)
async def test_a_node_that_is_not_what_was_offered_fails_and_is_destroyed(
    market: Market, fault: dict[str, Any], words: str
) -> None:
    offer = await market.offer("vastai", "4090")
    if "fewer_gpus" in fault:
        view = await market.shopper.offers()
        offer = next(o for o in view.offers if o.provider == "vastai" and o.gpu_count >= 2)
    if "old_cuda" in fault:
        assert offer.cuda is not None and offer.cuda > 11.8
    for name, value in fault.items():
        setattr(market.world.faults.node("vastai"), name, value)
    session = await market.provision(offer)
    failed = await market.until(session.id, closed, step_s=2)
    assert failed.status == SessionStatus.FAILED and failed.instance == InstanceState.GONE
    assert failed.error is not None and words in failed.error
    assert market.instance(failed).destroyed_at is not None
    failures = await market.shopper._store.offer_failures_since(failed.created_at)
    assert offer.id in failures
    assert not Path(failed.key_path or "").exists()  # keys go once the session is closed


async def test_blue_lobster_waits_for_the_dpkg_lock_and_two_nvidia_smi_answers(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    async with open_market(monkeypatch, isolated_env, timing="real") as market:
        offer = await market.offer("bluelobster")
        session = await market.provision(offer)
        timing = market.world.timing["bluelobster"]
        boot_and_lock = timing.boot_s + timing.dpkg_lock_s
        with market.shopper.subscribe() as events:
            await market.advance(boot_and_lock - 60, step_s=10)
            during = await market.shopper.session(session.id)
            notes = []
            while not events._queue.empty():
                event = events._queue.get_nowait()
                if isinstance(event, SessionProgress) and event.session_id == session.id:
                    notes.append(event.note)
        assert during.status == SessionStatus.PROVISIONING
        assert any("dpkg lock" in note for note in notes), notes
        assert during.host_key is not None  # SSH worked; only the lock held it back
        running = await market.until(session.id, lambda s: s.status == "running", step_s=5)
        assert (running.state_entered_at - session.created_at).total_seconds() >= boot_and_lock


async def test_tensordock_is_not_used_before_its_node_answers(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    async with open_market(monkeypatch, isolated_env, timing="real") as market:
        session = await market.provision(await market.offer("tensordock"))
        await market.advance(85, step_s=5)
        early = await market.shopper.session(session.id)
        assert early.status == SessionStatus.PROVISIONING and early.host_key is None
        running = await market.until(session.id, lambda s: s.status == "running", step_s=5)
        assert running.ssh_user == "user"
        assert (running.state_entered_at - session.created_at).total_seconds() >= 90


async def test_a_node_that_never_answers_ssh_is_failed_and_destroyed(market: Market) -> None:
    """Invariant 7: stuck is measured in the state, against the provider's budget."""
    market.world.faults.node("vastai").ssh_refuse_s = 10 * 3600
    session = await market.provision()
    failed = await market.until(session.id, closed, step_s=30, limit_s=2 * 3600)
    assert failed.status == SessionStatus.FAILED and "not ready after 15 min" in (
        failed.error or ""
    )
    assert market.instance(failed).destroyed_at is not None


async def test_an_instance_that_vanishes_while_provisioning_fails_the_session(
    market: Market,
) -> None:
    market.world.faults.node("vastai").ssh_refuse_s = 3600
    session = await market.provision()
    await market.advance(10)
    await market.world.vanish("vastai", session.instance_id)
    failed = await market.until(session.id, closed, step_s=5)
    assert failed.status == SessionStatus.FAILED and failed.instance == InstanceState.GONE
    assert "vanished" in (failed.error or "")


async def test_an_ambiguous_create_is_found_by_its_label_and_destroyed(market: Market) -> None:
    adapter = market.shopper._providers["vastai"]
    assert adapter is not None
    original = adapter.create

    async def create_then_lose_the_answer(offer: Any, spec: Any, on_instance: Any = None) -> Any:
        await original(offer, spec, None)
        raise TransientError("vastai", "POST timed out", ambiguous=True)

    adapter.create = create_then_lose_the_answer  # type: ignore[method-assign]
    session = await market.provision()
    assert session.status == SessionStatus.FAILED
    # unknown is never "nothing there"; under load the teardown may have found it live already
    assert session.instance in (InstanceState.UNKNOWN, InstanceState.LIVE)
    assert not session.closed
    [instance] = market.world.instances["vastai"].values()  # the teardown may have found it
    await market.tick(reconcile=True)
    gone = await market.until(session.id, closed, step_s=2)
    assert gone.instance_id == instance.id and gone.instance == InstanceState.GONE
    assert market.live_instances("vastai") == []


async def test_a_create_the_provider_refuses_rents_nothing(market: Market) -> None:
    market.world.faults.add(
        HttpFault(
            "vastai",
            "create",
            status=404,
            body='{"success": false, "error": "no_such_ask", "msg": "gone"}',
            media_type="application/json",
        )
    )
    session = await market.provision()
    assert session.closed and session.status == SessionStatus.FAILED
    assert session.instance == InstanceState.NONE and "create failed" in (session.error or "")
    assert market.live_instances("vastai") == []


# --------------------------------------------------------------------------- ending


async def test_done_destroys_and_waits_for_the_provider_to_confirm(market: Market) -> None:
    """Invariant 3: destroyed means the provider says gone."""
    running = await market.running()
    stopping = await market.shopper.done(running.id)
    assert stopping.status == SessionStatus.STOPPING  # answers at once
    again = await market.shopper.done(running.id)  # a second call is harmless
    assert again.status == SessionStatus.STOPPING
    finished = await market.until(running.id, closed)
    assert finished.status == SessionStatus.ENDED and finished.instance == InstanceState.GONE
    assert finished.instance_gone_at is not None
    assert market.instance(finished).destroyed_at is not None
    kinds = [e.message for e in await market.audit(running.id)]
    assert any("destroying" in m for m in kinds) and any("gone" in m for m in kinds)


async def test_a_destroy_the_provider_ignores_three_times_is_retried_until_gone(
    market: Market,
) -> None:
    running = await market.running()
    market.world.faults.node("vastai").destroy_noop = 3
    await market.shopper.done(running.id)
    finished = await market.until(running.id, closed)
    assert finished.instance == InstanceState.GONE
    assert market.world.faults.node("vastai").destroy_noop == 0
    assert market.instance(finished).destroyed_at is not None


async def test_a_destroy_that_keeps_failing_escalates_and_is_never_dropped(
    market: Market,
) -> None:
    running = await market.running()
    fault = HttpFault("vastai", "destroy", status=500)
    market.world.faults.add(fault)
    await market.shopper.done(running.id)
    await market.advance(3 * 3600, step_s=60)
    stuck = await market.shopper.session(running.id)
    assert stuck.status == SessionStatus.STOPPING and stuck.instance == InstanceState.DESTROYING
    assert stuck.destroy_attempts >= 10
    alerts = [e for e in await market.audit(running.id) if e.kind == "alert"]
    assert {a.severity for a in alerts} >= {"warning", "error", "critical"}
    market.world.faults.http.remove(fault)
    finished = await market.until(running.id, closed, step_s=30)
    assert finished.instance == InstanceState.GONE


async def test_keep_stops_the_instance_and_its_keep_time_not_the_hard_max_destroys_it(
    market: Market,
) -> None:
    running = await market.running(storage=StoragePolicy.KEEP)
    await market.shopper.done(running.id)
    stopped = await market.until(running.id, lambda s: s.status == "stopped")
    assert stopped.instance == InstanceState.LIVE and not stopped.closed
    assert market.instance(stopped).stopped
    assert stopped.keep_until == stopped.stopped_at + timedelta(days=7)  # the setting's default
    await market.clock.advance((stopped.hard_max_at - market.clock.now()).total_seconds() + 1)
    await market.tick()
    kept = await market.shopper.session(running.id)
    assert kept.status == SessionStatus.STOPPED and not market.instance(kept).destroyed_at
    assert stopped.keep_until is not None
    await market.clock.advance((stopped.keep_until - market.clock.now()).total_seconds() + 1)
    await market.tick()
    gone = await market.until(running.id, closed)
    assert gone.status == SessionStatus.ENDED and gone.instance == InstanceState.GONE
    assert market.instance(gone).destroyed_at is not None


async def test_delete_destroys_a_kept_disk_at_once(market: Market) -> None:
    running = await market.running(storage=StoragePolicy.KEEP)
    await market.shopper.done(running.id)
    await market.until(running.id, lambda s: s.status == "stopped")
    await market.shopper.delete(running.id)
    gone = await market.until(running.id, closed)
    assert gone.status == SessionStatus.ENDED and gone.instance == InstanceState.GONE
    assert (await market.shopper.delete(running.id)).closed  # harmless on a closed session


# --------------------------------------------------------------------------- deadlines


async def test_extend_stops_at_the_hard_max_unless_overridden_with_a_reason(
    market: Market,
) -> None:
    """Invariant 5: the kill paths are armed at create; moving one is explicit and audited."""
    running = await market.running(hours=6)
    longer = await market.shopper.extend(running.id, 5)
    assert longer.expires_at == running.expires_at + timedelta(hours=5)
    with pytest.raises(UserError, match="past its hard max"):
        await market.shopper.extend(running.id, 2)
    moved = await market.shopper.extend(running.id, 2, override_reason="long eval run")
    assert moved.hard_max_at == moved.expires_at > running.hard_max_at
    assert moved.hard_max_override == "long eval run"
    audit = await market.audit(running.id)
    assert any(e.kind == "alert" and "long eval run" in e.message for e in audit)


async def test_an_expired_reservation_is_ended_after_a_warning(market: Market) -> None:
    running = await market.running(hours=1)
    await market.clock.advance((running.expires_at - market.clock.now()).total_seconds() - 600)
    await market.tick()
    warned = [e for e in await market.audit(running.id) if e.data.get("alert") == "expiry_soon"]
    assert len(warned) == 1
    await market.clock.advance(601)
    await market.tick()
    finished = await market.until(running.id, closed)
    assert finished.status == SessionStatus.ENDED and finished.instance == InstanceState.GONE


async def test_a_twelve_hour_run_with_no_budget_hits_the_hard_max(market: Market) -> None:
    running = await market.running(hours=12)
    assert running.expires_at == running.hard_max_at
    for _ in range(11):
        await market.clock.advance(3600)
        await market.tick()
        assert (await market.shopper.session(running.id)).status == SessionStatus.RUNNING
    await market.clock.advance(45 * 60)
    await market.tick()
    await market.clock.advance((running.hard_max_at - market.clock.now()).total_seconds())
    await market.tick()
    finished = await market.until(running.id, closed)
    assert finished.instance == InstanceState.GONE
    alerts = {e.data.get("alert") for e in await market.audit(running.id) if e.kind == "alert"}
    assert {"hard_max_soon", "hard_max"} <= alerts


async def test_idle_sessions_are_ended_and_busy_ones_say_why(market: Market) -> None:
    idle = await market.running(idle_timeout_min=10)
    busy = await market.running(idle_timeout_min=10)
    market.instance(busy).gpu_util = 85
    for _ in range(12):
        await market.clock.advance(60)
        await market.tick()
    ended = await market.until(idle.id, closed)
    assert ended.status == SessionStatus.ENDED
    assert any("idle for" in e.message for e in await market.audit(idle.id))
    kept = await market.shopper.session(busy.id)
    assert kept.status == SessionStatus.RUNNING and kept.idle_reason == "busy: GPU 85%"


async def test_a_node_that_cannot_be_read_counts_as_busy(market: Market) -> None:
    running = await market.running(idle_timeout_min=5)
    market.instance(running).ssh_refuse_until = market.world.now() + 10 * 3600
    for _ in range(10):
        await market.clock.advance(60)
        await market.tick()
    still = await market.shopper.session(running.id)
    assert still.status == SessionStatus.RUNNING
    assert still.idle_reason is not None and still.idle_reason.startswith("busy: the node")


async def test_an_activity_ping_keeps_a_session(market: Market) -> None:
    running = await market.running(idle_timeout_min=5)
    for _ in range(10):
        await market.clock.advance(60)
        await market.shopper.touch(running.id)
        await market.tick()
    assert (await market.shopper.session(running.id)).status == SessionStatus.RUNNING


# --------------------------------------------------------------------------- reconciliation


async def test_reconcile_adopts_an_instance_whose_create_is_still_returning(
    market: Market,
) -> None:
    """The earlier product destroyed these (prior-art §3.4 race); we adopt them."""
    adapter = market.shopper._providers["vastai"]
    assert adapter is not None
    original = adapter.create
    reconciled: list[Any] = []

    async def reconcile_mid_create(offer: Any, spec: Any, on_instance: Any = None) -> Any:
        ref = await original(offer, spec, None)  # the id is not committed yet
        reconciled.append(await market.shopper._supervisor.reconcile())
        if on_instance is not None:
            await on_instance(ref.instance_id)
        return ref

    adapter.create = reconcile_mid_create  # type: ignore[method-assign]
    session = await market.provision()
    [[report]] = [[r for r in reports if r.provider == "vastai"] for reports in reconciled]
    assert report.adopted == [session.instance_id] and report.orphans == []
    running = await market.until(session.id, lambda s: s.status == "running")
    assert market.instance(running).destroyed_at is None


async def test_reconcile_destroys_instances_of_closed_or_unknown_sessions(
    market: Market,
) -> None:
    from gpushop_tui.providers.base import CreateSpec, label_for

    adapter = market.shopper._providers["vastai"]
    assert adapter is not None
    stray = await adapter.create(
        await market.offer(), CreateSpec(label_for(market.shopper.install_id, "nosuch01"), "k")
    )
    finished = await market.running()
    await market.shopper.done(finished.id)
    await market.until(finished.id, closed)
    reports = await market.run(market.shopper._supervisor.reconcile())
    [report] = [r for r in reports if r.provider == "vastai"]
    assert report.orphans == [stray.instance_id]
    assert market.world.get("vastai", stray.instance_id).destroyed_at is not None
    assert any(e.data.get("alert") == "orphan" for e in await market.audit())


async def test_a_list_call_that_errors_changes_nothing(market: Market) -> None:
    running = await market.running()
    for endpoint in ("list", "list_v1"):
        market.world.faults.add(HttpFault("vastai", endpoint, status=500))
    reports = await market.run(market.shopper._supervisor.reconcile())
    vast = next(r for r in reports if r.provider == "vastai")
    assert not vast.ok and vast.error
    after = await market.shopper.session(running.id)
    assert after.status == SessionStatus.RUNNING and after.instance == InstanceState.LIVE
    assert after.version == running.version


async def test_an_instance_missing_from_a_list_is_confirmed_before_it_is_believed(
    market: Market,
) -> None:
    running = await market.running()
    empty = '{"instances": [], "next_token": null}'
    for endpoint in ("list", "list_v1"):
        market.world.faults.add(
            HttpFault("vastai", endpoint, status=200, body=empty, media_type="application/json")
        )
    await market.run(market.shopper._supervisor.reconcile())
    lagging = await market.shopper.session(running.id)
    assert lagging.status == SessionStatus.RUNNING and lagging.instance == InstanceState.LIVE
    market.world.faults.http.clear()
    await market.world.vanish("vastai", running.instance_id)
    [report] = [
        r
        for r in await market.run(market.shopper._supervisor.reconcile())
        if r.provider == "vastai"
    ]
    assert report.gone == [running.id]
    vanished = await market.shopper.session(running.id)
    assert vanished.closed and vanished.status == SessionStatus.FAILED


# --------------------------------------------------------------------------- restarts


async def test_a_restart_resumes_provisioning_and_never_touches_running_sessions(
    market: Market,
) -> None:
    """Invariant 6: a new process picks everything up where it stood."""
    running = await market.running()
    market.world.faults.node("vastai").ssh_refuse_s = 60
    provisioning = await market.provision()
    await market.reopen()
    await market.tick()
    resumed = await market.until(provisioning.id, lambda s: s.status == "running", step_s=5)
    assert resumed.instance_id == provisioning.instance_id
    kept = await market.shopper.session(running.id)
    assert kept.status == SessionStatus.RUNNING and market.instance(kept).destroyed_at is None


async def test_a_session_interrupted_before_renting_is_failed_without_a_call(
    market: Market,
) -> None:
    from tests.support.factories import make_session

    orphan_row = make_session(
        market.clock.now(), install_id=market.shopper.install_id, id="pend0001"
    )
    await market.shopper._store.insert_session(orphan_row)
    await market.clock.advance(180)
    await market.tick()
    failed = await market.shopper.session("pend0001")
    assert failed.closed and failed.status == SessionStatus.FAILED
    assert failed.instance == InstanceState.NONE


async def test_a_supervisor_that_cannot_renew_its_lease_stops_claiming_it(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    supervisor = market.shopper._supervisor
    assert await supervisor.acquire() and market.shopper.supervising

    async def unreachable(*args: Any) -> bool:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(market.shopper._store, "acquire_lease", unreachable)
    with pytest.raises(ConnectionRefusedError):
        await supervisor.acquire()
    assert not market.shopper.supervising  # /ready and /metrics no longer name it


async def test_only_one_supervisor_acts(market: Market) -> None:
    assert await market.shopper._supervisor.acquire()
    from gpushop_tui.core.supervisor import Supervisor

    other = Supervisor(market.shopper._lifecycle, holder="cron")
    assert await other.run_once() is None
    lease = await market.shopper.supervisor_lease()
    assert lease is not None and lease.holder == market.shopper._supervisor.holder
    await market.shopper._supervisor.release()
    report = await market.run(other.run_once())
    assert report is not None and {r.provider for r in report.reconciled} == {
        "vastai",
        "tensordock",
        "bluelobster",
    }


async def test_no_key_material_reaches_the_database_or_the_log(
    market: Market, caplog: pytest.LogCaptureFixture
) -> None:
    """Invariant 8, over a whole rental: provider keys and the SSH private key stay out."""
    caplog.set_level("DEBUG")
    running = await market.running()
    private = Path(running.key_path or "").read_text()
    body = "".join(private.strip().splitlines()[1:-1])
    assert len(body) > 40
    await market.shopper.done(running.id)
    await market.until(running.id, closed)
    store = market.shopper._store
    if store.dialect == "sqlite":
        db_path = Path(store.where)
        stored = b"".join(
            p.read_bytes() for p in db_path.parent.glob(db_path.name + "*") if p.is_file()
        )
    else:
        tables = await store._db.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        rows = [
            row["line"]
            for table in tables
            for row in await store._db.fetch(f"SELECT t::text AS line FROM {table['table_name']} t")
        ]
        stored = "\n".join(rows).encode()
    assert running.id.encode() in stored
    logged = caplog.text
    for secret in [body[:40], *market.sim.keys.values()]:
        assert secret.encode() not in stored
        assert secret not in logged


async def test_a_key_the_create_never_attached_is_attached_again_by_readiness(
    market: Market,
) -> None:
    """A create cut off between the instance id and the key attach (a one-shot killed there)
    leaves a node that refuses our key: readiness attaches it again instead of failing."""
    adapter = market.shopper._providers["vastai"]
    assert adapter is not None
    attach = adapter._attach_key  # type: ignore[attr-defined]
    skipped: list[str] = []

    async def cut_off_once(instance_id: str, key: str) -> None:
        if not skipped:
            skipped.append(instance_id)
            return
        await attach(instance_id, key)

    adapter._attach_key = cut_off_once  # type: ignore[attr-defined]
    session = await market.provision()
    running = await market.until(session.id, lambda s: s.status == "running")
    assert skipped == [running.instance_id]
    public = Path(running.key_path).with_suffix(".pub").read_text().split()[1]
    assert any(public in line for line in market.instance(running).authorized_keys)


async def test_a_query_naming_an_unmeasured_model_is_refused_with_a_caret(market: Market) -> None:
    request = ProvisionRequest(consumer="alice", query="gpu=4090 model=no-such-llm:1b")
    with pytest.raises(UserError, match=r"(?s)model.*\^") as refused:
        await market.run(market.shopper.provision(request))
    assert "models measured:" in str(refused.value) and "llama3.1:8b" in str(refused.value)
    assert await market.shopper.sessions() == [] and market.live_instances("vastai") == []
    cheapest = ProvisionRequest(
        consumer="alice", query="gpu=3090 model=llama3.1:8b sort=usd_per_mtok"
    )
    session = await market.run(market.shopper.provision(cheapest))
    assert session.offer.gpu_name == "RTX 3090"
