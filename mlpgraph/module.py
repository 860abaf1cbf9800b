"""The module every backend returns: a compiled functional form over a graph's linears.

An :class:`MLPModule` holds one weight slot per linear name (attributes ``W1``, ``W2``,
...; its state dict names are ``W1.weight``, ``W1.bias``, ...) and a weight-free
:class:`MLPFunction` ``runner(x2d, w1_weight, w1_bias, ...)`` built by a backend and
shared by every module of the same structure. A slot either owns its parameters
(:class:`OwnedLinear`, a submodule) or borrows the leading block of larger tensors owned
elsewhere, e.g. by a supernet (:class:`BorrowedLinear`): the same runner serves both.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch import nn

from .codegen import inner_width
from .cost import linear_shapes
from .errors import WidthError
from .graph import Graph

__all__ = ["BorrowedLinear", "ExportedMLP", "MLPFunction", "MLPModule", "OwnedLinear", "Slot",
           "as_weight_pair", "inherit_weights", "require_weights"]

Pair = tuple[torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True, eq=False)
class MLPFunction:
    """A backend's artifact of a graph's functional form: ``runner(x2d, *weights)`` with
    the weights in ``arg_names`` order (``(layer, "weight" | "bias")``). Weight-free and
    immutable, so modules (and their copies) share it."""

    backend: str
    graph: Graph  # the graph compiled (the simplified one unless simplify=False)
    fx_module: torch.fx.GraphModule  # its functional FX form
    arg_names: tuple[tuple[str, str], ...]
    runner: Callable[..., torch.Tensor]
    seconds: float = 0.0  # time to build (and warm up) the artifact

    def __deepcopy__(self, memo: dict) -> MLPFunction:
        return self


# ------------------------------------------------------------------ weight slots
class OwnedLinear(nn.Module):
    """One linear's own parameters, ``weight [out, in]`` and ``bias [out]`` (or None)."""

    borrowed = False

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight)
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = bias if isinstance(bias, nn.Parameter) else nn.Parameter(bias)

    @property
    def has_bias(self) -> bool:
        return self.bias is not None

    def extra_repr(self) -> str:
        o, i = self.weight.shape
        return f"in_features={i}, out_features={o}, bias={self.bias is not None}, owned"


