"""mlpgraph.compile: every backend against the reference interpreter (on weights of its
own and on weights borrowed from a larger owner), the backend registry, weight
inheritance, state dicts, export files, the TorchScript warning, the compile cache and
kernel counts.

Inductor compiles cost seconds each on CPU, so the default run compiles a handful of
representative graphs; ``-m slow`` runs Inductor on every paper MLP and random graphs.
"""

from __future__ import annotations

import argparse
import copy
import random
import warnings

import pytest
import sympy
import torch

import mlpgraph
from mlpgraph import backends, compiler, ir
from mlpgraph.backends import BACKENDS
from mlpgraph.cli_common import make_parents
from mlpgraph.codegen import build_functional
from mlpgraph.compiler import (
    TorchScriptDeprecationWarning,
    clear_compile_cache,
    compile_cache_info,
    compile_graph,
    count_kernels,
    inherit_weights,
    inspect_inductor,
    resolve_device,
    set_compile_cache_size,
)
from mlpgraph.errors import BackendError, WidthError
from mlpgraph.graph import Graph
from mlpgraph.ir import Width
from mlpgraph.module import MLPModule
from tests.conftest import GLU_EXPRESSIONS, PAPER_EXPRESSIONS, STANDARD_FFN

D, K = 12, 8
SHAPES = [(), (3,), (2, 5)]
CHEAP = ["eager", "export", "torchscript"]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def owners_of(weights: dict) -> dict[str, torch.nn.Linear]:
    """Larger linears (2 more rows, 3 more columns) whose leading blocks are ``weights``."""
    owners = {}
    for name, (w, b) in weights.items():
        lin = torch.nn.Linear(w.shape[1] + 3, w.shape[0] + 2)
        with torch.no_grad():
            lin.weight[: w.shape[0], : w.shape[1]] = w
            lin.bias[: w.shape[0]] = b
        owners[name] = lin
    return owners


def check_against_evaluate(graph: Graph | str, backend: str, d: int = D, k: int = K,
                           shapes=SHAPES, borrowed: bool = False, **kw) -> torch.nn.Module:
    """Outputs and gradients (input and every weight) equal ``evaluate``'s, float32.
    ``borrowed``: the module borrows its weights from larger owners; their gradients
    must equal the reference in the borrowed block and be zero outside it."""
    graph = mlpgraph.parse(graph) if isinstance(graph, str) else graph
    ref_w = {n: (w.requires_grad_(), b.requires_grad_())
             for n, (w, b) in mlpgraph.random_weights(graph, d, k, seed=1).items()}
    if borrowed:
        owners = owners_of({n: (w.detach(), b.detach()) for n, (w, b) in ref_w.items()})
        module = compile_graph(graph, d, k, backend, weights=owners, **kw)
        assert module.borrowed == bool(graph.linears) and not list(module.parameters())
    else:
        module = compile_graph(graph, d, k, backend, seed=1, **kw)
        owners = {n: getattr(module, n) for n in graph.linears}
    gen = torch.Generator().manual_seed(2)
    for lead in shapes:
        x = torch.randn(*lead, d, generator=gen)
        cot = torch.randn(*lead, d, generator=gen)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        for owner in owners.values():
            owner.zero_grad(set_to_none=True)
        for w, b in ref_w.values():
            w.grad = b.grad = None
        y = module(xa)
        ref = mlpgraph.evaluate(graph, xb, ref_w, d_inner=k)
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        if y.requires_grad:  # not when the compiled (simplified) graph ignores every input
            (y * cot).sum().backward()
        if ref.requires_grad:
            (ref * cot).sum().backward()
        pairs = [(xa.grad, xb.grad)]
        for name, (w, b) in ref_w.items():
            gw, gb = owners[name].weight.grad, owners[name].bias.grad
            if borrowed and gw is not None:  # the owner's gradient is zero off the block
                o, i = w.shape
                assert not gw[o:].any() and not gw[:, i:].any() and not gb[o:].any()
                gw, gb = gw[:o, :i], gb[:o]
            pairs += [(gw, w.grad), (gb, b.grad)]
        for got, want in pairs:
            got = torch.zeros_like(want) if got is None and want is not None else got
            want = torch.zeros_like(got) if want is None and got is not None else want
            if got is not None:
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    return module


