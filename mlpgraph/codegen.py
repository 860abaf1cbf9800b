"""IR -> ``torch.fx``: build an FX graph node by node, straight from a :class:`Graph`.

No tracing is involved. Each IR node becomes exactly one FX node (shared IR nodes
are therefore computed once):

- ``x`` -> placeholder ``x``;
- a linear ``W1`` -> ``self.W1(h)`` (module form) or ``F.linear(h, w1_weight, w1_bias)``
  with the weights as placeholders (functional form, used by the compiled backends so
  one compiled artifact serves every module with the same structure);
- a primitive -> a call of its registered ``.fn`` (user primitives work the same way);
- ``narrow`` -> ``h[..., :m]`` with ``m = min(d, k)`` bound at build time;
- a constant -> ``x.new_full((), c)`` (scalar) or :func:`fill` (a filled tensor).

:class:`MLPModule` is the eager module: a ``GraphModule`` whose submodules are
:class:`LinearSlot` layers named after the graph's linears, so its parameters are
``W1.weight``, ``W1.bias``, ... and ``module.code`` is the generated Python.
:class:`CompiledMLP` and :class:`ExportedMLP` wrap compiled artifacts the same way;
:func:`inherit_weights` / :func:`make_slots` provide the layers' (shared) weights.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Mapping
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .cost import linear_shapes
from .errors import BackendError, WidthError
from .ir import Graph, Node, Op, Width

__all__ = [
    "CompiledMLP", "ExportedMLP", "LinearSlot", "MLPModule", "as_weight_pair",
    "build_functional", "build_fx_graph", "build_module", "fill", "inherit_weights",
    "make_slots", "weight_arg_names",
]


def fill(x: torch.Tensor, width: int, value: float) -> torch.Tensor:
    """A tensor with ``x``'s leading shape, ``width`` channels, every entry ``value``."""
    size = list(x.shape[:-1])
    size.append(width)
    return x.new_full(size, value)


