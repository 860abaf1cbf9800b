"""The IR: hash-consing, typing, explicit coercion, RecExpr serialization."""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys

import pytest

import mlpgraph as mg
from mlpgraph import ir, recexpr
from mlpgraph.gen import random_graph, random_graphs
from mlpgraph.ir import Op, Width


def test_hash_consing_shares_equal_subgraphs():
    x = ir.input_node()
    a = ir.linear("W1", x)
    b = ir.linear("W1", ir.input_node())
    assert a is b
    g = mg.parse("W2(gelu(W1(x)) + W1(x))")
    linears = [n for n in g.nodes if n.op is Op.LINEAR and n.name == "W1"]
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
    mul = next(n for n in g.nodes if n.op is Op.PRIM and n.name == "mul")
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
    # equal digests exactly for equal (hence identical) nodes, over many distinct nodes
    pool = {n for g in random_graphs(8, 300) for n in g.nodes}
    by_digest = {n.digest: n for n in pool}
    assert len(by_digest) == len(pool)
    a = mg.parse("W2(gelu(W1(x)))").root.digest
    assert a != mg.parse("W2(relu(W1(x)))").root.digest
    # the same in a fresh process under other hash seeds, for nodes rebuilt from text there
    texts = [str(g) for g in random_graphs(9, 30)]
    code = ("import sys, json, mlpgraph as mg; texts = json.loads(sys.stdin.read());"
            "print(json.dumps([mg.parse(t).root.digest for t in texts]))")
    for seed in ("0", "777"):
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), text=True,
                             capture_output=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert json.loads(out) == [mg.parse(t).root.digest for t in texts]


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

    g = mg.parse("W2(gelu(W1(max(x, tanh(x))))) + x * 0.5")
    for other in (copy.copy(g), copy.deepcopy(g), pickle.loads(pickle.dumps(g))):
        assert other == g and other.root is g.root
        assert [a is b for a, b in zip(other.nodes, g.nodes, strict=True)] == [True] * len(g.nodes)
    # a node unpickled in a fresh table entry is found again by the builders
    n = pickle.loads(pickle.dumps(g.root.src[0]))
    assert n is g.root.src[0]


def test_old_json_files_still_load():
    # a file in format mlpgraph.recexpr/1 as written before nodes had typed fields
    text = ('{"format":"mlpgraph.recexpr/1","nodes":[["x",null,"d",[]],["linear","W1","k",[0]],'
            '["narrow",null,"m",[1]],["narrow",null,"m",[0]],["prim","mul","m",[2,3]],'
            '["const",0.5,"1",[]],["prim","add","m",[4,5]],["const",-2.0,"k",[]],'
            '["prim","max","k",[1,7]],["prim","relu","k",[8]],["narrow",null,"m",[9]],'
            '["prim","sub","m",[6,10]],["linear","W2","d",[11]]]}')
    g = mg.Graph.from_json(text)
    assert g == mg.parse("W2(W1(x) * x + 0.5 - relu(max(W1(x), fill[k](-2.0))))")
    assert g.to_json() == text  # and it is written back byte for byte


def _check_fields(n: ir.Node) -> None:
    if n.op is Op.PRIM:
        assert isinstance(n.prim, mg.Primitive) and n.name == n.prim.name
        assert mg.get_primitive(n.name) is n.prim and n.value is None
    elif n.op is Op.LINEAR:
        assert n.name.startswith("W") and n.prim is None and n.value is None
    elif n.op is Op.CONST:
        assert type(n.value) is float and n.name == repr(n.value) and n.prim is None
    else:
        assert n.name == {Op.INPUT: "x", Op.NARROW: "narrow"}[n.op]
        assert n.prim is None and n.value is None
    assert ir.node_arg(n) == {Op.PRIM: n.name, Op.LINEAR: n.name, Op.CONST: n.value}.get(n.op)


def _height(n: ir.Node) -> int:  # the definitions, recursively
    return 1 + max(_height(s) for s in n.src) if n.src else 0


def _ref_height(n: ir.Node) -> int:
    if n.op is Op.NARROW:
        return _ref_height(n.src[0])
    return 1 + max(_ref_height(s) for s in n.src) if n.src else 0


def test_typed_fields_and_cached_heights_match_the_definitions():
    graphs = random_graphs(21, 400)
    assert {n.op for g in graphs for n in g.nodes} == set(Op)  # every kind is exercised
    assert any(n.ref_height != n.height for g in graphs for n in g.nodes)
    for g in graphs:
        for n in g.nodes:
            _check_fields(n)
            assert n.height == _height(n) and n.ref_height == _ref_height(n)
        assert (g.height, g.ref_height) == (g.root.height, g.root.ref_height)


