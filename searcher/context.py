"""What the steps of one ``efficientbert run`` share (:class:`Context`), and the scorer the
run hands to its searches and its final step (:class:`KDScorer`).

The main job (:mod:`searcher.run`) builds the context; preparation
(:mod:`searcher.prepare`), the warm-ups (:mod:`searcher.warmup`) and the final comparison
(:mod:`searcher.final`) read and fill it. None of those imports another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill import (
    PreparedTeacher,
    ScoreBudget,
    TaskSpec,
    TeacherCaches,
    get_task_spec,
    register_files,
    resolve_device,
    score,
)

from .config import ConstraintSpec
from .errors import SearchConfigError
from .run_config import Pipeline

Log = Callable[[str], None]
Bar = Callable[[Path, int, str], AbstractContextManager[Any]]  # (stage folder, total, title)


@dataclass(frozen=True)
class KDScorer:
    """``distill.score`` with ``threads`` torch threads, picklable for workers. A worker
    that unpickles it registers the task of ``data`` (files), so the task name in the
    budgets that follow resolves there too (the executors import the plugins before)."""

    threads: int = 1
    data: dict[str, Any] | None = field(default=None, hash=False)

    def setup(self) -> KDScorer:
        """Register the data files' task (idempotent)."""
        if self.data is not None:
            register_files(self.data)
        return self

    def __reduce__(self) -> tuple:
        return _set_up_scorer, (self.threads, self.data)

    def __call__(self, spec: Any, budget: Any) -> Any:
        import torch

        before = torch.get_num_threads()
        if before != self.threads:
            torch.set_num_threads(self.threads)
        try:
            return score(spec, budget)
        finally:  # inline scoring runs in the main process: leave its threads as they were
            if before != self.threads:
                torch.set_num_threads(before)


def _set_up_scorer(threads: int, data: dict[str, Any] | None) -> KDScorer:
    return KDScorer(threads, data).setup()


def scorer_of(pipeline: Pipeline) -> KDScorer:
    """The pipeline's scorer: one torch thread per worker and its data files."""
    return KDScorer(1, pipeline.data)


def task_of(pipeline: Pipeline, cache_dir: str | None = None) -> TaskSpec:
    """The pipeline's task: its data files (read, checked and registered now) or a name."""
    if pipeline.data is not None:
        return register_files(pipeline.data, cache_dir)
    try:
        return get_task_spec(pipeline.task)
    except ValueError as e:
        raise SearchConfigError("task", str(e)) from None


@dataclass
class Context:
    """What the steps of one run share: its settings, folder, task, student configuration
    and constraints; the prepared teacher and teacher-output caches (after
    :func:`searcher.prepare.prepare`); timings and facts for ``results.json``."""

    pipeline: Pipeline
    run_dir: Path
    task: TaskSpec
    student_config: Any
    constraints: ConstraintSpec
    window_seeds: list[str]
    cache_dir: str | None = None
    progress: bool = True
    log: Log = print
    search_bar: Bar = lambda folder, total, desc: nullcontext()  # progress while searching
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    teacher: PreparedTeacher | None = None
    caches: TeacherCaches | None = None

    def timed(self, key: str, t0: float) -> float:
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0
        return self.timings[key]

    def prepared(self) -> tuple[PreparedTeacher, TeacherCaches]:
        """The teacher and the caches; raises if preparation has not run yet."""
        if self.teacher is None or self.caches is None:
            raise RuntimeError("the run is not prepared yet: call searcher.prepare.prepare(ctx)")
        return self.teacher, self.caches

    def score_budget(self, supernet: Path, kd_steps: int, **overrides: Any) -> ScoreBudget:
        """How this run scores a candidate: the pipeline's score settings, its task,
        teacher, caches, device and fitness rows; ``overrides`` replace any field."""
        teacher, caches = self.prepared()
        p, sc = self.pipeline, self.pipeline.score
        return ScoreBudget(**{
            "supernet": str(supernet), "kd_steps": kd_steps, "batch_size": sc.batch_size,
            "lr": sc.lr, "train_slice": sc.train_slice, "heldout_size": sc.heldout_size,
            "seed": p.seed, "task": self.task.name, "teacher": str(teacher.tuned),
            "cache_dir": self.cache_dir, "latency_repeats": sc.latency_repeats,
            "device": str(resolve_device(p.device)), "common_noise": sc.common_noise,
            "dropout": sc.dropout, "fitness": caches.fitness_folders, "backend": p.backend,
            **overrides})

    # the names the benchmarks read before the typed fields existed (to be removed)
    @property
    def tuned(self) -> Path | None:
        return None if self.teacher is None else self.teacher.tuned

    @property
    def base_teacher(self) -> Path | None:
        return None if self.teacher is None else self.teacher.base

    @property
    def outputs(self) -> dict[str, Any]:
        c = self.caches
        return {} if c is None else {k: v for k, v in (
            ("train", c.train), ("unlabeled", c.unlabeled), ("heldout", c.heldout),
            ("fitness", c.fitness)) if v is not None}


__all__ = ["Bar", "Context", "KDScorer", "Log", "scorer_of", "task_of"]
