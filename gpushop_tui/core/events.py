"""Typed events: persisted to the audit table, then fanned out to live subscribers.

The TUI turns them into messages and the API into server-sent events. Each subscriber has its
own bounded queue; one that falls behind loses its oldest events (and is told how many), so a
slow subscriber never blocks the supervisor or the other subscribers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from gpushop_tui.clock import Clock
from gpushop_tui.models import AuditEvent, InstanceState, SessionStatus, Severity
from gpushop_tui.store import Store

log = logging.getLogger(__name__)


class Event(BaseModel):
    """Something that happened. Subclasses set `kind`; `persist=False` keeps it out of audit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ClassVar[str] = "event"
    persist: ClassVar[bool] = True

    message: str
    severity: Severity = Severity.INFO
    session_id: str | None = None
    at: datetime | None = None
    audit_id: int | None = None

    def data(self) -> dict[str, Any]:
        """The event's own fields, for the audit row's JSON."""
        common = set(Event.model_fields)
        return self.model_dump(mode="json", exclude=common)

    def audit_event(self) -> AuditEvent:
        """The audit row this (stamped) event is, or was, stored as."""
        assert self.at is not None, "the bus stamps every event it publishes"
        return AuditEvent(
            id=self.audit_id,
            at=self.at,
            kind=self.kind,
            severity=self.severity,
            session_id=self.session_id,
            message=self.message,
            data=self.data(),
        )


class SessionChanged(Event):
    """A session's status or instance state moved."""

    kind: ClassVar[str] = "session_changed"
    status: SessionStatus
    instance: InstanceState


class Alert(Event):
    """Something a person should know about (budget threshold, failing destroy, orphan...)."""

    kind: ClassVar[str] = "alert"
    alert: str
    severity: Severity = Severity.WARNING


class WebhookFailed(Event):
    """Alerts the webhook did not take: every try failed, or they were still queued at close."""

    kind: ClassVar[str] = "webhook_failed"
    severity: Severity = Severity.ERROR
    alert_ids: list[int | None]
    reason: str


class InventoryRefreshed(Event):
    """A provider's offers were (re)fetched. Frequent, so not written to the audit table."""

    kind: ClassVar[str] = "inventory_refreshed"
    persist: ClassVar[bool] = False
    provider: str
    offers: int
    ok: bool


class Subscription:
    """One subscriber's bounded queue of events; iterate it, close it when done."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        """Queue `event` without waiting; when full, drop the oldest to make room."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        return await self._queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            yield await self._queue.get()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventBus:
    """Publishes events: stamp, persist (redacted, by the store), then fan out."""

    def __init__(self, store: Store, clock: Clock, queue_size: int = 1000) -> None:
        self._store = store
        self._clock = clock
        self._queue_size = queue_size
        self._subscribers: list[Subscription] = []

    def subscribe(self, maxsize: int | None = None) -> Subscription:
        subscription = Subscription(self, maxsize or self._queue_size)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    async def publish(self, event: Event) -> Event:
        """Stamp `event` with the time (and its audit id once stored) and deliver it."""
        event = event.model_copy(update={"at": self._clock.now()})
        if event.persist:
            stored = await self._store.add_audit(event.audit_event())
            event = event.model_copy(update={"audit_id": stored.id, "message": stored.message})
        log.log(
            logging.WARNING if event.severity != Severity.INFO else logging.INFO,
            "%s: %s",
            event.kind,
            event.message,
        )
        for subscription in list(self._subscribers):
            subscription.offer(event)
        return event
