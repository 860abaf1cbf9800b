"""The one KD pipeline: the teacher outputs a student needs, the KD phases, saving a student.

``efficientbert distill`` (:func:`distill_student`), the search's scorer
(:func:`distill.scoring.score`) and the main job (``searcher/run.py``: supernet warm-up and the
final comparison) are thin layers over these functions::

    dims = teacher_dims(tuned)                       # hidden, layers, heads of a teacher folder
    outputs = teacher_outputs(tuned, train, config, name="movie_binary-train")
    result, kd = kd_phase(student, outputs, Phase("task", KDWeights.task(), TrainConfig(...)))
    save_student(folder, student, kd, tokenizer)

A *phase* is one KD run: which loss terms (:class:`~distill.losses.KDWeights`), for how long
and how fast (:class:`~distill.train.TrainConfig`), optionally a hard-label term. Phases chain
through the trained ``fit_dense`` projection (student hidden -> teacher hidden), which the next
phase starts from.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from .assets import offline_env
from .config import StudentConfig
from .encode import EncodedTexts, encode_split, encode_texts
from .loop import TrainConfig, TrainResult
from .losses import KDLoss, KDWeights
from .predict import save_label_names
from .student import Student, count_parameters
from .teacher import (
    default_max_length,
    finetune_teacher,
    init_student_from_teacher,
    load_task,
    load_teacher,
    load_tokenizer,
)
from .teacher import teacher_dims as _dims_of_config
from .teacher_cache import TeacherOutputs, cache_teacher_outputs
from .train import Sampler, distill, evaluate, load_fit_dense
from .train import save_fit_dense as _save_fit_dense

FitDense = Mapping[str, torch.Tensor] | str | Path | None

__all__ = ["TUNED", "Phase", "Recipe", "distill_student", "evaluate_splits", "kd_layers",
           "kd_phase", "save_student", "teacher_dims", "teacher_outputs"]


# ------------------------------------------------------------------ teacher outputs
def teacher_dims(teacher: str | Path | nn.Module) -> SimpleNamespace:
    """``hidden_size``, ``num_hidden_layers``, ``num_attention_heads`` of a teacher model or
    of a model folder (read from its ``config.json``, offline; the weights are not loaded)."""
    if isinstance(teacher, nn.Module):
        return _dims_of_config(teacher.config)
    from transformers import AutoConfig

    with offline_env():
        return _dims_of_config(AutoConfig.from_pretrained(str(teacher), local_files_only=True))


def kd_layers(student_config: StudentConfig, dims: Any) -> list[int]:
    """The teacher layers (1-based) the student's layers are distilled from."""
    return sorted(set(KDLoss.for_models(student_config, dims).layer_map.values()))


def teacher_outputs(teacher: str | Path | nn.Module, inputs: EncodedTexts,
                    student_config: StudentConfig, *, name: str,
                    cache_dir: str | Path | None = None, device: str | None = None,
                    progress: bool = True) -> TeacherOutputs:
    """The teacher's cached outputs on ``inputs`` for students shaped like ``student_config``:
    logits, the embedding output and the hidden states and attention scores of the mapped
    layers (computed once, then read from the disk cache)."""
    layers = kd_layers(student_config, teacher_dims(teacher))
    return cache_teacher_outputs(teacher, inputs, hidden_layers=[0, *layers],
                                 attention_layers=layers, name=name, cache_dir=cache_dir,
                                 device=device, progress=progress)


# ------------------------------------------------------------------ phases
@dataclass(frozen=True)
class Phase:
    """One KD run: ``weights`` picks the loss terms (``KDWeights.pretraining()`` for general
    KD on unlabeled text, ``KDWeights.task()`` for task KD), ``train`` the schedule;
    ``label_weight > 0`` adds that times the hard-label loss on labelled rows."""

    name: str
    weights: KDWeights
    train: TrainConfig
    label_weight: float = 0.0


