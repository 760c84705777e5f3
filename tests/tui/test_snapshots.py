"""Every screen at 120x40 (and the inventory at 80x24) looks as it did when last approved.

Run `pytest tests/tui/test_snapshots.py --snapshot-update` after an intended change, look at
the SVGs under `__snapshots__/`, and refresh `screenshots/` with `python -m tests.tui.screenshots
screenshots`. The core under the app is `StableCore`: fake clock, seeded simulator, counted ids,
so nothing in a picture depends on the host, the hour or chance.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from gpushop_tui.config import load_settings
from gpushop_tui.tui.app import GpushopApp
from tests.tui.harness import StableCore
from tests.tui.scenes import SCENES, Scene


def stage(app: GpushopApp, core: StableCore, scene: Scene) -> Callable[[Pilot[None]], object]:
    async def run_before(pilot: Pilot[None]) -> None:
        ride = await core.ride(app, pilot)
        await scene.drive(ride)
        await ride.settle()
        app.clear_notifications()

    return run_before


@pytest.mark.parametrize("scene", SCENES, ids=[s.name for s in SCENES])
def test_screen_looks_as_approved(
    scene: Scene, isolated_env: Path, snap_compare: Callable[..., bool]
) -> None:
    core = StableCore(isolated_env)
    app = GpushopApp(load_settings(), opener=core)
    assert snap_compare(app, terminal_size=scene.size, run_before=stage(app, core, scene))
