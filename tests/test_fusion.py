"""GEMM-epilogue fusion (``backend="inductor-fused"``, :mod:`mlpgraph.fusion`): the plan,
the numerics of the fused form against ``mlpgraph.evaluate``, the fall-backs (per op, per
device, under autograd) and the reordered-weight cache."""

from __future__ import annotations

import weakref

import pytest
import torch

import mlpgraph
from mlpgraph import fusion
from mlpgraph.backends import BACKENDS
from mlpgraph.compiler import compile_graph
from mlpgraph.fusion import epilogue_plan, plan_epilogues
from tests.conftest import GLU_EXPRESSIONS, PAPER_EXPRESSIONS, STANDARD_FFN
from tests.test_compile import RANDOM_GRAPHS, check_against_evaluate, owners_of

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.skipif(not fusion.onednn_available(), reason="no oneDNN in this torch")]
D, K = 12, 8
FUSED = "inductor-fused"


def _fused_module(m: mlpgraph.compiler.MLPModule) -> torch.fx.GraphModule:
    return m.function.fx_module.meta["mlpgraph"]["fused_module"]


def _absorbed(expr: str, d: int = 540, k: int = 270) -> list[str]:
    """The primitives the plan absorbs, by name, in graph order."""
    g = mlpgraph.simplify(mlpgraph.parse(expr))
    return [n.prim.name for n in g.nodes if n in plan_epilogues(g)]


# one rule decides each row: a linear used once absorbs its parent if that parent is a unary
# with a oneDNN post-op (not elu), or add/mul with an operand of the linear's own width;
# in L5 the product is on narrowed operands (W1(x) is k wide, x is d), so nothing is absorbed
@pytest.mark.parametrize("expr, absorbed", [
    ("tanh(W2(gelu(W1(x))))", ["gelu", "tanh"]),
    ("elu(W2(gelu(W1(x))))", ["gelu"]),
    ("sigmoid(W2(relu(W1(x))))", ["relu", "sigmoid"]),
    ("W2(gelu(W1(max(x, tanh(x)))))", ["gelu"]),
    ("W2(relu(W1(x) * x))", []),
    ("leaky_relu(W2(gelu(W1(x))))", ["gelu", "leaky_relu"]),
    (STANDARD_FFN, ["gelu"]),
    (GLU_EXPRESSIONS[0], ["swish", "mul"]),
    ("W2(gelu(W1(x)) + tanh(W1(x)))", []),  # W1(x) has two users: its GEMM stays plain
    ("W3(W1(x) - W2[k](x))", ["sub"]),  # the left side of sub only
    ("W2[d](x - W1[d](x))", []),
    ("W2[d](x + W1[d](x))", ["add"]),
    ("W2(W1(x) + 2.0)", []),  # a scalar is not an operand of the output's shape
])
def test_plan(expr: str, absorbed: list[str]) -> None:
    assert _absorbed(expr) == absorbed


@pytest.mark.parametrize("borrowed", [False, True], ids=["owned", "borrowed"])
@pytest.mark.parametrize("expr", [*PAPER_EXPRESSIONS, STANDARD_FFN, *GLU_EXPRESSIONS])
def test_fused_form_matches_evaluate(expr: str, borrowed: bool) -> None:
    g = mlpgraph.parse(expr)
    ref_w = mlpgraph.random_weights(g, D, K, seed=1)
    weights = owners_of(ref_w) if borrowed else ref_w
    m = compile_graph(g, D, K, FUSED, weights=weights, share_weights=borrowed)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for lead in [(), (3,), (2, 5), (0,)]:
            x = torch.randn(*lead, D, generator=gen)
            torch.testing.assert_close(m(x), mlpgraph.evaluate(g, x, ref_w, d_inner=K),
                                       rtol=1e-5, atol=1e-5)
    # one oneDNN call per linear node; the absorbed primitives are not emitted on their own
    s = mlpgraph.simplify(g)
    calls = [n for n in _fused_module(m).graph.nodes if n.op == "call_function"]
    gemms = [n for n in calls if "linear_" in str(n.target)]
    assert len(gemms) == sum(n.op is mlpgraph.Op.LINEAR for n in s.nodes)
    prims = sum(n.op is mlpgraph.Op.PRIM for n in s.nodes)
    assert len(calls) - len(gemms) == prims - len(_absorbed(expr, D, K)) + \
        sum(n.op is mlpgraph.Op.NARROW for n in s.nodes)


