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
seeds). Each run is a scorer call (:func:`distill.score.score`) in the run's executor, so the
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
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.encode import encode_split
from distill.pipeline import evaluate_splits
from distill.result import ScoreResult, higher_is_better
from distill.score import ScoreBudget, measure_latency
from distill.stats import paired, verdict
from distill.student import Student
from distill.teacher import load_task, load_teacher, load_tokenizer
from mlpgraph import parse

from .budget import LatencyMeter
from .candidate import Candidate, LayerGene
from .config import STANDARD_FFN
from .workers import Outcome, Task, make_executor

if TYPE_CHECKING:
    from .run import Context

SEED_STRIDE = 1009  # seed of run k: the pipeline's seed + k * SEED_STRIDE


def equal_params_ffn(winner: Candidate, hidden: int, max_stacks: int = 4) -> Candidate:
    """A uniform standard FFN (the same ``s`` and width in every layer) of about the
    winner's MLP parameter count, with the fewest stacks whose width fits the supernet."""
    ffn = parse(STANDARD_FFN)
    per_layer = sum(g.stacks * (2 * hidden * g.d_inner(hidden) + g.d_inner(hidden) + hidden)
                    for g in winner.layers) / len(winner.layers)
    for s in range(1, max_stacks + 1):
        k = round((per_layer / s - hidden) / (2 * hidden + 1))
        if 1 <= k <= hidden:
            break
    gene = LayerGene(ffn, s, Fraction(max(1, k), hidden))
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


def _train_all(ctx: Context, models: dict[str, Candidate], supernet: Path
               ) -> dict[str, list[ScoreResult]]:
    from .run import scorer_of

    p, hidden = ctx.pipeline, ctx.student_config.hidden
    seeds = [p.seed + k * SEED_STRIDE for k in range(p.final.seeds)]
    out: dict[str, list[ScoreResult]] = {name: [None] * len(seeds) for name in models}
    tasks, paths = [], {}
    for k, seed in enumerate(seeds):
        for name, cand in models.items():
            budget = _budget(ctx, supernet, seed, ctx.run_dir / name if k == 0 else None)
            paths[(name, k)] = path = _done_path(ctx, name, cand, budget)
            if path.is_file():
                out[name][k] = ScoreResult.from_dict(json.loads(path.read_text()))
            else:
                tasks.append(Task((name, k), cand.spec(hidden), budget))
    if not tasks:
        return out

    def keep(o: Outcome) -> None:  # as each finishes: a crash loses no finished training
        if o.status == "ok":
            result = out[o.key[0]][o.key[1]] = ScoreResult.coerce(o.result)
            paths[o.key].parent.mkdir(exist_ok=True)
            paths[o.key].write_text(json.dumps(result.to_dict()) + "\n")

    ex = p.executor
    with make_executor(ex.kind, scorer_of(p), workers=ex.workers, timeout=None,
                       address=ex.address) as executor:
        for o in executor.run(tasks, keep):
            if o.status != "ok":
                raise RuntimeError(f"final KD of {o.key[0]} (seed {o.key[1]}) failed: {o.error}")
    return out


def _row(results: list[ScoreResult], spec: Any, test: str) -> dict[str, Any]:
    """Means over seeds, per role: ``eval`` (held-out split), ``test``, ``kd`` (fitness)."""
    def mean(key: str) -> float | None:
        vals = [r.metrics.get(key) for r in results]
        return None if any(v is None for v in vals) else statistics.fmean(vals)

    kd_keys = sorted({k for r in results for k in r.metrics
                      if k.startswith("kd_") or k == "teacher_kl"})
    return {"params": results[0].params, "diverged": any(r.diverged for r in results),
            "kd_steps": results[0].steps,
            "eval": {m: mean(m) for m in spec.metric_names},
            "test": {m: mean(f"{test}/{m}") for m in spec.metric_names},
            "kd": {k: mean(k) for k in kd_keys},
            "per_seed": [r.to_dict() for r in results]}


def comparison(a: list[ScoreResult], b: list[ScoreResult], metrics: list[str],
               names: tuple[str, str]) -> dict[str, Any]:
    """``final.comparison.<metric>``: per-seed lists, mean difference, 95% CI, verdict."""
    out = {}
    for m in metrics:
        x, y = [r.metrics.get(m) for r in a], [r.metrics.get(m) for r in b]
        if any(v is None for v in (*x, *y)):
            continue
        pr = paired(x, y)
        metric = m.split("/")[-1]
        out[m] = {names[0]: x, names[1]: y, "delta_mean": pr.delta_mean, "ci95": list(pr.ci95),
                  "seeds": pr.n, "verdict": verdict(pr, m, *names,
                                                    higher_is_better=higher_is_better(metric))}
    return out


