"""Drawings: networkx round trip, DOT/Mermaid text, SVG/PNG files (both engines) and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matplotlib.image import imread

import mlpgraph
from mlpgraph import drawing, viz
from mlpgraph.errors import SerializationError
from mlpgraph.gen import random_graph
from mlpgraph.graph import Graph

BRIEF = ["W2(gelu(W1(max(x, tanh(x)))))", "W2(relu(W1(x) * x))", "tanh(W2(gelu(W1(x))))",
         "W3(silu(W1(x)) * W2(x))"]
EDGE_CASES = ["x", "W2(W1(x) * W1(x))", "W1[d](x) - x + W1[d](tanh(W1[d](x)))",
              "W2(fill[k](0.5) * W1(x) - 2.0)", "W1(W2(x) + narrow(x))"]
SIX = [("L1", "tanh(W2(gelu(W1(x))))", 270), ("L2", "elu(W2(gelu(W1(x))))", 540),
       ("L3", "sigmoid(W2(relu(W1(x))))", 270), ("L4", "W2(gelu(W1(max(x, tanh(x)))))", 270),
       ("L5", "W2(relu(W1(x) * x))", 270), ("L6", "leaky_relu(W2(gelu(W1(x))))", 180)]
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed "
                               "(apt-get install graphviz); the matplotlib engine is tested")
ENGINES = ["matplotlib", pytest.param("graphviz", marks=needs_dot)]


def svg_texts(path: Path) -> list[str]:
    """Every <text> string in an SVG file (which must be well-formed XML)."""
    root = ET.parse(path).getroot()
    return ["".join(el.itertext()).strip() for el in root.iter() if el.tag.endswith("text")]


def label_lines(graph: Graph, d_model: int | None = None, d_inner: int | None = None) -> set[str]:
    return {line for n in graph.nodes for line in viz.node_label(n, d_model, d_inner).split("\n")}


# ------------------------------------------------------------------ networkx
@pytest.mark.parametrize("text", BRIEF + EDGE_CASES)
def test_networkx_round_trip(text: str) -> None:
    g = mlpgraph.parse(text)
    nxg = viz.to_networkx(g)
    assert list(nxg.nodes) == list(range(len(g.nodes)))
    assert nxg.graph["root"] == len(g.nodes) - 1 and nxg.out_degree(len(g.nodes) - 1) == 0
    assert viz.from_networkx(nxg) == g


def test_networkx_attributes_and_repeated_operand() -> None:
    g = mlpgraph.parse("W2(W1(x) * W1(x))")
    nxg = viz.to_networkx(g)
    ops = [(d["op"], d["arg"], d["width"]) for _, d in nxg.nodes(data=True)]
    assert ops == [("x", None, "d"), ("linear", "W1", "k"), ("prim", "mul", "k"),
                   ("linear", "W2", "d")]
    assert nxg.edges[1, 2]["indices"] == (0, 1) and nxg.edges[1, 2]["index"] == 0
    assert nxg.nodes[1]["label"] == "W1\nd → k"


def test_paper_round_trip(paper_expr: str) -> None:
    g = mlpgraph.parse(paper_expr)
    assert viz.from_networkx(viz.to_networkx(g)) == g


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(0, 25))
def test_random_round_trip_and_layout(rng: random.Random, steps: int) -> None:
    g = random_graph(rng, steps)
    assert viz.from_networkx(viz.to_networkx(g)) == g
    panel = viz.dag_panels(g)[0]
    boxes, routes = drawing.layout(panel, "up")
    rows: dict[int, list] = {}
    for b in boxes:
        rows.setdefault(b.layer, []).append(b)
    for row in rows.values():  # boxes of one row never overlap
        row.sort(key=lambda b: b.x)
        assert all(a.x + a.w / 2 < b.x - b.w / 2 for a, b in zip(row, row[1:], strict=False))
    assert len(routes) == sum(len(n.src) for n in g.nodes)
    index = {id(n): i for i, n in enumerate(g.nodes)}
    arrivals: dict[int, list] = {}
    slots = [(i, index[id(s)], pos) for i, n in enumerate(g.nodes) for pos, s in enumerate(n.src)]
    for r, (i, j, pos) in zip(routes, slots, strict=True):
        lo, hi = boxes[j], boxes[i]
        assert r.chain[0] == j and r.chain[-1] == i
        assert lo.y < hi.y and r.verts[0][1] == lo.y + lo.h / 2  # up: top of the operand...
        assert r.end[1] == hi.y - hi.h / 2 and abs(r.end[0] - hi.x) < hi.w / 2  # ...to user
        assert len(r.chain) == hi.layer - lo.layer + 1  # one bend per row crossed
        arrivals.setdefault(i, []).append((pos, r.end[0]))
    for i, ends in arrivals.items():  # numbered operands arrive left to right in order
        if viz._ordered(g.nodes[i]):
            assert [x for _, x in sorted(ends)] == sorted(x for _, x in ends)


def fingerprint() -> str:
    """A hash of DOT, Mermaid and matplotlib SVG of a GLU and a 30-step random graph."""
    gs = [mlpgraph.parse("W3(silu(W1(x)) * W2(x))"), random_graph(random.Random(7), 30)]
    out = [viz.to_dot(gs), viz.to_mermaid(gs)]
    with tempfile.TemporaryDirectory() as d:
        for g in gs:
            out.append(viz.render(g, Path(d) / "g.svg", engine="matplotlib").read_text())
    return hashlib.sha256("\0".join(out).encode()).hexdigest()


def test_text_and_svg_are_identical_across_processes() -> None:
    """Another process, with another hash seed (so other set orders of strings and other
    object addresses), writes byte-identical DOT, Mermaid and matplotlib SVG."""
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    code = "import test_viz; print(test_viz.fingerprint())"
    here = Path(__file__).parent
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=here.parent, env={
                               **os.environ, "PYTHONHASHSEED": seed,
                               "PYTHONPATH": os.pathsep.join([str(here), str(here.parent),
                                                              os.environ.get("PYTHONPATH", "")])})
    assert other.stdout.strip() == fingerprint()


@pytest.mark.parametrize("seed", range(40))
def test_dot_and_mermaid_edges_are_the_operands(seed: int) -> None:
    """Every operand slot is one edge user -> operand in DOT and operand --> user in
    Mermaid, numbered exactly when the op is not commutative."""
    g = random_graph(random.Random(seed), 30)
    index = {id(n): i for i, n in enumerate(g.nodes)}
    want = sorted((i, index[id(s)], pos + 1 if viz._ordered(n) else None)
                  for i, n in enumerate(g.nodes) for pos, s in enumerate(n.src))
    dot = re.findall(r"g0n(\d+) -> g0n(\d+)(?: \[taillabel=\"(\d)\")?", viz.to_dot(g))
    assert sorted((int(a), int(b), int(k) if k else None) for a, b, k in dot) == want
    mmd = re.findall(r"g0n(\d+) -->(?:\|(\d)\|)? g0n(\d+)", viz.to_mermaid(g))
    assert sorted((int(b), int(a), int(k) if k else None) for a, k, b in mmd) == want


def _nx(text: str = "W2(relu(W1(x) * x))") -> nx.DiGraph:
    return viz.to_networkx(mlpgraph.parse(text))


def _cycle() -> nx.DiGraph:
    g = _nx()
    g.add_edge(6, 0, index=0)
    return g


def _two_roots() -> nx.DiGraph:
    g = _nx()
    g.add_node(99, op="x", arg=None, width="d")
    return g


def _edit(fn) -> nx.DiGraph:
    g = _nx()
    fn(g)
    return g


@pytest.mark.parametrize("bad, message", [
    (nx.Graph(), "expected a networkx.DiGraph"),
    (nx.DiGraph(), "no nodes"),
    (_cycle(), "cycle"),
    (_two_roots(), "2 output nodes"),
    (_edit(lambda g: g.edges[0, 1].clear()), "edge 0 -> 1 has no operand position"),
    (_edit(lambda g: g.nodes[5].update(op="prime")), "op='prime'"),
    (_edit(lambda g: g.nodes[5].update(arg="nope")), "unknown primitive 'nope'"),
    (_edit(lambda g: g.nodes[5].update(width="k")), "says width='k'"),
    (_edit(lambda g: g.edges[3, 4].update(indices=(2,))), "operand positions [0, 2]"),
    (_edit(lambda g: g.edges[3, 4].update(indices=(0,))), "repeated operand position 0"),
    (_edit(lambda g: g.nodes[1].update(arg=3)), "bad arg 3"),
    (_edit(lambda g: g.remove_node(6)), "root node 5"),
])
def test_from_networkx_errors(bad: nx.DiGraph, message: str) -> None:
    with pytest.raises(SerializationError) as e:
        viz.from_networkx(bad)
    assert message in str(e.value)


# --------------------------------------------------------------- DOT/Mermaid
def test_dot_and_mermaid_shared_node_drawn_once() -> None:
    g = mlpgraph.parse("W2(gelu(W1(max(x, tanh(x)))))")  # x feeds tanh and max
    dot, mmd = viz.to_dot(g), viz.to_mermaid(g)
    assert dot.count('g0n0 [label="x\\nd"') == 1
    assert len(re.findall(r"-> g0n0\b", dot)) == 2  # edges are written user -> operand
    assert mmd.count('g0n0["x<br/>d"]') == 1
    assert len(re.findall(r"^\s*g0n0 --> ", mmd, flags=re.M)) == 2
    assert "mlp_linear" in mmd and dot == viz.to_dot(mlpgraph.parse(str(g)))


def test_operand_order_and_narrow_are_visible() -> None:
    g = mlpgraph.parse("W2(W1(x) - x)")  # sub is not commutative; W1(x) - x needs narrow
    dot, mmd = viz.to_dot(g, 540, 270), viz.to_mermaid(g)
    assert 'taillabel="1"' in dot and 'taillabel="2"' in dot and "ordering=out" in dot
    assert "-->|1|" in mmd and "-->|2|" in mmd
    assert 'dashed' in dot and "stroke-dasharray" in mmd
    assert "narrow\\nk=270 → m=270" in dot and "W1\\nd=540 → k=270\\n146,070 params" in dot
    plain = viz.to_dot(mlpgraph.parse("W2(W1(x) * x)"))
    assert "taillabel" not in plain and ", ordering=out" not in plain  # mul commutes


def test_labels_are_escaped() -> None:
    g = mlpgraph.parse("W2(gelu(W1(x)))")
    title = 'say "hi" \\ <b> & #1 `x`\nline2'
    dot = viz.to_dot(g, title=title)
    assert 'label="say \\"hi\\" \\\\ <b> & #1 `x`\\nline2"' in dot
    mmd = viz.to_mermaid(g, title=title)
    assert 'subgraph g0 ["say #34;hi#34; \\ #60;b#62; #38; #35;1 #96;x#96;<br/>line2"]' in mmd


@needs_dot
def test_dot_text_is_accepted_by_graphviz(tmp_path: Path) -> None:
    g = mlpgraph.parse("W2(W1(x) - x)")
    title = 'q "a" \\ <b>&'
    run = subprocess.run(["dot", "-Tsvg"], input=viz.to_dot(g, 540, 270, title).encode(),
                         capture_output=True, check=True)
    (tmp_path / "t.svg").write_bytes(run.stdout)
    assert title in svg_texts(tmp_path / "t.svg")


def test_width_arguments_are_checked() -> None:
    g = mlpgraph.parse("W2(gelu(W1(x)))")
    with pytest.raises(ValueError, match="both d_model and d_inner"):
        viz.to_dot(g, d_model=540)
    with pytest.raises(ValueError, match="2 d_inner values for 1 graphs"):
        viz.to_dot(g, 540, [270, 180])
    with pytest.raises(ValueError, match="positive integer"):
        viz.to_mermaid(g, 0, 270)
    with pytest.raises(TypeError, match="item 0 is a str"):
        viz.to_dot(["W2(gelu(W1(x)))"])


# ------------------------------------------------------------------- render
@pytest.mark.parametrize("engine", ENGINES)
def test_svg_contains_every_label_and_title(engine: str, tmp_path: Path) -> None:
    pairs = [(name, mlpgraph.parse(e)) for name, e, _ in SIX]
    ks = [k for *_, k in SIX]
    out = viz.render(pairs, tmp_path / "six.svg", d_model=540, d_inner=ks, engine=engine)
    texts = set(svg_texts(out))
    for (name, g), k in zip(pairs, ks, strict=True):
        assert name in texts
        assert label_lines(g, 540, k) <= texts, label_lines(g, 540, k) - texts


@pytest.mark.parametrize("engine", ENGINES)
def test_png_and_svg_escaping(engine: str, tmp_path: Path) -> None:
    g = mlpgraph.parse("W2(relu(W1(x) * x))")
    png = viz.render(g, tmp_path / "relu.png", engine=engine)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(png)  # decodes the whole file
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100 and pixels.std() > 0
    title = 'a <b> & "$x_1$" \\ end'
    svg = viz.render([(title, g), ("second", g)], tmp_path / "t.svg", engine=engine)
    texts = svg_texts(svg)
    assert title in texts and "second" in texts and label_lines(g) <= set(texts)


def test_render_errors_and_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = mlpgraph.parse("W2(gelu(W1(x)))")
    with pytest.raises(ValueError, match="end the file name in one of .svg, .png, .pdf"):
        viz.render(g, tmp_path / "out.jpg")
    with pytest.raises(ValueError, match="unknown engine 'gv'"):
        viz.render(g, tmp_path / "out.svg", engine="gv")
    with pytest.raises(ValueError, match="got 1 titles for 2 graphs"):
        viz.render([g, g], tmp_path / "out.svg", titles=["one"])
    monkeypatch.setattr(drawing.shutil, "which", lambda name: None)  # as if dot were missing
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        viz.render(g, tmp_path / "out.svg", engine="graphviz")
    out = viz.render(g, tmp_path / "auto.svg")  # auto falls back to matplotlib
    assert "gelu" in svg_texts(out) and "matplotlib.org" in out.read_text()  # the engine's mark


# ---------------------------------------------------------------------- CLI
def run_cli(argv: list[str]) -> int:
    """The ``efficientbert`` command (its exit-code map) on ``show`` / ``render``."""
    from searcher.cli import main

    return main(argv)


def test_cli_show_formats(capsys: pytest.CaptureFixture[str]) -> None:
    expr = "W2(relu(W1(x) * x))"
    assert run_cli(["show", expr]) == 0
    assert capsys.readouterr().out == expr + "\n"
    assert run_cli(["show", expr, "--explicit", "--d-model", "540", "--d-inner", "270"]) == 0
    out = capsys.readouterr().out
    assert "narrow(x)" in out and "params: 292,410 (d_model=540, d_inner=270)" in out
    assert run_cli(["show", expr, "--format", "json", "--d-model", "540", "--d-inner", "270"]) == 0
    text = capsys.readouterr().out
    assert Graph.from_json(text) == mlpgraph.parse(expr) and json.loads(text)["params"] == 292410
    assert run_cli(["show", expr, "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith("digraph mlp {")
    assert run_cli(["show", expr, "--format", "mermaid"]) == 0
    assert capsys.readouterr().out.startswith("flowchart BT\n")


def test_cli_show_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["show", "W2(relu(W1(x) *"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "column" in err and "^" in err
    assert run_cli(["show", "W2(gelu(W1(x)))", "--d-model", "540"]) == 2
    assert "both --d-model and --d-inner" in capsys.readouterr().err


def test_cli_show_simplify(capsys: pytest.CaptureFixture[str]) -> None:
    simplify = pytest.importorskip("mlpgraph.simplify").simplify
    expr = "W2(relu(relu(W1(x))) + 0.0)"
    assert run_cli(["show", expr, "--simplify"]) == 0
    assert capsys.readouterr().out.strip() == str(simplify(mlpgraph.parse(expr)))


def test_cli_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "two.svg"
    argv = ["render", "tanh(W2(gelu(W1(x))))", "W2(relu(W1(x) * x))", "-o", str(out),
            "--titles", "first <1>", "second", "--d-model", "540", "--d-inner", "270", "180",
            "--engine", "matplotlib"]
    assert run_cli(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    texts = svg_texts(out)
    assert "first <1>" in texts and "second" in texts and "d=540, k=180: 195,120 params" in texts
    assert run_cli(["render", "W2(gelu(W1(x)))", "W2(", "-o", str(out)]) == 2
    assert "expression 2" in capsys.readouterr().err
    assert run_cli(["render", "W2(gelu(W1(x)))", "-o", str(tmp_path / "x.gif")]) == 2
    assert ".svg, .png, .pdf" in capsys.readouterr().err
    assert run_cli(["render", "W2(gelu(W1(x)))", "x", "-o", str(out), "--titles", "a"]) == 2
    assert "1 titles for 2 graphs" in capsys.readouterr().err


def test_node_kinds() -> None:
    g = mlpgraph.parse("W2(relu(W1(x) * x) + 1.0)")
    kinds = [viz.node_kind(n) for n in g.nodes]
    assert kinds[:4] == ["input", "linear", "narrow", "narrow"] and kinds[-1] == "linear"
    assert {"activation", "prim", "const"} <= set(kinds)
    assert all(viz.STYLE[k][2] == (k == "narrow") for k in viz.STYLE)  # only narrow is dashed
