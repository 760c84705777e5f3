"""API routes for operations: the audit log, live events (SSE) and Prometheus metrics.

`GET /api/v1/events` streams the core's events as server-sent events; a scoped token gets its
own consumer's session events and the inventory refreshes, never global alerts (they may name
other consumers). `GET /metrics` has no token (Prometheus scrapes it, like `/health`) and is
built from the core at scrape time into a registry of its own.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter as Tally
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from pydantic import BaseModel

from gpushop_tui.api.deps import (
    KNOWN_QUERY,
    CallerDep,
    ShopperDep,
    api_router,
    shopper_of,
    visible_session,
)
from gpushop_tui.api.schemas import error_responses
from gpushop_tui.api.tokens import Principal
from gpushop_tui.core import Event, InventoryRefreshed, SessionNotFound, Shopper, Subscription
from gpushop_tui.models import AuditEvent, SessionStatus, Severity

router = api_router(tags=["ops"])

HEARTBEAT_S = 15.0
"""A comment line this often keeps idle event streams (and proxies) open; tests set
`app.state.events_heartbeat_s` lower."""


# --------------------------------------------------------------------------- audit


class AuditListOut(BaseModel):
    events: list[AuditEvent]
    count: int


@router.get("/audit", responses=error_responses(400, 404))
async def audit(
    shopper: ShopperDep,
    caller: CallerDep,
    session_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    severity: Annotated[Severity | None, Query(description="This severity or worse.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> AuditListOut:
    """The newest `limit` audit events that pass the filters, oldest first (a scoped token:
    its consumer's sessions only)."""
    if session_id is not None:
        await visible_session(shopper, caller, session_id)
    events = await shopper.audit_log(
        session_id, min_severity=severity, consumer=caller.consumer, limit=limit
    )
    return AuditListOut(events=events, count=len(events))


# --------------------------------------------------------------------------- events


def frame(event: Event) -> str:
    """One server-sent event: `id` (the audit id, where stored), `event` (the kind), `data`."""
    data = json.dumps({"kind": event.kind, **event.model_dump(mode="json")})
    head = f"id: {event.audit_id}\n" if event.audit_id is not None else ""
    return f"{head}event: {event.kind}\ndata: {data}\n\n"


class _Visibility:
    """Which events a caller may receive; remembers whose each session is."""

    def __init__(self, shopper: Shopper, caller: Principal) -> None:
        self.shopper, self.caller = shopper, caller
        self.owners: dict[str, str | None] = {}

    async def allows(self, event: Event) -> bool:
        if self.caller.consumer is None:
            return True
        if event.session_id is None:
            return isinstance(event, InventoryRefreshed)
        if event.session_id not in self.owners:
            try:
                owner: str | None = (await self.shopper.session(event.session_id)).consumer
            except SessionNotFound:
                owner = None
            self.owners[event.session_id] = owner
        return self.owners[event.session_id] == self.caller.consumer


async def _stream(
    subscription: Subscription, visibility: _Visibility, heartbeat_s: float
) -> AsyncIterator[str]:
    """The subscription as SSE text until the client goes away (then it is closed)."""
    with subscription:
        yield ": subscribed\n\n"
        dropped = 0
        while True:
            try:
                async with asyncio.timeout(heartbeat_s):
                    event = await subscription.get()
            except TimeoutError:
                yield ": heartbeat\n\n"
                continue
            if subscription.dropped > dropped:
                lost, dropped = subscription.dropped - dropped, subscription.dropped
                yield f"event: dropped\ndata: {json.dumps({'dropped': lost})}\n\n"
            if await visibility.allows(event):
                yield frame(event)


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "Server-sent events: session_changed, session_progress, alert, "
            "webhook_failed, inventory_refreshed (and `dropped` when this client fell behind); "
            "`data` is the event as JSON. A comment line every 15 s keeps the stream open.",
        },
        **error_responses(),
    },
)
async def events(request: Request, shopper: ShopperDep, caller: CallerDep) -> StreamingResponse:
    """Live events from now on, as server-sent events, until the client disconnects."""
    heartbeat_s: float = request.app.state.events_heartbeat_s
    return StreamingResponse(
        _stream(shopper.subscribe(), _Visibility(shopper, caller), heartbeat_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# --------------------------------------------------------------------------- metrics


@dataclass
class _AlertTally:
    """Alerts by name over the whole audit log, read incrementally at each scrape."""

    seen_id: int = 0
    counts: Tally[str] = field(default_factory=Tally)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def update(self, shopper: Shopper) -> Tally[str]:
        async with self.lock:
            new = await shopper.audit_log(after_id=self.seen_id, limit=2**62)
            for event in new:
                if event.kind == "alert":
                    self.counts[str(event.data.get("alert", "unknown"))] += 1
            if new and new[-1].id is not None:
                self.seen_id = new[-1].id
            return self.counts


async def metrics(request: Request) -> Response:
    """Prometheus text: sessions by status, alerts (orphans, failing teardowns), providers,
    and what this month cost."""
    shopper = shopper_of(request)
    registry = CollectorRegistry()
    sessions = await shopper.sessions()
    by_status = Tally(s.status for s in sessions)
    gauge = Gauge("gpushop_sessions", "Sessions by status.", ["status"], registry=registry)
    for status in SessionStatus:
        gauge.labels(status.value).set(by_status[status])
    Gauge(
        "gpushop_destroy_failures",
        "Failed teardown attempts of sessions whose instance is not gone yet.",
        registry=registry,
    ).set(sum(s.destroy_attempts for s in sessions if not s.instance.absent))
    tally: _AlertTally = request.app.state.alert_tally
    alerts = await tally.update(shopper)
    Counter(
        "gpushop_orphans_found", "Orphan instances found by reconciliation.", registry=registry
    ).inc(alerts["orphan"])
    by_alert = Counter("gpushop_alerts", "Alerts raised, by name.", ["alert"], registry=registry)
    for name, count in alerts.items():
        by_alert.labels(name).inc(count)
    _provider_metrics(shopper, registry)
    await _supervisor_metrics(shopper, registry)
    month = await shopper.cost_report()
    Gauge(
        "gpushop_cost_accrued_usd", "USD billed this (local) month so far.", registry=registry
    ).set(month.total)
    Gauge("gpushop_burn_usd_per_hour", "USD/h billing right now.", registry=registry).set(
        month.burn_usd_per_hour
    )
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def _supervisor_metrics(shopper: Shopper, registry: CollectorRegistry) -> None:
    """Whether this replica supervises, and which process holds the lease (any replica says)."""
    Gauge(
        "gpushop_supervising",
        "1 when this process holds the supervisor lease.",
        ["process"],
        registry=registry,
    ).labels(shopper.process_name).set(1 if shopper.supervising else 0)
    lease = await shopper.supervisor_lease()
    holder = Gauge(
        "gpushop_supervisor",
        "1 for the process that holds the supervisor lease (none while nobody does).",
        ["holder"],
        registry=registry,
    )
    if lease is not None:
        holder.labels(lease.holder).set(1)


def _provider_metrics(shopper: Shopper, registry: CollectorRegistry) -> None:
    labels = ["provider"]
    up = Gauge(
        "gpushop_provider_up", "1 when the last offer fetch worked.", labels, registry=registry
    )
    error = Gauge(
        "gpushop_provider_error", "1 when the last offer fetch failed.", labels, registry=registry
    )
    offers = Gauge("gpushop_provider_offers", "Offers on the menu.", labels, registry=registry)
    latency = Gauge(
        "gpushop_provider_latency_seconds",
        "How long the last good offer fetch took.",
        labels,
        registry=registry,
    )
    for name in shopper.provider_names():
        report = shopper.provider_report(name)
        if report.status == "not configured":
            continue
        up.labels(name).set(1 if report.status == "ok" else 0)
        error.labels(name).set(0 if report.error is None else 1)
        offers.labels(name).set(report.offers)
        if report.latency_ms is not None:
            latency.labels(name).set(report.latency_ms / 1000)


def install(app: FastAPI) -> None:
    """Add the audit and events routes under /api/v1, and /metrics without a token."""
    app.state.events_heartbeat_s = HEARTBEAT_S
    app.state.alert_tally = _AlertTally()
    app.include_router(router)
    app.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        tags=["ops"],
        dependencies=[KNOWN_QUERY],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