class LinearSlot(nn.Module):
    """One linear layer, ``F.linear(h, weight, bias)`` in ``nn.Linear`` layout.

    An *owned* slot holds ``nn.Parameter`` s. An *inherited* slot holds views of
    tensors owned by another module (a supernet) as persistent buffers: nothing is
    copied, gradients flow to the owner, ``state_dict`` still names them
    ``weight``/``bias`` and ``load_state_dict`` writes through into the owner.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.inherited = False
        for name, t in (("weight", weight), ("bias", bias)):
            if t is None:
                self.register_parameter(name, None)
            elif isinstance(t, nn.Parameter):
                self.register_parameter(name, t)  # shared object: grads accumulate in it
            elif t.requires_grad:
                self.register_buffer(name, t)  # a view with an autograd link to its owner
                self.inherited = True
            else:
                self.register_parameter(name, nn.Parameter(t))  # shares storage, no copy

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight, self.bias)

    def extra_repr(self) -> str:
        kind = "inherited" if self.inherited else "owned"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, {kind}")


def weight_arg_names(graph: Graph, has_bias: Mapping[str, bool]) -> list[tuple[str, str]]:
    """``(layer, "weight" | "bias")`` in the order the functional form takes them."""
    out = []
    for name in graph.linears:
        out.append((name, "weight"))
        if has_bias.get(name, False):
            out.append((name, "bias"))
    return out


def _node_name(n: Node) -> str:
    if n.op is Op.LINEAR:
        return n.name.lower()
    if n.op is Op.NARROW:
        return "narrow"
    if n.op is Op.CONST:
        return "const" if n.width is Width.S else "fill"
    return n.name


def _inner(graph: Graph, d_model: int, d_inner: int | None) -> int:
    """``d_inner``, or ``d_model`` as a stand-in when the graph has no k/m-wide node."""
    if d_inner is None:
        if any(n.width in (Width.K, Width.M) for n in graph.nodes):
            raise WidthError(f"{graph} has nodes of width k or m, so it needs d_inner; pass "
                             "d_inner=<inner width>")
        return d_model
    return d_inner


def build_fx_graph(graph: Graph, d_model: int, d_inner: int | None, *,
                   has_bias: Mapping[str, bool] | bool = True,
                   functional: bool = False, compiled_forms: bool = False) -> torch.fx.Graph:
    """The FX graph of ``graph`` at integer widths.

    ``functional=False``: linears are ``call_module`` nodes on submodules named after
    the layers. ``functional=True``: the placeholders are ``x`` followed by
    :func:`weight_arg_names` (``w1_weight``, ``w1_bias``, ...) and linears are
    ``F.linear`` calls. ``has_bias`` says which layers take a bias (functional form).
    ``compiled_forms``: call each primitive's compiled-backend form where it declares one
    (:attr:`Primitive.compiled`, e.g. a rational tanh for Inductor) instead of its main form.
    """
    if isinstance(has_bias, bool):
        has_bias = dict.fromkeys(graph.linears, has_bias)
    _inner(graph, d_model, d_inner)
    fx = torch.fx.Graph()
    x = fx.placeholder("x")
    params: dict[tuple[str, str], torch.fx.Node] = {}
    if functional:
        for layer, kind in weight_arg_names(graph, has_bias):
            params[layer, kind] = fx.placeholder(f"{layer.lower()}_{kind}")
    vals: dict[int, torch.fx.Node] = {}
    for n in graph.nodes:
        name = _node_name(n)
        if n.op is Op.INPUT:
            v = x
        elif n.op is Op.CONST:
            if n.width is Width.S:
                v = fx.create_node("call_method", "new_full", (x, (), n.value), name=name)
            else:
                v = fx.create_node("call_function", fill,
                                   (x, n.width.bind(d_model, d_inner), n.value), name=name)
        elif n.op is Op.NARROW:
            m = Width.M.bind(d_model, d_inner)
            v = fx.create_node("call_function", operator.getitem,
                               (vals[id(n.src[0])], (Ellipsis, slice(None, m, None))), name=name)
        elif n.op is Op.LINEAR:
            h = vals[id(n.src[0])]
            layer = n.name
            if functional:
                args = (h, params[layer, "weight"], params.get((layer, "bias")))
                v = fx.create_node("call_function", F.linear, args, name=name)
            else:
                v = fx.create_node("call_module", layer, (h,), name=name)
        else:
            fn = n.prim.torch_fn(compiled_forms)
            v = fx.create_node("call_function", fn, tuple(vals[id(s)] for s in n.src), name=name)
        vals[id(n)] = v
    fx.output(vals[id(graph.root)])
    fx.lint()
    return fx


def build_functional(graph: Graph, d_model: int, d_inner: int | None, *,
                     has_bias: Mapping[str, bool] | bool = True,
                     compiled_forms: bool = False) -> torch.fx.GraphModule:
    """A parameter-free ``GraphModule`` computing ``forward(x, w1_weight, w1_bias, ...)``.

    Every call builds a new module with its own generated code object, so
    ``torch.compile`` keeps a separate cache (and recompile budget) per candidate.
    """
    fx = build_fx_graph(graph, d_model, d_inner, has_bias=has_bias, functional=True,
                        compiled_forms=compiled_forms)
    return torch.fx.GraphModule(nn.Module(), fx, class_name="MLPFunctional")


class MLPModule(torch.fx.GraphModule):
    """The eager module of a graph: generated FX code over :class:`LinearSlot` layers.

    Attributes: ``mlp_graph`` (the :class:`Graph`), ``d_model``, ``d_inner``,
    ``backend`` (``"eager"``), ``compile_seconds`` and ``report`` (set by the compiler).
    """

    def __init__(self, graph: Graph, d_model: int, d_inner: int | None,
                 slots: Mapping[str, LinearSlot]) -> None:
        fx = build_fx_graph(graph, d_model, d_inner, functional=False)
        super().__init__(dict(slots), fx, class_name="MLPModule")
        self.mlp_graph = graph
        self.d_model = d_model
        self.d_inner = d_inner
        self.backend = "eager"
        self.compile_seconds = 0.0
        self.report = None

    def __deepcopy__(self, memo: dict) -> MLPModule:
        # GraphModule's deepcopy would rebuild a plain GraphModule and drop our attributes
        slots = {n: copy.deepcopy(getattr(self, n), memo) for n in self.mlp_graph.linears}
        res = MLPModule(self.mlp_graph, self.d_model, self.d_inner, slots)
        res.compile_seconds, res.report = self.compile_seconds, self.report
        memo[id(self)] = res
        return res


def build_module(graph: Graph, d_model: int, d_inner: int | None,
                 slots: Mapping[str, LinearSlot]) -> MLPModule:
    """An :class:`MLPModule` over ``slots`` (one :class:`LinearSlot` per linear name)."""
    missing = [name for name in graph.linears if name not in slots]
    if missing:
        raise WidthError(f"no linear layer for {', '.join(missing)}; pass one LinearSlot per "
                         f"linear name of the graph ({', '.join(graph.linears)})")
    return MLPModule(graph, d_model, d_inner, {name: slots[name] for name in graph.linears})


# ------------------------------------------------------------------ compiled wrappers
class CompiledMLP(nn.Module):
    """A candidate run by a compiled artifact (see :mod:`mlpgraph.compiler`).

    Its layers are the graph's linears (``W1.weight``, ...); ``artifact`` provides
    ``runner(x2d, *weights)``, ``arg_names`` (:func:`weight_arg_names` order),
    ``fx_module`` (the functional FX form), ``graph`` (what was compiled) and
    ``backend``. Inputs may have any leading shape ``[..., d_model]``: they are
    flattened to 2-D around the runner, so one compiled graph serves every rank.
    """

    def __init__(self, graph: Graph, d_model: int, d_inner: int | None,
                 slots: Mapping[str, LinearSlot], artifact: Any) -> None:
        super().__init__()
        for name in graph.linears:
            self.add_module(name, slots[name])
        self.mlp_graph, self.d_model, self.d_inner = graph, d_model, d_inner
        self.backend = artifact.backend
        self.compile_seconds = 0.0
        self.report = None
        self._artifact = artifact

    @property
    def code(self) -> str:
        """The generated Python of the functional FX form the backend compiled."""
        return self._artifact.fx_module.code

    def __deepcopy__(self, memo: dict) -> CompiledMLP:
        memo.setdefault(id(self.mlp_graph), self.mlp_graph)  # keep hash-consed nodes shared
        res = self.__class__.__new__(self.__class__)
        memo[id(self)] = res
        res.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return res

    @property
    def compiled_graph(self) -> Graph:
        """The graph the backend compiled (the simplified one unless ``simplify=False``)."""
        return self._artifact.graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_model:
            raise WidthError(f"input has {x.shape[-1]} features in its last dimension; this "
                             f"MLP was built for d_model={self.d_model}")
        lead = x.shape[:-1]
        weights = [getattr(getattr(self, layer), kind) for layer, kind in self._artifact.arg_names]
        y = self._artifact.runner(x.reshape(-1, self.d_model), *weights)
        return y.reshape(*lead, y.shape[-1])

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, expression={str(self.mlp_graph)!r}"


class ExportedMLP(nn.Module):
    """A loaded ``torch.export`` program over 2-D inputs, taking any leading shape."""

    def __init__(self, program: torch.export.ExportedProgram, graph: Graph, d_model: int,
                 d_inner: int | None) -> None:
        super().__init__()
        runner = program.module()
        for name, child in runner.named_children():
            if not name.startswith("_"):
                self.add_module(name, child)
        self.program = program
        self._runner = [runner]  # in a list: its layers are registered above, once
        self.mlp_graph, self.d_model, self.d_inner = graph, d_model, d_inner
        self.backend, self.compile_seconds, self.report = "export", 0.0, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = self._runner[0](x.reshape(-1, self.d_model))
        return y.reshape(*lead, y.shape[-1])


# ------------------------------------------------------------------ weights
def as_weight_pair(value: Any, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(weight, bias)`` from a pair, a lone weight tensor or an ``nn.Linear``-like object."""
    if isinstance(value, torch.Tensor):
        return value, None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    if hasattr(value, "weight"):
        return value.weight, getattr(value, "bias", None)
    raise WidthError(f"weights[{name!r}] is a {type(value).__name__}; pass (weight, bias), "
                     "a weight tensor or an nn.Linear")


