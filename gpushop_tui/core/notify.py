"""Alerts out of the process: every `Alert` event POSTed as signed JSON to a webhook.

Delivery never slows the supervisor or whoever publishes: the bus hands events to a
subscription, a pump moves the wanted alerts into a bounded queue (when full, the oldest is
dropped with a warning), and one background task delivers them in order, retrying network
errors, timeouts, 5xx and 429 with exponential backoff on the injected clock. An alert that
still fails is logged and audited as `webhook_failed`; nothing here raises into the caller.

A receiver checks `X-Gpushop-Signature: sha256=<hex>`, the HMAC-SHA256 of the exact body bytes
under the `webhook` secret (OS keyring, or GPUSHOP_WEBHOOK_SECRET), and may drop duplicates by
`X-Gpushop-Delivery`, which stays the same across the retries of one alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import uuid
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from gpushop_tui import __version__
from gpushop_tui.clock import Clock
from gpushop_tui.config import Settings
from gpushop_tui.core.events import Alert, EventBus, Subscription, WebhookFailed
from gpushop_tui.models import Severity, UtcDatetime
from gpushop_tui.providers.base import RetryPolicy
from gpushop_tui.secrets import CREDENTIAL_ENV, WEBHOOK, SecretStore, redact

log = logging.getLogger(__name__)

BACKOFF = RetryPolicy(base_s=1.0, max_s=60.0)
"""Waits between tries: about 1, 2, 4 ... s (jittered), at most 60 s; tries come from settings."""
QUEUE_SIZE = 1000
"""Alerts waiting for delivery at most; a flood beyond this loses its oldest alerts."""
CLOSE_WAIT_S = 5.0
"""How long closing waits for queued alerts to go out (one-shot commands must not hang)."""
_RANK = {severity: rank for rank, severity in enumerate(Severity)}


class WebhookPayload(BaseModel):
    """The JSON body of one webhook POST (the contract with receivers)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int | None
    """The alert's audit id (`gpushop audit`, `GET /api/v1/audit`)."""
    at: UtcDatetime
    kind: str
    """What happened: budget_threshold, destroy_failing, orphan_destroyed, ..."""
    severity: Severity
    session_id: str | None
    message: str
    data: dict[str, Any]
    install_id: str


@dataclass(frozen=True)
class _Delivery:
    alert: Alert
    id: str
    """Sent as X-Gpushop-Delivery; the same on every retry."""


