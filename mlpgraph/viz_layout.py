"""Matplotlib drawing of MLP graphs: a layered (Sugiyama-style) layout and its rendering.

The fallback engine of :func:`mlpgraph.viz.render` when Graphviz's ``dot`` is not
installed: nodes sit in rows by height, long edges bend through dummy boxes, rows
are ordered to reduce crossings and pulled toward their neighbours, and edges are
drawn as Bezier curves. Styles and labels come from :mod:`mlpgraph.viz`, imported
lazily (viz imports this module at load time).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .ir import Op

if TYPE_CHECKING:
    from .viz import _Panel

# ------------------------------------------- matplotlib: layered layout
_FS, _TFS, _SFS = 9.0, 10.0, 8.0  # node, title, subtitle font sizes (pt)
_FONT = ["DejaVu Sans Mono", "monospace"]  # ships with matplotlib; monospace: exact widths
_CW, _LH = 0.6 / 72, 1.3 / 72  # glyph advance and line height per pt of font size (inch)
_PADX, _PADY, _GAPX, _GAPY, _MARGIN = 0.1, 0.06, 0.22, 0.34, 0.2


@dataclass
class _Box:
    lines: list[str]
    kind: str
    layer: int
    w: float = 0.06  # dummy boxes (bends of long edges) are narrow and empty
    h: float = 0.0
    x: float = 0.0
    y: float = 0.0


def _place(desired: list[float], widths: list[float]) -> list[float]:
    """Positions closest (least squares) to ``desired`` keeping order and spacing (PAVA)."""
    off = [0.0]
    for a, b in zip(widths, widths[1:], strict=False):
        off.append(off[-1] + (a + b) / 2 + _GAPX)
    blocks: list[list[float]] = []  # [sum, count] of pooled targets, non-decreasing
    for t in (d - o for d, o in zip(desired, off, strict=True)):
        blocks.append([t, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    fit = [s / c for s, c in blocks for _ in range(int(c))]
    return [f + o for f, o in zip(fit, off, strict=True)]


def _layout(p: _Panel) -> tuple[list[_Box], list[tuple[list[int], int, int, bool]]]:
    """Boxes at (x, y) and edges as (box chain child..parent, operand pos, arity, numbered)."""
    from .viz import _ordered, node_kind

    nodes, labels = p.graph.nodes, p.labels()
    index = {id(n): i for i, n in enumerate(nodes)}
    layer = [n.height for n in nodes]
    parents: list[list[int]] = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        for s in n.src:
            parents[index[id(s)]].append(i)
    for i in reversed(range(len(nodes))):  # constants sit just below their first user
        if nodes[i].op is Op.CONST and parents[i]:
            layer[i] = min(layer[j] for j in parents[i]) - 1
    boxes = []
    for n, text, lay in zip(nodes, labels, layer, strict=True):
        lines = text.split("\n")
        boxes.append(_Box(lines, node_kind(n), lay, max(map(len, lines)) * _CW * _FS + 2 * _PADX,
                          len(lines) * _LH * _FS + 2 * _PADY))
    edges, key = [], [float(i) for i in range(len(nodes))]
    for i, n in enumerate(nodes):
        for pos, s in enumerate(n.src):
            chain = [index[id(s)]]
            for lay in range(layer[chain[0]] + 1, layer[i]):
                boxes.append(_Box([], "", lay))
                key.append(chain[0] + 0.5)
                chain.append(len(boxes) - 1)
            edges.append((chain + [i], pos, len(n.src), _ordered(n)))
    top = max(b.layer for b in boxes)
    rows = [sorted((b for b in range(len(boxes)) if boxes[b].layer == r), key=key.__getitem__)
            for r in range(top + 1)]
    segs = [(c[k], c[k + 1], (pos - (ar - 1) / 2) * (k == len(c) - 2 and num))
            for c, pos, ar, num in edges for k in range(len(c) - 1)]
    ups: list[list[tuple[int, float]]] = [[] for _ in boxes]  # (box above, operand offset)
    downs: list[list[tuple[int, float]]] = [[] for _ in boxes]
    for lo, hi, off in segs:
        ups[lo].append((hi, off))
        downs[hi].append((lo, off))
    rows = _order(rows, segs, ups, downs)
    y = prev = 0.0
    for r, row in enumerate(rows):  # rows bottom-up; spacing by the tallest box of each row
        h = max(boxes[b].h for b in row)
        y += (h / 2) if r == 0 else (prev + h) / 2 + _GAPY
        prev = h
        xs = _place([0.0] * len(row), [boxes[b].w for b in row])
        for b, x in zip(row, xs, strict=True):
            boxes[b].x, boxes[b].y = x, y
    for it in range(12):  # pull each row toward its neighbours, alternating direction
        for row in rows if it % 2 else rows[::-1]:
            want = []
            for b in row:
                near = [boxes[hi].x - off * 0.25 for hi, off in ups[b]]
                near += [boxes[lo].x + off * 0.25 for lo, off in downs[b]]
                want.append(sum(near) / len(near) if near else boxes[b].x)
            for b, x in zip(row, _place(want, [boxes[b].w for b in row]), strict=True):
                boxes[b].x = x
    left = min(b.x - b.w / 2 for b in boxes)
    for b in boxes:
        b.x -= left
    return boxes, edges


def _order(rows: list[list[int]], segs: list, ups: list, downs: list) -> list[list[int]]:
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
    while improved and best_n and len(segs) < 400:  # swap neighbours while that helps
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


def _edge_paths(boxes: list[_Box], edges: list) -> list[tuple[list, tuple[float, float]]]:
    """Per edge: Bezier vertices (child top, through its bends, to the parent) and its end."""
    start, slot = {}, {}
    outs: dict[int, list[tuple[float, int]]] = {}
    ins: dict[int, list[tuple[float, int, int]]] = {}
    for e, (chain, pos, _, _) in enumerate(edges):
        outs.setdefault(chain[0], []).append((boxes[chain[1]].x, e))
        ins.setdefault(chain[-1], []).append((boxes[chain[-2]].x, pos, e))
    for b, lst in outs.items():  # a shared node's out-edges leave side by side
        step = min(0.16, boxes[b].w / (len(lst) + 1))
        for k, (_, e) in enumerate(sorted(lst)):
            start[e] = (k - (len(lst) - 1) / 2) * step
    for lst in ins.values():  # operands arrive in order if numbered, else left to right
        for k, (_, pos, e) in enumerate(sorted(lst)):
            slot[e] = pos if edges[e][3] else k
    out = []
    for e, (chain, _, arity, _) in enumerate(edges):
        lo, hi = boxes[chain[0]], boxes[chain[-1]]
        pts = [(lo.x + start[e], lo.y + lo.h / 2)] + [(boxes[b].x, boxes[b].y) for b in chain[1:-1]]
        end = (hi.x + (slot[e] - (arity - 1) / 2) * min(0.25, hi.w / (arity + 1)), hi.y - hi.h / 2)
        verts = [pts[0]]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + [end], strict=True):
            verts += [(x0, (y0 + y1) / 2), (x1, (y0 + y1) / 2), (x1, y1)]  # vertical tangents
        out.append((verts, end))
    return out


def _headers(panels: list[_Panel], laid: list) -> tuple[list[list], list[float]]:
    """Per panel: header lines (text, font size, weight) and the panel width (inch)."""
    heads, widths = [], []
    for p, (boxes, _) in zip(panels, laid, strict=True):
        gw, header = max(b.x + b.w / 2 for b in boxes), p.header()
        cols = max(30, int(gw / (_CW * _TFS)))  # wrap long titles to about the graph's width
        lines = [(t, _TFS, "bold") for t in (textwrap.wrap(p.title, cols) if p.title else [])]
        lines += [(t, _SFS, "normal") for t in header[1 if p.title else 0:]]
        heads.append(lines)
        widths.append(max([gw] + [len(t) * _CW * size for t, size, _ in lines]))
    return heads, widths


def _draw(panels: list[_Panel], path: Path, fmt: str) -> None:
    try:
        from matplotlib import rc_context
        from matplotlib.figure import Figure
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
        from matplotlib.path import Path as MPath
    except ImportError:
        raise RuntimeError("drawing without Graphviz needs matplotlib: pip install "
                           "matplotlib (or apt-get install graphviz)") from None
    from .viz import STYLE

    laid = [_layout(p) for p in panels]
    heads, widths = _headers(panels, laid)
    head_h = max(sum(_LH * s for _, s, _ in h) for h in heads) + (0.12 if any(heads) else 0)
    fig_w = sum(widths) + _GAPX * 3 * (len(panels) - 1) + 2 * _MARGIN
    fig_h = max(max(b.y + b.h / 2 for b in bs) for bs, _ in laid) + head_h + 2 * _MARGIN
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, fig_w), ylim=(0, fig_h))
    ax.axis("off")
    text = dict(family=_FONT, ha="center", va="center", parse_math=False, color="#212529")
    ox = _MARGIN
    for (boxes, edges), head, pw in zip(laid, heads, widths, strict=True):
        if len(panels) > 1:
            ax.add_patch(FancyBboxPatch((ox - _GAPX / 2, _MARGIN / 3), pw + _GAPX,
                                        fig_h - _MARGIN * 2 / 3, fc="none", ec="#ced4da",
                                        boxstyle="round,pad=0,rounding_size=0.08", lw=0.8))
        ty = fig_h - _MARGIN
        for t, size, weight in head:
            ax.text(ox + pw / 2, ty - _LH * size / 2, t, fontsize=size, weight=weight, **text)
            ty -= _LH * size
        cx = ox + pw / 2 - max(b.x + b.w / 2 for b in boxes) / 2  # graph centred, top-aligned
        cy = fig_h - _MARGIN - head_h - max(b.y + b.h / 2 for b in boxes)
        for (verts, end), (_, pos, arity, numbered) in zip(_edge_paths(boxes, edges), edges,
                                                         strict=True):
            path_ = MPath([(cx + x, cy + y) for x, y in verts],
                          [MPath.MOVETO] + [MPath.CURVE4] * (len(verts) - 1))
            ax.add_patch(FancyArrowPatch(path=path_, arrowstyle="-|>", mutation_scale=9, lw=0.9,
                                         color="#495057", shrinkA=0, shrinkB=0, zorder=1))
            if numbered:  # operand number beside the arrow head, on the outer side
                left = pos < (arity - 1) / 2
                ax.text(cx + end[0] + (-0.05 if left else 0.05), cy + end[1] - 0.09,
                        str(pos + 1), fontsize=7, **{**text, "ha": "right" if left else "left"})
        for b in (b for b in boxes if b.lines):
            fill, border, dashed = STYLE[b.kind]
            ax.add_patch(FancyBboxPatch((cx + b.x - b.w / 2, cy + b.y - b.h / 2), b.w, b.h,
                                        boxstyle="round,pad=0,rounding_size=0.06", fc=fill,
                                        ec=border, lw=1.4 if dashed else 0.9,
                                        ls=(0, (4, 2)) if dashed else "-", zorder=2))
            top = cy + b.y + b.h / 2 - _PADY
            for k, line in enumerate(b.lines):
                ax.text(cx + b.x, top - (k + 0.5) * _LH * _FS, line, fontsize=_FS,
                        weight="bold" if k == 0 else "normal", zorder=3, **text)
        ox += pw + _GAPX * 3
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "mlpgraph"}):
        meta = {"Date": None} if fmt == "svg" else {}
        fig.savefig(path, format=fmt, dpi=150, metadata=meta, facecolor="white")