def _cut(t: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
    if tuple(t.shape) == shape:
        return t
    if t.dim() != len(shape) or any(have < want for have, want in zip(t.shape, shape,
                                                                      strict=True)):
        raise WidthError(f"{what} has shape {tuple(t.shape)}, but the candidate needs {shape}; "
                         "inherited tensors must be at least that large in every dimension")
    return t[tuple(slice(0, n) for n in shape)]


def inherit_weights(graph: Graph, d_model: int, d_inner: int | None,
                    big: Mapping[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Views of larger (supernet) weights for ``graph``'s linears, without copying.

    Each linear gets the first ``out`` rows and first ``in`` columns of ``big[name]``'s
    weight (``nn.Linear`` layout ``[out, in]``) and the first ``out`` bias entries. The
    views keep their autograd link, so gradients flow to the owner's parameters.
    """
    missing = [n for n in graph.linears if n not in big]
    if missing:
        raise WidthError(f"no weights for linear {', '.join(missing)} (given: "
                         f"{', '.join(map(str, big)) or 'none'}); pass one per linear name")
    d_inner = _inner(graph, d_model, d_inner)
    out = {}
    with torch.enable_grad():  # views made under no_grad would lose their link to the owner
        for name, (o, i) in linear_shapes(graph, d_model, d_inner).items():
            w, b = as_weight_pair(big[name], name)
            wv = _cut(w, (o, i), f"weight of {name}")
            bv = None if b is None else _cut(b, (o,), f"bias of {name}")
            out[name] = (wv, bv)
    return out


def make_slots(graph: Graph, d_model: int, d_inner: int | None, weights: Mapping | None,
               bias: bool, dtype: torch.dtype, device: torch.device, seed: int | None
               ) -> dict[str, LinearSlot]:
    """One :class:`LinearSlot` per linear: over (views of) ``weights`` if given, else with
    fresh ``nn.Linear``-style weights drawn from ``seed`` (the same draws as
    :func:`mlpgraph.random_weights`) or, if ``seed`` is None, from torch's global RNG."""
    if weights is not None:
        pairs = inherit_weights(graph, d_model, d_inner, weights)
        for name, (w, b) in pairs.items():
            for t in (w, b):
                if t is not None and (t.dtype != dtype or t.device != device):
                    raise BackendError(
                        f"weights of {name} are {t.dtype} on {t.device} but dtype={dtype}, "
                        f"device={device} was asked; inherited weights are used without "
                        "copying, so convert the owner first (or omit dtype/device)")
        return {n: LinearSlot(w, b) for n, (w, b) in pairs.items()}
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    slots = {}
    for name, (o, i) in linear_shapes(graph, d_model, _inner(graph, d_model, d_inner)).items():
        bound = i ** -0.5  # nn.Linear's default init range; same draws as random_weights
        w = (torch.rand(o, i, generator=gen, dtype=dtype) * 2 - 1) * bound
        b = (torch.rand(o, generator=gen, dtype=dtype) * 2 - 1) * bound if bias else None
        slots[name] = LinearSlot(nn.Parameter(w.to(device)),
                                 None if b is None else nn.Parameter(b.to(device)))
    return slots
