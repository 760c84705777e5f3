"""`gpushop` and `gpushop --demo` launch the cockpit through the real entry point.

The app runs headless with an auto-pilot that waits for the core, notes what opened, and quits
with `q`; everything from argument parsing to the data dir is the command's own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from gpushop_tui.cli import main
from gpushop_tui.tui.app import GpushopApp


def test_gpushop_and_gpushop_demo_open_the_cockpit(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[dict[str, Any]] = []
    run = GpushopApp.run

    async def look_and_quit(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, GpushopApp)
        await asyncio.wait_for(app.opened.wait(), 60)
        while app.shopper is None:
            await pilot.pause(0.05)
        opened.append(
            {
                "demo": app.demo,
                "title": app.title,
                "home": app.shopper.settings.paths.data_dir,
                "providers": app.shopper.configured_providers(),
            }
        )
        await pilot.press("q")

    def headless(self: GpushopApp, **_: Any) -> Any:
        return run(self, headless=True, auto_pilot=look_and_quit)

    monkeypatch.setattr(GpushopApp, "run", headless)
    assert main([]) == 0
    assert main(["--demo"]) == 0
    plain, demo = opened
    assert (plain["demo"], plain["title"], plain["providers"]) == (False, "gpushop", [])
    assert plain["home"] == isolated_env
    assert (demo["demo"], demo["title"]) == (True, "gpushop DEMO")
    assert demo["providers"] == ["vastai", "tensordock", "bluelobster", "runpod", "lambda"]
    assert demo["home"].name.startswith("gpushop-demo-") and not demo["home"].exists()