# ------------------------------------------------------------------ random graphs
def random_graph(rng: random.Random, steps: int) -> Graph:
    """A small well-typed graph: unary/binary ops, narrows, constants, shared linears."""
    unary = ["gelu", "tanh", "relu", "sigmoid", "swish", "elu", "leaky_relu", "neg"]
    binary = ["add", "mul", "max", "sub"]
    pool = [ir.input_node()]
    layers: dict[str, tuple[Width, Width]] = {}
    for _ in range(steps):
        a = rng.choice(pool)
        r = rng.random()
        if r < 0.3:
            node = ir.apply(rng.choice(unary), a)
        elif r < 0.6:
            b = ir.const(rng.choice([0.5, -1.5, 2.0])) if rng.random() < 0.15 else \
                rng.choice(pool)
            if rng.random() < 0.1:
                b = ir.const(1.25, b.width if b.width is not Width.S else Width.D)
            node = ir.apply(rng.choice(binary), a, b)
        elif r < 0.7:
            node = ir.narrow(a)
        else:
            same = [n for n, (wi, _) in layers.items() if wi is a.width]
            if same and rng.random() < 0.4:
                name = rng.choice(same)
            else:
                name = f"W{len(layers) + 1}"
                layers[name] = (a.width, rng.choice([Width.D, Width.K]))
            node = ir.linear(name, a, layers[name][1])
        pool.append(node)
    root = pool[-1]
    if root.width is not Width.D:
        root = ir.linear(f"W{len(layers) + 1}", root, Width.D)
    return Graph(root)


RANDOM_GRAPHS = [random_graph(random.Random(s), steps=3 + s % 9) for s in range(12)]


# ------------------------------------------------------------------ numerics
@pytest.mark.parametrize("borrowed", [False, True], ids=["owned", "borrowed"])
@pytest.mark.parametrize("backend", CHEAP)
@pytest.mark.parametrize("expr", [*PAPER_EXPRESSIONS, STANDARD_FFN, *GLU_EXPRESSIONS])
def test_backend_matches_evaluate(expr: str, backend: str, borrowed: bool) -> None:
    check_against_evaluate(expr, backend, borrowed=borrowed)


@pytest.mark.parametrize("borrowed", [False, True], ids=["owned", "borrowed"])
@pytest.mark.parametrize("backend", CHEAP)
@pytest.mark.parametrize("graph", RANDOM_GRAPHS, ids=lambda g: str(g)[:40])
def test_random_graphs(graph: Graph, backend: str, borrowed: bool) -> None:
    check_against_evaluate(graph, backend, borrowed=borrowed)


def test_unsimplified_and_widths_wider_than_inner() -> None:
    g = "W2(relu(relu(W1(x) * x)) + 0.0)"
    m = check_against_evaluate(g, "torchscript", d=8, k=12, simplify=False)
    assert str(m.compiled_graph) == str(mlpgraph.parse(g))
    m = check_against_evaluate(g, "torchscript", d=8, k=12)
    assert "relu(relu" not in str(m.compiled_graph)  # the simplified graph was compiled


@pytest.mark.parametrize("expr, borrowed", [("W2(relu(W1(x) * x))", False),
                                            ("W2(gelu(W1(max(x, tanh(x)))))", False),
                                            (GLU_EXPRESSIONS[0], False),
                                            (GLU_EXPRESSIONS[0], True)])
def test_inductor_matches_evaluate(expr: str, borrowed: bool) -> None:
    check_against_evaluate(expr, "inductor", borrowed=borrowed)


