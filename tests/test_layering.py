"""DESIGN.md §1: faces → core → edges → base, imports point down only; sim sees only the base.

And the faces call the façade and nothing below it: a face (the CLI, the API, the TUI and their
face-level helpers) imports `gpushop_tui.core` — the package, never one of its submodules — the
base modules and its own modules; never an edge (providers, node, store, secrets) or the
simulator (only `demo` may, for `--demo`). It uses only the public members of `Shopper`: no
private attribute, nothing the façade does not publish; and the cockpit and the commands, which
may be talking to a `RemoteShopper`, only what the `Facade` protocol declares.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import gpushop_tui
from gpushop_tui.core import Facade, Shopper
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


# ------------------------------------------------------------------ the façade rule

BASE = {"", "models", "errors", "config", "query", "clock", "core"}
"""What every face may import: the package root (its version), the base layer, the façade."""
FACES: dict[str, set[str]] = {
    "cli": {"cli", "tui.app", "api.serve", "api.tokens", "logs", "demo"},
    "api": {"api", "logs"},
    "tui": {"tui", "demo", "logs"},
    "demo": {"sim"},
    "logs": set(),
    "__main__": {"cli"},
}
"""Each face's own modules (and the other faces' entry points that `gpushop` launches)."""


def _face(rel: Path) -> str | None:
    head = rel.parts[0].removesuffix(".py")
    return head if head in FACES else None


def _allowed(target: str, face: str) -> bool:
    if target in BASE:
        return True
    return any(target == own or target.startswith(f"{own}.") for own in FACES[face] | {face})


def _imports(tree: ast.AST, rel: Path, root: Path) -> list[tuple[int, str]]:
    """(line, dotted module under the package) for every import of our own package.

    `from X import name` counts as importing `X.name` where that is a module, else `X`; the
    package root stands for `""` (its version), and `core`'s exports for `core` itself.
    """
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parent = list(rel.parent.parts)
                base = parent[: len(parent) - (node.level - 1)]
                parts = [*base, *(node.module or "").split(".")]
            elif (node.module or "").split(".")[0] == root.name:
                parts = (node.module or "").split(".")[1:]
            else:
                continue
            module = ".".join(p for p in parts if p)
            folder = root.joinpath(*module.split(".")) if module else root
            for alias in node.names:
                submodule = (folder / alias.name).is_dir() or (
                    folder / f"{alias.name}.py"
                ).is_file()
                target = f"{module}.{alias.name}".strip(".") if submodule else module
                found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == root.name:
                    found.append((node.lineno, alias.name.removeprefix(root.name).lstrip(".")))
    return found


def _public_members() -> set[str]:
    """What `Shopper` publishes: its public methods, properties and attributes."""
    members = {name for name in dir(Shopper) if not name.startswith("_")}
    cls = ast.parse(textwrap.dedent(inspect.getsource(Shopper)))
    init = next(
        node
        for node in ast.walk(cls)
        if isinstance(node, ast.FunctionDef) and node.name == "__init__"
    )
    members |= {
        node.attr
        for node in ast.walk(init)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and not node.attr.startswith("_")
    }
    return members


def _shopper_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, attribute) for every `<...>shopper.attribute` in a module."""
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = node.value
            name = (
                owner.id
                if isinstance(owner, ast.Name)
                else owner.attr
                if isinstance(owner, ast.Attribute)
                else None
            )
            if name == "shopper":
                uses.append((node.lineno, node.attr))
    return uses


def _facade_members() -> set[str]:
    """What the `Facade` protocol declares: all the cockpit and the commands may call, since
    they may be talking to a `RemoteShopper`."""
    return {name for name in dir(Facade) if not name.startswith("_")} | set(Facade.__annotations__)


REMOTE_CAPABLE = ("cli", "tui", "__main__")
"""The faces that run against either implementation of the façade (the API is the server)."""


def facade_breaches(root: Path) -> list[str]:
    """Every face import below the façade, and every use of Shopper beyond what it publishes
    (beyond what `Facade` declares, for the faces that may be remote)."""
    problems = []
    public = _public_members()
    declared = _facade_members()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        face = _face(rel)
        if face is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, module in _imports(tree, rel, root):
            if not _allowed(module, face):
                problems.append(f"{rel}:{line}: {face} imports {module or root.name}")
        for line, attr in _shopper_uses(tree):
            if attr not in public:
                problems.append(f"{rel}:{line}: {face} reaches Shopper.{attr}")
            elif face in REMOTE_CAPABLE and attr not in declared:
                problems.append(f"{rel}:{line}: {face} calls {attr}, which Facade does not declare")
    return problems


def test_faces_call_the_facade_and_nothing_below_it() -> None:
    assert facade_breaches(PACKAGE) == []


def test_the_rule_catches_a_face_reaching_below_the_facade(tmp_path: Path) -> None:
    fake = tmp_path / "gpushop_tui"
    for folder in ("tui", "api", "cli", "core"):
        (fake / folder).mkdir(parents=True)
    (fake / "tui" / "pane.py").write_text(
        "from gpushop_tui.core.costs import cost_of\n"
        "from gpushop_tui.core import Shopper\n"
        "from gpushop_tui.models import Offer\n"
        "from gpushop_tui.tui import fmt\n"
        "async def f(shopper):\n"
        "    await shopper._store.list_audit()\n"
        "    await shopper.lifecycle.provision(1)\n"
        "    await shopper.provision(1)\n"
        "    shopper.process_name\n"
    )
    (fake / "api" / "app.py").write_text(
        "from gpushop_tui.providers.base import ProviderError\nfrom ..tui import app\n"
        "shopper.process_name\n"
    )
    (fake / "cli" / "rent.py").write_text(
        "import gpushop_tui.secrets\nfrom gpushop_tui.api import ops\nfrom . import output\n"
    )
    (fake / "core" / "shopper.py").write_text("from gpushop_tui.store import Store\n")
    (fake / "tui" / "app.py").write_text("")
    assert set(facade_breaches(fake)) == {
        "tui/pane.py:1: tui imports core.costs",
        "tui/pane.py:6: tui reaches Shopper._store",
        "tui/pane.py:7: tui reaches Shopper.lifecycle",
        "tui/pane.py:9: tui calls process_name, which Facade does not declare",
        "api/app.py:1: api imports providers.base",
        "api/app.py:2: api imports tui.app",
        "cli/rent.py:1: cli imports secrets",
        "cli/rent.py:2: cli imports api",
    }


def test_the_facade_exports_resolve_and_match_their_typed_imports() -> None:
    """Every lazily exported name loads, and the type checker sees the same name and home."""
    from gpushop_tui import core

    tree = ast.parse((PACKAGE / "core" / "__init__.py").read_text(encoding="utf-8"))
    typed = {
        alias.asname or alias.name: (node.module.removeprefix("gpushop_tui."), alias.name)
        for guard in tree.body
        if isinstance(guard, ast.If)
        for node in guard.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    assert typed == core._EXPORTS
    assert sorted(core.__all__) == sorted(typed)
    for name in core.__all__:
        assert getattr(core, name) is not None
