"""The simplifier: algebraic rules as data, driven by each primitive's declared properties.

Rules never change the function computed on finite inputs (a property test in
``tests/test_simplify.py`` compares the interpreter before and after on thousands of
random graphs). Where a new primitive declares ``commutative``, ``identity=0`` and so
on, these rules apply to it without any change here.

To add a rule: write ``Rule(name, pattern, fn)`` and append it to :data:`RULES`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from . import ir
from .graph import Graph
from .ir import Node, Op, Width
from .rewrite import Pat, Rule, RuleList, graph_rewrite, var

_OP_ORDER = {Op.INPUT: 0, Op.CONST: 1, Op.LINEAR: 2, Op.NARROW: 3, Op.PRIM: 4}


def sort_key(n: Node) -> tuple:
    """Canonical order of commutative operands: simpler first, then a stable structural hash."""
    return (n.height, _OP_ORDER[n.op], n.name, n.digest)


def _quick_key(n: Node) -> tuple:
    return (n.height, _OP_ORDER[n.op], n.name)


def canonical_sort(nodes: list[Node]) -> list[Node]:
    """Sort by :func:`sort_key`, hashing structure only when cheap keys tie."""
    quick = [_quick_key(n) for n in nodes]
    if len(set(quick)) == len(quick):
        return [n for _, n in sorted(zip(quick, nodes, strict=True), key=lambda p: p[0])]
    return sorted(nodes, key=sort_key)


def _is_const(n: Node, value: float | None = None) -> bool:
    return n.op is Op.CONST and (value is None or n.value == value)


def _const_like(n: Node, value: float) -> Node:
    return ir.const(value, n.width)


# ------------------------------------------------------------------ rule bodies
def _fold(n: Node, env: dict[str, Node]) -> Node | None:
    for s in n.src:
        if s.op is not Op.CONST:
            return None
    args = [torch.tensor(s.value, dtype=torch.float64) for s in n.src]
    with torch.no_grad():
        v = float(n.prim.fn(*args))
    return _const_like(n, v) if math.isfinite(v) else None


def _unary_idempotent(n: Node, env: dict[str, Node]) -> Node | None:
    inner = n.src[0]
    return inner if inner.prim is n.prim else None


def _involution(n: Node, env: dict[str, Node]) -> Node | None:
    inner = n.src[0]
    return inner.src[0] if inner.prim is n.prim else None


def _identity(n: Node, env: dict[str, Node]) -> Node | None:
    p = n.prim
    a, b = n.src
    if p.identity is not None:
        if _is_const(b, p.identity) and a.width is n.width:
            return a
        if _is_const(a, p.identity) and b.width is n.width:
            return b
    if p.right_identity is not None and _is_const(b, p.right_identity) and a.width is n.width:
        return a
    return None


def _absorbing(n: Node, env: dict[str, Node]) -> Node | None:
    z = n.prim.absorbing
    if any(_is_const(s, z) for s in n.src):
        return _const_like(n, float(z))
    return None


def _self_sub(n: Node, env: dict[str, Node]) -> Node:
    return _const_like(n, 0.0)


def _chain_leaves(n: Node) -> tuple[list[Node], bool]:
    """Leaves of the chain of ``n``'s op rooted at ``n``, left to right, and whether the
    chain is already left-deep (no chain node as a right operand)."""
    leaves: list[Node] = []
    left_deep = True
    stack = [n]
    while stack:
        m = stack.pop()
        if m.prim is n.prim and m.width is n.width:
            b = m.src[1]
            if b.prim is n.prim and b.width is n.width:
                left_deep = False
            stack.append(b)
            stack.append(m.src[0])
        else:
            leaves.append(m)
    return leaves, left_deep


def _precedes(b: Node, a: Node) -> bool:
    """Whether :func:`canonical_sort` puts ``b`` before ``a`` (given as ``[a, b]``)."""
    qa, qb = _quick_key(a), _quick_key(b)
    return qb < qa if qa != qb else sort_key(b) < sort_key(a)


def _ac_normalize(n: Node, env: dict[str, Node]) -> Node | None:
    """Associative + commutative chains: flatten, fold constants, dedupe if idempotent, sort,
    rebuild left-deep."""
    p = n.prim
    a, b = n.src
    if not ((a.prim is p and a.width is n.width) or (b.prim is p and b.width is n.width)):
        ca = a.op is Op.CONST and a.width is Width.S
        cb = b.op is Op.CONST and b.width is Width.S
        if not (ca and cb):  # a chain of two leaves: what the general case below does
            if cb:
                return None  # a scalar constant already last
            if ca or _precedes(b, a):
                return ir.apply(p, b, a)
            if a is b and p.idempotent:
                return a if a.width is n.width else None
            return None
    leaves, left_deep = _chain_leaves(n)
    consts = [c for c in leaves if _is_const(c) and c.width is Width.S]
    rest = [c for c in leaves if not (_is_const(c) and c.width is Width.S)]
    if len(consts) > 1:
        acc = torch.tensor(consts[0].value, dtype=torch.float64)
        for c in consts[1:]:
            acc = p.fn(acc, torch.tensor(c.value, dtype=torch.float64))
        if not math.isfinite(float(acc)):
            return None
        consts = [ir.const(float(acc))]
    if p.idempotent:
        rest = list({id(r): r for r in rest}.values())
    ordered = canonical_sort(rest) + consts
    if left_deep and len(ordered) == len(leaves) and \
            all(a is b for a, b in zip(ordered, leaves, strict=True)):
        return None  # already canonical
    if len(ordered) == 1:
        return ordered[0] if ordered[0].width is n.width else None
    out = ordered[0]
    for leaf in ordered[1:]:
        out = ir.apply(p, out, leaf)
    return out if out is not n else None


def _commute(n: Node, env: dict[str, Node]) -> Node | None:
    a, b = n.src
    if _is_const(a) and a.width is Width.S and not (_is_const(b) and b.width is Width.S):
        return ir.apply(n.prim, b, a)  # scalar constants go last
    if _is_const(b) and b.width is Width.S:
        return None
    qa, qb = _quick_key(a), _quick_key(b)
    if qa != qb:
        return ir.apply(n.prim, b, a) if qb < qa else None
    return ir.apply(n.prim, b, a) if sort_key(b) < sort_key(a) else None


def _narrow_const(n: Node, env: dict[str, Node]) -> Node | None:
    return ir.const(n.src[0].value, Width.M) if _is_const(n.src[0]) else None


def _unary(pred):
    return lambda p: p.arity == 1 and pred(p)


def _binary(pred):
    return lambda p: p.arity == 2 and pred(p)


#: The simplifier's rules, in the order they are tried at each node.
RULES = RuleList([
    Rule("fold-constants", Pat(op=Op.PRIM), _fold, "an op on constants is a constant"),
    Rule("narrow-constant", Pat(op=Op.NARROW), _narrow_const, "narrow(fill) is a fill"),
    Rule("drop-identity-op", Pat(prim="identity", src=(var("a"),)), lambda n, e: e["a"],
         "identity(a) -> a"),
    Rule("idempotent-unary", Pat(where=_unary(lambda p: p.idempotent), src=(var("a"),)),
         _unary_idempotent, "f(f(a)) -> f(a), e.g. relu(relu(a))"),
    Rule("involution", Pat(where=_unary(lambda p: p.involution), src=(var("a"),)),
         _involution, "f(f(a)) -> a, e.g. neg(neg(a))"),
    Rule("idempotent-binary", Pat(where=_binary(lambda p: p.idempotent),
                                  src=(var("a"), var("a"))),
         lambda n, e: e["a"], "f(a, a) -> a, e.g. max(a, a)"),
    Rule("self-subtraction", Pat(prim="sub", src=(var("a"), var("a"))), _self_sub,
         "a - a -> 0 (of a's width)"),
    Rule("identity-element", Pat(where=_binary(
        lambda p: p.identity is not None or p.right_identity is not None)), _identity,
        "f(a, e) -> a for an identity element e, e.g. a + 0, a * 1"),
    Rule("absorbing-element", Pat(where=_binary(lambda p: p.absorbing is not None)),
         _absorbing, "f(a, z) -> z for an absorbing element, e.g. a * 0"),
    Rule("flatten-ac-chain", Pat(where=_binary(lambda p: p.associative and p.commutative)),
         _ac_normalize, "flatten associative-commutative chains into a canonical order"),
    Rule("commute", Pat(where=_binary(lambda p: p.commutative and not p.associative)),
         _commute, "commutative (non-associative) operands in canonical order"),
])


def simplify(graph: Graph, *, rules: Sequence[Rule] | None = None, max_steps: int = 10_000,
             trace: list | None = None) -> Graph:
    """Rewrite ``graph`` with :data:`RULES` (or ``rules``) to a fixed point.

    Dead nodes disappear by construction (a graph holds only what its output reaches).
    Pass a list as ``trace`` to receive ``(rule name, before, after)`` for every step.
    With the default rules, results are memoized on the nodes (an entry dies with its
    node and is ignored once :data:`RULES` or the primitive registry changes), so
    re-simplifying a graph or a shared subgraph is a lookup.
    """
    memo = RULES.memo() if rules is None and trace is None else None
    return graph_rewrite(graph, RULES if rules is None else rules, max_steps=max_steps,
                         trace=trace, memo=memo)
