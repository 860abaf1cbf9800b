"""GEMM-epilogue fusion: a linear's bias and the op that follows it, computed by the GEMM.

On CPU the matrix products run through oneDNN (``torch.ops.mkldnn._linear_pointwise``),
which applies one *post-op* to the GEMM's output tile while it is still in cache: a
unary activation (:data:`ONEDNN_UNARY`) or a binary op with a resident operand of the
output's shape (:data:`ONEDNN_BINARY`). :func:`plan_epilogues` decides, from the IR alone,
which primitive nodes a linear absorbs; the code generator then emits one fused call for
the pair (:mod:`mlpgraph.codegen`). A primitive is absorbed only if oneDNN's post-op
computes the same function as the primitive's own torch form, checked numerically the
first time (:func:`onednn_equivalent`), so a user primitive re-registered under a built-in
name falls back, op by op, to ordinary code. On CUDA, Inductor's Triton matmul templates
fuse epilogues themselves (:func:`epilogue_plan` returns ``"triton"`` and
:data:`TRITON_OPTIONS`).

The oneDNN ops have no autograd formula: fused forms are for inference. Weights are
reordered once into oneDNN's blocked layout (:func:`packed_weight`) and the reorder is
reused while the weight is the same tensor at the same version (an in-place update, e.g.
an optimizer step, bumps the version and the next call reorders again).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .graph import Graph
from .ir import Node, Op, describe
from .primitives import Primitive

__all__ = ["ONEDNN_BINARY", "ONEDNN_UNARY", "PACK_CACHE_BYTES", "TRITON_OPTIONS", "Epilogue",
           "FusedCalls", "describe_plan", "epilogue_plan", "fused_calls", "linear_binary",
           "linear_unary", "needs_kernels", "onednn_available", "onednn_equivalent",
           "packed_weight", "plan_epilogues"]

#: primitive name -> oneDNN unary post-op (attr, scalars, algorithm)
ONEDNN_UNARY: dict[str, tuple[str, tuple[float, ...], str]] = {
    "relu": ("relu", (), ""), "sigmoid": ("sigmoid", (), ""), "tanh": ("tanh", (), ""),
    "gelu": ("gelu", (), "tanh"), "gelu_erf": ("gelu", (), "none"), "swish": ("swish", (), ""),
    "leaky_relu": ("leaky_relu", (0.01,), ""),
}
#: primitive name -> oneDNN binary post-op (``linear(h) <op> other``)
ONEDNN_BINARY: dict[str, str] = {"add": "add", "sub": "sub", "mul": "mul"}
#: Inductor options that let its Triton matmul templates take the epilogue (CUDA)
TRITON_OPTIONS = {"max_autotune": True, "epilogue_fusion": True}
_DTYPES = (torch.float32, torch.bfloat16)
PACK_CACHE_BYTES = 256 * 2**20  # reordered weights kept (bytes)


@dataclass(frozen=True)
class FusedCalls:
    """What the code generator emits for a fused form: the :func:`plan_epilogues` plan,
    the unary and binary call targets (the plain functions, or the custom ops
    ``mlpgraph::linear_unary`` / ``linear_binary`` when Inductor compiles around them),
    whether weights are reordered once (``prepack``) and whether elementwise work is
    left (``kernels``). Linears outside the plan run as oneDNN GEMMs too (``attr="none"``)."""

    plan: dict[Node, Epilogue]
    unary: Callable[..., torch.Tensor]
    binary: Callable[..., torch.Tensor]
    prepack: bool = True
    kernels: bool = False  # elementwise work is left outside the GEMMs (needs_kernels)


@dataclass(frozen=True)
class Epilogue:
    """A primitive node absorbed into the GEMM of ``linear``: ``attr`` with ``scalars`` and
    ``algorithm`` (unary), or ``attr`` applied with ``other`` (binary: ``linear <attr>
    other``)."""

    linear: Node
    attr: str
    scalars: tuple[float, ...] = ()
    algorithm: str = ""
    other: Node | None = None


def onednn_available() -> bool:
    """Whether this torch has oneDNN's fused linear ops."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                            "_linear_pointwise")