class _Tensors:
    """A ``(weight, bias)`` pair read like an ``nn.Linear`` (``.weight``, ``.bias``)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight, self.bias = weight, bias


class BorrowedLinear:
    """The leading ``[:out, :in]`` block of a larger linear owned elsewhere.

    ``source`` is an ``nn.Linear``-like module (its ``weight``/``bias`` are read at every
    access, so the owner may be moved or reloaded) or a ``(weight, bias)`` pair. Not a
    module: it owns nothing, so nothing is copied or registered and gradients reach the
    owner; :class:`MLPModule` exports the blocks in its state dict and loads into them.
    """

    __slots__ = ("source", "out_features", "in_features", "has_bias", "_whole")
    borrowed = True

    def __init__(self, source: Any, out_features: int, in_features: int) -> None:
        src = source if hasattr(source, "weight") else _Tensors(*as_weight_pair(source, "?"))
        have = tuple(src.weight.shape)
        if len(have) != 2 or have[0] < out_features or have[1] < in_features:
            raise WidthError(f"borrowed weight has shape {have}, but the candidate needs "
                             f"{(out_features, in_features)}; inherited tensors must be at "
                             "least that large in every dimension")
        if src.bias is not None and src.bias.shape[0] < out_features:
            raise WidthError(f"borrowed bias has {src.bias.shape[0]} entries, fewer than "
                             f"out_features={out_features}")
        self.source, self.out_features, self.in_features = src, out_features, in_features
        self.has_bias, self._whole = src.bias is not None, have == (out_features, in_features)

    @property
    def weight(self) -> torch.Tensor:
        w = self.source.weight
        return w if self._whole else w[: self.out_features, : self.in_features]

    @property
    def bias(self) -> torch.Tensor | None:
        b = self.source.bias
        return b if b is None or self._whole else b[: self.out_features]

    def __repr__(self) -> str:
        return (f"BorrowedLinear(in_features={self.in_features}, out_features="
                f"{self.out_features}, bias={self.has_bias})")


Slot = OwnedLinear | BorrowedLinear


# ------------------------------------------------------------------ the module
class MLPModule(nn.Module):
    """A graph as a module ``[..., d_model] -> [..., d_model]``: its weight slots run by a
    backend's :class:`MLPFunction`. Inputs of any leading shape are flattened to 2-D
    around the runner, so one artifact serves every rank.

    Slots are attributes named after the linears (``module.W1.weight``): owned ones are
    submodules; borrowed ones are not (the module then has no parameters), but the state
    dict still names their blocks ``W1.weight``, ... and ``load_state_dict`` writes
    through into their owner.

    Attributes: ``mlp_graph`` (the graph as given), ``compiled_graph`` (what was
    compiled), ``d_model``, ``d_inner``, ``backend``, ``function``, ``code`` (the
    generated Python of the functional form), ``borrowed``, ``compile_seconds`` and
    ``report`` (set by the compiler).
    """

    def __init__(self, graph: Graph, d_model: int, d_inner: int | None,
                 slots: Mapping[str, Slot], function: MLPFunction) -> None:
        super().__init__()
        missing = [name for name in graph.linears if name not in slots]
        if missing:
            raise WidthError(f"no weight slot for linear {', '.join(missing)}; pass one per "
                             f"linear name of the graph ({', '.join(graph.linears)})")
        # plain attributes set directly: a supernet step builds dozens of these modules
        self.__dict__.update(mlp_graph=graph, d_model=d_model, d_inner=d_inner,
                             function=function, compile_seconds=0.0, report=None,
                             slots={name: slots[name] for name in graph.linears})
        for name, slot in self.slots.items():
            if slot.borrowed:
                self.__dict__[name] = slot
            else:
                self._modules[name] = slot

    @property
    def backend(self) -> str:
        return self.function.backend

    @property
    def compiled_graph(self) -> Graph:
        """The graph the backend compiled (the simplified one unless ``simplify=False``)."""
        return self.function.graph

    @property
    def code(self) -> str:
        """The generated Python of the functional FX form the backend runs."""
        return self.function.fx_module.code

    @property
    def borrowed(self) -> bool:
        return any(slot.borrowed for slot in self.slots.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_model:
            raise WidthError(f"input has {x.shape[-1]} features in its last dimension; this "
                             f"MLP was built for d_model={self.d_model}")
        slots = self.slots
        weights = [getattr(slots[layer], kind) for layer, kind in self.function.arg_names]
        y = self.function.runner(x.reshape(-1, self.d_model), *weights)
        return y.reshape(x.shape)

    # borrowed slots are not submodules: their blocks enter and leave the state dict here
    def _borrowed_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {}
        for name, slot in self.slots.items():
            if slot.borrowed:
                out[f"{prefix}{name}.weight"] = slot.weight
                if slot.has_bias:
                    out[f"{prefix}{name}.bias"] = slot.bias
        return out

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for key, t in self._borrowed_tensors(prefix).items():
            destination[key] = t if keep_vars else t.detach()

    def _load_from_state_dict(self, state_dict: Mapping, prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: list, unexpected_keys: list,
                              error_msgs: list) -> None:
        mine = self._borrowed_tensors(prefix)
        rest = {k: v for k, v in state_dict.items() if k not in mine}
        super()._load_from_state_dict(rest, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        for key, t in mine.items():
            if key not in state_dict:
                missing_keys.append(key)
            elif tuple(state_dict[key].shape) != tuple(t.shape):
                error_msgs.append(f"size mismatch for {key}: copying a param with shape "
                                  f"{tuple(state_dict[key].shape)}, the borrowed block is "
                                  f"{tuple(t.shape)}")
            else:
                with torch.no_grad():
                    t.copy_(state_dict[key])

    def __deepcopy__(self, memo: dict) -> MLPModule:
        memo.setdefault(id(self.mlp_graph), self.mlp_graph)  # keep hash-consed nodes shared
        res = self.__class__.__new__(self.__class__)
        memo[id(self)] = res
        res.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return res

    def extra_repr(self) -> str:
        lines = [f"backend={self.backend!r}, expression={str(self.mlp_graph)!r}"]
        lines += [f"({name}): {slot!r}" for name, slot in self.slots.items() if slot.borrowed]
        return "\n".join(lines)


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
        y = self._runner[0](x.reshape(-1, self.d_model))
        return y.reshape(x.shape)


# ------------------------------------------------------------------ weights
def as_weight_pair(value: Any, name: str) -> Pair:
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


def require_weights(graph: Graph, weights: Mapping[str, Any]) -> None:
    """Refuse ``weights`` lacking an entry for one of ``graph``'s linears."""
    missing = [n for n in graph.linears if n not in weights]
    if missing:
        raise WidthError(f"no weights for linear {', '.join(missing)} (given: "
                         f"{', '.join(map(str, weights)) or 'none'}); pass one per linear name")


def inherit_weights(graph: Graph, d_model: int, d_inner: int | None,
                    big: Mapping[str, Any]) -> dict[str, Pair]:
    """Views of larger (supernet) weights for ``graph``'s linears, without copying.

    Each linear gets the first ``out`` rows and first ``in`` columns of ``big[name]``'s
    weight (``nn.Linear`` layout ``[out, in]``) and the first ``out`` bias entries. The
    views keep their autograd link, so gradients flow to the owner's parameters.
    """
    require_weights(graph, big)
    d_inner = inner_width(graph, d_model, d_inner)
    out = {}
    with torch.enable_grad():  # views made under no_grad would lose their link to the owner
        for name, (o, i) in linear_shapes(graph, d_model, d_inner).items():
            w, b = as_weight_pair(big[name], name)
            out[name] = (_cut(w, (o, i), f"weight of {name}"),
                         None if b is None else _cut(b, (o,), f"bias of {name}"))
    return out
