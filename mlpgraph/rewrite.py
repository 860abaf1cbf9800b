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

from collections.abc import Callable, Iterable, Iterator, MutableSequence, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import MLPGraphError
from .graph import Graph
from .ir import Node, Op, rebuild, set_rewritten
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


#: one rule ready to try on a node the index already matched by kind and primitive:
#: (rule, its pattern if children or a binding are left to check, else None)
Attempt = tuple[Rule, Pat | None]
#: (rules by node kind, attempts by node kind, attempts by primitive: filled as met)
RuleIndex = tuple[dict[Op, list[Rule]], dict[Op, list[Attempt]], dict[Primitive, list[Attempt]]]


def _attempts(rules: Iterable[Rule]) -> list[Attempt]:
    return [(r, None if r.pattern.src is None and r.pattern.name is None else r.pattern)
            for r in rules]


def _build_index(rules: Iterable[Rule]) -> RuleIndex:
    """Rules by node kind, the same as attempts, plus an (empty, filled as primitives are
    met) table of the attempts whose pattern accepts a given primitive."""
    rules = list(rules)
    by_op = {op: [r for r in rules if r.pattern.op in (op, None) and
                  (op is Op.PRIM or (r.pattern.prim is None and r.pattern.where is None))]
             for op in Op}
    return by_op, {op: _attempts(rs) for op, rs in by_op.items()}, {}


class MemoToken:
    """Identifies one memo of rewrites: a node rewritten under a token keeps
    ``(token, result)`` in its ``_rewritten`` slot (``result`` is ``None`` for a fixed
    point), so a lookup is one attribute read and the entry dies with the node."""

    __slots__ = ("stamp",)

    def __init__(self, stamp: object = None) -> None:
        self.stamp = stamp


class RuleList(MutableSequence[Rule]):
    """Rules in the order they are tried. Every edit bumps :attr:`version`, and what is
    derived from the rules (the index, the memo of rewrites) is rebuilt when it changed."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._rules = list(rules)
        self.version = 0
        self._index: tuple[int, RuleIndex] | None = None
        self._memo = MemoToken()

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

    def memo(self) -> MemoToken:
        """The memo of rewrites with these rules (see :class:`MemoToken`): a new one, so
        that earlier entries are ignored, whenever the rules or the primitive registry
        changed."""
        stamp = (self.version, REGISTRY.version)
        if self._memo.stamp != stamp:
            self._memo = MemoToken(stamp)
        return self._memo


def graph_rewrite(graph: Graph, rules: Sequence[Rule], *, max_steps: int = 10_000,
                  trace: list[tuple[str, Node, Node]] | None = None,
                  memo: MemoToken | None = None) -> Graph:
    """Apply ``rules`` to every node, children first, until no rule fires anywhere.

    ``memo``: a :class:`MemoToken` to share rewrites across calls (e.g.
    :meth:`RuleList.memo`), valid only while ``rules`` stay the same; without it the
    memo lasts this call. Each node keeps one entry, its latest token's.
    """
    by_op, by_kind, by_prim = rules.dispatch() if isinstance(rules, RuleList) \
        else _build_index(rules)
    token = MemoToken() if memo is None else memo
    steps = 0

    def fire(n: Node) -> Node | None:
        if n.op is Op.PRIM:
            attempts = by_prim.get(n.prim)
            if attempts is None:
                attempts = by_prim[n.prim] = [a for a in by_kind[Op.PRIM]
                                              if a[0].pattern.accepts(n.prim)]
        else:
            attempts = by_kind[n.op]
        for rule, pat in attempts:
            env: dict[str, Node] = {}
            if pat is not None and not pat.match(n, env, False):
                continue
            out = rule.fn(n, env)
            if out is not None and out is not n:
                if trace is not None:
                    trace.append((rule.name, n, out))
                return out
        return None

    def go(n: Node) -> Node:
        nonlocal steps
        hit = n._rewritten
        if hit is not None and hit[0] is token:
            return n if hit[1] is None else hit[1]
        src = n.src
        if not src:
            cur = n
        elif len(src) == 1:
            a = go(src[0])
            cur = n if a is src[0] else rebuild(n, (a,))
        else:
            new = tuple([go(s) for s in src])
            cur = n if new == src else rebuild(n, new)
        while (out := fire(cur)) is not None:
            steps += 1
            if steps > max_steps:
                raise RewriteLimitError(
                    f"no fixed point after {max_steps} rewrites (last rule output "
                    f"{out!r}); two rules undo each other"
                )
            cur = go(out) if out.src else out
        if cur is n:
            set_rewritten(n, (token, None))
        else:
            set_rewritten(n, (token, cur))
            set_rewritten(cur, (token, None))  # a fixed point
        return cur

    try:
        root = go(graph.root)
    finally:  # break the recursive closure's reference cycle (no wait for the collector)
        go = fire = None  # noqa: F841
    return graph if root is graph.root else Graph(root)
