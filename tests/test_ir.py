"""The IR: hash-consing, typing, explicit coercion, RecExpr serialization."""

from __future__ import annotations

import json
import random

import pytest

import mlpgraph as mg
from mlpgraph import ir
from mlpgraph.gen import random_graph, random_graphs
from mlpgraph.ir import Op, Width


def test_hash_consing_shares_equal_subgraphs():
    x = ir.input_node()
    a = ir.linear("W1", x)
    b = ir.linear("W1", ir.input_node())
    assert a is b
    g = mg.parse("W2(gelu(W1(x)) + W1(x))")
    linears = [n for n in g.nodes if n.op is Op.LINEAR and n.arg == "W1"]
    assert len(linears) == 1  # W1(x) used twice is one node
    assert mg.parse("W2(gelu(W1(x)))") == mg.parse("W2( gelu( W1 x ) )")


def test_widths_default_and_annotated():
    x = ir.input_node()
    assert ir.linear("W1", x).width is Width.K
    assert ir.linear("W2", ir.linear("W1", x)).width is Width.D
    assert ir.linear("W1", x, "d").width is Width.D
    g = mg.parse("W3(W2(W1[d](x) + x))")
    assert g.linears == {"W1": (Width.D, Width.D), "W2": (Width.D, Width.K),
                         "W3": (Width.K, Width.D)}
    with pytest.raises(mg.GraphTypeError, match="'d' or 'k'"):
        ir.linear("W1", x, "m")


def test_binary_mismatch_is_explicit_narrow_node():
    g = mg.parse("W2(relu(W1(x) * x))")
    mul = next(n for n in g.nodes if n.arg == "mul")
    assert mul.width is Width.M
    assert [s.op for s in mul.src] == [Op.NARROW, Op.NARROW]
    assert mg.parse("W2(relu(narrow(W1(x)) * narrow(x)))") == g
    assert mg.format(g) == "W2(relu(W1(x) * x))"
    assert "narrow" in mg.format(g, explicit=True)


def test_strict_mode_names_the_node():
    with pytest.raises(mg.GraphTypeError, match=r"mul\(W1\(x\), x\)"):
        mg.parse("W2(relu(W1(x) * x))", coerce=False)


def test_output_must_be_model_width():
    with pytest.raises(mg.GraphTypeError, match="width 'k'"):
        mg.Graph(ir.linear("W1", ir.input_node()))


def test_shared_name_with_two_shapes_is_an_error():
    with pytest.raises(mg.GraphTypeError, match="W1 is used as d->k and as k->d"):
        mg.parse("W2(W1(W1(x)) + W1(x))")


def test_linear_name_rules():
    with pytest.raises(mg.GraphTypeError, match="must start with 'W'"):
        ir.linear("V1", ir.input_node())


def test_json_round_trip_paper(paper_expr):
    g = mg.parse(paper_expr)
    data = json.loads(g.to_json())
    assert data["format"] == "mlpgraph.recexpr/1"
    for i, (_, _, _, kids) in enumerate(data["nodes"]):
        assert all(k < i for k in kids)  # topological, children as indices
    assert mg.Graph.from_json(g.to_json()) == g


def test_json_round_trip_random():
    for g in random_graphs(7, 300):
        assert mg.Graph.from_json(g.to_json()) == g
        assert mg.Graph.from_list(g.to_list()) == g


def test_from_json_drops_dead_nodes():
    rows = mg.parse("W2(gelu(W1(x)))").to_list()
    rows.insert(1, ["prim", "tanh", "d", [0]])
    rows = [[op, arg, w, [k + (1 if k >= 1 else 0) for k in kids]] if i > 1 else
            [op, arg, w, kids] for i, (op, arg, w, kids) in enumerate(rows)]
    g = mg.Graph.from_list(rows)
    assert g == mg.parse("W2(gelu(W1(x)))")


@pytest.mark.parametrize("bad, msg", [
    ("[]", "empty"),
    ('[["x", null, "d", [1]]]', "children must come earlier"),
    ('[["bogus", null, "d", []]]', "malformed"),
    ('[["x", null, "d", []], ["linear", "W1", "m", [0]]]', "W1"),
    ("{nope", "not JSON"),
])
def test_from_json_errors(bad, msg):
    with pytest.raises(mg.SerializationError, match=msg):
        mg.Graph.from_json(bad)


def test_narrow_rows_must_be_explicit_in_json():
    rows = [["x", None, "d", []], ["linear", "W1", "k", [0]], ["prim", "mul", "m", [0, 1]]]
    with pytest.raises(mg.SerializationError):
        mg.Graph.from_list(rows)


def test_digest_is_structural_and_stable():
    a = mg.parse("W2(gelu(W1(x)))").root.digest
    assert a == mg.parse("W2(gelu(W1 x))").root.digest
    assert a != mg.parse("W2(relu(W1(x)))").root.digest


def test_height_and_size():
    g = mg.parse("W2(gelu(W1(max(x, tanh(x)))))")
    assert g.height == 5 and g.size == 6
    assert max(g.uses().values()) == 2  # x feeds max and tanh


def test_random_graphs_are_well_typed():
    rng = random.Random(3)
    for _ in range(200):
        g = random_graph(rng, steps=rng.randint(1, 40))
        assert g.root.width is Width.D


def test_copy_and_pickle_keep_hash_consing():
    import copy
    import pickle

    g = mg.parse("W2(gelu(W1(max(x, tanh(x))))) + x * 0.5")
    for other in (copy.copy(g), copy.deepcopy(g), pickle.loads(pickle.dumps(g))):
        assert other == g and other.root is g.root
        assert [a is b for a, b in zip(other.nodes, g.nodes, strict=True)] == [True] * len(g.nodes)
    # a node unpickled in a fresh table entry is found again by the builders
    n = pickle.loads(pickle.dumps(g.root.src[0]))
    assert n is g.root.src[0]
