"""mlpgraph: typed MLP expression DAGs, a primitive registry, a simplifier and compilers.

Quick tour::

    import mlpgraph as mg
    g = mg.parse("W2(relu(W1(x) * x))")        # text -> typed, hash-consed DAG
    s = mg.simplify(g)                         # algebraic rules to a fixed point
    mg.canonical_key(g), mg.fingerprint(g)     # dedupe keys (structural, functional)
    mg.count_params(g, d_model=540, d_inner=270)
    y = mg.evaluate(g, x, weights)             # plain reference interpreter
"""

from __future__ import annotations

from . import builtins as _builtins  # noqa: F401 - registers the built-in primitives
from .cost import count_flops, count_params, linear_shapes
from .errors import (
    GraphTypeError,
    LayerError,
    MLPGraphError,
    ParseError,
    PrimitiveError,
    SerializationError,
    SpaceError,
    UnsafeFileError,
    WidthError,
)
from .graph import Graph
from .graph import format_graph as format
from .interp import evaluate, random_weights
from .ir import Node, Op, Width
from .keys import Equivalence, canonical_key, equivalent, fingerprint, to_sympy
from .layer import STANDARD_FFN, MLPLayer, parse_ratio
from .parser import parse
from .plugins import load_primitives, primitive_digest
from .primitives import REGISTRY, Primitive, get_primitive, primitive
from .simplify import simplify
from .space import PAPER_SPACE, SPACES, WIDE_SPACE, Space, resolve_space

__all__ = [
    "Equivalence", "Graph", "GraphTypeError", "LayerError", "MLPGraphError", "MLPLayer", "Node",
    "Op", "PAPER_SPACE", "ParseError", "Primitive", "PrimitiveError", "REGISTRY", "SPACES",
    "STANDARD_FFN", "SerializationError", "Space", "SpaceError", "UnsafeFileError",
    "WIDE_SPACE", "Width", "WidthError", "canonical_key", "count_flops", "count_params",
    "equivalent", "evaluate", "fingerprint", "format", "get_primitive", "linear_shapes",
    "load_primitives", "parse", "parse_ratio", "primitive", "primitive_digest",
    "random_weights", "resolve_space", "simplify", "to_sympy",
]


def __getattr__(name: str):
    # compile / viz live in modules that import heavier machinery; load them on first use
    if name in ("compile", "inherit_weights"):
        from . import compiler

        return {"compile": compiler.compile_graph,
                "inherit_weights": compiler.inherit_weights}[name]
    if name in ("to_networkx", "from_networkx", "to_dot", "to_mermaid", "render"):
        from . import viz

        return getattr(viz, name)
    raise AttributeError(f"module 'mlpgraph' has no attribute {name!r}")
