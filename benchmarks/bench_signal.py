"""Does the search's fitness see what it should? The panel audit.

A fixed panel of MLPs (the standard FFN, the paper's six searched MLPs, random members of the
space, the GLU variants and squared ReLU), each on every layer of the quick preset's student
at its default shape, is scored the way the search scores a candidate (``distill.score``:
inherit a warmed-up supernet, a short task KD with common random numbers, then metrics on
held-out rows) with several seeds, after two warm-ups:

- ``base``: the supernet warmed up with standard-FFN sub-networks only (the old warm-up);
- ``mixed``: warmed up with a pool of expressions (the FFN, the paper's six, random members).

Reported (``results/signal.md``):

- consistency, ICC(3,1) over candidates x seeds, of each metric: held-out accuracy, held-out
  KD loss, teacher KL;
- validity: the same candidates trained fully from scratch with the tuned recipe
  (bench_distill's), their KD loss on the heldout split (sentences neither general nor task
  KD ever saw); Kendall tau between each short-budget fitness and that outcome;
- the panel's ranks after each warm-up and after full training (the home advantage: where
  the FFN ranks).

    python benchmarks/bench_signal.py                 # everything (resumable)
    python benchmarks/bench_signal.py --report        # tables from what is done
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mlpgraph
from distill.pipeline import TUNED, distill_student
from distill.stats import icc_consistency, kendall
from distill.teacher_cache import TeacherOutputs
from distill.train import evaluate_kd
from mlpgraph import MLPLayer
from mlpgraph.paper import PAPER_EXPRESSIONS, STANDARD_FFN
from searcher.candidate import Candidate
from searcher.graphedit import Grower
from searcher.prepare import prepare
from searcher.run import Context, KDScorer, preflight
from searcher.run_config import quick_preset
from searcher.warmup import warm_supernet
from searcher.workers import Task, make_executor

OUT = Path(__file__).resolve().parent / "results"
FULL = OUT / "signal" / "full.json"  # full trainings from scratch: no warm-up, no space

METRICS = ("accuracy", "kd_loss", "teacher_kl")
RECIPE = dataclasses.asdict(TUNED)
GLU = ("W3(silu(W1(x)) * W2(x))", "W3(gelu(W1(x)) * W2(x))")


def work_dir(space: str) -> Path:
    """The audit's folder: ``signal/`` for the paper's space, ``signal_<space>/`` else."""
    return OUT / ("signal" if space == "paper" else f"signal_{space}")


def panel(n_random: int, seed: int) -> dict[str, tuple[str, float]]:
    """name -> (expression, width factor): GLUs at 2/3 of the inner width (equal params)."""
    out = {"ffn": (STANDARD_FFN, 1.0)}
    out.update({f"paper_L{i + 1}": (e, 1.0) for i, e in enumerate(PAPER_EXPRESSIONS)})
    grower = Grower(mlpgraph.PAPER_SPACE, random.Random(seed))
    while len(out) < 7 + n_random:
        g = grower.random_member()
        if str(g) not in {e for e, _ in out.values()}:
            out[f"random_{len(out) - 6}"] = (str(g), 1.0)
    out.update({"swiglu": (GLU[0], 2 / 3), "geglu": (GLU[1], 2 / 3),
                "sqrelu": ("W2(squared_relu(W1(x)))", 1.0)})
    return out


def candidate(expr: str, factor: float, s: int, ratio: Fraction, layers: int) -> Candidate:
    r = Fraction(ratio * Fraction(factor).limit_denominator(3))
    return Candidate((MLPLayer(mlpgraph.parse(expr), s, r),) * layers)


def context(pipeline: Any, work: Path) -> Context:
    run_dir = work / "run"
    task, student, cons, seeds = preflight(pipeline, run_dir, resume=(run_dir /
                                           "pipeline.json").is_file(), stages=[1])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "pipeline.json").write_text(pipeline.to_json())
    ctx = Context(pipeline, run_dir, task, student, cons, seeds, progress=False,
                  log=lambda s: print(s, flush=True))
    prepare(ctx)
    return ctx


def short_scores(ctx: Context, cands: dict[str, Candidate], warmups: dict[str, Path],
                 seeds: list[int], steps: int, path: Path) -> dict[str, Any]:
    """(warm-up, candidate, seed) -> the scorer's metrics; cached in ``path``."""
    done = json.loads(path.read_text()) if path.is_file() else {}
    hidden = ctx.student_config.hidden
    tasks = []
    for w, folder in warmups.items():
        for name, cand in cands.items():
            for s in seeds:
                key = f"{w}|{name}|{s}|{steps}"
                if key not in done:
                    budget = ctx.score_budget(folder, steps, seed=s, latency_repeats=0)
                    tasks.append(Task((key,), cand.spec(hidden), budget))
    if tasks:
        with make_executor("local", KDScorer(1), workers=2) as ex:
            def save(o: Any) -> None:
                if o.status == "ok":
                    done[o.key[0]] = o.result.to_dict()
                    path.write_text(json.dumps(done, indent=1))
                else:
                    print(f"failed {o.key}: {o.error}", flush=True)
            ex.run(tasks, save)
    return done


