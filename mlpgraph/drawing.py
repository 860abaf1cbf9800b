"""Layered drawings of labelled DAGs: Graphviz DOT text, and SVG/PNG/PDF files.

Knows nothing of MLPs: a drawing is one or more :class:`DagPanel` (titled groups
of :class:`DagNode` boxes joined by :class:`DagEdge` arrows) plus optional
``links`` across panels that do not steer the layout (Graphviz's
``constraint=false``). :mod:`mlpgraph.viz` draws expression graphs with it (input
at the bottom, ``direction="up"``), the search report its lineage tree.
:func:`draw_dag` uses Graphviz's ``dot`` when it is on PATH (``engine="auto"``;
Debian/Ubuntu: ``apt-get install graphviz``) and otherwise paints with matplotlib
from the layered layout of :mod:`mlpgraph.layered`; both engines read the same
panels, so a drawing never needs Graphviz. Output is deterministic: the same
panels give byte-identical DOT and matplotlib SVG in any process.

Why the layered layout is our own rather than a library's: docs/decisions.md
(mlpgraph, "The layered layout is hand-written").
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from . import layered
from .errors import MLPGraphError

FORMATS = ("svg", "png", "pdf")
ENGINES = ("auto", "graphviz", "matplotlib")
DIRECTIONS = ("down", "up")

_FS, _TFS, _SFS, _EFS = 9.0, 10.0, 8.0, 7.5  # node, title, notes, edge label font sizes (pt)
_FONT = ["DejaVu Sans Mono", "monospace"]  # ships with matplotlib; monospace: exact widths
_CW, _LH = 0.6 / 72, 1.3 / 72  # glyph advance and line height per pt of font size (inch)
_PADX, _PADY, _MARGIN = 0.1, 0.06, 0.2
_INK, _TEXT = "#495057", "#212529"


class DrawingError(MLPGraphError):
    """Drawing input that is not a DAG of named nodes (the message names the culprit)."""


@dataclass(frozen=True)
class DagNode:
    """A box. ``label``: lines joined by newlines (the first drawn bold); empty = the id."""

    id: str
    label: str = ""
    fill: str = "#f1f3f5"
    border: str = _INK
    dashed: bool = False

    @property
    def text(self) -> str:
        return self.label or self.id


@dataclass(frozen=True)
class DagEdge:
    """An arrow src -> dst. ``port``: dst's operand slot (shown as port + 1; the ported
    edges into a node arrive left to right by port); ``label``: text beside the edge."""

    src: str
    dst: str
    label: str = ""
    port: int | None = None
    dashed: bool = False


@dataclass(frozen=True)
class DagPanel:
    """One group of nodes drawn together under a bold ``title`` and smaller ``notes``."""

    nodes: Sequence[DagNode]
    edges: Sequence[DagEdge] = ()
    title: str | None = None
    notes: Sequence[str] = ()

    def header(self) -> list[str]:
        return ([self.title] if self.title else []) + list(self.notes)


Panels = DagPanel | Sequence[DagPanel]


def checked(panels: Panels, links: Sequence[DagEdge] = ()) -> list[DagPanel]:
    """The panels as a list, after checking ids, edge ends, ports and acyclicity."""
    ps = [panels] if isinstance(panels, DagPanel) else list(panels)
    if not ps or not all(isinstance(p, DagPanel) and p.nodes for p in ps):
        raise DrawingError("nothing to draw: pass one DagPanel or a list of them, each with "
                           "at least one DagNode")
    where: dict[str, int] = {}
    for i, p in enumerate(ps):
        for n in p.nodes:
            if not isinstance(n.id, str) or n.id in where:
                raise DrawingError(f"node id {n.id!r} in panel {i} is not a string or repeats "
                                   "one used before; ids must be unique strings over all panels")
            where[n.id] = i
    for i, p in enumerate(ps):
        g = nx.MultiDiGraph()
        g.add_nodes_from(n.id for n in p.nodes)
        ports: dict[str, list[int | None]] = {}
        for e in p.edges:
            if where.get(e.src) != i or where.get(e.dst) != i:
                raise DrawingError(f"edge {e.src!r} -> {e.dst!r} of panel {i} names a node "
                                   "that panel does not have; join panels with links=[...]")
            g.add_edge(e.src, e.dst)
            ports.setdefault(e.dst, []).append(e.port)
        for dst, qs in ports.items():
            given = [q for q in qs if q is not None]
            if given and (len(given) < len(qs) or len(set(given)) < len(given)
                          or any(type(q) is not int or q < 0 for q in given)):
                raise DrawingError(f"the edges into {dst!r} have ports {qs}; give every edge "
                                   "into a node a distinct port (an int >= 0), or none")
        if not nx.is_directed_acyclic_graph(g):
            cycle = [u for u, *_ in nx.find_cycle(g)]
            raise DrawingError(f"panel {i} has a cycle through {cycle}; a layered drawing "
                               "needs a DAG (draw a back edge as a link instead)")
    for e in links:
        if e.src not in where or e.dst not in where:
            raise DrawingError(f"link {e.src!r} -> {e.dst!r} names an unknown node")
    return ps


# -------------------------------------------------------------------- DOT
def _dot_str(s: str) -> str:
    """A DOT double-quoted string; backslashes and quotes escaped, newlines as centred breaks."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_DOT_KEYWORDS = {"node", "edge", "graph", "digraph", "subgraph", "strict"}


