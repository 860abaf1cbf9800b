"""``efficientbert run`` (the whole job), ``report RUN_DIR`` and ``config``.

:func:`register` adds the subcommands to the top-level parser (``searcher/cli.py``)::

    efficientbert run --preset quick --out runs/q0 --set stages[0].controller.evaluations=30
    efficientbert report runs/q0
    efficientbert config --schema
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlpgraph.cli_common import EXIT_CODES_HELP, Parents, positive_int

from .config_base import setting_value
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


# ----------------------------------------------------------------------- settings
#: flags that set one pipeline field each (``--workers 4`` is ``--set executor.workers=4``):
#: flag -> (path, argparse type); None: the flag is one of the shared runtime flags
FLAG_PATHS: dict[str, tuple[str, Callable[[str], Any] | None]] = {
    "--seed": ("seed", int),
    "--threads": ("threads", None),
    "--device": ("device", None),
    "--task": ("task", str),
    "--space": ("space", setting_value),
    "--final-seeds": ("final.seeds", positive_int),
    "--executor": ("executor.kind", str),
    "--workers": ("executor.workers", positive_int),
    "--address": ("executor.address", str),
}


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def pipeline_of(args: argparse.Namespace) -> Any:
    """The pipeline ``run`` arguments describe: the preset or ``--pipeline`` file, then the
    flags of :data:`FLAG_PATHS`, the data-file flags, ``--plugins`` and each ``--set``, in
    that order, validated once."""
    from distill import cli as distill_cli

    from .config_base import parse_setting, with_settings
    from .plugins import load_plugins
    from .run_config import load_pipeline

    load_plugins(args.plugins)  # first: the pipeline file may name what they declare
    pipeline = load_pipeline(args.preset, args.pipeline)
    settings = [(path, getattr(args, _dest(flag))) for flag, (path, _) in FLAG_PATHS.items()
                if getattr(args, _dest(flag), None) is not None]
    files = distill_cli.data_files_from_args(args)
    if files is not None:
        settings.append(("data", files.to_dict()))
    if args.plugins:
        settings.append(("plugins", list(dict.fromkeys([*pipeline.plugins, *args.plugins]))))
    settings += [parse_setting(text) for text in args.set]
    return with_settings(pipeline, settings)


# ----------------------------------------------------------------------- handlers
def cmd_run(args: argparse.Namespace) -> int:
    from .candidate import Candidate
    from .run import run_pipeline
    from .summary import print_summary

    pipeline = pipeline_of(args)
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


def _pipeline_schema() -> dict:
    from .run_config import pipeline_schema

    return pipeline_schema()


def _results_schema() -> dict:
    from .results import results_schema

    return results_schema()


def _student_schema() -> dict:
    from distill import student_schema

    return student_schema()


#: what ``config --schema WHAT`` prints
SCHEMAS = {"pipeline": _pipeline_schema, "results": _results_schema, "student": _student_schema}


def cmd_config(args: argparse.Namespace) -> int:
    from .config_base import field_rows
    from .plugins import load_plugins
    from .run_config import load_pipeline

    load_plugins(args.plugins)  # their kinds and names join the schema's choices
    if args.schema:
        print(json.dumps(SCHEMAS[args.schema](), indent=2))
    elif args.fields:
        for path, value, what in field_rows(load_pipeline(args.preset)):
            print(f"{path}={json.dumps(value, default=str)}\n    {what}")
    else:
        print(load_pipeline(args.preset).to_json(), end="")
    return 0


PLUGINS_HELP = ("import user code, a FILE.py or a MODULE (repeatable), in this process and in "
                "every worker process before anything else; it may declare primitives, "
                "mutations, controllers, executors, tasks, metrics and compile backends, which "
                "the pipeline may then name. A plugin is code and runs with your permissions, "
                "by design: pass only code you trust. (--primitives: the old name)")


def _add_setting_flags(p: argparse.ArgumentParser) -> None:
    """The flags of :data:`FLAG_PATHS` (help from the field's description) and ``--set``."""
    from .config_base import field_description
    from .run_config import Pipeline

    g = p.add_argument_group("pipeline settings", "each flag sets one field of the pipeline, "
                             "after the preset or --pipeline file")
    for flag, (path, kind) in FLAG_PATHS.items():
        if kind is not None:
            g.add_argument(flag, type=kind, default=None, metavar=path.rsplit(".", 1)[-1].upper(),
                           help=f"sets {path}: {field_description(Pipeline, path)}")
    g.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="set any pipeline field (repeatable, applied after the flags above); "
                   "VALUE is parsed as JSON, else taken as text, e.g. --set "
                   "stages[0].controller.evaluations=30 --set score.tie_break=null. "
                   "`efficientbert config --fields` lists every PATH")
    g.add_argument("--plugins", "--primitives", action="append", default=[],
                   metavar="FILE.py|MODULE", help=PLUGINS_HELP)


