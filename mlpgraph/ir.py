"""The IR: a typed, immutable, hash-consed expression DAG of nodes, and the node toolkit.

A :class:`Node` is one small frozen record: its kind ``op``, its width, its children
``src`` and one typed payload (``prim`` for a primitive, ``name`` for a linear layer,
``value`` for a constant). Nodes are hash-consed: building a node that is structurally
equal to a live one returns that very object, so common subexpressions are shared by
construction and equality is identity. ``W1(x)`` written twice is one node; same
linear name means same weights.

Widths are symbolic (:class:`Width`): ``d`` (model width), ``k`` (inner width),
``m`` = ``min(d, k)`` (only produced by an explicit ``narrow`` coercion node) and
``1`` (a scalar constant that broadcasts). They are bound to integers only when a
module is built. A :class:`~mlpgraph.graph.Graph` (:mod:`mlpgraph.graph`) wraps the
output node.

The toolkit every other module uses: :func:`skip_narrow`, :func:`rebuild`,
:func:`toposort`, :func:`ancestors`, :func:`describe` and :func:`node_arg`; heights
are cached on the nodes.
"""

from __future__ import annotations

import hashlib
import math
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Protocol

from .errors import GraphTypeError
from .primitives import Primitive, get_primitive


class Width(StrEnum):
    """Symbolic width class of a node's feature dimension."""

    D = "d"  # model width (input and output of the MLP)
    K = "k"  # inner width
    M = "m"  # min(d, k): the width a binary op on a d and a k operand is cut to
    S = "1"  # scalar constant, broadcasts against any width

    def bind(self, d_model: int, d_inner: int | None) -> int:
        """The integer width for given model/inner widths (scalars are 1)."""
        if self is Width.D:
            return d_model
        if self is Width.S:
            return 1
        if d_inner is None:
            raise GraphTypeError(f"width {self.value!r} needs d_inner, which was not given")
        return d_inner if self is Width.K else min(d_model, d_inner)


class Op(StrEnum):
    """Node kinds."""

    INPUT = "x"
    LINEAR = "linear"
    PRIM = "prim"
    CONST = "const"
    NARROW = "narrow"


_LINEAR_NAME = re.compile(r"^W[A-Za-z0-9_]*$")
_GOOD_NAMES: set[str] = set()  # linear names already checked against _LINEAR_NAME
_FIXED_NAME = {Op.INPUT: "x", Op.NARROW: "narrow"}
# hash-consing table: (op, width, payload, *child ids) -> weak reference to the live node
_CACHE: dict[tuple, _Ref] = {}


@dataclass(frozen=True, eq=False, slots=True, weakref_slot=True)
class Node:
    """One node of the DAG. Do not call the constructor: use the builders below."""

    op: Op
    width: Width
    src: tuple[Node, ...]
    prim: Primitive | None  # the primitive (Op.PRIM only)
    name: str  # a linear's or primitive's name; "x", "narrow", or a constant's repr
    value: float | None  # the constant (Op.CONST only)
    height: int = field(repr=False)  # edges on the longest path down to a leaf
    ref_height: int = field(repr=False)  # the same with `narrow` not counted (the space's)
    _digest: str | None = field(default=None, repr=False)
    # (memo token, rewritten node or None for a fixed point): see mlpgraph.rewrite
    _rewritten: tuple[object, Node | None] | None = field(default=None, repr=False)

    @property
    def digest(self) -> str:
        """A stable structural hash (the same in every process), computed on first use."""
        d = self._digest
        if d is None:
            h = hashlib.blake2b(digest_size=10)
            h.update(f"{self.op.value}|{node_arg(self)!r}|{self.width.value}|".encode())
            for s in self.src:
                h.update(s.digest.encode())
            d = h.hexdigest()
            object.__setattr__(self, "_digest", d)
        return d

    def __repr__(self) -> str:
        return f"Node({describe(self)})"

    # Hash-consing must survive copies and pickles (process-pool workers, Ray): a copy is
    # the node itself and unpickling rebuilds through the table (a primitive by its name,
    # resolved in the registry), so ``is`` stays equality.
    def __copy__(self) -> Node:
        return self

    def __deepcopy__(self, memo: dict) -> Node:
        return self

    def __reduce__(self) -> tuple:
        return _revive, (self.op, self.width, self.src, node_arg(self))


