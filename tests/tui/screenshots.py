"""Write an SVG screenshot of every cockpit screen: `python -m tests.tui.screenshots DIR`.

The screens are the snapshot tests' scenes on the stable core (fake clock, seeded simulator), so
the pictures in the README are exactly what the tests approve.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from gpushop_tui.config import load_settings
from gpushop_tui.tui.app import GpushopApp
from tests.tui.harness import StableCore
from tests.tui.scenes import SCENES, Scene


async def shoot(scene: Scene, home: Path, out: Path) -> Path:
    core = StableCore(home)
    app = GpushopApp(load_settings(), opener=core)
    async with app.run_test(size=scene.size) as pilot:
        ride = await core.ride(app, pilot)
        await scene.drive(ride)
        await ride.settle()
        app.clear_notifications()
        await pilot.pause()
        target = out / f"{scene.name}.svg"
        target.write_text(app.export_screenshot(title=f"gpushop — {scene.name}"))
    return target


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    os.environ["TZ"] = "UTC"
    for scene in SCENES:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["GPUSHOP_HOME"] = str(Path(tmp) / "home")
            os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"
            print(await shoot(scene, Path(tmp), out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.tui.screenshots DIR")
    asyncio.run(main(Path(sys.argv[1])))
