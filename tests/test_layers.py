"""Layers point one way: mlpgraph imports neither distill nor searcher; distill not searcher."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"mlpgraph": {"distill", "searcher"}, "distill": {"searcher"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_direction(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        hit = _imports(path) & FORBIDDEN[package]
        if hit:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(hit)}")
    assert not bad, bad


PACKAGES = ("mlpgraph", "distill", "searcher")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST, name: str, is_package: bool, known: set[str]) -> list[str]:
    """The project modules an import statement loads (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    return [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
            for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its source (top level, inside
    functions, under TYPE_CHECKING): every import is a dependency."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    known = set(files)
    graph: dict[str, set[str]] = {m: set() for m in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for target in _targets(node, name, path.name == "__init__.py", known):
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def test_import_graph_reference():
    """The cycle finder on a small hand-made graph (the plain reference)."""
    import networkx as nx

    g = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])
    assert [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1] == \
        [["a", "b", "c"]]


def test_no_import_cycles():
    import networkx as nx

    graph = import_graph()
    assert "mlpgraph.ir" in graph["mlpgraph.parser"]  # the graph sees ordinary imports
    g = nx.DiGraph([(a, b) for a, deps in graph.items() for b in deps])
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not cycles, f"import cycles (function-level imports count): {cycles}"


def test_search_enters_distill_through_its_front_door():
    """``searcher`` imports ``distill`` (its ``__init__``, a curated ``__all__``) and never a
    module inside it; every name it takes from there is exported."""
    import distill

    bad = []
    for path in sorted((ROOT / "searcher").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                bad += [f"{path.name}: import {a.name}" for a in node.names
                        if a.name.startswith("distill.")]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.startswith("distill."):
                    bad.append(f"{path.name}: from {node.module} import ...")
                elif node.module == "distill":
                    bad += [f"{path.name}: distill.{a.name} is not in distill.__all__"
                            for a in node.names if a.name not in distill.__all__]
    assert not bad, bad


def test_no_eval_or_exec_of_user_text():
    for path in sorted(ROOT.glob("*/**/*.py")):
        if ".venv" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec"), f"{path}: {node.func.id}()"


def test_front_door_names_are_what_they_declare():
    """Every exported name resolves to the object its module defines, also after every
    submodule is imported (a submodule named like an export would shadow it)."""
    import importlib
    import pkgutil

    import distill

    for info in pkgutil.iter_modules(distill.__path__):
        importlib.import_module(f"distill.{info.name}")
    for name in distill.__all__:
        module = distill._EXPORTS[name]
        want = importlib.import_module(f"distill.{module or name}")
        assert getattr(distill, name) is (getattr(want, name) if module else want), name
