"""Search controllers on equal budgets, each winner trained fully against the standard FFN.

Protocol (every number comes from real KD runs on ``movie_binary`` with the fine-tuned MiniLM
teacher, the ``quick`` preset's student and fitness):

1. One prepared run context (teacher, teacher-output caches, held-out fitness rows) and one
   warmed-up supernet (the preset's mixed-pool warm-up), shared by every run, so every
   controller starts from the same weights.
2. Per controller (evolution, the paper's seed-mutating controller, random sampling) and
   search seed: the preset's stage 1 and stage 2 (the same evaluation budgets, rungs, paired
   controls and confirmation for every controller).
3. The winner, the standard FFN of the same shape, a uniform FFN of equal size and the best
   fixed MLP known before searching (``tanh(W2(gelu(W1(x))))`` on every layer, the paper's
   L1, at the winner's shape) each get the preset's final task KD over the final seeds
   (paired); the held-out KD loss and the test metrics are compared with 95% intervals.

Each run is its own run folder under ``--work-dir`` (resumable); ``results/search.json`` and
``search.md`` are rewritten after every run::

    python benchmarks/bench_search.py --seeds 0 1 2
    python benchmarks/bench_search.py --report
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from searcher.run import run_pipeline
from searcher.run_config import quick_preset

RESULTS = Path(__file__).parent / "results"
CONTROLLERS = ("evolution", "random", "paper")
BEST_FIXED = "tanh(W2(gelu(W1(x))))"


def pipeline_for(controller: str, seed: int) -> Any:
    p = quick_preset()
    stages = [s.but(controller={**s.controller.dump(), "kind": controller}) for s in p.stages[:2]]
    return p.but(name=f"bench-{controller}", seed=seed, stages=[s.dump() for s in stages],
                 final={**p.final.dump(), "fixed": [BEST_FIXED]})


def one_run(controller: str, seed: int, work: Path, warm: Path | None,
            cache_dir: str | None) -> dict[str, Any]:
    folder = work / f"{controller}-seed{seed}"
    done = folder / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    res = run_pipeline(pipeline_for(controller, seed), folder, stages=[1, 2],
                       resume=(folder / "pipeline.json").is_file(), cache_dir=cache_dir,
                       progress=False, log=lambda s: print(s, flush=True), supernet=warm)
    res["bench_minutes"] = (time.perf_counter() - t0) / 60
    (folder / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    return res


def row(res: dict[str, Any]) -> dict[str, Any]:
    final = res["final"]
    test = f"{final['splits']['test']}/accuracy"

    def comp(key: str, metric: str) -> dict[str, Any] | None:
        c = final.get(key, {}).get(metric)
        return None if c is None else {k: c[k] for k in ("delta_mean", "ci95", "seeds")}

    return {"controller": res["pipeline"]["stages"][0]["controller"]["kind"],
            "seed": res["pipeline"]["seed"], "winner": final["winner"]["describe"],
            "winner_is_ffn": final.get("same_as", {}).get("baseline") == "winner",
            "kd_loss": {k: final[k]["kd"].get("kd_loss") for k in
                        ("winner", "baseline", "equal_params", "fixed1")},
            "test_accuracy": {k: final[k]["test"].get("accuracy") for k in
                              ("winner", "baseline", "equal_params", "fixed1")},
            "vs_ffn": {"kd_loss": comp("comparison", "kd_loss"),
                       "test_accuracy": comp("comparison", test)},
            "vs_fixed": {"kd_loss": comp("comparison_fixed1", "kd_loss"),
                         "test_accuracy": comp("comparison_fixed1", test)},
            "search_minutes": sum(s["seconds"] for s in res["stages"]) / 60,
            "minutes": res.get("bench_minutes")}


def write(rows: list[dict[str, Any]]) -> None:
    (RESULTS / "search.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    lines = ["# Search controllers on equal budgets (`movie_binary`, quick preset)", "",
             "Command: `python benchmarks/bench_search.py --seeds 0 1 2`", "",
             "Each run: stages 1-2 of the quick preset with the given controller and search "
             "seed; then the winner, the same-shape standard FFN, a uniform FFN of equal size "
             f"and `{BEST_FIXED}` on every layer at the winner's shape, each trained with the "
             "preset's final recipe over 3 paired seeds. kd_loss: the task-KD objective on "
             "held-out rows (lower is better). Differences: winner - other, 95% t interval.", "",
             "| controller | seed | winner | winner kd | FFN kd | winner - FFN kd [95% CI] | "
             "winner - FFN test acc. [95% CI] | winner - fixed kd [95% CI] | search min |",
             "|---|---|---|---|---|---|---|---|---|"]

    def ci(c: dict[str, Any] | None, scale: float = 1.0) -> str:
        if c is None:
            return "-"
        lo, hi = c["ci95"]
        return (f"{scale * c['delta_mean']:+.4f} [{scale * lo:+.4f}, {scale * hi:+.4f}]")

    for r in rows:
        kd = r["kd_loss"]
        lines.append(f"| {r['controller']} | {r['seed']} | `{r['winner']}` | "
                     f"{kd['winner']:.4f} | {kd['baseline']:.4f} | "
                     + ("(is the FFN)" if r["winner_is_ffn"] else ci(r["vs_ffn"]["kd_loss"]))
                     + f" | {ci(r['vs_ffn']['test_accuracy'], 100)} | "
                     f"{ci(r['vs_fixed']['kd_loss'])} | {r['search_minutes']:.1f} |")
    by = {}
    for r in rows:
        by.setdefault(r["controller"], []).append(r["kd_loss"]["winner"])
    lines += ["", "Mean winner kd_loss per controller: " + ", ".join(
        f"{k} {np.mean(v):.4f} (n={len(v)})" for k, v in by.items())]
    (RESULTS / "search.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--controllers", nargs="+", default=list(CONTROLLERS))
    ap.add_argument("--work-dir", type=Path, default=RESULTS / "search_runs")
    ap.add_argument("--supernet", type=Path, default=None,
                    help="a warmed supernet folder to share (e.g. bench_signal's mixed one)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        for ctl in args.controllers:
            folder = args.work_dir / f"{ctl}-seed{seed}" / "results.json"
            if args.report and not folder.is_file():
                continue
            rows.append(row(one_run(ctl, seed, args.work_dir, args.supernet, args.cache_dir)))
            write(rows)
    write(rows)


if __name__ == "__main__":
    main()