def kd_phase(model: nn.Module, outputs: TeacherOutputs, phase: Phase, *,
             fit_dense: FitDense = None, init_from: nn.Module | None = None,
             sampler: Sampler | None = None) -> tuple[TrainResult, KDLoss]:
    """Distill ``model`` (a Student, or a Supernet with ``sampler``) from cached ``outputs``.

    ``fit_dense``: where the hidden-state projection starts: a state dict (e.g. the previous
    phase's), a folder holding ``fit_dense.safetensors``, or None (fresh). ``init_from``: a
    teacher model whose embeddings initialize the student's and whose top singular
    directions initialize ``fit_dense`` (see :func:`distill.teacher.init_student_from_teacher`).
    Returns the training result and the loss module (with the trained ``fit_dense``)."""
    kd = KDLoss.for_models(model.config, outputs.config, weights=phase.weights)
    if isinstance(fit_dense, Mapping):
        kd.fit_dense.load_state_dict(fit_dense)
    elif fit_dense is not None:
        load_fit_dense(kd, fit_dense)
    if init_from is not None:
        student = getattr(model, "model", model)  # a Supernet wraps its maximal Student
        init_student_from_teacher(student, init_from, kd.fit_dense)
    result = distill(model, outputs, kd, phase.train, sampler=sampler,
                     label_weight=phase.label_weight)
    return result, kd


