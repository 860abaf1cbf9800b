"""Which fixed MLPs beat the standard FFN under a run's own final recipe?

Takes a finished ``efficientbert run`` folder and trains a panel of MLPs, each on every
layer at one ``s x ratio``, with exactly that run's final recipe (``results.json``
``final.recipe``: task KD from the run's warm-up supernet, its steps, learning rate, label
weight, batches) on the run's final seeds (the same seeds, so the same batches, as its
winner and baselines). Reports the held-out KD loss, teacher KL and test accuracy of each arm
minus the standard FFN at the same shape, with paired 95% intervals. This is what the
search's winner is compared with in the same run, so it says what a search in that space
could find::

    python benchmarks/bench_final_panel.py /work/runs/qt2 --seeds 3 --workers 2
    python benchmarks/bench_final_panel.py RUN --arm sqrelu="W2(squared_relu(W1(x)))@2x1"

Writes ``results/final_panel.json`` and ``.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PANEL = {  # name -> expression @ s x ratio (GLUs at 2x1 have the FFN at 3x1's parameters)
    "ffn": "W2(gelu(W1(x)))@2x1",
    "ffn_3x1": "W2(gelu(W1(x)))@3x1",
    "sqrelu": "W2(squared_relu(W1(x)))@2x1",
    "swiglu": "W3(swish(W1(x)) * W2(x))@2x1",
    "geglu": "W3(gelu(W1(x)) * W2(x))@2x1",
    "swiglu_4x1/3": "W3(swish(W1(x)) * W2(x))@4x1/3",
    "paper_L1": "tanh(W2(gelu(W1(x))))@2x1",
}
METRICS = ("kd_loss", "teacher_kl", "test/accuracy")


def parse_arm(text: str) -> tuple[str, str, int, str]:
    """``expr@SxRATIO`` -> (expr, expr, s, ratio); raises ValueError naming the text."""
    expr, _, shape = text.rpartition("@")
    s, _, ratio = shape.partition("x")
    if not expr or not s.isdigit() or not ratio:
        raise ValueError(f"arm {text!r} must read EXPR@SxRATIO, e.g. W2(gelu(W1(x)))@2x1")
    return text, expr, int(s), ratio


def _train(job: tuple[str, str, int, str, int, dict[str, Any], int, int]) -> dict[str, Any]:
    """One (arm, seed) in a worker process with one torch thread."""
    import torch

    from distill.scoring import ScoreBudget, score
    from searcher.candidate import uniform_candidate

    name, expr, s, ratio, seed, recipe, layers, hidden = job
    torch.set_num_threads(1)
    budget = ScoreBudget.from_dict({**recipe, "seed": seed, "save_to": None})
    res = score(uniform_candidate(expr, s, ratio, layers).spec(hidden), budget)
    return {"arm": name, "seed": seed, "params": res.params, "seconds": res.wall_seconds,
            **{m: res.metrics.get(m) for m in METRICS}}


def compare(rows: list[dict[str, Any]], arms: list[str], base: str) -> list[dict[str, Any]]:
    """Each arm minus ``base`` per metric, paired by seed (the final step's comparison)."""
    from distill.result import ScoreResult
    from searcher.final import comparison

    seeds = sorted({r["seed"] for r in rows})
    runs = {(r["arm"], r["seed"]): ScoreResult({m: r[m] for m in METRICS}) for r in rows}
    params = {r["arm"]: r["params"] for r in rows}
    out = []
    for arm in arms:
        comp = comparison([runs[(arm, s)] for s in seeds], [runs[(base, s)] for s in seeds],
                          list(METRICS), (arm, base))
        out.append({"arm": arm, "params": params[arm], **{
            m: {"mean": statistics.fmean(c[arm]), "per_seed": c[arm], "delta": c["delta_mean"],
                "ci95": c["ci95"], "verdict": c["verdict"]} for m, c in comp.items()}})
    return out


def markdown(table: list[dict[str, Any]], run: str, seeds: int, recipe: dict[str, Any],
             base: str) -> str:
    lines = [f"# The final recipe's panel ({run}, {seeds} paired seeds)", "",
             f"Task KD {recipe['kd_steps']} steps at lr {recipe['lr']}, label weight "
             f"{recipe['label_weight']}, from `{recipe['supernet']}`; each arm minus `ffn` "
             f"(`{base}`).", "",
             "| arm | params | KD loss | delta [95% CI] | teacher KL delta | test acc | "
             "delta, points [95% CI] |", "|---|---|---|---|---|---|---|"]
    for e in table:
        kd, kl, acc = (e[m] for m in METRICS)
        lines.append(
            f"| {e['arm']} | {e['params']:,} | {kd['mean']:.4f} | {kd['delta']:+.4f} "
            f"[{kd['ci95'][0]:+.4f}, {kd['ci95'][1]:+.4f}] | {kl['delta']:+.4f} | "
            f"{100 * acc['mean']:.2f} | {100 * acc['delta']:+.2f} "
            f"[{100 * acc['ci95'][0]:+.2f}, {100 * acc['ci95'][1]:+.2f}] |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a finished `efficientbert run` folder")
    ap.add_argument("--arm", action="append", default=[], metavar="NAME=EXPR@SxRATIO",
                    help="replace the default panel (repeatable; one arm must be named ffn)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "final_panel")
    args = ap.parse_args()
    results = json.loads((args.run_dir / "results.json").read_text())
    recipe = results["final"]["recipe"]
    student = json.loads((args.run_dir / "student_config.json").read_text())
    layers, hidden = len(student["layers"]), student["hidden"]
    panel = dict(a.split("=", 1) for a in args.arm) if args.arm else PANEL
    if "ffn" not in panel:
        raise SystemExit("the panel needs an arm named ffn (the baseline)")
    from searcher.final import SEED_STRIDE

    seeds = [results["pipeline"]["seed"] + k * SEED_STRIDE for k in range(args.seeds)]
    jobs = [(name, *parse_arm(text)[1:], seed, recipe, layers, hidden)
            for seed in seeds for name, text in panel.items()]
    rows = []
    with ProcessPoolExecutor(args.workers) as ex:
        for row in ex.map(_train, jobs):
            rows.append(row)
            print(f"{row['arm']:14s} seed {row['seed']:5d} KD loss {row['kd_loss']:.4f} "
                  f"test {row['test/accuracy']:.4f}", flush=True)
    table = compare(rows, list(panel), "ffn")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"run": str(args.run_dir), "panel": panel, "seeds": seeds, "recipe": recipe,
         "machine": platform.platform(), "rows": rows, "table": table}, indent=1) + "\n")
    text = markdown(table, str(args.run_dir), len(seeds), recipe, panel["ffn"])
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
