"""The cockpit's screens, each driven into a telling state on the stable core.

Shared by the snapshot tests (`test_snapshots.py`) and the screenshot command
(`python -m tests.tui.screenshots DIR`), so the README's pictures are the tested screens.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gpushop_tui.models import Budget, BudgetAction, BudgetKind
from tests.tui.harness import Cockpit

WIDE = (120, 40)
NARROW = (80, 24)


async def rentals(ride: Cockpit) -> None:
    """Two sessions running for 40 minutes and one closed, with a monthly budget set."""
    market = ride.market
    await ride.shopper.set_budget(
        Budget(kind=BudgetKind.MONTHLY_SPEND, limit=50.0, action=BudgetAction.BLOCK)
    )
    await ride.shopper.set_budget(
        Budget(consumer="bob", kind=BudgetKind.BURN_RATE, limit=2.0, action=BudgetAction.WARN)
    )
    await market.running(await market.offer("vastai", "4090"), consumer="alice", hours=2)
    await market.running(await market.offer("tensordock"), consumer="bob", hours=1)
    finished = await market.running(await market.offer("bluelobster"), consumer="alice")
    await ride.advance(10 * 60, step_s=30)
    await ride.shopper.done(finished.id)
    await ride.advance(30 * 60, step_s=30)


async def inventory(ride: Cockpit) -> None:
    await ride.press("1")


async def offer_list(ride: Cockpit) -> None:
    """The comparison's first row drilled into: that GPU model and count's offers."""
    await ride.press("1", "enter")


async def rent_dialog(ride: Cockpit) -> None:
    await ride.press("1", "v", "enter")
    await ride.pilot.press(*"alice")
    await ride.settle()


async def compare(ride: Cockpit) -> None:
    await ride.press("1", "v", "space", "down", "space", "down", "space", "c")


async def sessions(ride: Cockpit) -> None:
    """The table alone, alice's running session stopped with `p` (its disk kept): the detail
    panel (`i` hides it) shows the node's SSH port and the key's path, which differ on every
    run (the panel is tested in test_sessions.py and test_power.py)."""
    await rentals(ride)
    await ride.press("2", "p", "y")
    await ride.advance(60, step_s=10)
    ride.app.clear_notifications()  # the toast's timeout runs on the wall clock
    await ride.press("i")


async def costs(ride: Cockpit) -> None:
    await rentals(ride)
    await ride.press("3")


async def benchmarks(ride: Cockpit) -> None:
    await ride.press("4")


async def events(ride: Cockpit) -> None:
    """Warnings and worse: bob's one-hour rental nears its end. (Info rows name each node's
    SSH port, which the simulator picks at random, so the picture leaves them out.)"""
    await rentals(ride)
    await ride.advance(10 * 60, step_s=30)
    await ride.press("5", "s")


async def help_screen(ride: Cockpit) -> None:
    await ride.press("question_mark")


@dataclass(frozen=True)
class Scene:
    name: str
    size: tuple[int, int]
    drive: Callable[[Cockpit], Awaitable[None]]


SCENES = (
    Scene("inventory", WIDE, inventory),
    Scene("inventory-80x24", NARROW, inventory),
    Scene("offer-list", WIDE, offer_list),
    Scene("rent-dialog", WIDE, rent_dialog),
    Scene("compare", WIDE, compare),
    Scene("sessions", WIDE, sessions),
    Scene("costs", WIDE, costs),
    Scene("benchmarks", WIDE, benchmarks),
    Scene("events", WIDE, events),
    Scene("help", WIDE, help_screen),
)
