"""The main job's last step: the winner against the standard FFN, over paired seeds.

Students, each trained with one recipe (``FinalSpec``: task KD over the whole training split
from the warmed-up supernet, the same learning rate, steps, label weight) for every seed:

- ``winner``: the searched candidate;
- ``baseline``: the standard FFN with the winner's per-layer ``s`` and ratio (the same
  parameter count; the same inherited initial weights for W1 and W2);
- ``equal_params`` (optional): a uniform standard FFN (every layer alike, as BERT) of about
  the winner's parameter count;
- ``fixed1``, ``fixed2``, ... (optional): given expressions on every layer at the winner's
  shape (e.g. the best MLP known before the search).

Seed ``k`` fixes the batch order and the dropout stream of every student alike (paired
seeds). Each run is a scorer call (:func:`distill.scoring.score`) in the run's executor, so the
students train in parallel; it reports the task metrics on the evaluation split and on the
test split (read here only), and the KD objective on the held-out fitness rows. Seed 0's
students are saved as model folders (``RUN_DIR/winner``, ``RUN_DIR/baseline``, ...). Each
finished training is kept in ``RUN_DIR/final/`` under a key of its candidate and whole recipe,
so ``--resume`` retrains only what is new (``--final-seeds 5`` after a 3-seed run trains
seeds 3 and 4).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from distill import (
    LatencySample,
    ScoreBudget,
    ScoreResult,
    Student,
    evaluate_teacher,
    interleaved_latency,
    load_teacher,
    metric,
    paired,
    resolve_device,
    verdict,
)
from mlpgraph import STANDARD_FFN, MLPLayer, parse

from .budget import LatencyMeter
from .candidate import Candidate
from .context import Context, scorer_of
from .records import CallStatus
from .results import (
    Comparison,
    Contrast,
    FinalRecord,
    Latency,
    LatencyComparison,
    LatencyConditions,
    MetricRef,
    ModelRow,
    TeacherRow,
)
from .workers import Outcome, Task, make_executor

SEED_STRIDE = 1009  # seed of run k: the pipeline's seed + k * SEED_STRIDE
BATCHES = (1, 32)  # the batch sizes whose latency the final step reports


def equal_params_ffn(winner: Candidate, hidden: int, max_stacks: int = 4) -> Candidate:
    """A uniform standard FFN (the same ``s`` and width in every layer) of about the
    winner's MLP parameter count (:meth:`mlpgraph.MLPLayer.params`, LayerNorms included),
    with the fewest stacks whose width fits the supernet."""
    ffn = parse(STANDARD_FFN)
    per_layer = sum(g.params(hidden) for g in winner.layers) / len(winner.layers)
    one = MLPLayer(ffn, 1, Fraction(1, hidden)).params(hidden)  # s = 1, k = 1
    per_k = MLPLayer(ffn, 1, Fraction(2, hidden)).params(hidden) - one  # each unit of k
    for s in range(1, max_stacks + 1):
        k = 1 + round((per_layer / s - one) / per_k)
        if 1 <= k <= hidden:
            break
    gene = MLPLayer(ffn, s, Fraction(max(1, k), hidden))
    return Candidate((gene,) * len(winner.layers))


def _budget(ctx: Context, supernet: Path, seed: int, folder: Path | None) -> ScoreBudget:
    fin = ctx.pipeline.final
    return ctx.score_budget(
        supernet, fin.task_steps, batch_size=fin.batch_size, lr=fin.lr,
        label_weight=fin.label_weight, train_slice=(0, 10**9), seed=seed, latency_repeats=0,
        common_noise=True, dropout=None, report_splits=(ctx.task.final_split,),
        save_to=None if folder is None else str(folder))


def _done_path(ctx: Context, name: str, cand: Candidate, budget: ScoreBudget) -> Path:
    """Where one finished (student, seed) training is kept: keyed by the candidate and the
    whole recipe, so a resumed run (e.g. with more ``final.seeds``) retrains only new ones."""
    fields = dataclasses.asdict(budget)
    # the file a path names is part of the recipe, not how the path is spelled (a symlink)
    for key in ("supernet", "save_to", "teacher"):
        if fields.get(key):
            fields[key] = str(Path(fields[key]).resolve())
    recipe = json.dumps([cand.id, fields], default=str, sort_keys=True)
    return ctx.run_dir / "final" / f"{name}-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}.json"


@dataclass(frozen=True)
class FinalCall:
    """The key of one final training: the model's name and the seed's index."""

    name: str
    seed_index: int


def _train_all(ctx: Context, models: dict[str, Candidate], supernet: Path
               ) -> dict[str, list[ScoreResult]]:
    p, hidden = ctx.pipeline, ctx.student_config.hidden
    seeds = [p.seed + k * SEED_STRIDE for k in range(p.final.seeds)]
    out: dict[str, list[ScoreResult]] = {name: [None] * len(seeds) for name in models}
    tasks, paths = [], {}
    for k, seed in enumerate(seeds):
        for name, cand in models.items():
            budget = _budget(ctx, supernet, seed, ctx.run_dir / name if k == 0 else None)
            call = FinalCall(name, k)
            paths[call] = path = _done_path(ctx, name, cand, budget)
            if path.is_file():
                out[name][k] = ScoreResult.from_dict(json.loads(path.read_text()))
            else:
                tasks.append(Task(call, cand.spec(hidden), budget))
    if not tasks:
        return out

    def keep(o: Outcome) -> None:  # as each finishes: a crash loses no finished training
        if o.status == CallStatus.OK:
            result = out[o.key.name][o.key.seed_index] = o.result
            paths[o.key].parent.mkdir(exist_ok=True)
            paths[o.key].write_text(json.dumps(result.to_dict()) + "\n")

    ex = p.executor
    with make_executor(ex.kind, scorer_of(p), workers=ex.workers, timeout=None,
                       address=ex.address) as executor:
        for o in executor.run(tasks, keep):
            if o.status != CallStatus.OK:
                raise RuntimeError(f"final KD of {o.key.name} (seed {o.key.seed_index}) "
                                   f"failed: {o.error}")
    return out


def _mean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.fmean(values)


def _row(role: str, results: list[ScoreResult], spec: Any, test: str) -> dict[str, Any]:
    """Means over seeds: ``eval`` (held-out split), ``test`` (the final split), ``kd``
    (the KD diagnostics on the fitness rows)."""
    diagnostics = sorted({k for r in results for k in r.metrics
                          if k.startswith("kd_") or k == "teacher_kl"})
    return {"role": role, "params": results[0].params,
            "diverged": any(r.diverged for r in results), "kd_steps": results[0].steps,
            "eval": {m: _mean([r.metrics.get(m) for r in results]) for m in spec.metric_names},
            "test": {m: _mean([r.splits.get(test, {}).get(m) for r in results])
                     for m in spec.metric_names},
            "kd": {k: _mean([r.metrics.get(k) for r in results]) for k in diagnostics},
            "per_seed": [r.to_dict() for r in results]}


def comparison(a: list[ScoreResult], b: list[ScoreResult], refs: list[MetricRef],
               names: tuple[str, str]) -> list[Comparison]:
    """Per metric: ``a`` minus ``b`` paired over seeds, the 95% interval and the verdict
    (metrics missing on some seed are left out)."""
    out = []
    for ref in refs:
        x = [(r.metrics if ref.split is None else r.splits.get(ref.split, {})).get(ref.name)
             for r in a]
        y = [(r.metrics if ref.split is None else r.splits.get(ref.split, {})).get(ref.name)
             for r in b]
        if any(v is None for v in (*x, *y)):
            continue
        up = metric(ref.name).higher_is_better
        pr = paired(x, y)
        out.append(Comparison(metric=ref, higher_is_better=up, a=x, b=y,
                              delta_mean=pr.delta_mean, ci95=pr.ci95, seeds=pr.n,
                              verdict=verdict(pr, ref.label, *names, higher_is_better=up)))
    return out


def _models(fin: Any, winner: Candidate, hidden: int) -> dict[str, Candidate]:
    """The students the final step trains: the winner, the FFN of its shape, optionally an
    FFN of its size and fixed expressions at its shape."""
    ffn = parse(STANDARD_FFN)
    models = {"winner": winner,
              "baseline": Candidate(tuple(MLPLayer(ffn, g.stacks, g.ratio)
                                          for g in winner.layers))}
    if fin.equal_params:
        models["equal_params"] = equal_params_ffn(winner, hidden)
    for i, expr in enumerate(fin.fixed):
        graph = parse(expr)
        models[f"fixed{i + 1}"] = Candidate(tuple(MLPLayer(graph, g.stacks, g.ratio)
                                                  for g in winner.layers))
    return models


def final_compare(ctx: Context, winner: Candidate, supernet: Path) -> FinalRecord:
    """Train the winner, the same-shape FFN (and the equal-parameter FFN) over the final seeds
    and compare them (module doc)."""
    fin, spec, hidden = ctx.pipeline.final, ctx.task, ctx.student_config.hidden
    models = _models(fin, winner, hidden)
    same = {n: next(m for m in models if models[m].id == c.id) for n, c in models.items()}
    runs = _train_all(ctx, {n: models[n] for n in dict.fromkeys(same.values())}, supernet)
    runs.update({n: runs[m] for n, m in same.items()})  # one model trained once
    test = spec.final_split
    refs = [MetricRef(name="kd_loss"), MetricRef(name="teacher_kl"),
            *(MetricRef(name=m, split=test) for m in spec.metric_names),
            *(MetricRef(name=m) for m in spec.metric_names)]
    flops = LatencyMeter(hidden, proxy="flops")
    latency, sample = _latencies(ctx, same)
    rows = {name: ModelRow(**_row(name, runs[name], spec, test), mlp_mflops=flops(cand),
                           expressions=[g.expr for g in cand.layers],
                           describe=cand.describe(), folder=str(ctx.run_dir / same[name]),
                           same_as=None if same[name] == name else same[name],
                           latency=latency[same[name]])
            for name, cand in models.items()}
    contrasts = [Contrast(other=other, comparisons=comparison(
        runs["winner"], runs[other], refs, ("winner", other)),
        latency=latency_comparison(sample, "winner", same[other]))
        for other in ["baseline", *(n for n in runs if n not in ("winner", "baseline"))]]
    (ctx.run_dir / "winner" / "candidate.json").write_text(winner.to_json() + "\n")
    return FinalRecord(
        splits={"eval": spec.search_split or "held-out train rows", "test": test},
        notes=list(spec.notes), metrics=list(spec.metric_names), seeds=fin.seeds,
        recipe=json.loads(json.dumps(dataclasses.asdict(_budget(ctx, supernet, 0, None)),
                                     default=str)),
        models=rows, contrasts=contrasts,
        teacher=TeacherRow(**_teacher_row(ctx), latency=latency["teacher"])
        if fin.teacher_test else None,
        latency=LatencyConditions(seq=sample.seq, device=sample.device,
                                  threads=sample.threads, rounds=len(sample.rounds["winner"][1]),
                                  load=sample.load))


def _latencies(ctx: Context, same: dict[str, str]
               ) -> tuple[dict[str, Latency], LatencySample]:
    """Every trained model's and the teacher's median forward time at batch 1 and 32,
    measured interleaved (:func:`distill.interleaved_latency`)."""
    teacher, _ = ctx.prepared()
    models = {n: Student.from_pretrained(ctx.run_dir / n) for n in dict.fromkeys(same.values())}
    if ctx.pipeline.final.teacher_test:
        models["teacher"] = load_teacher(teacher.tuned)
    sample = interleaved_latency(models, BATCHES, seq=ctx.task.max_length,
                                 device=resolve_device(ctx.pipeline.device))
    rows = {n: Latency(batch1_ms=sample.median(n, 1), batch32_ms=sample.median(n, 32))
            for n in models}
    return rows, sample


def latency_comparison(sample: LatencySample, a: str, b: str) -> list[LatencyComparison]:
    """``a``'s time relative to ``b``'s per batch size, paired over the rounds."""
    out = []
    for batch in BATCHES:
        ratios = [x / y for x, y in zip(sample.rounds[a][batch], sample.rounds[b][batch],
                                        strict=True)]
        pr = paired(ratios, [1.0] * len(ratios))
        lo, hi = pr.ci95
        head = (f"latency at batch {batch}: {a} takes {pr.delta_mean:+.1%} the time of {b} "
                f"(95% CI [{lo:+.1%}, {hi:+.1%}] over {pr.n} interleaved rounds)")
        if not pr.excludes_zero():
            tail = "no difference detected (the interval contains 0)"
        else:
            tail = f"{a} is {'faster' if pr.delta_mean < 0 else 'slower'}"
        out.append(LatencyComparison(batch=batch, change=pr.delta_mean, ci95=(lo, hi),
                                     rounds=pr.n, verdict=f"{head}: {tail}"))
    return out


def _teacher_row(ctx: Context) -> dict[str, Any]:
    """The fine-tuned teacher on the evaluation and test splits."""
    teacher, _ = ctx.prepared()
    row = evaluate_teacher(teacher.tuned, ctx.task, cache_dir=ctx.cache_dir)
    return {k: v for k, v in row.items() if k != "latency_ms"}


__all__ = ["comparison", "equal_params_ffn", "final_compare"]
