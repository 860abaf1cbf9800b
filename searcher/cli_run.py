"""``efficientbert run`` (the whole job) and ``efficientbert report RUN_DIR``.

:func:`register` adds both subcommands to an ``add_subparsers()`` object (the top-level
``efficientbert`` parser wires it in); :func:`main` runs them standalone::

    python -m searcher.cli_run run --preset quick
    python -m searcher.cli_run report runs/quick-20250101-120000
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STAGE_CHOICES = (1, 2, 3)


def parse_stages(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]`` (argparse type; names a bad entry)."""
    try:
        out = sorted({int(x) for x in text.replace(" ", "").split(",") if x})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--stages {text!r}: give stage numbers separated by "
                                         "commas, e.g. 1,2,3 or 3") from None
    bad = [s for s in out if s not in STAGE_CHOICES]
    if not out or bad:
        raise argparse.ArgumentTypeError(f"--stages {text!r}: stages are 1, 2 and 3")
    return out


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width text table."""
    cells = [list(header)] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> str:
    """The final terminal summary: timings, stages, and the test comparison table."""
    t, teacher = results["timings"], results.get("teacher", {})
    caches = results.get("caches", {})
    out = [f"run folder: {results['run_dir']}",
           f"teacher:    {'reused from the cache' if teacher.get('reused') else 'fine-tuned now'}"
           f" ({t.get('teacher', 0):.0f} s) {teacher.get('folder', '')}",
           f"caches:     teacher outputs {'reused' if caches.get('reused') else 'computed'} "
           f"({t.get('teacher_output_caches', 0):.0f} s); assets {t.get('assets', 0):.0f} s",
           f"wall time:  {t['total'] / 60:.1f} min in all; {t['job_excluding_one_time'] / 60:.1f}"
           " min excluding assets, teacher fine-tune and teacher-output caches", ""]
    stage_rows = [(f"stage {s['stage']}", s["evaluations"], s["best_score"],
                   s.get("base_score"), f"{s['dedupe']['hit_rate']:.0%}",
                   f"{s['seconds']:.0f}", s["describe"])
                  for s in results["stages"]]
    out.append(table(("stage", "evals", "best held-out", "start score", "dedupe", "seconds",
                      "winner (expr @ s x ratio per layer)"), stage_rows))
    steps = {k: f"{v:.0f}s" for k, v in t.items() if k.startswith(("warmup", "rewarm", "final"))}
    out += ["", "warm-up / final KD: " + ", ".join(f"{k} {v}" for k, v in steps.items()), ""]
    final = results["final"]
    names = {"teacher": "teacher (fine-tuned MiniLM)", "winner": "searched winner",
             "baseline": "standard FFN, same shape"}
    rows = []
    for key in ("teacher", "winner", "baseline"):
        if key in final:
            r = final[key]
            rows.append((names[key], r["params"], r.get("mlp_mflops"), r["latency_ms"],
                         r["heldout"].get("accuracy"), r["test"].get("accuracy"),
                         r["test"].get("f1")))
    out.append(table(("model", "params", "MLP MFLOPs", "latency ms", "heldout acc", "TEST acc",
                      "TEST f1"), rows))
    if "winner" in final and "baseline" in final:
        d = final["winner"]["test"]["accuracy"] - final["baseline"]["test"]["accuracy"]
        out.append(f"\nwinner - baseline on TEST: {d:+.4f} accuracy (one seed; see "
                   "benchmarks/results/search.md for the spread over seeds)")
    if results.get("report"):
        out.append(f"report: {results['report']}")
    return "\n".join(out)


class SearchProgress:
    """A progress bar fed by polling the stage's journal (steps commit as they finish)."""

    def __init__(self, run_dir: Path, total: int, desc: str, enabled: bool = True) -> None:
        from tqdm.auto import tqdm

        self.run_dir, self.stop = run_dir, threading.Event()
        self.bar = tqdm(total=total, desc=desc, unit="cand", disable=not enabled,
                        dynamic_ncols=True)
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _poll(self) -> None:
        from .journal import FILENAME, Journal

        if not (self.run_dir / FILENAME).is_file():
            return
        try:
            with Journal.in_folder(self.run_dir) as j:
                rows = j.summaries()
        except Exception:  # noqa: BLE001 - a busy journal: try again next poll
            return
        if rows:
            self.bar.n = rows[-1]["evaluations"]
            best = rows[-1].get("best")
            if best:
                self.bar.set_postfix(best=f"{best[1]:.4f}", refresh=False)
            self.bar.refresh()

    def _loop(self) -> None:
        while not self.stop.wait(2.0):
            self._poll()

    def __enter__(self) -> SearchProgress:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._poll()
        self.bar.close()


