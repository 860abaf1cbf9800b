"""Where the time of one search candidate goes: ``distill.scoring.score`` phase by phase.

Scores one candidate ``--repeats`` times in one process with the score budget of a run's
stage (``RUN/stage<N>/search_config.json``: the warmed supernet, the fine-tuned teacher, the
teacher-output caches of the training and fitness rows, KD steps...), each phase timed by
wrapping the functions ``score`` calls (nothing in ``distill`` is changed):

- ``supernet``: loading the warmed supernet (first call only: cached per process);
- ``extract``: the candidate's student from the supernet (weights copied);
- ``data``: the teacher folder, the tokenized splits (cached per process);
- ``teacher outputs``: the cached teacher outputs of the training rows (cached per process);
- ``kd setup``: the KD phase other than its steps (loss, fit_dense, optimizer, data order);
- ``kd steps``: the optimizer steps (forward, loss, backward, update);
- ``fitness``: KD loss, teacher KL and task metrics on the held-out fitness rows
  (or ``evaluate`` on the held-out split without fitness caches);
- ``latency``: the timed forward passes (``latency_repeats``; 0 in the quick preset);
- ``other``: the rest of ``score`` (the result record, bookkeeping).

The first call pays the per-process caches; a search worker pays them once and then the
"repeat" cost per candidate, the figure that matters. CPU time of the process and wall
time are both recorded. ``--profile N`` adds the N functions with the most cumulative time
in one repeated call (cProfile).

    python benchmarks/bench_candidate.py --run /work/runs/q1-seed0 [--stage 1] [--repeats 3]
    python benchmarks/bench_candidate.py --supernet RUN/warmup/stage1 --teacher DIR \\
        --fitness DIR1 DIR2 --kd-steps 40 --expr "W2(gelu(W1(x)))" --stacks 1 --ratio 1/2
"""

from __future__ import annotations

import argparse
import ast
import cProfile
import dataclasses
import io
import json
import pstats
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from timing import cpu_idle_percent, load_label, machine_meta  # noqa: E402

import distill.loop as loop_mod  # noqa: E402
import distill.scoring as score_mod  # noqa: E402
import distill.supernet as supernet_mod  # noqa: E402
from distill.scoring import ScoreBudget  # noqa: E402
from searcher.candidate import Candidate, uniform_candidate  # noqa: E402

PHASES = ("supernet", "extract", "data", "teacher outputs", "kd setup", "kd steps", "fitness",
          "latency", "other")


class PhaseClock:
    """Wraps the functions ``score`` calls; sums wall and CPU seconds per phase."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.steps = 0

    def wrap(self, owner: object, name: str, phase: str) -> None:
        fn = getattr(owner, name)

        def timed(*args, **kwargs):
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall[phase] += time.perf_counter() - w0
                self.cpu[phase] += time.process_time() - c0
                self.steps += phase == "kd steps"

        setattr(owner, name, timed)

    def install(self) -> None:
        self.wrap(score_mod, "_supernet", "supernet")
        self.wrap(supernet_mod.Supernet, "extract", "extract")
        for name in ("_teacher_dir", "_splits"):
            self.wrap(score_mod, name, "data")
        self.wrap(score_mod, "_outputs", "teacher outputs")
        self.wrap(score_mod, "kd_phase", "kd setup")  # steps are subtracted below
        self.wrap(loop_mod, "_step", "kd steps")
        for name in ("_kd_fitness", "evaluate", "_reported"):
            self.wrap(score_mod, name, "fitness")
        self.wrap(score_mod, "measure_latency", "latency")

    def take(self, total_wall: float, total_cpu: float) -> dict[str, dict[str, float]]:
        """This call's seconds per phase (``kd setup`` without the steps), then reset."""
        out = {}
        for clock, total in ((self.wall, total_wall), (self.cpu, total_cpu)):
            clock["kd setup"] -= clock["kd steps"]
            clock["other"] = total - sum(clock[p] for p in PHASES if p != "other")
        out = {"wall": {p: self.wall[p] for p in PHASES}, "cpu": {p: self.cpu[p] for p in PHASES},
               "total_wall": total_wall, "total_cpu": total_cpu, "steps": self.steps}
        self.wall.clear()
        self.cpu.clear()
        self.steps = 0
        return out


def _literal(value):
    """A field of a serialized ScoreBudget: tuples were written with str()."""
    if isinstance(value, str) and value[:1] == "(":
        return ast.literal_eval(value)  # literals only, never code
    return value


