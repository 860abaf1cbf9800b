"""The main job behind ``efficientbert run``: assets -> teacher (fine-tuned once, cached) ->
teacher-output caches -> supernet warm-up -> coarse-to-fine search stages -> task KD of the
winner and of the standard FFN of the same shape -> test comparison -> run folder + report.

Honesty rules: candidates are scored on held-out rows (never trained on, never the test
split); the test split is read only by :mod:`searcher.final`. Every random choice derives from
``Pipeline.seed``. Bad input is refused before anything is loaded or written
(:func:`preflight`); a run that fails later leaves ``FAILED.json`` with the reason. Run folder::

    pipeline.json  student_config.json  results.json  report/index.html  [FAILED.json]
    warmup/stage1/ (the warmed supernet + fit_dense)   warmup/stage3/ (re-warmed)
    stage1/journal.sqlite stage1/stage.json ...        winner/  baseline/ (model folders)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from distill import ScoreBudget, TaskSpec, teacher_dims

from .budget import derive_constraints
from .candidate import Candidate
from .config import ConstraintSpec, SearchConfig
from .context import Bar, Context, Log, scorer_of, task_of
from .errors import RunFolderError, SearchConfigError, SearchError
from .fidelity import stage_winner
from .final import final_compare
from .journal import FILENAME
from .plugins import plugin_primitives
from .prepare import prepare
from .records import SearchResult
from .results import RunResults, StageRecord, load_stage
from .run_config import Pipeline, StageBase
from .search import run_search
from .warmup import warm_supernet

RESULTS, PIPELINE, STUDENT, FAILED = ("results.json", "pipeline.json", "student_config.json",
                                      "FAILED.json")


# ------------------------------------------------------------------- before any work
def preflight(pipeline: Pipeline, run_dir: Path, *, resume: bool, stages: list[int],
              base: Candidate | None = None, cache_dir: str | None = None
              ) -> tuple[TaskSpec, Any, ConstraintSpec, list[str]]:
    """Check everything that can be checked without loading a model or writing a file:
    the task, the run folder, the stages, the constraints and every stage's search
    configuration. Returns the task, the student config and the constraints."""
    task = task_of(pipeline, cache_dir)
    if pipeline.teacher is not None and not (Path(pipeline.teacher) / "config.json").is_file():
        raise SearchConfigError("teacher", f"{pipeline.teacher} is not a model folder (no "
                                "config.json); give a folder saved by save_pretrained")
    check_folder(pipeline, run_dir, resume)
    pipeline.select(stages)  # the default teacher (all-MiniLM-L6-v2) has BERT's 30,522 tokens
    if pipeline.executor.kind == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise SearchConfigError("executor.kind", "Ray is not installed: pip install "
                                    "'efficientbert[ray]' (or use the local executor)")
    vocab = 30522 if pipeline.teacher is None else teacher_dims(pipeline.teacher).vocab_size
    student = pipeline.student.to_config(task.num_labels, task.is_regression, vocab)
    constraints, seeds = derive_constraints(pipeline, student)
    start = base or pipeline.base_candidate()
    for spec in pipeline.stages:
        search_config(pipeline, spec, start, constraints, None)
    return task, student, constraints, seeds


RESUMABLE = ("name", "executor", "threads", "final")  # pipeline fields a resumed run may
#   change: the name is a label; the final step keeps each finished training under a key of
#   its recipe (searcher.final)


def check_folder(pipeline: Pipeline, run_dir: Path, resume: bool) -> None:
    """A new run needs a new (or empty) folder; ``--resume`` needs a folder holding a run
    of the same settings."""
    stored = run_dir / PIPELINE
    if resume and not stored.is_file():
        raise RunFolderError(f"--resume: {run_dir} holds no run (no {PIPELINE}); start a new run "
                           "with this --out, or give the folder of an earlier run")
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        what = "a run" if stored.is_file() else "other files"
        raise RunFolderError(f"{run_dir} already holds {what}; pass --resume to continue a run "
                           "or choose another --out")
    if resume:  # compared as validated pipelines: a field added since takes its default
        old = Pipeline.from_json(stored.read_text(), str(stored)).dump()
        new = pipeline.dump()
        diff = sorted(k for k in set(old) | set(new)
                      if k not in RESUMABLE and old.get(k) != new.get(k))
        if diff:
            raise RunFolderError(f"{stored} was written with other settings ({', '.join(diff)} "
                               "differ); resume with the same preset/seed or use a new --out")


def search_config(pipeline: Pipeline, spec: StageBase, base: Candidate | None,
                  constraints: ConstraintSpec, budget: ScoreBudget | None) -> SearchConfig:
    """The search of one stage: the pipeline's pieces composed, nothing copied by hand."""
    task = task_of(pipeline)
    return SearchConfig(
        primitives=plugin_primitives(pipeline.plugins),
        space=pipeline.space, num_layers=pipeline.student.num_layers, stage=spec.stage,
        base=None if spec.stage == 1 or base is None else base.to_dict(),
        constraints=constraints, controller=spec.controller, fidelity=spec.fidelity,
        executor=pipeline.executor, rank_by=pipeline.score.rank_by or task.metric_names[0],
        tie_break=pipeline.score.tie_break, seed=pipeline.seed * 100 + spec.stage,
        score_budget=budget)