@pytest.mark.slow
@pytest.mark.parametrize("borrowed", [False, True], ids=["owned", "borrowed"])
@pytest.mark.parametrize("expr", [*PAPER_EXPRESSIONS, STANDARD_FFN, *GLU_EXPRESSIONS])
def test_inductor_paper_all(expr: str, borrowed: bool) -> None:
    check_against_evaluate(expr, "inductor", borrowed=borrowed)


@pytest.mark.slow
@pytest.mark.parametrize("graph", RANDOM_GRAPHS[:6], ids=lambda g: str(g)[:40])
def test_inductor_random_graphs(graph: Graph) -> None:
    check_against_evaluate(graph, "inductor")


def _register_user_primitive(monkeypatch: pytest.MonkeyPatch) -> str:
    # registered for this test only: other tests may enumerate the registry
    monkeypatch.setattr(mlpgraph.REGISTRY, "_prims", dict(mlpgraph.REGISTRY._prims))

    @mlpgraph.primitive(sympy=lambda a: a * sympy.tanh(sympy.log(1 + sympy.exp(a))),
                        tags={"activation"}, flops=8)
    def mish_test(a):
        return a * torch.tanh(torch.nn.functional.softplus(a))

    return "W2(mish_test(W1(x)))"


@pytest.mark.parametrize("backend", [*CHEAP, "inductor"])
def test_user_primitive(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    expr = _register_user_primitive(monkeypatch)
    m = check_against_evaluate(expr, backend)
    if backend != "eager":
        assert "mish_test" in m.code


def test_eager_module_code_names_and_sharing() -> None:
    m = compile_graph("W2(gelu(W1(x)) * gelu(W1(x)) + tanh(x))", D, K, seed=0)
    code = m.code  # the functional form: weights are arguments, linears F.linear calls
    assert "linear(x, w1_weight, w1_bias)" in code and "w2_weight, w2_bias)" in code
    assert "gelu" in code
    assert code.count("w1_weight, w1_bias)") == 1 and code.count("gelu(") == 1  # shared once
    assert [n for n, _ in m.named_parameters()] == ["W1.weight", "W1.bias", "W2.weight",
                                                    "W2.bias"]
    assert isinstance(m, MLPModule) and isinstance(m.function.fx_module, torch.fx.GraphModule)
    assert m.function.runner == m.function.fx_module.forward  # eager runs the FX code itself


def test_const_nodes_and_no_bias() -> None:
    g = "W2(gelu(W1(x)) * fill[k](0.5) + 2.0)"
    for backend in CHEAP:
        m = compile_graph(g, D, K, backend, bias=False, seed=3)
        w = mlpgraph.random_weights(mlpgraph.parse(g), D, K, seed=3, bias=False)
        x = torch.randn(2, 3, D)
        torch.testing.assert_close(m(x), mlpgraph.evaluate(mlpgraph.parse(g), x, w))
        assert m.W1.bias is None


# ------------------------------------------------------------------ weights
def _supernet(d: int = 20, k: int = 30) -> dict[str, torch.nn.Linear]:
    torch.manual_seed(0)
    return {"W1": torch.nn.Linear(d, k), "W2": torch.nn.Linear(k, d)}


@pytest.mark.parametrize("backend", [*CHEAP, "inductor"])
def test_weight_inheritance_shares_storage(backend: str) -> None:
    big = _supernet(D, 30)
    g = mlpgraph.parse("W2(relu(W1(x) * x))")
    m = compile_graph(g, D, K, backend, weights=big)
    assert m.W1.weight.data_ptr() == big["W1"].weight.data_ptr()
    assert m.W2.weight.data_ptr() == big["W2"].weight.data_ptr()
    assert m.W1.bias.data_ptr() == big["W1"].bias.data_ptr()
    assert m.W1.weight.shape == (K, D) and m.W2.weight.shape == (D, K)
    assert not list(m.parameters()) and not list(m.buffers())  # nothing copied or owned
    copied = {n: (w.detach().clone(), b.detach().clone())
              for n, (w, b) in inherit_weights(g, D, K, big).items()}
    ref = compile_graph(g, D, K, "eager", weights=copied)
    x = torch.randn(4, D)
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-6)
    m(x).sum().backward()
    g1 = big["W1"].weight.grad
    assert g1 is not None and g1[:K].abs().sum() > 0
    assert g1[K:].abs().sum() == 0 and big["W2"].weight.grad[:, K:].abs().sum() == 0
    with torch.no_grad():
        big["W1"].weight[0, 0] += 1.0  # the owner's update is seen without re-inheriting
    assert not torch.allclose(m(x), ref(x))


