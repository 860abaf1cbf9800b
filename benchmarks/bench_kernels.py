"""How close does Inductor get to the GEMM-only floor on the paper's MLPs?

For the standard FFN ``W2(gelu(W1(x)))`` (BERT-base 768/3072 and d=540 at each paper
width) and the paper's six searched MLPs, on 8 x 128 tokens, in one process:

- floor: the same linear layers (same in/out widths) with nothing between them,
  ``W2(W1(x))``, compiled by Inductor;
- eager: the FX module (``backend="eager"``);
- inductor: ``backend="inductor"`` with static shapes.

Timings are medians of ``--runs`` calls after ``--warmup`` calls under ``torch.no_grad()``
with ``torch.set_num_threads(2)``; the three variants of a case are timed round-robin so
that load from other processes hits them alike, and the whole timing is repeated
``--rounds`` times. A ratio to the floor is the median over rounds of the ratio of the two
medians of that round (paired, so drifts of the machine's speed cancel); the ms columns
are medians over rounds. Writes ``benchmarks/results/kernels.json``
and ``kernels.md``. ``--profile CASE`` prints a ``torch.profiler`` table for one case.

    python benchmarks/bench_kernels.py [--runs 20] [--rounds 9] [--only L5] [--profile L5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlpgraph import parse  # noqa: E402
from mlpgraph.compiler import compile_graph, count_kernels  # noqa: E402
from mlpgraph.cost import linear_shapes  # noqa: E402

D_PAPER = 540
FFN = "W2(gelu(W1(x)))"
PAPER = [  # (name, expression, k) -- the paper's stage-2 expressions at their stage-3 widths
    ("L1", "tanh(W2(gelu(W1(x))))", 270),
    ("L2", "elu(W2(gelu(W1(x))))", 540),
    ("L3", "sigmoid(W2(relu(W1(x))))", 270),
    ("L4", "W2(gelu(W1(max(x, tanh(x)))))", 270),
    ("L5", "W2(relu(W1(x) * x))", 270),
    ("L6", "leaky_relu(W2(gelu(W1(x))))", 180),
]
CASES = [("FFN-base", FFN, 768, 3072)]
CASES += [(f"FFN-k{k}", FFN, D_PAPER, k) for k in sorted({k for _, _, k in PAPER})]
CASES += [(name, expr, D_PAPER, k) for name, expr, k in PAPER]
TARGET = 1.10


def _floor_expr(expr: str, d: int, k: int) -> str:
    """The GEMM chain with the same (out, in) shapes as ``expr``'s linears."""
    shapes = list(linear_shapes(parse(expr), d, k).values())
    chain = "x"
    for i, (_o, _i) in enumerate(shapes, 1):
        chain = f"W{i}({chain})"
    floor = linear_shapes(parse(chain), d, k)
    if list(floor.values()) != shapes:
        raise SystemExit(f"no plain GEMM chain has the shapes {shapes} of {expr}")
    return chain


def _compile_inductor(expr: str, d: int, k: int, x: torch.Tensor):
    from torch._inductor.utils import run_and_get_code

    module = compile_graph(expr, d, k, "inductor", seed=0, warmup_tokens=None, dynamic=False)
    t0 = time.perf_counter()
    with torch.no_grad():
        _, codes = run_and_get_code(module, x)
    seconds = time.perf_counter() - t0
    names, mms = [], 0
    for code in codes:
        n, m = count_kernels(code)
        names, mms = names + n, mms + m
    return module, seconds, names, mms


def _time(fns: dict, x: torch.Tensor, runs: int, warmup: int, rounds: int
          ) -> dict[str, tuple[list[float], float]]:
    """Per variant (ms): the median of ``runs`` round-robin calls in each of ``rounds``
    rounds, and the single fastest call (the least disturbed by other processes)."""
    out: dict[str, tuple[list[float], float]] = {name: ([], float("inf")) for name in fns}
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns.values():
                fn(x)
        for _ in range(rounds):
            samples: dict[str, list[float]] = {name: [] for name in fns}
            for _ in range(runs):
                for name, fn in fns.items():
                    t0 = time.perf_counter()
                    fn(x)
                    samples[name].append(time.perf_counter() - t0)
            for name, s in samples.items():
                meds, low = out[name]
                out[name] = (meds + [statistics.median(s) * 1e3], min(low, min(s) * 1e3))
    return out


