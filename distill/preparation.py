"""Everything a KD run needs before its first step, behind two functions.

- :func:`prepare_teacher`: the assets, and the teacher fine-tuned on the task once (cached
  under the user cache folder, reused by later runs).
- :func:`prepare_caches`: the teacher's outputs on the rows students learn and are scored
  on (:class:`TeacherCaches`): the training split, the unlabeled warm-up text, the held-out
  rows and the fitness sentences that no warm-up sees.

Both take an exclusive lock on the cache folder while they write, so two processes never
write one cache folder at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock
    fcntl = None  # type: ignore[assignment]

from . import assets as da
from . import teacher as dt
from .data import TaskSpec
from .encode import encode_split, encode_texts
from .pipeline import teacher_outputs
from .scoring import search_splits
from .teacher_cache import TeacherOutputs
from .userdata import truncation_report


@dataclass(frozen=True)
class PreparedTeacher:
    """The fine-tuned teacher folder, the pretrained teacher it came from, whether the
    fine-tune was reused from the cache, and its held-out metrics."""

    tuned: Path
    base: Path
    reused: bool
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TeacherCaches:
    """The teacher's cached outputs a run uses (each a :class:`TeacherOutputs` folder)."""

    train: TeacherOutputs  # fine-tuned teacher, training split (task KD)
    unlabeled: TeacherOutputs  # pretrained teacher, unlabeled warm-up text (general KD)
    heldout: TeacherOutputs  # fine-tuned teacher, held-out labelled rows (the KD fitness)
    fitness: TeacherOutputs | None  # fine-tuned teacher, sentences no warm-up saw
    created: tuple[str, ...] = ()  # folders computed now (the rest were reused)
    info: dict[str, Any] = field(default_factory=dict)  # sizes and truncation, for reports

    @property
    def fitness_folders(self) -> tuple[str, ...]:
        """The folders a score budget's ``fitness`` names: held-out rows, then sentences."""
        return tuple(str(o.folder) for o in (self.heldout, self.fitness) if o is not None)


@contextmanager
def cache_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on the cache root (POSIX ``flock``; a no-op elsewhere)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".efficientbert.lock", "w") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _cache_root(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else da.default_cache_dir()


def prepare_teacher(task: TaskSpec, teacher: str | Path | None = None, *,
                    cache_dir: str | Path | None = None, device: str | None = None,
                    progress: bool = True,
                    log: Callable[[str], None] | None = None) -> PreparedTeacher:
    """The teacher fine-tuned on the task once (reused when cached; ``log`` says which),
    from ``teacher`` or the default one (``efficientbert assets``). Fetch the assets first
    (:func:`distill.fetch_assets`)."""
    reused = dt.is_finetuned(dt.finetuned_teacher_dir(task.name, teacher,
                                                      cache_dir=cache_dir)[0])
    if log is not None:
        log("teacher: " + ("reusing the cached fine-tuned teacher" if reused else
                           "fine-tuning the teacher once (cached for later runs)"))
    with cache_lock(_cache_root(cache_dir)):
        tuned = dt.finetune_teacher(task.name, teacher, cache_dir=cache_dir, device=device,
                                    progress=progress)
    base = Path(teacher) if teacher else da.ensure_asset("teacher", cache_dir)
    return PreparedTeacher(Path(tuned), base, reused,
                           dict(dt.teacher_info(tuned).get("metrics", {})))


def prepare_caches(task: TaskSpec, teacher: PreparedTeacher, student_config: Any, *,
                   heldout_size: int, fitness_rows: int, unlabeled_limit: int | None,
                   cache_dir: str | Path | None = None, device: str | None = None,
                   progress: bool = True) -> TeacherCaches:
    """The teacher outputs of every row set a run reads (:class:`TeacherCaches`), for
    students shaped like ``student_config``; computed once, then reused from disk."""
    since = time.time()
    tok = dt.load_tokenizer(teacher.tuned)
    ds = dt.load_task(task.name, cache_dir)
    cut = truncation_report(task, tok, cache_dir, task.max_length)
    train, held = search_splits(ds, task, tok, task.max_length, heldout_size)
    held = held.subset(np.arange(min(heldout_size, len(held))))
    warm, fit = split_unlabeled(ds, task, cache_dir, unlabeled_limit, fitness_rows)
    kw = {"cache_dir": cache_dir, "progress": progress, "device": device}
    base_tok = dt.load_tokenizer(teacher.base)
    tuned = teacher.tuned
    with cache_lock(_cache_root(cache_dir)):
        out = {
            "train": teacher_outputs(tuned, train, student_config, name=f"{task.name}-train",
                                     **kw),
            "unlabeled": teacher_outputs(
                teacher.base, encode_texts(base_tok, warm, max_length=task.max_length),
                student_config, name="unlabeled", **kw),
            "heldout": teacher_outputs(tuned, held, student_config,
                                       name=f"{task.name}-heldout", **kw),
            "fitness": teacher_outputs(
                tuned, encode_texts(tok, fit, max_length=task.max_length), student_config,
                name=f"{task.name}-fitness", **kw) if fit else None}
    created = tuple(o.folder.name for o in out.values()
                    if o is not None and (o.folder / "meta.json").stat().st_mtime >= since)
    info = {"truncated": {k: {"rows": t.rows, "truncated": t.truncated, "longest": t.longest}
                          for k, t in cut.items()},
            "unlabeled_sentences": len(warm), "fitness_sentences": len(fit),
            "train_examples": len(train)}
    return TeacherCaches(**out, created=created, info=info)


def split_unlabeled(ds: Any, spec: TaskSpec, cache: str | Path | None, warmup: int | None,
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


def evaluate_teacher(teacher_dir: str | Path, task: TaskSpec, *,
                     cache_dir: str | Path | None = None) -> dict[str, Any]:
    """The fine-tuned teacher on the final split (``test``) and the search split (``eval``,
    when the task has one): its task metrics, parameters and forward latency."""
    from .latency import measure_latency
    from .pipeline import evaluate_splits

    ds = dt.load_task(task.name, cache_dir)
    tok = dt.load_tokenizer(teacher_dir)
    roles = [("test", task.final_split)] + ([("eval", task.search_split)]
                                            if task.search_split else [])
    splits = {role: encode_split(ds[name], tok, task, task.max_length) for role, name in roles}
    model = dt.load_teacher(teacher_dir)
    return {"params": sum(t.numel() for t in model.parameters()),
            "latency_ms": measure_latency(model), "folder": str(teacher_dir),
            **evaluate_splits(model, splits, task)}


__all__ = ["PreparedTeacher", "TeacherCaches", "cache_lock", "evaluate_teacher", "prepare_caches",
           "prepare_teacher", "split_unlabeled"]