def full_scores(ctx: Context, cands: dict[str, Candidate], seed: int) -> dict[str, Any]:
    """candidate -> held-out KD loss etc. after full training from scratch (tuned recipe)."""
    path = FULL
    done = json.loads(path.read_text()) if path.is_file() else {}
    caches = [TeacherOutputs(ctx.outputs["heldout"].folder)]  # no general KD saw these
    for name, cand in cands.items():
        if name in done:
            continue
        t0 = time.perf_counter()
        config = ctx.student_config.replace(layers=list(cand.spec(ctx.student_config.hidden)
                                                        .layers))
        out = distill_student(config, ctx.pipeline.task, recipe=TUNED, seed=seed,
                              progress=False, eval_splits=("heldout",))
        parts = [(len(c), evaluate_kd(out["model"], c, out["kd"])) for c in caches]
        n = sum(k for k, _ in parts)
        kd = {m: sum(k * v[m] for k, v in parts) / n for m in parts[0][1]}
        done[name] = {"kd": kd, "heldout": out["metrics"]["heldout"],
                      "minutes": (time.perf_counter() - t0) / 60, "diverged": out["diverged"]}
        path.write_text(json.dumps(done, indent=1))
        print(f"full {name}: kd_loss {kd['kd_loss']:.4f} acc "
              f"{out['metrics']['heldout']['accuracy']:.4f}", flush=True)
    return done


