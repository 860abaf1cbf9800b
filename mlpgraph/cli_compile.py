"""``efficientbert compile EXPR``: compile one MLP expression and show what was generated.

    efficientbert compile "W2(gelu(W1(x)))" --d-model 540 --d-inner 270 \\
        --backend inductor --out out/

prints the compile time and, for Inductor, how many fused kernels and matrix products
it generated; ``--out DIR`` writes the FX code and Inductor's output code there.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .cli_common import EXIT_CODES_HELP, Parents, positive_int
from .compiler import BACKENDS, compile_graph, inspect_inductor
from .parser import parse


def register(subparsers: argparse._SubParsersAction, parents: Parents) -> argparse.ArgumentParser:
    """Add the ``compile`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "compile", help="compile an MLP expression and report its kernels",
        parents=[parents.runtime], epilog=EXIT_CODES_HELP,
        description="Compile an MLP expression (e.g. 'W2(gelu(W1(x)))') with a backend and "
                    "report compile time, and for inductor the generated kernels.")
    p.add_argument("expr", help="the MLP expression, e.g. 'W2(relu(W1(x) * x))'")
    p.add_argument("--d-model", type=positive_int, default=540,
                   help="model width d (default 540)")
    p.add_argument("--d-inner", type=positive_int, default=None,
                   help="inner width k (default: 4 * d-model)")
    p.add_argument("--backend", choices=list(BACKENDS), default="inductor",
                   help="compile backend (default inductor, which also reports its kernels)")
    p.add_argument("--tokens", type=positive_int, default=1024,
                   help="rows of the example input Inductor is run on (default 1024)")
    p.add_argument("-o", "--out", metavar="DIR", type=Path, default=None,
                   help="write the generated FX code (and Inductor's output code) to DIR")
    p.add_argument("--no-simplify", action="store_true",
                   help="compile the expression as written instead of its simplified form")
    p.set_defaults(func=handle)
    return p


def handle(args: argparse.Namespace) -> int:
    """Run the ``compile`` subcommand; returns the process exit code."""
    graph = parse(args.expr)
    k = args.d_inner if args.d_inner is not None else 4 * args.d_model
    print(f"expression: {graph}  (d_model={args.d_model}, d_inner={k}, "
          f"backend={args.backend})")
    if args.backend == "inductor":
        r = inspect_inductor(graph, args.d_model, k, tokens=args.tokens, out_dir=args.out,
                             simplify=not args.no_simplify, device=args.device)
        print(f"compiled:   {r.expression}")
        print(f"kernels:    {r.kernels} fused kernel(s) {r.kernel_names}, "
              f"{r.matmuls} matrix product(s)")
        print(f"compile:    {r.compile_seconds:.2f} s")
        for f in r.files:
            print(f"wrote {f}")
        return 0
    t0 = time.perf_counter()
    module = compile_graph(graph, args.d_model, k, args.backend, seed=0,
                           simplify=not args.no_simplify, device=args.device)
    print(f"compile:    {time.perf_counter() - t0:.2f} s")
    if module.function.fx_module.meta["mlpgraph"].get("fused_module") is not None:
        from .fusion import describe_plan

        print(f"epilogues:  {', '.join(describe_plan(module.compiled_graph)) or 'none'}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / "fx_code.py"
        out.write_text(f"# {graph}\n{module.code}")
        print(f"wrote {out}")
    return 0
