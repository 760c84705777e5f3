"""Typed events: persisted to the audit table, then fanned out to live subscribers.

The TUI turns them into messages and the API into server-sent events. Each subscriber has its
own bounded queue; one that falls behind loses its oldest events (and is told how many), so a
slow subscriber never blocks the supervisor or the other subscribers.

Other processes on the same database (another `--serve` replica, the supervisor in a TUI, a cron
reconcile) record their events in the audit table too: the bus follows it and hands those to
subscribers as well, so every replica's `/events` shows what the supervising one did. Those are
delivered, never acted on again: the webhook sends only this process's own alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from gpushop_tui.clock import Clock
from gpushop_tui.models import AuditEvent, InstanceState, SessionStatus, Severity
from gpushop_tui.store import Store

log = logging.getLogger(__name__)

EVENTS_LOST = "remote_events_lost"
"""The alert a remote façade raises when its live stream missed events: whoever shows what the
events describe reads it all again."""
FOLLOW_S = 1.0
"""How often the events other processes stored are looked for."""
FOLLOW_BATCH = 1000
"""Most of them read at once (a look reads batch after batch until it is up to date)."""


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


def event_kinds() -> dict[str, type[Event]]:
    """Every event class by its `kind` (the audit row's kind, the SSE event name)."""
    found: dict[str, type[Event]] = {}
    pending: list[type[Event]] = [Event]
    while pending:
        cls = pending.pop()
        found[cls.kind] = cls
        pending.extend(cls.__subclasses__())
    return found


def event_from_audit(row: AuditEvent) -> Event | None:
    """The event an audit row records; None for a kind this gpushop does not know (a newer
    one wrote it) or a row that does not fit its kind."""
    kind = event_kinds().get(row.kind)
    if kind is None:
        return None
    fields = {
        "message": row.message,
        "severity": row.severity,
        "session_id": row.session_id,
        "at": row.at,
        "audit_id": row.id,
    }
    try:
        return kind.model_validate({**row.data, **fields})
    except ValueError:
        log.debug("audit row %s does not fit event kind %s", row.id, row.kind)
        return None


class Subscription:
    """One subscriber's bounded queue of events; iterate it, close it when done."""

    def __init__(self, bus: Fanout, maxsize: int, *, own_only: bool = False) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.own_only = own_only
        """Only this process's events, not those followed from other processes."""

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


class Fanout:
    """Hands each event to every subscriber's own queue (the bus here; a remote façade's copy
    of the server's stream)."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._subscribers: list[Subscription] = []

    def subscribe(self, maxsize: int | None = None, *, own_only: bool = False) -> Subscription:
        subscription = Subscription(self, maxsize or self._queue_size, own_only=own_only)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    def deliver(self, event: Event, *, own: bool = True) -> None:
        """Hand `event` to every subscriber (one of another process: those that want it)."""
        for subscription in list(self._subscribers):
            if own or not subscription.own_only:
                subscription.offer(event)


class EventBus(Fanout):
    """Publishes events: stamp, persist (redacted, by the store), then fan out."""

    def __init__(self, store: Store, clock: Clock, queue_size: int = 1000) -> None:
        super().__init__(queue_size)
        self._store = store
        self._clock = clock
        self._newest_own = 0
        """The audit id of this process's latest stored event."""
        self._following: asyncio.Task[None] | None = None

    def subscribe(self, maxsize: int | None = None, *, own_only: bool = False) -> Subscription:
        """A subscription; the first that wants other processes' events too starts following
        them, so a process nobody listens to (a one-shot command) never reads them."""
        if not own_only:
            self.start_following()
        return super().subscribe(maxsize, own_only=own_only)

    def start_following(self) -> None:
        """Deliver, from now on, the events other processes store (see the module docstring)."""
        if self._following is None:
            self._following = asyncio.create_task(self._follow(), name="follow-audit")

    async def aclose(self) -> None:
        if self._following is not None:
            self._following.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._following

    async def _follow(self) -> None:
        """Every `FOLLOW_S` of real time (other processes write on their own clocks), deliver
        the audit rows other processes stored since the last look, oldest first.

        Audit ids are committed in order (every write holds the database's write lock), so
        every other row below this process's newest id was visible to the look that followed
        it: the next look starts above both. A look that fails is tried again at the next one
        (said once per outage, not every second).
        """
        seen: int | None = None
        failing = False
        while True:
            try:
                if seen is None:
                    newest = await self._store.list_audit(limit=1)
                    seen = (newest[-1].id or 0) if newest else 0
                else:
                    seen = await self._deliver_since(seen)
                if failing:
                    log.warning("other processes' events are read again")
                failing = False
            except Exception:
                if not failing:
                    log.warning("cannot read other processes' events", exc_info=True)
                failing = True
            await asyncio.sleep(FOLLOW_S)

    async def _deliver_since(self, seen: int) -> int:
        """Deliver every other process's event above `seen`, batch after batch; the new cursor."""
        while True:
            mine = self._newest_own
            rows = await self._store.audit_after(seen, FOLLOW_BATCH, not_from=self._store.origin)
            for row in rows:
                seen = max(seen, row.id or 0)
                event = event_from_audit(row)
                if event is not None:
                    self.deliver(event, own=False)
            if len(rows) < FOLLOW_BATCH:
                return max(seen, mine)

    async def publish(self, event: Event) -> Event:
        """Stamp `event` with the time (and its audit id once stored) and deliver it."""
        event = event.model_copy(update={"at": self._clock.now()})
        if event.persist:
            stored = await self._store.add_audit(event.audit_event())
            self._newest_own = max(self._newest_own, stored.id or 0)
            event = event.model_copy(update={"audit_id": stored.id, "message": stored.message})
        log.log(
            logging.WARNING if event.severity != Severity.INFO else logging.INFO,
            "%s: %s",
            event.kind,
            event.message,
        )
        self.deliver(event)
        return event
