"""Cost of a graph at integer widths: parameters and floating-point operations."""

from __future__ import annotations

from .graph import Graph
from .ir import Op, Width


def linear_shapes(graph: Graph, d_model: int, d_inner: int) -> dict[str, tuple[int, int]]:
    """Linear name -> ``(out_features, in_features)`` at the given widths."""
    return {name: (w_out.bind(d_model, d_inner), w_in.bind(d_model, d_inner))
            for name, (w_in, w_out) in graph.linears.items()}


def count_params(graph: Graph, *, d_model: int, d_inner: int, bias: bool = True) -> int:
    """Trainable parameters of the graph's linear layers (each name counted once)."""
    return sum(o * i + (o if bias else 0)
               for o, i in linear_shapes(graph, d_model, d_inner).values())


def count_flops(graph: Graph, *, d_model: int, d_inner: int, tokens: int = 1,
                bias: bool = True) -> int:
    """Floating-point operations for ``tokens`` rows: 2*in*out per linear application
    (plus the bias add) and each primitive's declared FLOPs per element."""
    total = 0.0
    for n in graph.nodes:
        width = n.width.bind(d_model, d_inner)
        if n.op is Op.LINEAR:
            fan_in = n.src[0].width.bind(d_model, d_inner)
            total += 2 * fan_in * width + (width if bias else 0)
        elif n.op is Op.PRIM and n.width is not Width.S:
            total += n.prim.flops * width
    return int(round(total * tokens))
