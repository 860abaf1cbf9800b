"""Search controllers at equal budgets: the whole main job per controller and search seed.

Protocol (every number comes from real runs of ``efficientbert run`` on ``movie_binary`` with
the fine-tuned MiniLM teacher, the default preset):

1. Search seed ``s``, evolution: the default pipeline with ``--seed s`` (it warms up its own
   supernet). Random sampling and the paper's seed-mutating controller: the same pipeline with
   the controller of all three stages swapped, starting from seed ``s``'s warmed-up supernet
   (``--supernet``). So at each seed the controllers share the teacher, the warm-up, the
   evaluation budgets, rungs and controls, and the final seeds.
2. Each run's final step trains the winner, the same-shape standard FFN and the equal-size
   FFN over ``--final-seeds`` paired seeds; evolution's runs also train ``--fixed`` (the best
   fixed MLP of ``bench_final_panel``) at the winner's shape.
3. Reported: per run, winner - FFN; per seed, evolution's winner - each other controller's
   winner (paired over the final seeds); across seeds, the per-seed means compared with a t
   interval over search seeds (the search seed is the random unit of a controller).

A run folder is ``--work-dir/<controller>-seed<s>``, an ordinary run folder (resumable; a
folder of an earlier ``efficientbert run`` with the same settings may be linked there).
``results/search.json`` and ``search.md`` are rewritten after every run::

    python benchmarks/bench_search.py --seeds 0 1 2
    python benchmarks/bench_search.py --report
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from distill.stats import paired, verdict
from searcher.run import run_pipeline
from searcher.run_config import Pipeline, quick_preset

RESULTS = Path(__file__).parent / "results"
CONTROLLERS = ("evolution", "random", "paper")
BEST_FIXED = "W2(squared_relu(W1(x)))"


def pipeline_for(controller: str, seed: int, final_seeds: int, fixed: list[str]) -> Pipeline:
    """The default pipeline with every stage's controller set to ``controller``."""
    p = quick_preset()
    stages = [s.but(controller={**s.controller.dump(), "kind": controller}) for s in p.stages]
    name = p.name if controller == "evolution" else f"{p.name}-{controller}"
    return p.but(name=name, seed=seed, stages=[s.dump() for s in stages],
                 final={**p.final.dump(), "seeds": final_seeds,
                        "fixed": fixed if controller == "evolution" else []})


def one_run(controller: str, seed: int, args: argparse.Namespace) -> dict[str, Any] | None:
    """The run's results, running or resuming it unless ``--report``."""
    folder = args.work_dir / f"{controller}-seed{seed}"
    pipe = pipeline_for(controller, seed, args.final_seeds, args.fixed)
    done, stored = folder / "results.json", folder / "pipeline.json"
    if done.is_file() and (args.report or json.loads(stored.read_text())
                           == json.loads(pipe.to_json())):
        return json.loads(done.read_text())
    if args.report:
        return None
    warm = None if controller == "evolution" else (
        args.work_dir / f"evolution-seed{seed}" / "warmup" / "stage1")
    return run_pipeline(pipe, folder, resume=stored.is_file(),
                        cache_dir=args.cache_dir, progress=False,
                        log=lambda s: print(s, flush=True), supernet=warm)


def per_seed(res: dict[str, Any], arm: str, metric: str, scale: float = 1.0) -> list[float]:
    """``arm``'s per-final-seed values of ``metric`` (``kd_loss`` or ``test/accuracy``)."""
    values = res["final"]["comparison"][metric]["winner" if arm == "winner" else "baseline"]
    return [scale * v for v in values]


def row(res: dict[str, Any]) -> dict[str, Any]:
    final = res["final"]
    test = f"{final['splits']['test']}/accuracy"

    def comp(key: str, metric: str) -> dict[str, Any] | None:
        c = final.get(key, {}).get(metric)
        return None if c is None else {k: c[k] for k in ("delta_mean", "ci95", "seeds")}

    return {"controller": res["pipeline"]["stages"][0]["controller"]["kind"],
            "seed": res["pipeline"]["seed"], "winner": final["winner"]["describe"],
            "winner_is_ffn": final.get("same_as", {}).get("baseline") == "winner",
            "winner_is_fixed": final.get("same_as", {}).get("fixed1") == "winner",
            "fallback": [("-" if "fallback" not in s else "yes" if s["fallback"] else "no")
                         for s in res["stages"]],  # "-": run older than the fallback rule
            "final_seeds": final["seeds"],
            "kd_loss": {k: final[k]["kd"].get("kd_loss") for k in
                        ("winner", "baseline", "equal_params", "fixed1") if k in final},
            "vs_ffn": {"kd_loss": comp("comparison", "kd_loss"),
                       "test_accuracy": comp("comparison", test)},
            "vs_equal": {"kd_loss": comp("comparison_equal_params", "kd_loss"),
                         "test_accuracy": comp("comparison_equal_params", test)},
            "vs_fixed": {"kd_loss": comp("comparison_fixed1", "kd_loss"),
                         "test_accuracy": comp("comparison_fixed1", test)},
            "search_minutes": sum(s["seconds"] for s in res["stages"]) / 60,
            "per_seed": {"kd_loss": per_seed(res, "winner", "kd_loss"),
                         "test_accuracy": per_seed(res, "winner", test, 100.0),  # points
                         "ffn_kd_loss": per_seed(res, "baseline", "kd_loss"),
                         "ffn_test_accuracy": per_seed(res, "baseline", test, 100.0)}}


