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


# The search (controllers, mutations, dedupe, budgets, journal, workers) reaches KD only
# through the scorer it is handed (distill.score.score, wrapped in searcher/run.py) and reads
# its one result record (distill.result); only the job's orchestration (prepare.py: teacher
# and caches, run.py: the job, warmup.py: supernet warm-up, final.py: the final comparison)
# uses KD directly.
SEARCH_MAY_USE = {"distill.config", "distill.student", "distill.errors", "distill.cli",
                  "distill.result", "distill.datafiles"}  # configs, records, the CLI's flags
ORCHESTRATION = {"prepare.py", "run.py", "warmup.py", "final.py"}


def _modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= ({f"{node.module}.{a.name}" for a in node.names} if node.module == "distill"
                    else {node.module})
    return {m for m in out if m.startswith("distill")}


def test_search_reaches_kd_only_through_the_scorer():
    bad = []
    for path in sorted((ROOT / "searcher").glob("*.py")):
        if path.name in ORCHESTRATION:
            continue
        extra = _modules(path) - SEARCH_MAY_USE
        if extra:
            bad.append(f"searcher/{path.name} imports {sorted(extra)}")
    assert not bad, bad
    assert "distill.score" in _modules(ROOT / "searcher" / "run.py")


def test_no_eval_or_exec_of_user_text():
    for path in sorted(ROOT.glob("*/**/*.py")):
        if ".venv" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec"), f"{path}: {node.func.id}()"
