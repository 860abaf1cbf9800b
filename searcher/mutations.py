"""Typed mutations: each returns a member of the space *by construction*.

A mutation lists the edits that the space's rules allow locally (same-arity ops, no
activation directly inside an activation, no linear directly inside a linear, the
height window with ``narrow`` not counted, width classes kept so every linear keeps its
shape, no cycle, linears neither lost nor duplicated), picks one at random and builds
it. The result then passes one guard, ``space.violations``, which also enforces any rule
a user added to ``mlpgraph.space.SPACE_RULES``; the rare edit that the local analysis
admits but the guard refuses (hash-consing can merge a new node with an existing one into
``add(a, a)``) is dropped and the next option tried, a bounded number of times.

Each mutation is declared once, ``@mutation("name", weight=1.0, gene="expr")`` on its
function (its docstring is its description). :data:`DEFAULT_TABLE` is the registry: every
declared mutation in declaration order (a plugin's joins it); ``add``, ``with_weights`` and
``for_genes`` derive other tables. Stage masks (:data:`STAGE_GENES`) say which genes
(:data:`GENES`) may change: stage 1 all, stage 2 the expressions, stage 3 ``s`` and ratio.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from mlpgraph import Graph, GraphTypeError, MLPLayer, Node, Op, Space, ir
from mlpgraph.ir import skip_narrow

from .candidate import Candidate, MutationRecord
from .errors import MutationError
from .graphedit import (
    Edge,
    Grower,
    View,
    is_activation,
    linear_names,
    op_is_activation,
    substitute,
    width_class,
)

GENES = ("expr", "stacks", "ratio")
STAGE_GENES: dict[int, frozenset[str]] = {
    1: frozenset(GENES), 2: frozenset({"expr"}), 3: frozenset({"stacks", "ratio"})}
GUARD_ATTEMPTS = 8  # edits tried per call after the first guard refusal


@dataclass
class MutationContext:
    """What every mutation gets: the space, the RNG, a grower, and counters."""

    space: Space
    rng: random.Random
    grower: Grower = field(init=False)
    built: int = 0  # graphs built and checked
    guard_rejections: int = 0  # built graphs the final guard refused

    def __post_init__(self) -> None:
        self.grower = Grower(self.space, self.rng)

    def finish(self, old: Graph, root: Node) -> Graph | None:
        """``Graph(root)`` if it differs from ``old``, keeps its linears and is in the space."""
        self.built += 1
        if root is old.root:
            return None
        try:
            graph = Graph(root)
        except GraphTypeError:
            self.guard_rejections += 1
            return None
        if sorted(graph.linears) != sorted(old.linears) or self.space.violations(graph):
            self.guard_rejections += 1
            return None
        return graph

    def first(self, old: Graph, options: list, build: Callable) -> tuple[Graph, object] | None:
        """Go through the options in a random order (so the first valid one is a uniform
        draw among the valid ones). ``build(option)`` returns the new root, or ``None`` when a
        cheap local check rules the option out. The first root that passes the guard wins;
        after :data:`GUARD_ATTEMPTS` guard refusals the mutation gives up (returns ``None``)."""
        self.rng.shuffle(options)
        refusals = 0
        for opt in options:
            try:
                root = build(opt)
            except ValueError:  # the grower found no room (rare): next option
                root = None
            if root is None:
                continue
            graph = self.finish(old, root)
            if graph is not None:
                return graph, opt
            refusals += 1
            if refusals > GUARD_ATTEMPTS:
                break
        return None


MutationFn = Callable[[MLPLayer, MutationContext], "tuple[MLPLayer, dict] | None"]


@dataclass(frozen=True)
class Mutation:
    """One entry of the table: ``fn(gene, ctx) -> (new gene, JSON-able args) | None``
    (``None``: not applicable to this gene)."""

    name: str
    fn: MutationFn
    weight: float = 1.0
    gene: str = "expr"
    doc: str = ""

    def __post_init__(self) -> None:
        if self.gene not in GENES:
            raise MutationError(f"mutation {self.name!r} declares gene {self.gene!r}; "
                                f"use one of {GENES}")
        if not self.weight >= 0:
            raise MutationError(f"mutation {self.name!r} has weight {self.weight!r}; "
                                "weights must be non-negative numbers")


# ------------------------------------------------------------------- the table
class MutationTable:
    """Named, weighted mutations. :meth:`add`, :meth:`with_weights` and :meth:`for_genes`
    return new tables (only :func:`mutation` adds to :data:`DEFAULT_TABLE` in place)."""

    def __init__(self, entries: Iterable[Mutation]) -> None:
        self.entries: dict[str, Mutation] = {}
        for m in entries:
            if m.name in self.entries:
                raise MutationError(f"mutation {m.name!r} is in the table twice; rename one")
            self.entries[m.name] = m

    def __iter__(self) -> Iterator[Mutation]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, name: str) -> Mutation:
        try:
            return self.entries[name]
        except KeyError:
            raise MutationError(f"no mutation {name!r}; the table has "
                                f"{sorted(self.entries)}") from None

    def add(self, mutation: Mutation) -> MutationTable:
        return MutationTable([*self.entries.values(), mutation])

    def with_weights(self, weights: dict[str, float]) -> MutationTable:
        for name in weights:
            self[name]  # noqa: B018 - raises a helpful error for unknown names
        return MutationTable(replace(m, weight=float(weights.get(m.name, m.weight)))
                             for m in self)

    def for_genes(self, genes: Iterable[str]) -> MutationTable:
        """Only the mutations of the given genes (a stage mask)."""
        allowed = frozenset(genes)
        unknown = allowed - set(GENES)
        if unknown:
            raise MutationError(f"unknown gene(s) {sorted(unknown)} in a stage mask; "
                                f"genes are {GENES}")
        return MutationTable(m for m in self if m.gene in allowed)

    def weights(self) -> dict[str, float]:
        return {m.name: m.weight for m in self}


#: every declared mutation, in declaration order: the registry :func:`mutation` adds to
DEFAULT_TABLE = MutationTable([])


def mutation(name: str, *, weight: float = 1.0, gene: str = "expr", replace: bool = False
             ) -> Callable[[MutationFn], MutationFn]:
    """Declare the decorated ``fn(gene, ctx) -> (new gene, JSON-able args) | None`` as
    mutation ``name`` of :data:`DEFAULT_TABLE` (its docstring is its description)."""
    def register(fn: MutationFn) -> MutationFn:
        if name in DEFAULT_TABLE.entries and not replace:
            raise MutationError(f"mutation {name!r} is already declared; choose another name "
                                "or pass replace=True")
        DEFAULT_TABLE.entries[name] = Mutation(name, fn, weight, gene, inspect.getdoc(fn) or "")
        return fn
    return register


def _d(n: Node) -> str:
    return ir.describe(n, 80)


# -------------------------------------------------------- expression mutations
@mutation("replace_op")
def replace_op(gene: MLPLayer, ctx: MutationContext) -> tuple[MLPLayer, dict] | None:
    """Replace a primitive by another of the same arity."""
    v, sp = View(gene.graph), ctx.space
    options = []
    for n in v.prims:
        for op in sp.unary if len(n.src) == 1 else sp.binary:
            if op == n.name:
                continue
            if len(n.src) == 1 and op_is_activation(op) and (
                    is_activation(skip_narrow(n.src[0])) or any(is_activation(p)
                                                        for p, _ in v.parents[n])):
                continue
            options.append((n, op))

    def build(opt: tuple[Node, str]) -> Node | None:
        n, op = opt
        new = ir.apply(op, *map(skip_narrow, n.src))
        return None if v.sibling_clash(n, new) else _swap_in(v, n, new)

    won = ctx.first(v.graph, options, build)
    if won is None:
        return None
    graph, (n, op) = won
    return replace(gene, graph=graph), {"site": _d(n), "from": n.name, "to": op}


def _swap_in(v: View, old: Node, new: Node) -> Node:
    return substitute(v.graph, {old: new})


@mutation("insert_unary")
def insert_unary(gene: MLPLayer, ctx: MutationContext) -> tuple[MLPLayer, dict] | None:
    """Insert a unary op on an edge (or above the root)."""
    g, sp = gene.graph, ctx.space
    v = View(g)
    options = []
    for e in v.edges():
        c, p = v.child(e), e[0]
        if v.depth(e) + c.ref_height + 1 > sp.max_height:
            continue
        for u in sp.unary:
            if op_is_activation(u) and (is_activation(c) or (p is not None and is_activation(p))):
                continue
            options.append((e, u))

    def build(opt: tuple[Edge, str]) -> Node | None:
        (p, i), u = opt
        q = ir.apply(u, v.child(opt[0]))
        if p is not None and len(p.src) == 2 and skip_narrow(p.src[1 - i]) is q:
            return None
        return v.replace_at(opt[0], q)

    won = ctx.first(g, options, build)
    if won is None:
        return None
    graph, (e, u) = won
    return replace(gene, graph=graph), {"site": _d(v.child(e)), "op": u}


@mutation("insert_binary")
def insert_binary(gene: MLPLayer, ctx: MutationContext) -> tuple[MLPLayer, dict] | None:
    """Join the node on an edge with another existing node by a binary op."""
    g, sp, rng = gene.graph, ctx.space, ctx.rng
    if not sp.binary:
        return None
    v = View(g)
    chosen: dict[Edge, Node] = {}

    def build(e: Edge) -> Node | None:  # edges in random order; a uniform partner per edge
        c, p = v.child(e), e[0]
        banned = set() if p is None else {p, *ir.ancestors(g, p)}
        room = sp.max_height - v.depth(e) - 1
        d_only = width_class(c) == "d"
        partners = [o for o in v.core if o is not c and o not in banned and c.ref_height <= room
                    and o.ref_height <= room and not (d_only and width_class(o) != "d")]
        if not partners:
            return None
        o = chosen[e] = rng.choice(partners)
        a, b = (c, o) if rng.random() < 0.5 else (o, c)
        return v.replace_at(e, ir.apply(rng.choice(sp.binary), a, b))

    won = ctx.first(g, v.edges(), build)
    if won is None:
        return None
    graph, e = won
    return replace(gene, graph=graph), {"site": _d(v.child(e)), "with": _d(chosen[e])}


@mutation("delete_node")
def delete_node(gene: MLPLayer, ctx: MutationContext) -> tuple[MLPLayer, dict] | None:
    """Remove a primitive, keeping one of its operands in its place."""
    v, sp = View(gene.graph), ctx.space
    options = []
    for n in v.prims:
        for j in range(len(n.src)):
            c = skip_narrow(n.src[j])
            if width_class(c) != width_class(n):
                continue
            if any((is_activation(p) and is_activation(c)) or
                   (p.op is Op.LINEAR and c.op is Op.LINEAR) or
                   (len(p.src) == 2 and skip_narrow(p.src[1 - i]) is c) for p, i in v.parents[n]):
                continue
            options.append((n, c))

    def build(opt: tuple[Node, Node]) -> Node | None:
        root = _swap_in(v, *opt)
        if not sp.min_height <= root.ref_height <= sp.max_height or \
                linear_names(ir.toposort(root)) != v.linear_names:
            return None
        return root

    won = ctx.first(v.graph, options, build)
    if won is None:
        return None
    graph, (n, c) = won
    return replace(gene, graph=graph), {"site": _d(n), "kept": _d(c)}


@mutation("swap_operands", weight=0.5)
def swap_operands(gene: MLPLayer, ctx: MutationContext) -> tuple[MLPLayer, dict] | None:
    """Swap the operands of a non-commutative binary op (none in the paper's space)."""
    g = gene.graph
    v = View(g)
    options = [n for n in v.prims if len(n.src) == 2 and not n.prim.commutative]
    won = ctx.first(g, options, lambda n: _swap_in(
        v, n, ir.apply(n.prim, skip_narrow(n.src[1]), skip_narrow(n.src[0]))))
    if won is None:
        return None
    graph, n = won
    return replace(gene, graph=graph), {"site": _d(n)}


@mutation("regrow_subtree")
def regrow_subtree(gene: MLPLayer, ctx: MutationContext) -> tuple[MLPLayer, dict] | None:
    """Replace the subtree on an edge by a random valid one over the same linear layers."""
    g, sp, gr = gene.graph, ctx.space, ctx.grower
    v = View(g)
    options = []
    for e in v.edges():
        c, p = v.child(e), e[0]
        if c.op is Op.LINEAR:
            continue  # regrow its input instead (the edge below it)
        req = v.frontier(c)
        d = v.depth(e)
        lo, hi = max(0, sp.min_height - d), sp.max_height - d
        no_act = p is not None and is_activation(p)
        no_lin = p is not None and p.op is Op.LINEAR
        if gr.feasible(req, lo, hi, no_act, no_lin):
            options.append((e, req, lo, hi, no_act, no_lin))
    grown: dict[Edge, Node] = {}

    def build(opt: tuple) -> Node | None:
        (p, i), c = opt[0], v.child(opt[0])
        sibling = skip_narrow(p.src[1 - i]) if p is not None and len(p.src) == 2 else None
        for _ in range(3):  # a fresh draw when it equals the old subtree or its sibling
            q = grown[opt[0]] = gr.grow(*opt[1:])
            if q is not c and skip_narrow(q) is not sibling:
                return v.replace_at(opt[0], q)
        return None

    won = ctx.first(g, options, build)
    if won is None:
        return None
    graph, opt = won
    return replace(gene, graph=graph), {"site": _d(v.child(opt[0])), "new": _d(grown[opt[0]])}


# ------------------------------------------------------------ width mutations
@mutation("change_stacks", gene="stacks")
def change_stacks(gene: MLPLayer, ctx: MutationContext) -> tuple[MLPLayer, dict] | None:
    """Another stack count ``s`` from the space."""
    pool = [s for s in ctx.space.stacks if s != gene.stacks]
    if not pool:
        return None
    s = ctx.rng.choice(pool)
    return replace(gene, stacks=s), {"from": gene.stacks, "to": s}


@mutation("change_ratio", gene="ratio")
def change_ratio(gene: MLPLayer, ctx: MutationContext) -> tuple[MLPLayer, dict] | None:
    """Another width ratio from the space."""
    pool = [r for r in ctx.space.ratios if r != gene.ratio]
    if not pool:
        return None
    r = ctx.rng.choice(pool)
    return replace(gene, ratio=r), {"from": str(gene.ratio), "to": str(r)}


#: the reference controller's moves: subtree replacement, node replacement, insertion
PAPER_MUTATIONS = ("regrow_subtree", "replace_op", "insert_unary", "insert_binary",
                   "change_stacks", "change_ratio")


def mutate(cand: Candidate, table: MutationTable, ctx: MutationContext,
           layer: int | None = None) -> tuple[Candidate, MutationRecord] | None:
    """Apply one weighted-random mutation to one layer (random unless ``layer`` is given).
    Mutations that do not apply are skipped; ``None`` only when nothing applies anywhere."""
    rng = ctx.rng
    layers = [layer] if layer is not None else rng.sample(range(cand.num_layers),
                                                          cand.num_layers)
    for li in layers:
        pool = [m for m in table if m.weight > 0]
        while pool:
            m = rng.choices(pool, [x.weight for x in pool])[0]
            pool.remove(m)
            out = m.fn(cand.layers[li], ctx)
            if out is not None:
                gene, args = out
                return cand.with_layer(li, gene), MutationRecord(m.name, li, args)
    return None
