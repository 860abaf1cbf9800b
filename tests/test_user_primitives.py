"""User primitives: loaded from a file of their own (by path and by module name), digested,
added to a space, accepted by its rules; the digest is the same in a fresh process and
changes when the definition changes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import mlpgraph
from mlpgraph import PAPER_SPACE, PrimitiveError, SpaceError, resolve_space
from mlpgraph.plugins import module_name_for_file

ROOT = Path(__file__).resolve().parents[1]

# bent identity: (sqrt(a^2 + 1) - 1) / 2 + a (smooth, monotone, unbounded)
PRIM_FILE = textwrap.dedent('''
    import sympy
    import torch

    from mlpgraph import primitive


    @primitive(sympy=lambda a: (sympy.sqrt(a ** 2 + 1) - 1) / 2 + a, tags={"activation"},
               monotone=True, flops=5)
    def bentid(a):
        return (torch.sqrt(a * a + 1) - 1) / 2 + a


    @primitive(sympy=lambda a, b: a * sympy.tanh(b), flops=3)
    def gate_tanh(a, b):
        return a * torch.tanh(b)
''')


@pytest.fixture(scope="module")
def prim_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("userprims") / "my_prims.py"
    path.write_text(PRIM_FILE)
    return path


@pytest.fixture(scope="module")
def loaded(prim_file: Path) -> list[mlpgraph.Primitive]:
    return mlpgraph.load_primitives([str(prim_file)])


def _digests_in_subprocess(path: Path) -> dict[str, str]:
    code = ("import json, sys, mlpgraph; prims = mlpgraph.load_primitives([sys.argv[1]]); "
            "print(json.dumps({p.name: mlpgraph.primitive_digest(p) for p in prims}))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_load_by_path_registers_and_returns_the_files_primitives(loaded, prim_file) -> None:
    assert [p.name for p in loaded] == ["bentid", "gate_tanh"]
    assert [p.arity for p in loaded] == [1, 2]
    assert mlpgraph.get_primitive("bentid") is loaded[0]
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    assert torch.allclose(loaded[0](x), (torch.sqrt(x * x + 1) - 1) / 2 + x)
    # imported once: loading again runs nothing new and returns the same primitives
    again = mlpgraph.load_primitives([str(prim_file), str(prim_file)])
    assert again == loaded
    assert sys.modules[module_name_for_file(prim_file)].bentid is loaded[0]


def test_load_by_module_name(loaded, prim_file, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = prim_file.parent / "userpkg_h5"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ops.py").write_text(PRIM_FILE.replace("def bentid", "def bentid2")
                                .replace("def gate_tanh", "def gate_tanh2"))
    monkeypatch.syspath_prepend(str(prim_file.parent))
    prims = mlpgraph.load_primitives(["userpkg_h5.ops"])
    assert [p.name for p in prims] == ["bentid2", "gate_tanh2"]
    assert mlpgraph.load_primitives(["userpkg_h5.ops"]) == prims  # second import: no news


def test_bad_sources_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(PrimitiveError, match="not found"):
        mlpgraph.load_primitives([str(tmp_path / "absent.py")])
    with pytest.raises(PrimitiveError, match="cannot import"):
        mlpgraph.load_primitives(["no_such_module_h5"])
    empty = tmp_path / "nothing.py"
    empty.write_text("X = 1\n")
    with pytest.raises(PrimitiveError, match="registers no primitive"):
        mlpgraph.load_primitives([str(empty)])
    broken = tmp_path / "broken_decl.py"  # the sympy meaning disagrees with the torch code
    broken.write_text("import sympy, torch\nfrom mlpgraph import primitive\n"
                      "@primitive(sympy=lambda a: a * 3)\ndef tripled_wrong(a):\n"
                      "    return a * 2\n")
    with pytest.raises(PrimitiveError, match="broken_decl.py.*check 'sympy'"):
        mlpgraph.load_primitives([str(broken)])
    assert "tripled_wrong" not in mlpgraph.REGISTRY


def test_space_extension_and_the_pipeline_form(loaded) -> None:
    space = PAPER_SPACE.extend(["bentid", "gate_tanh"])
    assert space.unary == (*PAPER_SPACE.unary, "bentid")
    assert space.binary == (*PAPER_SPACE.binary, "gate_tanh")
    assert space.name == "paper+bentid+gate_tanh"
    g = mlpgraph.parse("W2(bentid(W1(x)))")
    assert space.violations(g) == []
    assert PAPER_SPACE.violations(g) == ["ops-allowed: primitives ['bentid'] are not in this "
                                         "space"]
    g2 = mlpgraph.parse("W2(gate_tanh(W1(x), x))")
    assert space.contains(g2) and not PAPER_SPACE.contains(g2)
    assert PAPER_SPACE.extend(["gelu"]).unary == PAPER_SPACE.unary  # already there: kept once
    resolved = resolve_space({"base": "paper", "add": ["bentid", "gate_tanh"]})
    assert resolved == space
    assert resolve_space("wide") is mlpgraph.WIDE_SPACE
    assert resolve_space(json.loads(space.to_json())) == space  # a full record round-trips
    with pytest.raises(PrimitiveError, match="did you mean bentid"):
        PAPER_SPACE.extend(["bentidd"])
    with pytest.raises(SpaceError, match="did you mean paper"):
        resolve_space("papr")
    with pytest.raises(SpaceError, match="list of primitive names"):
        resolve_space({"base": "paper", "add": "bentid"})
    with pytest.raises(SpaceError, match="got keys"):
        resolve_space({"base": "paper", "extra": 1})


def test_digest_is_stable_across_processes_and_follows_the_definition(
        loaded, prim_file: Path, tmp_path: Path) -> None:
    mine = {p.name: mlpgraph.primitive_digest(p) for p in loaded}
    assert len(set(mine.values())) == 2 and all(len(d) == 64 for d in mine.values())
    assert _digests_in_subprocess(prim_file) == mine
    changed = tmp_path / "my_prims.py"  # same names, bentid's torch code rewritten
    changed.write_text(PRIM_FILE.replace("(torch.sqrt(a * a + 1) - 1) / 2 + a",
                                         "a + (torch.sqrt(1 + a * a) - 1) / 2"))
    theirs = _digests_in_subprocess(changed)
    assert theirs["bentid"] != mine["bentid"]
    assert theirs["gate_tanh"] == mine["gate_tanh"]  # untouched definition, same digest


def test_builtin_digests_differ() -> None:
    names = ["gelu", "relu", "add", "mul", "tanh"]
    digests = [mlpgraph.primitive_digest(mlpgraph.get_primitive(n)) for n in names]
    assert len(set(digests)) == len(names)


def test_a_primitive_file_is_a_plugin_of_the_pipeline(loaded, prim_file: Path) -> None:
    """The pipeline's ``plugins`` (``primitives`` in pipelines written before) load a primitive
    file; the search records the digest of each primitive it declares."""
    from searcher.plugins import plugin_primitives
    from searcher.run_config import Pipeline

    space = {"base": "paper", "add": ["bentid", "gate_tanh"]}
    new = Pipeline.load({"plugins": [str(prim_file)], "space": space})
    old = Pipeline.load({"primitives": [str(prim_file)], "space": space})
    assert new == old and new.plugins == (str(prim_file),)
    assert plugin_primitives(new.plugins) == {p.name: mlpgraph.primitive_digest(p)
                                              for p in loaded}
