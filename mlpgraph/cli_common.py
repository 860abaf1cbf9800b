"""What every ``efficientbert`` subcommand shares: parent parsers for the common flags, the
exit codes, and tables (rich).

Each layer's ``register(subparsers, parents)`` adds its subcommands with
``parents=[parents.runtime, ...]`` so a flag is declared once and spelled the same
everywhere; the top-level command (``searcher/cli.py``) maps exceptions to exit codes with
:func:`exit_code`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

OK, FAILED, BAD_INPUT = 0, 1, 2
EXIT_CODES_HELP = ("exit codes: 0 ok; 2 bad input (a flag, value, file, expression or "
                   "configuration was refused before any work started); 1 the work failed "
                   "(the message says why; a run folder then holds FAILED.json)")


def exit_code(error: BaseException) -> int:
    """The exit code for an exception that ended a command: bad input is a ``ValueError``
    (every input error class of the project derives from it) or a missing file."""
    return BAD_INPUT if isinstance(error, ValueError | FileNotFoundError) else FAILED


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


@dataclass(frozen=True)
class Parents:
    """Parent parsers: ``runtime`` (--cache-dir, --threads, --device), ``quiet`` (--quiet)."""

    runtime: argparse.ArgumentParser
    quiet: argparse.ArgumentParser


def make_parents() -> Parents:
    runtime = argparse.ArgumentParser(add_help=False)
    g = runtime.add_argument_group("runtime")
    g.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="assets, teachers and teacher outputs (default: $EFFICIENTBERT_CACHE "
                   "or ~/.cache/efficientbert)")
    g.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="torch CPU threads of this process")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bars")
    return Parents(runtime, quiet)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> Any:
    """A rich table (numbers right-aligned, floats with 4 decimals, None as '-')."""
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    numeric = [all(isinstance(r[i], int | float) or r[i] is None for r in rows) and bool(rows)
               for i in range(len(header))]
    for name, num in zip(header, numeric, strict=True):
        t.add_column(str(name), justify="right" if num else "left")
    for r in rows:
        t.add_row(*(cell(v) for v in r))
    return t


def cell(v: Any, digits: int = 4) -> str:
    """One table cell as text."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
                title: str | None = None) -> None:
    """Print :func:`table` to stdout (full width when piped, so rows are not cut)."""
    from rich.console import Console

    width = shutil.get_terminal_size((200, 24)).columns if sys.stdout.isatty() else 200
    Console(width=width).print(table(header, rows, title))
