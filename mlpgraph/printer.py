"""Node -> text. The output parses back to the very same node (hash-consed identity);
:func:`mlpgraph.graph.format_graph` prints a whole graph with it."""

from __future__ import annotations

from . import ir
from .ir import Node, Op, Width

_INFIX = {"add": ("+", 1), "sub": ("-", 1), "mul": ("*", 2)}


def format_node(node: Node, *, explicit: bool = False, infix: bool = True) -> str:
    """Text for a node. ``explicit`` prints every ``narrow`` and width annotation."""
    memo: dict[int, tuple[str, int]] = {}

    def go(n: Node) -> tuple[str, int]:  # (text, precedence: 3 = atom)
        hit = memo.get(id(n))
        if hit is not None:
            return hit
        if n.op is Op.INPUT:
            out = ("x", 3)
        elif n.op is Op.CONST:
            if n.width is Width.S:
                out = (n.name, 3 if n.value >= 0 else 0)
            else:
                out = (f"fill[{n.width.value}]({n.name})", 3)
        elif n.op is Op.NARROW:
            out = (f"narrow({go(n.src[0])[0]})", 3)
        elif n.op is Op.LINEAR:
            ann = ""
            if explicit or n.width is not ir.default_linear_out(n.src[0].width):
                ann = f"[{n.width.value}]"
            out = (f"{n.name}{ann}({go(n.src[0])[0]})", 3)
        else:
            out = _prim(n)
        memo[id(n)] = out
        return out

    def _prim(n: Node) -> tuple[str, int]:
        src = n.src
        if not explicit and len(src) == 2:
            bare = tuple(s.src[0] if s.op is Op.NARROW else s for s in src)
            if bare != src and ir.apply(n.prim, *bare) is n:
                src = bare  # the parser re-inserts these narrow nodes
        if infix and n.name in _INFIX:
            sym, prec = _INFIX[n.name]
            (lt, lp), (rt, rp) = go(src[0]), go(src[1])
            lt = lt if lp >= prec else f"({lt})"
            # right operand: same precedence needs parentheses for '-' and to keep the tree shape
            rt = rt if rp > prec else f"({rt})"
            return f"{lt} {sym} {rt}", prec
        return f"{n.name}({', '.join(go(s)[0] for s in src)})", 3

    try:
        return go(node)[0]
    finally:  # break the recursive closures' reference cycle (no wait for the collector)
        go = _prim = None  # noqa: F841

