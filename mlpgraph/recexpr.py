"""Node lists as egg's RecExpr: topologically ordered rows whose children are indices.

One writer (:func:`write_recexpr`, used by the JSON form below and by
``keys.recexpr_key``) and one row reader (:func:`node_from_row`, used by
:func:`root_from_rows` and ``viz.from_networkx``). The JSON form, format
``mlpgraph.recexpr/1``, is ``{"format": ..., "nodes": [[op, arg, width, [child indices]],
...]}`` with the root last; ``arg`` is :func:`~mlpgraph.ir.node_arg`. This module knows
nodes only: :class:`~mlpgraph.graph.Graph`'s ``to_list``/``from_json``/... call it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .errors import MLPGraphError, SerializationError, loads_json
from .ir import Node, Op, Width, apply, const, input_node, linear, narrow, node_arg

FORMAT = "mlpgraph.recexpr/1"
T = TypeVar("T")


def write_recexpr(nodes: Sequence[Node], row: Callable[[Node, list[int]], T]) -> list[T]:
    """``row(node, child indices)`` for each of ``nodes`` (topologically ordered, e.g.
    ``graph.nodes``), children referred to by their position in the list."""
    index: dict[Node, int] = {}
    out = []
    for i, n in enumerate(nodes):
        index[n] = i
        out.append(row(n, [index[s] for s in n.src]))
    return out


_ARITY = {Op.INPUT: 0, Op.CONST: 0, Op.NARROW: 1, Op.LINEAR: 1}


def node_from_row(op: Any, arg: Any, width: Any, src: tuple[Node, ...], where: str) -> Node:
    """The node a serialized row describes (``op``, ``arg`` and ``width`` as written by
    :func:`to_list` or ``viz.to_networkx``), built through the builders without coercion.
    Raises :class:`SerializationError` naming ``where`` and what is wrong."""
    try:
        op, width = Op(op), Width(width)
    except ValueError:
        raise SerializationError(
            f"{where} is malformed: op={op!r}, width={width!r}; op must be one of "
            f"{[o.value for o in Op]} and width one of {[w.value for w in Width]}") from None
    arity = _ARITY.get(op)
    if arity is not None and len(src) != arity:
        raise SerializationError(f"{where} ({op.value}) takes {arity} operand(s) but has "
                                 f"{len(src)}")
    if (op is Op.CONST) != isinstance(arg, (int, float)) or isinstance(arg, bool) or \
            (op in (Op.LINEAR, Op.PRIM) and not isinstance(arg, str)):
        raise SerializationError(f"{where} ({op.value}) has bad arg {arg!r}: constants need a "
                                 "number, linears a name like 'W1', prims a primitive name")
    try:
        if op is Op.INPUT:
            node = input_node()
        elif op is Op.CONST:
            node = const(arg, width)
        elif op is Op.NARROW:
            node = narrow(src[0])
        elif op is Op.LINEAR:
            node = linear(arg, src[0], width)
        else:
            node = apply(arg, *src, coerce=False)
    except MLPGraphError as e:
        raise SerializationError(f"{where} ({op.value} {arg!r}): {e}") from None
    if node.width is not width:
        raise SerializationError(f"{where} ({op.value} {arg!r}) has width {node.width.value!r} "
                                 f"from its operands but says width={width.value!r}")
    return node


# ------------------------------------------------------------------ JSON form
def _json_row(n: Node, kids: list[int]) -> list[Any]:
    return [n.op.value, node_arg(n), n.width.value, kids]


def json_rows(nodes: Sequence[Node]) -> list[list[Any]]:
    """``[[op, arg, width, [child indices]], ...]`` for topologically ordered ``nodes``."""
    return write_recexpr(nodes, _json_row)


def dumps(rows: list[list[Any]]) -> str:
    """``{"format": "mlpgraph.recexpr/1", "nodes": rows}`` as compact JSON."""
    return json.dumps({"format": FORMAT, "nodes": rows}, separators=(",", ":"))


def root_from_rows(rows: list[list[Any]]) -> Node:
    """The node of the last row (unreachable rows are dropped: dead-node removal)."""
    if not isinstance(rows, list):
        raise SerializationError(f"expected a list of node rows, got {type(rows).__name__}")
    built: list[Node] = []
    for i, row in enumerate(rows):
        try:
            op, arg, width, kids = row
            src = tuple(built[j] for j in kids if _check_index(j, i))
        except SerializationError:
            raise
        except (ValueError, TypeError, IndexError) as e:
            raise SerializationError(f"node {i} {row!r} is malformed: {e}") from None
        built.append(node_from_row(op, arg, width, src, f"node {i}"))
    if not built:
        raise SerializationError("an empty node list is not a graph")
    return built[-1]


def rows_from_json(text: str) -> list[Any]:
    """The rows of :func:`dumps` text (or of a bare JSON list of rows)."""
    data = loads_json(text, lambda why: SerializationError(f"not JSON: {why}"))
    rows = data.get("nodes") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise SerializationError("expected {'format': ..., 'nodes': [...]} or a list")
    return rows


def _check_index(j: Any, i: int) -> bool:
    if not isinstance(j, int) or not 0 <= j < i:
        raise SerializationError(f"node {i} refers to child {j!r}; children must come earlier")
    return True
