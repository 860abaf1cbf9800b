"""Graphs per second through parse -> simplify -> canonical_key, for random graphs of 5-40 nodes.

Run: ``python benchmarks/bench_pipeline.py`` (one process, pure Python, so one core).
Rates are computed from the process's CPU time (``time.process_time``), which stays
meaningful on a shared machine; wall-clock rates are recorded beside them.
Writes ``benchmarks/results/pipeline.json`` and ``pipeline.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import mlpgraph as mg
from mlpgraph.gen import random_graph
from mlpgraph.keys import recexpr_key

BUCKETS = ((5, 10), (11, 20), (5, 20), (21, 30), (31, 40))


def make_texts(lo: int, hi: int, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < count:
        g = random_graph(rng, steps=rng.randint(max(2, lo // 2), hi + 10))
        if lo <= g.size <= hi:
            out[mg.format(g)] = None
    return list(out)


def run_bucket(texts: list[str], repeats: int) -> dict:
    rates, wall, stages = [], [], {"parse": [], "simplify": [], "key": []}
    clock = time.process_time
    for _ in range(repeats):
        t0, w0 = clock(), time.perf_counter()
        for t in texts:
            mg.canonical_key(mg.parse(t))
        rates.append(len(texts) / (clock() - t0))
        wall.append(len(texts) / (time.perf_counter() - w0))
        t0 = clock()
        gs = [mg.parse(t) for t in texts]
        t1 = clock()
        ss = [mg.simplify(g) for g in gs]
        t2 = clock()
        for s in ss:
            recexpr_key(s)
        t3 = clock()
        del gs, ss
        for k, v in zip(stages, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            stages[k].append(v / len(texts) * 1e6)
    return {"graphs": len(texts), "graphs_per_s_median": statistics.median(rates),
            "graphs_per_s_all": rates, "wall_graphs_per_s_median": statistics.median(wall),
            "us_per_graph": {k: statistics.median(v) for k, v in stages.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=2000, help="distinct graphs per size bucket")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    results = {"python": platform.python_version(), "machine": platform.machine(),
               "buckets": {}}
    rows = ["| nodes | graphs | graphs/s (CPU time, median) | graphs/s (wall) | parse us | "
            "simplify us | key us |", "|---|---|---|---|---|---|---|"]
    for lo, hi in BUCKETS:
        r = run_bucket(make_texts(lo, hi, args.count, seed=lo), args.repeats)
        results["buckets"][f"{lo}-{hi}"] = r
        u = r["us_per_graph"]
        rows.append(f"| {lo}-{hi} | {r['graphs']} | {r['graphs_per_s_median']:,.0f} | "
                    f"{r['wall_graphs_per_s_median']:,.0f} | "
                    f"{u['parse']:.0f} | {u['simplify']:.0f} | {u['key']:.0f} |")
        print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline.json").write_text(json.dumps(results, indent=1))
    (args.out / "pipeline.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
