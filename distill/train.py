"""What the training loop (:mod:`distill.loop`) runs: distillation (general or task KD, of
a student or of a supernet's random sub-networks), plain fine-tuning, and evaluation (task
metrics, and the KD objective on held-out rows).

Data are :class:`distill.encode.EncodedTexts`: token ids without padding; every batch is
padded to its own longest example, and batches group examples of similar length.
A *teacher* for :func:`distill` is anything with ``inputs`` (the :class:`EncodedTexts` it
answers for), ``config`` (``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``)
and ``targets(indices, batch)``: cached outputs (:class:`distill.teacher_cache.TeacherOutputs`)
or a live model (:class:`distill.teacher.LiveTeacher`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from mlpgraph import STANDARD_FFN, MLPLayer, parse

from .encode import EncodedTexts
from .errors import TrainingError
from .loop import TrainConfig, TrainResult, model_inputs, resolve_device, train_loop
from .losses import KDLoss, KDWeights
from .metrics import compute_metrics, to_predictions

Sampler = Callable[[random.Random], Sequence[Any]]
MASK_FILL = -1e9  # teacher scores of padding rows / keys (<= losses.MASKED_SCORE: ignored)
FIT_DENSE_NAME = "fit_dense.safetensors"


# ----------------------------------------------------------------------------- distillation
class Teacher(Protocol):
    inputs: EncodedTexts
    config: Any

    def targets(self, indices: np.ndarray, batch: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        ...


def _subnet(model: nn.Module, sampler: Sampler, rng: random.Random) -> nn.Module:
    before = len(getattr(model, "extra", ()))
    specs = list(sampler(rng))
    sub = model.extract(specs, mode="view")
    if len(getattr(model, "extra", ())) != before:
        raise TrainingError(f"sub-network {specs} needed new weight pools that the optimizer "
                            "does not train; call supernet.add_pools(expressions) for every "
                            "expression the sampler can return before training")
    return sub.train(model.training)


def distill(model: nn.Module, teacher: Teacher, kd_loss: KDLoss, config: TrainConfig, *,
            sampler: Sampler | None = None, label_weight: float = 0.0,
            on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """KD of ``model`` (a Student, or a Supernet with ``sampler``: one random sub-network,
    ``sampler(rng) -> layer specs``, per step) on ``teacher.inputs`` with ``kd_loss``'s terms.
    ``label_weight > 0`` adds that times the hard-label loss (CE, or MSE for regression)
    on examples that carry labels (``teacher.inputs.labels``)."""
    if sampler is not None and not hasattr(model, "extract"):
        raise TrainingError("a sampler needs a supernet (a model with .extract)")
    device = resolve_device(config.device)
    data = teacher.inputs

    def step_loss(indices: np.ndarray, rng: random.Random) -> Mapping[str, torch.Tensor]:
        batch = data.batch(indices, device)
        net = _subnet(model, sampler, rng) if sampler is not None else model
        out = net(**model_inputs(net, batch))
        targets = teacher.targets(indices, batch)
        # cached targets have no values at padding: padding adds no loss
        terms = kd_loss(out, targets, batch["attention_mask"], skip_hidden_padding=True)
        if label_weight and "labels" in batch:
            terms["label"] = _label_loss(out.logits, batch["labels"], kd_loss.is_regression)
            terms["total"] = terms["total"] + label_weight * terms["label"]
        return terms

    return train_loop(model, step_loss, data.lengths, config, extra_modules=[kd_loss],
                      on_step=on_step)


def general_distill(model: nn.Module, teacher: Teacher, config: TrainConfig, *,
                    sampler: Sampler | None = None, kd_loss: KDLoss | None = None,
                    on_step: Callable[[int, dict[str, float]], None] | None = None
                    ) -> tuple[TrainResult, KDLoss]:
    """Warm-up KD on unlabeled text: attention, hidden and embedding terms only (no
    prediction term, no MLM). With a supernet and ``sampler``, one random sub-network per
    step. Returns the result and the loss module (keep its trained ``fit_dense``)."""
    kd = kd_loss or KDLoss.for_models(model.config, teacher.config,
                                      weights=KDWeights.pretraining())
    return distill(model, teacher, kd, config, sampler=sampler, on_step=on_step), kd


def _label_loss(logits: torch.Tensor, labels: torch.Tensor, is_regression: bool) -> torch.Tensor:
    if is_regression:
        return F.mse_loss(logits.reshape(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


def finetune(model: nn.Module, data: EncodedTexts, config: TrainConfig, *,
             is_regression: bool = False,
             on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Plain supervised fine-tuning on ``data.labels`` (cross-entropy, or MSE), no KD."""
    if data.labels is None:
        raise TrainingError("fine-tuning needs labels; encode the split with its label column")
    device = resolve_device(config.device)

    def step_loss(indices: np.ndarray, rng: random.Random) -> Mapping[str, torch.Tensor]:
        batch = data.batch(indices, device)
        logits = model(**model_inputs(model, batch)).logits
        return {"total": _label_loss(logits, batch["labels"], is_regression)}

    return train_loop(model, step_loss, data.lengths, config, on_step=on_step)


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(model: nn.Module, data: EncodedTexts, batch_size: int = 128,
            device: str | torch.device | None = None) -> np.ndarray:
    """Logits ``[N, num_outputs]`` in the order of ``data`` (eval mode, length-sorted batches)."""
    device = resolve_device(device)
    model.to(device).eval()
    order = np.argsort(data.lengths, kind="stable")
    chunks = []
    for i in range(0, len(order), batch_size):
        batch = data.batch(order[i:i + batch_size], device)
        chunks.append(model(**model_inputs(model, batch)).logits.float().cpu().numpy())
    out = np.empty((len(order), chunks[0].shape[1]), dtype=np.float32)
    out[order] = np.concatenate(chunks)
    return out


