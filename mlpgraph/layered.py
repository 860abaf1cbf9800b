"""A layered (Sugiyama-style) layout of a DAG whose nodes are boxes of given sizes.

Pure geometry (inches), no drawing: :mod:`mlpgraph.drawing` paints the result. Rows
come from networkx's topological generations (the longest path from a source; a
source sits just below its nearest successor); long edges bend through narrow
dummy boxes; rows are ordered by barycentre sweeps and neighbour swaps (fewest
crossings kept); boxes are placed by isotonic regression (PAVA) toward the mean of
their neighbours. An edge label becomes a dummy box of the label's size halfway
along its edge (rows are doubled so that every edge has a middle row), so labels
take room like nodes. Edges with a ``port`` arrive side by side in port order.
Why this is hand-written rather than a library: docs/decisions.md (mlpgraph).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx

GAP_X, GAP_Y = 0.22, 0.34  # between boxes of a row, between rows (inch)
BEND_W = 0.06  # width of the dummy box where a long edge crosses a row
LABEL_LINE, LABEL_TEXT = 0.02, 0.07  # in a label box: where the edge passes, where text starts


@dataclass(frozen=True)
class Edge:
    """An edge from box ``src`` to box ``dst`` (indices into the sizes)."""

    src: int
    dst: int
    port: int | None = None  # arrival slot at dst: ported edges arrive left to right by port
    label: tuple[float, float] | None = None  # (width, height) of its label text, if any


@dataclass
class Box:
    """A node (the first boxes, in input order) or a bend of a long edge, centred at x, y."""

    w: float
    h: float
    layer: int
    anchor: float = 0.0  # x offset from the centre where edges pass (label boxes: left side)
    x: float = 0.0
    y: float = 0.0


@dataclass
class Route:
    """How one edge is drawn: cubic Bezier vertices, arrow tip, where its texts go."""

    chain: list[int]  # box indices, src .. bends .. dst
    verts: list[tuple[float, float]]  # MOVETO then CURVE4 triples
    end: tuple[float, float]  # the arrow tip on dst's border
    label_at: tuple[float, float] | None  # left end (x, centre y) of the label text
    port_at: tuple[float, float, str] | None  # (x, y, ha) of the port number beside the tip


def layers(n: int, edges: Sequence[tuple[int, int]]) -> list[int]:
    """Row of each of ``n`` nodes: its topological generation, sources pulled up under
    their lowest successor (so a constant sits next to its user, not at the bottom)."""
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from(edges)
    row = [0] * n
    for k, generation in enumerate(nx.topological_generations(g)):
        for v in generation:
            row[v] = k
    for v in range(n):
        if g.in_degree(v) == 0 and g.out_degree(v) > 0:
            row[v] = min(row[s] for s in g.successors(v)) - 1
    return row


def place(desired: Sequence[float], widths: Sequence[float]) -> list[float]:
    """Centres closest (least squares) to ``desired`` keeping order and gaps (PAVA)."""
    off = [0.0]
    for a, b in zip(widths, widths[1:], strict=False):
        off.append(off[-1] + (a + b) / 2 + GAP_X)
    blocks: list[list[float]] = []  # [sum, count] of pooled targets, non-decreasing
    for t in (d - o for d, o in zip(desired, off, strict=True)):
        blocks.append([t, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    fit = [s / c for s, c in blocks for _ in range(int(c))]
    return [f + o for f, o in zip(fit, off, strict=True)]


def layout(sizes: Sequence[tuple[float, float]], edges: Sequence[Edge], *,
           down: bool = False) -> tuple[list[Box], list[Route]]:
    """Boxes (the ``len(sizes)`` nodes first, then bends) and one route per edge.

    Sources are at the bottom (``down=False``) or the top; x starts at 0 and the
    lowest box bottom is at y = 0. The graph must be acyclic.
    """
    n = len(sizes)
    row = layers(n, [(e.src, e.dst) for e in edges])
    if any(e.label for e in edges):  # every edge gets a middle row for its label
        row = [2 * r for r in row]
    boxes = [Box(w, h, r) for (w, h), r in zip(sizes, row, strict=True)]
    key = [float(i) for i in range(n)]  # initial order within rows: input order
    chains, label_box = [], {}
    for i, e in enumerate(edges):
        lo, hi, chain = row[e.src], row[e.dst], [e.src]
        for r in range(lo + 1, hi):
            if e.label and r == (lo + hi) // 2:
                w, h = e.label[0] + LABEL_TEXT + LABEL_LINE, e.label[1]
                boxes.append(Box(w, h, r, anchor=LABEL_LINE - w / 2))
                label_box[i] = len(boxes) - 1
            else:
                boxes.append(Box(BEND_W, 0.0, r))
            key.append(e.src + 0.5)
            chain.append(len(boxes) - 1)
        chains.append(chain + [e.dst])
    arity = Counter(e.dst for e in edges)
    slots = _slots(edges)
    segs = [(c[k], c[k + 1], (slots[i] - (arity[e.dst] - 1) / 2)
             if k == len(c) - 2 and e.port is not None else 0.0)
            for i, (e, c) in enumerate(zip(edges, chains, strict=True)) for k in range(len(c) - 1)]
    ups: list[list[tuple[int, float]]] = [[] for _ in boxes]  # (box above, port offset)
    downs: list[list[tuple[int, float]]] = [[] for _ in boxes]
    for lo, hi, off in segs:
        ups[lo].append((hi, off))
        downs[hi].append((lo, off))
    rows = [sorted((b for b in range(len(boxes)) if boxes[b].layer == r), key=key.__getitem__)
            for r in range(max((b.layer for b in boxes), default=-1) + 1)]
    rows = _order(rows, len(segs), ups, downs)
    _coordinates(boxes, rows, ups, downs)
    routes = _routes(boxes, edges, chains, slots, arity, label_box)
    if down:
        _mirror(boxes, routes)
    return boxes, routes


def _slots(edges: Sequence[Edge]) -> list[int]:
    """Per edge: the rank of its port among the ports arriving at its dst (0 if none)."""
    ports: dict[int, list[int]] = {}
    for e in edges:
        if e.port is not None:
            ports.setdefault(e.dst, []).append(e.port)
    return [sorted(ports[e.dst]).index(e.port) if e.port is not None else 0 for e in edges]


def _coordinates(boxes: list[Box], rows: list[list[int]], ups: list, downs: list) -> None:
    """y by rows (spaced by their tallest box); x pulled toward neighbours in sweeps."""
    y = prev = 0.0
    for r, row in enumerate(rows):
        h = max(boxes[b].h for b in row)
        y += (h / 2) if r == 0 else (prev + h) / 2 + GAP_Y
        prev = h
        for b, x in zip(row, place([0.0] * len(row), [boxes[b].w for b in row]), strict=True):
            boxes[b].x, boxes[b].y = x, y
    at = lambda b: boxes[b].x + boxes[b].anchor  # noqa: E731 - where edges meet box b
    for it in range(12):  # pull each row toward its neighbours, alternating direction
        for row in rows if it % 2 else rows[::-1]:
            want = []
            for b in row:
                near = [at(hi) - off * 0.25 for hi, off in ups[b]]
                near += [at(lo) + off * 0.25 for lo, off in downs[b]]
                want.append(sum(near) / len(near) - boxes[b].anchor if near else boxes[b].x)
            for b, x in zip(row, place(want, [boxes[b].w for b in row]), strict=True):
                boxes[b].x = x
    left = min((b.x - b.w / 2 for b in boxes), default=0.0)
    for b in boxes:
        b.x -= left


def _order(rows: list[list[int]], n_segs: int, ups: list, downs: list) -> list[list[int]]:
    """Barycentre sweeps over the rows, keeping the ordering with the fewest crossings."""
    def crossings(rs: list[list[int]]) -> int:
        at = {b: i for r in rs for i, b in enumerate(r)}
        total = 0
        for row in rs[:-1]:  # segments leaving one row, pairwise
            ss = [(at[lo], at[hi] + off * 0.5) for lo in row for hi, off in ups[lo]]
            total += sum(1 for i, (a, b) in enumerate(ss) for c, d in ss[i + 1:]
                         if (a - c) * (b - d) < 0)
        return total

    best, best_n = [list(r) for r in rows], crossings(rows)
    for sweep in range(8):
        up = sweep % 2 == 0
        for r in range(1, len(rows)) if up else range(len(rows) - 2, -1, -1):
            at = {b: i for rr in rows for i, b in enumerate(rr)}
            bary = {}
            for b in rows[r]:
                near = [at[lo] - off * 0.5 for lo, off in downs[b]] if up else \
                    [at[hi] + off * 0.5 for hi, off in ups[b]]
                bary[b] = sum(near) / len(near) if near else at[b]
            rows[r].sort(key=bary.__getitem__)
        n = crossings(rows)
        if n < best_n:
            best, best_n = [list(r) for r in rows], n
    improved = True
    while improved and best_n and n_segs < 400:  # swap neighbours while that helps
        improved = False
        for row in best:
            for i in range(len(row) - 1):
                row[i], row[i + 1] = row[i + 1], row[i]
                n = crossings(best)
                if n < best_n:
                    best_n, improved = n, True
                else:
                    row[i], row[i + 1] = row[i + 1], row[i]
    return best


def _routes(boxes: list[Box], edges: Sequence[Edge], chains: list[list[int]],
            slots: list[int], arity: Counter, label_box: dict[int, int]) -> list[Route]:
    """Bezier paths: out-edges leave a box side by side, in-edges arrive in slot order."""
    start: dict[int, float] = {}
    outs: dict[int, list[tuple[float, int]]] = {}
    ins: dict[int, list[tuple[float, int]]] = {}
    for i, c in enumerate(chains):
        outs.setdefault(c[0], []).append((boxes[c[1]].x + boxes[c[1]].anchor, i))
        ins.setdefault(c[-1], []).append((boxes[c[-2]].x + boxes[c[-2]].anchor, i))
    for b, lst in outs.items():
        step = min(0.16, boxes[b].w / (len(lst) + 1))
        for k, (_, i) in enumerate(sorted(lst)):
            start[i] = (k - (len(lst) - 1) / 2) * step
    slot = dict(enumerate(slots))
    for lst in ins.values():  # ported edges keep their slot, the others go left to right
        for k, (_, i) in enumerate(sorted(lst)):
            if edges[i].port is None:
                slot[i] = k
    out = []
    for i, (e, c) in enumerate(zip(edges, chains, strict=True)):
        lo, hi, ar = boxes[c[0]], boxes[c[-1]], arity[e.dst]
        pts = [(lo.x + start[i], lo.y + lo.h / 2)]
        pts += [(boxes[b].x + boxes[b].anchor, boxes[b].y) for b in c[1:-1]]
        end = (hi.x + (slot[i] - (ar - 1) / 2) * min(0.25, hi.w / (ar + 1)), hi.y - hi.h / 2)
        verts = [pts[0]]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + [end], strict=True):
            verts += [(x0, (y0 + y1) / 2), (x1, (y0 + y1) / 2), (x1, y1)]  # vertical tangents
        label_at = None
        if i in label_box:
            bend = boxes[label_box[i]]
            label_at = (bend.x - bend.w / 2 + LABEL_TEXT, bend.y)
        port_at = None
        if e.port is not None:  # the number beside the arrow head, on the outer side
            left = slot[i] < (ar - 1) / 2
            port_at = (end[0] + (-0.05 if left else 0.05), end[1] - 0.09,
                       "right" if left else "left")
        out.append(Route(c, verts, end, label_at, port_at))
    return out


def _mirror(boxes: list[Box], routes: list[Route]) -> None:
    """Turn the drawing upside down (sources on top), keeping y >= 0."""
    top = max(b.y + b.h / 2 for b in boxes)
    for b in boxes:
        b.y = top - b.y
    for r in routes:
        r.verts = [(x, top - y) for x, y in r.verts]
        r.end = (r.end[0], top - r.end[1])
        if r.label_at:
            r.label_at = (r.label_at[0], top - r.label_at[1])
        if r.port_at:
            r.port_at = (r.port_at[0], top - r.port_at[1], r.port_at[2])