def _paired(a: list[float], b: list[float]) -> float:
    """Median over rounds of a/b: both were timed in the same round, so machine-wide
    slowdowns (this VM's GEMM speed drifts by up to 30% between rounds) cancel."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def run_case(name: str, expr: str, d: int, k: int, tokens: tuple[int, int], runs: int,
             warmup: int, rounds: int, floors: dict) -> dict:
    x = torch.randn(*tokens, d, generator=torch.Generator().manual_seed(0))
    fkey = (_floor_expr(expr, d, k), d, k)
    if fkey not in floors:  # one floor (and its profile) per shape, shared by its cases
        floors[fkey] = (*_compile_inductor(fkey[0], d, k, x)[:2],
                        kernel_breakdown(fkey[0], d, k, x))
    floor, floor_s, floor_profile = floors[fkey]
    ind, ind_s, names, mms = _compile_inductor(expr, d, k, x)
    eager = compile_graph(expr, d, k, "eager", seed=0)
    ms = _time({"floor": floor, "eager": eager, "inductor": ind}, x, runs, warmup, rounds)
    prof = {"floor": floor_profile, "inductor": kernel_breakdown(expr, d, k, x)}
    return {"case": name, "expr": expr, "compiled": str(ind.compiled_graph), "floor_expr": fkey[0],
            "d_model": d, "d_inner": k, "tokens": tokens[0] * tokens[1],
            "floor_ms": statistics.median(ms["floor"][0]),
            "eager_ms": statistics.median(ms["eager"][0]),
            "inductor_ms": statistics.median(ms["inductor"][0]),
            "round_medians_ms": {k: v[0] for k, v in ms.items()},
            "inductor_over_floor": _paired(ms["inductor"][0], ms["floor"][0]),
            "eager_over_floor": _paired(ms["eager"][0], ms["floor"][0]),
            "floor_min_ms": ms["floor"][1], "inductor_min_ms": ms["inductor"][1],
            "inductor_over_floor_min": ms["inductor"][1] / ms["floor"][1],
            "inductor_compile_s": ind_s, "floor_compile_s": floor_s,
            "kernels": len(names), "kernel_names": names, "matmuls": mms, "profile_ms": prof}


def kernel_breakdown(expr: str, d: int, k: int, x: torch.Tensor, calls: int = 20
                     ) -> dict[str, float]:
    """Per-call ms of each kind of work, from ``torch.profiler`` with Inductor's kernel
    profiling on: ``gemm`` (aten addmm/mm and the bias copy they do), each fused kernel by
    name, and ``other`` (the rest of the compiled call: wrapper, guards, allocation)."""
    from torch.profiler import ProfilerActivity, profile

    from mlpgraph.codegen import build_functional, weight_arg_names

    g = parse(expr)
    has_bias = dict.fromkeys(g.linears, True)
    fgm = build_functional(g, d, k, has_bias=has_bias, compiled_forms=True)
    shapes = linear_shapes(g, d, k)
    gen = torch.Generator().manual_seed(0)
    ws = [torch.randn(*(shapes[m] if kind == "weight" else shapes[m][:1]), generator=gen) * 0.05
          for m, kind in weight_arg_names(g, has_bias)]
    with torch._inductor.config.patch({"cpp.enable_kernel_profile": True}):
        fn = torch.compile(fgm.forward, dynamic=False)
        with torch.no_grad():
            for _ in range(5):
                fn(x, *ws)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(calls):
                    fn(x, *ws)
    out: dict[str, float] = {"gemm": 0.0, "other": 0.0}
    total = 0.0
    for ev in prof.key_averages():
        ms = ev.self_cpu_time_total / 1e3 / calls
        total += ms
        if ev.key in ("aten::addmm", "aten::mm", "aten::copy_"):
            out["gemm"] += ms
        elif "cpp_fused" in ev.key:
            out[ev.key] = out.get(ev.key, 0.0) + ms
        else:
            out["other"] += ms
    out["total"] = total
    return out


def profile_case(expr: str, d: int, k: int, tokens: tuple[int, int]) -> None:
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(*tokens, d)
    floor_expr = _floor_expr(expr, d, k)
    for label, e in (("floor", floor_expr), ("inductor", expr)):
        module, *_ = _compile_inductor(e, d, k, x)
        with torch.no_grad():
            for _ in range(5):
                module(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(20):
                    module(x)
        print(f"== {label}: {e}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def cpu_idle_percent(seconds: float = 2.0) -> float | None:
    """Machine-wide idle CPU share over ``seconds`` (Linux ``/proc/stat``), else None."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 100.0 * (idle1 - idle0) / max(1, total1 - total0)


