"""A small term-rewriting engine: rules are data (pattern -> function), applied to a fixed point.

A :class:`Pat` matches a node by kind, primitive name or property, and children;
``name`` binds the matched node, and a name bound twice must match the very same
node (hash-consing makes that an identity test), so ``max(a, a)`` is a pattern.
A :class:`Rule` pairs a pattern with a function of the bindings that returns the
replacement node, or ``None`` to decline. :func:`graph_rewrite` rewrites bottom-up,
children first, re-applying rules to each new node until none fires, with a bound.
A :class:`RuleList` counts its edits, so the index and memo derived from it are rebuilt
whenever it changes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, MutableMapping, MutableSequence, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import MLPGraphError
from .ir import Graph, Node, Op, rebuild
from .primitives import REGISTRY, Primitive


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
            if self.prim is not None and n.name != self.prim:
                return False
            if self.where is not None and not self.where(n.prim):
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


RuleIndex = tuple[dict[Op, list[Rule]], dict[Primitive, list[Rule]]]
_MISSING = object()


def _build_index(rules: Iterable[Rule]) -> RuleIndex:
    """Rules by node kind, plus an (empty, filled as primitives are met) table of the rules
    whose pattern accepts a given primitive."""
    rules = list(rules)
    by_op = {op: [r for r in rules if r.pattern.op in (op, None) and
                  (op is Op.PRIM or (r.pattern.prim is None and r.pattern.where is None))]
             for op in Op}
    return by_op, {}


class RuleList(MutableSequence[Rule]):
    """Rules in the order they are tried. Every edit bumps :attr:`version`, and what is
    derived from the rules (the index, the memo of rewrites) is rebuilt when it changed."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._rules = list(rules)
        self.version = 0
        self._index: tuple[int, RuleIndex] | None = None
        self._memo: tuple[tuple[int, int], MutableMapping[Node, Node | None]] | None = None

    def __len__(self) -> int:
        return len(self._rules)

    def __getitem__(self, i: int | slice) -> Any:
        return self._rules[i]

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules)

    def __setitem__(self, i: int | slice, rule: Any) -> None:
        self._rules[i] = rule
        self.version += 1

    def __delitem__(self, i: int | slice) -> None:
        del self._rules[i]
        self.version += 1

    def insert(self, i: int, rule: Rule) -> None:
        self._rules.insert(i, rule)
        self.version += 1

    def __repr__(self) -> str:
        return f"RuleList({[r.name for r in self._rules]})"

    def dispatch(self) -> RuleIndex:
        """The rules by node kind and by primitive (see :func:`_build_index`), for this
        version of the list."""
        if self._index is None or self._index[0] != self.version:
            self._index = (self.version, _build_index(self._rules))
        return self._index[1]

    def memo(self) -> MutableMapping[Node, Node | None]:
        """Rewrites with these rules, node -> result (``None``: a fixed point), weakly keyed so
        nothing is kept alive; emptied when the rules or the primitive registry change."""
        stamp = (self.version, REGISTRY.version)
        if self._memo is None or self._memo[0] != stamp:
            self._memo = (stamp, weakref.WeakKeyDictionary())
        return self._memo[1]


def graph_rewrite(graph: Graph, rules: Sequence[Rule], *, max_steps: int = 10_000,
                  trace: list[tuple[str, Node, Node]] | None = None,
                  memo: MutableMapping[Node, Node | None] | None = None) -> Graph:
    """Apply ``rules`` to every node, children first, until no rule fires anywhere.

    ``memo`` maps a node to its rewritten form (``None`` when it is already a fixed
    point); pass a persistent (e.g. weak-keyed) mapping to share work across calls.
    """
    by_op, by_prim = rules.dispatch() if isinstance(rules, RuleList) else _build_index(rules)
    steps = 0
    memo = {} if memo is None else memo

    def candidates(n: Node) -> list[Rule]:
        if n.op is not Op.PRIM:
            return by_op[n.op]
        p = n.prim
        hit = by_prim.get(p)
        if hit is None:
            hit = by_prim[p] = [r for r in by_op[Op.PRIM] if r.pattern.accepts(p)]
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
