"""``efficientbert run`` (the whole job), ``report RUN_DIR`` and ``config``.

:func:`register` adds the subcommands to the top-level parser (``searcher/cli.py``)::

    efficientbert run --preset quick --out runs/q0
    efficientbert report runs/q0
    efficientbert config --schema
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlpgraph.cli_common import EXIT_CODES_HELP, Parents, positive_int

from .errors import SearchError

STAGE_CHOICES = (1, 2, 3)
PRESET_NAMES = ("quick", "full")


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
def cmd_run(args: argparse.Namespace) -> int:
    from distill.cli import data_files_from_args

    from .candidate import Candidate
    from .config import ExecutorSpec
    from .run import run_pipeline
    from .run_config import load_pipeline
    from .summary import print_summary

    pipeline = load_pipeline(args.preset, args.pipeline)
    changes: dict[str, Any] = {k: v for k, v in (("seed", args.seed), ("threads", args.threads),
                                                 ("device", args.device), ("task", args.task))
                               if v is not None}
    files = data_files_from_args(args)
    if files is not None:
        changes["data"] = files.to_dict()
    if args.primitives:
        changes["primitives"] = tuple(args.primitives)
    if args.final_seeds is not None:
        changes["final"] = pipeline.final.but(seeds=args.final_seeds)
    if args.space:
        changes["space"] = json.loads(args.space) if args.space.startswith("{") else args.space
    ex = {k: v for k, v in (("kind", args.executor), ("workers", args.workers),
                            ("address", args.address)) if v is not None}
    if ex:
        changes["executor"] = ExecutorSpec.load({**pipeline.executor.dump(), **ex}, "executor")
    if changes:
        pipeline = pipeline.but(**changes)
    base = None
    if args.base:
        base = Candidate.from_json(Path(args.base).read_text(encoding="utf-8"))
    out = args.out or Path("runs") / time.strftime(
        f"{pipeline.name}-seed{pipeline.seed}-%Y%m%d-%H%M%S")
    print(f"efficientbert run: preset {pipeline.name!r}, seed {pipeline.seed}, stages "
          f"{args.stages}, executor {pipeline.executor.kind}, run folder {out}", flush=True)
    results = run_pipeline(pipeline, out, stages=args.stages, resume=args.resume,
                           cache_dir=args.cache_dir, base=base, progress=not args.quiet,
                           supernet=args.supernet,
                           search_bar=lambda folder, total, desc: SearchProgress(
                               folder, total, desc, not args.quiet))
    print()
    print_summary(results)
    diverged = [k for k, v in results["final"].items()
                if isinstance(v, dict) and v.get("diverged")]
    if diverged:
        raise SearchError(f"final KD diverged for {diverged}; lower final.lr")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    print(f"report written: {write_report(args.run_dir)}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .run_config import load_pipeline, pipeline_schema

    if args.schema:
        print(json.dumps(pipeline_schema(), indent=2))
    else:
        print(load_pipeline(args.preset).to_json(), end="")
    return 0


def register(subparsers: Any, parents: Parents) -> None:
    """Add ``run``, ``report`` and ``config`` to an ``add_subparsers()`` object."""
    from distill.cli import DATA_FLAGS

    p = subparsers.add_parser(
        "run", parents=[parents.runtime, parents.quiet, DATA_FLAGS],
        help="the whole job: teacher, warm-up, 3-stage search, winner vs standard FFN",
        description="Fetch/verify assets, fine-tune (or reuse) the teacher on the task, warm "
        "up the supernet, run the coarse-to-fine search, distill the winner and compare it "
        "with the standard FFN of the same size on the test split. Writes a run folder with "
        "the journals, configs, models, results.json and a report. Every setting lives in a "
        "pipeline file: `efficientbert config --preset quick` prints one to edit, "
        "`efficientbert config --schema` its JSON schema.", epilog=EXIT_CODES_HELP)
    p.add_argument("--preset", default="quick", choices=sorted(PRESET_NAMES),
                   help="quick: ~15 min on 2 CPU cores; full: a real machine")
    p.add_argument("--pipeline", default=None, metavar="FILE",
                   help="a pipeline JSON file instead of the preset (see RUN_DIR/pipeline.json)")
    p.add_argument("-o", "--out", type=Path, default=None, metavar="DIR",
                   help="run folder (default: runs/<preset>-seed<seed>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--final-seeds", type=positive_int, default=None, metavar="N",
                   help="paired seeds of the final comparison (overrides final.seeds; with "
                   "--resume, a finished run trains only the new seeds)")
    p.add_argument("--seed", type=int, default=None, help="overrides the pipeline's seed")
    p.add_argument("--stages", type=parse_stages, default=[1, 2, 3], metavar="1,2,3",
                   help="stages to run; a later stage starts from the latest earlier winner "
                   "in the run folder (or --base, or the pipeline's default base)")
    p.add_argument("--base", default=None, metavar="CANDIDATE_JSON",
                   help="base candidate for stages 2/3 when no earlier winner exists")
    p.add_argument("--supernet", type=Path, default=None, metavar="DIR",
                   help="start from this warmed supernet (an earlier run's warmup/stage1, same "
                   "student) instead of warming one up")
    p.add_argument("--executor", default=None, choices=("local", "ray", "inline"),
                   help="where candidates are scored (inline: this process, for debugging)")
    p.add_argument("--address", default=None, help="Ray cluster address (--executor ray)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="parallel scorers (default: the pipeline's)")
    p.add_argument("--task", default=None,
                   help="a task name (movie_binary, sst2, ...); with --train-file, a GLUE task "
                   "whose schema the files follow")
    p.add_argument("--primitives", action="append", default=[], metavar="FILE.py|MODULE",
                   help="import user code declaring @mlpgraph.primitive (repeatable); add them "
                   "to the space with --space '{\"base\": \"paper\", \"add\": [\"mish\"]}'")
    p.add_argument("--space", default=None, help="a space name, a Space JSON file, or "
                   "'{\"base\": \"paper\", \"add\": [NAMES]}'")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("report", help="write RUN_DIR/report/index.html",
                              description="Render a run folder (or one search folder) as a "
                              "self-contained HTML report with PNG/SVG figures.",
                              epilog=EXIT_CODES_HELP)
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("config", help="print a preset pipeline or the pipeline schema",
                              description="Print a preset's pipeline JSON (edit it and pass "
                              "it to `run --pipeline`), or the JSON schema of pipeline files.",
                              epilog=EXIT_CODES_HELP)
    p.add_argument("--preset", default="quick", choices=sorted(PRESET_NAMES))
    p.add_argument("--schema", action="store_true", help="print the JSON schema instead")
    p.set_defaults(func=cmd_config)


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import main as top

    return top(argv)


if __name__ == "__main__":
    sys.exit(main())
