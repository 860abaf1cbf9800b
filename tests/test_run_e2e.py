"""``efficientbert run`` end to end, fast: a tiny teacher built here, a tiny synthetic task,
a fresh cache; every stage, the final comparison and the report. Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from searcher import run as run_module
from searcher.cli import main
from searcher.config import ControllerSpec, ExecutorSpec, FidelitySpec, Rung
from searcher.results import MetricRef, load_results
from searcher.run import run_pipeline
from searcher.run_config import (
    FinalSpec,
    Pipeline,
    ScoreSpec,
    Stage1,
    Stage2,
    Stage3,
    StudentShape,
    WarmupSpec,
)

TINY_WARMUP = WarmupSpec(general_steps=4, task_steps=4, batch_size=8)


def tiny_pipeline(task: str, teacher: str) -> Pipeline:
    def ctl(n: int) -> ControllerSpec:
        return ControllerSpec(evaluations=n, population=n, sample_size=2, proposals_per_step=2)

    return Pipeline(
        name="tiny", task=task, teacher=teacher, threads=1, unlabeled_limit=64,
        student=StudentShape(num_layers=2, hidden=16, heads=4, embedding_size=8,
                             max_position=40),
        score=ScoreSpec(train_slice=(0, 64), heldout_size=32, batch_size=8,
                        rank_by="kd_loss", tie_break="teacher_kl", common_noise=True,
                        latency_repeats=1),
        warmup=TINY_WARMUP.but(pool="mixed", random_members=2),
        stages=[Stage1(controller=ctl(3), kd_steps=2, fidelity=FidelitySpec(
                    rungs=(Rung(steps=2), Rung(steps=3, keep=2, seeds=2)), confirm_seeds=1,
                    control="promoted")),
                Stage2(controller=ctl(2), kd_steps=2),
                Stage3(controller=ctl(3), rewarm=WarmupSpec(general_steps=2, task_steps=2,
                                                            batch_size=8))],
        executor=ExecutorSpec(kind="inline", workers=1),
        final=FinalSpec(task_steps=3, batch_size=8, seeds=2, equal_params=True,
                        fixed=("tanh(W2(gelu(W1(x))))",),
                        label_weight=1.0, lr=1e-3))


def test_tiny_run_end_to_end(tmp_path, tiny_task, teacher_dir):
    p = tiny_pipeline(tiny_task, teacher_dir)
    res = run_pipeline(p, tmp_path / "run", cache_dir=str(tmp_path / "cache"), progress=False,
                       log=lambda s: None)
    assert [s.stage for s in res.stages] == [1, 2, 3]
    assert all(s.rank_by == "kd_loss" for s in res.stages)
    s1 = res.stages[0]  # promoted to rung 1, confirmed on a fresh seed, with its control
    assert s1.best_rung == 1 and s1.confirmed is not None and s1.control is not None
    final = res.final
    assert final.splits == {"eval": "heldout", "test": "test"} and final.seeds == 2
    models = final.models
    assert models["winner"].params == models["baseline"].params
    for key in ("winner", "baseline", "equal_params"):
        assert set(models[key].test) >= {"accuracy", "f1"}
    assert set(final.teacher.test) >= {"accuracy", "f1"}
    comp = final.contrast("baseline")
    assert {(c.metric.name, c.metric.split) for c in comp.comparisons} >= {
        ("kd_loss", None), ("teacher_kl", None), ("accuracy", "test"), ("accuracy", None)}
    for c in comp.comparisons:
        assert len(c.a) == len(c.b) == 2 and c.seeds == 2
        assert c.ci95[0] <= c.delta_mean <= c.ci95[1]
    assert {c.other for c in final.contrasts} == {"baseline", "equal_params", "fixed1"}
    for key in ("baseline", "equal_params", "fixed1"):  # saved, or the same model as another
        assert (Path(models[key].folder) / "model.safetensors").is_file()
        assert (models[key].same_as or key) == Path(models[key].folder).name
    assert models["fixed1"].expressions == ["tanh(W2(gelu(W1(x))))"] * 2
    assert not res.teacher["reused"] and not res.caches["reused"]
    for f in ("results.json", "pipeline.json", "student_config.json", "winner/config.json",
              "winner/candidate.json", "winner/tokenizer.json", "winner/model.safetensors",
              "report/index.html", "stage3/journal.sqlite", "warmup/stage3/model.safetensors"):
        assert (tmp_path / "run" / f).is_file(), f
    assert not (tmp_path / "run" / "FAILED.json").exists()
    assert load_results(tmp_path / "run" / "results.json").final == final
    page = (tmp_path / "run" / "report" / "index.html").read_text()
    assert "searched winner" in page and "standard FFN, same shape" in page
    # the same seed again, resumed: every finished step is reused, the result is the same
    again = run_pipeline(p, tmp_path / "run", resume=True, cache_dir=str(tmp_path / "cache"),
                         progress=False, log=lambda s: None)
    assert again.final.models["winner"].test == models["winner"].test
    assert again.teacher["reused"] and again.caches["reused"]
    # more final seeds on resume: only the new seed's students train, the old ones are kept
    kept = sorted((tmp_path / "run" / "final").iterdir())
    trained = len({models[k].same_as or k for k in ("winner", "baseline", "equal_params",
                                                    "fixed1")})
    assert len(kept) == 2 * trained
    more = run_pipeline(p.but(final=p.final.but(seeds=3)), tmp_path / "run", resume=True,
                        cache_dir=str(tmp_path / "cache"), progress=False, log=lambda s: None)
    assert len(list((tmp_path / "run" / "final").iterdir())) == 3 * trained
    kd = MetricRef(name="kd_loss")
    c3 = more.final.contrast("baseline").get(kd)
    assert c3.seeds == 3 and c3.a[:2] == comp.get(kd).a
    assert json.loads((tmp_path / "run" / "pipeline.json").read_text())["final"]["seeds"] == 3


def test_a_run_that_fails_later_is_marked_failed(tmp_path, tiny_task, teacher_dir,
                                                 monkeypatch, capsys):
    def broken(ctx, winner, supernet):
        raise RuntimeError("the final comparison broke")

    monkeypatch.setattr(run_module, "final_compare", broken)
    p = tiny_pipeline(tiny_task, teacher_dir).but(
        stages=[Stage1(controller=ControllerSpec(evaluations=2, population=2, sample_size=2),
                       kd_steps=1).dump()])
    pipe = tmp_path / "pipeline.json"
    pipe.write_text(p.to_json())
    out = tmp_path / "run"
    code = main(["run", "--pipeline", str(pipe), "--out", str(out), "--stages", "1",
                 "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert code == 1 and "the final comparison broke" in capsys.readouterr().err
    failed = json.loads((out / "FAILED.json").read_text())
    assert "RuntimeError: the final comparison broke" in failed["error"]
    assert (out / "stage1" / "stage.json").is_file() and not (out / "results.json").exists()
    with pytest.raises(Exception, match="already holds a run"):
        run_pipeline(p, out, stages=[1], progress=False)


PRIMITIVE = '''
import sympy
import torch

import mlpgraph


@mlpgraph.primitive(sympy=lambda a: sympy.tanh(a) ** 3, tags={"activation"}, flops=4)
def tanh_cubed(a):
    return torch.tanh(a) ** {power}
'''


def _csv(path, n: int, seed: int) -> str:
    from conftest import sentences

    texts, labels = sentences(n, seed)
    rows = ["sentence,label"] + [f'"{t}",{"positive" if y else "negative"}'
                                 for t, y in zip(texts, labels, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_user_files_and_a_user_primitive_end_to_end(tmp_path, teacher_dir):
    """A CSV task and a primitive defined in a file of its own, searched with: the primitive
    appears in evaluated candidates and the report; a resume after its definition changed is
    refused, naming it."""
    import subprocess
    import sys

    prim = tmp_path / "my_prims.py"
    prim.write_text(PRIMITIVE.replace("{power}", "3"))
    data = {"train_file": _csv(tmp_path / "train.csv", 200, 1),
            "test_file": _csv(tmp_path / "test.csv", 40, 3), "max_length": 16}
    ctl = ControllerSpec(kind="random", evaluations=8, proposals_per_step=2)
    p = tiny_pipeline("movie_binary", teacher_dir).but(
        data=data, primitives=[str(prim)], space={"base": "paper", "add": ["tanh_cubed"]},
        stages=[Stage1(controller=ctl, kd_steps=1).dump()], final={"task_steps": 2,
                                                                  "batch_size": 8, "seeds": 2},
        # spawned workers, as a user's run: the task and primitive must reach the search's
        # and the final comparison's workers alike
        executor={"kind": "local", "workers": 1})
    run = tmp_path / "run"
    res = run_pipeline(p, run, stages=[1], cache_dir=str(tmp_path / "cache"), progress=False,
                       log=lambda s: None)
    assert res.task["final_split"] == "test" and res.task["search_split"] == "validation"
    from searcher.journal import Journal

    with Journal.in_folder(run / "stage1") as j:
        rows = [r for r in j.read_all() if r.status == "evaluated"]
    uses = [r for r in rows if "tanh_cubed" in json.dumps(r.candidate)]
    assert uses, "the user primitive never reached an evaluated candidate"
    assert "tanh_cubed" in (run / "report" / "index.html").read_text()
    labels = json.loads((run / "winner" / "labels.json").read_text())
    assert labels == {"label_names": ["negative", "positive"]}  # the files' classes, sorted
    # resume with a changed definition: refused, naming the primitive (a fresh process)
    (run / "stage1" / "stage.json").unlink()
    prim.write_text(PRIMITIVE.replace("{power}", "3 * 1.0 + 0"))
    pipe = tmp_path / "pipeline.json"
    pipe.write_text((run / "pipeline.json").read_text())
    out = subprocess.run([sys.executable, "-m", "searcher.cli", "run", "--pipeline", str(pipe),
                          "--out", str(run), "--resume", "--stages", "1", "--quiet",
                          "--cache-dir", str(tmp_path / "cache")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "user primitive(s) tanh_cubed changed" in out.stderr