# ------------------------------------------------------------------------ stages
def run_stage(ctx: Context, spec: StageBase, base: Candidate, supernet: Path) -> StageRecord:
    """One search stage in ``RUN_DIR/stage<n>`` (resumed if its journal exists)."""
    p, folder = ctx.pipeline, ctx.run_dir / f"stage{spec.stage}"
    done = folder / "stage.json"
    if done.is_file():
        ctx.log(f"stage {spec.stage}: already finished, reusing {done}")
        return load_stage(done)
    budget = ctx.score_budget(supernet, spec.kd_steps, no_training=spec.no_training)
    cfg = search_config(p, spec, base, ctx.constraints, budget)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "search_config.json").write_text(json.dumps(cfg.dump(), indent=2) + "\n")
    t0 = time.perf_counter()
    with ctx.search_bar(folder, spec.controller.evaluations, f"stage {spec.stage} search"):
        result = run_search(cfg, scorer_of(p), folder, resume=(folder / FILENAME).exists())
    if not result.best:
        raise SearchError(f"stage {spec.stage}: no candidate was scored successfully "
                          f"({result.stopped}); the errors are in {folder / FILENAME}")
    record = stage_record(result, cfg, base, supernet, time.perf_counter() - t0)
    if record.fallback is not None:
        ctx.log(f"stage {spec.stage}: {record.fallback}")
    done.write_text(json.dumps(record.dump(), indent=2) + "\n")
    return record


def stage_record(result: SearchResult, cfg: SearchConfig, base: Candidate | None,
                 supernet: Path | str, seconds: float) -> StageRecord:
    """What a finished stage's search hands on and reports (``stage.json``)."""
    top = result.best[0]
    winner, params, fallback = stage_winner(top, cfg)
    first = cfg.stage == 1 or base is None
    return StageRecord(
        stage=cfg.stage, seconds=seconds, rank_by=cfg.rank_by,
        evaluations=result.evaluations, proposals=result.proposals, best_score=top.score,
        best_rung=top.fitness[0], confirmed=top.confirmed, control=top.control,
        delta=top.delta, fallback=fallback, searched=top.candidate.describe(),
        winner=winner.to_dict(), describe=winner.describe(), params=params,
        latency_ms=top.result.latency_ms if top.result else None,
        base=None if first else base.to_dict(),
        base_score=None if first else next(
            (e.score for e in result.history if e.candidate.id == base.id), None),
        dedupe=result.dedupe.to_dict(), stopped=result.stopped, supernet=str(supernet),
        constraints=result.constraints, top=[e.to_dict() for e in result.best[:5]])


def _previous_winner(run_dir: Path, stage: int) -> Candidate | None:
    for n in range(stage - 1, 0, -1):
        f = run_dir / f"stage{n}" / "stage.json"
        if f.is_file():
            return Candidate.from_dict(load_stage(f).winner)
    return None


