"""Graphs per second through parse -> simplify -> canonical_key, for random graphs of 5-40 nodes.

Run: ``python benchmarks/bench_pipeline.py`` (one process, pure Python, so one core).
Rates are computed from the process's CPU time (``time.process_time``), which other jobs on
the machine disturb less than wall time; wall-clock rates are recorded beside them, with
the machine's idle share before and after (``load`` says whether the run was quiet).
Per-stage microseconds are timed graph by graph inside the same loop.

``--profile N`` adds the N functions with the most own time (cProfile, 11-20 nodes).
``--root DIR`` measures the ``mlpgraph`` of another checkout (e.g. a ``git worktree`` of an
older commit); ``--versus DIR`` alternates this checkout and DIR in subprocesses, round by
round, and reports the paired ratio of their rates (``pipeline_versus.json``). Writes
``benchmarks/results/pipeline.json`` and ``pipeline.md`` (``--out``; ``--tag before``
writes ``pipeline_before.*``).

    python benchmarks/bench_pipeline.py [--buckets 11-20 5-20] [--profile 25]
    python benchmarks/bench_pipeline.py --buckets 11-20 --versus /tmp/old --rounds 6
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUCKETS = ("5-10", "11-20", "5-20", "21-30", "31-40")


def _import_mlpgraph(root: Path) -> None:
    sys.path.insert(0, str(root))  # this checkout's (or --root's) mlpgraph, not an installed one
    sys.path.insert(1, str(HERE))


def make_texts(lo: int, hi: int, count: int, seed: int) -> list[str]:
    """``count`` distinct texts of random graphs with ``lo..hi`` nodes (seeded)."""
    import mlpgraph as mg
    from mlpgraph.gen import random_graph

    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < count:
        g = random_graph(rng, steps=rng.randint(max(2, lo // 2), hi + 10))
        if lo <= g.size <= hi:
            out[mg.format(g)] = None
    return list(out)


def run_bucket(texts: list[str], repeats: int) -> dict:
    """Rate (CPU time and wall) of the whole pipeline per repeat, then per-stage us."""
    import mlpgraph as mg
    from mlpgraph.keys import recexpr_key

    rates, wall, stages = [], [], {"parse": [], "simplify": [], "key": []}
    clock = time.process_time
    for _ in range(repeats):
        t0, w0 = clock(), time.perf_counter()
        for t in texts:
            mg.canonical_key(mg.parse(t))
        rates.append(len(texts) / (clock() - t0))
        wall.append(len(texts) / (time.perf_counter() - w0))
        spent = [0.0, 0.0, 0.0]
        for t in texts:  # the same work, one graph at a time, stage by stage
            t0 = clock()
            g = mg.parse(t)
            t1 = clock()
            s = mg.simplify(g)
            t2 = clock()
            recexpr_key(s)
            t3 = clock()
            spent[0] += t1 - t0
            spent[1] += t2 - t1
            spent[2] += t3 - t2
        for k, v in zip(stages, spent, strict=True):
            stages[k].append(v / len(texts) * 1e6)
    return {"graphs": len(texts), "graphs_per_s_median": statistics.median(rates),
            "graphs_per_s_all": rates, "wall_graphs_per_s_median": statistics.median(wall),
            "us_per_graph": {k: statistics.median(v) for k, v in stages.items()}}


def profile_top(texts: list[str], top: int) -> str:
    """cProfile of the pipeline over ``texts``: the ``top`` functions by own time."""
    import mlpgraph as mg

    prof = cProfile.Profile()
    prof.enable()
    for t in texts:
        mg.canonical_key(mg.parse(t))
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    lines = buf.getvalue().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    head = [ln.strip() for ln in lines[:start] if "function calls" in ln]
    return "\n".join(head + lines[start:]).rstrip()


def _before_section(old: dict) -> list[str]:
    """The ``--tag before`` run's table and profile, for the report beside this run's."""
    lines = [f"Before (`--tag before`, the code at {old.get('root')}; load: {old.get('load')}):",
             "", "| nodes | graphs/s (CPU time, median) | graphs/s (wall) |", "|---|---|---|"]
    for name, r in old["buckets"].items():
        lines.append(f"| {name} | {r['graphs_per_s_median']:,.0f} | "
                     f"{r['wall_graphs_per_s_median']:,.0f} |")
    if "profile_11_20" in old:
        lines += ["", "Profile before, 11-20 nodes (cProfile, own time):", "", "```",
                  old["profile_11_20"], "```"]
    return lines


def _bounds(name: str) -> tuple[int, int]:
    lo, hi = name.split("-")
    return int(lo), int(hi)


def versus(args: argparse.Namespace) -> dict:
    """Alternate this checkout and ``args.versus`` in subprocesses; paired rate ratios."""
    out: dict = {"roots": {"this": str(HERE.parent), "other": str(args.versus)}, "buckets": {}}
    for bucket in args.buckets:
        rates: dict[str, list[float]] = {"this": [], "other": []}
        for _ in range(args.rounds):
            for who, root in (("this", HERE.parent), ("other", args.versus)):
                cmd = [sys.executable, str(Path(__file__).resolve()), "--root", str(root),
                       "--buckets", bucket, "--count", str(args.count), "--repeats",
                       str(args.repeats), "--json-only"]
                res = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                text=True).stdout)
                rates[who].append(res["buckets"][bucket]["graphs_per_s_median"])
        ratio = statistics.median(a / b for a, b in zip(rates["this"], rates["other"],
                                                        strict=True))
        out["buckets"][bucket] = {"rates": rates, "this_over_other": ratio}
        print(f"{bucket}: this {statistics.median(rates['this']):,.0f}/s, other "
              f"{statistics.median(rates['other']):,.0f}/s, paired ratio {ratio:.3f}",
              flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=2000, help="distinct graphs per size bucket")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--buckets", nargs="*", default=list(BUCKETS), choices=BUCKETS)
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also profile 11-20 nodes: the N functions with most own time")
    ap.add_argument("--root", type=Path, default=HERE.parent,
                    help="the checkout whose mlpgraph is measured (default: this one)")
    ap.add_argument("--versus", type=Path, default=None,
                    help="another checkout: alternate with it in subprocesses, paired")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of --versus (default 6)")
    ap.add_argument("--tag", default="", help="results as pipeline_TAG.json/.md (e.g. before)")
    ap.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    _import_mlpgraph(args.root)
    from timing import cpu_idle_percent, load_label, machine_meta

    if args.versus is not None:
        idle0 = cpu_idle_percent()
        res = versus(args)
        res["load"] = load_label((idle0, cpu_idle_percent()))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "pipeline_versus.json").write_text(json.dumps(res, indent=1))
        print(res["load"])
        return
    idle0 = None if args.json_only else cpu_idle_percent()
    results = {**machine_meta(torch_too=False), "root": str(args.root), "clock": "process_time",
               "buckets": {}}
    rows = ["| nodes | graphs | graphs/s (CPU time, median) | graphs/s (wall) | parse us | "
            "simplify us | key us |", "|---|---|---|---|---|---|---|"]
    for name in args.buckets:
        lo, hi = _bounds(name)
        r = run_bucket(make_texts(lo, hi, args.count, seed=lo), args.repeats)
        results["buckets"][name] = r
        u = r["us_per_graph"]
        rows.append(f"| {name} | {r['graphs']} | {r['graphs_per_s_median']:,.0f} | "
                    f"{r['wall_graphs_per_s_median']:,.0f} | "
                    f"{u['parse']:.0f} | {u['simplify']:.0f} | {u['key']:.0f} |")
        if not args.json_only:
            print(rows[-1], flush=True)
    if args.json_only:
        print(json.dumps(results))
        return
    results["cpu_idle_before_after_percent"] = (idle0, cpu_idle_percent())
    results["load"] = load_label(results["cpu_idle_before_after_percent"])
    text = [f"Load: {results['load']}; Python {results['python']}; rates from CPU time.", "",
            *rows]
    if args.profile:
        top = profile_top(make_texts(11, 20, args.count, seed=11), args.profile)
        results["profile_11_20"] = top
        text += ["", "Profile, 11-20 nodes (cProfile, own time):", "", "```", top, "```"]
    stem = f"pipeline_{args.tag}" if args.tag else "pipeline"
    before = args.out / "pipeline_before.json"
    if not args.tag and before.is_file():  # a real run of this script on the older code
        text += ["", *_before_section(json.loads(before.read_text()))]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    (args.out / f"{stem}.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