def _profile_cell(r: dict) -> str:
    p = r.get("profile_ms")
    if not p:
        return "-"
    fused = {n: v for n, v in p["inductor"].items() if "cpp_fused" in n}
    kern = " + ".join(f"{v:.2f}" for v in fused.values()) or "0"
    return f"{p['floor']['gemm']:.2f} / {p['inductor']['gemm']:.2f}, {kern}"


def write_results(rows: list[dict], out: Path, runs: int, rounds: int,
                  idle: tuple[float | None, float | None]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "target": TARGET,
            "runs": runs, "rounds": rounds, "cpu_idle_before_after_percent": idle}
    (out / "kernels.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"Inductor vs the GEMM-only floor (torch {meta['torch']}, {meta['threads']} threads, "
        f"{meta['cpu_capability']}, {rows[0]['tokens'] if rows else 0} tokens; "
        f"{meta['rounds']} rounds of {meta['runs']} interleaved calls each; "
        "ms: median over rounds of per-round medians; "
        "ratios: median over rounds of per-round ratios; machine CPU idle before/after: "
        f"{idle[0] if idle[0] is None else round(idle[0])}%/"
        f"{idle[1] if idle[1] is None else round(idle[1])}%)",
        "",
        "| case | expression | d | k | floor ms | eager ms | inductor ms | inductor/floor "
        "| eager/floor | inductor/floor (fastest calls) | kernels | matmuls | compile s "
        "| profiled ms/call: GEMMs floor / inductor, fused kernels |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = "" if r["inductor_over_floor"] <= TARGET else " (miss)"
        lines.append(
            f"| {r['case']} | `{r['expr']}` | {r['d_model']} | {r['d_inner']} "
            f"| {r['floor_ms']:.3f} | {r['eager_ms']:.3f} | {r['inductor_ms']:.3f} "
            f"| {r['inductor_over_floor']:.3f}{ok} | {r['eager_over_floor']:.3f} "
            f"| {r['inductor_over_floor_min']:.3f} | {r['kernels']} | {r['matmuls']} "
            f"| {r['inductor_compile_s']:.1f} | {_profile_cell(r)} |")
    (out / "kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=9,
                    help="repeat the timing; ratios are medians of per-round ratios (default 9)")
    ap.add_argument("--only", nargs="*", default=None, help="case names to run")
    ap.add_argument("--profile", default=None, help="profile one case and exit")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tokens = (8, 128)
    cases = {c[0]: c for c in CASES}
    if args.profile:
        _, expr, d, k = cases[args.profile]
        profile_case(expr, d, k, tokens)
        return 0
    chosen = [cases[n] for n in args.only] if args.only else CASES
    floors: dict = {}
    rows = []
    idle_before = cpu_idle_percent()
    for name, expr, d, k in chosen:
        row = run_case(name, expr, d, k, tokens, args.runs, args.warmup, args.rounds,
                       floors)
        print(f"{name:9s} floor {row['floor_ms']:.3f} ms  inductor {row['inductor_ms']:.3f} ms "
              f"({row['inductor_over_floor']:.3f}x)  eager {row['eager_ms']:.3f} ms  "
              f"kernels {row['kernels']} mm {row['matmuls']}  compile "
              f"{row['inductor_compile_s']:.1f} s", flush=True)
        rows.append(row)
    write_results(rows, args.out, args.runs, args.rounds, (idle_before, cpu_idle_percent()))
    return 0 if all(r["inductor_over_floor"] <= TARGET for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
