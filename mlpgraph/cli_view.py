"""The ``show`` and ``render`` subcommands: print or draw MLP expressions.

``register(subparsers, parents)`` adds both to an ``argparse`` subparsers object; a bad
expression or flag raises (exit code 2 in the ``efficientbert`` command)::

    efficientbert show "W2(relu(W1(x) * x))" --format dot --d-model 540 --d-inner 270
    efficientbert render "tanh(W2(gelu(W1(x))))" "W2(relu(W1(x) * x))" --out mlps.svg
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .cli_common import EXIT_CODES_HELP, Parents, positive_int
from .errors import MLPGraphError, WidthError
from .graph import Graph

FORMATS = ("text", "dot", "mermaid", "json")


def register(subparsers: Any, parents: Parents) -> None:
    """Add the ``show`` and ``render`` subcommands to ``subparsers`` (from add_subparsers())."""
    show = subparsers.add_parser(
        "show", help="print an MLP expression as text, DOT, Mermaid or JSON",
        epilog=EXIT_CODES_HELP,
        description="Parse an MLP expression and print it. With --d-model and --d-inner the "
                    "integer widths and parameter count are shown too.")
    show.add_argument("expr", metavar="EXPR", help='e.g. "W2(relu(W1(x) * x))"')
    show.add_argument("--simplify", action="store_true", help="simplify before printing")
    show.add_argument("--format", choices=FORMATS, default="text", help="output format")
    show.add_argument("--explicit", action="store_true",
                      help="text format: print every narrow(...) and width annotation")
    _width_args(show, per_graph=False)
    show.set_defaults(func=_show)

    render = subparsers.add_parser(
        "render", help="draw one or more MLP expressions side by side to SVG/PNG/PDF",
        epilog=EXIT_CODES_HELP,
        description="Draw expressions side by side (Graphviz when 'dot' is installed, else "
                    "matplotlib). The image format follows the suffix of --out. Options taking "
                    "several values (--titles, --d-inner) go after the expressions.")
    render.add_argument("exprs", nargs="+", metavar="EXPR", help="expressions to draw")
    render.add_argument("-o", "--out", required=True, metavar="FILE",
                        help="output file ending in .svg, .png or .pdf")
    render.add_argument("--titles", nargs="+", metavar="TITLE",
                        help="one title per expression (default: the expressions); "
                             "give it after the expressions")
    render.add_argument("--simplify", action="store_true", help="simplify before drawing")
    render.add_argument("--engine", choices=("auto", "graphviz", "matplotlib"), default="auto",
                        help="drawing engine (default: graphviz if installed)")
    _width_args(render, per_graph=True)
    render.set_defaults(func=_render)


def _width_args(p: argparse.ArgumentParser, *, per_graph: bool) -> None:
    p.add_argument("--d-model", type=positive_int, metavar="N", help="model width d")
    p.add_argument("--d-inner", type=positive_int, metavar="N", nargs="+" if per_graph else None,
                   help="inner width k" + (" (one for all, or one per EXPR)" if per_graph else ""))


def _check_widths(args: argparse.Namespace) -> None:
    """Refuse only one of --d-model / --d-inner."""
    if (args.d_model is None) != (args.d_inner is None):
        raise WidthError("give both --d-model and --d-inner (or neither)")


def _load(text: str, simplify: bool) -> Graph:
    from .parser import parse

    graph = parse(text)
    if simplify:
        from .simplify import simplify as run_simplify  # lazy: heavier, optional at import

        graph = run_simplify(graph)
    return graph


def _show(args: argparse.Namespace) -> int:
    from . import viz
    from .cost import count_params
    from .graph import format_graph

    _check_widths(args)
    graph = _load(args.expr, args.simplify)
    widths = dict(d_model=args.d_model, d_inner=args.d_inner)
    params = None if args.d_model is None else count_params(graph, **widths)
    if args.format == "text":
        out = format_graph(graph, explicit=args.explicit)
        if params is not None:
            out += f"\nparams: {params:,} (d_model={args.d_model}, d_inner={args.d_inner})"
    elif args.format == "json":
        data = json.loads(graph.to_json())
        if params is not None:  # extra keys; Graph.from_json still reads this
            data.update(d_model=args.d_model, d_inner=args.d_inner, params=params)
        out = json.dumps(data, separators=(",", ":"))
    else:
        draw = viz.to_dot if args.format == "dot" else viz.to_mermaid
        out = draw(graph, args.d_model, args.d_inner).rstrip("\n")
    print(out)
    return 0


def _render(args: argparse.Namespace) -> int:
    from . import viz

    _check_widths(args)
    inner = args.d_inner[0] if args.d_inner and len(args.d_inner) == 1 else args.d_inner
    graphs = []
    for i, text in enumerate(args.exprs, 1):
        try:
            graphs.append(_load(text, args.simplify))
        except MLPGraphError as e:
            raise type(e)(f"expression {i}: {e}") from None
    path = viz.render(graphs, args.out, titles=args.titles, d_model=args.d_model,
                      d_inner=inner, engine=args.engine)
    print(f"wrote {path}")
    return 0