@pytest.mark.parametrize("graph", RANDOM_GRAPHS, ids=lambda g: str(g)[:40])
def test_random_graphs_no_grad(graph: mlpgraph.Graph) -> None:
    w = mlpgraph.random_weights(graph, D, K, seed=4)
    m = compile_graph(graph, D, K, FUSED, weights=w, share_weights=False)
    x = torch.randn(7, D, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(m(x), mlpgraph.evaluate(graph, x, w, d_inner=K),
                                   rtol=1e-5, atol=1e-5)


def test_autograd_runs_the_plain_form() -> None:
    # outputs and every gradient equal the reference's: the oneDNN ops have no backward,
    # so under autograd the module runs the plain Inductor form
    m = check_against_evaluate(PAPER_EXPRESSIONS[0], FUSED, shapes=[(3,)])
    runner = m.function.runner
    assert runner._plain is not None  # built on first use under autograd
    with torch.no_grad():
        m(torch.randn(2, D))
    assert BACKENDS[FUSED].compiled_forms


def test_an_op_without_an_equivalent_post_op_falls_back(monkeypatch) -> None:
    # if oneDNN's "relu" post-op meant something else, relu is left to ordinary code
    monkeypatch.setitem(fusion.ONEDNN_UNARY, "relu", ("sigmoid", (), ""))
    monkeypatch.setattr(fusion, "_VERIFIED", weakref.WeakKeyDictionary())
    assert not fusion.onednn_equivalent(mlpgraph.get_primitive("relu"))
    assert _absorbed("sigmoid(W2(relu(W1(x))))") == ["sigmoid"]
    monkeypatch.setattr(fusion, "_VERIFIED", weakref.WeakKeyDictionary())
    mlpgraph.compiler.clear_compile_cache()
    g = mlpgraph.parse("sigmoid(W2(relu(W1(x))))")
    w = mlpgraph.random_weights(g, D, K, seed=0)
    m = compile_graph(g, D, K, FUSED, weights=w, share_weights=False)
    x = torch.randn(4, D)
    with torch.no_grad():
        torch.testing.assert_close(m(x), mlpgraph.evaluate(g, x, w, d_inner=K))
    mlpgraph.compiler.clear_compile_cache()


def test_device_and_dtype_plan() -> None:
    assert epilogue_plan(torch.device("cpu"), torch.float32) == "onednn"
    assert epilogue_plan(torch.device("cpu"), torch.bfloat16) == "onednn"
    assert epilogue_plan(torch.device("cpu"), torch.float64) is None  # oneDNN has no f64
    assert epilogue_plan(torch.device("cuda"), torch.float32) == "triton"
    assert fusion.TRITON_OPTIONS["epilogue_fusion"] and fusion.TRITON_OPTIONS["max_autotune"]
    g = mlpgraph.parse(STANDARD_FFN)
    w = mlpgraph.random_weights(g, D, K, seed=0, dtype=torch.float64)
    m = compile_graph(g, D, K, FUSED, weights=w, share_weights=False, dtype=torch.float64)
    assert "fused_module" not in m.function.fx_module.meta["mlpgraph"]  # plain Inductor
    x = torch.randn(3, D, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), mlpgraph.evaluate(g, x, w, d_inner=K))


def test_reordered_weights_follow_in_place_updates() -> None:
    m = compile_graph(STANDARD_FFN, D, K, FUSED, seed=0)
    x = torch.randn(5, D)
    ref = compile_graph(STANDARD_FFN, D, K, "eager", seed=0)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    for _ in range(3):
        with torch.no_grad():
            torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-5)
        m(x.requires_grad_()).square().sum().backward()  # the plain form, with gradients
        opt.step()  # an in-place update: the next fused call reorders the weight again
        opt.zero_grad()
        ref.load_state_dict(m.state_dict())
    with torch.no_grad():
        m.W2.weight.mul_(-1.0)
        ref.W2.weight.mul_(-1.0)
        torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-5)


def test_packed_cache_drops_freed_weights() -> None:
    w = torch.randn(6, 4)
    fusion.packed_weight(w, 3)
    key = (w.data_ptr(), (6, 4), w.stride(), w.dtype)
    assert key in fusion._PACKED
    del w
    fusion.packed_weight(torch.randn(5, 3), 3)  # any insertion purges dead entries
    assert key not in fusion._PACKED or fusion._PACKED[key][0]() is not None


def test_cli_shows_the_epilogues(capsys) -> None:
    import argparse

    from mlpgraph import cli_compile
    from mlpgraph.cli_common import make_parents

    parser = argparse.ArgumentParser()
    cli_compile.register(parser.add_subparsers(), make_parents())
    args = parser.parse_args(["compile", STANDARD_FFN, "--d-model", "16", "--d-inner", "8",
                              "--backend", FUSED])
    assert args.func(args) == 0
    assert "epilogues:  W1 + gelu" in capsys.readouterr().out


def test_cuda_plan_hands_triton_epilogue_options_to_inductor(monkeypatch) -> None:
    # no GPU here: the plan is forced, and the Inductor build it delegates to is recorded
    from mlpgraph import backends

    seen: list[dict] = []
    monkeypatch.setattr(fusion, "epilogue_plan", lambda device, dtype: "triton")
    monkeypatch.setattr(backends, "_inductor",
                        lambda fx, example, opts, warmup: seen.append(opts) or fx.forward)
    mlpgraph.compiler.clear_compile_cache()
    m = compile_graph(STANDARD_FFN, D, K, FUSED, seed=0, dynamic=False,
                      options={"coordinate_descent_tuning": True})
    mlpgraph.compiler.clear_compile_cache()
    assert seen == [{"dynamic": False, "options": {
        **fusion.TRITON_OPTIONS, "coordinate_descent_tuning": True}}]
    assert "fused_module" not in m.function.fx_module.meta["mlpgraph"]
