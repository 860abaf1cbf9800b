"""Crossover of two candidates (optional; the paper's controller never uses it).

- :func:`crossover_genes`: uniform, gene-wise: each layer takes each *allowed* gene
  (expression, ``s``, ratio) from one parent or the other. Always valid.
- :func:`crossover_subtree`: in one layer, a linear-free subtree of the first parent's
  expression is replaced by a linear-free subtree of the second's (``x``-only parts, so
  no linear is lost or duplicated), within the height window; then the space's guard.
"""

from __future__ import annotations

from dataclasses import replace

from mlpgraph import Node, Op, ir

from .candidate import Candidate, Lineage, MutationRecord
from .graphedit import View, is_activation
from .mutations import MutationContext


def _linear_free(n: Node) -> bool:
    return all(m.op is not Op.LINEAR for m in ir.toposort(n))


def crossover_genes(a: Candidate, b: Candidate, ctx: MutationContext,
                    genes: frozenset[str]) -> Candidate | None:
    """Each layer's allowed genes from ``a`` or ``b`` at random; ``None`` if the parents do
    not differ in any allowed gene."""
    fields = {"expr": "graph", "stacks": "stacks", "ratio": "ratio"}
    diffs = [(i, g) for i in range(a.num_layers) for g in sorted(genes)
             if getattr(a.layers[i], fields[g]) != getattr(b.layers[i], fields[g])]
    if not diffs or a.num_layers != b.num_layers:
        return None
    picked = [d for d in diffs if ctx.rng.random() < 0.5]
    if not picked or len(picked) == len(diffs):  # the child must differ from both parents
        picked = ctx.rng.sample(diffs, max(1, len(diffs) // 2)) if len(diffs) > 1 else []
        if not picked:
            return None
    layers = list(a.layers)
    for i, g in picked:
        layers[i] = replace(layers[i], **{fields[g]: getattr(b.layers[i], fields[g])})
    rec = MutationRecord("crossover_genes", -1,
                         {"from_second": [[i, g] for i, g in picked]})
    child = Candidate(tuple(layers), Lineage("crossover", (a.id, b.id), (rec,)))
    return None if child.id in (a.id, b.id) else child


def crossover_subtree(a: Candidate, b: Candidate, ctx: MutationContext) -> Candidate | None:
    """Graft a linear-free subtree of ``b``'s expression into the same layer of ``a``."""
    sp, rng = ctx.space, ctx.rng
    layers = [i for i in range(min(a.num_layers, b.num_layers))
              if a.layers[i].graph != b.layers[i].graph]
    rng.shuffle(layers)
    for li in layers[:3]:
        ga, gb = a.layers[li].graph, b.layers[li].graph
        va = View(ga)
        donors = [n for n in View(gb).core if _linear_free(n)]
        options = []
        for e in va.edges():
            c, p = va.child(e), e[0]
            if c.op is Op.LINEAR or not _linear_free(c):
                continue
            for o in donors:
                if o is c or va.depth(e) + o.ref_height > sp.max_height:
                    continue
                if p is not None and is_activation(p) and is_activation(o):
                    continue
                if p is not None and len(p.src) == 2 and ir.skip_narrow(p.src[1 - e[1]]) is o:
                    continue
                options.append((e, o))
        won = ctx.first(ga, options, lambda opt, v=va: v.replace_at(opt[0], opt[1]))
        if won is None:
            continue
        graph, (e, o) = won
        rec = MutationRecord("crossover_subtree", li,
                             {"site": ir.describe(va.child(e), 80), "donor": ir.describe(o, 80)})
        child = a.with_layer(li, replace(a.layers[li], graph=graph))
        if child.id in (a.id, b.id):  # simplifies to a parent: no new candidate
            continue
        return child.with_lineage(Lineage("crossover", (a.id, b.id), (rec,)))
    return None
