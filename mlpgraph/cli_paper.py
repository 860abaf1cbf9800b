"""``efficientbert paper``: run the compiler on the paper's searched MLPs and print a table."""

from __future__ import annotations

import argparse
import time

import torch

from . import cost, keys, parser, space
from .cli_common import EXIT_CODES_HELP, Parents, positive_int, print_table
from .interp import evaluate, random_weights
from .paper import PAPER_D_MODEL, PAPER_LAYERS, STANDARD_FFN
from .simplify import simplify as simplify_graph


def paper_report(d_model: int = PAPER_D_MODEL, check_backend: str | None = "eager") -> list[dict]:
    """Parse, simplify, type-check, cost and (optionally) compile-check every paper MLP."""
    rows = []
    for name, text, stacks, k in (*PAPER_LAYERS, ("FFN", STANDARD_FFN, 1, 4 * d_model)):
        t0 = time.perf_counter()
        g = parser.parse(text)
        s = simplify_graph(g)
        row = {
            "layer": name, "expr": str(g), "stacks": stacks, "d_inner": k,
            "simplified": str(s), "key": keys.canonical_key(g), "fingerprint": keys.fingerprint(g),
            "params": cost.count_params(g, d_model=d_model, d_inner=k) * stacks,
            "mflops_per_token": cost.count_flops(g, d_model=d_model, d_inner=k) * stacks / 1e6,
            "in_paper_space": space.PAPER_SPACE.contains(g),
            "front_end_ms": (time.perf_counter() - t0) * 1e3,
        }
        if check_backend:
            from .compiler import compile_graph

            w = random_weights(g, d_model, k, seed=0)
            mod = compile_graph(g, d_model, k, backend=check_backend, weights=w)
            x = torch.randn(2, 8, d_model, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                err = (mod(x) - evaluate(g, x, w)).abs().max().item()
            row["max_abs_err_vs_interpreter"] = err
        rows.append(row)
    return rows


def _handler(args: argparse.Namespace) -> int:
    rows = paper_report(args.d_model, None if args.no_compile else args.backend)
    cols = ["layer", "expr", "stacks", "d_inner", "params", "mflops_per_token", "in_paper_space"]
    if not args.no_compile:
        cols.append("max_abs_err_vs_interpreter")
    print_table(cols, [[r[c] for c in cols] for r in rows],
                f"EfficientBERT's searched MLPs (paper, stage 2 + 3) at d_model = {args.d_model}")
    total = sum(r["params"] for r in rows if r["layer"] != "FFN")
    print(f"MLP parameters over the six layers: {total:,}")
    for r in rows:
        print(f"{r['layer']}: key {r['key']}")
    return 0


def register(subparsers: argparse._SubParsersAction, parents: Parents) -> None:
    p = subparsers.add_parser("paper", help="compile and check the paper's searched MLPs",
                              epilog=EXIT_CODES_HELP)
    p.add_argument("--d-model", type=positive_int, default=PAPER_D_MODEL)
    p.add_argument("--backend", default="eager", help="backend used for the numeric check")
    p.add_argument("--no-compile", action="store_true", help="skip the module build check")
    p.set_defaults(func=_handler)