def budget_of(a: argparse.Namespace) -> ScoreBudget:
    fields = {}
    if a.run is not None:
        cfg = json.loads((a.run / f"stage{a.stage}" / "search_config.json").read_text())
        fields = {k: _literal(v) for k, v in cfg["score_budget"].items()}
    for key, value in (("supernet", a.supernet), ("teacher", a.teacher),
                       ("kd_steps", a.kd_steps), ("latency_repeats", a.latency_repeats)):
        if value is not None:
            fields[key] = str(value) if isinstance(value, Path) else value
    if a.fitness is not None:
        fields["fitness"] = tuple(str(f) for f in a.fitness)
    if "supernet" not in fields:
        raise SystemExit("give --run RUN_DIR (a folder of `efficientbert run`) or --supernet")
    return ScoreBudget.from_dict(fields)


def candidate_of(a: argparse.Namespace, hidden: int) -> Candidate:
    if a.expr is not None:
        return uniform_candidate(a.expr, a.stacks, a.ratio, a.layers)
    if a.run is None:
        raise SystemExit("give --expr (with --layers, --stacks, --ratio) or --run")
    stage = json.loads((a.run / f"stage{a.stage}" / "stage.json").read_text())
    return Candidate.from_dict(stage["winner"])


def profile_call(spec, budget: ScoreBudget, top: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    score_mod.score(spec, budget)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=None, help="a run folder of `efficientbert run`")
    ap.add_argument("--stage", type=int, default=1)
    ap.add_argument("--supernet", type=Path, default=None, help="warmed supernet folder")
    ap.add_argument("--teacher", type=Path, default=None, help="fine-tuned teacher folder")
    ap.add_argument("--fitness", type=Path, nargs="*", default=None,
                    help="teacher-output caches of the held-out fitness rows")
    ap.add_argument("--kd-steps", type=int, default=None)
    ap.add_argument("--latency-repeats", type=int, default=None)
    ap.add_argument("--expr", default=None, help="score this expression in every layer "
                    "(default: the stage's winner)")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--stacks", type=int, default=1)
    ap.add_argument("--ratio", default="1/2")
    ap.add_argument("--repeats", type=int, default=3, help="calls after the first")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--profile", type=int, default=0, metavar="N")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    budget = budget_of(a)
    hidden = json.loads((Path(budget.supernet) / "config.json").read_text())["hidden"]
    cand = candidate_of(a, hidden)
    spec = cand.spec(hidden)
    clock = PhaseClock()
    clock.install()
    idle0 = cpu_idle_percent()
    calls = []
    for i in range(1 + a.repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = score_mod.score(spec, budget)
        calls.append(clock.take(time.perf_counter() - w0, time.process_time() - c0))
        print(f"call {i}: {calls[-1]['total_wall']:.2f} s wall, "
              f"{calls[-1]['total_cpu']:.2f} s CPU, metrics {result.metrics}", flush=True)
    idle = (idle0, cpu_idle_percent())
    rep = calls[1:] or calls
    med = {k: {p: statistics.median(c[k][p] for c in rep) for p in PHASES}
           for k in ("wall", "cpu")}
    res = {"candidate": cand.describe(), "budget": {k: str(v) for k, v in
                                                     dataclasses.asdict(budget).items()},
           "calls": calls, "repeat_median": med, "meta": machine_meta(), "cpu_idle": idle,
           "load": load_label(idle)}
    if a.profile:
        res["profile"] = profile_call(spec, budget, a.profile)
    write(a, res)


def write(a: argparse.Namespace, res: dict) -> None:
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "candidate.json").write_text(json.dumps(res, indent=1))
    first, med = res["calls"][0], res["repeat_median"]
    steps = res["calls"][-1]["steps"]
    lines = [f"Load: {res['load']}.", "",
             f"One stage-{a.stage} candidate through `distill.scoring.score` "
             f"(`{res['candidate']}`, {steps} KD steps, {res['meta']['threads']} torch "
             f"thread(s)); seconds: the first call in a process, then the median of "
             f"{max(1, len(res['calls']) - 1)} repeated calls", "",
             "| phase | first call s (wall) | repeated s (wall) | repeated s (CPU) | share |",
             "|---|---|---|---|---|"]
    total = sum(med["wall"].values())
    for p in PHASES:
        lines.append(f"| {p} | {first['wall'][p]:.3f} | {med['wall'][p]:.3f} "
                     f"| {med['cpu'][p]:.3f} | {med['wall'][p] / total:.0%} |")
    lines.append(f"| total | {first['total_wall']:.3f} | {total:.3f} "
                 f"| {sum(med['cpu'].values()):.3f} | |")
    if "profile" in res:
        lines += ["", "```", res["profile"].strip(), "```"]
    (a.out / "candidate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
