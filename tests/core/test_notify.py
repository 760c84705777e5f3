"""Alert webhooks against a real HTTP receiver on loopback, with backoff on a fake clock.

The receiver is a Starlette app served by uvicorn on 127.0.0.1 (the simulator's own `serve`);
it records every POST with the fake clock's reading and answers from a script.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gpushop_tui.clock import FakeClock
from gpushop_tui.config import Settings, load_settings
from gpushop_tui.core.events import Alert, EventBus, InventoryRefreshed, Subscription, WebhookFailed
from gpushop_tui.core.notify import WebhookNotifier
from gpushop_tui.errors import ConfigError
from gpushop_tui.models import AuditEvent, Budget, BudgetKind, Severity
from gpushop_tui.secrets import SecretStore
from gpushop_tui.sim.http import serve
from gpushop_tui.store import Store
from tests.core.market import open_market

SECRET = "whsec-planted-7c1e9a42d0"
HANG = None
"""A scripted answer: hold the request until the test opens the gate."""


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    at: float
    """The fake clock's monotonic reading when the POST arrived."""

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook endpoint: records each POST and answers the next scripted status (then 200)."""

    clock: FakeClock
    answers: list[int | None] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.received.append(Received(body, dict(request.headers), self.clock.monotonic()))
        async with self._arrived:
            self._arrived.notify_all()
        answer = self.answers.pop(0) if self.answers else 200
        if answer is HANG:
            await self.gate.wait()
            answer = 200
        return Response(status_code=answer)

    async def wait_for(self, count: int) -> list[Received]:
        """The first `count` POSTs, once they have arrived (at most 5 s of real time)."""
        async with asyncio.timeout(5), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received[:count]


class NoJitter(random.Random):
    """Backoff without its ±50 % jitter, so the waits are exactly 1, 2, 4 ... s."""

    def uniform(self, a: float, b: float) -> float:
        return 1.0


@pytest.fixture
async def receiver(clock: FakeClock) -> AsyncIterator[Receiver]:
    receiver = Receiver(clock)
    served = await serve(Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])]))
    receiver.url = f"{served.origin}/hook"
    yield receiver
    receiver.gate.set()
    await served.stop()


@pytest.fixture
def bus(store: Store, clock: FakeClock) -> EventBus:
    return EventBus(store, clock)


@pytest.fixture
def notifier_for(
    settings: Settings, store: Store, clock: FakeClock, bus: EventBus
) -> Callable[..., WebhookNotifier]:
    """Build a notifier for `url`, signed with SECRET from the environment unless told."""

    def build(
        url: str, *, secrets: SecretStore | None = None, queue_size: int = 100, **knobs: Any
    ) -> WebhookNotifier:
        return WebhookNotifier(
            settings.model_copy(update={"webhook_url": url, **knobs}),
            secrets or SecretStore({"GPUSHOP_WEBHOOK_SECRET": SECRET}),
            clock,
            bus,
            store.install_id,
            queue_size=queue_size,
            rng=NoJitter(),
        )

    return build


def alert(number: int, severity: Severity = Severity.WARNING) -> Alert:
    return Alert(alert="budget_threshold", message=f"alert {number}", severity=severity)


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run (real I/O included) until `condition` holds; FakeClock has no event for
    "a task now sleeps", so this yields a bounded number of times and fails instead of hanging."""
    for _ in range(200_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def next_failure(subscription: Subscription) -> WebhookFailed:
    """The next `webhook_failed` event the bus publishes (at most 5 s of real time)."""
    async with asyncio.timeout(5):
        while not isinstance(event := await subscription.get(), WebhookFailed):
            pass
    return event


async def failures(store: Store) -> list[AuditEvent]:
    return [row for row in await store.list_audit() if row.kind == "webhook_failed"]


async def test_an_alert_is_posted_as_json_signed_with_the_keyring_secret(
    receiver: Receiver,
    notifier_for: Callable[..., WebhookNotifier],
    bus: EventBus,
    store: Store,
) -> None:
    keyring = SecretStore({})
    keyring.set("webhook", SECRET)
    rows, _ = keyring.status()
    assert {r.provider: r.source for r in rows}["webhook"] == "keyring"

    async with notifier_for(receiver.url, secrets=keyring):
        published = await bus.publish(
            Alert(
                alert="destroy_failing",
                message="destroy of s-1 failed 3 times",
                session_id=None,
                severity=Severity.ERROR,
            )
        )
        [post] = await receiver.wait_for(1)

    assert post.headers["content-type"] == "application/json"
    assert post.headers["x-gpushop-event"] == "destroy_failing"
    assert len(post.headers["x-gpushop-delivery"]) >= 16
    assert hmac.compare_digest(post.headers["x-gpushop-signature"], signature(post.body))
    assert post.headers["x-gpushop-signature"] != signature(post.body, "another-secret")
    assert post.payload == {
        "id": published.audit_id,
        "at": "2026-01-01T00:00:00Z",
        "kind": "destroy_failing",
        "severity": "error",
        "session_id": None,
        "message": "destroy of s-1 failed 3 times",
        "data": {"alert": "destroy_failing"},
        "install_id": store.install_id,
    }
    assert await failures(store) == []


@pytest.mark.parametrize("answers", [[503, 503], [429, 502]])
async def test_5xx_and_429_are_retried_with_growing_backoff_under_one_delivery_id(
    receiver: Receiver,
    notifier_for: Callable[..., WebhookNotifier],
    bus: EventBus,
    clock: FakeClock,
    store: Store,
    answers: list[int | None],
) -> None:
    receiver.answers = list(answers)
    async with notifier_for(receiver.url):
        await bus.publish(alert(1))
        await receiver.wait_for(1)
        await until(lambda: clock.sleeping == 1)
        await clock.advance(0.9)
        assert len(receiver.received) == 1
        await clock.advance(0.1)
        await receiver.wait_for(2)
        await until(lambda: clock.sleeping == 1)
        await clock.advance(1.9)
        assert len(receiver.received) == 2
        await clock.advance(0.1)
        posts = await receiver.wait_for(3)

    assert [p.at for p in posts] == [0.0, 1.0, 3.0]
    assert len({p.headers["x-gpushop-delivery"] for p in posts}) == 1
    assert len({p.body for p in posts}) == 1
    assert len(receiver.received) == 3
    assert await failures(store) == []


async def test_a_4xx_is_not_retried_and_is_audited(
    receiver: Receiver,
    notifier_for: Callable[..., WebhookNotifier],
    bus: EventBus,
    clock: FakeClock,
    store: Store,
) -> None:
    receiver.answers = [400]
    with bus.subscribe() as events:
        async with notifier_for(receiver.url):
            published = await bus.publish(alert(1))
            event = await next_failure(events)
            assert clock.sleeping == 0

    assert len(receiver.received) == 1
    [failed] = await failures(store)
    assert (failed.id, failed.severity) == (event.audit_id, Severity.ERROR)
    assert failed.data["alert_ids"] == [published.audit_id]
    assert "HTTP 400 (not retried)" in failed.message


async def test_an_unreachable_webhook_is_given_up_after_the_last_try_never_raised(
    notifier_for: Callable[..., WebhookNotifier], bus: EventBus, clock: FakeClock, store: Store
) -> None:
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with bus.subscribe() as events:
        async with notifier_for(f"http://127.0.0.1:{port}/hook", webhook_max_attempts=3):
            published = await bus.publish(alert(1))
            for _ in range(2):
                await until(lambda: clock.sleeping == 1)
                await clock.advance(60)
            await next_failure(events)

    [failed] = await failures(store)
    assert failed.data["alert_ids"] == [published.audit_id]
    assert "ConnectError" in failed.message and "(tried 3 times)" in failed.message


async def test_a_request_past_its_timeout_is_abandoned_and_retried(
    receiver: Receiver,
    notifier_for: Callable[..., WebhookNotifier],
    bus: EventBus,
    clock: FakeClock,
    store: Store,
) -> None:
    receiver.answers = [HANG]
    async with notifier_for(receiver.url, webhook_timeout_s=0.2):
        await bus.publish(alert(1))
        await receiver.wait_for(1)
        await until(lambda: clock.sleeping == 1)  # the try timed out; backoff has begun
        await clock.advance(1)
        first, second = await receiver.wait_for(2)

    assert first.headers["x-gpushop-delivery"] == second.headers["x-gpushop-delivery"]
    assert await failures(store) == []


async def test_a_hanging_receiver_blocks_no_publisher_and_a_full_queue_drops_the_oldest(
    receiver: Receiver,
    notifier_for: Callable[..., WebhookNotifier],
    bus: EventBus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.answers = [HANG]
    async with notifier_for(receiver.url, queue_size=3) as notifier:
        await bus.publish(alert(0))
        await receiver.wait_for(1)  # alert 0 is in flight, and its receiver hangs
        with caplog.at_level(logging.WARNING, "gpushop_tui.core.notify"):
            async with asyncio.timeout(5):
                for number in range(1, 10):
                    await bus.publish(alert(number))
        await until(lambda: notifier.dropped == 6)
        assert len(receiver.received) == 1 and not receiver.gate.is_set()
        dropped = [r for r in caplog.records if "dropped the oldest alert" in r.getMessage()]
        assert len(dropped) == 6
        receiver.gate.set()
        posts = await receiver.wait_for(4)

    assert [p.payload["message"] for p in posts] == ["alert 0", "alert 7", "alert 8", "alert 9"]


async def test_without_a_secret_alerts_go_unsigned_and_that_is_logged_once(
    receiver: Receiver,
    notifier_for: Callable[..., WebhookNotifier],
    bus: EventBus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "gpushop_tui.core.notify"):
        async with notifier_for(receiver.url, secrets=SecretStore({})):
            await bus.publish(alert(1))
            await bus.publish(alert(2))
            posts = await receiver.wait_for(2)

    assert all("x-gpushop-signature" not in p.headers for p in posts)
    unsigned = [r for r in caplog.records if "posted unsigned" in r.getMessage()]
    assert len(unsigned) == 1
    assert "GPUSHOP_WEBHOOK_SECRET" in unsigned[0].getMessage()


async def test_the_secret_never_reaches_logs_or_the_audit_log(
    receiver: Receiver,
    notifier_for: Callable[..., WebhookNotifier],
    bus: EventBus,
    clock: FakeClock,
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.answers = [500, 401]
    with caplog.at_level(logging.DEBUG), bus.subscribe() as events:
        async with notifier_for(receiver.url):
            await bus.publish(alert(1))
            await until(lambda: clock.sleeping == 1)
            await clock.advance(1)
            event = await next_failure(events)
            await bus.publish(alert(2))
            [*_, delivered] = await receiver.wait_for(3)

    assert delivered.headers["x-gpushop-signature"] == signature(delivered.body)
    assert "HTTP 401" in event.message
    assert caplog.records
    assert SECRET not in caplog.text
    for row in await store.list_audit():
        assert SECRET not in row.message + json.dumps(row.data)


async def test_min_severity_keeps_less_severe_alerts_and_other_events_out(
    receiver: Receiver, notifier_for: Callable[..., WebhookNotifier], bus: EventBus
) -> None:
    async with notifier_for(receiver.url, webhook_min_severity=Severity.ERROR):
        for number, severity in enumerate(Severity):
            await bus.publish(alert(number, severity))
        await bus.publish(
            InventoryRefreshed(message="vastai: 3 offers", provider="vastai", offers=3, ok=True)
        )
        await receiver.wait_for(2)

    assert [p.payload["severity"] for p in receiver.received] == ["error", "critical"]


async def test_closing_flushes_what_is_queued(
    receiver: Receiver, notifier_for: Callable[..., WebhookNotifier], bus: EventBus
) -> None:
    notifier = notifier_for(receiver.url)
    notifier.start()
    for number in range(5):
        await bus.publish(alert(number))
    await notifier.aclose()  # a one-shot command ends right after its last alert

    assert [p.payload["message"] for p in receiver.received] == [f"alert {n}" for n in range(5)]


async def test_closing_waits_a_bounded_time_and_audits_what_did_not_go_out(
    receiver: Receiver,
    notifier_for: Callable[..., WebhookNotifier],
    bus: EventBus,
    store: Store,
) -> None:
    receiver.answers = [HANG]
    notifier = notifier_for(receiver.url)
    notifier.start()
    first = await bus.publish(alert(1))
    second = await bus.publish(alert(2))
    await receiver.wait_for(1)
    async with asyncio.timeout(5):
        await notifier.aclose(wait_s=0.1)

    [failed] = await failures(store)
    assert failed.data["alert_ids"] == [first.audit_id, second.audit_id]
    assert "at shutdown" in failed.message


def test_webhook_settings_come_from_the_environment_and_a_bad_url_is_one_sentence() -> None:
    settings = load_settings(
        {
            "GPUSHOP_WEBHOOK_URL": "https://hooks.example.test/gpushop",
            "GPUSHOP_WEBHOOK_MIN_SEVERITY": "error",
            "GPUSHOP_WEBHOOK_TIMEOUT_S": "3",
            "GPUSHOP_WEBHOOK_MAX_ATTEMPTS": "2",
        }
    )
    assert settings.webhook_min_severity == Severity.ERROR
    assert (settings.webhook_timeout_s, settings.webhook_max_attempts) == (3, 2)
    with pytest.raises(ConfigError, match="must be http:// or https:// and name a host"):
        load_settings({"GPUSHOP_WEBHOOK_URL": "hooks.example.test/gpushop"})


async def test_a_budget_threshold_in_the_running_core_reaches_the_webhook(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    """Wired end to end: a `Shopper` opened with a webhook URL posts the alerts its supervisor
    raises, signed with the secret from the environment."""
    monkeypatch.setenv("GPUSHOP_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("GPUSHOP_WEBHOOK_SECRET", SECRET)
    async with open_market(monkeypatch, isolated_env) as market:
        await market.running(consumer="alice", hours=3)
        await market.shopper._budgets.set(
            Budget(consumer="alice", kind=BudgetKind.CONCURRENT_SESSIONS, limit=1)
        )
        await market.tick()
        posts = await receiver.wait_for(1)
        await market.tick()  # fired once: nothing more to post
        await market.quiet()
    [post] = [p for p in posts if p.payload["kind"] == "budget_threshold"]
    assert post.payload["message"].endswith("is at 100% (1 of 1 sessions)")
    assert post.payload["severity"] == "error"
    assert len(receiver.received) == 1
    assert all(p.headers["x-gpushop-signature"] == signature(p.body) for p in posts)


async def test_an_alert_another_replica_stored_is_not_posted_again_here(
    receiver: Receiver,
    notifier_for: Callable[..., WebhookNotifier],
    bus: EventBus,
) -> None:
    """Every replica follows the others' events; only the one that raised an alert posts it,
    or the webhook would get it once per replica."""
    async with notifier_for(receiver.url):
        bus.deliver(alert(1), own=False)  # as the audit follower hands one over
        await bus.publish(alert(2))
        [post] = await receiver.wait_for(1)
    assert post.payload["message"] == "alert 2"
    assert len(receiver.received) == 1