def epilogue_plan(device: torch.device, dtype: torch.dtype) -> str | None:
    """``"onednn"`` (CPU, float32/bfloat16, oneDNN present), ``"triton"`` (CUDA) or
    ``None`` (no library fuses epilogues here: the plain Inductor form runs)."""
    if device.type == "cuda":
        return "triton"
    if device.type == "cpu" and dtype in _DTYPES and onednn_available():
        return "onednn"
    return None


# ------------------------------------------------------------------ the oneDNN calls
_PACKED: OrderedDict[tuple, tuple[weakref.ref, int, torch.Tensor, int]] = OrderedDict()
_LOCK = threading.Lock()


def packed_weight(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """``weight`` reordered for oneDNN (tuned for ``rows`` input rows), cached while it is
    the same tensor (or a view of the same base) at the same version. Torch's in-place
    ops (optimizer steps, ``load_state_dict``, edits under ``no_grad``) bump the version;
    writes through ``.data`` or foreign views of the storage do not: use
    ``prepack=False`` for weights changed that way. The cache holds at most
    :data:`PACK_CACHE_BYTES` of reordered weights and drops those of freed tensors."""
    base = weight if weight._base is None else weight._base
    try:
        version = weight._version
    except RuntimeError:  # an inference-mode tensor: no version counter, so no caching
        return torch.ops.mkldnn._reorder_linear_weight(weight, rows)
    key = (weight.data_ptr(), tuple(weight.shape), weight.stride(), weight.dtype)
    with _LOCK:
        hit = _PACKED.get(key)
        if hit is not None and hit[0]() is base and hit[1] == version:
            _PACKED.move_to_end(key)
            return hit[2]
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
    size = weight.numel() * weight.element_size()
    with _LOCK:
        _PACKED[key] = (weakref.ref(base), version, packed, size)
        for k in [k for k, v in _PACKED.items() if v[0]() is None]:
            del _PACKED[k]
        total = sum(v[3] for v in _PACKED.values())
        while total > PACK_CACHE_BYTES and len(_PACKED) > 1:
            total -= _PACKED.popitem(last=False)[1][3]
    return packed


def linear_unary(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, attr: str,
                 scalars: list[float], algorithm: str, prepack: bool) -> torch.Tensor:
    """``post_op(F.linear(x, weight, bias))`` by oneDNN (``attr="none"``: the GEMM alone)."""
    w = packed_weight(weight, x.shape[0]) if prepack else weight
    return torch.ops.mkldnn._linear_pointwise(x, w, bias, attr, scalars, algorithm or None)


def linear_binary(x: torch.Tensor, other: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None, attr: str, prepack: bool) -> torch.Tensor:
    """``F.linear(x, weight, bias) <attr> other`` by oneDNN (attr add, sub or mul)."""
    w = packed_weight(weight, x.shape[0]) if prepack else weight
    return torch.ops.mkldnn._linear_pointwise.binary(x, other, w, bias, attr)


def _out_like(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


# the same calls as opaque custom ops, for graphs that Inductor compiles around them
if onednn_available():
    @torch.library.custom_op("mlpgraph::linear_unary", mutates_args=())
    def _linear_unary_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         attr: str, scalars: list[float], algorithm: str,
                         prepack: bool) -> torch.Tensor:
        return linear_unary(x, weight, bias, attr, scalars, algorithm, prepack)

    @_linear_unary_op.register_fake
    def _(x, weight, bias, attr, scalars, algorithm, prepack):  # noqa: ANN001, ANN202
        return _out_like(x, weight)

    @torch.library.custom_op("mlpgraph::linear_binary", mutates_args=())
    def _linear_binary_op(x: torch.Tensor, other: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None, attr: str, prepack: bool) -> torch.Tensor:
        return linear_binary(x, other, weight, bias, attr, prepack)

    @_linear_binary_op.register_fake
    def _(x, other, weight, bias, attr, prepack):  # noqa: ANN001, ANN202
        return _out_like(x, weight)


# ------------------------------------------------------------------ checks and plan
_VERIFIED: weakref.WeakKeyDictionary[Primitive, bool] = weakref.WeakKeyDictionary()


def onednn_equivalent(prim: Primitive) -> bool:
    """Whether oneDNN's post-op of the same name computes ``prim``'s torch form (float32,
    on probes over [-12, 12]; memoized per primitive object)."""
    hit = _VERIFIED.get(prim)
    if hit is not None:
        return hit
    ok = False
    if onednn_available() and (prim.name in ONEDNN_UNARY or prim.name in ONEDNN_BINARY):
        a = torch.linspace(-12.0, 12.0, 2001).reshape(-1, 1)
        b = torch.linspace(3.0, -9.0, 2001).reshape(-1, 1)
        eye = torch.ones(1, 1)
        with torch.no_grad():
            if prim.arity == 1 and prim.name in ONEDNN_UNARY:
                attr, scalars, alg = ONEDNN_UNARY[prim.name]
                got = linear_unary(a, eye, None, attr, list(scalars), alg, False)
                want = prim.fn(a)
            elif prim.arity == 2 and prim.name in ONEDNN_BINARY:
                got = linear_binary(a, b, eye, None, ONEDNN_BINARY[prim.name], False)
                want = prim.fn(a, b)
            else:
                got = want = None
        ok = got is not None and bool(torch.allclose(got, want.to(got.dtype), rtol=1e-4,
                                                     atol=1e-5))
    _VERIFIED[prim] = ok
    return ok


def plan_epilogues(graph: Graph) -> dict[Node, Epilogue]:
    """Primitive nodes of ``graph`` that a linear's GEMM absorbs, with how.

    A linear used once (by its parent only) absorbs that parent when the parent is a unary
    primitive with an equivalent oneDNN post-op, or ``add``/``mul`` (either side) or
    ``sub`` (left side) whose other operand has the linear's width (a resident tensor of
    the output's shape).
    """
    uses = graph.uses()
    plan: dict[Node, Epilogue] = {}
    for n in graph.nodes:
        if n.op is not Op.PRIM or not onednn_equivalent(n.prim):
            continue
        if n.prim.arity == 1:
            lin = n.src[0]
            if lin.op is Op.LINEAR and uses[lin] == 1:
                attr, scalars, alg = ONEDNN_UNARY[n.prim.name]
                plan[n] = Epilogue(lin, attr, scalars, alg)
            continue
        sides = (0,) if n.prim.name == "sub" else (0, 1)
        for i in sides:
            lin, other = n.src[i], n.src[1 - i]
            if lin.op is Op.LINEAR and uses[lin] == 1 and other.width is lin.width \
                    and other is not lin:
                plan[n] = Epilogue(lin, ONEDNN_BINARY[n.prim.name], other=other)
                break
    return plan


def needs_kernels(graph: Graph, plan: dict[Node, Epilogue]) -> bool:
    """Whether elementwise work is left outside the GEMMs (a primitive not absorbed, or a
    constant to fill), i.e. whether compiling the rest with Inductor can pay."""
    return any((n.op is Op.PRIM and n not in plan) or n.op is Op.CONST for n in graph.nodes)


def fused_calls(graph: Graph, *, prepack: bool = True) -> FusedCalls:
    """The fused calls for ``graph``: its plan, and the plain functions, or the opaque
    custom ops wrapping them when elementwise work is left for Inductor to compile."""
    plan = plan_epilogues(graph)
    if needs_kernels(graph, plan):
        return FusedCalls(plan, torch.ops.mlpgraph.linear_unary,
                          torch.ops.mlpgraph.linear_binary, prepack, True)
    return FusedCalls(plan, linear_unary, linear_binary, prepack, False)


def describe_plan(graph: Graph) -> list[str]:
    """Each absorbed op as ``"W1 + gelu"`` (unary) or ``"W1 mul <operand>"`` (binary)."""
    out = []
    for n, e in plan_epilogues(graph).items():
        if e.other is None:
            out.append(f"{e.linear.name} + {n.prim.name}")
        else:
            out.append(f"{e.linear.name} {n.prim.name} {describe(e.other, 30)}")
    return out