def register(subparsers: Any, parents: Parents) -> None:
    """Add ``run``, ``report`` and ``config`` to an ``add_subparsers()`` object."""
    from distill import cli as distill_cli

    p = subparsers.add_parser(
        "run", parents=[parents.runtime, parents.quiet, distill_cli.DATA_FLAGS],
        help="the whole job: teacher, warm-up, 3-stage search, winner vs standard FFN",
        description="Fetch/verify assets, fine-tune (or reuse) the teacher on the task, warm "
        "up the supernet, run the coarse-to-fine search, distill the winner and compare it "
        "with the standard FFN of the same size on the test split. Writes a run folder with "
        "the journals, configs, models, results.json and a report. Every setting lives in a "
        "pipeline file: `efficientbert config --preset quick` prints one to edit, "
        "`efficientbert config --fields` every field, `efficientbert config --schema` its "
        "JSON schema; --set changes one field. --plugins imports your own code (it runs, by "
        "design).", epilog=EXIT_CODES_HELP)
    p.add_argument("--preset", default="quick", choices=sorted(PRESET_NAMES),
                   help="quick: ~15 min on 2 CPU cores; full: a real machine")
    p.add_argument("--pipeline", default=None, metavar="FILE",
                   help="a pipeline JSON file instead of the preset (see RUN_DIR/pipeline.json)")
    p.add_argument("-o", "--out", type=Path, default=None, metavar="DIR",
                   help="run folder (default: runs/<preset>-seed<seed>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (with "
                   "--final-seeds N, a finished run trains only the new seeds)")
    p.add_argument("--stages", type=parse_stages, default=[1, 2, 3], metavar="1,2,3",
                   help="stages to run; a later stage starts from the latest earlier winner "
                   "in the run folder (or --base, or the pipeline's default base)")
    p.add_argument("--base", default=None, metavar="CANDIDATE_JSON",
                   help="base candidate for stages 2/3 when no earlier winner exists")
    p.add_argument("--supernet", type=Path, default=None, metavar="DIR",
                   help="start from this warmed supernet (an earlier run's warmup/stage1, same "
                   "student) instead of warming one up")
    _add_setting_flags(p)
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("report", help="write RUN_DIR/report/index.html",
                              description="Render a run folder (or one search folder) as a "
                              "self-contained HTML report with PNG/SVG figures.",
                              epilog=EXIT_CODES_HELP)
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("config", help="print a preset pipeline, its fields or the "
                              "pipeline schema",
                              description="Print a preset's pipeline JSON (edit it and pass "
                              "it to `run --pipeline`), every field with its value and "
                              "description (--fields), or the JSON schema of pipeline files.",
                              epilog=EXIT_CODES_HELP)
    p.add_argument("--preset", default="quick", choices=sorted(PRESET_NAMES))
    what = p.add_mutually_exclusive_group()
    what.add_argument("--schema", nargs="?", const="pipeline", default=None,
                      choices=sorted(SCHEMAS), help="print a JSON schema instead: of a "
                      "pipeline file (the default), of results.json or of a student config")
    what.add_argument("--fields", action="store_true", help="print every field's path "
                      "(for run --set), value and description instead")
    p.add_argument("--plugins", "--primitives", action="append", default=[],
                   metavar="FILE.py|MODULE", help=PLUGINS_HELP)
    p.set_defaults(func=cmd_config)
