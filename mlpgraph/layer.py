"""One Transformer layer's MLP choice, the one layer type of the project.

:class:`MLPLayer` is an expression graph applied ``stacks`` times in a row, each application
with its own weights and its own ``LayerNorm(h + Dropout(f(h)))`` wrapper, at inner width
``ratio * hidden``. A student configuration (``distill``) holds one per layer, and so does a
search candidate (``searcher``); both derive widths, parameter counts and JSON from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

from .cost import count_flops, count_params
from .errors import LayerError, MLPGraphError
from .graph import Graph, format_graph
from .keys import canonical_key
from .parser import parse

#: the standard BERT feed-forward network, ``Linear(d -> k) -> GELU -> Linear(k -> d)``
STANDARD_FFN = "W2(gelu(W1(x)))"


def parse_ratio(value: Any) -> Fraction:
    """A width ratio from a ``Fraction``, an int, ``"1/2"`` (exact, whatever the
    denominator: ``"517/540"`` stays itself, so a JSON round trip is exact) or a decimal
    (``0.5``, ``"0.333"``: the nearest fraction with denominator at most 64); positive."""
    if isinstance(value, bool):
        raise LayerError(f"ratio {value!r} is not a number; write it as '1/2' or 0.5")
    try:
        if isinstance(value, (Fraction, int)):
            r = Fraction(value)
        else:
            text = str(value)
            r = Fraction(text) if "/" in text else Fraction(text).limit_denominator(64)
    except (ValueError, ZeroDivisionError):
        raise LayerError(f"ratio {value!r} is not a number; write it as '1/2' or 0.5") from None
    if r <= 0:
        raise LayerError(f"ratio {value!r} must be positive")
    return r


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LayerError(f"{name}={value!r} must be a positive integer")


@lru_cache(maxsize=8192)
def graph_key(graph: Graph) -> str:
    """``canonical_key`` of a graph, memoized (graphs are hash-consed)."""
    return canonical_key(graph)


@lru_cache(maxsize=8192)
def graph_text(graph: Graph) -> str:
    """The graph as expression text (parses back to the same graph)."""
    return format_graph(graph)


@dataclass(frozen=True)
class MLPLayer:
    """One layer's MLP: ``graph`` applied ``stacks`` times at inner width ``ratio * hidden``
    (see the module doc)."""

    graph: Graph
    stacks: int = 1
    ratio: Fraction = Fraction(1)

    def __post_init__(self) -> None:
        if not isinstance(self.graph, Graph):
            raise LayerError(f"an MLPLayer holds an mlpgraph.Graph, got "
                             f"{type(self.graph).__name__} {self.graph!r:.80}; parse text with "
                             "mlpgraph.parse, or use MLPLayer.of(text, stacks, ratio)")
        _check_positive_int("stacks", self.stacks)
        if not isinstance(self.ratio, Fraction):
            object.__setattr__(self, "ratio", parse_ratio(self.ratio))
        elif self.ratio <= 0:
            raise LayerError(f"ratio {self.ratio} must be positive")

    @classmethod
    def of(cls, expr: str | Graph, stacks: int = 1, ratio: Any = 1) -> MLPLayer:
        """From expression text (or a graph), ``s`` and a ratio (``"1/2"``, 0.5, ...)."""
        return cls(parse(expr) if isinstance(expr, str) else expr, stacks, parse_ratio(ratio))

    @classmethod
    def with_width(cls, graph: Graph, stacks: int, d_inner: int, hidden: int) -> MLPLayer:
        """The layer whose inner width at model width ``hidden`` is exactly ``d_inner``."""
        _check_positive_int("d_inner", d_inner)
        _check_positive_int("hidden", hidden)
        return cls(graph, stacks, Fraction(d_inner, hidden))

    # ------------------------------------------------------------------ derived
    @property
    def expr(self) -> str:
        """The expression as text (how JSON files and reports write it)."""
        return graph_text(self.graph)

    @property
    def key(self) -> str:
        """Canonical key of the expression plus ``s`` and ratio (what a candidate id hashes)."""
        return f"{graph_key(self.graph)}#s{self.stacks}#r{self.ratio}"

    def d_inner(self, hidden: int) -> int:
        """The inner width ``k`` at model width ``hidden`` (at least 1)."""
        _check_positive_int("hidden", hidden)
        return max(1, int(self.ratio * hidden))

    def params(self, hidden: int) -> int:
        """Parameters of all ``stacks`` applications at width ``hidden``: each one's linears
        plus its LayerNorm (weight and bias, ``2 * hidden``)."""
        per = count_params(self.graph, d_model=hidden, d_inner=self.d_inner(hidden))
        return self.stacks * (per + 2 * hidden)

    def flops(self, hidden: int, tokens: int = 1) -> int:
        """FLOPs of all ``stacks`` applications for ``tokens`` rows (the LayerNorms aside)."""
        return self.stacks * count_flops(self.graph, d_model=hidden,
                                         d_inner=self.d_inner(hidden), tokens=tokens)

    def describe(self) -> str:
        """``expr @ s x ratio``, as tables and logs write a layer."""
        return f"{self.expr} @ {self.stacks}x{self.ratio}"

    # --------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """``{expr, stacks, ratio, graph}``: the text and the RecExpr rows (the rows win)."""
        return {"expr": self.expr, "stacks": self.stacks, "ratio": str(self.ratio),
                "graph": self.graph.to_list()}

    @classmethod
    def from_dict(cls, data: Any, where: str = "layer") -> MLPLayer:
        """From :meth:`to_dict`'s form (``expr`` or ``graph``, ``stacks``, ``ratio``); errors
        name ``where``."""
        if not isinstance(data, dict) or "stacks" not in data or "ratio" not in data or \
                not ("graph" in data or "expr" in data):
            raise LayerError(f"{where}: expected {{expr or graph, stacks, ratio}}, got "
                             f"{data!r:.120}")
        try:
            if "graph" in data:
                graph = Graph.from_list(data["graph"])
            elif isinstance(data["expr"], str):
                graph = parse(data["expr"])
            else:
                raise LayerError(f"expr={data['expr']!r:.80} must be expression text")
            return cls(graph, data["stacks"], parse_ratio(data["ratio"]))
        except MLPGraphError as e:
            raise LayerError(f"{where}: {e}") from None


__all__ = ["STANDARD_FFN", "MLPLayer", "graph_key", "graph_text", "parse_ratio"]