class WebhookNotifier:
    """Delivers the bus's alerts to `settings.webhook_url`; does nothing when that is unset.

    `start()` subscribes and starts the background work; `aclose()` waits (bounded) for queued
    alerts to go out, then stops and audits whatever is left undelivered.
    """

    def __init__(
        self,
        settings: Settings,
        secrets: SecretStore,
        clock: Clock,
        bus: EventBus,
        install_id: str,
        *,
        queue_size: int = QUEUE_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        self._url = settings.webhook_url
        self._min_rank = _RANK[settings.webhook_min_severity]
        self._timeout_s = settings.webhook_timeout_s
        self._retry = replace(BACKOFF, attempts=settings.webhook_max_attempts)
        self._secrets = secrets
        self._clock = clock
        self._bus = bus
        self._install_id = install_id
        self._queue_size = queue_size
        self._rng = rng or random.Random()
        self._queue: deque[_Delivery] = deque()
        self._current: _Delivery | None = None
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._secret: bytes | None = None
        self._warned_unsigned = False
        self._subscription: Subscription | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0
        """Alerts dropped because the queue was full."""

    def start(self) -> None:
        """Subscribe to the bus and start delivering; a no-op without a webhook URL."""
        if self._url is None or self._tasks:
            return
        secret = self._secrets.get(WEBHOOK)
        self._secret = secret.encode() if secret else None
        self._client = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
        self._subscription = self._bus.subscribe(self._queue_size, own_only=True)
        self._tasks = [
            asyncio.create_task(self._pump(self._subscription), name="webhook-pump"),
            asyncio.create_task(self._deliver_queued(), name="webhook-deliver"),
        ]

    async def aclose(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Deliver what is queued (waiting `wait_s` at most), stop, and audit what is left."""
        if not self._tasks:
            return
        await asyncio.sleep(0)  # the pump runs first: it takes alerts published just before
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._idle.wait()
        assert self._subscription is not None and self._client is not None
        self._subscription.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._client.aclose()
        left = ([self._current] if self._current else []) + list(self._queue)
        self._current = None
        self._queue.clear()
        if left:
            await self._failed(left, f"still queued after waiting {wait_s:g} s at shutdown")

    async def __aenter__(self) -> WebhookNotifier:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ intake

    async def _pump(self, subscription: Subscription) -> None:
        """Move the alerts this webhook wants from the bus into the delivery queue."""
        async for event in subscription:
            if isinstance(event, Alert) and _RANK[event.severity] >= self._min_rank:
                self._enqueue(event)

    def _enqueue(self, alert: Alert) -> None:
        if len(self._queue) >= self._queue_size:
            oldest = self._queue.popleft()
            self.dropped += 1
            log.warning(
                "alert webhook: queue full (%d waiting), dropped the oldest alert %s (%s)",
                self._queue_size,
                oldest.alert.audit_id,
                oldest.alert.alert,
            )
        self._queue.append(_Delivery(alert, uuid.uuid4().hex))
        self._idle.clear()
        self._wakeup.set()

    # ------------------------------------------------------------------ delivery

    async def _deliver_queued(self) -> None:
        """The one delivery task: alerts go out one at a time, in the order they came."""
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._current = self._queue.popleft()
            try:
                await self._deliver(self._current)
            except Exception:  # one alert's trouble must not stop the alerts after it
                log.exception(
                    "alert webhook: delivering alert %s failed", self._current.alert.audit_id
                )
            self._current = None

    async def _deliver(self, delivery: _Delivery) -> None:
        """POST one alert, retrying what may succeed later; audit it when every try failed."""
        body = self._payload(delivery.alert).model_dump_json().encode()
        headers = self._headers(delivery, body)
        attempts = self._retry.attempts
        reason = "no try was made"
        for attempt in range(1, attempts + 1):
            failure, retry = await self._post(body, headers)
            if failure is None:
                log.debug("alert webhook: delivered alert %s", delivery.alert.audit_id)
                return
            reason = failure
            if not retry:
                reason += " (not retried)"
                break
            if attempt == attempts:
                reason += f" (tried {attempts} times)"
                break
            delay = self._retry.delay(attempt, self._rng)
            log.info(
                "alert webhook: %s (try %d of %d); next try in %.1f s",
                reason,
                attempt,
                attempts,
                delay,
            )
            await self._clock.sleep(delay)
        await self._failed([delivery], reason)

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[str | None, bool]:
        """One try: (None, _) when the receiver took it, else (why not, worth retrying)."""
        assert self._client is not None and self._url is not None
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.post(self._url, content=body, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            return f"no answer in {self._timeout_s:g} s", True
        except httpx.HTTPError as err:
            shown = redact(str(err).replace(self._url, "<webhook URL>"))
            return f"{type(err).__name__}: {shown}", True
        status = response.status_code
        if response.is_success:
            return None, False
        return f"HTTP {status}", status == 429 or status >= 500

    def _payload(self, alert: Alert) -> WebhookPayload:
        assert alert.at is not None, "the bus stamps every event it publishes"
        return WebhookPayload(
            id=alert.audit_id,
            at=alert.at,
            kind=alert.alert,
            severity=alert.severity,
            session_id=alert.session_id,
            message=alert.message,
            data=alert.data(),
            install_id=self._install_id,
        )

    def _headers(self, delivery: _Delivery, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"gpushop/{__version__}",
            "X-Gpushop-Event": delivery.alert.alert,
            "X-Gpushop-Delivery": delivery.id,
        }
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers["X-Gpushop-Signature"] = f"sha256={digest}"
        elif not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning(
                "alert webhook: no %s secret is set (gpushop keys set %s, or %s); "
                "alerts are posted unsigned",
                WEBHOOK,
                WEBHOOK,
                CREDENTIAL_ENV[WEBHOOK],
            )
        return headers

    async def _failed(self, deliveries: list[_Delivery], reason: str) -> None:
        """Log and audit alerts that did not reach the webhook (the bus does both)."""
        ids = [d.alert.audit_id for d in deliveries]
        shown = ", ".join(str(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
        await self._bus.publish(
            WebhookFailed(
                message=f"alert webhook did not take {len(ids)} alert(s) ({shown}): {reason}",
                alert_ids=ids,
                reason=reason,
                session_id=deliveries[0].alert.session_id if len(deliveries) == 1 else None,
            )
        )
