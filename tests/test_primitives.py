"""Primitive declarations: built-ins pass every check; bad declarations are refused."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch

import mlpgraph as mg
from mlpgraph.builtins import PAPER_BINARY, PAPER_UNARY
from mlpgraph.primitives import REGISTRY, Registry, check_primitive, primitive


@pytest.mark.parametrize("prim", list(REGISTRY), ids=lambda p: p.name)
def test_every_builtin_passes_registration_checks(prim):
    check_primitive(prim)


def test_builtin_set():
    names = set(REGISTRY.names())
    assert set(PAPER_UNARY) | set(PAPER_BINARY) <= names
    assert {"identity", "neg", "sub", "min", "square", "squared_relu", "softplus", "silu",
            "gelu_erf", "erf_gelu"} <= names
    assert mg.get_primitive("silu") is mg.get_primitive("swish")


def test_builtin_meanings_against_formulas():
    v = torch.linspace(-4, 4, 81, dtype=torch.float64)
    c = math.sqrt(2 / math.pi)
    ref = {
        "gelu": 0.5 * v * (1 + torch.tanh(c * (v + 0.044715 * v**3))),
        "gelu_erf": 0.5 * v * (1 + torch.erf(v / math.sqrt(2))),
        "leaky_relu": torch.where(v > 0, v, 0.01 * v),
        "elu": torch.where(v > 0, v, torch.exp(v) - 1),
        "swish": v / (1 + torch.exp(-v)),
        "squared_relu": torch.clamp(v, min=0) ** 2,
        "softplus": torch.log1p(torch.exp(v)),
    }
    for name, want in ref.items():
        torch.testing.assert_close(mg.get_primitive(name).fn(v), want, rtol=1e-12, atol=1e-12)


def _reg() -> Registry:
    return Registry()


def test_user_primitive_registers_and_works_everywhere():
    reg = REGISTRY

    @primitive(sympy=lambda a: a * sp.tanh(sp.log(1 + sp.exp(a))), tags={"activation"},
               flops=8, registry=reg)
    def mish_test(a):
        return a * torch.tanh(torch.nn.functional.softplus(a))

    g = mg.parse("W2(mish_test(W1(x)))")
    w = mg.random_weights(g, 6, 3)
    y = mg.evaluate(g, torch.randn(2, 6), w)
    assert y.shape == (2, 6)
    assert "tanh" in str(mg.to_sympy(g))
    # registering the same declaration again is a no-op, a different meaning is an error
    primitive(mish_test.fn, name="mish_test", sympy=mish_test.sym, tags={"activation"},
              flops=8)
    with pytest.raises(mg.PrimitiveError, match="different meaning"):
        @primitive(sympy=lambda a: sp.tanh(a), name="mish_test")
        def other(a):
            return torch.tanh(a)


@pytest.mark.parametrize("kwargs, fn, check", [
    ({"arity": 2, "sympy": lambda a: a}, lambda a: a, "arity"),
    ({"sympy": lambda a, b, c: a}, lambda a, b, c: a, "arity"),
    ({"sympy": lambda a: a}, lambda a: a.sum(), "shape"),
    ({"sympy": lambda a: a}, lambda a: a[..., :1], "shape"),
    ({"sympy": lambda a: sp.log(1 + sp.exp(a))}, lambda a: torch.log(1 + torch.exp(a)),
     "finite"),
    ({"sympy": lambda a: 1 / a}, lambda a: 1 / a, "finite"),
    ({"sympy": lambda a: sp.tanh(a)}, lambda a: torch.sigmoid(a), "sympy"),
    ({"sympy": lambda a, b: a - b, "commutative": True}, lambda a, b: a - b, "commutative"),
    ({"sympy": lambda a, b: a - b, "associative": True}, lambda a, b: a - b, "associative"),
    ({"sympy": sp.tanh, "idempotent": True, "arity": 1}, torch.tanh, "idempotent"),
    ({"sympy": lambda a, b: a + b, "identity": 1.0}, lambda a, b: a + b, "identity"),
    ({"sympy": lambda a, b: a + b, "absorbing": 0.0}, lambda a, b: a + b, "absorbing"),
    ({"sympy": lambda a: -a, "monotone": True}, lambda a: -a, "monotone"),
    ({"sympy": lambda a: a, "involution": True}, lambda a: a * 2, "sympy"),
])
def test_bad_declarations_are_refused(kwargs, fn, check):
    with pytest.raises(mg.PrimitiveError, match=check) as err:
        primitive(fn, name="bad_prim", registry=_reg(), **kwargs)
    assert "bad_prim" in str(err.value)


def test_refusal_names_the_value():
    with pytest.raises(mg.PrimitiveError, match=r"output inf at input \(1000.0,\)"):
        primitive(lambda a: torch.exp(a), name="expo", sympy=sp.exp, registry=_reg())


@pytest.mark.parametrize("name", ["x", "narrow", "W9", "Bad", "2x"])
def test_reserved_and_invalid_names(name):
    with pytest.raises(mg.PrimitiveError, match="name"):
        primitive(lambda a: a, name=name, sympy=lambda a: a, registry=_reg())


def test_lookup_resolves_names_and_aliases_without_raising():
    assert REGISTRY.lookup("swish") is REGISTRY.get("swish")
    assert REGISTRY.lookup("silu") is REGISTRY.get("swish")  # an alias
    assert REGISTRY.lookup("gelo") is None and REGISTRY.lookup("W1") is None


def test_unknown_primitive_suggests():
    with pytest.raises(mg.PrimitiveError, match="did you mean.*gelu"):
        mg.get_primitive("gelo")


def test_compiled_forms_match_float64_reference():
    """The compiled forms Inductor emits are at least as accurate as torch's own float32."""
    a = torch.cat([torch.linspace(-12, 12, 24001, dtype=torch.float64),
                   torch.logspace(-20, 1, 2000, dtype=torch.float64)])
    a = torch.cat([a, -a])
    c = math.sqrt(2 / math.pi)
    exact = {"tanh": torch.tanh,  # float64 references free of cancellation
             "gelu": lambda v: v * torch.sigmoid(2 * c * (v + 0.044715 * v**3))}
    for name in ("tanh", "gelu"):
        prim = mg.get_primitive(name)
        assert prim.compiled is not None
        ref = exact[name](a)
        got = prim.compiled(a.float()).double()
        torch_err = (prim.fn(a.float()).double() - ref).abs()
        # within 8 float32 ulps of the reference (exp of a large argument costs a few ulps),
        # or no worse than torch's own float32 form
        ulp = torch.finfo(torch.float32).eps * ref.abs()
        err = (got - ref).abs()
        # (absolute floor 1e-30: far left of 0, GELU's clamped exp gives ~1e-34, not 0)
        ok = (err <= 8 * ulp + 1e-30) | (err <= 1.5 * torch_err + 1e-30)
        assert bool(ok.all()), (name, a[~ok][:5].tolist())


