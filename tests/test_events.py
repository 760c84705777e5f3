"""Events are persisted to the audit table and fanned out; a slow subscriber blocks no one."""

from __future__ import annotations

import asyncio

import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.config import Settings
from gpushop_tui.core import events as events_module
from gpushop_tui.core.events import Alert, EventBus, InventoryRefreshed, SessionChanged
from gpushop_tui.models import InstanceState, SessionStatus, Severity
from gpushop_tui.store import Store
from tests.support.factories import make_session


async def test_publish_persists_with_time_kind_and_data(store: Store, clock: FakeClock) -> None:
    session = make_session(clock.now())
    await store.insert_session(session)
    bus = EventBus(store, clock)
    await clock.advance(42)

    published = await bus.publish(
        SessionChanged(
            message="running",
            session_id=session.id,
            status=SessionStatus.RUNNING,
            instance=InstanceState.LIVE,
        )
    )

    assert published.at == clock.now()
    [row] = await store.list_audit()
    assert row.id == published.audit_id
    assert (row.kind, row.session_id, row.at) == ("session_changed", session.id, clock.now())
    assert row.data == {"status": "running", "instance": "live"}


async def test_ephemeral_events_are_delivered_but_not_persisted(
    store: Store, clock: FakeClock
) -> None:
    bus = EventBus(store, clock)
    with bus.subscribe() as subscription:
        await bus.publish(
            InventoryRefreshed(message="vastai: 812 offers", provider="vastai", offers=812, ok=True)
        )
        event = await asyncio.wait_for(subscription.get(), timeout=1)
    assert isinstance(event, InventoryRefreshed)
    assert event.offers == 812
    assert await store.list_audit() == []


async def test_slow_subscriber_does_not_block_others(store: Store, clock: FakeClock) -> None:
    bus = EventBus(store, clock)
    slow = bus.subscribe(maxsize=3)  # never read
    fast = bus.subscribe()
    received: list[str] = []

    async def consume() -> None:
        async for event in fast:
            received.append(event.message)
            if len(received) == 10:
                return

    consumer = asyncio.create_task(consume())
    for n in range(10):
        await asyncio.wait_for(
            bus.publish(Alert(alert="test", message=f"alert {n}", severity=Severity.INFO)),
            timeout=1,
        )
    await asyncio.wait_for(consumer, timeout=1)

    assert received == [f"alert {n}" for n in range(10)]
    assert slow.dropped == 7
    kept = [(await slow.get()).message for _ in range(3)]
    assert kept == ["alert 7", "alert 8", "alert 9"]


async def test_closed_subscription_receives_nothing(store: Store, clock: FakeClock) -> None:
    bus = EventBus(store, clock)
    subscription = bus.subscribe()
    subscription.close()
    await bus.publish(Alert(alert="test", message="after close"))
    assert subscription.dropped == 0
    assert subscription._queue.empty()


async def test_events_another_process_stores_reach_subscribers_here_but_not_the_webhook(
    settings: Settings,
    database_url: str | None,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two replicas on one database (SQLite file or PostgreSQL): what one publishes, the
    other's subscribers get too, once; its own-only subscribers (the webhook) never do, and it
    never hands a subscriber its own event twice."""
    monkeypatch.setattr(events_module, "FOLLOW_S", 0.02)
    settings.paths.prepare()
    here_store = await Store.open(settings.paths.db_file, database_url)
    there_store = await Store.open(settings.paths.db_file, database_url)
    here, there = EventBus(here_store, clock), EventBus(there_store, clock)
    try:
        before = await there.publish(Alert(message="before we followed", alert="test"))
        here.start_following()
        with here.subscribe() as everything, here.subscribe(own_only=True) as own:
            await asyncio.sleep(0)
            await here.publish(Alert(message="mine", alert="test"))
            theirs = await there.publish(Alert(message="theirs", alert="orphan"))
            got = [await asyncio.wait_for(everything.get(), timeout=5) for _ in range(2)]
            assert [e.message for e in got] == ["mine", "theirs"]
            assert isinstance(got[1], Alert) and got[1].alert == "orphan"
            assert got[1].audit_id == theirs.audit_id != before.audit_id
            assert [(await own.get()).message] == ["mine"]
            await there.publish(Alert(message="later", alert="test"))
            assert (await asyncio.wait_for(everything.get(), timeout=5)).message == "later"
            monkeypatch.setattr(events_module, "FOLLOW_BATCH", 2)  # more than a batch at once
            for n in range(5):
                await there.publish(Alert(message=f"burst {n}", alert="test"))
            burst = [await asyncio.wait_for(everything.get(), timeout=5) for _ in range(5)]
            assert [e.message for e in burst] == [f"burst {n}" for n in range(5)]
            assert own._queue.empty() and everything._queue.empty()
    finally:
        await here.aclose()
        await here_store.aclose()
        await there_store.aclose()
