"""The graph: an MLP candidate, a DAG of :mod:`mlpgraph.ir` nodes whose output has width ``d``.

A :class:`Graph` wraps the output node, checks that it maps ``d -> d`` and that each
linear name is used at one shape, prints as expression text (:func:`format_graph`, the
:mod:`mlpgraph.printer` form of its root) and serializes as a topologically ordered list
whose children are indices, in the style of egg's ``RecExpr`` (:mod:`mlpgraph.recexpr`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from . import recexpr
from .errors import GraphTypeError
from .ir import Node, Op, Width, describe, toposort
from .printer import format_node


@dataclass(frozen=True, eq=False)
class Graph:
    """An MLP candidate: a DAG whose output node has the model width ``d``."""

    root: Node

    def __post_init__(self) -> None:
        if not isinstance(self.root, Node):
            raise TypeError(f"Graph needs a Node, got {type(self.root).__name__}")
        if self.root.width is not Width.D:
            raise GraphTypeError(
                f"the output {describe(self.root)} has width {self.root.width.value!r}, but an "
                "MLP must map d -> d; end the expression with a linear layer to d (e.g. W2(...))"
            )
        _ = self.linears  # type-checks shared weights

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and other.root is self.root

    def __hash__(self) -> int:
        return hash(self.root.digest)

    def __str__(self) -> str:
        return format_graph(self)

    def __repr__(self) -> str:
        return f"Graph({str(self)!r})"

    @cached_property
    def nodes(self) -> list[Node]:
        """All nodes, topologically ordered (children first, root last)."""
        return toposort(self.root)

    @cached_property
    def linears(self) -> dict[str, tuple[Width, Width]]:
        """Linear layer name -> (input width, output width), in first-use order."""
        out: dict[str, tuple[Width, Width]] = {}
        for n in self.nodes:
            if n.op is Op.LINEAR:
                io = (n.src[0].width, n.width)
                was = out.setdefault(n.name, io)
                if was != io:
                    raise GraphTypeError(
                        f"linear {n.name} is used as {was[0].value}->{was[1].value} and as "
                        f"{io[0].value}->{io[1].value} at {describe(n)}; the same name means "
                        "the same weights, so give the second use another name"
                    )
        return out

    @property
    def height(self) -> int:
        """Edges on the longest path from the output to a leaf."""
        return self.root.height

    @property
    def ref_height(self) -> int:
        """:attr:`height` with ``narrow`` nodes not counted (as the reference counts it)."""
        return self.root.ref_height

    @property
    def size(self) -> int:
        return len(self.nodes)

    def uses(self) -> dict[Node, int]:
        """How many parents each node has inside this graph."""
        count: dict[Node, int] = {n: 0 for n in self.nodes}
        for n in self.nodes:
            for s in n.src:
                count[s] += 1
        return count

    # ------------------------------------ RecExpr serialization (see mlpgraph.recexpr)
    def to_list(self) -> list[list[Any]]:
        """``[[op, arg, width, [child indices]], ...]`` topologically ordered, root last."""
        return recexpr.json_rows(self.nodes)

    def to_json(self) -> str:
        """``{"format": "mlpgraph.recexpr/1", "nodes": self.to_list()}`` as compact JSON."""
        return recexpr.dumps(self.to_list())

    @classmethod
    def from_list(cls, rows: list[list[Any]]) -> Graph:
        """The graph of the last row; unreachable rows are dropped (dead-node removal)."""
        return cls(recexpr.root_from_rows(rows))

    @classmethod
    def from_json(cls, text: str) -> Graph:
        """A graph from :meth:`to_json` text (or from a bare JSON list of rows)."""
        return cls.from_list(recexpr.rows_from_json(text))


def format_graph(graph: Graph, *, explicit: bool = False, infix: bool = True) -> str:
    """Text for a graph, e.g. ``W2(relu(W1(x) * x))``; see
    :func:`mlpgraph.printer.format_node` (``explicit`` prints every ``narrow`` and width
    annotation)."""
    return format_node(graph.root, explicit=explicit, infix=infix)
