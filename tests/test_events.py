"""Events are persisted to the audit table and fanned out; a slow subscriber blocks no one."""

from __future__ import annotations

import asyncio

from gpushop_tui.clock import FakeClock
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
