"""The code base stays ruff-clean (lint and format), as the project standards require."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.conftest import ROOT


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    ruff = shutil.which("ruff") or str(ROOT / ".venv" / "bin" / "ruff")
    command = [ruff] if shutil.which(ruff) else [sys.executable, "-m", "ruff"]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=ROOT)


def test_ruff_lint_is_clean() -> None:
    result = _ruff("check", "gpushop_tui", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = _ruff("format", "--check", "gpushop_tui", "tests")
    assert result.returncode == 0, result.stdout + result.stderr