def node_arg(n: Node) -> str | float | None:
    """The ``arg`` column of ``n``'s serialized row: the primitive's or linear's name, the
    constant's value, or ``None``."""
    return n.value if n.op is Op.CONST else n.name if n.op in (Op.PRIM, Op.LINEAR) else None


# Nodes are built by setting their slots directly, not through the frozen dataclass's
# __init__ (docs/decisions.md, mlpgraph: "Nodes are built slot by slot").
_new = object.__new__
(_set_op, _set_width, _set_src, _set_prim, _set_name, _set_value, _set_height,
 _set_ref_height, _set_digest, set_rewritten) = (getattr(Node, f.name).__set__
                                                 for f in fields(Node))


def _make(op: Op, width: Width, src: tuple[Node, ...], payload: Primitive | str | float | None
          ) -> Node:
    """The live node with this structure, or a new one. ``payload``: the :class:`Primitive`,
    the linear's name or the constant's value (``None`` for the input and ``narrow``)."""
    n_src = len(src)  # keys spelled out for the common arities: this runs for every node
    key = (op, width, payload) if not n_src else (op, width, payload, id(src[0])) \
        if n_src == 1 else (op, width, payload, id(src[0]), id(src[1])) if n_src == 2 \
        else (op, width, payload, *map(id, src))
    ref = _CACHE.get(key)
    if ref is not None:
        hit = ref()
        if hit is not None:
            return hit
    node = _new(Node)
    _set_op(node, op)
    _set_width(node, width)
    _set_src(node, src)
    if op is Op.PRIM:
        _set_prim(node, payload)
        _set_value(node, None)
        _set_name(node, payload.name)
    else:
        _set_prim(node, None)
        _set_value(node, payload if op is Op.CONST else None)
        _set_name(node, repr(payload) if op is Op.CONST else payload or _FIXED_NAME[op])
    _set_digest(node, None)
    set_rewritten(node, None)
    if n_src == 1:
        s = src[0]
        _set_height(node, s.height + 1)
        _set_ref_height(node, s.ref_height if op is Op.NARROW else s.ref_height + 1)
    elif n_src:
        h = rh = 0
        for s in src:
            h = s.height if s.height > h else h
            rh = s.ref_height if s.ref_height > rh else rh
        _set_height(node, h + 1)
        _set_ref_height(node, rh if op is Op.NARROW else rh + 1)
    else:
        _set_height(node, 0)
        _set_ref_height(node, 0)
    ref = _Ref(node, _forget)
    ref.key = key
    _CACHE[key] = ref
    return node


def _revive(op: Op, width: Width, src: tuple[Node, ...], arg: str | float | None) -> Node:
    return _make(op, width, src, get_primitive(arg) if op is Op.PRIM else arg)


class _Ref(weakref.ref):
    """A weak reference that remembers its hash-consing key."""

    __slots__ = ("key",)


def _forget(ref: _Ref) -> None:
    if _CACHE.get(ref.key) is ref:
        del _CACHE[ref.key]


# ---------------------------------------------------------------- builders
def input_node() -> Node:
    """The MLP input ``x`` (width ``d``): one node, alive for the whole process."""
    return _INPUT


_INPUT = _make(Op.INPUT, Width.D, (), None)


def const(value: float, width: Width = Width.S) -> Node:
    """A constant; ``width`` other than scalar means a filled tensor of that width."""
    v = float(value)
    if not math.isfinite(v):
        raise GraphTypeError(f"constant {value!r} is not finite; only finite constants exist")
    w = width if isinstance(width, Width) else Width(width)
    return _make(Op.CONST, w, (), v + 0.0)  # +0.0 folds -0.0 into 0.0


def default_linear_out(width: Width) -> Width:
    """A linear maps to the other width class: d -> k, k -> d, m -> d."""
    return Width.K if width is Width.D else Width.D


def linear(name: str, a: Node, out: Width | str | None = None) -> Node:
    """Apply the linear layer ``name`` to ``a``; ``out`` annotates the output width."""
    if not isinstance(name, str) or (name not in _GOOD_NAMES and not _LINEAR_NAME.match(name)):
        raise GraphTypeError(
            f"linear layer name {name!r} is invalid: it must start with 'W' followed by "
            "letters, digits or '_' (e.g. W1, W2, Wgate)"
        )
    if a.width is Width.S:
        raise GraphTypeError(f"linear {name} is applied to the scalar {describe(a)}; "
                             "apply it to a tensor-valued node")
    w = default_linear_out(a.width) if out is None else out if isinstance(out, Width) \
        else Width(out)
    if w is not Width.D and w is not Width.K:
        raise GraphTypeError(f"linear {name} output width must be 'd' or 'k', got {w.value!r}")
    if len(_GOOD_NAMES) < 4096:
        _GOOD_NAMES.add(name)
    return _make(Op.LINEAR, w, (a,), name)