def save_student(folder: str | Path, student: nn.Module, kd: KDLoss | None,
                 tokenizer: Any = None, label_names: Sequence[str] | None = None) -> Path:
    """A model folder: ``config.json`` + ``model.safetensors`` (``save_pretrained``), the
    trained ``fit_dense`` and, when given, the tokenizer and the class names (``labels.json``)
    so the folder predicts on text (:class:`distill.predict.Predictor`)."""
    folder = Path(student.save_pretrained(folder))
    if kd is not None:
        _save_fit_dense(kd, folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    if label_names:
        save_label_names(folder, label_names)
    return folder


def evaluate_splits(model: nn.Module, splits: Mapping[str, EncodedTexts], spec: Any,
                    device: str | None = None) -> dict[str, dict[str, float]]:
    """The task's metrics (``spec.metric_names``) of ``model`` on each encoded split."""
    return {name: evaluate(model, data, spec.metric_names, is_regression=spec.is_regression,
                           device=device)
            for name, data in splits.items()}


# ------------------------------------------------------------------ efficientbert distill
@dataclass(frozen=True)
class Recipe:
    """How :func:`distill_student` trains: general KD on unlabeled text (``warmup_epochs``; 0
    skips it), then task KD, optionally with a hard-label term; embeddings initialized from
    the teacher. :data:`TUNED` is bench_distill's recipe, picked on the heldout split."""

    warmup_epochs: float = 1.0
    warmup_lr: float = 5e-4
    task_epochs: float = 3.0
    task_lr: float = 1e-3
    batch_size: int = 32
    label_weight: float = 0.0  # hard-label loss added to task KD (0: pure KD, the paper)
    init_embeddings: bool = True  # from the teacher's top singular directions
    include_austen: bool = False  # add the Austen novels to the general-KD text
    transfer_set: bool = False  # task KD on the unlabeled sentences (teacher-labelled) too


TUNED = Recipe(label_weight=1.0)


def distill_student(config: StudentConfig, task: str = "movie_binary", *,
                    recipe: Recipe = TUNED, teacher_dir: str | Path | None = None,
                    seed: int = 0, max_length: int | None = None,
                    eval_splits: tuple[str, ...] = ("heldout",),
                    out_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                    device: str | None = None, progress: bool = True,
                    checkpoint_dir: str | Path | None = None,
                    checkpoint_every: int = 0) -> dict[str, Any]:
    """Distill a student of ``config`` for ``task`` with ``recipe``; return metrics, sizes
    and timings.

    The teacher is fine-tuned once per task (cached). General KD reads the task's unlabeled
    sentences (:meth:`distill.data.TaskSpec.unlabeled`: for the embedded tasks the four
    sentiment files without the movie heldout / test sentences) minus any evaluation or test
    text, against the pretrained teacher; task KD reads the training split (or, with
    ``transfer_set``, all those unlabeled sentences), against the fine-tuned teacher. The
    result's ``"model"`` is the trained student, ``"kd"`` its loss module (with the trained
    ``fit_dense``, for :func:`distill.train.evaluate_kd`).
    """
    from .data import get_task_spec
    from .sentiment import austen_text

    spec = get_task_spec(task)
    max_length = max_length or default_max_length(task)
    config = config.replace(num_labels=spec.num_labels, is_regression=spec.is_regression)
    clock, seconds = time.perf_counter(), {}
    tuned = finetune_teacher(task, teacher_dir, cache_dir=cache_dir, device=device,
                             progress=progress)
    seconds["teacher_finetune_or_lookup"] = time.perf_counter() - clock
    tokenizer = load_tokenizer(tuned)
    base = load_teacher(teacher_dir) if teacher_dir else load_teacher()
    torch.manual_seed(seed)  # after loading: the fit_dense's first draw depends on the seed only
    student = Student(config, seed=seed)
    run = _Run(student, recipe, seed, device, progress, cache_dir, checkpoint_dir,
               checkpoint_every, seconds)

    @functools.cache  # general KD and, with ``transfer_set``, task KD read the same rows
    def unlabeled() -> EncodedTexts:
        held_out = {t for split in (*spec.eval_splits, *spec.test_splits) if split in ds
                    for col in spec.text_columns for t in ds[split][col]}
        texts = [t for t in spec.unlabeled(cache_dir) if t not in held_out]
        if recipe.include_austen:
            texts += list(austen_text(cache_dir))
        return encode_texts(tokenizer, texts, max_length=max_length)

    ds = load_task(task, cache_dir)
    result: dict[str, Any] = {"params": count_parameters(config), "seed": seed,
                              "recipe": asdict(recipe), "seconds": seconds}
    fit_dense: FitDense = KDLoss.for_models(config, base.config).fit_dense.state_dict()
    init = base if recipe.init_embeddings else None
    if recipe.warmup_epochs > 0:
        res, kd = run.phase("general", KDWeights.pretraining(), base, unlabeled, fit_dense, init)
        result["general"] = res.to_dict()
        if res.diverged:
            return {**result, "diverged": True}
        fit_dense, init = kd.fit_dense.state_dict(), None
    del base
    rows = unlabeled if recipe.transfer_set else (
        lambda: encode_split(ds[spec.train_split], tokenizer, spec, max_length))
    res, kd = run.phase("task", KDWeights.task(), tuned, rows, fit_dense, init,
                        name=f"{spec.name}-{'transfer' if recipe.transfer_set else 'train'}")
    result.update(task=res.to_dict(), diverged=res.diverged)
    if res.diverged:
        return result
    splits = {s: encode_split(ds[s], tokenizer, spec, max_length) for s in eval_splits}
    result["metrics"] = evaluate_splits(student, splits, spec, device)
    if out_dir is not None:
        result["out_dir"] = str(save_student(out_dir, student, kd, tokenizer,
                                             spec.label_names))
    result["model"], result["kd"] = student, kd
    return result


@dataclass
class _Run:
    """One :func:`distill_student` run: its student and settings, and a timer per part."""

    student: Student
    recipe: Recipe
    seed: int
    device: str | None
    progress: bool
    cache_dir: str | Path | None
    checkpoint_dir: str | Path | None
    checkpoint_every: int
    seconds: dict[str, float]

    def phase(self, kind: str, weights: KDWeights, teacher: Any, rows: Any,
              fit_dense: FitDense, init: nn.Module | None,
              name: str = "unlabeled") -> tuple[TrainResult, KDLoss]:
        """The teacher's outputs on ``rows()`` (cached), then one KD phase on them."""
        r = self.recipe
        epochs, lr = ((r.warmup_epochs, r.warmup_lr) if kind == "general"
                      else (r.task_epochs, r.task_lr))
        clock = time.perf_counter()
        outputs = teacher_outputs(teacher, rows(), self.student.config, name=name,
                                  cache_dir=self.cache_dir, device=self.device,
                                  progress=self.progress)
        self.seconds[f"{kind}_cache"] = time.perf_counter() - clock
        clock = time.perf_counter()
        train = TrainConfig(epochs=epochs, lr=lr, batch_size=r.batch_size, seed=self.seed,
                            device=self.device, progress=self.progress, desc=f"{kind} KD",
                            checkpoint_every=self.checkpoint_every,
                            checkpoint_dir=None if self.checkpoint_dir is None
                            else Path(self.checkpoint_dir) / kind)
        out = kd_phase(self.student, outputs, Phase(
            kind, weights, train, r.label_weight if kind == "task" else 0.0),
            fit_dense=fit_dense, init_from=init)
        self.seconds[f"{kind}_kd"] = time.perf_counter() - clock
        return out
