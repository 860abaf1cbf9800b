"""The ``efficientbert`` command: one subcommand per task, each registered by its layer.

Every handler returns 0 or raises; :func:`main` turns an exception into a message on stderr
and an exit code (:func:`mlpgraph.cli_common.exit_code`): 2 for bad input, 1 for a failed run.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from mlpgraph.cli_common import EXIT_CODES_HELP, exit_code, make_parents


def build_parser() -> argparse.ArgumentParser:
    from distill import cli as distill_cli
    from mlpgraph import cli_compile, cli_paper, cli_view

    from . import cli_run

    parser = argparse.ArgumentParser(
        prog="efficientbert",
        description="Symbolic MLP expression compiler and EfficientBERT-style MLP search.",
        epilog=EXIT_CODES_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parents = make_parents()
    for module in (cli_run, cli_paper, cli_compile, cli_view, distill_cli):
        module.register(sub, parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the one place errors become exit codes
        code = exit_code(e)
        if not isinstance(e, _expected()):  # a bug, not a refused input or a failed run
            traceback.print_exc()
        kind = "bad input" if code == 2 else f"failed ({type(e).__name__})"
        print(f"error: {kind}: {e}", file=sys.stderr)
        return code


def _expected() -> tuple[type[BaseException], ...]:
    """The errors the project raises on purpose (their message is the whole story)."""
    from distill import DistillError
    from mlpgraph.errors import MLPGraphError

    from .errors import SearchError

    return (DistillError, SearchError, MLPGraphError, OSError)


if __name__ == "__main__":
    sys.exit(main())
