"""DESIGN.md §1: faces → core → edges → base, imports point down only; sim sees only the base."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import gpushop_tui
from tests.conftest import ROOT

PACKAGE = Path(gpushop_tui.__file__).parent
LAYERS: dict[str, int] = {
    **dict.fromkeys(("__init__", "models", "config", "clock", "errors", "query", "data"), 0),
    **dict.fromkeys(("store", "providers", "node", "secrets"), 1),
    "core": 2,
    **dict.fromkeys(("cli", "__main__", "logs", "demo", "tui", "api"), 3),
}
SIM = "sim"


def _layer_of(parts: list[str]) -> str:
    head = parts[0] if parts else "__init__"
    return head.removesuffix(".py")


def upward_imports(root: Path) -> list[str]:
    """Every import in the package under `root` that breaks the layering rule."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        rel = list(path.relative_to(root).parts)
        source = _layer_of(rel)
        if source != SIM and source not in LAYERS:
            problems.append(f"{'/'.join(rel)}: module '{source}' is in no layer; add it to LAYERS")
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[list[str]] = []
            if isinstance(node, ast.ImportFrom):
                module = [p for p in (node.module or "").split(".") if p]
                if node.level:
                    base = rel[:-1][: len(rel) - node.level] if node.level > 1 else rel[:-1]
                elif module and module[0] == root.name:
                    base, module = [], module[1:]
                else:
                    continue
                if base + module:
                    targets.append(base + module)
                else:
                    targets += [
                        [alias.name]
                        if (root / alias.name).is_dir() or (root / f"{alias.name}.py").is_file()
                        else ["__init__"]
                        for alias in node.names
                    ]
            elif isinstance(node, ast.Import):
                targets += [
                    a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == root.name
                ]
            for target in targets:
                dest = _layer_of([p for p in target if p])
                where = f"{'/'.join(rel)}:{node.lineno}"
                if source == SIM and dest != SIM and LAYERS.get(dest, 9) > 0:
                    problems.append(f"{where}: the simulator imports {dest}")
                elif dest == SIM and source != SIM and LAYERS[source] < 3:
                    problems.append(f"{where}: {source} imports the simulator")
                elif source != SIM and dest != SIM and LAYERS.get(dest, 9) > LAYERS[source]:
                    problems.append(f"{where}: {source} imports {dest}, a higher layer")
    return problems


def test_imports_point_down_only() -> None:
    assert upward_imports(PACKAGE) == []


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    fake = tmp_path / "gpushop_tui"
    (fake / "store").mkdir(parents=True)
    (fake / "sim").mkdir()
    (fake / "models.py").write_text("from gpushop_tui.core import shopper\n")
    (fake / "store" / "db.py").write_text("from ..tui import app\nimport gpushop_tui.models\n")
    (fake / "sim" / "world.py").write_text("from gpushop_tui.providers import vastai\n")
    (fake / "core.py").write_text("from gpushop_tui import __version__, sim\n")
    (fake / "mystery.py").write_text("")
    assert set(upward_imports(fake)) == {
        "core.py:1: core imports the simulator",
        "models.py:1: models imports core, a higher layer",
        "mystery.py: module 'mystery' is in no layer; add it to LAYERS",
        "sim/world.py:1: the simulator imports providers",
        "store/db.py:1: store imports tui, a higher layer",
    }


def test_core_pulls_in_no_face_framework() -> None:
    code = (
        "import sys, gpushop_tui.core.shopper\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('textual', 'fastapi', 'starlette', 'uvicorn') "
        "or m.startswith(('gpushop_tui.tui', 'gpushop_tui.api', 'gpushop_tui.cli')))\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_api_stack_stays_out_of_the_tui_and_cli_import_path() -> None:
    """Only `gpushop --serve` loads FastAPI and Prometheus; the TUI and one-shots never pay."""
    probe = (
        "import sys, gpushop_tui.cli, gpushop_tui.tui.app\n"
        "from gpushop_tui import cli\n"
        "cli.build_parser()\n"
        "print(sorted(m for m in ('fastapi', 'prometheus_client', 'gpushop_tui.api') "
        "if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "[]"
