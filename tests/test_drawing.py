"""Generic layered DAG drawings (mlpgraph.drawing / mlpgraph.layered): checks on the
input, DOT text, the layout's geometry and the files of both engines."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from matplotlib.image import imread

from mlpgraph import drawing, layered
from mlpgraph.drawing import DagEdge, DagNode, DagPanel, DrawingError, dag_to_dot, draw_dag

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not "
                               "installed (apt-get install graphviz); the matplotlib engine "
                               "is tested without it")


def svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    return ["".join(el.itertext()).strip() for el in root.iter() if el.tag.endswith("text")]


def family(seed: int, n: int = 14) -> DagPanel:
    """A lineage-like DAG: three seeds, children of one or two recent parents, with
    one- or two-line mutation labels on the edges."""
    rng = random.Random(seed)
    nodes = [DagNode(f"c{i}", f"cand{i:02d}\n{'seed' if i < 3 else 'child'} {rng.random():.3f}")
             for i in range(n)]
    edges = []
    for i in range(3, n):
        label = "\n".join(rng.choice(["swap@L1", "resize@L2", "grow@L3"])
                          for _ in range(rng.randint(1, 2)))
        for p in rng.sample(range(max(0, i - 5), i), 2 if rng.random() < 0.35 else 1):
            edges.append(DagEdge(f"c{p}", f"c{i}", label))
    return DagPanel(nodes, edges, f"family {seed}", ["a note"])


PORTED = DagPanel([DagNode("s", "sub"), DagNode("x"), DagNode("t", "tanh", dashed=True)],
                  [DagEdge("x", "t"), DagEdge("t", "s", port=0), DagEdge("x", "s", port=1)],
                  "ported")


@pytest.mark.parametrize("bad, message", [
    ([], "nothing to draw"),
    (DagPanel([]), "nothing to draw"),
    ([DagPanel([DagNode("a")]), DagPanel([DagNode("a")])], "node id 'a' in panel 1"),
    (DagPanel([DagNode("a")], [DagEdge("a", "b")]), "edge 'a' -> 'b' of panel 0"),
    (DagPanel([DagNode("a"), DagNode("b")], [DagEdge("a", "b"), DagEdge("b", "a")]),
     "cycle through ['a', 'b']"),
    (DagPanel([DagNode("a")], [DagEdge("a", "a")]), "cycle through ['a']"),
    (DagPanel([DagNode("a"), DagNode("b"), DagNode("c")],
              [DagEdge("a", "c", port=0), DagEdge("b", "c")]), "ports [0, None]"),
    (DagPanel([DagNode("a"), DagNode("b"), DagNode("c")],
              [DagEdge("a", "c", port=1), DagEdge("b", "c", port=1)]), "ports [1, 1]"),
    (DagPanel([DagNode("a"), DagNode("c")], [DagEdge("a", "c", port=-1)]), "ports [-1]"),
])
def test_bad_input_is_named(bad, message: str, tmp_path: Path) -> None:
    with pytest.raises(DrawingError) as e:
        dag_to_dot(bad)
    assert message in str(e.value)
    with pytest.raises(DrawingError):
        draw_dag(bad, tmp_path / "x.svg", engine="matplotlib")


def test_other_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(DrawingError, match="link 'x' -> 'nope'"):
        dag_to_dot(PORTED, links=[DagEdge("x", "nope")])
    with pytest.raises(DrawingError, match="unknown direction 'left'"):
        dag_to_dot(PORTED, direction="left")
    with pytest.raises(ValueError, match="end the file name in one of .svg, .png, .pdf"):
        draw_dag(PORTED, tmp_path / "x.gif")
    assert issubclass(DrawingError, ValueError)


def test_dot_writes_edges_in_the_drawing_direction() -> None:
    down = dag_to_dot(PORTED, links=[DagEdge("t", "x", "back", dashed=True)])
    up = dag_to_dot(PORTED, direction="up")
    assert "rankdir=BT" in down and "rankdir=TB" in up  # sources on top / at the bottom
    for text in (down, up):  # dst -> src, drawn back, so that ordering=out keeps the ports
        assert "edge [dir=back" in text and "s [label=\"sub\"" in text
        assert 's -> t [taillabel="1", labeldistance=1.6];' in text
        assert text.index("s -> t [") < text.index('s -> x [taillabel="2"') and \
            text.count(", ordering=out];") == 1
    assert 'x -> t [label="back", style=dashed, constraint=false];' in down
    assert 't [label="tanh", style="rounded,filled,dashed"' in down and 'x [label="x"' in down
    fam = family(1)
    text = dag_to_dot(fam)
    assert len(re.findall(r'^    "?c\d+"? -> ', text, flags=re.M)) == len(fam.edges)
    assert 'graph [label="family 1\\na note"' in text  # title and notes head the cluster
    quoted = dag_to_dot(DagPanel([DagNode("a:b"), DagNode("node")], [DagEdge("node", "a:b")]))
    assert '"a:b" [label="a:b"' in quoted and '"a:b" -> "node";' in quoted  # ids quoted


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("direction", ["down", "up"])
def test_layout_geometry(seed: int, direction: str) -> None:
    panel = family(seed)
    boxes, routes = drawing.layout(panel, direction)
    n = len(panel.nodes)
    rows: dict[int, list] = {}
    for b in boxes:
        rows.setdefault(b.layer, []).append(b)
    for row in rows.values():  # nothing overlaps within a row, edge labels included
        row.sort(key=lambda b: b.x)
        assert all(a.x + a.w / 2 < b.x - b.w / 2 for a, b in zip(row, row[1:], strict=False))
    assert min(b.x - b.w / 2 for b in boxes) == pytest.approx(0, abs=1e-9)
    assert min(b.y - b.h / 2 for b in boxes) == pytest.approx(0, abs=1e-9)
    index = {node.id: i for i, node in enumerate(panel.nodes)}
    sign = -1 if direction == "down" else 1
    for e, r in zip(panel.edges, routes, strict=True):
        lo, hi = boxes[index[e.src]], boxes[index[e.dst]]
        assert r.chain[0] == index[e.src] and r.chain[-1] == index[e.dst]
        assert sign * (hi.y - lo.y) > 0  # parents above (down) or below (up) children
        assert r.verts[0][1] == pytest.approx(lo.y + sign * lo.h / 2)  # leaves the facing side
        assert r.end[1] == pytest.approx(hi.y - sign * hi.h / 2)
        assert all(c >= n for c in r.chain[1:-1])  # bends are extra boxes
        label_box = [boxes[c] for c in r.chain[1:-1] if boxes[c].w > layered.BEND_W]
        assert len(label_box) == 1 and r.label_at is not None  # labelled: one label box,
        lb = label_box[0]  # text inside it, right of the line through it
        assert lb.x - lb.w / 2 < r.label_at[0] < lb.x + lb.w / 2 and r.label_at[1] == lb.y
        assert lb.x + lb.anchor < r.label_at[0]


def test_layers_are_generations_with_sources_lifted() -> None:
    # 0 -> 1 -> 2 -> 3 and a source 4 used only by 3: it sits just below 3, not at 0
    assert layered.layers(5, [(0, 1), (1, 2), (2, 3), (4, 3)]) == [0, 1, 2, 3, 2]
    assert layered.layers(3, [(0, 2), (1, 2), (0, 1)]) == [0, 1, 2]
    assert layered.layers(2, []) == [0, 0]


def test_place_is_least_squares_with_gaps() -> None:
    assert layered.place([0.0, 0.0], [1.0, 1.0]) == pytest.approx(
        [-(1 + layered.GAP_X) / 2, (1 + layered.GAP_X) / 2])  # pushed apart symmetrically
    assert layered.place([0.0, 5.0], [1.0, 1.0]) == [0.0, 5.0]  # already apart: kept


@pytest.mark.parametrize("fmt", ["svg", "png", "pdf"])
def test_matplotlib_files(fmt: str, tmp_path: Path) -> None:
    panels = [family(3), PORTED]
    links = [DagEdge("c13", "s", "base of ported", dashed=True)]
    out = draw_dag(panels, tmp_path / f"f.{fmt}", links=links, engine="matplotlib")
    data = out.read_bytes()
    if fmt == "png":
        pixels = imread(out)
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and pixels.ndim == 3 and pixels.std() > 0
    elif fmt == "pdf":
        assert data[:5] == b"%PDF-" and data.rstrip().endswith(b"%%EOF")
    else:
        texts = set(svg_texts(out))
        for p in panels:
            lines = {t for n in p.nodes for t in n.text.split("\n")}
            lines |= {t for e in p.edges for t in e.label.split("\n") if t}
            assert lines <= texts, lines - texts
            assert set(p.header()) <= texts
        assert {"base of ported", "1", "2"} <= texts  # link label, port numbers


def test_auto_engine_without_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drawing.shutil, "which", lambda name: None)
    out = draw_dag(family(2), tmp_path / "a.svg")
    assert "matplotlib.org" in out.read_text() and "cand00" in svg_texts(out)
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        draw_dag(family(2), tmp_path / "b.svg", engine="graphviz")


@needs_dot
def test_graphviz_engine_draws_every_label(tmp_path: Path) -> None:
    panels = [family(3), PORTED]
    out = draw_dag(panels, tmp_path / "g.svg", links=[DagEdge("c13", "s", "link")],
                   engine="graphviz")
    texts = set(svg_texts(out))
    assert "link" in texts and {t for p in panels for n in p.nodes
                                for t in n.text.split("\n")} <= texts
    run = subprocess.run(["dot", "-Tsvg"], input=dag_to_dot(panels, direction="up").encode(),
                         capture_output=True, check=True)
    assert b"<svg" in run.stdout
