"""The injectable clock: fake time moves only when advanced, and wakes sleepers in order."""

from __future__ import annotations

import ast
import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import gpushop_tui
from gpushop_tui.clock import FakeClock, SystemClock, utc


async def test_fake_sleepers_wake_in_deadline_order() -> None:
    clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
    woke: list[tuple[str, datetime]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper("late", 90)), asyncio.create_task(sleeper("soon", 30))]
    await asyncio.sleep(0)
    assert clock.sleeping == 2
    await clock.advance(29)
    assert woke == []
    await clock.advance(61)
    await asyncio.gather(*tasks)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    assert woke == [
        ("soon", start + timedelta(seconds=30)),
        ("late", start + timedelta(seconds=90)),
    ]
    assert clock.now() == start + timedelta(seconds=90)
    assert clock.monotonic() == 90


async def test_fake_clock_rejects_going_backwards_and_naive_starts() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        FakeClock(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="backwards"):
        await FakeClock().advance(-1)


def test_system_clock_is_utc_aware() -> None:
    now = SystemClock().now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="naive"):
        utc(datetime(2026, 1, 1))


WALL_CLOCK_CALLS = {
    ("time", "time"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("time", "monotonic"),
    ("time", "sleep"),
    ("date", "today"),
}


def test_core_never_reads_the_wall_clock_directly() -> None:
    core = Path(gpushop_tui.__file__).parent / "core"
    offenders = []
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and (node.func.value.id, node.func.attr) in WALL_CLOCK_CALLS
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
