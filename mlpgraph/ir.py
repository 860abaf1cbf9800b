"""The IR: a typed, immutable, hash-consed expression DAG.

A :class:`Node` is one small frozen record ``(op, width, src, arg)``. Nodes are
hash-consed: building a node that is structurally equal to a live one returns
that very object, so common subexpressions are shared by construction and
equality is identity. ``W1(x)`` written twice is one node; same linear name means
same weights.

Widths are symbolic (:class:`Width`): ``d`` (model width), ``k`` (inner width),
``m`` = ``min(d, k)`` (only produced by an explicit ``narrow`` coercion node) and
``1`` (a scalar constant that broadcasts). They are bound to integers only when a
module is built. A :class:`Graph` wraps the output node (which must have width
``d``) and serializes as a topologically ordered list whose children are indices,
in the style of egg's ``RecExpr``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import weakref
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

from .errors import GraphTypeError, SerializationError
from .primitives import get_primitive as _get_primitive


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
# hash-consing table: key -> weak reference to the live node with that structure
_CACHE: dict[tuple, _Ref] = {}


@dataclass(frozen=True, eq=False, slots=True, weakref_slot=True)
class Node:
    """One node of the DAG. Do not call the constructor: use the builders below."""

    op: Op
    width: Width
    src: tuple[Node, ...]
    arg: str | float | None
    height: int = field(repr=False)  # edges on the longest path down to a leaf
    _digest: str | None = field(default=None, repr=False)

    @property
    def digest(self) -> str:
        """A stable structural hash (the same in every process), computed on first use."""
        d = self._digest
        if d is None:
            h = hashlib.blake2b(digest_size=10)
            h.update(f"{self.op.value}|{self.arg!r}|{self.width.value}|".encode())
            for s in self.src:
                h.update(s.digest.encode())
            d = h.hexdigest()
            object.__setattr__(self, "_digest", d)
        return d

    def __repr__(self) -> str:
        return f"Node({describe(self)})"

    # Hash-consing must survive copies and pickles (process-pool workers, Ray): a copy is
    # the node itself and unpickling rebuilds through the table, so ``is`` stays equality.
    def __copy__(self) -> Node:
        return self

    def __deepcopy__(self, memo: dict) -> Node:
        return self

    def __reduce__(self) -> tuple:
        return _make, (self.op, self.width, self.src, self.arg)


def _make(op: Op, width: Width, src: tuple[Node, ...], arg: str | float | None) -> Node:
    key = (op, width, arg, *map(id, src))
    ref = _CACHE.get(key)
    if ref is not None:
        hit = ref()
        if hit is not None:
            return hit
    height = 1 + max([s.height for s in src]) if src else 0
    node = Node(op, width, src, arg, height)
    ref = _Ref(node, _forget)
    ref.key = key
    _CACHE[key] = ref
    return node


class _Ref(weakref.ref):
    """A weak reference that remembers its hash-consing key."""

    __slots__ = ("key",)


def _forget(ref: _Ref) -> None:
    if _CACHE.get(ref.key) is ref:
        del _CACHE[ref.key]


# ---------------------------------------------------------------- builders
def input_node() -> Node:
    """The MLP input ``x`` (width ``d``)."""
    return _make(Op.INPUT, Width.D, (), None)


def const(value: float, width: Width = Width.S) -> Node:
    """A constant; ``width`` other than scalar means a filled tensor of that width."""
    v = float(value)
    if not math.isfinite(v):
        raise GraphTypeError(f"constant {value!r} is not finite; only finite constants exist")
    return _make(Op.CONST, Width(width), (), v + 0.0)  # +0.0 folds -0.0 into 0.0


def default_linear_out(width: Width) -> Width:
    """A linear maps to the other width class: d -> k, k -> d, m -> d."""
    return Width.K if width is Width.D else Width.D


def linear(name: str, a: Node, out: Width | str | None = None) -> Node:
    """Apply the linear layer ``name`` to ``a``; ``out`` annotates the output width."""
    if not _LINEAR_NAME.match(name):
        raise GraphTypeError(
            f"linear layer name {name!r} is invalid: it must start with 'W' followed by "
            "letters, digits or '_' (e.g. W1, W2, Wgate)"
        )
    if a.width is Width.S:
        raise GraphTypeError(f"linear {name} is applied to the scalar {describe(a)}; "
                             "apply it to a tensor-valued node")
    w = default_linear_out(a.width) if out is None else Width(out)
    if w not in (Width.D, Width.K):
        raise GraphTypeError(f"linear {name} output width must be 'd' or 'k', got {w.value!r}")
    return _make(Op.LINEAR, w, (a,), name)


def narrow(a: Node) -> Node:
    """Explicit coercion of ``a`` to width ``min(d, k)`` (its first channels)."""
    if a.width in (Width.M, Width.S):
        return a
    return _make(Op.NARROW, Width.M, (a,), None)


def apply(name: str, *args: Node, coerce: bool = True) -> Node:
    """Apply the registered primitive ``name`` to ``args``.

    Operands of different widths (``d`` and ``k``) are cut to ``min(d, k)`` by
    visible :func:`narrow` nodes when ``coerce`` is true (the reference's
    behaviour), else that is a :class:`GraphTypeError`.
    """
    prim = _get_primitive(name)
    if len(args) != prim.arity:
        raise GraphTypeError(
            f"{prim.name} takes {prim.arity} argument(s), got {len(args)} in "
            f"{prim.name}({', '.join(describe(a) for a in args)})"
        )
    width = args[0].width
    for a in args[1:]:
        if a.width is not width:
            width = _join_widths(prim.name, args, coerce)
            if width is Width.M:
                args = tuple(narrow(a) for a in args)
            break
    return _make(Op.PRIM, width, tuple(args), prim.name)


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


def rebuild(node: Node, src: tuple[Node, ...]) -> Node:
    """``node`` with new children (re-typed through the builders)."""
    if node.op is Op.PRIM:
        return apply(str(node.arg), *src)
    if node.op is Op.LINEAR:
        return linear(str(node.arg), src[0], node.width)
    if node.op is Op.NARROW:
        return narrow(src[0])
    return node


def describe(node: Node, limit: int = 60) -> str:
    """A short function-call rendering of a node for messages."""

    def go(n: Node) -> str:
        if n.op is Op.INPUT:
            return "x"
        if n.op is Op.CONST:
            return repr(n.arg) if n.width is Width.S else f"fill[{n.width.value}]({n.arg!r})"
        name = "narrow" if n.op is Op.NARROW else str(n.arg)
        return f"{name}({', '.join(go(s) for s in n.src)})"

    text = go(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def toposort(root: Node) -> list[Node]:
    """Nodes reachable from ``root``, children before parents, in DFS post-order."""
    order: list[Node] = []
    seen: set[int] = set()
    add, push = seen.add, order.append

    def visit(n: Node) -> None:
        for s in n.src:
            if id(s) not in seen:
                visit(s)
        add(id(n))
        push(n)

    visit(root)
    return order


# ------------------------------------------------------------------- graph
@dataclass(frozen=True, eq=False)
class Graph:
    """An MLP candidate: a DAG whose output node has the model width ``d``."""

    root: Node

    def __post_init__(self) -> None:
        if not isinstance(self.root, Node):
            raise TypeError(f"Graph needs a Node, got {type(self.root).__name__}")
        if self.root.width is not Width.D:
            raise GraphTypeError(
                f"the output {describe(self.root)} has width {self.root.width.value!r}, but an "
                "MLP must map d -> d; end the expression with a linear layer to d (e.g. W2(...))"
            )
        _ = self.linears  # type-checks shared weights

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and other.root is self.root

    def __hash__(self) -> int:
        return hash(self.root.digest)

    def __str__(self) -> str:
        from .printer import format_graph

        return format_graph(self)

    def __repr__(self) -> str:
        return f"Graph({str(self)!r})"

    @cached_property
    def nodes(self) -> list[Node]:
        """All nodes, topologically ordered (children first, root last)."""
        return toposort(self.root)

    @cached_property
    def linears(self) -> dict[str, tuple[Width, Width]]:
        """Linear layer name -> (input width, output width), in first-use order."""
        out: dict[str, tuple[Width, Width]] = {}
        for n in self.nodes:
            if n.op is Op.LINEAR:
                io = (n.src[0].width, n.width)
                name = str(n.arg)
                if name in out and out[name] != io:
                    was = out[name]
                    raise GraphTypeError(
                        f"linear {name} is used as {was[0].value}->{was[1].value} and as "
                        f"{io[0].value}->{io[1].value} at {describe(n)}; the same name means "
                        "the same weights, so give the second use another name"
                    )
                out[name] = io
        return out

    @property
    def height(self) -> int:
        return self.root.height

    @property
    def size(self) -> int:
        return len(self.nodes)

    def uses(self) -> dict[Node, int]:
        """How many parents each node has inside this graph."""
        count: dict[Node, int] = {n: 0 for n in self.nodes}
        for n in self.nodes:
            for s in n.src:
                count[s] += 1
        return count

    # --------------------------------------------------- RecExpr serialization
    def to_list(self) -> list[list[Any]]:
        """``[[op, arg, width, [child indices]], ...]`` topologically ordered, root last."""
        index: dict[int, int] = {}
        rows: list[list[Any]] = []
        for i, n in enumerate(self.nodes):
            index[id(n)] = i
            rows.append([n.op.value, n.arg, n.width.value, [index[id(s)] for s in n.src]])
        return rows

    def to_json(self) -> str:
        return json.dumps({"format": "mlpgraph.recexpr/1", "nodes": self.to_list()},
                          separators=(",", ":"))

    @classmethod
    def from_list(cls, rows: list[list[Any]]) -> Graph:
        built: list[Node] = []
        for i, row in enumerate(rows):
            try:
                op_s, arg, width_s, kids = row
                op, width = Op(op_s), Width(width_s)
                src = tuple(built[j] for j in kids if _check_index(j, i))
            except SerializationError:
                raise
            except (ValueError, TypeError, IndexError) as e:
                raise SerializationError(f"node {i} {row!r} is malformed: {e}") from None
            if len(src) != len(kids):
                raise SerializationError(f"node {i} {row!r} has a bad child index")
            try:
                built.append(_from_row(op, width, src, arg, i))
            except SerializationError:
                raise
            except ValueError as e:  # a type error inside the list
                raise SerializationError(f"node {i} {row!r}: {e}") from None
        if not built:
            raise SerializationError("an empty node list is not a graph")
        return cls(built[-1])  # unreachable rows are dropped (dead-node removal)

    @classmethod
    def from_json(cls, text: str) -> Graph:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SerializationError(f"not JSON: {e}") from None
        rows = data.get("nodes") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise SerializationError("expected {'format': ..., 'nodes': [...]} or a list")
        return cls.from_list(rows)


def _check_index(j: Any, i: int) -> bool:
    if not isinstance(j, int) or not 0 <= j < i:
        raise SerializationError(f"node {i} refers to child {j!r}; children must come earlier")
    return True


def _from_row(op: Op, width: Width, src: tuple[Node, ...], arg: Any, i: int) -> Node:
    if op is Op.INPUT:
        node = input_node()
    elif op is Op.CONST:
        node = const(arg, width)
    elif op is Op.NARROW:
        node = narrow(src[0]) if len(src) == 1 else None
    elif op is Op.LINEAR:
        node = linear(str(arg), src[0], width) if len(src) == 1 else None
    else:
        node = apply(str(arg), *src, coerce=False)
    if node is None or node.width is not width:
        raise SerializationError(f"node {i} ({op.value} {arg!r}) does not type as {width.value!r}")
    return node