def analyse(short: dict[str, Any], full: dict[str, Any], names: list[str], warmups: list[str],
            seeds: list[int], steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {"icc": {}, "tau": {}, "ranks": {}, "means": {}}
    truth = {n: full[n]["kd"]["kd_loss"] for n in names if n in full}
    for w in warmups:
        for m in METRICS:
            table = [[short[f"{w}|{n}|{s}|{steps}"]["metrics"][m] for s in seeds]
                     for n in names if all(f"{w}|{n}|{s}|{steps}" in short for s in seeds)]
            if len(table) < 2:
                continue
            out["icc"][f"{w}/{m}"] = icc_consistency(table)
            means = {n: float(np.mean(row)) for n, row in zip(names, table, strict=False)}
            out["means"][f"{w}/{m}"] = means
            common = [n for n in means if n in truth]
            if len(common) >= 3:
                sign = -1.0 if m == "accuracy" else 1.0  # all oriented: smaller is better
                r = kendall([sign * means[n] for n in common], [truth[n] for n in common])
                out["tau"][f"{w}/{m}"] = {"tau": r.tau, "p": r.p_value, "n": r.n}
            order = sorted(means, key=lambda n: means[n] * (-1 if m == "accuracy" else 1))
            out["ranks"][f"{w}/{m}"] = {n: i + 1 for i, n in enumerate(order)}
    order = sorted(truth, key=truth.get)
    out["ranks"]["full/kd_loss"] = {n: i + 1 for i, n in enumerate(order)}
    out["truth"] = truth
    return out


def write_md(rep: dict[str, Any], path: Path) -> None:
    a = rep["analysis"]
    lines = ["# Fitness signal: consistency and validity (`movie_binary`, quick student, "
             f"{rep.get('space', 'paper')} space)", "",
             f"Command: `{rep['command']}`", "",
             f"Panel: {len(rep['panel'])} MLPs on every layer at {rep['shape']}; "
             f"{len(rep['seeds'])} seeds x {rep['steps']} KD steps per score; full training: "
             + (f"{json.dumps(rep['recipe'])}, seed {rep['full_seed']}" if rep.get(
                 "space", "paper") == "paper" else "the trainings from scratch of signal.md "
                "(`signal/full.json`: no warm-up or space is involved)") + ".", "",
             "| warm-up / metric | ICC(3,1) | Kendall tau vs fully trained kd_loss | p | n |",
             "|---|---|---|---|---|"]
    for key in sorted(a["icc"]):
        t = a["tau"].get(key, {})
        lines.append(f"| {key} | {a['icc'][key]:.3f} | {t.get('tau', float('nan')):.3f} | "
                     f"{t.get('p', float('nan')):.3f} | {t.get('n', 0)} |")
    cols = sorted(a["ranks"])
    lines += ["", "Ranks (1 = best):", "", "| MLP | " + " | ".join(cols) + " |",
              "|---|" + "---|" * len(cols)]
    for name in rep["panel"]:
        lines.append(f"| {name} | " + " | ".join(str(a["ranks"][c].get(name, "-"))
                                               for c in cols) + " |")
    lines += ["", "Panel:", ""] + [f"- {n}: `{e}` (width x {f:.3g})"
                                   for n, (e, f) in rep["panel"].items()]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--random", type=int, default=3, help="random members of the space")
    ap.add_argument("--full-seed", type=int, default=0)
    ap.add_argument("--no-full", action="store_true", help="skip the full trainings")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--space", default=quick_preset().space, choices=["wide", "paper"],
                    help="the space whose warm-up pool the mixed supernet samples (and whose "
                    "run the audit stands for); results/signal.md is the paper's")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = work_dir(args.space)
    work.mkdir(parents=True, exist_ok=True)
    p = quick_preset().but(space=args.space)
    s, ratio = p.default_base[0], Fraction(p.default_base[1])
    table = panel(args.random, 0)
    cands = {n: candidate(e, f, s, ratio, p.student.num_layers) for n, (e, f) in table.items()}
    kinds = ["base", "mixed"]
    if args.report:  # tables from what is done: nothing is loaded or trained
        short = json.loads((work / "short.json").read_text())
        full = {} if args.no_full else json.loads(FULL.read_text())
    else:
        ctx = context(p, work)
        warmups = {}
        for kind in kinds:
            spec = p.warmup.but(pool=kind)
            graphs = [mlpgraph.parse(STANDARD_FFN)] * p.student.num_layers
            warmups[kind] = warm_supernet(ctx, spec, ctx.run_dir / "warmup" / kind,
                                          start=None, graphs=graphs, label=f"warm-up {kind}")
        # every panel linear needs its pool in both supernets: extraction creates missing ones
        short = short_scores(ctx, cands, warmups, args.seeds, args.steps, work / "short.json")
        full = {} if args.no_full else full_scores(ctx, cands, args.full_seed)
    rep = {"command": "python benchmarks/bench_signal.py " + " ".join(
               f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
               if k in ("steps", "random", "full_seed", "space")),
           "space": args.space,
           "panel": table, "seeds": args.seeds, "steps": args.steps, "recipe": RECIPE,
           "full_seed": args.full_seed, "shape": f"{s} x {ratio}",
           "analysis": analyse(short, full, list(cands), kinds, args.seeds, args.steps)}
    name = work.name
    (OUT / f"{name}.json").write_text(json.dumps(rep, indent=2) + "\n")
    write_md(rep, OUT / f"{name}.md")


if __name__ == "__main__":
    main()
