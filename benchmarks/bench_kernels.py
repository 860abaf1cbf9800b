"""How close do compiled MLPs get to the GEMM-only floor on the paper's MLPs?

For the standard FFN ``W2(gelu(W1(x)))`` (BERT-base 768/3072 and d=540 at each paper
width) and the paper's six searched MLPs, on 8 x 128 tokens, in one process:

- floor: the same linear layers (same in/out widths) with nothing between them,
  ``W2(W1(x))``, compiled by Inductor (``backend="inductor"``: extern addmm GEMMs);
- eager: the FX module (``backend="eager"``);
- inductor: ``backend="inductor"`` with static shapes;
- fused: ``backend="inductor-fused"``: every linear a oneDNN GEMM that also applies its
  bias and the op after it (a post-op), the rest compiled by Inductor;
- fused floor: the floor's GEMM chain through the same oneDNN GEMMs (``inductor-fused``
  of ``W2(W1(x))``), i.e. the floor of the library the fused form uses.

Timings are medians of ``--runs`` calls under ``torch.no_grad()`` with
``torch.set_num_threads(--threads)``; the variants of a case are timed round-robin, call by
call, and the whole timing is repeated ``--rounds`` times. A ratio is the median over
rounds of the per-round ratio of medians (paired, so drifts of the machine's speed
cancel); ms columns are medians over rounds. The machine's idle share before and after is
recorded, and a run on a loaded machine is labelled as such. ``--profile CASE`` prints a
``torch.profiler`` table of one case's floor, Inductor and fused forms.

    python benchmarks/bench_kernels.py [--threads 2] [--runs 20] [--rounds 9] [--only L5]
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
sys.path.insert(1, str(ROOT / "benchmarks"))

from timing import (  # noqa: E402
    cpu_idle_percent,
    interleaved,
    load_label,
    machine_meta,
    paired_ratio,
)

from mlpgraph import parse  # noqa: E402
from mlpgraph.compiler import compile_graph, count_kernels  # noqa: E402
from mlpgraph.cost import linear_shapes  # noqa: E402
from mlpgraph.paper import PAPER_D_MODEL, PAPER_LAYERS, STANDARD_FFN  # noqa: E402

CASES = [("FFN-base", STANDARD_FFN, 768, 3072)]
CASES += [(f"FFN-k{k}", STANDARD_FFN, PAPER_D_MODEL, k)
          for k in sorted({k for *_, k in PAPER_LAYERS})]
CASES += [(name, expr, PAPER_D_MODEL, k) for name, expr, _, k in PAPER_LAYERS]
TARGET = 1.05  # fused / floor
VARIANTS = ("floor", "eager", "inductor", "fused", "fused_floor")


def _floor_expr(expr: str, d: int, k: int) -> str:
    """The GEMM chain with the same (out, in) shapes as ``expr``'s linears."""
    shapes = list(linear_shapes(parse(expr), d, k).values())
    chain = "x"
    for i, _ in enumerate(shapes, 1):
        chain = f"W{i}({chain})"
    if list(linear_shapes(parse(chain), d, k).values()) != shapes:
        raise SystemExit(f"no plain GEMM chain has the shapes {shapes} of {expr}")
    return chain


def _build(expr: str, d: int, k: int, backend: str, x: torch.Tensor):
    """(module, first-call seconds, generated kernel names, extern matmuls)."""
    from torch._inductor.utils import run_and_get_code

    module = compile_graph(expr, d, k, backend, seed=0, warmup_tokens=None, dynamic=False)
    t0 = time.perf_counter()
    with torch.no_grad():
        _, codes = run_and_get_code(module, x)
    seconds = time.perf_counter() - t0
    names, mms = [], 0
    for code in codes:
        n, m = count_kernels(code)
        names, mms = names + n, mms + m
    return module, seconds, names, mms


def _fused_calls(module) -> int:
    fused = module.function.fx_module.meta["mlpgraph"].get("fused_module")
    if fused is None:
        return 0
    return sum(n.op == "call_function" and "linear_" in str(n.target) for n in fused.graph.nodes)


