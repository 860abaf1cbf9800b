"""``efficientbert compile EXPR``: compile one MLP expression and show what was generated.

    efficientbert compile "W2(gelu(W1(x)))" --d-model 540 --d-inner 270 \\
        --backend inductor --emit-code out/

prints the compile time and, for Inductor, how many fused kernels and matrix products
it generated; ``--emit-code DIR`` writes the FX code and Inductor's output code there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .compiler import BACKENDS, compile_graph, inspect_inductor
from .parser import parse


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``compile`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "compile", help="compile an MLP expression and report its kernels",
        description="Compile an MLP expression (e.g. 'W2(gelu(W1(x)))') with a backend and "
                    "report compile time, and for inductor the generated kernels.")
    p.add_argument("expr", help="the MLP expression, e.g. 'W2(relu(W1(x) * x))'")
    p.add_argument("--d-model", type=int, default=540, help="model width d (default 540)")
    p.add_argument("--d-inner", type=int, default=None,
                   help="inner width k (default: 4 * d-model)")
    p.add_argument("--backend", choices=list(BACKENDS), default="inductor",
                   help="compile backend (default inductor, which also reports its kernels)")
    p.add_argument("--tokens", type=int, default=1024,
                   help="rows of the example input Inductor is run on (default 1024)")
    p.add_argument("--emit-code", metavar="DIR", type=Path, default=None,
                   help="write the generated FX code (and Inductor's output code) to DIR")
    p.add_argument("--no-simplify", action="store_true",
                   help="compile the expression as written instead of its simplified form")
    p.set_defaults(func=handle)
    return p


def handle(args: argparse.Namespace) -> int:
    """Run the ``compile`` subcommand; returns the process exit code."""
    graph = parse(args.expr)
    k = args.d_inner if args.d_inner is not None else 4 * args.d_model
    if args.d_model < 1 or k < 1 or args.tokens < 1:
        print("error: --d-model, --d-inner and --tokens must be positive", file=sys.stderr)
        return 2
    print(f"expression: {graph}  (d_model={args.d_model}, d_inner={k}, "
          f"backend={args.backend})")
    if args.backend == "inductor":
        r = inspect_inductor(graph, args.d_model, k, tokens=args.tokens, out_dir=args.emit_code,
                             simplify=not args.no_simplify)
        print(f"compiled:   {r.expression}")
        print(f"kernels:    {r.kernels} fused kernel(s) {r.kernel_names}, "
              f"{r.matmuls} matrix product(s)")
        print(f"compile:    {r.compile_seconds:.2f} s")
        for f in r.files:
            print(f"wrote {f}")
        return 0
    t0 = time.perf_counter()
    module = compile_graph(graph, args.d_model, k, args.backend, seed=0,
                           simplify=not args.no_simplify)
    print(f"compile:    {time.perf_counter() - t0:.2f} s")
    if args.emit_code is not None:
        args.emit_code.mkdir(parents=True, exist_ok=True)
        out = args.emit_code / "fx_code.py"
        out.write_text(f"# {graph}\n{module.code}")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m mlpgraph.cli_compile")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