def final_compare(ctx: Context, winner: Candidate, supernet: Path) -> dict[str, Any]:
    """Train the winner, the same-shape FFN (and the equal-parameter FFN) over the final seeds
    and compare them (module doc)."""
    fin, spec, hidden = ctx.pipeline.final, ctx.task, ctx.student_config.hidden
    ffn = parse(STANDARD_FFN)
    models = {"winner": winner,
              "baseline": Candidate(tuple(LayerGene(ffn, g.stacks, g.ratio)
                                          for g in winner.layers))}
    if fin.equal_params:
        models["equal_params"] = equal_params_ffn(winner, hidden)
    for i, expr in enumerate(fin.fixed):
        graph = parse(expr)
        models[f"fixed{i + 1}"] = Candidate(tuple(LayerGene(graph, g.stacks, g.ratio)
                                                  for g in winner.layers))
    same = {n: next(m for m in models if models[m].id == c.id) for n, c in models.items()}
    runs = _train_all(ctx, {n: models[n] for n in dict.fromkeys(same.values())}, supernet)
    runs.update({n: runs[m] for n, m in same.items()})  # one model trained once
    test = spec.final_split
    metrics = ["kd_loss", "teacher_kl", *(f"{test}/{m}" for m in spec.metric_names),
               *spec.metric_names]
    flops = LatencyMeter(hidden, proxy="flops")
    out: dict[str, Any] = {"splits": {"eval": spec.search_split or "held-out train rows",
                                      "test": test}, "notes": list(spec.notes),
                           "same_as": {n: m for n, m in same.items() if n != m},
                           "metrics": list(spec.metric_names), "seeds": fin.seeds,
                           "recipe": json.loads(json.dumps(dataclasses.asdict(
                               _budget(ctx, supernet, 0, None)), default=str))}
    for name, cand in models.items():
        out[name] = {**_row(runs[name], spec, test), "mlp_mflops": flops(cand),
                     "expressions": [g.expr for g in cand.layers],
                     "describe": cand.describe(), "folder": str(ctx.run_dir / same[name])}
    out["comparison"] = comparison(runs["winner"], runs["baseline"], metrics,
                                   ("winner", "baseline"))
    for other in (n for n in runs if n not in ("winner", "baseline")):
        out[f"comparison_{other}"] = comparison(runs["winner"], runs[other], metrics,
                                                ("winner", other))
    _latencies(ctx, out, same)
    (ctx.run_dir / "winner" / "candidate.json").write_text(winner.to_json() + "\n")
    if fin.teacher_test:
        out["teacher"] = _teacher_row(ctx)
    return out


def _latencies(ctx: Context, out: dict[str, Any], same: dict[str, str]) -> None:
    """Median forward latency of each trained model, measured interleaved."""
    students = {n: Student.from_pretrained(ctx.run_dir / n) for n in dict.fromkeys(same.values())}
    times: dict[str, list[float]] = {n: [] for n in students}
    for _ in range(5):  # interleaved rounds: machine load hits every model alike
        for name, student in students.items():
            times[name].append(measure_latency(student, repeats=5))
    for name, trained in same.items():
        out[name]["latency_ms"] = statistics.median(times[trained])


def _teacher_row(ctx: Context) -> dict[str, Any]:
    """The fine-tuned teacher on the evaluation and test splits."""
    spec = ctx.task
    ds = load_task(spec.name, ctx.cache_dir)
    tok = load_tokenizer(ctx.tuned)
    roles = [("test", spec.final_split)] + ([("eval", spec.search_split)]
                                            if spec.search_split else [])
    splits = {role: encode_split(ds[name], tok, spec, spec.max_length) for role, name in roles}
    teacher = load_teacher(ctx.tuned)
    return {"params": sum(t.numel() for t in teacher.parameters()),
            "latency_ms": measure_latency(teacher), "folder": str(ctx.tuned),
            **evaluate_splits(teacher, splits, spec)}


__all__ = ["comparison", "equal_params_ffn", "final_compare"]