# ----------------------------------------------------------------------- handlers
def _errors() -> tuple[type[BaseException], ...]:
    from distill.errors import EfficientBertError
    from mlpgraph import MLPGraphError

    from .errors import SearchError

    return (EfficientBertError, SearchError, MLPGraphError)


def cmd_run(args: argparse.Namespace) -> int:
    from .candidate import Candidate
    from .run import run_pipeline
    from .stages import load_pipeline

    try:
        pipeline = load_pipeline(args.preset, args.config)
        if args.seed is not None:
            pipeline.seed = args.seed
        if args.workers is not None:
            pipeline.workers = args.workers
        base = None
        if args.base:
            base = Candidate.from_json(Path(args.base).read_text(encoding="utf-8"))
        run_dir = args.run_dir or Path("runs") / time.strftime(
            f"{pipeline.name}-seed{pipeline.seed}-%Y%m%d-%H%M%S")
        print(f"efficientbert run: preset {pipeline.name!r}, seed {pipeline.seed}, stages "
              f"{args.stages}, backend {args.backend}, run folder {run_dir}", flush=True)
        results = run_pipeline(pipeline, run_dir, stages=args.stages, resume=args.resume,
                               backend=args.backend, address=args.address,
                               cache_dir=args.cache_dir, base=base,
                               progress=not args.quiet,
                               search_bar=lambda folder, total, desc: SearchProgress(
                                   folder, total, desc, not args.quiet))
    except _errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n" + summary(results), flush=True)
    diverged = [k for k, v in results["final"].items() if v.get("diverged")]
    if diverged:
        print(f"warning: final KD diverged for {diverged}", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    try:
        path = write_report(args.run_dir)
    except (*_errors(), FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report written: {path}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``run`` and ``report`` to an ``add_subparsers()`` object."""
    p = subparsers.add_parser(
        "run", help="the whole job: teacher, warm-up, 3-stage search, winner vs standard FFN",
        description="Fetch/verify assets, fine-tune (or reuse) the teacher on the embedded "
        "movie-review task, warm up the supernet, run the coarse-to-fine search, distill the "
        "winner and compare it with the standard FFN of the same size on the test split. "
        "Writes a run folder with the journal, configs, models, results.json and a report.")
    p.add_argument("--preset", default="quick", choices=("quick", "full"),
                   help="quick: ~15 min on 2 CPU cores; full: a real machine")
    p.add_argument("--config", default=None, metavar="PIPELINE_JSON",
                   help="a pipeline JSON file instead of the preset (see RUN_DIR/pipeline.json)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="run folder (default: runs/<preset>-seed<seed>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--seed", type=int, default=None, help="overrides the preset's seed (0)")
    p.add_argument("--stages", type=parse_stages, default=[1, 2, 3], metavar="1,2,3",
                   help="stages to run; a later stage starts from the latest earlier winner "
                   "in the run folder (or --base, or the preset's default base)")
    p.add_argument("--base", default=None, metavar="CANDIDATE_JSON",
                   help="base candidate for stages 2/3 when no earlier winner exists")
    p.add_argument("--backend", default="local", choices=("local", "ray", "inline"),
                   help="where candidates are scored (inline: this process, for debugging)")
    p.add_argument("--address", default=None, help="Ray cluster address (with --backend ray)")
    p.add_argument("--workers", type=int, default=None, help="parallel scorers (preset: 2)")
    p.add_argument("--cache-dir", default=None,
                   help="asset/teacher cache (default: $EFFICIENTBERT_CACHE or "
                   "~/.cache/efficientbert)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("report", help="write RUN_DIR/report/index.html",
                              description="Render a run folder (or one search folder) as a "
                              "self-contained HTML report with PNG/SVG figures.")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="efficientbert")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
