"""The plain reference interpreter: evaluate a graph on torch tensors, node by node.

Every compiled backend is tested against this function.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .errors import WidthError
from .graph import Graph
from .ir import Node, Op, Width

Weights = Mapping[str, tuple[torch.Tensor, torch.Tensor | None]]


def infer_d_inner(graph: Graph, weights: Weights) -> int | None:
    """The inner width ``k`` implied by the weights of linears that read or write ``k``."""
    for name, (w_in, w_out) in graph.linears.items():
        if name not in weights:
            continue
        weight = weights[name][0]
        if w_out is Width.K:
            return int(weight.shape[0])
        if w_in is Width.K:
            return int(weight.shape[1])
    return None


def evaluate(graph: Graph, x: torch.Tensor, weights: Weights,
             d_inner: int | None = None) -> torch.Tensor:
    """Run ``graph`` on ``x`` of shape ``[..., d_model]``.

    ``weights`` maps each linear's name to ``(weight, bias)`` in ``torch.nn.Linear``
    layout (``weight`` is ``[out, in]``; ``bias`` may be ``None``). ``d_inner`` is
    inferred from the weights when not given.
    """
    d = int(x.shape[-1])
    k = d_inner if d_inner is not None else infer_d_inner(graph, weights)
    vals: dict[Node, torch.Tensor] = {}
    for n in graph.nodes:
        if n.op is Op.INPUT:
            v = x
        elif n.op is Op.CONST:
            size = n.width.bind(d, k)
            v = torch.full((*x.shape[:-1], size) if n.width is not Width.S else (),
                           n.value, dtype=x.dtype, device=x.device)
        elif n.op is Op.NARROW:
            v = vals[n.src[0]][..., : Width.M.bind(d, k)]
        elif n.op is Op.LINEAR:
            v = _linear(n, vals[n.src[0]], weights, d, k)
        else:
            v = n.prim.fn(*(vals[s] for s in n.src))
        vals[n] = v
    return vals[graph.root]


def _linear(n: Node, h: torch.Tensor, weights: Weights, d: int, k: int | None) -> torch.Tensor:
    name = n.name
    if name not in weights:
        raise WidthError(f"no weights for linear {name}; pass weights[{name!r}] = (weight, bias)")
    w, b = weights[name]
    want = (n.width.bind(d, k), n.src[0].width.bind(d, k))
    if tuple(w.shape) != want:
        raise WidthError(f"weights of {name} have shape {tuple(w.shape)}, expected {want} "
                         f"(out, in) at d_model={d}, d_inner={k}")
    return torch.nn.functional.linear(h, w, b)


def random_weights(graph: Graph, d_model: int, d_inner: int, *, seed: int = 0,
                   dtype: torch.dtype = torch.float32, bias: bool = True) -> dict:
    """Seeded weights for every linear of ``graph`` (``nn.Linear`` default init scale)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, (w_in, w_out) in graph.linears.items():
        fan_in, fan_out = w_in.bind(d_model, d_inner), w_out.bind(d_model, d_inner)
        bound = fan_in ** -0.5
        w = (torch.rand(fan_out, fan_in, generator=gen, dtype=dtype) * 2 - 1) * bound
        b = (torch.rand(fan_out, generator=gen, dtype=dtype) * 2 - 1) * bound if bias else None
        out[name] = (w, b)
    return out