def test_inherit_weights_slices_any_graph() -> None:
    g = mlpgraph.parse(GLU_EXPRESSIONS[0])
    big = {"W1": torch.randn(40, 30), "W2": (torch.randn(40, 30), None), "W3": torch.nn.Linear(
        50, 30)}
    with torch.no_grad():  # views must keep their autograd link even when made here
        w = inherit_weights(g, D, K, big)
    assert w["W1"][0].shape == (K, D) and w["W3"][0].shape == (D, K)
    assert w["W3"][0].requires_grad and w["W3"][0]._base is big["W3"].weight
    assert w["W2"][1] is None
    with pytest.raises(WidthError, match="at least that large"):
        inherit_weights(g, 64, K, big)
    with pytest.raises(WidthError, match="no weights for linear W3"):
        inherit_weights(g, D, K, {"W1": big["W1"], "W2": big["W2"]})


def test_state_dict_round_trip_and_write_through() -> None:
    g = mlpgraph.parse(STANDARD_FFN)
    a = compile_graph(g, D, K, "torchscript", seed=1)
    b = compile_graph(g, D, K, "eager", seed=2)
    x = torch.randn(3, D)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), b(x))
    assert set(a.state_dict()) == {"W1.weight", "W1.bias", "W2.weight", "W2.bias"}
    big = _supernet(D, 30)
    c = compile_graph(g, D, K, "eager", weights=big)
    assert set(c.state_dict()) == set(a.state_dict())
    c.load_state_dict(a.state_dict())  # writes into the supernet's slice
    torch.testing.assert_close(big["W1"].weight[:K, :D], a.W1.weight)


# ------------------------------------------------------------------ the backend registry
def test_backend_registry_drives_compiler_and_cli(capsys) -> None:
    from mlpgraph import cli_compile

    assert list(BACKENDS) == ["eager", "inductor", "inductor-fused", "export", "torchscript"]
    assert [name for name, b in BACKENDS.items() if b.compiled_forms] == ["inductor",
                                                                          "inductor-fused"]
    calls = []

    @backends.backend("traced", options={"check_trace"}, doc="TorchScript tracing (a test)")
    def _traced(fx_module, example, options, warmup):
        calls.append(len(example))
        return torch.jit.trace(fx_module, example, check_trace=options.get("check_trace", False))

    try:
        m = check_against_evaluate(PAPER_EXPRESSIONS[4], "traced", borrowed=True,
                                   check_trace=True)
        assert m.backend == "traced" and calls == [5]  # x and four weights, built once
        with pytest.raises(BackendError, match=r"unknown option.*\['check_trace'\]"):
            compile_graph(STANDARD_FFN, D, K, "traced", strict=True)
        with pytest.raises(BackendError, match="already declared"):
            backends.backend("traced")(_traced)
        parser = argparse.ArgumentParser()
        cli_compile.register(parser.add_subparsers(), make_parents())
        args = parser.parse_args(["compile", STANDARD_FFN, "--d-model", "8", "--backend",
                                  "traced"])  # the CLI's choices come from the registry
        assert args.func(args) == 0 and "backend=traced" in capsys.readouterr().out
    finally:
        BACKENDS.pop("traced")
    with pytest.raises(BackendError, match="unknown backend 'traced'; choose one of eager"):
        compile_graph(STANDARD_FFN, D, K, "traced")


