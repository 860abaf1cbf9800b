"""The main job behind ``efficientbert run``: assets -> teacher (fine-tuned once, cached) ->
teacher-output caches -> supernet warm-up -> coarse-to-fine search stages -> task KD of the
winner and of the standard FFN of the same shape -> test comparison -> run folder + report.

Honesty rules: candidates are scored on the ``heldout`` split (never trained on, never the
test split); the ``test`` split is read only in :func:`final_compare`. Every random choice
derives from ``Pipeline.seed``. Run folder layout::

    pipeline.json  student_config.json  results.json  report/index.html
    warmup/stage1/ (the warmed supernet + fit_dense)   warmup/stage3/ (re-warmed)
    stage1/journal.sqlite stage1/stage.json ...        winner/  baseline/ (model folders)
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock
    fcntl = None  # type: ignore[assignment]

import mlpgraph
from distill import assets as da
from distill import teacher as dt
from distill import teacher_cache as dtc
from distill import train as dtrain
from distill.data import get_task_spec, iter_unlabeled_text
from distill.encode import encode_split, encode_texts
from distill.losses import KDLoss, KDWeights
from distill.score import ScoreBudget, measure_latency, score
from distill.student import count_parameters
from distill.supernet import Supernet

from .budget import LatencyMeter, ParamCounter
from .candidate import Candidate
from .errors import JournalError, SearchError
from .journal import FILENAME
from .search import run_search
from .stages import (
    STANDARD_FFN,
    Constraints,
    Pipeline,
    StageSpec,
    WarmupSpec,
    default_base,
    derive_constraints,
    search_config,
    supernet_sampler,
)

RESULTS, PIPELINE, STUDENT = "results.json", "pipeline.json", "student_config.json"
FORMAT = "efficientbert.run/1"
Log = Callable[[str], None]
Bar = Callable[[Path, int, str], AbstractContextManager[Any]]  # (stage folder, total, title)


@dataclass(frozen=True)
class KDScorer:
    """``distill.score.score`` with ``threads`` torch threads (picklable for workers)."""

    threads: int = 1

    def __call__(self, spec: Any, budget: Any) -> Any:
        before = torch.get_num_threads()
        if before != self.threads:
            torch.set_num_threads(self.threads)
        try:
            return score(spec, budget)
        finally:  # inline scoring runs in the main process: leave its threads as they were
            if before != self.threads:
                torch.set_num_threads(before)


@dataclass
class Context:
    """What the steps of one run share."""

    pipeline: Pipeline
    run_dir: Path
    cache_dir: str | None = None
    backend: str = "local"
    address: str | None = None
    progress: bool = True
    log: Log = print
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    student_config: Any = None
    constraints: Constraints | None = None
    tuned: Path | None = None  # the fine-tuned teacher folder
    base_teacher: Path | None = None
    outputs: dict[str, Any] = field(default_factory=dict)  # "train", "unlabeled"
    search_bar: Bar = lambda folder, total, desc: nullcontext()  # progress while searching

    def timed(self, key: str, t0: float) -> float:
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0
        return self.timings[key]


# ------------------------------------------------------------------- preparation
def prepare(ctx: Context) -> None:
    """Assets, the fine-tuned teacher (reused when cached) and the teacher-output caches."""
    p, cache = ctx.pipeline, ctx.cache_dir
    t0 = time.perf_counter()
    da.fetch_assets(da.DEFAULT_ASSETS, cache, progress=ctx.progress)
    ctx.timed("assets", t0)
    t0 = time.perf_counter()
    reused = dt.is_finetuned(dt.finetuned_teacher_dir(p.task, cache_dir=cache)[0])
    ctx.log("teacher: " + ("reusing the cached fine-tuned teacher" if reused else
                           "fine-tuning the teacher once (cached for later runs)"))
    root = Path(cache).expanduser() if cache else da.default_cache_dir()
    with cache_lock(root):
        ctx.tuned = dt.finetune_teacher(p.task, cache_dir=cache, progress=ctx.progress)
    ctx.base_teacher = da.ensure_asset("teacher", cache)
    ctx.timed("teacher", t0)
    ctx.info["teacher"] = {"folder": str(ctx.tuned), "reused": reused,
                           "heldout": dt.teacher_info(ctx.tuned).get("metrics", {}).get("heldout")}
    spec = get_task_spec(p.task)
    ctx.student_config = p.student.to_config(spec.num_labels, spec.is_regression)
    ctx.constraints = derive_constraints(p, ctx.student_config)
    layers = sorted(set(KDLoss.for_models(ctx.student_config, _dims(ctx.tuned)).layer_map
                        .values()))
    t0, since = time.perf_counter(), time.time()
    max_len = dt.default_max_length(p.task)
    ds = dt.load_task(p.task, cache)
    train = encode_split(ds[spec.train_split], dt.load_tokenizer(ctx.tuned), spec, max_len)
    kw = {"hidden_layers": [0, *layers], "attention_layers": layers, "cache_dir": cache,
          "progress": ctx.progress}
    held_out = {t for split in ("heldout", "test", *spec.eval_splits, *spec.test_splits)
                if split in ds for col in spec.text_columns for t in ds[split][col]}
    texts = [t for t in iter_unlabeled_text(cache, include_austen=False,
                                            exclude_movie_eval=True) if t not in held_out]
    limit = p.unlabeled_limit
    if limit and limit < len(texts):  # evenly spaced, so every source is represented
        texts = [texts[i * len(texts) // limit] for i in range(limit)]
    unlabeled = encode_texts(dt.load_tokenizer(ctx.base_teacher), texts, max_length=max_len)
    with cache_lock(root):  # never two processes writing one cache folder
        ctx.outputs["train"] = dtc.cache_teacher_outputs(ctx.tuned, train,
                                                        name=f"{spec.name}-train", **kw)
        ctx.outputs["unlabeled"] = dtc.cache_teacher_outputs(ctx.base_teacher, unlabeled,
                                                            name="unlabeled", **kw)
    new = [o.folder.name for o in ctx.outputs.values()
           if (o.folder / "meta.json").stat().st_mtime >= since]
    ctx.timed("teacher_output_caches", t0)
    ctx.info["caches"] = {"reused": not new, "created": new,
                          "unlabeled_sentences": len(texts), "train_examples": len(train)}


@contextmanager
def cache_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on the cache root (POSIX ``flock``; a no-op elsewhere)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".efficientbert.lock", "w") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _dims(folder: Path) -> Any:
    from transformers import AutoConfig

    with da.offline_env():
        return dt.teacher_dims(AutoConfig.from_pretrained(str(folder), local_files_only=True))


# ----------------------------------------------------------------------- warm-up
def warm_supernet(ctx: Context, spec: WarmupSpec, out: Path, *, start: Path | None,
                  expressions: list[str], label: str) -> Path:
    """Warm up (or re-warm, from ``start``) the supernet; reuse a finished ``out``."""
    if (out / "warmup.json").is_file():
        ctx.log(f"{label}: reusing the warmed supernet at {out}")
        return out
    p, t0 = ctx.pipeline, time.perf_counter()
    torch.manual_seed(p.seed)
    if start is None:
        net = Supernet(ctx.student_config, seed=p.seed)
    else:
        net = Supernet.from_pretrained(start)
    net.add_pools(expressions)
    counter = ParamCounter.from_student_config(ctx.student_config)
    lo, hi = ctx.constraints.param_window
    sampler = supernet_sampler(mlpgraph.SPACES[p.space], expressions, net.hidden,
                               lambda c: lo <= counter(c) <= hi)
    phases = [("general", spec.general_steps, spec.general_lr, KDWeights.pretraining(),
               ctx.base_teacher, ctx.outputs["unlabeled"]),
              ("task", spec.task_steps, spec.task_lr, KDWeights.task(), ctx.tuned,
               ctx.outputs["train"])]
    fit_state, kd, history = None, None, {}
    for name, steps, lr, weights, teacher, outputs in phases:
        if steps <= 0:
            continue
        kd = KDLoss.for_models(net.config, _dims(teacher), weights=weights)
        if fit_state is not None:
            kd.fit_dense.load_state_dict(fit_state)
        elif start is not None:
            dtrain.load_fit_dense(kd, start)
        elif name == "general":
            dt.init_student_from_teacher(net.model, dt.load_teacher(ctx.base_teacher), kd.fit_dense)
        res = dtrain.distill(net, outputs, kd, dtrain.TrainConfig(
            max_steps=steps, batch_size=spec.batch_size, lr=lr, seed=p.seed,
            progress=ctx.progress, desc=f"{label} {name} KD", checkpoint_dir=out / f"ckpt-{name}",
            checkpoint_every=100), sampler=sampler)
        if res.diverged:
            raise SearchError(f"{label}: {name} KD of the supernet diverged at step "
                              f"{res.diverged_step}; lower warmup {name}_lr (was {lr})")
        fit_state = kd.fit_dense.state_dict()
        history[name] = {"steps": res.steps, "final_loss": res.final_loss,
                         "seconds": res.wall_seconds}
    net.save_pretrained(out)
    if kd is not None:
        dtrain.save_fit_dense(kd, out)
    for name in ("general", "task"):
        shutil.rmtree(out / f"ckpt-{name}", ignore_errors=True)
    (out / "warmup.json").write_text(json.dumps({
        "spec": spec.__dict__, "expressions": expressions, "start": str(start),
        "phases": history, "seconds": time.perf_counter() - t0}, indent=2) + "\n")
    return out


# ------------------------------------------------------------------------ stages
def run_stage(ctx: Context, spec: StageSpec, base: Candidate, supernet: Path) -> dict[str, Any]:
    """One search stage in ``RUN_DIR/stage<n>`` (resumed if its journal exists)."""
    p, folder = ctx.pipeline, ctx.run_dir / f"stage{spec.stage}"
    done = folder / "stage.json"
    if done.is_file():
        ctx.log(f"stage {spec.stage}: already finished, reusing {done}")
        return json.loads(done.read_text())
    budget = ScoreBudget(
        supernet=str(supernet), kd_steps=spec.kd_steps, batch_size=p.scoring.batch_size,
        lr=p.scoring.lr, train_slice=tuple(p.scoring.train_slice),
        heldout_size=p.scoring.heldout_size, seed=p.seed, no_training=spec.no_training,
        task=p.task, teacher=str(ctx.tuned), cache_dir=ctx.cache_dir, latency_repeats=5)
    cfg = search_config(p, spec, base=base, student_config=ctx.run_dir / STUDENT,
                        constraints=ctx.constraints, score_budget=budget,
                        backend=ctx.backend, address=ctx.address)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "search_config.json").write_text(json.dumps(cfg.to_dict(), indent=2,
                                                          default=str) + "\n")
    t0 = time.perf_counter()
    with ctx.search_bar(folder, spec.evaluations, f"stage {spec.stage} search"):
        result = run_search(cfg, KDScorer(1), folder, resume=(folder / FILENAME).exists())
    if not result.best:
        raise SearchError(f"stage {spec.stage}: no candidate was scored successfully "
                          f"({result.stopped}); the errors are in {folder / FILENAME}")
    top = result.best[0]
    out = {"stage": spec.stage, "seconds": time.perf_counter() - t0,
           "evaluations": result.evaluations, "proposals": result.proposals,
           "best_score": top.score, "winner": top.candidate.to_dict(),
           "describe": top.candidate.describe(), "params": top.params,
           "latency_ms": (top.evaluations[-1].latency_ms if top.evaluations else None),
           "base": None if spec.stage == 1 else base.to_dict(),
           "base_score": None if spec.stage == 1 else next(
               (e.score for e in result.history if e.candidate.id == base.id), None),
           "dedupe": result.dedupe.to_dict(), "stopped": result.stopped,
           "supernet": str(supernet), "constraints": result.constraints,
           "top": [e.to_dict() for e in result.best[:5]]}
    done.write_text(json.dumps(out, indent=2) + "\n")
    return out


# ------------------------------------------------------------------------- final
def final_compare(ctx: Context, winner: Candidate, supernet: Path) -> dict[str, Any]:
    """Task KD of the winner and of the standard FFN with the same per-layer ``s`` and
    ratio (same parameters), both inheriting ``supernet``; metrics on heldout and TEST."""
    p, fin = ctx.pipeline, ctx.pipeline.final
    spec = get_task_spec(p.task)
    tok = dt.load_tokenizer(ctx.tuned)
    ds = dt.load_task(p.task, ctx.cache_dir)
    enc = {s: encode_split(ds[s], tok, spec, dt.default_max_length(p.task))
           for s in ("heldout", "test")}  # the only place the test split is read
    net = Supernet.from_pretrained(supernet)
    layers = list(winner.spec(net.hidden).layers)
    models = {"winner": layers, "baseline": [(STANDARD_FFN, s, k) for _, s, k in layers]}
    flops = LatencyMeter(net.hidden, proxy="flops")
    rows: dict[str, Any] = {}
    students = {}
    for name, specs in models.items():
        torch.manual_seed(p.seed)
        student = students[name] = net.extract(specs, mode="copy")
        kd = KDLoss.for_models(student.config, _dims(ctx.tuned), weights=KDWeights.task())
        dtrain.load_fit_dense(kd, supernet)
        res = dtrain.distill(student, ctx.outputs["train"], kd, dtrain.TrainConfig(
            max_steps=fin.task_steps, batch_size=fin.batch_size, lr=fin.lr, seed=p.seed,
            progress=ctx.progress, desc=f"final KD {name}"))
        metrics = {s: dtrain.evaluate(student, e, spec.metric_names,
                                      is_regression=spec.is_regression) for s, e in enc.items()}
        folder = ctx.run_dir / name
        student.save_pretrained(folder)
        dtrain.save_fit_dense(kd, folder)
        tok.save_pretrained(str(folder))
        cand = Candidate.from_dict({"layers": [{"expr": e, "stacks": st, "ratio": g.ratio}
                                               for (e, st, _), g in zip(specs, winner.layers,
                                                                        strict=True)]})
        rows[name] = {"params": count_parameters(student.config)["total"],
                      "mlp_mflops": flops(cand), "diverged": res.diverged,
                      "kd_steps": res.steps, "final_loss": res.final_loss,
                      "expressions": [s[0] for s in specs], "folder": str(folder), **metrics}
    times: dict[str, list[float]] = {n: [] for n in students}
    for _ in range(5):  # interleaved rounds: machine load hits both models alike
        for name, student in students.items():
            times[name].append(measure_latency(student, repeats=5))
    for name in students:
        rows[name]["latency_ms"] = statistics.median(times[name])
    (ctx.run_dir / "winner" / "candidate.json").write_text(winner.to_json() + "\n")
    if fin.teacher_test:
        teacher = dt.load_teacher(ctx.tuned)
        rows["teacher"] = {"params": sum(t.numel() for t in teacher.parameters()),
                           "latency_ms": measure_latency(teacher), "folder": str(ctx.tuned),
                           **{s: dtrain.evaluate(teacher, e, spec.metric_names,
                                          is_regression=spec.is_regression)
                              for s, e in enc.items()}}
    return rows


# ---------------------------------------------------------------------- pipeline
def _check_folder(pipeline: Pipeline, run_dir: Path, resume: bool) -> None:
    stored = run_dir / PIPELINE
    if stored.is_file() and not resume:
        raise JournalError(f"{run_dir} already holds a run; pass --resume to continue it or "
                           "choose another --run-dir")
    if stored.is_file():
        old = json.loads(stored.read_text())
        new = json.loads(pipeline.to_json())
        diff = sorted(k for k in set(old) | set(new)
                      if k not in ("workers", "threads") and old.get(k) != new.get(k))
        if diff:
            raise JournalError(f"{stored} was written with other settings ({', '.join(diff)} "
                               "differ); resume with the same preset/seed or use a new --run-dir")


def run_pipeline(pipeline: Pipeline, run_dir: str | Path, *, stages: list[int] | None = None,
                 resume: bool = False, backend: str = "local", address: str | None = None,
                 cache_dir: str | None = None, base: Candidate | None = None,
                 progress: bool = True, log: Log = print, report: bool = True,
                 search_bar: Bar | None = None) -> dict[str, Any]:
    """Run the whole job (module doc); return what ``RUN_DIR/results.json`` holds."""
    pipeline.validate()
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise SearchError("--backend ray needs Ray: pip install 'efficientbert[ray]' (or use "
                          "--backend local)")
    run_dir = Path(run_dir)
    _check_folder(pipeline, run_dir, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / PIPELINE).write_text(pipeline.to_json())
    usable = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else os.cpu_count() or 1)
    torch.set_num_threads(max(1, min(pipeline.threads, usable)))
    start = time.perf_counter()
    ctx = Context(pipeline, run_dir, cache_dir, backend, address, progress, log)
    if search_bar is not None:
        ctx.search_bar = search_bar
    prepare(ctx)
    ctx.student_config.save(run_dir / STUDENT)
    t0 = time.perf_counter()
    first = warm_supernet(ctx, pipeline.warmup, run_dir / "warmup" / "stage1", start=None,
                          expressions=[STANDARD_FFN] * pipeline.student.num_layers,
                          label="warm-up")
    ctx.timed("warmup", t0)
    current, results = first, []
    chosen = pipeline.select(stages or [s.stage for s in pipeline.stages])
    for spec in chosen:
        prev = _previous_winner(run_dir, spec.stage)
        stage_base = prev or base or default_base(pipeline)
        if spec.stage > 1 and prev is None:
            log(f"stage {spec.stage}: no earlier winner in {run_dir}; starting from "
                f"{stage_base.describe()}")
        t0 = time.perf_counter()
        if spec.rewarm is not None:
            current = warm_supernet(ctx, spec.rewarm, run_dir / "warmup" / f"stage{spec.stage}",
                                    start=current, label=f"re-warm {spec.stage}",
                                    expressions=[g.expr for g in stage_base.layers])
            ctx.timed(f"rewarm{spec.stage}", t0)
        t0 = time.perf_counter()
        results.append(run_stage(ctx, spec, stage_base, current))
        ctx.timed(f"stage{spec.stage}", t0)
        r = results[-1]
        log(f"stage {spec.stage}: best held-out score {r['best_score']:.4f} after "
            f"{r['evaluations']} evaluations: {r['describe']}")
    winner = Candidate.from_dict(results[-1]["winner"])
    t0 = time.perf_counter()
    final = final_compare(ctx, winner, first if pipeline.final.init == "warmup" else current)
    ctx.timed("final", t0)
    ctx.timings["total"] = time.perf_counter() - start
    one_time = sum(ctx.timings.get(k, 0.0) for k in ("assets", "teacher",
                                                      "teacher_output_caches"))
    ctx.timings["job_excluding_one_time"] = ctx.timings["total"] - one_time
    out = {"format": FORMAT, "run_dir": str(run_dir), "pipeline": pipeline.to_dict(),
           "stages_run": [s.stage for s in chosen], "constraints": ctx.constraints.to_dict(),
           "stages": results, "final": final, "timings": ctx.timings, **ctx.info,
           "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "workers": pipeline.workers}}
    (run_dir / RESULTS).write_text(json.dumps(out, indent=2, default=str) + "\n")
    if report:
        from .report import write_report

        t0 = time.perf_counter()
        out["report"] = str(write_report(run_dir))
        ctx.timed("report", t0)
        (run_dir / RESULTS).write_text(json.dumps(out, indent=2, default=str) + "\n")
    return out


def _previous_winner(run_dir: Path, stage: int) -> Candidate | None:
    for n in range(stage - 1, 0, -1):
        f = run_dir / f"stage{n}" / "stage.json"
        if f.is_file():
            return Candidate.from_dict(json.loads(f.read_text())["winner"])
    return None
