"""The ``efficientbert`` console command: one subcommand per task, each owned by its layer."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mlpgraph import MLPGraphError


def build_parser() -> argparse.ArgumentParser:
    from distill import cli as distill_cli
    from mlpgraph import cli_compile, cli_paper, cli_view
    from searcher import cli_run

    parser = argparse.ArgumentParser(
        prog="efficientbert",
        description="Symbolic MLP expression compiler and EfficientBERT-style MLP search.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (cli_run, cli_paper, cli_compile, cli_view, distill_cli):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MLPGraphError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