def test_skip_narrow_and_ancestors_against_plain_references():
    for g in random_graphs(22, 150):
        for n in g.nodes:
            want = n
            while want.op is Op.NARROW:
                want = want.src[0]
            assert ir.skip_narrow(n) is want
            # ancestors: the nodes of g (other than n) from which n can be reached
            above = [m for m in g.nodes if m is not n and n in ir.toposort(m)]
            assert ir.ancestors(g, n) == above


def test_toposort_children_first_and_complete():
    for g in random_graphs(23, 150):
        order = ir.toposort(g.root)
        pos = {n: i for i, n in enumerate(order)}
        assert len(pos) == len(order) and order[-1] is g.root
        assert all(pos[s] < pos[n] for n in order for s in n.src)
        stack, reach = [g.root], set()
        while stack:
            n = stack.pop()
            if n not in reach:
                reach.add(n)
                stack.extend(n.src)
        assert reach == set(order)


def test_rebuild_retypes_through_the_builders():
    x = ir.input_node()
    w1 = ir.linear("W1", x)
    g = mg.parse("W2(relu(W1(x) * tanh(x)))")
    mul = next(n for n in g.nodes if n.op is Op.PRIM and n.name == "mul")
    assert ir.rebuild(mul, mul.src) is mul
    # a d-wide operand where a narrowed one was: the narrow nodes are re-derived
    assert ir.rebuild(mul, (mul.src[0], x)) is ir.apply("mul", w1, x)
    assert ir.rebuild(mul, (w1, w1)) is ir.apply("mul", w1, w1)  # no coercion needed
    lin = ir.linear("W3", x, "d")
    assert ir.rebuild(lin, (w1,)) is ir.linear("W3", w1, "d")  # keeps its output width
    assert ir.rebuild(ir.narrow(x), (w1,)) is ir.narrow(w1)
    for g in random_graphs(24, 100):  # same children: the node itself, for every kind
        assert all(ir.rebuild(n, list(n.src)) is n for n in g.nodes)


def test_recexpr_writer_against_a_plain_reference():
    for g in random_graphs(25, 100):
        nodes = g.nodes
        want = [[n.op.value, ir.node_arg(n), n.width.value, [nodes.index(s) for s in n.src]]
                for n in nodes]
        assert g.to_list() == want
        assert recexpr.write_recexpr(nodes, lambda n, kids: (n, kids)) == \
            [(n, w[3]) for n, w in zip(nodes, want, strict=True)]


def test_one_row_reader_for_lists_and_networkx():
    from mlpgraph import viz

    rows = mg.parse("W2(gelu(W1(x)))").to_list()
    rows[2][1] = "gelo"
    nxg = viz.to_networkx(mg.parse("W2(gelu(W1(x)))"))
    nxg.nodes[2]["arg"] = "gelo"
    with pytest.raises(mg.SerializationError) as a:
        mg.Graph.from_list(rows)
    with pytest.raises(mg.SerializationError) as b:
        viz.from_networkx(nxg)
    assert str(a.value) == str(b.value)
    assert "node 2 (prim 'gelo'): unknown primitive 'gelo'; did you mean gelu" in str(a.value)
    with pytest.raises(mg.SerializationError, match=r"node 1 \(linear\) has bad arg 3"):
        mg.Graph.from_list([["x", None, "d", []], ["linear", 3, "k", [0]]])


def test_primitive_nodes_pickle_by_name(monkeypatch):
    monkeypatch.setattr(mg.REGISTRY, "_prims", dict(mg.REGISTRY._prims))

    def local_fn(a):  # a local function cannot be pickled: the node must not carry it
        return a * 2

    mg.primitive(local_fn, name="twice_test", sympy=lambda a: 2 * a)
    g = mg.parse("W2(twice_test(W1(x)))")
    data = pickle.dumps(g)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(g.root.src[0].prim)
    assert pickle.loads(data).root is g.root
    assert b"twice_test" in data


def test_front_end_leaves_no_garbage_cycles():
    # parse -> simplify -> key -> print keeps no reference cycle through a graph's nodes: they
    # die as soon as the graph is dropped, not at the next collection (a recursive closure
    # walking the graph once made every pipeline run a cycle the collector had to trace)
    import gc
    import weakref

    gc.collect()
    gc.disable()
    try:
        # linear names no other test uses, so that no node is shared with a live graph
        g = mg.parse("Wz2(max(gelu(Wz1(x)) * 1.4375, tanh(Wz1(x) + 0.8125) + gelu(Wz1(x))))")
        s = mg.simplify(g)
        refs = [weakref.ref(n) for n in (*g.nodes, *s.nodes) if n.op is not mg.Op.INPUT]
        mg.canonical_key(g), mg.format(s), mg.format(g, explicit=True), g.to_json(), repr(s)
        assert s is not g and len(refs) > 10
        del g, s
        assert [r() for r in refs if r() is not None] == []
    finally:
        gc.enable()
