"""Fitness of one candidate, the function the searcher calls: :func:`score`.

A candidate (one ``(expression, stacks, d_inner)`` per layer) inherits its weights from a
warmed-up supernet checkpoint (:meth:`distill.supernet.Supernet.extract`, copy mode), is
KD fine-tuned for ``budget.kd_steps`` steps against the fine-tuned teacher on a slice of
the task's TRAINING split (all KD terms, cached teacher outputs), and is scored on the
first ``budget.heldout_size`` examples of the ``heldout`` split (a part of the training
data kept out of training). The ``test`` split is never read. With
``budget.no_training`` the inherited weights are scored directly (stage 3).

Making the warmed-up supernet (``budget.supernet``) once, before a search::

    net = Supernet(StudentConfig(layers=[...] * 6, hidden=540, heads=12), seed=0)
    net.add_pools(expressions)     # only if the sampler returns expressions other than the FFN
    texts = encode_texts(load_tokenizer(), list(iter_unlabeled_text(exclude_movie_eval=True)),
                         max_length=64)
    outputs = cache_teacher_outputs(load_teacher(), texts, name="unlabeled")
    _, kd = general_distill(net, outputs, TrainConfig(epochs=1, lr=5e-4),
                            sampler=random_sampler(net.num_layers, net.hidden))
    net.save_pretrained(folder)
    save_fit_dense(kd, folder)     # candidates inherit the trained fit_dense too

Everything expensive is cached per process: the supernet, the tokenized splits and the
teacher outputs (these also on disk), so calling :func:`score` many times is cheap.
Results are deterministic for a seed (except the measured latency). A non-finite loss
gives ``diverged=True``; it does not raise.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mlpgraph import MLPLayer

from .config import as_layer
from .data import get_task_spec
from .encode import EncodedTexts, encode_split
from .errors import ConfigError, TeacherError
from .latency import measure_latency
from .loop import TrainConfig
from .losses import KDLoss, KDWeights
from .pipeline import Phase, kd_layers, kd_phase, save_student, teacher_dims, teacher_outputs
from .result import ScoreResult
from .student import count_parameters
from .supernet import Supernet
from .teacher import (
    default_max_length,
    finetuned_teacher_dir,
    is_finetuned,
    load_task,
    load_tokenizer,
)
from .teacher_cache import TeacherOutputs
from .train import evaluate, evaluate_kd, load_fit_dense

_SUPERNETS: dict[tuple, Supernet] = {}
_SPLITS: dict[tuple, tuple[EncodedTexts, EncodedTexts]] = {}
_OUTPUTS: dict[tuple, TeacherOutputs] = {}


@dataclass(frozen=True)
class ScoreBudget:
    """How much to spend on one candidate, and where the inherited weights come from."""

    supernet: str | Path | None = None  # folder of the warmed-up Supernet checkpoint
    kd_steps: int = 200
    batch_size: int = 32
    lr: float = 4e-4
    train_slice: tuple[int, int] = (0, 2000)  # [start, stop) rows of the TRAINING split
    heldout_size: int = 500  # first rows of the heldout split
    seed: int = 0
    device: str = "cpu"
    no_training: bool = False  # score the inherited weights as they are (stage 3)
    task: str = "movie_binary"
    teacher: str | Path | None = None  # fine-tuned teacher folder; None: the default one
    max_length: int | None = None  # None: 64 for the embedded tasks, 128 for GLUE
    warmup_ratio: float = 0.1
    latency_batch: tuple[int, int] = (8, 64)  # (batch, sequence length) of the timed input
    latency_repeats: int = 10  # timed forward runs (0: not measured)
    cache_dir: str | Path | None = None
    eval_batch_size: int = 128
    progress: bool = False
    fitness: tuple[str, ...] = ()  # teacher-output cache folders of held-out rows (the
    #       heldout split, unlabeled sentences no warm-up saw): kd_loss and teacher_kl there
    common_noise: bool = False  # every candidate sees the same batches and, per step, the
    #                            same dropout stream (common random numbers)
    label_weight: float = 0.0  # hard-label loss added to the task KD (0: pure KD)
    dropout: float | None = None  # dropout during the short KD (None: the student's own;
    #                               0: none, so a score depends on the batches only)
    report_splits: tuple[str, ...] = ()  # task splits whose metrics are also reported
    #       (ScoreResult.splits): only the final comparison names the test split here
    save_to: str | None = None  # save the trained student as a model folder there
    backend: str = "eager"  # the mlpgraph backend the student's MLPs are compiled with

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreBudget:
        """A budget from its JSON form (e.g. ``results.json`` ``final.recipe``): unknown
        keys are ignored and lists become the tuples the fields hold."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
                      if k in known})