def evaluate(model: nn.Module, data: EncodedTexts, metric_names: Sequence[str], *,
             is_regression: bool = False, batch_size: int = 128,
             device: str | torch.device | None = None) -> dict[str, float]:
    """Metrics (names of :func:`distill.metrics.compute_metrics`) of ``model`` on ``data``."""
    if data.labels is None:
        raise ValueError("evaluation needs labels")
    preds = to_predictions(predict(model, data, batch_size, device), is_regression)
    return compute_metrics(metric_names, preds, data.labels)


@torch.no_grad()
def evaluate_kd(model: nn.Module, teacher: Teacher, kd_loss: KDLoss, *, batch_size: int = 128,
                device: str | torch.device | None = None,
                metric_names: Sequence[str] = ()) -> dict[str, float]:
    """The KD objective on ``teacher.inputs`` in eval mode (no dropout): ``kd_loss`` is the
    weighted total of ``kd_loss``'s terms (the same terms and weights as training), each term
    is ``kd_<term>``, and ``teacher_kl`` the mean KL from the teacher's output distribution to
    the student's (for regression, unit-variance Gaussians: ``(s - t)^2 / 2``). Batches hold
    rows of similar length in a fixed order, so two models are scored on the same batches.
    ``metric_names``: also the task metrics against the inputs' labels (the same forward)."""
    device = resolve_device(device)
    model.to(device).eval()
    kd_loss.to(device).eval()
    data = teacher.inputs
    order = np.argsort(data.lengths, kind="stable")
    sums: dict[str, float] = {}
    logits = []
    for i in range(0, len(order), batch_size):
        rows = order[i:i + batch_size]
        batch = data.batch(rows, device)
        out = model(**model_inputs(model, batch))
        logits.append(out.logits.float().cpu().numpy())
        targets = teacher.targets(rows, batch)
        terms = kd_loss(out, targets, batch["attention_mask"], skip_hidden_padding=True)
        part = {("kd_loss" if k == "total" else f"kd_{k}"): float(v) * len(rows)
                for k, v in terms.items()}
        if targets.get("logits") is not None:
            part["teacher_kl"] = float(_teacher_kl(out.logits.float(), targets["logits"].float(),
                                                   kd_loss.is_regression).sum())
        for k, v in part.items():
            sums[k] = sums.get(k, 0.0) + v
    out = {k: v / len(order) for k, v in sums.items()}
    if metric_names:
        if data.labels is None:
            raise TrainingError("metric_names need labelled inputs; these rows have none")
        ordered = np.empty((len(order), logits[0].shape[1]), dtype=np.float32)
        ordered[order] = np.concatenate(logits)
        out.update(compute_metrics(metric_names, to_predictions(ordered, kd_loss.is_regression),
                                   data.labels))
    return out


def _teacher_kl(student: torch.Tensor, teacher: torch.Tensor,
                is_regression: bool) -> torch.Tensor:
    """Per row: KL(teacher || student) of the output distributions."""
    if is_regression:
        return 0.5 * (student.reshape(len(student), -1) - teacher.reshape(len(teacher), -1)
                      ).pow(2).sum(-1)
    return F.kl_div(student.log_softmax(-1), teacher.log_softmax(-1), log_target=True,
                    reduction="none").sum(-1)


# ----------------------------------------------------------------------------- helpers
def random_sampler(num_layers: int, hidden: int,
                   expressions: Sequence[Any] = (STANDARD_FFN,),
                   stacks: Sequence[int] = (1, 2, 3, 4),
                   ratios: Sequence[float] = (1, 1 / 2, 1 / 3, 1 / 4)) -> Sampler:
    """A sampler of uniform random layers (an :class:`~mlpgraph.MLPLayer` per layer, of width
    ``max(1, round(hidden * ratio))``; ``expressions``: graphs, or text parsed once here)."""
    graphs = [parse(e) if isinstance(e, str) else e for e in expressions]

    def sample(rng: random.Random) -> list[MLPLayer]:
        return [MLPLayer.with_width(rng.choice(graphs), rng.choice(list(stacks)),
                                    max(1, round(hidden * rng.choice(list(ratios)))), hidden)
                for _ in range(num_layers)]
    return sample


def save_fit_dense(kd_loss: KDLoss, folder: str | Path) -> Path | None:
    """Store the trained ``fit_dense`` beside a saved student / supernet (None if identity)."""
    state = kd_loss.fit_dense.state_dict()
    if not state:
        return None
    path = Path(folder) / FIT_DENSE_NAME
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))
    return path


def load_fit_dense(kd_loss: KDLoss, folder: str | Path) -> bool:
    """Load a ``fit_dense`` saved by :func:`save_fit_dense` if present and of the right shape."""
    path = Path(folder) / FIT_DENSE_NAME
    own = kd_loss.fit_dense.state_dict()
    if not path.is_file() or not own:
        return False
    saved = load_file(str(path))
    if {k: tuple(v.shape) for k, v in saved.items()} != {k: tuple(v.shape)
                                                         for k, v in own.items()}:
        return False
    kd_loss.fit_dense.load_state_dict(saved)
    return True
