"""mlpgraph.exported: save / load round trip, and hostile files refused without running code.

Each hostile file is checked twice: ``load_exported`` refuses it and its payload did not run
(no marker file), and ``torch.export.load`` on the very same file does run it (the marker
appears), so the file really is hostile and the test can fail.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import mlpgraph
from mlpgraph.compiler import compile_graph
from mlpgraph.errors import BackendError, SerializationError, UnsafeFileError
from mlpgraph.exported import FORMAT, load_exported, pickled_member, save_exported
from tests.conftest import GLU_EXPRESSIONS, PAPER_EXPRESSIONS

D, K = 12, 8
SHAPES = [(), (3,), (2, 5)]


def _supernet(d: int, k: int) -> dict[str, torch.nn.Linear]:
    torch.manual_seed(0)
    return {"W1": torch.nn.Linear(d, k), "W2": torch.nn.Linear(k, d)}


@pytest.mark.parametrize("expr, kw", [
    (PAPER_EXPRESSIONS[4], {"weights": _supernet(D, 30)}),  # borrowed from a supernet
    (GLU_EXPRESSIONS[0], {"seed": 1, "bias": False}),  # three linears, no biases
])
def test_export_save_load(tmp_path, expr, kw) -> None:
    m = compile_graph(expr, D, K, "export", **kw)
    path = save_exported(m, tmp_path / "l5.safetensors")
    assert path.read_bytes()[:1] not in (b"\x80", b"P")  # neither a pickle nor a zip
    loaded = load_exported(path)
    names = {f"{n}.{p}" for n in m.mlp_graph.linears
             for p in (("weight", "bias") if kw.get("bias", True) else ("weight",))}
    assert set(loaded.state_dict()) == names
    assert str(loaded.mlp_graph) == str(m.mlp_graph)
    assert (loaded.d_model, loaded.d_inner) == (D, K)
    for lead in SHAPES:
        x = torch.randn(*lead, D)
        torch.testing.assert_close(loaded(x), m(x))
        assert loaded(x).shape == (*lead, D)
    with pytest.raises(BackendError, match="made by mlpgraph.compile"):
        save_exported(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")


# ------------------------------------------------------------------ hostile files
class _Touch:
    """Unpickling this creates ``path`` (any code could run in its place)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _torch_archive(example_inputs: bool) -> dict[str, bytes]:
    """The members of a genuine ``torch.export.save`` archive of a small MLP (what
    ``save_exported`` wrote before, with ``example_inputs``: torch's default)."""
    own = compile_graph("W2(gelu(W1(x)))", D, K, "eager", seed=0)
    ep = torch.export.export(own, (torch.zeros(2, D),),
                             dynamic_shapes=({0: torch.export.Dim("tokens", min=1)},))
    if not example_inputs:
        ep.example_inputs = None
    buf = io.BytesIO()
    torch.export.save(ep, buf, extra_files={"mlpgraph.json": "{}"})
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return {i.filename: z.read(i.filename) for i in z.infolist()}


def _member(members: dict[str, bytes], suffix: str) -> str:
    return next(n for n in members if n.endswith(suffix))


def _pickled_weight(marker: Path) -> tuple[dict[str, bytes], str]:
    members = _torch_archive(example_inputs=False)
    cfg_name = _member(members, "model_weights_config.json")
    cfg = json.loads(members[cfg_name])
    entry = cfg["config"]["W1.weight"]
    entry["use_pickle"] = True
    members[cfg_name] = json.dumps(cfg).encode()
    weight = _member(members, f"data/weights/{entry['path_name']}")
    members[weight] = pickle.dumps(_Touch(marker))
    return members, weight


def _pickled_inputs(marker: Path) -> tuple[dict[str, bytes], str]:
    # torch tries weights_only=True on the sample inputs and falls back to weights_only=False
    members = _torch_archive(example_inputs=True)
    name = _member(members, "data/sample_inputs/model.pt")
    buf = io.BytesIO()
    torch.save(_Touch(marker), buf)
    members[name] = buf.getvalue()
    return members, name


