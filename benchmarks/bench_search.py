"""Search controllers on equal evaluation budgets: regularized evolution vs the paper's
controller (mutations of the seeds only) vs random sampling, on the embedded
``movie_binary`` task with the fine-tuned MiniLM teacher.

Protocol (small but real; every number comes from actual KD runs):

1. One warmed-up supernet (the ``quick`` preset's student: 3 layers, hidden 96; general KD
   then task KD with random standard-FFN sub-networks) shared by every run, so all
   controllers start from the same weights. Teacher outputs are cached on disk once.
2. Per controller and seed: a stage-1 search (expression, s and ratio per layer) with the
   same parameter window, FLOP budget and ``--evaluations`` distinct candidates, each
   scored by ``--kd-steps`` of task KD on a training slice and accuracy on the ``heldout``
   split (``distill.score.score``).
3. The run's winner and the standard FFN of the same shape (same per-layer s and ratio,
   hence the same parameter count; the same linear layers, so MLP FLOPs differ only by
   the winner's extra element-wise ops; both inside the run's FLOP budget) inherit the
   supernet and get ``--final-steps`` of task KD with the same seed; both are scored on
   the TEST split (the only time it is read). MLP MFLOPs and measured latency of both
   are reported.

Writes ``benchmarks/results/search.json`` and ``search.md`` after every run (``--resume``
skips finished runs). Full protocol: ``python benchmarks/bench_search.py`` (3 controllers
x 3 seeds). Waits while another ``bench_*`` or ``efficientbert run`` process is running.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import summary, wait_for_others  # benchmarks/common.py
from searcher.stages import STANDARD_FFN, Stage1, default_base, quick_preset

import mlpgraph
from searcher.budget import LatencyMeter
from searcher.candidate import Candidate, LayerGene
from searcher.run import STUDENT, Context, final_compare, prepare, run_stage, warm_supernet

RESULTS = Path(__file__).parent / "results"
CONTROLLERS = ("evolution", "paper", "random")


def mlp_flops(cand: Candidate, hidden: int) -> float:
    return LatencyMeter(hidden, proxy="flops")(cand)


def one_run(ctx: Context, supernet: Path, controller: str, seed: int,
            args: argparse.Namespace) -> dict[str, Any]:
    p = copy.deepcopy(ctx.pipeline)
    p.seed = seed
    spec = Stage1(evaluations=args.evaluations, controller=controller, kd_steps=args.kd_steps,
                  population=8, sample_size=3, batch_size=args.batch_size, max_mutations=3)
    p.stages = [spec]
    folder = Path(args.work_dir) / "runs" / f"{controller}-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    ctx.student_config.save(folder / STUDENT)
    rctx = Context(p, folder, ctx.cache_dir, progress=args.progress,
                   student_config=ctx.student_config, constraints=ctx.constraints,
                   tuned=ctx.tuned, base_teacher=ctx.base_teacher, outputs=ctx.outputs)
    t0 = time.perf_counter()
    stage = run_stage(rctx, spec, default_base(p), supernet)
    search_min = (time.perf_counter() - t0) / 60
    winner = Candidate.from_dict(stage["winner"])
    t0 = time.perf_counter()
    final = final_compare(rctx, winner, supernet)
    hidden = ctx.student_config.hidden
    ffn_graph = mlpgraph.parse(STANDARD_FFN)
    ffn = Candidate(tuple(LayerGene(ffn_graph, g.stacks, g.ratio) for g in winner.layers))
    w, b = final["winner"], final["baseline"]
    return {"controller": controller, "seed": seed, "evaluations": stage["evaluations"],
            "best_heldout": stage["best_score"], "winner": winner.describe(),
            "winner_test": w["test"]["accuracy"], "baseline_test": b["test"]["accuracy"],
            "winner_heldout_final": w["heldout"]["accuracy"],
            "baseline_heldout_final": b["heldout"]["accuracy"],
            "params": w["params"], "baseline_params": b["params"],
            "winner_latency_ms": w["latency_ms"], "baseline_latency_ms": b["latency_ms"],
            "winner_mlp_mflops": mlp_flops(winner, hidden),
            "baseline_mlp_mflops": mlp_flops(ffn, hidden),
            "dedupe_hit_rate": stage["dedupe"]["hit_rate"],
            "search_minutes": search_min, "final_minutes": (time.perf_counter() - t0) / 60}


def write(report: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "search.json").write_text(json.dumps(report, indent=2) + "\n")
    pct = lambda s: f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"  # noqa: E731
    lines = ["# Search controllers on equal evaluation budgets (`movie_binary`)", "",
             f"Command: `{report['command']}`", "", report["protocol"], "",
             "| controller | runs | best held-out (search) | winner TEST | same-shape FFN "
             "TEST | winner - FFN (pts) | winner wins | search min / run |",
             "|---|---|---|---|---|---|---|---|"]
    for c, s in report["summary"].items():
        lines.append(f"| {c} | {s['runs']} | {pct(s['best_heldout'])} | {pct(s['winner_test'])}"
                     f" | {pct(s['baseline_test'])} | {100 * s['delta']['mean']:+.2f} ± "
                     f"{100 * s['delta']['std']:.2f} | {s['wins']}/{s['runs']} | "
                     f"{s['search_minutes']['mean']:.1f} |")
    lines += ["", "Per run:", "", "| controller | seed | best held-out | winner TEST | FFN "
              "TEST | params | latency ms winner / FFN | MLP MFLOPs winner / FFN | winner |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        lines.append(f"| {r['controller']} | {r['seed']} | {r['best_heldout']:.4f} | "
                     f"{r['winner_test']:.4f} | {r['baseline_test']:.4f} | {r['params']:,} | "
                     f"{r['winner_latency_ms']:.1f} / {r['baseline_latency_ms']:.1f} | "
                     f"{r['winner_mlp_mflops']:.1f} / {r['baseline_mlp_mflops']:.1f} | "
                     f"`{r['winner']}` |")
    lines += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    (RESULTS / "search.md").write_text("\n".join(lines) + "\n")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for c in CONTROLLERS:
        rs = [r for r in runs if r["controller"] == c]
        if not rs:
            continue
        out[c] = {"runs": len(rs), "best_heldout": summary([r["best_heldout"] for r in rs]),
                  "winner_test": summary([r["winner_test"] for r in rs]),
                  "baseline_test": summary([r["baseline_test"] for r in rs]),
                  "delta": summary([r["winner_test"] - r["baseline_test"] for r in rs]),
                  "wins": sum(r["winner_test"] > r["baseline_test"] for r in rs),
                  "search_minutes": summary([r["search_minutes"] for r in rs])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--controllers", nargs="+", default=list(CONTROLLERS), choices=CONTROLLERS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--evaluations", type=int, default=20)
    ap.add_argument("--kd-steps", type=int, default=50)
    ap.add_argument("--final-steps", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2, help="parallel scorers (no effect on "
                    "results)")
    ap.add_argument("--batch-size", type=int, default=2, help="proposals per search step")
    ap.add_argument("--work-dir", default="runs/bench_search")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--resume", action="store_true", help="keep finished runs of search.json")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--no-wait", action="store_true", help="do not wait for other benchmarks")
    args = ap.parse_args()
    if not args.no_wait:
        wait_for_others("bench_search")
    pipeline = quick_preset()
    pipeline.workers = args.workers
    pipeline.final.task_steps, pipeline.final.teacher_test = args.final_steps, False
    torch.set_num_threads(pipeline.threads)
    ctx = Context(pipeline, Path(args.work_dir), args.cache_dir, progress=args.progress)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    prepare(ctx)
    t0 = time.perf_counter()
    supernet = warm_supernet(ctx, pipeline.warmup, ctx.run_dir / "warmup", start=None,
                             expressions=[STANDARD_FFN] * pipeline.student.num_layers,
                             label="warm-up")
    warm_min = (time.perf_counter() - t0) / 60
    old = json.loads((RESULTS / "search.json").read_text()) if args.resume and \
        (RESULTS / "search.json").is_file() else {}
    runs = [r for r in old.get("runs", []) if r["evaluations"] == args.evaluations]
    report = {"command": "python benchmarks/bench_search.py " + " ".join(sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__},
              "settings": vars(args) | {"student": pipeline.student.__dict__,
                                        "warmup": pipeline.warmup.__dict__,
                                        "constraints": ctx.constraints.to_dict()},
              "protocol": (f"Stage-1 search, {args.evaluations} distinct candidates per run "
                           f"({args.kd_steps} KD steps each, held-out accuracy on 1000 "
                           f"heldout sentences); winner and same-shape standard FFN get "
                           f"{args.final_steps} task-KD steps from the same warmed supernet, "
                           "then TEST accuracy (999 sentences). Mean ± sd over seeds."),
              "warmup_minutes": warm_min, "runs": runs, "notes": [
                  "Same parameter count: the baseline keeps the winner's per-layer s and "
                  "ratio with W2(gelu(W1(x))), so W1/W2 shapes are identical.",
                  "Latency: both are inside the same FLOP budget; measured ms on a shared "
                  "2-core machine are noisy (other jobs ran at the same time).",
                  "Search scores are held-out accuracies of training-data KD; the test split "
                  "is read only for the final pair of each run."]}
    for controller in args.controllers:
        for seed in args.seeds:
            if any(r["controller"] == controller and r["seed"] == seed for r in runs):
                continue
            print(f"== {controller} seed {seed}", flush=True)
            runs.append(one_run(ctx, supernet, controller, seed, args))
            report["summary"] = summarize(runs)
            write(report)
            print(json.dumps(runs[-1], indent=1), flush=True)
    report["summary"] = summarize(runs)
    write(report)


if __name__ == "__main__":
    main()
