"""mlpgraph.MLPLayer: JSON round trip, parameter counts against hand counts and real modules,
exact inner widths, and a LayerError naming the problem for each kind of bad input."""

from __future__ import annotations

import ast
import json
from fractions import Fraction
from pathlib import Path

import pytest
import torch

import mlpgraph
from mlpgraph import STANDARD_FFN, LayerError, MLPLayer, ParseError, parse, parse_ratio
from mlpgraph.compiler import compile_graph
from mlpgraph.cost import linear_shapes
from mlpgraph.gen import random_graphs
from mlpgraph.layer import graph_key, graph_text
from mlpgraph.paper import PAPER_D_MODEL, PAPER_LAYERS
from tests.conftest import GLU_EXPRESSIONS

ROOT = Path(__file__).resolve().parents[1]
NAMED = [MLPLayer.with_width(parse(e), s, k, PAPER_D_MODEL) for _, e, s, k in PAPER_LAYERS]
NAMED += [MLPLayer.of(STANDARD_FFN, 1, 4), MLPLayer.of(GLU_EXPRESSIONS[0], 2, "2/3"),
          MLPLayer.with_width(parse(STANDARD_FFN), 3, 517, 540)]  # denominator above 64
RANDOM = [MLPLayer(g, 1 + i % 4, Fraction(1 + i % 5, 1 + i % 7))
          for i, g in enumerate(random_graphs(7, 40))]
HIDDEN = (1, 7, 32, 128, 540)


def _round_trip(layer: MLPLayer) -> MLPLayer:
    return MLPLayer.from_dict(json.loads(json.dumps(layer.to_dict())))


@pytest.mark.parametrize("layer", NAMED + RANDOM, ids=lambda la: la.describe()[:40])
def test_json_round_trip(layer: MLPLayer) -> None:
    data = json.loads(json.dumps(layer.to_dict()))
    assert set(data) == {"expr", "stacks", "ratio", "graph"}
    back = MLPLayer.from_dict(data)
    assert back == layer and back.key == layer.key and back.expr == layer.expr
    assert back.ratio == layer.ratio and type(back.ratio) is Fraction
    text_only = {k: v for k, v in data.items() if k != "graph"}
    assert MLPLayer.from_dict(text_only) == layer  # the text parses back to the same graph
    other = "W2(relu(W1(x)))" if layer.expr != "W2(relu(W1(x)))" else STANDARD_FFN
    assert MLPLayer.from_dict({**data, "expr": other}) == layer  # the rows win


