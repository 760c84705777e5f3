"""The wheel carries the stylesheets, migrations and entry point, and finds them once installed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from gpushop_tui.tui.app import STYLESHEETS
from tests.conftest import ROOT


def test_wheel_ships_styles_migrations_and_script(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = (tmp_path / "dist").glob("gpushop-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "gpushop = gpushop_tui.cli:main" in archive.read(entry_points).decode()
    for stylesheet in STYLESHEETS:  # every sheet the app loads is in the wheel
        assert f"gpushop_tui/styles/{stylesheet}" in names
    assert "gpushop_tui/store/migrations/sqlite/0001_initial.sql" in names
    assert "gpushop_tui/data/benchmarks.csv" in names
    assert not any(name.startswith("tests/") for name in names)

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    probe = (
        "import gpushop_tui, gpushop_tui.store.backends as db\n"
        "from gpushop_tui.tui.styles import styles_dir\n"
        "print(gpushop_tui.__file__)\n"
        "print((styles_dir() / 'app.tcss').is_file(), styles_dir())\n"
        "print(len(db.migrations()))\n"
        "from gpushop_tui.core.benchmarks import seed\n"
        "print(len(seed()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    module_file, styles, migrations, seed_rows = result.stdout.splitlines()
    assert module_file.startswith(str(target))
    assert styles == f"True {target / 'gpushop_tui' / 'styles'}"
    assert int(migrations) >= 1
    assert int(seed_rows) == 30  # the shipped benchmark measurements load from the wheel
