"""A small term-rewriting engine: rules are data (pattern -> function), applied to a fixed point.

A :class:`Pat` matches a node by kind, primitive name or property, and children;
``name`` binds the matched node, and a name bound twice must match the very same
node (hash-consing makes that an identity test), so ``max(a, a)`` is a pattern.
A :class:`Rule` pairs a pattern with a function of the bindings that returns the
replacement node, or ``None`` to decline. :func:`graph_rewrite` rewrites bottom-up,
children first, re-applying rules to each new node until none fires, with a bound.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass

from .errors import MLPGraphError
from .ir import Graph, Node, Op, rebuild
from .primitives import REGISTRY, Primitive, get_primitive


@dataclass(frozen=True)
class Pat:
    """A node pattern. ``None`` fields match anything."""

    op: Op | None = None
    prim: str | None = None  # primitive name (for Op.PRIM)
    where: Callable[[Primitive], bool] | None = None  # predicate on the primitive
    src: tuple[Pat, ...] | None = None
    name: str | None = None

    def accepts(self, p: Primitive) -> bool:
        """Whether this pattern's own primitive test accepts ``p`` (children aside)."""
        return (self.prim is None or p.name == self.prim) and \
            (self.where is None or self.where(p))

    def match(self, n: Node, env: dict[str, Node], check_prim: bool = True) -> bool:
        if self.op is not None and n.op is not self.op:
            return False
        if check_prim and (self.prim is not None or self.where is not None):
            if n.op is not Op.PRIM:
                return False
            if self.prim is not None and n.arg != self.prim:
                return False
            if self.where is not None and not self.where(get_primitive(str(n.arg))):
                return False
        if self.name is not None:
            bound = env.get(self.name)
            if bound is not None and bound is not n:
                return False
            env[self.name] = n
        if self.src is not None:
            if len(self.src) != len(n.src):
                return False
            return all(p.match(s, env) for p, s in zip(self.src, n.src, strict=True))
        return True


def var(name: str) -> Pat:
    """A pattern matching any node, bound to ``name``."""
    return Pat(name=name)


@dataclass(frozen=True)
class Rule:
    """``pattern`` -> ``fn(node, bindings)``; the function returns a node or ``None``."""

    name: str
    pattern: Pat
    fn: Callable[[Node, dict[str, Node]], Node | None]
    doc: str = ""

    def apply(self, n: Node, check_prim: bool = True) -> Node | None:
        env: dict[str, Node] = {}
        if not self.pattern.match(n, env, check_prim):
            return None
        return self.fn(n, env)


class RewriteLimitError(MLPGraphError):
    """Rules did not reach a fixed point within the step bound (a cycle among rules)."""


_INDEX: dict[tuple, tuple[dict, dict]] = {}
_MISSING = object()


def _index(rules: Sequence[Rule]) -> tuple[dict[Op, list[Rule]], dict[str, list[Rule]]]:
    """Rules by node kind, plus a lazily filled per-primitive table (cached per rule list
    and registry version)."""
    key = (tuple(id(r) for r in rules), REGISTRY.version)
    hit = _INDEX.get(key)
    if hit is None:
        by_op = {op: [r for r in rules if r.pattern.op in (op, None) and
                      (op is Op.PRIM or (r.pattern.prim is None and r.pattern.where is None))]
                 for op in Op}
        if len(_INDEX) > 64:
            _INDEX.clear()
        hit = _INDEX[key] = (by_op, {})
    return hit


def graph_rewrite(graph: Graph, rules: Sequence[Rule], *, max_steps: int = 10_000,
                  trace: list[tuple[str, Node, Node]] | None = None,
                  memo: MutableMapping[Node, Node | None] | None = None) -> Graph:
    """Apply ``rules`` to every node, children first, until no rule fires anywhere.

    ``memo`` maps a node to its rewritten form (``None`` when it is already a fixed
    point); pass a persistent (e.g. weak-keyed) mapping to share work across calls.
    """
    by_op, by_prim = _index(rules)
    steps = 0
    memo = {} if memo is None else memo

    def candidates(n: Node) -> list[Rule]:
        if n.op is not Op.PRIM:
            return by_op[n.op]
        hit = by_prim.get(str(n.arg))
        if hit is None:
            p = get_primitive(str(n.arg))
            hit = by_prim[str(n.arg)] = [r for r in by_op[Op.PRIM] if r.pattern.accepts(p)]
        return hit

    def fire(n: Node) -> Node | None:
        for r in candidates(n):
            out = r.apply(n, check_prim=False)
            if out is not None and out is not n:
                if trace is not None:
                    trace.append((r.name, n, out))
                return out
        return None

    def go(n: Node) -> Node:
        nonlocal steps
        hit = memo.get(n, _MISSING)
        if hit is not _MISSING:
            return n if hit is None else hit
        src = tuple(go(s) for s in n.src)
        cur = n if src == n.src else rebuild(n, src)
        while (out := fire(cur)) is not None:
            steps += 1
            if steps > max_steps:
                raise RewriteLimitError(
                    f"no fixed point after {max_steps} rewrites (last rule output "
                    f"{out!r}); two rules undo each other"
                )
            cur = go(out) if out.src else out
        memo[n] = None if cur is n else cur
        if cur is not n:
            memo[cur] = None  # a fixed point (never store a node as its own value)
        return cur

    root = go(graph.root)
    return graph if root is graph.root else Graph(root)