# ------------------------------------------------------------------ torchscript
def test_torchscript_warns_once(monkeypatch) -> None:
    monkeypatch.setitem(backends._TS_STATE, "warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compile_graph(STANDARD_FFN, D, K, "torchscript", seed=0)
        compile_graph(PAPER_EXPRESSIONS[0], D, K, "torchscript", seed=0)
    ours = [w for w in caught if issubclass(w.category, TorchScriptDeprecationWarning)]
    assert len(ours) == 1 and "export" in str(ours[0].message)
    assert ours[0].filename == __file__  # points at the caller


def test_torchscript_unsupported_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(backends._TS_STATE, "support", "RuntimeError: gone")
    clear_compile_cache()
    with pytest.raises(BackendError, match="no longer supports TorchScript.*'export'"):
        compile_graph(STANDARD_FFN, D, K, "torchscript")


def test_torchscript_trace_method() -> None:
    check_against_evaluate(PAPER_EXPRESSIONS[3], "torchscript", method="trace")


# ------------------------------------------------------------------ cache
def test_cache_hits_equivalent_graphs_and_stays_bounded() -> None:
    clear_compile_cache()
    set_compile_cache_size(3)
    try:
        a = compile_graph("W2(relu(W1(x)))", D, K, "torchscript", seed=0)
        b = compile_graph("W2(relu(relu(W1(x))))", D, K, "torchscript", seed=1)
        assert not a.report.cache_hit and b.report.cache_hit
        assert a.function is b.function and b.report.key == a.report.key
        x = torch.randn(2, D)
        assert not torch.allclose(a(x), b(x))  # shared code, own weights
        for expr in PAPER_EXPRESSIONS:
            compile_graph(expr, D, K, "torchscript")
        info = compile_cache_info()
        assert info.currsize == 3 and info.maxsize == 3 and info.evictions >= 3
        assert info.hits == 1
    finally:
        set_compile_cache_size(compiler.DEFAULT_CACHE_SIZE)
        clear_compile_cache()
    assert compile_cache_info().currsize == 0


def test_each_candidate_has_its_own_code_object() -> None:
    graphs = [mlpgraph.parse(f"W2({act}(W1(x)))") for act in
              ["gelu", "relu", "tanh", "sigmoid", "elu", "swish", "leaky_relu"]] + \
             [mlpgraph.parse(e) for e in PAPER_EXPRESSIONS]
    codes = set()
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
        for g in graphs:  # one shared code object would exceed the limit at the 2nd graph
            fgm = build_functional(g, D, K)
            codes.add(fgm.forward.__code__)
            fn = torch.compile(fgm.forward, backend="eager", fullgraph=True)
            w = mlpgraph.random_weights(g, D, K)
            args = [t for n in g.linears for t in w[n]]
            x = torch.randn(3, D)
            torch.testing.assert_close(fn(x, *args), fgm(x, *args))
    assert len(codes) == len(graphs)


# ------------------------------------------------------------------ kernels
@pytest.mark.parametrize("expr, kernels", [("tanh(W2(gelu(W1(x))))", 2),
                                           ("W2(relu(W1(x) * x))", 1)])
def test_inductor_kernel_counts(expr: str, kernels: int, tmp_path) -> None:
    r = inspect_inductor(expr, 64, 32, tokens=64, out_dir=tmp_path)
    assert r.matmuls == 2 and r.kernels == kernels, r.kernel_names
    assert (tmp_path / "fx_code.py").exists() and (tmp_path / "inductor_output_0.py").exists()


def test_count_kernels_cpu_and_triton_text() -> None:
    cpu = ("cpp_fused_gelu_0 = async_compile.cpp_pybinding(['float*'], r'''...''')\n"
           "# Original ATen: [aten.addmm]\n"
           "        extern_kernels.addmm(arg2_1, arg0_1, buf, alpha=1, beta=1, out=buf0)\n")
    assert count_kernels(cpu) == (["cpp_fused_gelu_0"], 1)
    triton = ("triton_poi_fused_gelu_0 = async_compile.triton('triton_poi_fused_gelu_0', '''\n"
              "''')\n        extern_kernels.mm(buf1, reinterpret_tensor(w, (8, 4)), out=buf2)\n")
    assert count_kernels(triton) == (["triton_poi_fused_gelu_0"], 1)


# ------------------------------------------------------------------ errors and devices
def test_device_selection() -> None:
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(None, {"W1": torch.zeros(2, 2)}) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(BackendError, match="several devices"):
        resolve_device(None, {"W1": torch.zeros(2, 2), "W2": torch.zeros(2, 2, device="meta")})


def test_errors_say_what_and_how() -> None:
    with pytest.raises(BackendError, match="unknown backend 'tvm'"):
        compile_graph(STANDARD_FFN, D, K, "tvm")
    with pytest.raises(BackendError, match="unknown option"):
        compile_graph(STANDARD_FFN, D, K, "inductor", warp_speed=True)
    with pytest.raises(BackendError, match="do not apply to backend 'eager'"):
        compile_graph(STANDARD_FFN, D, K, "eager", mode="max-autotune")
    with pytest.raises(BackendError, match="convert the owner first"):
        compile_graph(STANDARD_FFN, D, K, weights=_supernet(D, 30), dtype=torch.float64)
    with pytest.raises(WidthError, match="needs d_inner"):
        compile_graph(STANDARD_FFN, D, None, "torchscript")
    m = compile_graph(STANDARD_FFN, D, K, "export")
    with pytest.raises(WidthError, match="d_model=12"):
        m(torch.randn(2, D + 1))


@pytest.mark.parametrize("backend", CHEAP)
def test_deepcopy_keeps_module_working(backend: str) -> None:
    m = compile_graph(PAPER_EXPRESSIONS[3], D, K, backend, seed=0)
    c = copy.deepcopy(m)
    x = torch.randn(2, D)
    torch.testing.assert_close(c(x), m(x))
    assert c.W1.weight.data_ptr() != m.W1.weight.data_ptr() and c.mlp_graph is m.mlp_graph


@pytest.mark.parametrize("argv, printed, code", [
    (["W2(relu(W1(x) * x))", "--d-model", "16", "--d-inner", "8", "--backend", "eager"],
     ["compile:"], "linear(x, w1_weight, w1_bias)"),
    pytest.param(["W2(gelu(W1(x)))", "--d-model", "64", "--d-inner", "32", "--tokens", "64"],
                 ["1 fused kernel(s)", "2 matrix product(s)"], "w1_weight",
                 marks=pytest.mark.slow),
], ids=["eager", "inductor"])
def test_cli_compile(argv: list[str], printed: list[str], code: str, tmp_path, capsys) -> None:
    from mlpgraph import cli_compile

    parser = argparse.ArgumentParser()
    cli_compile.register(parser.add_subparsers(), make_parents())
    args = parser.parse_args(["compile", *argv, "--out", str(tmp_path)])
    assert args.func(args) == 0
    assert code in (tmp_path / "fx_code.py").read_text()
    out = capsys.readouterr().out
    assert all(text in out for text in printed), out


@pytest.mark.slow
def test_many_inductor_candidates_stay_within_dynamo_limits() -> None:
    clear_compile_cache()
    set_compile_cache_size(4)
    try:
        with torch._dynamo.config.patch(recompile_limit=2):
            for i, g in enumerate(RANDOM_GRAPHS[:10]):
                m = compile_graph(g, D, K, "inductor", seed=i)
                with torch.no_grad():
                    torch.testing.assert_close(
                        m(torch.ones(3, D)),
                        mlpgraph.evaluate(g, torch.ones(3, D),
                                          mlpgraph.random_weights(g, D, K, seed=i), K),
                        rtol=1e-5, atol=1e-5)
        assert compile_cache_info().currsize == 4
    finally:
        set_compile_cache_size(compiler.DEFAULT_CACHE_SIZE)
        clear_compile_cache()