def run_case(name: str, expr: str, d: int, k: int, tokens: tuple[int, int], args,
             floors: dict) -> dict:
    x = torch.randn(tokens[0] * tokens[1], d, generator=torch.Generator().manual_seed(0))
    fexpr = _floor_expr(expr, d, k)
    if (fexpr, d, k) not in floors:  # one pair of floors per shape, shared by its cases
        floors[fexpr, d, k] = (_build(fexpr, d, k, "inductor", x),
                               _build(fexpr, d, k, "inductor-fused", x))
    (floor, floor_s, *_), (ffloor, *_) = floors[fexpr, d, k]
    ind, ind_s, names, mms = _build(expr, d, k, "inductor", x)
    fused, fused_s, fnames, _ = _build(expr, d, k, "inductor-fused", x)
    eager = compile_graph(expr, d, k, "eager", seed=0)
    mods = dict(zip(VARIANTS, (floor, eager, ind, fused, ffloor), strict=True))
    with torch.no_grad():
        sec = interleaved({v: (lambda m=m: m(x)) for v, m in mods.items()},
                          rounds=args.rounds, calls=args.runs, warmup=args.warmup)
    ms = {v: [s * 1e3 for s in sec[v]] for v in VARIANTS}
    row = {"case": name, "expr": expr, "compiled": str(ind.compiled_graph), "floor_expr": fexpr,
           "d_model": d, "d_inner": k, "tokens": x.shape[0], "round_medians_ms": ms,
           "inductor_compile_s": ind_s, "fused_compile_s": fused_s, "floor_compile_s": floor_s,
           "kernels": len(names), "kernel_names": names, "matmuls": mms,
           "fused_kernels": len(fnames), "fused_kernel_names": fnames,
           "fused_gemm_calls": _fused_calls(fused)}
    for v in VARIANTS:
        row[f"{v}_ms"] = statistics.median(ms[v])
    for v in ("eager", "inductor", "fused", "fused_floor"):
        row[f"{v}_over_floor"] = paired_ratio(ms[v], ms["floor"])
    row["fused_over_fused_floor"] = paired_ratio(ms["fused"], ms["fused_floor"])
    return row


def profile_case(expr: str, d: int, k: int, tokens: tuple[int, int]) -> None:
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(tokens[0] * tokens[1], d)
    for label, e, backend in (("floor", _floor_expr(expr, d, k), "inductor"),
                              ("inductor", expr, "inductor"), ("fused", expr, "inductor-fused")):
        module = _build(e, d, k, backend, x)[0]
        with torch.no_grad():
            for _ in range(5):
                module(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(20):
                    module(x)
        print(f"== {label}: {e} ({backend})")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def write_results(rows: list[dict], out: Path, args, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"Load: {meta['load']}.",
        "",
        f"GEMM-epilogue fusion vs the GEMM-only floor (torch {meta['torch']}, "
        f"{meta['threads']} threads, {meta['cpu_capability']}, "
        f"{rows[0]['tokens'] if rows else 0} tokens; {args.rounds} rounds of {args.runs} "
        "interleaved calls; ms: median over rounds of per-round medians; ratios: median "
        "over rounds of per-round ratios; machine CPU idle before/after: "
        f"{'/'.join('?' if v is None else f'{v:.0f}%' for v in meta['cpu_idle'])})",
        "",
        "| case | expression | d | k | floor ms | eager ms | inductor ms | fused ms "
        "| fused/floor | inductor/floor | eager/floor | fused/fused-floor | fused GEMM calls "
        "| fused-form kernels | inductor kernels |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = "" if r["fused_over_floor"] <= TARGET else " (miss)"
        lines.append(
            f"| {r['case']} | `{r['expr']}` | {r['d_model']} | {r['d_inner']} "
            f"| {r['floor_ms']:.3f} | {r['eager_ms']:.3f} | {r['inductor_ms']:.3f} "
            f"| {r['fused_ms']:.3f} | {r['fused_over_floor']:.3f}{ok} "
            f"| {r['inductor_over_floor']:.3f} | {r['eager_over_floor']:.3f} "
            f"| {r['fused_over_fused_floor']:.3f} | {r['fused_gemm_calls']} "
            f"| {r['fused_kernels']} | {r['kernels']} |")
    (out / "kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="calls per round per variant")
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
        row = run_case(name, expr, d, k, tokens, args, floors)
        print(f"{name:9s} floor {row['floor_ms']:.3f} ms  fused {row['fused_ms']:.3f} ms "
              f"({row['fused_over_floor']:.3f}x, same-library {row['fused_over_fused_floor']:.3f}x)"
              f"  inductor {row['inductor_over_floor']:.3f}x  eager {row['eager_over_floor']:.3f}x",
              flush=True)
        rows.append(row)
    idle = (idle_before, cpu_idle_percent())
    meta = {**machine_meta(), "target": TARGET, "runs": args.runs, "rounds": args.rounds,
            "cpu_idle": idle, "load": load_label(idle)}
    write_results(rows, args.out, args, meta)
    return 0 if all(r["fused_over_floor"] <= TARGET for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
