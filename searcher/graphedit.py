"""Graph editing for the mutations: site analysis, substitution, and a grower of random
*valid* subtrees and whole expressions.

Terms used below (``narrow`` nodes are transparent everywhere, as in the space's rules):

- ``n.ref_height``: the height of ``n`` with ``narrow`` not counted (the space's height).
- ``depth`` of an edge ``(p, i)``: the longest counted path from the root to the node at
  the end of that edge; the root "edge" ``(None, -1)`` has depth 0. Replacing the node at
  an edge by ``q`` gives a graph of height at most ``max(old, depth + q.ref_height)``.
- width *class*: ``"d"`` for width ``d``, ``"k"`` for ``k`` and ``m``. With the default
  linear output widths, swapping a node for one of the same class never changes any
  linear's output width, so the root keeps width ``d`` (a ``k``-class node always sits
  under some linear, which maps ``k`` and ``m`` alike to ``d``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from mlpgraph import Graph, GraphTypeError, Node, Op, Space, Width, get_primitive, ir
from mlpgraph.ir import rebuild, skip_narrow

from .errors import SearchConfigError

Edge = tuple[Node | None, int]  # (parent, child index); (None, -1) is the root


def op_is_activation(name: str) -> bool:
    return get_primitive(name).is_activation


def is_activation(n: Node) -> bool:
    return n.op is Op.PRIM and n.prim.is_activation


def width_class(n: Node) -> str:
    return "d" if n.width is Width.D else "k"


def linear_names(nodes: Iterable[Node]) -> list[str]:
    """The names of the linear nodes among ``nodes``, sorted (a name on two nodes twice)."""
    return sorted(n.name for n in nodes if n.op is Op.LINEAR)


def strip_outer(graph: Graph) -> Graph:
    """``graph`` without the activations applied to its output (``tanh(W2(...))`` ->
    ``W2(...)``): as long as the root is a unary activation of a ``d``-wide node, drop it."""
    root = graph.root
    while is_activation(root) and len(root.src) == 1 and root.src[0].width is Width.D:
        root = root.src[0]
    return Graph(root)


def strip_outer_activations(cand: Any, space: Space) -> Any:
    """The candidate with every layer's outer activations removed where the result stays in
    ``space`` (the paper's second seed of stage 2)."""
    layers = []
    for gene in cand.layers:
        bare = strip_outer(gene.graph)
        layers.append(gene if space.violations(bare) else replace(gene, graph=bare))
    return type(cand)(tuple(layers))


def substitute(graph: Graph, mapping: dict[Node, Node]) -> Node:
    """The new root after replacing every occurrence of each key of ``mapping`` by its value
    (values are not descended into)."""
    memo: dict[Node, Node] = {}
    for n in graph.nodes:
        hit = mapping.get(n)
        memo[n] = hit if hit is not None else rebuild(n, [memo[s] for s in n.src])
    return memo[graph.root]


class View:
    """Per-graph facts the mutations need: depths, core parents, linear frontiers."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.above: dict[Node, int] = {n: 0 for n in graph.nodes}
        self.parents: dict[Node, list[tuple[Node, int]]] = {n: [] for n in graph.nodes}
        for n in reversed(graph.nodes):  # parents before children
            step = 0 if n.op is Op.NARROW else 1
            for i, s in enumerate(n.src):
                self.above[s] = max(self.above[s], self.above[n] + step)
                if n.op is not Op.NARROW:
                    self.parents[skip_narrow(s)].append((n, i))
        self.core = [n for n in graph.nodes if n.op is not Op.NARROW]
        self.prims = [n for n in self.core if n.op is Op.PRIM]
        self.linear_names = linear_names(graph.nodes)
        self._frontier: dict[Node, list[Node]] = {}

    def edges(self) -> list[Edge]:
        """Every (parent, index) edge between core nodes, then the root edge."""
        out: list[Edge] = [(p, i) for p in self.core for i in range(len(p.src))]
        out.append((None, -1))
        return out

    def child(self, edge: Edge) -> Node:
        p, i = edge
        return self.graph.root if p is None else skip_narrow(p.src[i])

    def depth(self, edge: Edge) -> int:
        p, _ = edge
        return 0 if p is None else self.above[p] + 1

    def frontier(self, n: Node) -> list[Node]:
        """The topmost linear nodes at or below ``n`` (what regrowing ``n`` must keep)."""
        memo = self._frontier
        if not memo:
            for m in self.graph.nodes:
                if m.op is Op.LINEAR:
                    memo[m] = [m]
                else:
                    memo[m] = list(dict.fromkeys(x for s in m.src for x in memo[s]))
        return memo[n]

    def sibling_clash(self, n: Node, new: Node) -> bool:
        """Would putting ``new`` where ``n`` is give some binary parent two equal operands?"""
        return any(len(p.src) == 2 and skip_narrow(p.src[1 - i]) is skip_narrow(new)
                   for p, i in self.parents[n])

    def replace_at(self, edge: Edge, q: Node) -> Node:
        """New root with the node at ``edge`` replaced by ``q`` (the parent is rebuilt and
        substituted everywhere it occurs)."""
        p, i = edge
        if p is None:
            return q
        src = list(p.src)
        src[i] = q
        return substitute(self.graph, {p: rebuild(p, src)})


# ------------------------------------------------------------------- grower
class Grower:
    """Random valid subtrees over given *required leaves* (existing nodes that must appear,
    e.g. the linear layers of the subtree being regrown) and the input ``x``."""

    def __init__(self, space: Space, rng: random.Random) -> None:
        self.space, self.rng = space, rng
        self.x = ir.input_node()
        self.unary_act = [u for u in space.unary if op_is_activation(u)]
        self.unary_plain = [u for u in space.unary if not op_is_activation(u)]
        self._memo: dict[tuple, list[tuple[str, float, list[str]]]] = {}

    def _unary_choices(self, no_act: bool) -> list[str]:
        return self.unary_plain if no_act else self.unary_plain + self.unary_act

    def _sig(self, req: Sequence[Node]) -> tuple[tuple[int, ...], str]:
        """What feasibility depends on: the leaves' heights and, for one leaf, its kind."""
        if not req:
            return (), "x"
        if len(req) == 1:
            r = req[0]
            kind = "lin" if r.op is Op.LINEAR else "act" if is_activation(r) else "other"
            return (r.ref_height,), kind
        return tuple(sorted(r.ref_height for r in req)), "many"

    def feasible(self, req: Sequence[Node], lo: int, hi: int, no_act: bool = False,
                 no_lin: bool = False) -> bool:
        """Can :meth:`grow` build an expression over ``req`` here?"""
        return bool(self._options(self._sig(req), max(lo, 0), hi, no_act, no_lin))

    def _options(self, sig: tuple[tuple[int, ...], str], lo: int, hi: int, no_act: bool,
                 no_lin: bool) -> list[tuple[str, float, list[str]]]:
        key = (sig, lo, hi, no_act, no_lin)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        heights, kind = sig
        n = len(heights)
        out: list[tuple[str, float, list[str]]] = []
        if lo <= hi and self._need(heights) <= hi:
            if n <= 1:
                leaf_h = heights[0] if n else 0
                if lo <= leaf_h <= hi and not (no_lin and kind == "lin") and \
                        not (no_act and kind == "act"):
                    out.append(("leaf", 1.0 + 0.5 * (hi - leaf_h <= 1), []))
            if hi >= 1:
                us = [u for u in self._unary_choices(no_act)
                      if self._options(sig, max(lo - 1, 0), hi - 1, op_is_activation(u), False)]
                if us:
                    out.append(("unary", 1.0 if n <= 1 else 0.3, us))
                if self.space.binary:
                    a_ok = bool(self._options(sig, max(lo - 1, 0), hi - 1, False, False))
                    if n == 0:
                        ok = hi >= 2 and a_ok and bool(self.space.unary)
                    else:
                        ok = a_ok or n >= 2
                    if ok:
                        out.append(("binary", 0.8 if n <= 1 else 1.0, []))
        self._memo[key] = out
        return out

    @staticmethod
    def _need(heights: Sequence[int]) -> int:
        hs = sorted(heights)
        if not hs:
            return 0
        while len(hs) > 1:  # combine the two lowest with a binary op (Huffman-like)
            a, b = hs.pop(0), hs.pop(0)
            hs.append(max(a, b) + 1)
            hs.sort()
        return hs[0]

    def min_height(self, req: Sequence[Node]) -> int:
        """Smallest tree height of an expression containing every node of ``req``."""
        return self._need([r.ref_height for r in req])

    def grow(self, req: Sequence[Node], lo: int, hi: int, no_act: bool = False,
             no_lin: bool = False) -> Node:
        """A random expression containing every node of ``req`` (and possibly ``x``) with
        tree height in ``lo..hi``, whose top is not an activation when ``no_act`` and not a
        linear when ``no_lin``. Raises ``ValueError`` when that is impossible (see
        :meth:`feasible`)."""
        req = list(req)
        options = self._options(self._sig(req), max(lo, 0), hi, no_act, no_lin)
        if not options:
            raise ValueError(f"cannot grow height {lo}..{hi} over {len(req)} required leaves")
        kind, _, us = self.rng.choices(options, [w for _, w, _ in options])[0]
        if kind == "leaf":
            return req[0] if req else self.x
        if kind == "unary":
            u = self.rng.choice(us)
            return ir.apply(u, self.grow(req, lo - 1, hi - 1, no_act=op_is_activation(u)))
        return self._binary(req, lo, hi)

    def _binary(self, req: list[Node], lo: int, hi: int) -> Node:
        rng = self.rng
        op = rng.choice(self.space.binary)
        a_req, b_req = self._split(req, hi - 1)
        if not self.feasible(a_req, lo - 1, hi - 1):
            a_req, b_req = b_req, a_req
        a = self.grow(a_req, lo - 1, hi - 1)
        b = self._distinct(b_req, 0, hi - 1, a)
        if rng.random() < 0.5:
            a, b = b, a
        return ir.apply(op, a, b)

    def _split(self, req: list[Node], cap: int) -> tuple[list[Node], list[Node]]:
        """Split the required leaves between two operands, each side buildable within ``cap``."""
        if len(req) <= 1:
            return req, []
        for _ in range(4):
            order = list(req)
            self.rng.shuffle(order)
            cut = self.rng.randint(1, len(order) - 1)
            a, b = order[:cut], order[cut:]
            if self.min_height(a) <= cap and self.min_height(b) <= cap:
                return a, b
        hs = sorted(req, key=lambda r: r.ref_height)  # balanced fallback: alternate by height
        return hs[0::2], hs[1::2]

    def _distinct(self, req: list[Node], lo: int, hi: int, other: Node) -> Node:
        """An operand that differs from ``other`` (a binary op may not take equal args)."""
        for _ in range(3):
            b = self.grow(req, lo, hi)
            if skip_narrow(b) is not skip_narrow(other):
                return b
        if req:
            raise ValueError("cannot build a distinct operand")  # equal leaf sets: caller retries
        if skip_narrow(other) is not self.x:
            return self.x
        u = self.rng.choice(self.space.unary)
        return ir.apply(u, self.x)

    # ------------------------------------------------------------ whole graphs
    def random_graph(self) -> Graph:
        """A random member of the space: ``last(mid(L1(pre1(x)), ...))`` under a random
        post-expression, for a random linear set of the space."""
        sp, rng = self.space, self.rng
        names = rng.choice(sp.linear_sets)
        *inner_names, last = names
        cap = sp.max_height
        pre_cap = max(0, min(rng.choice((0, 0, 1, 1, 2)), cap - 3))
        inner = [ir.linear(n, self.grow([], 0, pre_cap)) for n in inner_names]
        need = self.min_height(inner) + (1 if len(inner) == 1 else 0)
        post = rng.choice((0, 0, 1, 1, 2))
        mid_hi = max(need, cap - 1 - post)
        mid = self.grow(inner, 0, mid_hi, no_lin=True) if inner else self.grow([], 0, mid_hi)
        top = ir.linear(last, mid)
        root = self.grow([top], max(sp.min_height, top.ref_height), cap)
        return Graph(root)

    def random_member(self, attempts: int = 20) -> Graph:
        """:meth:`random_graph`, checked against every rule of the space (including rules a
        user added); a few fresh draws if one is refused."""
        for _ in range(attempts):
            try:
                graph = self.random_graph()
            except (ValueError, GraphTypeError):
                continue
            if not self.space.violations(graph):
                return graph
        raise SearchConfigError("space", f"could not draw a member of space "
                                f"{self.space.name!r} in {attempts} attempts; its rules may "
                                "exclude the shape last(mid(L1(pre(x)), ...)) this generator "
                                "builds (e.g. a single linear layer ending at width k)")