def _hand_params(layer: MLPLayer, hidden: int) -> int:
    r = layer.ratio
    k = max(1, hidden * r.numerator // r.denominator)
    linears = sum(out * inp + out for out, inp in
                  linear_shapes(layer.graph, hidden, k).values())
    return layer.stacks * (linears + 2 * hidden)


@pytest.mark.parametrize("hidden", HIDDEN)
def test_params_against_a_hand_count(hidden: int) -> None:
    for layer in NAMED + RANDOM:
        r = layer.ratio
        assert layer.d_inner(hidden) == max(1, hidden * r.numerator // r.denominator)
        assert layer.params(hidden) == _hand_params(layer, hidden), layer.describe()


@pytest.mark.parametrize("layer", NAMED[:6] + NAMED[7:8], ids=lambda la: la.expr)
def test_params_against_real_modules(layer: MLPLayer) -> None:
    hidden = 24
    k = layer.d_inner(hidden)
    modules = [compile_graph(layer.graph, hidden, k, "eager", seed=i) for i in range(layer.stacks)]
    norms = [torch.nn.LayerNorm(hidden) for _ in range(layer.stacks)]
    total = sum(p.numel() for m in [*modules, *norms] for p in m.parameters())
    assert layer.params(hidden) == total


def test_flops_against_a_hand_count() -> None:
    layer = MLPLayer.of(STANDARD_FFN, 2, "1/2")
    h, k, tokens = 40, 20, 3
    gelu = mlpgraph.get_primitive("gelu").flops
    per_row = (2 * h * k + k) + gelu * k + (2 * k * h + h)
    assert layer.flops(h, tokens) == 2 * tokens * per_row


@pytest.mark.parametrize("hidden", [*range(1, 97), 312, 540, 768])
def test_with_width_is_exact(hidden: int) -> None:
    g = parse(STANDARD_FFN)
    for k in range(1, 3 * hidden + 2):
        layer = MLPLayer.with_width(g, 1, k, hidden)
        assert layer.d_inner(hidden) == k
        assert parse_ratio(str(layer.ratio)) == layer.ratio  # what from_dict reads back
    assert _round_trip(MLPLayer.with_width(g, 2, hidden + 1, hidden)).d_inner(hidden) == hidden + 1


def test_key_describe_and_memos() -> None:
    g = parse("W2(relu(W1(x) * x))")
    layer = MLPLayer(g, 2, Fraction(1, 2))
    assert layer.key == f"{mlpgraph.canonical_key(g)}#s2#r1/2"
    assert layer.describe() == "W2(relu(W1(x) * x)) @ 2x1/2"
    assert graph_key(g) == mlpgraph.canonical_key(g) and graph_text(g) == str(g)
    assert MLPLayer.of(g, 2, 0.5) == layer == MLPLayer.of("W2(relu(W1(x) * x))", 2, "1/2")
    assert MLPLayer.of(STANDARD_FFN) == MLPLayer(parse(STANDARD_FFN), 1, Fraction(1))


@pytest.mark.parametrize("value, want", [("1/2", Fraction(1, 2)), (0.5, Fraction(1, 2)),
                                         (1, Fraction(1)), ("0.333", Fraction(1, 3)),
                                         ("517/540", Fraction(517, 540)), (1.5, Fraction(3, 2)),
                                         (Fraction(7, 99), Fraction(7, 99))])
def test_parse_ratio(value, want) -> None:
    assert parse_ratio(value) == want


G = parse(STANDARD_FFN)
OK = {"expr": STANDARD_FFN, "stacks": 1, "ratio": "1"}
BAD = [
    (lambda: MLPLayer(STANDARD_FFN), "holds an mlpgraph.Graph, got str .*MLPLayer.of"),
    (lambda: MLPLayer(G, 0), "stacks=0 must be a positive integer"),
    (lambda: MLPLayer(G, True), "stacks=True must be a positive integer"),
    (lambda: MLPLayer(G, 1.5), "stacks=1.5 must be a positive integer"),
    (lambda: MLPLayer(G, 1, 0), "ratio 0 must be positive"),
    (lambda: MLPLayer(G, 1, Fraction(-1, 2)), "ratio -1/2 must be positive"),
    (lambda: MLPLayer(G, 1, "half"), "ratio 'half' is not a number"),
    (lambda: parse_ratio(True), "ratio True is not a number"),
    (lambda: parse_ratio("1/0"), "ratio '1/0' is not a number"),
    (lambda: parse_ratio(None), "ratio None is not a number"),
    (lambda: parse_ratio(float("inf")), "ratio inf is not a number"),
    (lambda: MLPLayer.with_width(G, 1, 0, 10), "d_inner=0 must be a positive integer"),
    (lambda: MLPLayer.with_width(G, 1, 5.0, 10), "d_inner=5.0 must be a positive integer"),
    (lambda: MLPLayer.with_width(G, 1, 5, 0), "hidden=0 must be a positive integer"),
    (lambda: MLPLayer.with_width(G, 0, 5, 10), "stacks=0 must be a positive integer"),
    (lambda: MLPLayer(G).d_inner(0), "hidden=0 must be a positive integer"),
    (lambda: MLPLayer(G).params(-3), "hidden=-3 must be a positive integer"),
    (lambda: MLPLayer.from_dict([]), r"layer: expected \{expr or graph, stacks, ratio\}"),
    (lambda: MLPLayer.from_dict({"expr": STANDARD_FFN, "stacks": 1}, "layers[2]"),
     r"layers\[2\]: expected"),
    (lambda: MLPLayer.from_dict({**OK, "expr": 5}), "layer: expr=5 must be expression text"),
    (lambda: MLPLayer.from_dict({**OK, "expr": "W2(gelu("}, "layers[3]"),
     r"layers\[3\]: .*line 1"),
    (lambda: MLPLayer.from_dict({**OK, "graph": None}), "layer: expected a list of node rows"),
    (lambda: MLPLayer.from_dict({**OK, "graph": [["x", None, "d", [5]]]}),
     "layer: node 0 refers to child 5"),
    (lambda: MLPLayer.from_dict({**OK, "stacks": 0}), "layer: stacks=0 must be a positive"),
    (lambda: MLPLayer.from_dict({**OK, "ratio": "-1/2"}), "layer: ratio '-1/2' must be"),
]


@pytest.mark.parametrize("make, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_a_layer_error(make, message) -> None:
    with pytest.raises(LayerError, match=message) as err:
        make()
    assert isinstance(err.value, ValueError)


def test_bad_text_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="line 1, column"):
        MLPLayer.of("W2(gelu(", 1, 1)


def test_standard_ffn_is_defined_once() -> None:
    """``STANDARD_FFN`` is assigned in mlpgraph/layer.py only (mlpgraph.paper imports it)."""
    defined = []
    for path in sorted((ROOT / "mlpgraph").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            defined += [path.name for t in targets
                        if isinstance(t, ast.Name) and t.id == "STANDARD_FFN"]
    assert defined == ["layer.py"]
    assert mlpgraph.paper.STANDARD_FFN is mlpgraph.layer.STANDARD_FFN is mlpgraph.STANDARD_FFN
    assert mlpgraph.PAPER_SPACE.seed_expressions[0] is STANDARD_FFN