def test_compiled_form_is_checked_and_emitted():
    reg = Registry()

    def wrong(a):
        return a * 1.001

    with pytest.raises(mg.PrimitiveError, match="compiled.*differs"):
        primitive(sympy=lambda a: 2 * a, name="twice", registry=reg, compiled=wrong)(
            lambda a: 2 * a)
    prim = mg.get_primitive("tanh")
    assert prim.torch_fn() is prim.fn and prim.torch_fn(compiled=True) is prim.compiled
    from mlpgraph.codegen import build_functional

    g = mg.parse("W2(tanh(W1(x)))")
    targets = {n.target for n in build_functional(g, 8, 4).graph.nodes}
    assert prim.fn in targets and prim.compiled not in targets
    targets = {n.target for n in build_functional(g, 8, 4, compiled_forms=True).graph.nodes}
    assert prim.compiled in targets and prim.fn not in targets


def test_compiled_tanh_stays_in_range_and_half_precision_is_finite():
    x = torch.linspace(-20, 20, 400001)
    t = mg.get_primitive("tanh").compiled(x)
    assert float(t.abs().max()) <= 1.0
    for name in ("tanh", "gelu"):
        prim = mg.get_primitive(name)
        for dtype in (torch.float16, torch.bfloat16):
            a = torch.linspace(-12, 12, 2001).to(dtype).requires_grad_()
            y = prim.compiled(a)
            (g,) = torch.autograd.grad(y.sum(), a)
            assert y.dtype == dtype and bool(torch.isfinite(y).all() & torch.isfinite(g).all())


def test_compiled_form_of_a_gate_and_reregistration():
    reg = Registry()

    def gate(a, b):
        return torch.where(b > 0, a, torch.zeros_like(a))

    def gate2(a, b):  # no gradient reaches b at all: allowed
        return a * (b > 0).to(a.dtype)

    def sym(a, b):
        return sp.Piecewise((a, b > 0), (0, True))

    prim = primitive(sympy=sym, name="gate", registry=reg, compiled=gate2)(gate)
    assert prim.compiled is gate2
    with pytest.raises(mg.PrimitiveError, match="another compiled form"):
        primitive(sympy=sym, name="gate", registry=reg, compiled=lambda a, b: a * (b > 0))(gate)


def test_reloading_the_builtins_keeps_the_registry():
    import importlib

    import mlpgraph.builtins

    before = {p.name: p for p in REGISTRY}
    importlib.reload(mlpgraph.builtins)  # the same declarations again: accepted, unchanged
    assert {p.name: p for p in REGISTRY} == before
