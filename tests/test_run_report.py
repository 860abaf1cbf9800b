"""The stage pipeline config, the report, the ``run``/``report`` CLI and (slow) a tiny
end-to-end ``run``. The fast tests use a cheap deterministic stand-in scorer (unit tests
only: it scores the expression text and widths, not a trained model)."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import mlpgraph
from mlpgraph import drawing
from searcher.candidate import Candidate
from searcher.cli_run import build_parser, parse_stages, summary
from searcher.config import SearchConfig
from searcher.errors import SearchConfigError
from searcher.report import draw_lineage, lineage_dot, lineage_panels, load_sections, write_report
from searcher.search import run_search
from searcher.stages import (
    Pipeline,
    Stage1,
    Stage2,
    Stage3,
    StudentSpec,
    WarmupSpec,
    default_base,
    derive_constraints,
    full_preset,
    load_pipeline,
    quick_preset,
    supernet_sampler,
)


def stand_in_score(spec, budget) -> dict:
    """Deterministic pseudo-accuracy from the expressions and widths (UNIT TESTS ONLY)."""
    s = 0.0
    for expr, stacks, d_inner in spec.layers:
        h = int(hashlib.sha256(expr.encode()).hexdigest()[:8], 16) / 2**32
        s += 0.5 * h + 0.04 * math.log(stacks * d_inner)
    width = sum(st * k for _, st, k in spec.layers)
    return {"score": s / len(spec.layers), "params": 5000 + 70 * width,
            "latency_ms": 1.0 + 0.01 * width}


def tiny_config(stage: int, base: Candidate | None = None, **kw) -> SearchConfig:
    opts = dict(student_config=None, hidden=32, non_mlp_params=5000, num_layers=3,
                param_window=(12_000, 30_000), evaluations=10, batch_size=4, population=6,
                sample_size=3, backend="inline", seed=stage, stage=stage,
                base=None if base is None else base.to_dict())
    opts.update(kw)
    return SearchConfig(**opts)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    """A run folder with three stage journals made by run_search and the stand-in scorer."""
    root = tmp_path_factory.mktemp("run")
    base = None
    for stage in (1, 2, 3):
        res = run_search(tiny_config(stage, base), stand_in_score, root / f"stage{stage}")
        base = res.best[0].candidate
        (root / f"stage{stage}" / "stage.json").write_text(json.dumps(
            {"stage": stage, "dedupe": res.dedupe.to_dict()}))
    return root


# ----------------------------------------------------------------- pipeline config
@pytest.mark.parametrize("make", [quick_preset, full_preset])
def test_pipeline_round_trips_through_dict_and_json(make):
    p = make()
    assert Pipeline.from_dict(p.to_dict()) == p
    assert Pipeline.from_json(p.to_json()) == p
    assert json.loads(p.to_json())["stages"][2]["stage"] == 3
    assert [s.stage for s in p.select([3, 1])] == [1, 3]


def test_pipeline_errors_name_the_field(tmp_path):
    d = quick_preset().to_dict()
    d["stages"][0]["kd_stepz"] = 3
    with pytest.raises(SearchConfigError, match=r"stages\[0\].*kd_stepz"):
        Pipeline.from_dict(d)
    d = quick_preset().to_dict()
    d["stages"][1]["stage"] = 7
    with pytest.raises(SearchConfigError, match="must be 1, 2 or 3"):
        Pipeline.from_dict(d)
    with pytest.raises(SearchConfigError, match="unknown preset"):
        load_pipeline("huge")
    p = quick_preset()
    p.stages = [Stage2(), Stage1()]
    with pytest.raises(SearchConfigError, match="in order"):
        p.validate()
    with pytest.raises(SearchConfigError, match="stage 3 is not in"):
        Pipeline(stages=[Stage1()]).stage(3)
    f = tmp_path / "p.json"
    f.write_text(quick_preset().to_json())
    assert load_pipeline(path=f) == quick_preset()


def test_stage_masks_and_search_configs():
    assert Stage1().genes == {"expr", "stacks", "ratio"}
    assert Stage2().genes == {"expr"}
    assert Stage3().genes == {"stacks", "ratio"} and Stage3().no_training
    assert isinstance(Stage3().rewarm, WarmupSpec) and Stage1().rewarm is None
    p = quick_preset()
    cons = derive_constraints(p, p.student.to_config())
    from searcher.stages import search_config

    for spec in p.stages:
        cfg = search_config(p, spec, base=default_base(p), student_config="student_tiny",
                            constraints=cons, score_budget=None, backend="inline")
        assert cfg.gene_mask() == spec.genes and cfg.stage == spec.stage
        assert (cfg.base is None) == (spec.stage == 1)


def test_stage_masks_hold_in_a_search(tmp_path):
    base = run_search(tiny_config(1), stand_in_score, tmp_path / "s1").best[0].candidate
    res2 = run_search(tiny_config(2, base), stand_in_score, tmp_path / "s2")
    for e in res2.history:  # expressions change, s and ratio stay
        assert [(g.stacks, g.ratio) for g in e.candidate.layers] == \
            [(g.stacks, g.ratio) for g in base.layers]
    res3 = run_search(tiny_config(3, base), stand_in_score, tmp_path / "s3")
    for e in res3.history:  # s and ratio change, expressions stay
        assert [g.graph for g in e.candidate.layers] == [g.graph for g in base.layers]


def test_constraints_window_and_sampler():
    p = quick_preset()
    cfg = p.student.to_config()
    cons = derive_constraints(p, cfg)
    lo, hi = cons.param_window
    assert lo < hi and "1x1" in cons.window_seeds and "1x1/2" not in cons.window_seeds
    assert cons.latency_budget and cons.latency_proxy == "flops"
    from searcher.budget import ParamCounter

    counter = ParamCounter.from_student_config(cfg)
    sample = supernet_sampler(mlpgraph.PAPER_SPACE, ["W2(gelu(W1(x)))"] * 3, cfg.hidden,
                              lambda c: lo <= counter(c) <= hi)
    a = [sample(random.Random(5)) for _ in range(3)]
    assert a == [sample(random.Random(5)) for _ in range(3)]  # deterministic
    cand = Candidate.from_dict({"layers": [
        {"expr": e, "stacks": s, "ratio": str(k / cfg.hidden)} for e, s, k in a[0]]})
    assert lo <= counter(cand) <= hi
    narrow = Pipeline(student=StudentSpec())
    narrow.budget.mlp_width = (5.0, 6.0)
    with pytest.raises(SearchConfigError, match="admits no standard FFN"):
        derive_constraints(narrow, cfg)


# --------------------------------------------------------------------------- report
def test_report_has_every_section_and_valid_images(synthetic_run):
    path = write_report(synthetic_run)
    page = path.read_text()
    for heading in ("Winners: graphs per layer", "Pareto front", "Best score over evaluations",
                    "Lineage of the winners", "Dedupe", "Every candidate"):
        assert heading in page
    assert "http://" not in page and "https://" not in page  # nothing from the network
    images = re.findall(r"<img src='([^']+)'", page)
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
    assert page.count("<tr><td>stage ") >= rows  # one table row per proposal
    assert "lineage.svg" in images and (path.parent / "lineage.dot").read_text() == \
        lineage_dot(sections)
    assert lineage_lines(sections) <= set(svg_texts(path.parent / "lineage.svg"))
    panels, links = lineage_panels(sections)
    arrows = re.findall(r'^ *"\d+:\w+" -> "\d+:\w+"', lineage_dot(sections), flags=re.M)
    assert len(arrows) == sum(len(p.edges) for p in panels) + len(links) > 0


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


# ------------------------------------------------------------------------------ CLI
def test_run_arguments_parse():
    args = build_parser().parse_args(["run"])
    assert (args.preset, args.stages, args.backend, args.resume) == ("quick", [1, 2, 3],
                                                                      "local", False)
    args = build_parser().parse_args(["run", "--preset", "full", "--stages", "3,1",
                                      "--seed", "4", "--backend", "ray", "--address",
                                      "auto", "--resume", "--run-dir", "x"])
    assert args.stages == [1, 3] and args.seed == 4 and args.address == "auto"
    assert args.resume and args.run_dir == Path("x")
    assert build_parser().parse_args(["report", "some/dir"]).run_dir == Path("some/dir")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--stages", "4"])
    with pytest.raises(Exception, match="stages are 1, 2 and 3"):
        parse_stages("0,2")


def test_report_command_exit_codes(synthetic_run, tmp_path, capsys):
    args = build_parser().parse_args(["report", str(synthetic_run)])
    assert args.func(args) == 0
    args = build_parser().parse_args(["report", str(tmp_path)])
    assert args.func(args) == 2 and "no search journal" in capsys.readouterr().err


def test_summary_table():
    acc = {"accuracy": 0.8, "f1": 0.79}
    res = {"run_dir": "r", "timings": {"total": 600, "job_excluding_one_time": 540,
                                       "teacher": 1, "warmup": 60},
           "teacher": {"reused": True}, "caches": {"reused": True},
           "stages": [{"stage": 1, "evaluations": 4, "best_score": 0.7, "base_score": None,
                       "dedupe": {"hit_rate": 0.25}, "seconds": 30, "describe": "W2 @ 1x1"}],
           "final": {k: {"params": 10, "latency_ms": 1.5, "heldout": acc, "test": acc}
                     for k in ("teacher", "winner", "baseline")}}
    text = summary(res)
    assert "standard FFN, same shape" in text and "reused" in text and "9.0 min" in text


# --------------------------------------------------------------------------- slow e2e
@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path):
    from distill.assets import ensure_asset
    from distill.errors import MissingAssetError
    from distill.teacher import finetuned_teacher_dir, is_finetuned
    from searcher.run import run_pipeline

    try:
        ensure_asset("teacher"), ensure_asset("movies")
    except MissingAssetError as e:
        pytest.skip(f"assets not fetched: {e}")
    if not is_finetuned(finetuned_teacher_dir("movie_binary")[0]):
        pytest.skip("no cached fine-tuned teacher (run `efficientbert teacher` once)")
    p = quick_preset()
    p.student = StudentSpec(hidden=48, embedding_size=32)
    p.workers, p.threads = 1, 2
    p.warmup = WarmupSpec(general_steps=4, task_steps=4, batch_size=8)
    p.unlabeled_limit = 64
    p.scoring.train_slice, p.scoring.heldout_size, p.scoring.batch_size = (0, 64), 64, 8
    p.stages = [Stage1(evaluations=3, kd_steps=2, population=3, sample_size=2),
                Stage2(evaluations=2, kd_steps=2, population=2, sample_size=2),
                Stage3(evaluations=3, population=3, sample_size=2,
                       rewarm=WarmupSpec(general_steps=2, task_steps=2, batch_size=8))]
    p.final.task_steps, p.final.batch_size, p.final.teacher_test = 3, 8, False
    res = run_pipeline(p, tmp_path / "run", backend="inline", progress=False,
                       log=lambda s: None)
    assert [s["stage"] for s in res["stages"]] == [1, 2, 3]
    assert res["final"]["winner"]["params"] == res["final"]["baseline"]["params"]
    assert "accuracy" in res["final"]["winner"]["test"]
    for f in ("results.json", "pipeline.json", "student_config.json", "winner/config.json",
              "winner/candidate.json", "baseline/model.safetensors", "report/index.html",
              "stage3/journal.sqlite", "warmup/stage3/model.safetensors"):
        assert (tmp_path / "run" / f).is_file(), f
    with pytest.raises(Exception, match="already holds a run"):
        run_pipeline(p, tmp_path / "run", backend="inline", progress=False)