def _dot_id(s: str) -> str:
    """A bare DOT id when that is safe, else a quoted one."""
    bare = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", s) and s.lower() not in _DOT_KEYWORDS
    return s if bare else _dot_str(s)


def _dot_edge(e: DagEdge, link: bool = False) -> str:
    """``dst -> src`` with dir=back (see :func:`dag_to_dot`); the port number at dst."""
    attrs = [f"label={_dot_str(e.label)}"] if e.label else []
    if e.port is not None:
        attrs += [f'taillabel="{e.port + 1}"', "labeldistance=1.6"]
    attrs += ["style=dashed"] * e.dashed + ["constraint=false"] * link
    return f"{_dot_id(e.dst)} -> {_dot_id(e.src)}" + \
        (f" [{', '.join(attrs)}]" if attrs else "") + ";"


def dag_to_dot(panels: Panels, *, direction: str = "down", links: Sequence[DagEdge] = (),
               name: str = "dag") -> str:
    """Graphviz DOT text; several panels (or one with a header) become titled clusters.

    Edges are written ``dst -> src`` with ``dir=back`` (arrows still point at dst) so
    that ``ordering=out`` keeps ported edges in port order; ``rankdir`` (TB for "up",
    BT for "down") then puts the sources at the bottom or on top.
    """
    ps, up = checked(panels, links), _up(direction)
    font = '"Helvetica,Arial,sans-serif"'
    out = [f"digraph {_dot_id(name)} {{",
           "  // edges are written dst -> src with dir=back, so that ordering=out puts",
           f"  // ported edges left to right in order while sources sit at the "
           f"{'bottom' if up else 'top'}",
           f"  graph [rankdir={'TB' if up else 'BT'}, newrank=true, nodesep=0.25, "
           f"ranksep=0.3, fontname={font}];",
           f'  node [shape=box, style="rounded,filled", fontname={font}, fontsize=11, '
           'margin="0.12,0.05"];',
           f'  edge [dir=back, color="{_INK}", arrowsize=0.7, fontsize=9, fontcolor="{_INK}", '
           f"fontname={font}];"]
    for i, p in enumerate(ps):
        pad = "  "
        if len(ps) > 1 or p.header():
            out += [f"  subgraph cluster_{i} {{",
                    f"    graph [label={_dot_str(chr(10).join(p.header()))}, "
                    f"labelloc={'t' if up else 'b'}, "  # b is the top under rankdir=BT
                    'fontsize=13, style="rounded", color="#ced4da"];']
            pad = "    "
        ported = {e.dst for e in p.edges if e.port is not None}
        for n in p.nodes:
            style = "rounded,filled,dashed" if n.dashed else "rounded,filled"
            extra = (", penwidth=1.6" if n.dashed else "") + \
                (", ordering=out" if n.id in ported else "")
            out.append(f'{pad}{_dot_id(n.id)} [label={_dot_str(n.text)}, style="{style}", '
                       f'fillcolor="{n.fill}", color="{n.border}"{extra}];')
        first: dict[str, int] = {}  # edges grouped by dst, ported ones in port order
        for k, e in enumerate(p.edges):
            first.setdefault(e.dst, k)
        for e in sorted(p.edges, key=lambda e: (first[e.dst], e.port or 0)):
            out.append(pad + _dot_edge(e))
        if pad == "    ":
            out.append("  }")
    out += ["  " + _dot_edge(e, link=True) for e in links]
    return "\n".join(out + ["}"]) + "\n"


