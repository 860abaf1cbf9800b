"""The run report: every section, valid figures, the lineage drawing (with and without
Graphviz). The journals come from run_search with a cheap deterministic stand-in scorer
(unit tests only: it scores the expression text and widths, not a trained model)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_search_support import nested

from distill import ScoreResult
from mlpgraph import drawing
from searcher.candidate import Candidate
from searcher.cli import main
from searcher.config import SearchConfig
from searcher.errors import RunFolderError
from searcher.report import draw_lineage, lineage_dot, lineage_panels, load_sections, write_report
from searcher.results import (
    Comparison,
    Contrast,
    FinalRecord,
    Latency,
    MetricRef,
    ModelRow,
    RunResults,
    StageRecord,
    TeacherRow,
    load_results,
    results_schema,
)
from searcher.run import stage_record
from searcher.search import run_search
from searcher.summary import summarize


def stand_in_score(spec, budget) -> ScoreResult:
    """Deterministic pseudo-accuracy from the expressions and widths (UNIT TESTS ONLY)."""
    s = 0.0
    for layer in spec.layers:
        h = int(hashlib.sha256(str(layer.graph).encode()).hexdigest()[:8], 16) / 2**32
        s += 0.5 * h + 0.04 * math.log(layer.stacks * layer.d_inner(spec.hidden))
    width = sum(g.stacks * g.d_inner(spec.hidden) for g in spec.layers)
    return ScoreResult({"score": s / len(spec.layers)}, params=5000 + 70 * width,
                       latency_ms=1.0 + 0.01 * width)


def tiny_config(stage: int, base: Candidate | None = None, **kw) -> SearchConfig:
    return SearchConfig.load(nested({"num_layers": 3, "seed": stage, "stage": stage,
                                     "base": None if base is None else base.to_dict()}, {
        "student_config": None, "hidden": 32, "non_mlp_params": 5000,
        "param_window": (12_000, 30_000), "evaluations": 10, "batch_size": 4,
        "population": 6, "sample_size": 3, "executor": "inline", **kw}))


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    """A run folder with three stage journals made by run_search and the stand-in scorer."""
    root = tmp_path_factory.mktemp("run")
    base = None
    for stage in (1, 2, 3):
        cfg = tiny_config(stage, base)
        res = run_search(cfg, stand_in_score, root / f"stage{stage}")
        record = stage_record(res, cfg, base, "supernet", 1.0)
        base = res.best[0].candidate
        (root / f"stage{stage}" / "stage.json").write_text(json.dumps(record.dump()))
    return root


def test_stage_masks_hold_in_a_search(tmp_path):
    base = run_search(tiny_config(1), stand_in_score, tmp_path / "s1").best[0].candidate
    res2 = run_search(tiny_config(2, base), stand_in_score, tmp_path / "s2")
    for e in res2.history:  # expressions change, s and ratio stay
        assert [(g.stacks, g.ratio) for g in e.candidate.layers] == \
            [(g.stacks, g.ratio) for g in base.layers]
    res3 = run_search(tiny_config(3, base), stand_in_score, tmp_path / "s3")
    for e in res3.history:  # s and ratio change, expressions stay
        assert [g.graph for g in e.candidate.layers] == [g.graph for g in base.layers]


# --------------------------------------------------------------------------- report
def test_report_has_every_section_and_valid_images(synthetic_run):
    path = write_report(synthetic_run)
    page = path.read_text()
    for heading in ("Each stage's best: graphs per layer", "Pareto front",
                    "Best score over evaluations", "Lineage of the winners", "Dedupe",
                    "Every candidate"):
        assert heading in page
    assert "http://" not in page and "https://" not in page  # nothing from the network
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) >= 7  # 3 winners, pareto, progress, lineage, dedupe
    for name in images:
        f = path.parent / name
        assert f.is_file() and f.stat().st_size > 500, name
        if name.endswith(".png"):
            assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert ET.parse(f).getroot().tag.endswith("svg")
    sections = load_sections(synthetic_run)
    assert [s.name for s in sections] == ["stage 1", "stage 2", "stage 3"]
    rows = sum(len(s.rows) for s in sections)
    assert page.count("<tr><td>stage ") == rows + len(sections)  # a row per proposal + dedupe
    assert "lineage.svg" in images and (path.parent / "lineage.dot").read_text() == \
        lineage_dot(sections)
    assert lineage_lines(sections) <= set(svg_texts(path.parent / "lineage.svg"))
    panels, links = lineage_panels(sections)
    arrows = re.findall(r'^ *"\d+:\w+" -> "\d+:\w+"', lineage_dot(sections), flags=re.M)
    assert len(arrows) == sum(len(p.edges) for p in panels) + len(links) > 0


def test_report_shows_the_summary_rows(synthetic_run, tmp_path):
    """The report's tables are the terminal summary's rows (one results -> rows function)."""
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    results = fake_results(str(run))
    (run / "results.json").write_text(json.dumps(results.dump()))
    page = write_report(run).read_text()
    s = summarize(results)
    for table in s.tables:
        assert f"<h3>{table.title}</h3>" in page
        for row in table.rows:
            assert str(row[0]) in page
    assert s.verdict and all(line in page for line in s.verdict.split("\n"))


def test_report_shows_the_searched_best_and_the_fallback(synthetic_run, tmp_path):
    """A stage's section shows the candidate its search ranked first (``stage.json``'s top,
    not the journal's single best score) and, when the stage handed on its FFN control
    instead, that FFN and why."""
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    sec = load_sections(run)[0]
    ffn = "W2(gelu(W1(x))) @ 2x1 | W2(gelu(W1(x))) @ 2x1 | W2(gelu(W1(x))) @ 2x1"
    other = next(r for r in sec.scored if r.candidate_id != sec.winner.candidate_id
                 and Candidate.from_dict(r.candidate).describe() != ffn)
    info = json.loads((run / "stage1" / "stage.json").read_text())
    why = "the best candidate scored +0.0100 kd_loss against its FFN, i.e. worse"
    info.update(top=[{"candidate": {"id": other.candidate_id}}], fallback=why,
                searched=Candidate.from_dict(other.candidate).describe(), describe=ffn)
    (run / "stage1" / "stage.json").write_text(json.dumps(info))
    sec = load_sections(run)[0]
    assert sec.winner.candidate_id == other.candidate_id and sec.fallback == why
    page = write_report(run).read_text()
    assert page.count("Handed on instead") == 1 and why in page
    assert Candidate.from_dict(other.candidate).describe() in page
    # the FFN did not fit the constraints: the best went on, and the note says so
    info.update(describe=Candidate.from_dict(other.candidate).describe(),
                searched=Candidate.from_dict(other.candidate).describe(),
                fallback=why + "; that FFN is outside the constraints, so the best goes on")
    (run / "stage1" / "stage.json").write_text(json.dumps(info))
    page = write_report(run).read_text()
    assert "Handed on instead" not in page and info["fallback"] in page


def _comp(w: list[float], b: list[float], name: str, split: str | None = None) -> Comparison:
    from distill import metric, paired, verdict

    ref = MetricRef(name=name, split=split)
    p = paired(w, b)
    up = metric(name).higher_is_better
    return Comparison(metric=ref, higher_is_better=up, a=w, b=b, delta_mean=p.delta_mean,
                      ci95=p.ci95, seeds=p.n,
                      verdict=verdict(p, ref.label, "winner", "baseline", higher_is_better=up))


def _model(role: str, test: dict) -> ModelRow:
    acc = {"accuracy": 0.8, "f1": 0.79}
    return ModelRow(role=role, describe="W2 @ 1x1", expressions=["W2(gelu(W1(x)))"], params=10,
                    mlp_mflops=1.0, latency=Latency(batch1_ms=1.5, batch32_ms=9.0),
                    diverged=False, kd_steps=3, eval=acc,
                    test=test, kd={"kd_loss": 2.0, "teacher_kl": 0.1}, per_seed=[],
                    folder="f")


def fake_results(run_dir: str) -> RunResults:
    acc = {"accuracy": 0.8, "f1": 0.79}
    stage = StageRecord(stage=1, seconds=30, rank_by="kd_loss", evaluations=4, proposals=5,
                        best_score=0.7, best_rung=0, confirmed=None, control=None, delta=None,
                        fallback=None, searched="W2 @ 1x1", winner={}, describe="W2 @ 1x1",
                        params=10, latency_ms=None, base=None, base_score=None,
                        dedupe={"hit_rate": 0.25}, stopped="done", supernet="s",
                        constraints={}, top=[])
    final = FinalRecord(
        splits={"eval": "heldout", "test": "test"}, seeds=3, metrics=["accuracy", "f1"],
        recipe={}, teacher=TeacherRow(params=10, latency=None, folder="t", eval=acc, test=acc),
        models={"winner": _model("winner", {"accuracy": 0.81, "f1": 0.8}),
                "baseline": _model("baseline", acc)},
        contrasts=[Contrast(other="baseline", comparisons=[
            _comp([1.9, 1.85, 1.8], [2.0, 1.95, 1.92], "kd_loss"),
            _comp([0.81, 0.8, 0.82], [0.8, 0.81, 0.8], "accuracy", "test")])])
    return RunResults(run_dir=run_dir, pipeline={}, stages_run=[1], constraints={},
                      timings={"total": 600, "job_excluding_one_time": 540, "teacher": 1,
                               "warmup": 60},
                      teacher={"reused": True}, caches={"reused": True}, stages=[stage],
                      final=final)


def test_summary_rows():
    s = summarize(fake_results("r"))
    facts = dict(s.facts)
    assert "reused" in facts["teacher"] and "9.0 min" in facts["wall time"]
    final, comp, stages = s.tables
    assert stages.header[2] == "best held-out kd_loss"
    assert stages.rows[0][:3] == ["stage 1", 4, 0.7]
    assert final.header[1:3] == ["TEST accuracy", "TEST f1"]  # the user's metric leads
    assert [r[0] for r in final.rows] == ["teacher (fine-tuned)", "searched winner",
                                          "standard FFN, same shape"]
    assert final.rows[1][1:3] == [0.81, 0.8] and final.rows[1][-2:] == [2.0, 0.1]
    assert final.rows[1][3:5] == [1.5, 9.0]  # latency at batch 1 and 32
    assert [r[0] for r in comp.rows] == ["test accuracy", "kd_loss"]  # test first
    assert comp.rows[1][3] == pytest.approx(-0.32 / 3)
    assert s.verdicts[0].startswith("test accuracy: winner - baseline = +0.0067 over 3 paired")
    assert "no difference detected" in s.verdicts[0]
    assert s.verdicts[1].startswith("size: the winner has 10 parameters")
    assert s.verdicts[2].startswith("(diagnostic) kd_loss: winner - baseline = -0.1067")
    assert "winner is better than baseline (the interval excludes 0)" in s.verdicts[2]


def test_results_round_trip_and_refuse_other_formats(tmp_path):
    path = tmp_path / "results.json"
    res = fake_results("r")
    path.write_text(json.dumps(res.dump()))
    assert load_results(path) == res
    assert "properties" in results_schema() and "final" in results_schema()["properties"]
    path.write_text(json.dumps({**res.dump(), "format": "efficientbert.run/2"}))
    with pytest.raises(RunFolderError, match=r"format 'efficientbert.run/2'.*--resume"):
        load_results(path)


# ------------------------------------------------------------------------- lineage
def svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    return ["".join(el.itertext()).strip() for el in root.iter() if el.tag.endswith("text")]


def lineage_lines(sections) -> set[str]:
    """Every text line the lineage drawing must show: titles, node and edge labels."""
    panels, links = lineage_panels(sections)
    out = {p.title for p in panels} | {e.label for e in links}
    out |= {t for p in panels for n in p.nodes for t in n.text.split("\n")}
    return out | {t for p in panels for e in p.edges for t in e.label.split("\n") if t}


def test_lineage_is_the_winners_ancestry(synthetic_run):
    sections = load_sections(synthetic_run)
    panels, links = lineage_panels(sections)
    assert [p.title for p in panels] == [s.name for s in sections]  # every stage has a winner
    for si, (sec, p) in enumerate(zip(sections, panels, strict=True)):
        rows = {r.candidate_id: r for r in sec.rows if r.status != "duplicate"}
        assert p.nodes[0].id == f"{si}:{sec.winner.candidate_id}"
        assert [n.fill for n in p.nodes].count("#ffd8a8") == 1 and p.nodes[0].fill == "#ffd8a8"
        for e in p.edges:  # each edge is a recorded parent -> child step, with its mutations
            parent, child = e.src.split(":", 1)[1], e.dst.split(":", 1)[1]
            lin = rows[child].lineage
            assert parent in lin["parents"]
            assert e.label.split("\n") == [f"{m['name']}@L{m['layer'] + 1}"
                                           for m in lin["mutations"]] or e.label == lin["origin"]
        ids = {n.id for n in p.nodes}  # every node reaches the winner
        reach, todo = set(), [p.nodes[0].id]
        while todo:
            v = todo.pop()
            reach.add(v)
            todo += [e.src for e in p.edges if e.dst == v and e.src not in reach]
        assert reach == ids
    for e in links:  # a stage's winner is the next stage's base
        (sa, a), (sb, b) = e.src.split(":", 1), e.dst.split(":", 1)
        assert int(sb) == int(sa) + 1 and a == b == sections[int(sa)].winner.candidate_id
    assert len(links) >= 1 and all(e.dashed for e in links)


def test_lineage_without_graphviz(synthetic_run, tmp_path, monkeypatch):
    """The matplotlib drawing, also where Graphviz is installed."""
    monkeypatch.setattr(drawing.shutil, "which", lambda name: None)
    sections = load_sections(synthetic_run)
    out = draw_lineage(sections, tmp_path / "lineage.svg")
    assert "matplotlib.org" in out.read_text()  # the engine's mark in the metadata
    assert lineage_lines(sections) <= set(svg_texts(out))
    assert draw_lineage([], tmp_path / "none.svg") is None and lineage_dot([]).count("->") == 0


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed "
                    "(apt-get install graphviz); test_lineage_without_graphviz covers the rest")
def test_lineage_with_graphviz(synthetic_run, tmp_path):
    sections = load_sections(synthetic_run)
    out = draw_lineage(sections, tmp_path / "lineage.svg")
    assert "graphviz" in out.read_text().lower()
    assert lineage_lines(sections) <= set(svg_texts(out))


def test_report_of_a_lone_search_and_of_nothing(tmp_path, synthetic_run):
    assert write_report(synthetic_run / "stage2").is_file()
    with pytest.raises(FileNotFoundError, match="no search journal"):
        write_report(tmp_path)


def test_report_command_exit_codes(synthetic_run, tmp_path, capsys):
    assert main(["report", str(synthetic_run)]) == 0
    assert main(["report", str(tmp_path)]) == 2
    assert "no search journal" in capsys.readouterr().err


def test_lineage_with_a_loop_is_drawn_without_it(tmp_path):
    """A candidate proposed again after its own offspring (same id) would close a loop; the
    drawing omits that edge and says so."""
    from searcher.journal import Evaluation, JournalRow
    from searcher.report import Section

    def row(cid: str, parents: list[str], score: float) -> JournalRow:
        cand = {"layers": [], "lineage": {"origin": "mutation", "parents": parents,
                                          "mutations": [{"name": "insert_unary", "layer": 0}]}}
        ev = Evaluation(0, "ok", score=score)
        return JournalRow(0, 0, cid, cand, "evaluated", None, 1, 1.0, score, 0, [ev], 0.0, 1.0)

    sec = Section("stage 1", tmp_path, [row("aaaa", ["bbbb"], 0.9), row("bbbb", ["aaaa"], 0.5)],
                  [], {"rank_by": "accuracy"}, None)
    panels, _ = lineage_panels([sec])
    assert [(e.src, e.dst) for e in panels[0].edges] == [("0:bbbb", "0:aaaa")]
    assert "1 edge(s) back to a descendant omitted" in panels[0].notes[0]
    out = draw_lineage([sec], tmp_path / "loop.svg")
    assert "omitted" in " ".join(svg_texts(out))