def candidate_specs(candidate: Any, hidden: int | None = None) -> list[MLPLayer]:
    """The layers of a candidate: from a StudentConfig, an object with ``layers`` (the
    searcher's ``CandidateSpec``), or a sequence of :class:`~mlpgraph.MLPLayer`, JSON dicts
    or ``(graph or expr, stacks, d_inner)`` tuples. A ``d_inner`` is read at model width
    ``hidden`` (default: the candidate's own ``hidden``, as a CandidateSpec has)."""
    layers = list(candidate.layers if hasattr(candidate, "layers") else candidate)
    hidden = hidden if hidden is not None else getattr(candidate, "hidden", None)
    if hidden is None and not all(isinstance(layer, MLPLayer) for layer in layers):
        raise ConfigError("hidden", "layers given with d_inner need the model width; call "
                          "candidate_specs(layers, hidden) or give MLPLayer objects")
    return [as_layer(layer, hidden, i) for i, layer in enumerate(layers)]


def _supernet(budget: ScoreBudget) -> Supernet:
    if budget.supernet is None:
        raise ConfigError("budget.supernet", "no warmed-up supernet checkpoint given; train one "
                          "with distill.train.distill(..., sampler=...) and save it with "
                          "Supernet.save_pretrained(folder)")
    path = Path(budget.supernet).expanduser().resolve()
    weights = path / "model.safetensors"
    key = (str(path), weights.stat().st_mtime_ns if weights.is_file() else 0, budget.device)
    if key not in _SUPERNETS:
        _SUPERNETS[key] = Supernet.from_pretrained(path, device=budget.device).eval()
    return _SUPERNETS[key]


def _teacher_dir(budget: ScoreBudget, data: Any) -> Path:
    if budget.teacher is not None:
        folder = Path(budget.teacher).expanduser()
        if not (folder / "config.json").is_file():
            raise TeacherError(f"budget.teacher={folder} is not a model folder (no config.json)")
        return folder
    folder, _ = finetuned_teacher_dir(budget.task, cache_dir=budget.cache_dir, data=data)
    if not is_finetuned(folder):
        raise TeacherError(f"no fine-tuned teacher for {budget.task!r} at {folder}; create it "
                           f"once with `efficientbert teacher --task {budget.task}` (or pass "
                           "budget.teacher=<folder>)")
    return folder


def _splits(budget: ScoreBudget, teacher: Path, data: Any) -> tuple[EncodedTexts, EncodedTexts]:
    """(training rows, held-out rows). Tasks without a ``heldout`` split (GLUE) hold out
    the last ``heldout_size`` rows of ``train``, as the paper holds out the end of MNLI train."""
    max_length = budget.max_length or default_max_length(budget.task)
    spec = get_task_spec(budget.task)
    key = (budget.task, str(teacher), max_length,
           _data_key(data, (spec.train_split, spec.search_split or spec.train_split)),
           str(budget.cache_dir), budget.heldout_size)
    if key not in _SPLITS:
        ds = data if data is not None else load_task(budget.task, budget.cache_dir)
        _SPLITS[key] = search_splits(ds, spec, load_tokenizer(teacher), max_length,
                                     budget.heldout_size)
    return _SPLITS[key]


def search_splits(ds: Any, spec: Any, tokenizer: Any, max_length: int,
                  heldout_size: int) -> tuple[EncodedTexts, EncodedTexts]:
    """(training rows, held-out rows) a search may use: the task's search split
    (:attr:`~distill.data.TaskSpec.search_split`, e.g. ``heldout``), or for tasks without one
    (GLUE) the last ``heldout_size`` rows of ``train``, as the paper holds out the end of MNLI
    train. Neither is ever the final split."""
    train = encode_split(ds[spec.train_split], tokenizer, spec, max_length)
    if spec.search_split is not None and spec.search_split in ds:
        return train, encode_split(ds[spec.search_split], tokenizer, spec, max_length)
    cut = len(train) - heldout_size
    if cut < 1:
        raise ConfigError("heldout_size", f"{heldout_size} held-out rows leave no training "
                          f"rows of {len(train)}")
    return train.subset(np.arange(cut)), train.subset(np.arange(cut, len(train)))


def _data_key(data: Any, names: tuple[str, ...]) -> str | None:
    """What identifies injected task data: the ``datasets`` fingerprints of the splits
    ``names`` that scoring reads (no other split is touched)."""
    if data is None:
        return None
    return "|".join(f"{name}:{getattr(data[name], '_fingerprint', len(data[name]))}"
                    for name in names if name in data)


def _outputs(budget: ScoreBudget, teacher: Path, train: EncodedTexts,
             config: Any) -> TeacherOutputs:
    key = (str(teacher), train.fingerprint(), tuple(kd_layers(config, teacher_dims(teacher))),
           str(budget.cache_dir))
    if key not in _OUTPUTS:
        _OUTPUTS[key] = teacher_outputs(teacher, train, config, name=f"{budget.task}-train",
                                        cache_dir=budget.cache_dir, device=budget.device,
                                        progress=budget.progress)
    return _OUTPUTS[key]