# ----------------------------------------------------------------- files
def _up(direction: str) -> bool:
    if direction not in DIRECTIONS:
        raise DrawingError(f"unknown direction {direction!r}; use 'down' (sources on top) or "
                           "'up' (sources at the bottom)")
    return direction == "up"


def draw_dag(panels: Panels, path: str | Path, *, direction: str = "down",
             links: Sequence[DagEdge] = (), engine: str = "auto", name: str = "dag") -> Path:
    """Draw panels side by side into ``path`` (.svg, .png or .pdf); return the path.

    ``engine``: "graphviz" (needs ``dot``), "matplotlib", or "auto" (Graphviz when
    ``dot`` is on PATH). ``direction``: "down" puts sources on top, "up" at the bottom.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise DrawingError(f"cannot tell the image format from {str(path)!r}; end the file name "
                         f"in one of {', '.join('.' + f for f in FORMATS)}")
    if engine not in ENGINES:
        raise DrawingError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    ps, up = checked(panels, links), _up(direction)
    dot = shutil.which("dot")
    if engine == "graphviz" and dot is None:
        raise RuntimeError("engine='graphviz' needs the Graphviz 'dot' program, which is not on "
                           "PATH; install it (apt-get install graphviz) or use engine='matplotlib'")
    path.parent.mkdir(parents=True, exist_ok=True)
    if engine == "matplotlib" or dot is None:
        _paint(ps, links, path, fmt, up)
        return path
    cmd = [dot, f"-T{fmt}", *(["-Gdpi=150"] if fmt == "png" else []), "-o", str(path)]
    text = dag_to_dot(ps, direction=direction, links=links, name=name)
    run = subprocess.run(cmd, input=text.encode(), capture_output=True, timeout=120, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"dot failed (exit {run.returncode}) writing {path}: "
                           f"{run.stderr.decode(errors='replace').strip()}")
    return path


# ------------------------------------------------------------ matplotlib
def _size(text: str, pt: float) -> tuple[float, float]:
    lines = text.split("\n")
    return max(map(len, lines)) * _CW * pt, len(lines) * _LH * pt


def layout(panel: DagPanel, direction: str = "down") -> tuple[list[layered.Box],
                                                                list[layered.Route]]:
    """The matplotlib engine's geometry of one panel (inch, y up): a box per node (in
    order, then edge bends) and a route per edge (in order). See :mod:`mlpgraph.layered`."""
    p, up = checked(panel)[0], _up(direction)
    index = {n.id: i for i, n in enumerate(p.nodes)}
    sizes = [(w + 2 * _PADX, h + 2 * _PADY) for w, h in (_size(n.text, _FS) for n in p.nodes)]
    edges = [layered.Edge(index[e.src], index[e.dst], e.port,
                          _size(e.label, _EFS) if e.label else None) for e in p.edges]
    return layered.layout(sizes, edges, down=not up)


def _headers(ps: list[DagPanel], laid: list) -> tuple[list[list], list[float]]:
    """Per panel: header lines (text, font size, weight) and the panel width (inch)."""
    heads, widths = [], []
    for p, (boxes, _) in zip(ps, laid, strict=True):
        gw = max(b.x + b.w / 2 for b in boxes)
        cols = max(30, int(gw / (_CW * _TFS)))  # wrap long titles to about the graph's width
        lines = [(t, _TFS, "bold") for t in (textwrap.wrap(p.title, cols) if p.title else [])]
        lines += [(t, _SFS, "normal") for t in p.notes]
        heads.append(lines)
        widths.append(max([gw] + [len(t) * _CW * size for t, size, _ in lines]))
    return heads, widths


def _paint(ps: list[DagPanel], links: Sequence[DagEdge], path: Path, fmt: str,
           up: bool) -> None:
    try:
        from matplotlib import rc_context
        from matplotlib.figure import Figure
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
        from matplotlib.path import Path as MPath
    except ImportError:
        raise RuntimeError("drawing without Graphviz needs matplotlib: pip install "
                           "matplotlib (or apt-get install graphviz)") from None
    laid = [layout(p, 'up' if up else 'down') for p in ps]
    heads, widths = _headers(ps, laid)
    head_h = max(sum(_LH * s for _, s, _ in h) for h in heads) + (0.12 if any(heads) else 0)
    gap = layered.GAP_X * 3
    fig_w = sum(widths) + gap * (len(ps) - 1) + 2 * _MARGIN
    fig_h = max(max(b.y + b.h / 2 for b in bs) for bs, _ in laid) + head_h + 2 * _MARGIN
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, fig_w), ylim=(0, fig_h))
    ax.axis("off")
    text = dict(family=_FONT, ha="center", va="center", parse_math=False, color=_TEXT)

    def curve(verts: list, dashed: bool) -> None:
        ax.add_patch(FancyArrowPatch(
            path=MPath(verts, [MPath.MOVETO] + [MPath.CURVE4] * (len(verts) - 1)),
            arrowstyle="-|>", mutation_scale=9, lw=0.9, color=_INK, shrinkA=0, shrinkB=0,
            ls=(0, (4, 2)) if dashed else "-", zorder=1))

    at: dict[str, tuple[int, float, float, layered.Box]] = {}  # id -> panel, offset, box
    ox, gaps = _MARGIN, []  # gaps: x of the middle of the gap right of each panel
    for i, (p, (boxes, routes), head, pw) in enumerate(zip(ps, laid, heads, widths,
                                                           strict=True)):
        gaps.append(ox + pw + gap / 2)
        if len(ps) > 1:
            ax.add_patch(FancyBboxPatch((ox - layered.GAP_X / 2, _MARGIN / 3),
                                        pw + layered.GAP_X, fig_h - _MARGIN * 2 / 3, fc="none",
                                        ec="#ced4da", boxstyle="round,pad=0,rounding_size=0.08",
                                        lw=0.8))
        ty = fig_h - _MARGIN
        for t, size, weight in head:
            ax.text(ox + pw / 2, ty - _LH * size / 2, t, fontsize=size, weight=weight, **text)
            ty -= _LH * size
        cx = ox + pw / 2 - max(b.x + b.w / 2 for b in boxes) / 2  # graph centred, top-aligned
        cy = fig_h - _MARGIN - head_h - max(b.y + b.h / 2 for b in boxes)
        for e, r in zip(p.edges, routes, strict=True):
            curve([(cx + x, cy + y) for x, y in r.verts], e.dashed)
            if r.port_at:
                x, y, ha = r.port_at
                ax.text(cx + x, cy + y, str(e.port + 1), fontsize=7, **{**text, "ha": ha})
            if r.label_at:
                ax.text(cx + r.label_at[0], cy + r.label_at[1], e.label, fontsize=_EFS,
                        linespacing=1.1, **{**text, "ha": "left", "color": _INK})
        for n, b in zip(p.nodes, boxes, strict=False):
            at[n.id] = (i, cx, cy, b)
            ax.add_patch(FancyBboxPatch((cx + b.x - b.w / 2, cy + b.y - b.h / 2), b.w, b.h,
                                        boxstyle="round,pad=0,rounding_size=0.06", fc=n.fill,
                                        ec=n.border, lw=1.4 if n.dashed else 0.9,
                                        ls=(0, (4, 2)) if n.dashed else "-", zorder=2))
            top = cy + b.y + b.h / 2 - _PADY
            for k, line in enumerate(n.text.split("\n")):
                ax.text(cx + b.x, top - (k + 0.5) * _LH * _FS, line, fontsize=_FS,
                        weight="bold" if k == 0 else "normal", zorder=3, **text)
        ox += pw + gap
    for e in links:  # out of a box's side, along the gap beside its panel, into the other
        (pa, ax_, ay, a), (pb, bx_, by, b) = at[e.src], at[e.dst]
        sign = 1 if (pb, bx_ + b.x) >= (pa, ax_ + a.x) else -1
        gx = min(gaps[pa], fig_w - _MARGIN / 2) if sign > 0 else \
            gaps[pa - 1] if pa else _MARGIN / 2
        p0 = (ax_ + a.x + sign * a.w / 2, ay + a.y)
        p1 = (bx_ + b.x - sign * b.w / 2, by + b.y)
        mid = (gx, (p0[1] + p1[1]) / 2)
        curve([p0, (gx, p0[1]), (gx, p0[1]), mid, (gx, p1[1]), (gx, p1[1]), p1], True)
        if e.label:
            ax.text(gx, mid[1], e.label, fontsize=_EFS, rotation=90, zorder=2,
                    bbox=dict(fc="white", ec="none", pad=1.5), **{**text, "color": _INK})
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "mlpgraph"}):
        meta = {"Date": None} if fmt == "svg" else {}
        fig.savefig(path, format=fmt, dpi=150, metadata=meta, facecolor="white")
