"""Preparation of a run, before any search: the assets, the fine-tuned teacher (fine-tuned
once, cached) and the teacher-output caches of the training split, the unlabeled warm-up text,
the held-out rows and the fitness sentences that no warm-up sees."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock
    fcntl = None  # type: ignore[assignment]

from distill import assets as da
from distill import teacher as dt
from distill.data import TaskSpec
from distill.encode import encode_texts
from distill.pipeline import teacher_outputs
from distill.score import search_splits
from distill.userdata import truncation_report

if TYPE_CHECKING:
    from .run import Context


def prepare(ctx: Context) -> None:
    """Assets, the fine-tuned teacher (reused when cached) and the teacher-output caches."""
    p, cache = ctx.pipeline, ctx.cache_dir
    t0 = time.perf_counter()
    assets = (*ctx.task.assets, *(("teacher",) if p.teacher is None else ()))
    if assets:
        da.fetch_assets(assets, cache, progress=ctx.progress)
    ctx.timed("assets", t0)
    t0 = time.perf_counter()
    name = ctx.task.name
    reused = dt.is_finetuned(dt.finetuned_teacher_dir(name, p.teacher, cache_dir=cache)[0])
    ctx.log("teacher: " + ("reusing the cached fine-tuned teacher" if reused else
                           "fine-tuning the teacher once (cached for later runs)"))
    root = Path(cache).expanduser() if cache else da.default_cache_dir()
    with cache_lock(root):
        ctx.tuned = dt.finetune_teacher(name, p.teacher, cache_dir=cache, device=p.device,
                                        progress=ctx.progress)
    ctx.base_teacher = Path(p.teacher) if p.teacher else da.ensure_asset("teacher", cache)
    ctx.timed("teacher", t0)
    ctx.info["teacher"] = {"folder": str(ctx.tuned), "reused": reused,
                           "eval": dt.teacher_info(ctx.tuned).get("metrics", {})}
    t0, since = time.perf_counter(), time.time()
    spec, tok = ctx.task, dt.load_tokenizer(ctx.tuned)
    ds = dt.load_task(name, cache)
    cut = truncation_report(spec, tok, cache, spec.max_length)
    ctx.info["task"] = {
        "name": spec.name, "final_split": spec.final_split, "search_split": spec.search_split,
        "metrics": list(spec.metric_names), "max_length": spec.max_length,
        "notes": list(spec.notes), "truncated": {
            k: {"rows": t.rows, "truncated": t.truncated, "longest": t.longest}
            for k, t in cut.items()}}
    train, held = search_splits(ds, spec, tok, spec.max_length, p.score.heldout_size)
    held = held.subset(np.arange(min(p.score.heldout_size, len(held))))
    warm, fit = split_unlabeled(ds, spec, cache, p.unlabeled_limit, p.score.fitness_rows)
    kw = {"cache_dir": cache, "progress": ctx.progress, "device": p.device}
    base_tok = dt.load_tokenizer(ctx.base_teacher)
    with cache_lock(root):  # never two processes writing one cache folder
        ctx.outputs["train"] = teacher_outputs(ctx.tuned, train, ctx.student_config,
                                               name=f"{spec.name}-train", **kw)
        ctx.outputs["unlabeled"] = teacher_outputs(
            ctx.base_teacher, encode_texts(base_tok, warm, max_length=spec.max_length),
            ctx.student_config, name="unlabeled", **kw)
        # the KD fitness: held-out rows, the fine-tuned teacher
        ctx.outputs["heldout"] = teacher_outputs(ctx.tuned, held, ctx.student_config,
                                                 name=f"{spec.name}-heldout", **kw)
        if fit:
            ctx.outputs["fitness"] = teacher_outputs(
                ctx.tuned, encode_texts(tok, fit, max_length=spec.max_length),
                ctx.student_config, name=f"{spec.name}-fitness", **kw)
    new = [o.folder.name for o in ctx.outputs.values()
           if (o.folder / "meta.json").stat().st_mtime >= since]
    ctx.timed("teacher_output_caches", t0)
    ctx.info["caches"] = {"reused": not new, "created": new, "unlabeled_sentences": len(warm),
                          "fitness_sentences": len(fit), "train_examples": len(train)}


def split_unlabeled(ds: Any, spec: TaskSpec, cache: str | None, warmup: int | None,
                    fitness: int) -> tuple[list[str], list[str]]:
    """Unlabeled sentences without any evaluation or test text, cut in two disjoint sets:
    ``warmup`` for general KD and ``fitness`` that no warm-up sees (neither general KD nor
    task KD on the training split: the KD fitness rows), each evenly spaced over the source
    so every part of it is represented."""
    def texts_of(*splits: str) -> set[str]:
        return {t for split in splits if split in ds for col in spec.text_columns
                for t in ds[split][col]}

    held_out = texts_of(*spec.eval_splits, *spec.test_splits)
    texts = [t for t in spec.unlabeled(cache) if t not in held_out]
    n = len(texts)
    chosen = (set(range(n)) if not warmup or warmup >= n
              else {i * n // warmup for i in range(warmup)})
    warm = [texts[i] for i in sorted(chosen)]
    train = texts_of(spec.train_split) if fitness else set()
    rest = [texts[i] for i in range(n) if i not in chosen and texts[i] not in train]
    fit = [rest[i * len(rest) // fitness] for i in range(min(fitness, len(rest)))]
    return warm, fit


@contextmanager
def cache_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on the cache root (POSIX ``flock``; a no-op elsewhere)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".efficientbert.lock", "w") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        yield