def _sympy_expression(marker: Path) -> tuple[dict[str, bytes], str]:
    # no pickle at all: torch.export.load evaluates shape expressions with sympy.sympify
    members = _torch_archive(example_inputs=False)
    name = _member(members, "models/model.json")
    code = f"(__import__('builtins').open({str(marker)!r}, 'w') and 1) * Symbol("
    text = members[name].decode()
    assert '"expr_str": "Symbol(' in text
    members[name] = text.replace('"expr_str": "Symbol(',
                                 '"expr_str": ' + json.dumps(code)[:-1], 1).encode()
    return members, "sympy.sympify"


def _write_zip(members: dict[str, bytes], path: Path) -> Path:
    path.write_bytes(_zip_bytes(members))
    return path


@pytest.mark.parametrize("craft", [_pickled_weight, _pickled_inputs, _sympy_expression])
def test_hostile_torch_archive_is_refused_unread(tmp_path, craft) -> None:
    marker = tmp_path / "ran"
    members, named = craft(marker)
    path = _write_zip(members, tmp_path / "evil.pt2")
    with pytest.raises(UnsafeFileError) as err:
        load_exported(path)
    assert isinstance(err.value, ValueError)
    assert str(path) in str(err.value) and named in str(err.value)
    assert "refused" in str(err.value)
    assert not marker.exists()
    with contextlib.suppress(Exception):  # torch may fail after the payload ran, or not
        torch.export.load(path)
    assert marker.exists(), "the crafted file is not hostile: the test proves nothing"


def test_pickled_member_against_a_plain_reference() -> None:
    plain = _torch_archive(example_inputs=False)
    assert pickled_member(_zip_bytes(plain)) is None
    default = _torch_archive(example_inputs=True)  # torch.export.save's default
    name, why = pickled_member(_zip_bytes(default))
    assert name.endswith("data/sample_inputs/model.pt") and "data.pkl" in why
    assert pickled_member(_zip_bytes({"a/b.pkl": b"x"})) == ("a/b.pkl", "is a .pkl file (a pickle)")
    name, why = pickled_member(_zip_bytes({"a/w": pickle.dumps(1)}))
    assert name == "a/w" and "0x80" in why


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_other_bad_files_are_named(tmp_path) -> None:
    marker = tmp_path / "ran"
    pkl = tmp_path / "model.bin"
    pkl.write_bytes(pickle.dumps(_Touch(marker)))
    with pytest.raises(UnsafeFileError, match="is a pickle .*0x80"):
        load_exported(pkl)
    assert not marker.exists()
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    with pytest.raises(SerializationError, match="junk.safetensors is not a file written by "
                                                 "save_exported"):
        load_exported(junk)
    bare = tmp_path / "bare.safetensors"
    save_file({"W1.weight": torch.zeros(K, D)}, bare)
    with pytest.raises(SerializationError, match="no 'mlpgraph' metadata"):
        load_exported(bare)
    g = mlpgraph.parse("W2(gelu(W1(x)))")
    cases = [({"format": "other/1"}, "is not 'mlpgraph.exported/2'"),
             ({"format": FORMAT, "graph": g.to_json(), "d_model": 0, "d_inner": K},
              "d_model=0 must be a positive integer"),
             ({"format": FORMAT, "graph": '[["x",null,"d",[]],["linear","W1","k",[0]]]',
               "d_model": D, "d_inner": K}, "graph: .*must map d -> d"),
             ({"format": FORMAT, "graph": g.to_json(), "d_model": D, "d_inner": K},
              r"missing \['W2.weight'\]"),
             ({"format": FORMAT, "graph": "W1(x)", "d_model": D, "d_inner": K},
              "graph: not JSON")]
    for meta, message in cases:
        path = tmp_path / "m.safetensors"
        save_file({"W1.weight": torch.zeros(K, D)}, path, metadata={"mlpgraph": json.dumps(meta)})
        with pytest.raises(SerializationError, match=message):
            load_exported(path)
    meta = {"format": FORMAT, "graph": g.to_json(), "d_model": D, "d_inner": K}
    for k in (K - 1, K + 1):  # a larger tensor too: a file holds exactly the layer's weights
        wrong = {"W1.weight": torch.zeros(k, D), "W2.weight": torch.zeros(D, K)}
        save_file(wrong, path, metadata={"mlpgraph": json.dumps(meta)})
        with pytest.raises(SerializationError, match=rf"m.safetensors: tensor W1.weight has "
                                                     rf"shape \({k}, {D}\).* needs \({K}, {D}\)"):
            load_exported(path)
