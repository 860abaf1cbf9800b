"""IR -> ``torch.fx``: the functional form of a :class:`Graph`, built node by node.

No tracing is involved. :func:`build_functional` returns a parameter-free
``GraphModule`` computing ``forward(x, w1_weight, w1_bias, ...)``: the placeholders are
the input and then the weights in :func:`weight_arg_names` order. Every module built by
:mod:`mlpgraph.compiler`, whatever its backend and whether it owns its weights or
borrows a supernet's, runs this form (or a backend's compiled artifact of it).

Each IR node becomes exactly one FX node (shared IR nodes are computed once);
:func:`_fx_call` is the one place that reads node fields:

- ``x`` -> the placeholder ``x``;
- a linear ``W1`` -> ``F.linear(h, w1_weight, w1_bias)``;
- a primitive -> a call of its registered torch function (user primitives alike), or
  of its compiled-backend form (:attr:`Primitive.compiled`) when asked;
- ``narrow`` -> ``h[..., :m]`` with ``m = min(d, k)`` bound at build time;
- a constant -> ``x.new_full((), c)`` (scalar) or :func:`fill` (a filled tensor).

The *fused* form (``fused=``, used by the ``inductor-fused`` backend for inference) runs
every linear as a oneDNN GEMM and emits a linear together with the primitive its GEMM
absorbs as one call (:func:`_fused_call`; the plan is :mod:`mlpgraph.fusion`'s).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .errors import WidthError
from .fusion import FusedCalls
from .graph import Graph
from .ir import Node, Op, Width

__all__ = ["build_functional", "fill", "inner_width", "weight_arg_names"]

#: one FX call: (opcode, target, args, node name)
FxCall = tuple[str, Any, tuple, str]


def fill(x: torch.Tensor, width: int, value: float) -> torch.Tensor:
    """A tensor with ``x``'s leading shape, ``width`` channels, every entry ``value``."""
    size = list(x.shape[:-1])
    size.append(width)
    return x.new_full(size, value)


def weight_arg_names(graph: Graph, has_bias: Mapping[str, bool]) -> list[tuple[str, str]]:
    """``(layer, "weight" | "bias")`` in the order the functional form takes them."""
    out = []
    for name in graph.linears:
        out.append((name, "weight"))
        if has_bias.get(name, False):
            out.append((name, "bias"))
    return out


def inner_width(graph: Graph, d_model: int, d_inner: int | None) -> int:
    """``d_inner``, or ``d_model`` as a stand-in when the graph has no k/m-wide node."""
    if d_inner is None:
        if any(n.width in (Width.K, Width.M) for n in graph.nodes):
            raise WidthError(f"{graph} has nodes of width k or m, so it needs d_inner; pass "
                             "d_inner=<inner width>")
        return d_model
    return d_inner


def _fx_call(n: Node, ins: list[torch.fx.Node], x: torch.fx.Node,
             weights: Mapping[str, tuple[torch.fx.Node, torch.fx.Node | None]],
             d_model: int, d_inner: int, compiled_forms: bool) -> FxCall:
    """The FX call computing IR node ``n`` from its children's FX nodes ``ins``."""
    if n.op is Op.CONST:
        if n.width is Width.S:
            return "call_method", "new_full", (x, (), n.value), "const"
        return "call_function", fill, (x, n.width.bind(d_model, d_inner), n.value), "fill"
    if n.op is Op.NARROW:
        cut = (Ellipsis, slice(None, Width.M.bind(d_model, d_inner), None))
        return "call_function", operator.getitem, (ins[0], cut), "narrow"
    if n.op is Op.LINEAR:
        return "call_function", F.linear, (ins[0], *weights[n.name]), n.name.lower()
    return "call_function", n.prim.torch_fn(compiled_forms), tuple(ins), n.prim.name


def _fused_call(n: Node, vals: Mapping[int, torch.fx.Node],
                weights: Mapping[str, tuple[torch.fx.Node, torch.fx.Node | None]],
                fused: FusedCalls) -> FxCall:
    """The oneDNN call for a linear ``n`` alone, or for a primitive ``n`` with the linear
    it absorbs (see :mod:`mlpgraph.fusion`)."""
    e = fused.plan.get(n)
    if e is None:  # a linear outside the plan: the GEMM alone
        w, b = weights[n.name]
        return ("call_function", fused.unary,
                (vals[id(n.src[0])], w, b, "none", [], "", fused.prepack), n.name.lower())
    w, b = weights[e.linear.name]
    h, name = vals[id(e.linear.src[0])], f"{e.linear.name.lower()}_{n.prim.name}"
    if e.other is None:
        return ("call_function", fused.unary,
                (h, w, b, e.attr, list(e.scalars), e.algorithm, fused.prepack), name)
    return "call_function", fused.binary, (h, vals[id(e.other)], w, b, e.attr,
                                           fused.prepack), name


def build_functional(graph: Graph, d_model: int, d_inner: int | None, *,
                     has_bias: Mapping[str, bool] | bool = True,
                     compiled_forms: bool = False,
                     fused: FusedCalls | None = None) -> torch.fx.GraphModule:
    """A parameter-free ``GraphModule`` computing ``forward(x, w1_weight, w1_bias, ...)``.

    ``has_bias`` says which layers take a bias. ``compiled_forms``: call each primitive's
    compiled-backend form where it declares one (e.g. a rational tanh for Inductor).
    ``fused``: run every linear as a oneDNN GEMM and let it absorb the primitives its
    plan names (:func:`mlpgraph.fusion.fused_calls`; inference only).
    Every call builds a new module with its own generated code object, so
    ``torch.compile`` keeps a separate cache (and recompile budget) per candidate.
    Its ``meta["mlpgraph"]`` records the graph, widths and options it was built from.
    """
    if isinstance(has_bias, bool):
        has_bias = dict.fromkeys(graph.linears, has_bias)
    k = inner_width(graph, d_model, d_inner)
    fx = torch.fx.Graph()
    x = fx.placeholder("x")
    weights: dict[str, tuple[torch.fx.Node, torch.fx.Node | None]] = {}
    for layer, kind in weight_arg_names(graph, has_bias):
        ph = fx.placeholder(f"{layer.lower()}_{kind}")
        weights[layer] = (ph, None) if kind == "weight" else (weights[layer][0], ph)
    vals: dict[int, torch.fx.Node] = {}
    absorbed = {e.linear for e in fused.plan.values()} if fused is not None else set()
    for n in graph.nodes:
        if n.op is Op.INPUT:
            vals[id(n)] = x
            continue
        if n in absorbed:  # computed by its parent's fused call (its only user)
            continue
        if fused is not None and (n in fused.plan or n.op is Op.LINEAR):
            op, target, args, name = _fused_call(n, vals, weights, fused)
        else:
            ins = [vals[id(s)] for s in n.src]
            op, target, args, name = _fx_call(n, ins, x, weights, d_model, k, compiled_forms)
        vals[id(n)] = fx.create_node(op, target, args, name=name)
    fx.output(vals[id(graph.root)])
    fx.lint()
    gm = torch.fx.GraphModule(nn.Module(), fx, class_name="MLPFunctional")
    gm.meta["mlpgraph"] = {"graph": graph, "d_model": d_model, "d_inner": d_inner,
                           "has_bias": dict(has_bias), "compiled_forms": compiled_forms,
                           "fused": fused is not None}
    return gm