LABELS = {"kd_loss": "kd_loss", "test_accuracy": "test accuracy (points)"}


def two_ways(a: list[list[float]], b: list[list[float]], metric: str, name_a: str,
             name_b: str) -> dict[str, Any]:
    """``a - b``, where ``a[i]`` and ``b[i]`` are search seed ``i``'s values paired over its
    final seeds: (across) each search seed's means, a t interval over search seeds (the
    search seed is the unit); (pooled) every (search seed, final seed) pair, which ignores
    that the pairs of one search seed share its winner."""
    out = {}
    for kind, (x, y) in (("across", ([float(np.mean(v)) for v in a],
                                     [float(np.mean(v)) for v in b])),
                         ("pooled", ([v for vs in a for v in vs], [v for vs in b for v in vs]))):
        p = paired(x, y)
        out[kind] = {**p.to_dict(), "verdict": verdict(
            p, LABELS[metric], name_a, f"{name_b} ({kind})", higher_is_better=metric != "kd_loss")}
    return out


def versus(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Evolution's winner - each other controller's, per seed and across search seeds."""
    by = {(r["controller"], r["seed"]): r for r in rows}
    out: dict[str, Any] = {}
    for other in CONTROLLERS[1:]:
        seeds = sorted(s for c, s in by if c == other and ("evolution", s) in by
                       and by[(c, s)]["final_seeds"] == by[("evolution", s)]["final_seeds"])
        if not seeds:
            continue
        evo = [by[("evolution", s)]["per_seed"] for s in seeds]
        oth = [by[(other, s)]["per_seed"] for s in seeds]
        out[other] = {"seeds": seeds, "per_seed": {
            s: {m: paired(e[m], o[m]).to_dict() for m in LABELS}
            for s, e, o in zip(seeds, evo, oth, strict=True)}}
        out[other].update({m: two_ways([e[m] for e in evo], [o[m] for o in oth], m,
                                       "evolution", other) for m in LABELS})
    return out


def controller_vs_ffn(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per controller and metric: winner - same-shape FFN, both ways (:func:`two_ways`)."""
    out: dict[str, Any] = {}
    for c in CONTROLLERS:
        rs = [r for r in rows if r["controller"] == c]
        if len(rs) >= 2:
            out[c] = {m: {**two_ways([r["per_seed"][m] for r in rs],
                                     [r["per_seed"][f"ffn_{m}"] for r in rs], m,
                                     f"{c}'s winner", "FFN"), "seeds": [r["seed"] for r in rs]}
                      for m in LABELS}
    return out


def ci(c: dict[str, Any] | None, scale: float = 1.0, digits: int = 4) -> str:
    if c is None:
        return "-"
    lo, hi = c["ci95"]
    d = digits
    return f"{scale * c['delta_mean']:+.{d}f} [{scale * lo:+.{d}f}, {scale * hi:+.{d}f}]"


def write(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    vs, ffn = versus(rows), controller_vs_ffn(rows)
    (RESULTS / "search.json").write_text(json.dumps(
        {"rows": rows, "versus_evolution": vs, "vs_ffn_across_seeds": ffn}, indent=2) + "\n")
    lines = ["# Search controllers at equal budgets (`movie_binary`, default pipeline)", "",
             f"Command: `python benchmarks/bench_search.py --seeds "
             f"{' '.join(map(str, args.seeds))} --final-seeds {args.final_seeds}`", "",
             "Each run is the whole main job (warm-up, stages 1-3, final) with the given "
             "controller in every stage; at a search seed the controllers share the warm-up "
             "supernet and the final seeds. kd_loss: the task-KD objective on held-out rows "
             "(lower is better); test accuracy in points. Differences: a - b, paired over the "
             f"final seeds, 95% t interval. Fixed: `{BEST_FIXED}` on every layer at the "
             "winner's shape (evolution only).", "",
             "| controller | seed | winner | winner kd | FFN kd | winner - FFN kd | "
             "winner - FFN test | winner - equal-size FFN kd | winner - fixed kd | "
             "fallback (stage 1, 2) | search min |", "|---" * 11 + "|"]
    for r in rows:
        kd = r["kd_loss"]
        lines.append(
            f"| {r['controller']} | {r['seed']} | `{r['winner']}` | {kd['winner']:.4f} | "
            f"{kd['baseline']:.4f} | "
            + ("(is the FFN)" if r["winner_is_ffn"] else ci(r["vs_ffn"]["kd_loss"]))
            + f" | {ci(r['vs_ffn']['test_accuracy'], 100, 2)} | {ci(r['vs_equal']['kd_loss'])}"
            " | " + ("(is the fixed MLP)" if r["winner_is_fixed"] else ci(r["vs_fixed"]["kd_loss"]))
            + f" | {', '.join(map(str, r['fallback'][:2]))} | "
            f"{r['search_minutes']:.1f} |")
    lines += ["", "Evolution's winner - the other controller's winner, per search seed "
              "(paired over the final seeds):", "",
              "| other | seed | kd_loss | test accuracy (points) |", "|---|---|---|---|"]
    for other, v in vs.items():
        for s, p in v["per_seed"].items():
            lines.append(f"| {other} | {s} | {ci(p['kd_loss'])} | "
                         f"{ci(p['test_accuracy'], 1, 2)} |")
    lines += ["", "Across search seeds: (across) each search seed's mean over its final "
              "seeds, t interval over search seeds (the search seed is the unit); (pooled) "
              "every (search seed, final seed) pair, t interval over pairs (narrower: it "
              "ignores that the pairs of one search seed share its winner):", ""]
    lines += [f"- {v[m][k]['verdict']}" for v in ffn.values() for m in LABELS
              for k in ("across", "pooled")]
    lines += [f"- {v[m][k]['verdict']} (search seeds {v['seeds']})" for v in vs.values()
              for m in LABELS for k in ("across", "pooled")]
    lines += ["", "Targets (issue 10):", ""] + targets(rows, vs)
    (RESULTS / "search.md").write_text("\n".join(lines) + "\n")


def targets(rows: list[dict[str, Any]], vs: dict[str, Any]) -> list[str]:
    """Item 10's targets, seed by seed, as counts."""
    evo = [r for r in rows if r["controller"] == "evolution"]

    def below(c: dict[str, Any] | None) -> bool:
        return c is not None and c["ci95"][1] < 0

    tests = [r["vs_ffn"]["test_accuracy"] for r in evo]
    out = [f"- evolution's winner below the same-shape FFN in held-out KD loss, CI excluding "
           f"0: {sum(below(r['vs_ffn']['kd_loss']) for r in evo)} of {len(evo)} search seeds"]
    for other, v in vs.items():
        per = v["per_seed"].values()
        out.append(f"- below {other}'s winner, CI excluding 0: "
                   f"{sum(below(p['kd_loss']) for p in per)} of {len(per)} search seeds")
    out.append("- test accuracy minus the same-shape FFN's, mean no lower than -0.3 points: "
               f"{sum(t is not None and 100 * t['delta_mean'] >= -0.3 for t in tests)} of "
               f"{len(tests)} search seeds; CI lower end above -0.3 points: "
               f"{sum(t is not None and 100 * t['ci95'][0] > -0.3 for t in tests)}; CI above "
               f"0 (the goal beyond): {sum(t is not None and t['ci95'][0] > 0 for t in tests)}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--controllers", nargs="+", default=list(CONTROLLERS),
                    choices=list(CONTROLLERS))
    ap.add_argument("--final-seeds", type=int, default=5)
    ap.add_argument("--fixed", nargs="*", default=[BEST_FIXED],
                    help="fixed MLPs trained beside evolution's winner at its shape")
    ap.add_argument("--work-dir", type=Path, default=RESULTS / "search_runs")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--report", action="store_true", help="only tabulate finished runs")
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        for ctl in sorted(args.controllers, key=CONTROLLERS.index):  # evolution warms up first
            res = one_run(ctl, seed, args)
            if res is not None:
                rows.append(row(res))
                write(rows, args)
    write(rows, args)


if __name__ == "__main__":
    main()
