"""The API package's own import graph: no module imports one that imports it back."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import gpushop_tui.api

PACKAGE = "gpushop_tui.api"
ROOT = Path(gpushop_tui.api.__file__).parent


def _module_name(path: Path) -> str:
    return PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"


def _imported(tree: ast.AST, modules: set[str], here: str) -> set[str]:
    """The package's modules that `tree` imports anywhere (function bodies included).

    `from gpushop_tui.api import health` counts as importing `gpushop_tui.api.health`; the
    package is flat, so only a one-dot relative import (`from . import x`, `from .x import y`)
    can name one of its modules.
    """
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:  # above the package
                continue
            if node.level:
                base = ".".join(filter(None, (PACKAGE, node.module)))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return (found & modules) - {here}


def _import_graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in ROOT.glob("*.py")}
    modules = set(paths)
    return {
        name: _imported(ast.parse(path.read_text(encoding="utf-8")), modules, name)
        for name, path in paths.items()
    }


def test_the_import_graph_sees_the_routers() -> None:
    graph = _import_graph()
    assert f"{PACKAGE}.sessions" in graph[f"{PACKAGE}.app"]
    assert f"{PACKAGE}.deps" in graph[f"{PACKAGE}.sessions"]


def test_the_api_package_has_no_import_cycle() -> None:
    try:
        tuple(TopologicalSorter(_import_graph()).static_order())
    except CycleError as err:
        raise AssertionError(f"import cycle in {PACKAGE}: {' -> '.join(err.args[1])}") from None