def narrow(a: Node) -> Node:
    """Explicit coercion of ``a`` to width ``min(d, k)`` (its first channels)."""
    if a.width in (Width.M, Width.S):
        return a
    return _make(Op.NARROW, Width.M, (a,), None)


def apply(prim: Primitive | str, *args: Node, coerce: bool = True) -> Node:
    """Apply a primitive (a registered :class:`Primitive` or its name) to ``args``.

    Operands of different widths (``d`` and ``k``) are cut to ``min(d, k)`` by
    visible :func:`narrow` nodes when ``coerce`` is true (the reference's
    behaviour), else that is a :class:`GraphTypeError`.
    """
    p = prim if isinstance(prim, Primitive) else get_primitive(prim)
    if len(args) != p.arity:
        raise GraphTypeError(
            f"{p.name} takes {p.arity} argument(s), got {len(args)} in "
            f"{p.name}({', '.join(describe(a) for a in args)})"
        )
    width = args[0].width
    for a in args[1:]:
        if a.width is not width:
            width = _join_widths(p.name, args, coerce)
            if width is Width.M:
                args = tuple(narrow(a) for a in args)
            break
    return _make(Op.PRIM, width, tuple(args), p)


def _join_widths(name: str, args: tuple[Node, ...], coerce: bool) -> Width:
    widths = {a.width for a in args} - {Width.S}
    if len(widths) <= 1:
        return widths.pop() if widths else Width.S
    if not coerce:
        raise GraphTypeError(
            f"operands of {name}({', '.join(describe(a) for a in args)}) have widths "
            f"{sorted(w.value for w in widths)}; wrap them in narrow(...) to cut both to "
            "min(d, k), or make the widths equal"
        )
    return Width.M


# ----------------------------------------------------------------- toolkit
def skip_narrow(n: Node) -> Node:
    """``n`` without the ``narrow`` coercions on top."""
    while n.op is Op.NARROW:
        n = n.src[0]
    return n


def rebuild(node: Node, src: Sequence[Node]) -> Node:
    """``node`` over new children, re-typed through the builders (a primitive's operands of
    different widths are narrowed again; a linear keeps its output width); ``node`` itself
    if the children are the same."""
    if tuple(src) == node.src:  # nodes compare by identity
        return node
    if node.op is Op.PRIM:
        return apply(node.prim, *src)
    if node.op is Op.LINEAR:
        return linear(node.name, src[0], node.width)
    if node.op is Op.NARROW:
        return narrow(src[0])
    return node


def toposort(root: Node) -> list[Node]:
    """Nodes reachable from ``root``, children before parents, in DFS post-order."""
    order: list[Node] = []
    _post_order(root, set(), order)
    return order


def _post_order(n: Node, seen: set[Node], order: list[Node]) -> None:
    # a module-level function, not a closure: a recursive closure is a reference cycle
    # that would keep every node of the graph alive until the next garbage collection
    for s in n.src:
        if s not in seen:
            _post_order(s, seen, order)
    seen.add(n)
    order.append(n)


class HasNodes(Protocol):
    """Anything with topologically ordered ``nodes`` (a :class:`~mlpgraph.graph.Graph`)."""

    @property
    def nodes(self) -> Sequence[Node]: ...


def ancestors(graph: HasNodes, target: Node) -> list[Node]:
    """The nodes of ``graph`` that have ``target`` below them (not ``target``), in graph order."""
    reach = {target}
    out = []
    for n in graph.nodes:  # children first, so reach grows upward
        if any(s in reach for s in n.src):
            reach.add(n)
            out.append(n)
    return out


def describe(node: Node, limit: int = 60) -> str:
    """A short function-call rendering of a node for messages."""

    def go(n: Node) -> str:
        if n.op is Op.INPUT:
            return "x"
        if n.op is Op.CONST:
            return n.name if n.width is Width.S else f"fill[{n.width.value}]({n.name})"
        return f"{n.name}({', '.join(go(s) for s in n.src)})"

    text = go(node)
    go = None  # break the recursive closure's reference cycle now  # noqa: F841
    return text if len(text) <= limit else text[: limit - 3] + "..."
