"""Drawings of MLP graphs: networkx conversion, Graphviz DOT, Mermaid, and SVG/PNG files.

Every node shows its op and symbolic width (``k``), plus the integer width
(``k=270``) when ``d_model``/``d_inner`` are given; linear nodes show ``in → out``
and, with widths, their parameter count. ``narrow`` nodes (the explicit cut to
``min(d, k)``) are drawn dashed and orange. A shared node is drawn once with an
edge to each use. Operands of non-commutative ops are numbered 1, 2 on their
edges (and placed left to right where the layout allows). Several graphs are
drawn side by side, each under its title. A graph becomes a generic
:class:`~mlpgraph.drawing.DagPanel` (:func:`dag_panels`), which
:mod:`mlpgraph.drawing` writes as DOT and draws with Graphviz's ``dot`` when it is
installed, else with matplotlib (no Graphviz needed). Output is deterministic: the
same graph gives byte-identical DOT, Mermaid and SVG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from . import ir
from .drawing import DagEdge, DagNode, DagPanel, dag_to_dot, draw_dag
from .errors import MLPGraphError, SerializationError
from .graph import Graph
from .ir import Node, Op, Width
from .recexpr import node_from_row

Graphs = Graph | Sequence[Graph | tuple[str, Graph]]
IntOrInts = int | Sequence[int] | None

# kind -> (fill, border, dashed); one table for DOT, Mermaid and matplotlib
STYLE: dict[str, tuple[str, str, bool]] = {
    "input": ("#e9ecef", "#495057", False),
    "linear": ("#dbe8f7", "#2f5f98", False),
    "activation": ("#e2f2df", "#3b7a33", False),
    "prim": ("#fff4d1", "#9a7400", False),
    "const": ("#ffffff", "#868e96", False),
    "narrow": ("#ffe3cc", "#d9480f", True),
}


# ------------------------------------------------------------------ labels
def node_kind(node: Node) -> str:
    """The style class of a node: input, linear, activation, prim, const or narrow."""
    if node.op is Op.PRIM:
        return "activation" if node.prim.is_activation else "prim"
    return {Op.INPUT: "input", Op.LINEAR: "linear", Op.CONST: "const"}.get(node.op, "narrow")


def _width(w: Width, d_model: int | None, d_inner: int | None) -> str:
    if w is Width.S:
        return "scalar"
    return w.value if d_model is None else f"{w.value}={w.bind(d_model, d_inner)}"


def node_label(node: Node, d_model: int | None = None, d_inner: int | None = None, *,
               shared: bool = False) -> str:
    """The text drawn in a node, one item per line (``shared``: the linear's weights are reused)."""
    w = lambda x: _width(x, d_model, d_inner)  # noqa: E731
    if node.op is Op.INPUT:
        lines = ["x", w(Width.D)]
    elif node.op is Op.CONST:
        v = node.name
        lines = [v, "scalar"] if node.width is Width.S else [f"fill {v}", w(node.width)]
    elif node.op is Op.NARROW:
        lines = ["narrow", f"{w(node.src[0].width)} → {w(Width.M)}"]
    elif node.op is Op.LINEAR:
        lines = [node.name, f"{w(node.src[0].width)} → {w(node.width)}"]
        if d_model is not None:
            fan_in = node.src[0].width.bind(d_model, d_inner)
            out = node.width.bind(d_model, d_inner)
            lines.append(f"{fan_in * out + out:,} params" + (" (shared)" if shared else ""))
        elif shared:
            lines.append("(shared)")
    else:
        lines = [node.name, w(node.width)]
    return "\n".join(lines)


def _ordered(node: Node) -> bool:
    """Whether operand order must be shown (a non-commutative op of two or more operands)."""
    return node.op is Op.PRIM and len(node.src) > 1 and \
        not node.prim.commutative


# --------------------------------------------------------------- networkx
def to_networkx(graph: Graph) -> nx.DiGraph:
    """The graph as a ``networkx.DiGraph``.

    Node ids are topological indices (root last) with attributes ``op``, ``arg``,
    ``width`` (the enum values, e.g. ``"prim"``, ``"gelu"``, ``"k"``) and ``label``.
    Edges go child -> parent; ``index`` is the operand position and ``indices``
    all positions (``mul(a, a)`` is one edge with ``indices == (0, 1)``).
    """
    g = nx.DiGraph(format="mlpgraph", root=len(graph.nodes) - 1)
    index: dict[int, int] = {}
    for i, n in enumerate(graph.nodes):
        index[id(n)] = i
        g.add_node(i, op=n.op.value, arg=ir.node_arg(n), width=n.width.value,
                   label=node_label(n))
        for pos, s in enumerate(n.src):
            j = index[id(s)]
            if g.has_edge(j, i):
                g.edges[j, i]["indices"] += (pos,)
            else:
                g.add_edge(j, i, index=pos, indices=(pos,))
    return g


def from_networkx(g: nx.DiGraph) -> Graph:
    """The :class:`Graph` a DiGraph made by :func:`to_networkx` describes.

    Node ids may be any hashable; edges may carry ``index`` or ``indices``.
    Raises :class:`SerializationError` naming the offending node or edge.
    """
    if not isinstance(g, nx.DiGraph):
        raise SerializationError(f"expected a networkx.DiGraph (as made by to_networkx), got "
                                 f"{type(g).__name__}; directed edges child -> parent are needed")
    if g.number_of_nodes() == 0:
        raise SerializationError("the DiGraph has no nodes; a graph needs at least the input x")
    try:
        order = list(nx.topological_sort(g))
    except nx.NetworkXUnfeasible:
        cycle = [u for u, *_ in nx.find_cycle(g)]
        raise SerializationError(f"the DiGraph has a cycle through nodes {cycle}; edges must go "
                                 "from an operand to its user, without cycles") from None
    sinks = [v for v in order if g.out_degree(v) == 0]
    if len(sinks) != 1:
        raise SerializationError(f"the DiGraph has {len(sinks)} output nodes {sinks} (nodes "
                                 "without out-edges); it must have exactly one, the root")
    built: dict[object, Node] = {}
    for v in order:
        operands: dict[int, Node] = {}
        for u, _, data in g.in_edges(v, data=True):
            positions = data.get("indices", (data["index"],) if "index" in data else None)
            if not isinstance(positions, (tuple, list)) or not positions:
                raise SerializationError(f"edge {u!r} -> {v!r} has no operand position; give it "
                                         "an attribute index=<position> (0 = first operand)")
            for pos in positions:
                if type(pos) is not int or pos in operands:
                    raise SerializationError(f"edge {u!r} -> {v!r} has bad or repeated operand "
                                             f"position {pos!r}")
                operands[pos] = built[u]
        if sorted(operands) != list(range(len(operands))):
            raise SerializationError(f"node {v!r} has operand positions {sorted(operands)}; "
                                     f"they must be 0..{len(operands) - 1} without gaps")
        data = g.nodes[v]
        built[v] = node_from_row(data.get("op"), data.get("arg"), data.get("width"),
                                 tuple(operands[i] for i in range(len(operands))),
                                 f"node {v!r}")
    try:
        return Graph(built[sinks[0]])
    except MLPGraphError as e:
        raise SerializationError(f"root node {sinks[0]!r}: {e}") from None


# ----------------------------------------------------------------- panels
@dataclass(frozen=True)
class _Panel:
    graph: Graph
    title: str | None
    d_model: int | None
    d_inner: int | None

    def header(self) -> list[str]:
        """Title line (if any) and, with widths, the width/parameter line."""
        lines = [self.title] if self.title else []
        if self.d_model is not None:
            from .cost import count_params

            n = count_params(self.graph, d_model=self.d_model, d_inner=self.d_inner)
            lines.append(f"d={self.d_model}, k={self.d_inner}: {n:,} params")
        return lines

    def labels(self) -> list[str]:
        uses: dict[str, int] = {}
        for n in self.graph.nodes:
            if n.op is Op.LINEAR:
                uses[n.name] = uses.get(n.name, 0) + 1
        return [node_label(n, self.d_model, self.d_inner,
                           shared=n.op is Op.LINEAR and uses[n.name] > 1)
                for n in self.graph.nodes]


def _panels(graphs: Graphs, titles: Sequence[str | None] | None, d_model: int | None,
            d_inner: IntOrInts) -> list[_Panel]:
    items = [graphs] if isinstance(graphs, Graph) else list(graphs)
    pairs: list[tuple[str | None, Graph]] = []
    for i, it in enumerate(items):
        if isinstance(it, Graph):
            pairs.append((None, it))
        elif isinstance(it, tuple) and len(it) == 2 and isinstance(it[1], Graph):
            pairs.append((str(it[0]), it[1]))
        else:
            raise TypeError(f"item {i} is a {type(it).__name__}; pass a Graph, a list of Graphs "
                            "or a list of (title, Graph) pairs")
    if not pairs:
        raise ValueError("no graphs to draw; pass at least one Graph")
    if titles is not None:
        if len(titles) != len(pairs):
            raise ValueError(f"got {len(titles)} titles for {len(pairs)} graphs; give one each")
        pairs = [(t, g) for t, (_, g) in zip(titles, pairs, strict=True)]
    elif len(pairs) > 1:  # untitled side-by-side panels are titled by their expression
        pairs = [(t if t is not None else str(g), g) for t, g in pairs]
    inner = [d_inner] * len(pairs) if d_inner is None or isinstance(d_inner, int) \
        else list(d_inner)
    if len(inner) != len(pairs):
        raise ValueError(f"got {len(inner)} d_inner values for {len(pairs)} graphs; give one "
                         "for all or one per graph")
    for name, v in [("d_model", d_model), *(("d_inner", k) for k in inner)]:
        if v is not None and (type(v) is not int or v < 1):
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if (v is None) != (d_model is None):
            raise ValueError("give both d_model and d_inner (or neither) to show integer widths")
    return [_Panel(g, t, d_model, k) for (t, g), k in zip(pairs, inner, strict=True)]


def _titles(title: str | Sequence[str] | None) -> list[str] | None:
    return [title] if isinstance(title, str) else None if title is None else list(title)


# ------------------------------------------------------------ DAG panels
def _dag(panels: list[_Panel]) -> list[DagPanel]:
    """Each panel as a generic drawing: styled nodes, operand -> user edges (numbered
    when the op is not commutative). The one walk over operands for DOT, Mermaid, files."""
    out = []
    for p_i, p in enumerate(panels):
        index = {id(n): i for i, n in enumerate(p.graph.nodes)}
        nodes = [DagNode(f"g{p_i}n{i}", label, *STYLE[node_kind(n)])
                 for i, (n, label) in enumerate(zip(p.graph.nodes, p.labels(), strict=True))]
        edges = [DagEdge(f"g{p_i}n{index[id(s)]}", f"g{p_i}n{i}",
                         port=pos if _ordered(n) else None)
                 for i, n in enumerate(p.graph.nodes) for pos, s in enumerate(n.src)]
        header = p.header()
        out.append(DagPanel(nodes, edges, p.title, header[1 if p.title else 0:]))
    return out


def dag_panels(graph: Graphs, d_model: int | None = None, d_inner: IntOrInts = None,
               title: str | Sequence[str] | None = None) -> list[DagPanel]:
    """The generic drawing (:mod:`mlpgraph.drawing`) of graphs; arguments as for :func:`to_dot`.
    Node ids are ``g<panel>n<topological index>``; edges go operand -> user."""
    return _dag(_panels(graph, _titles(title), d_model, d_inner))


# -------------------------------------------------------------------- DOT
def to_dot(graph: Graphs, d_model: int | None = None, d_inner: IntOrInts = None,
           title: str | Sequence[str] | None = None) -> str:
    """Graphviz DOT text for a graph, or several side by side (each a titled cluster).

    ``graph`` may be a Graph, a list of Graphs or of (title, Graph) pairs; ``title``
    one string or one per graph; ``d_inner`` one int or one per graph. The input is
    at the bottom; operands of non-commutative ops are numbered and in order.
    """
    return dag_to_dot(dag_panels(graph, d_model, d_inner, title), direction="up", name="mlp")


# ---------------------------------------------------------------- Mermaid
_MERMAID_ESC = {'"': "#34;", "#": "#35;", "&": "#38;", "<": "#60;", ">": "#62;", "`": "#96;"}


def _mermaid_str(s: str) -> str:
    """A quoted Mermaid label: special characters as ``#code;`` entities, newlines as <br/>."""
    lines = ("".join(_MERMAID_ESC.get(c, c) for c in line) for line in s.split("\n"))
    return '"' + "<br/>".join(lines) + '"'


def to_mermaid(graph: Graphs, d_model: int | None = None, d_inner: IntOrInts = None,
               title: str | Sequence[str] | None = None) -> str:
    """A Mermaid flowchart (input at the bottom); several graphs become titled subgraphs.

    Arguments as for :func:`to_dot`.
    """
    panels = _panels(graph, _titles(title), d_model, d_inner)
    out = ["flowchart BT"]
    used: set[str] = set()
    for p_i, (p, dp) in enumerate(zip(panels, _dag(panels), strict=True)):
        pad = "  "
        if len(panels) > 1 or dp.header():
            out += [f"  subgraph g{p_i} [{_mermaid_str(chr(10).join(dp.header()) or ' ')}]",
                    "    direction BT"]
            pad = "    "
        for n, dn in zip(p.graph.nodes, dp.nodes, strict=True):
            used.add(node_kind(n))
            out.append(f"{pad}{dn.id}[{_mermaid_str(dn.label)}]:::mlp_{node_kind(n)}")
        for e in dp.edges:
            arrow = "-->" if e.port is None else f"-->|{e.port + 1}|"
            out.append(f"{pad}{e.src} {arrow} {e.dst}")
        if pad == "    ":
            out.append("  end")
    for kind, (fill, border, dashed) in STYLE.items():
        if kind in used:
            dash = ",stroke-dasharray:5 4" if dashed else ""
            out.append(f"  classDef mlp_{kind} fill:{fill},stroke:{border},color:#212529{dash}")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------- render
def render(graph_or_graphs: Graphs, path: str | Path, *, titles: Sequence[str] | None = None,
           d_model: int | None = None, d_inner: IntOrInts = None, engine: str = "auto") -> Path:
    """Draw one graph or several side by side into ``path`` (.svg, .png or .pdf).

    ``engine``: "graphviz" (needs ``dot``), "matplotlib", or "auto" (Graphviz when
    ``dot`` is on PATH). ``d_inner`` may be one int per graph. Returns the path.
    """
    panels = _dag(_panels(graph_or_graphs, titles, d_model, d_inner))
    return draw_dag(panels, path, direction="up", engine=engine, name="mlp")
