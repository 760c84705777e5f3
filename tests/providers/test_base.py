"""The shared provider plumbing: labels, rate limiting by priority, transient-only retries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.providers.base import (
    Priority,
    ProviderBug,
    ProviderHttp,
    RateLimit,
    RateLimited,
    RateLimiter,
    RetryPolicy,
    TransientError,
    json_of,
    label_for,
    parse_label,
)

NO_WAIT = RetryPolicy(attempts=3, base_s=0.0)


async def settle(condition: Callable[[], bool]) -> None:
    """Let other tasks run until `condition` holds (bounded: fails instead of hanging)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def test_labels_round_trip_and_fit_every_provider() -> None:
    label = label_for("ab12cd34", "s0123456789abcdefghijklmnopqrstu")
    assert parse_label(label) == ("ab12cd34", "s0123456789abcdefghijklmnopqrstu")
    assert len(label) <= 64
    assert all(c.isalnum() or c == "-" for c in label)
    assert label[0].isalnum() and label[-1].isalnum()
    for foreign in (None, "", "my-training-run", "gpushop-AB12-x", "gpushop-ab12cd34-"):
        assert parse_label(foreign) is None
    with pytest.raises(ValueError):
        label_for("ab12cd34", "Not Safe")


def scripted(*answers: int | type[Exception]) -> tuple[httpx.MockTransport, list[str]]:
    """A transport that answers each request with the next status (or raises the exception)."""
    seen: list[str] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        answer = queue.pop(0)
        if isinstance(answer, type):
            raise answer("boom", request=request)
        headers = {"Retry-After": "7"} if answer == 4290 else {}
        status = 429 if answer == 4290 else answer
        return httpx.Response(status, json={"n": len(seen)}, headers=headers)

    return httpx.MockTransport(handle), seen


def http_with(transport: httpx.MockTransport, clock: FakeClock | None = None) -> ProviderHttp:
    return ProviderHttp(
        "vastai",
        "http://127.0.0.1:1/api/v0",
        {"Authorization": "Bearer k"},
        clock=clock or FakeClock(),
        retry=NO_WAIT,
        transport=transport,
    )


async def test_transient_failures_are_retried_then_succeed() -> None:
    transport, seen = scripted(503, httpx.ConnectError, 429, 200)
    http = http_with(transport)
    http.retry = RetryPolicy(attempts=4, base_s=0.0)
    response = await http.request("GET", "/instances/")
    assert response.status_code == 200 and len(seen) == 4


async def test_a_wrong_request_is_never_retried() -> None:
    for status in (400, 401, 403, 404, 410, 422):
        transport, seen = scripted(status, 200)
        response = await http_with(transport).request("GET", "/x")
        assert (response.status_code, len(seen)) == (status, 1)


async def test_retries_give_up_with_the_right_error() -> None:
    transport, seen = scripted(429, 429, 429)
    with pytest.raises(RateLimited):
        await http_with(transport).request("GET", "/bundles/")
    assert len(seen) == 3
    transport, seen = scripted(500, 502, 503)
    with pytest.raises(TransientError) as caught:
        await http_with(transport).request("GET", "/x")
    assert len(seen) == 3 and not caught.value.ambiguous


async def test_a_create_is_not_retried_once_the_provider_may_have_acted() -> None:
    for failure in (500, httpx.ReadTimeout):
        transport, seen = scripted(failure, 200)
        with pytest.raises(TransientError) as caught:
            await http_with(transport).request("PUT", "/asks/1/", idempotent=False)
        assert caught.value.ambiguous and len(seen) == 1
    # ... but a refused connection or a 429 certainly did nothing, so those are retried
    transport, seen = scripted(httpx.ConnectError, 429, 200)
    response = await http_with(transport).request("PUT", "/asks/1/", idempotent=False)
    assert response.status_code == 200 and len(seen) == 3


async def test_retry_after_is_honoured_on_the_clock() -> None:
    clock = FakeClock()
    transport, seen = scripted(4290, 200)
    http = http_with(transport, clock)
    call = asyncio.create_task(http.request("GET", "/x"))
    await settle(lambda: clock.sleeping > 0)
    await clock.advance(6.9)
    assert not call.done() and len(seen) == 1
    await clock.advance(0.2)
    assert (await call).status_code == 200


def test_backoff_is_jittered_exponential_and_capped() -> None:
    import random

    policy = RetryPolicy(attempts=10, base_s=1.0, max_s=8.0)
    rng = random.Random(1)
    delays = [policy.delay(n, rng) for n in range(1, 8)]
    assert 0.5 <= delays[0] <= 1.5 and 1.0 <= delays[1] <= 3.0
    assert all(d <= 12.0 for d in delays)
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered, not lock-step


async def test_urgent_calls_jump_the_rate_limit_queue() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, per_second=1.0, burst=1)
    order: list[str] = []

    async def call(name: str, priority: Priority) -> None:
        await limiter.acquire(priority)
        order.append(name)

    await call("first", Priority.BACKGROUND)  # uses the only token
    tasks = [asyncio.create_task(call(f"menu{i}", Priority.BACKGROUND)) for i in range(3)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(call("destroy", Priority.URGENT)))
    await asyncio.sleep(0)
    for _ in range(4):
        await clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert order == ["first", "destroy", "menu0", "menu1", "menu2"]


async def test_rate_limit_spaces_calls_after_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, per_second=1.0, burst=2)
    times: list[float] = []

    async def call() -> None:
        await limiter.acquire(Priority.NORMAL)
        times.append(clock.monotonic())

    tasks = [asyncio.create_task(call()) for _ in range(4)]
    await asyncio.sleep(0)
    for _ in range(30):
        await clock.advance(0.25)
    await asyncio.gather(*tasks)
    assert times[:2] == [0.0, 0.0]
    assert times[2] == pytest.approx(1.0) and times[3] == pytest.approx(2.0)


def test_a_body_that_is_not_json_is_a_provider_bug() -> None:
    bad = httpx.Response(200, text='{"offers": [')
    with pytest.raises(ProviderBug, match="not JSON"):
        json_of("vastai", bad)
    assert json_of("vastai", httpx.Response(200, text=json.dumps({"a": 1}))) == {"a": 1}


def test_a_provider_error_never_carries_the_key() -> None:
    from gpushop_tui.providers.base import AuthError
    from gpushop_tui.secrets import remember_secret

    remember_secret("sk-live-very-secret-value")
    err = AuthError("vastai", "key sk-live-very-secret-value was refused")
    assert "sk-live-very-secret-value" not in str(err)


async def test_unlimited_rate_never_waits() -> None:
    limiter = RateLimiter(FakeClock(), RateLimit(None).per_second)
    async with asyncio.timeout(1):
        for _ in range(1000):
            await limiter.acquire(Priority.BACKGROUND)


async def test_a_rate_that_is_no_power_of_two_still_hands_out_every_token_on_time() -> None:
    """A refill of 1/5 s on a fake clock can fall short of a whole token by a rounding error;
    the wait for the rest must not be a sleep too small to move the clock (it hung for ever)."""
    clock = FakeClock()
    limiter = RateLimiter(clock, per_second=5.0, burst=5)
    times: list[float] = []

    async def call() -> None:
        await limiter.acquire(Priority.NORMAL)
        times.append(clock.monotonic())

    tasks = [asyncio.create_task(call()) for _ in range(40)]
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        while not all(task.done() for task in tasks):
            await clock.advance(0.3)
    assert times[:5] == [0.0] * 5
    assert times[-1] == pytest.approx(7.0, abs=0.31)
