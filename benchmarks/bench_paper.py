"""The decisive experiment: do the paper's searched MLPs beat the GELU FFN at equal shape?

Students scaled to 1/3 of EfficientBERT: hidden 180, 6 layers, 12 heads, the paper's stacks
per layer and its inner widths divided by 3 (90, 180, 90, 90, 90, 60). Arms (every arm has
the same embeddings, attention and head; only the MLPs differ):

- ``paper``: the six searched expressions, L1..L6, at those shapes;
- ``ffn_same``: the GELU FFN ``W2(gelu(W1(x)))`` at the same shapes (same parameters);
- ``ffn_uniform``: a GELU FFN with one stack per layer, every layer alike, of the same total
  parameter count (the BERT way of spending the same parameters);
- ``swiglu`` / ``geglu``: ``W3(silu(W1(x)) * W2(x))`` / ``W3(gelu(W1(x)) * W2(x))`` at the
  same stacks with inner widths x 2/3 (equal parameters; Shazeer 2020);
- ``sqrelu``: ``W2(squared_relu(W1(x)))`` at the same shapes (So et al. 2021, Primer).

Every arm trains with one recipe (bench_distill's tuned one: embeddings initialized from the
teacher, general KD then task KD with a hard-label term) on paired seeds: seed ``s`` fixes
the data order and initialization alike for every arm. Measured: the held-out KD loss (the
task-KD objective on the 1,012 heldout sentences, the fine-tuned teacher's cached outputs)
and test accuracy, with paired 95% confidence intervals against ``ffn_same``.

Each (arm, seed) is written to ``results/paper/<arm>-<seed>.json`` when it finishes, so
several processes can share the work and a rerun skips what is done::

    python benchmarks/bench_paper.py --seeds 0 1 2 3 4 --threads 1
    python benchmarks/bench_paper.py --report          # paper.md / paper.json from the runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.config import StudentConfig
from distill.data import get_task_spec
from distill.encode import encode_split
from distill.pipeline import TUNED, distill_student, teacher_outputs
from distill.stats import paired, verdict
from distill.student import count_parameters
from distill.teacher import finetune_teacher, load_task, load_tokenizer
from distill.train import evaluate_kd
from mlpgraph.paper import PAPER_LAYERS

TASK = "movie_binary"
HIDDEN, SCALE = 180, 3
OUT = Path(__file__).resolve().parent / "results"
RECIPE = dataclasses.asdict(TUNED)


def arms() -> dict[str, list[tuple[str, int, int]]]:
    """Per arm, one ``(expression, stacks, d_inner)`` per layer."""
    shapes = [(s, k // SCALE) for _, _, s, k in PAPER_LAYERS]
    glu = [(s, round(k * 2 / 3)) for s, k in shapes]
    out = {"paper": [(e, s, k // SCALE) for _, e, s, k in PAPER_LAYERS],
           "ffn_same": [("W2(gelu(W1(x)))", s, k) for s, k in shapes],
           "swiglu": [("W3(silu(W1(x)) * W2(x))", s, k) for s, k in glu],
           "geglu": [("W3(gelu(W1(x)) * W2(x))", s, k) for s, k in glu],
           "sqrelu": [("W2(squared_relu(W1(x)))", s, k) for s, k in shapes]}
    mlp = count_parameters(config(out["ffn_same"]))["mlp"]
    k = round((mlp / len(shapes) - 3 * HIDDEN) / (2 * HIDDEN + 1))  # s = 1, LayerNorm 2h
    out["ffn_uniform"] = [("W2(gelu(W1(x)))", 1, k)] * len(shapes)
    return out


def config(layers: list[tuple[str, int, int]]) -> StudentConfig:
    return StudentConfig(layers=layers, hidden=HIDDEN, heads=12, embedding_size=64,
                         max_position=128, num_labels=2)


def run_one(arm: str, seed: int, layers: list[tuple[str, int, int]], progress: bool
            ) -> dict[str, Any]:
    start = time.perf_counter()
    cfg = config(layers)
    out = distill_student(cfg, TASK, recipe=TUNED, seed=seed, eval_splits=("heldout", "test"),
                          progress=progress)
    spec = get_task_spec(TASK)
    tuned = finetune_teacher(TASK, progress=False)
    held = encode_split(load_task(TASK)["heldout"], load_tokenizer(tuned), spec, spec.max_length)
    outputs = teacher_outputs(tuned, held, out["model"].config, name=f"{TASK}-heldout",
                              progress=False)
    kd = evaluate_kd(out["model"], outputs, out["kd"])
    return {"arm": arm, "seed": seed, "layers": [list(x) for x in layers],
            "params": count_parameters(cfg), "diverged": out["diverged"],
            "heldout_kd": kd, "metrics": out["metrics"], "seconds": out["seconds"],
            "minutes": (time.perf_counter() - start) / 60, "recipe": RECIPE,
            "threads": torch.get_num_threads()}


def report(folder: Path) -> dict[str, Any]:
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    by = {(r["arm"], r["seed"]): r for r in runs}
    names = list(arms())
    rows, comps = [], {}
    for arm in names:
        rs = [r for r in runs if r["arm"] == arm]
        if not rs:
            continue
        rows.append({"arm": arm, "seeds": sorted(r["seed"] for r in rs),
                     "params": rs[0]["params"]["total"], "mlp": rs[0]["params"]["mlp"],
                     "kd_loss": float(np.mean([r["heldout_kd"]["kd_loss"] for r in rs])),
                     "teacher_kl": float(np.mean([r["heldout_kd"]["teacher_kl"] for r in rs])),
                     "test_accuracy": float(np.mean([r["metrics"]["test"]["accuracy"]
                                                     for r in rs])),
                     "minutes": float(np.mean([r["minutes"] for r in rs])),
                     "layers": rs[0]["layers"]})
        if arm == "ffn_same":
            continue
        seeds = sorted(s for a, s in by if a == arm and ("ffn_same", s) in by)
        if len(seeds) < 2:
            continue
        comps[arm] = {}
        for metric, get, up in (("kd_loss", lambda r: r["heldout_kd"]["kd_loss"], False),
                                ("teacher_kl", lambda r: r["heldout_kd"]["teacher_kl"], False),
                                ("test_accuracy", lambda r: r["metrics"]["test"]["accuracy"],
                                 True)):
            p = paired([get(by[(arm, s)]) for s in seeds],
                       [get(by[("ffn_same", s)]) for s in seeds])
            comps[arm][metric] = {**p.to_dict(), "seeds": seeds,
                                  "verdict": verdict(p, metric, arm, "ffn_same",
                                                     higher_is_better=up)}
    return {"rows": rows, "comparisons": comps, "recipe": RECIPE, "task": TASK,
            "machine": {"cpu": platform.processor() or platform.machine(),
                        "torch": torch.__version__}}


def write_md(rep: dict[str, Any], path: Path) -> None:
    lines = ["# The paper's searched MLPs vs the GELU FFN (1/3 scale, `movie_binary`)", "",
             "Command: `python benchmarks/bench_paper.py --seeds 0 1 2 3 4` (then `--report`)",
             "", f"Recipe (every arm, every seed): {json.dumps(rep['recipe'])}; students "
             "hidden 180, 6 layers, 12 heads, factorized embeddings of width 64.", "",
             "| arm | seeds | params | MLP params | held-out kd_loss | held-out teacher KL | "
             "test acc. | min/run |", "|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        lines.append(f"| {r['arm']} | {len(r['seeds'])} | {r['params']:,} | {r['mlp']:,} | "
                     f"{r['kd_loss']:.4f} | {r['teacher_kl']:.4f} | "
                     f"{100 * r['test_accuracy']:.2f} | {r['minutes']:.1f} |")
    lines += ["", "Paired differences against `ffn_same` (arm - ffn_same; 95% t interval over "
              "seeds):", "", "| arm | metric | mean difference | 95% CI | verdict |",
              "|---|---|---|---|---|"]
    for arm, comp in rep["comparisons"].items():
        for metric, c in comp.items():
            lo, hi = c["ci95"]
            lines.append(f"| {arm} | {metric} | {c['delta_mean']:+.4f} | [{lo:+.4f}, "
                         f"{hi:+.4f}] | {c['verdict'].split(': ', 1)[-1]} |")
    lines += ["", "Layers per arm (expression, stacks, inner width):", ""]
    lines += [f"- {r['arm']}: {r['layers']}" for r in rep["rows"]]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--arms", nargs="+", default=None, help="default: every arm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true", help="only write paper.md / paper.json")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    folder = OUT / "paper"
    folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    if not args.report:
        table = arms()
        for seed in args.seeds:
            for arm in args.arms or list(table):
                f = folder / f"{arm}-{seed}.json"
                if f.exists():
                    continue
                claim = f.with_suffix(".running")
                try:  # another process may be on it
                    claim.touch(exist_ok=False)
                except FileExistsError:
                    continue
                try:
                    res = run_one(arm, seed, table[arm], args.progress)
                    f.write_text(json.dumps(res, indent=2) + "\n")
                    print(f"{arm} seed {seed}: kd {res['heldout_kd']['kd_loss']:.4f} test "
                          f"{res['metrics']['test']['accuracy']:.4f} "
                          f"({res['minutes']:.1f} min)", flush=True)
                finally:
                    claim.unlink(missing_ok=True)
    rep = report(folder)
    (OUT / "paper.json").write_text(json.dumps(rep, indent=2) + "\n")
    write_md(rep, OUT / "paper.md")


if __name__ == "__main__":
    main()
