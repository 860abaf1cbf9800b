"""Preparation of a run, before any search: the assets, the fine-tuned teacher (fine-tuned
once, cached) and the teacher-output caches of every row set the run reads
(:func:`distill.prepare_teacher`, :func:`distill.prepare_caches`); this module times them and
records what was reused."""

from __future__ import annotations

import time

from distill import fetch_assets, prepare_caches, prepare_teacher

from .context import Context


def prepare(ctx: Context) -> None:
    """Assets, the fine-tuned teacher (reused when cached) and the teacher-output caches."""
    p, spec = ctx.pipeline, ctx.task
    t0 = time.perf_counter()
    names = (*spec.assets, *(("teacher",) if p.teacher is None else ()))
    if names:
        fetch_assets(names, ctx.cache_dir, progress=ctx.progress)
    ctx.timed("assets", t0)
    t0 = time.perf_counter()
    teacher = prepare_teacher(spec, p.teacher, cache_dir=ctx.cache_dir, device=p.device,
                              progress=ctx.progress, log=ctx.log)
    ctx.teacher = teacher
    ctx.timed("teacher", t0)
    ctx.info["teacher"] = {"folder": str(teacher.tuned), "reused": teacher.reused,
                           "eval": teacher.metrics}
    t0 = time.perf_counter()
    caches = prepare_caches(spec, teacher, ctx.student_config,
                            heldout_size=p.score.heldout_size,
                            fitness_rows=p.score.fitness_rows,
                            unlabeled_limit=p.unlabeled_limit, cache_dir=ctx.cache_dir,
                            device=p.device, progress=ctx.progress)
    ctx.caches = caches
    ctx.timed("teacher_output_caches", t0)
    ctx.info["task"] = {
        "name": spec.name, "final_split": spec.final_split, "search_split": spec.search_split,
        "metrics": list(spec.metric_names), "max_length": spec.max_length,
        "notes": list(spec.notes), "truncated": caches.info["truncated"]}
    ctx.info["caches"] = {"reused": not caches.created, "created": list(caches.created),
                          **{k: caches.info[k] for k in ("unlabeled_sentences",
                                                         "fitness_sentences",
                                                         "train_examples")}}
