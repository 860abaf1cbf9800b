"""Seeded random graphs of any well-typed shape (for property tests, fuzzing and benchmarks).

These are not search-space samples (see ``searcher`` for those): they exercise every
node kind, width coercion, shared subexpressions, constants and weight sharing.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from . import ir
from .graph import Graph
from .ir import Node, Width

DEFAULT_UNARY = ("gelu", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "swish", "identity",
                 "neg", "square", "squared_relu", "softplus", "gelu_erf")
DEFAULT_BINARY = ("add", "mul", "max", "sub", "min")


def random_graph(rng: random.Random, steps: int = 12, *,
                 unary: Sequence[str] = DEFAULT_UNARY, binary: Sequence[str] = DEFAULT_BINARY,
                 p_const: float = 0.1, max_linears: int = 4) -> Graph:
    """Grow a pool of nodes for ``steps`` steps and return a graph on the last one.

    Each step adds a unary op, a binary op (operands of different widths get
    ``narrow`` nodes), a linear layer (new or reused name) or a constant operand.
    """
    pool: list[Node] = [ir.input_node()]
    names: dict[str, tuple[Width, Width]] = {}
    for _ in range(steps):
        r = rng.random()
        a = rng.choice(pool[-6:]) if rng.random() < 0.7 else rng.choice(pool)
        if r < 0.35:
            node = ir.apply(rng.choice(unary), a)
        elif r < 0.7:
            b = ir.const(round(rng.uniform(-2, 2), 2)) if rng.random() < p_const \
                else rng.choice(pool)
            if rng.random() < 0.5:
                a, b = b, a
            if a.width is Width.S and b.width is Width.S:
                b = pool[-1]
            node = ir.apply(rng.choice(binary), a, b)
        else:
            if a.width is Width.S:
                a = pool[-1]
            reuse = [n for n, (wi, _) in names.items() if wi is a.width]
            if reuse and (len(names) >= max_linears or rng.random() < 0.3):
                name = rng.choice(reuse)
            else:
                name = f"W{len(names) + 1}"
                default = ir.default_linear_out(a.width)
                out = default if rng.random() < 0.85 else (Width.D if default is Width.K
                                                            else Width.K)
                names[name] = (a.width, out)
            node = ir.linear(name, a, names[name][1])
        if node.width is not Width.S:
            pool.append(node)
    root = pool[-1]
    if root.width is not Width.D:
        name = next((n for n, (wi, wo) in names.items() if wi is root.width and wo is Width.D),
                    f"W{len(names) + 1}")
        root = ir.linear(name, root, Width.D)
    return Graph(root)


def random_graphs(seed: int, count: int, **kw) -> list[Graph]:
    """``count`` graphs from one seed, with step counts spread over 2..30."""
    rng = random.Random(seed)
    return [random_graph(rng, steps=rng.randint(2, 30), **kw) for _ in range(count)]