# ---------------------------------------------------------------------- the job
def run_pipeline(pipeline: Pipeline, run_dir: str | Path, *, stages: list[int] | None = None,
                 resume: bool = False, cache_dir: str | None = None,
                 base: Candidate | None = None, progress: bool = True, log: Log = print,
                 report: bool = True, search_bar: Bar | None = None,
                 supernet: Path | None = None) -> RunResults:
    """Run the whole job (module doc); return what ``RUN_DIR/results.json`` holds.

    ``supernet``: a warmed-up supernet folder (``warmup/stage1`` of an earlier run with the
    same student) to start from instead of warming one up. Raises before creating
    ``run_dir`` when the input is bad; a failure after that writes ``RUN_DIR/FAILED.json``
    (the error) and re-raises."""
    if supernet is not None and not (Path(supernet) / "warmup.json").is_file():
        raise SearchConfigError("supernet", f"{supernet} is not a finished warm-up (no "
                                "warmup.json); give the warmup/stage1 folder of an earlier run")
    run_dir = Path(run_dir)
    numbers = stages or [s.stage for s in pipeline.stages]
    task, student, constraints, seeds = preflight(pipeline, run_dir, resume=resume,
                                                  stages=numbers, base=base,
                                                  cache_dir=cache_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FAILED).unlink(missing_ok=True)
    ctx = Context(pipeline, run_dir, task, student, constraints, seeds, cache_dir, progress,
                  log)
    if search_bar is not None:
        ctx.search_bar = search_bar
    try:
        out = _run(ctx, numbers, base, supernet)
    except BaseException as e:
        (run_dir / FAILED).write_text(json.dumps({
            "error": f"{type(e).__name__}: {e}", "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "resume": "fix the cause, then run again with --resume"}, indent=2) + "\n")
        raise
    if report:
        from .report import write_report

        t0 = time.perf_counter()
        try:
            out.report = str(write_report(run_dir))
        except Exception as e:  # noqa: BLE001 - the results stand; the report can be redone
            out.report_error = f"{type(e).__name__}: {e}"
            log(f"warning: the report failed ({out.report_error}); the results are in "
                f"{run_dir / RESULTS}; retry with `efficientbert report {run_dir}`")
        ctx.timed("report", t0)
        _write_results(run_dir, out)
    return out


def _run(ctx: Context, numbers: list[int], base: Candidate | None,
         supernet: Path | None) -> RunResults:
    pipeline, run_dir = ctx.pipeline, ctx.run_dir
    (run_dir / PIPELINE).write_text(pipeline.to_json())
    import torch

    usable = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else os.cpu_count() or 1)
    torch.set_num_threads(max(1, min(pipeline.threads, usable)))
    start = time.perf_counter()
    prepare(ctx)
    ctx.student_config.save(run_dir / STUDENT)
    t0 = time.perf_counter()
    ffn = pipeline.base_candidate().layers[0].graph
    first = Path(supernet) if supernet is not None else warm_supernet(
        ctx, pipeline.warmup, run_dir / "warmup" / "stage1", start=None,
        graphs=[ffn] * pipeline.student.num_layers, label="warm-up")
    ctx.timed("warmup", t0)
    current, results = first, []
    chosen = pipeline.select(numbers)
    for spec in chosen:
        prev = _previous_winner(run_dir, spec.stage)
        stage_base = prev or base or pipeline.base_candidate()
        if spec.stage > 1 and prev is None:
            ctx.log(f"stage {spec.stage}: no earlier winner in {run_dir}; starting from "
                    f"{stage_base.describe()}")
        t0 = time.perf_counter()
        if spec.rewarm is not None:
            current = warm_supernet(ctx, spec.rewarm, run_dir / "warmup" / f"stage{spec.stage}",
                                    start=current, label=f"re-warm {spec.stage}",
                                    graphs=[g.graph for g in stage_base.layers])
            ctx.timed(f"rewarm{spec.stage}", t0)
        t0 = time.perf_counter()
        results.append(run_stage(ctx, spec, stage_base, current))
        ctx.timed(f"stage{spec.stage}", t0)
        r = results[-1]
        ctx.log(f"stage {spec.stage}: best held-out {r.rank_by} {r.best_score:.4f} after "
                f"{r.evaluations} evaluations: {r.searched}"
                + (f"; hands on {r.handed_on}" if r.handed_on else ""))
    winner = Candidate.from_dict(results[-1].winner)
    t0 = time.perf_counter()
    final = final_compare(ctx, winner, first if pipeline.final.init == "warmup" else current)
    ctx.timed("final", t0)
    ctx.timings["total"] = time.perf_counter() - start
    one_time = sum(ctx.timings.get(k, 0.0) for k in ("assets", "teacher",
                                                      "teacher_output_caches"))
    ctx.timings["job_excluding_one_time"] = ctx.timings["total"] - one_time
    out = RunResults(
        run_dir=str(run_dir), pipeline=pipeline.dump(), stages_run=[s.stage for s in chosen],
        constraints={**ctx.constraints.dump(), "window_seeds": ctx.window_seeds},
        stages=results, final=final, timings=ctx.timings, **ctx.info,
        machine={"cpus": os.cpu_count(), "torch": torch.__version__,
                 "threads": torch.get_num_threads(), "workers": pipeline.executor.workers})
    _write_results(run_dir, out)
    return out


def _write_results(run_dir: Path, results: RunResults) -> None:
    (run_dir / RESULTS).write_text(json.dumps(results.dump(), indent=2) + "\n")