def score(candidate: Any, budget: ScoreBudget, *, data: Any = None) -> ScoreResult:
    """Build ``candidate`` from the warmed-up supernet, KD it briefly, score it (module doc).

    ``data``: a ``DatasetDict``-like mapping with the task's training and search splits to
    use instead of loading the task (only those keys, and ``report_splits``, are read).
    """
    start = time.perf_counter()
    spec = get_task_spec(budget.task)
    lo, hi = budget.train_slice
    if not 0 <= lo < hi:
        raise ConfigError("budget.train_slice", f"{budget.train_slice} must be [start, stop) "
                          "with 0 <= start < stop")
    supernet = _supernet(budget)
    specs = candidate_specs(candidate, supernet.hidden)
    torch.manual_seed(budget.seed)
    student = supernet.extract(specs, mode="copy", backend=budget.backend)
    if budget.dropout is not None:
        for m in student.modules():
            if isinstance(m, nn.Dropout):
                m.p = budget.dropout
    params = count_parameters(student.config)["total"]
    teacher = _teacher_dir(budget, data)
    train, held = _splits(budget, teacher, data)
    held = held.subset(np.arange(min(budget.heldout_size, len(held))))
    steps, diverged, train_loss, kd = 0, False, None, None
    if not budget.no_training and budget.kd_steps > 0:
        rows = np.arange(lo, min(hi, len(train)))
        if len(rows) == 0:
            raise ConfigError("budget.train_slice", f"{budget.train_slice} selects no rows of "
                              f"the {len(train)}-row training split")
        outputs = _outputs(budget, teacher, train, student.config).subset(rows)
        result, kd = kd_phase(student, outputs, Phase("score", KDWeights.task(), TrainConfig(
            max_steps=budget.kd_steps, batch_size=budget.batch_size, lr=budget.lr,
            seed=budget.seed, device=budget.device, warmup_ratio=budget.warmup_ratio,
            progress=budget.progress, desc="score", reseed_every_step=budget.common_noise),
            budget.label_weight), fit_dense=budget.supernet)
        steps, diverged, train_loss = result.steps, result.diverged, result.final_loss
    metrics: dict[str, float] = {}
    splits: dict[str, dict[str, float]] = {}
    if not diverged:
        metrics = _kd_fitness(student, kd, budget, spec.metric_names)
        if not metrics:  # no fitness caches: the task metrics on the held-out split
            metrics = evaluate(student, held, spec.metric_names, is_regression=spec.is_regression,
                               batch_size=budget.eval_batch_size, device=budget.device)
        splits = _reported(student, budget, teacher, data)
        diverged = not all(math.isfinite(v) for m in (metrics, *splits.values())
                           for v in m.values())
    if budget.save_to is not None and not diverged:
        save_student(budget.save_to, student, kd, load_tokenizer(teacher), spec.label_names)
    latency = None if not budget.latency_repeats else measure_latency(
        student, budget.latency_batch, budget.latency_repeats, budget.device)
    return ScoreResult(metrics, params, latency, steps, time.perf_counter() - start, diverged,
                       train_loss, splits)


def _reported(student: nn.Module, budget: ScoreBudget, teacher: Path,
              data: Any) -> dict[str, dict[str, float]]:
    """The task metrics on each of ``budget.report_splits``, by split."""
    if not budget.report_splits:
        return {}
    spec = get_task_spec(budget.task)
    ds = data if data is not None else load_task(budget.task, budget.cache_dir)
    tok = load_tokenizer(teacher)
    max_length = budget.max_length or default_max_length(budget.task)
    out = {}
    for split in budget.report_splits:
        m = evaluate(student, encode_split(ds[split], tok, spec, max_length), spec.metric_names,
                     is_regression=spec.is_regression, batch_size=budget.eval_batch_size,
                     device=budget.device)
        out[split] = m
    return out


def _kd_fitness(student: nn.Module, kd: KDLoss | None, budget: ScoreBudget,
                metric_names: tuple[str, ...]) -> dict[str, float]:
    """``kd_loss``, its terms and ``teacher_kl`` on the held-out fitness rows (row-weighted
    over the caches of ``budget.fitness``), and the task metrics on the first cache (the
    labelled held-out rows) from the same forward pass; {} without fitness caches."""
    if not budget.fitness:
        return {}
    caches = [TeacherOutputs(f) for f in budget.fitness]
    if kd is None:  # no training: the supernet's fit_dense, the task objective's terms
        kd = KDLoss.for_models(student.config, caches[0].config, weights=KDWeights.task())
        if budget.supernet is not None:
            load_fit_dense(kd, budget.supernet)
    parts = [(len(c), evaluate_kd(student, c, kd, batch_size=budget.eval_batch_size,
                                  device=budget.device,
                                  metric_names=metric_names if i == 0 else ()))
             for i, c in enumerate(caches)]
    total = sum(n for n, _ in parts)
    out = {k: sum(n * m[k] for n, m in parts) / total for k in parts[-1][1]}
    return {**{m: parts[0][1][m] for m in (*metric_names, "score") if m in parts[0][1]}, **out}


def clear_caches() -> None:
    """Drop the per-process caches (supernets, tokenized splits, teacher outputs)."""
    _SUPERNETS.clear()
    _SPLITS.clear()
    _OUTPUTS.clear()


__all__ = ["ScoreBudget", "ScoreResult", "candidate_specs", "clear_caches", "measure_latency",
           "score", "search_splits"]
