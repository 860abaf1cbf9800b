"""Knowledge-distillation losses (TinyBERT-style, as EfficientBERT uses them).

Terms (each summed over the mapped layer pairs, each pair a mean over all elements):

- ``attention``: MSE between student and teacher *pre-softmax* attention scores
  ``[B, heads, T, T]``; masked positions (padding keys, or any score <=
  :data:`MASKED_SCORE`) are set to 0 in both first. Head counts must match: with a
  different count the term is skipped (see :func:`describe_distillation`).
- ``hidden``: MSE between ``fit_dense(student hidden)`` and the teacher hidden state,
  with one shared ``fit_dense = Linear(H_s -> H_t)`` (identity when the widths are equal);
  padding positions are included, as in the reference, unless ``forward(...,
  skip_hidden_padding=True)`` (cached teacher outputs have no values there): then padding
  adds neither loss nor gradient, and the mean still runs over all elements.
- ``embedding``: the same on the embedding outputs (``hidden_states[0]``).
- ``prediction``: soft cross-entropy ``-sum softmax(t/T) * log_softmax(s/T)`` averaged over
  the batch (no ``T**2`` factor, as in the reference), or MSE for regression.

Layer map: student layer ``l`` (1-based) <- teacher layer ``l * L_t / L_s`` unless a
custom map is given. ``total = sum(weight * term)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import DistillShapeError

#: scores at or below this value count as masked: the student fills masked keys with
#: finfo.min, Hugging Face BERT adds finfo.min, the original BERT adds -10000 (TinyBERT's
#: reference zeroes everything <= -100; real scores stay far above -1000)
MASKED_SCORE = -1e3
TERMS = ("attention", "hidden", "embedding", "prediction")


@dataclass(frozen=True)
class KDWeights:
    """Weight of each term; 0 switches a term off (it is then not computed)."""

    attention: float = 1.0
    hidden: float = 1.0
    embedding: float = 1.0
    prediction: float = 1.0

    @classmethod
    def pretraining(cls) -> KDWeights:
        """General (pre-training) KD: attention and hidden states (with the embedding
        output, as TinyBERT's representation loss), no prediction term, no MLM."""
        return cls(prediction=0.0)

    @classmethod
    def task(cls) -> KDWeights:
        """Task KD: every term with weight 1 (the paper's total)."""
        return cls()


# ----------------------------------------------------------------- the single terms
def attention_mse(student: torch.Tensor, teacher: torch.Tensor,
                  attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE of pre-softmax scores ``[B, heads, T, T]`` with masked positions zeroed."""
    if student.shape != teacher.shape:
        raise DistillShapeError(
            f"attention scores differ in shape: student {tuple(student.shape)} vs teacher "
            f"{tuple(teacher.shape)} ([batch, heads, seq, seq]); head counts and sequence "
            "lengths must match (same tokenization, a student with the teacher's heads)")
    masked = (student <= MASKED_SCORE) | (teacher <= MASKED_SCORE)
    if attention_mask is not None:
        masked = masked | (attention_mask == 0)[:, None, None, :].to(student.device)
    return F.mse_loss(student.masked_fill(masked, 0.0), teacher.masked_fill(masked, 0.0))


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, fit_dense: nn.Module,
               keep: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between ``fit_dense(student)`` ``[B, T, H_t]`` and ``teacher``; where ``keep``
    (``[B, T, 1]`` bool) is False the teacher's value is taken as matched exactly."""
    mapped = fit_dense(student)
    if mapped.shape != teacher.shape:
        raise DistillShapeError(
            f"fit_dense(student hidden) has shape {tuple(mapped.shape)} but the teacher's "
            f"hidden state has {tuple(teacher.shape)}; build KDLoss with the teacher's width "
            "and feed both models the same batch")
    if keep is not None:
        mapped = torch.where(keep, mapped, teacher)
    return F.mse_loss(mapped, teacher)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """``mean_b -sum_c softmax(t/T)_c * log_softmax(s/T)_c``."""
    if student_logits.shape != teacher_logits.shape:
        raise DistillShapeError(f"logits differ: student {tuple(student_logits.shape)} vs "
                                f"teacher {tuple(teacher_logits.shape)}; use the same labels")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be positive")
    target = F.softmax(teacher_logits / temperature, dim=-1)
    return (-target * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


def regression_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """MSE between the flattened predictions (regression tasks)."""
    if student_logits.numel() != teacher_logits.numel():
        raise DistillShapeError(f"predictions differ in size: student "
                                f"{tuple(student_logits.shape)} vs teacher "
                                f"{tuple(teacher_logits.shape)}")
    return F.mse_loss(student_logits.reshape(-1), teacher_logits.reshape(-1))


# ------------------------------------------------------------------------ layer map
def uniform_layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Student layer ``l`` (1-based) -> teacher layer ``l * L_t / L_s``; must be integral."""
    if student_layers < 1 or teacher_layers < 1:
        raise ValueError(f"layer counts must be positive, got student={student_layers}, "
                         f"teacher={teacher_layers}")
    out = {}
    for layer in range(1, student_layers + 1):
        t, rem = divmod(layer * teacher_layers, student_layers)
        if rem:
            divisors = [n for n in range(1, teacher_layers + 1) if teacher_layers % n == 0]
            raise DistillShapeError(
                f"uniform layer map: student layer {layer} <- teacher layer {layer} * "
                f"{teacher_layers} / {student_layers} = {layer * teacher_layers / student_layers:g}"
                f", not an integer; use a student with {divisors} layers or pass a custom "
                f"layer_map such as {_example_map(student_layers, teacher_layers)}")
        out[layer] = t
    return out


def _example_map(ls: int, lt: int) -> dict[int, int]:
    return {l: max(1, round(l * lt / ls)) for l in range(1, ls + 1)}


def check_layer_map(layer_map: Mapping[int, int] | Sequence[int], student_layers: int,
                    teacher_layers: int) -> dict[int, int]:
    """A custom map as ``{student layer: teacher layer}`` (1-based), validated. A sequence
    gives the teacher layer of student layers 1, 2, ... in order."""
    items = (dict(layer_map) if isinstance(layer_map, Mapping)
             else {i + 1: t for i, t in enumerate(layer_map)})
    for s, t in items.items():
        if not (isinstance(s, int) and 1 <= s <= student_layers):
            raise DistillShapeError(f"layer_map key {s!r} is not a student layer in "
                                    f"1..{student_layers}")
        if not (isinstance(t, int) and 1 <= t <= teacher_layers):
            raise DistillShapeError(f"layer_map[{s}] = {t!r} is not a teacher layer in "
                                    f"1..{teacher_layers}")
    return dict(sorted(items.items()))


# ----------------------------------------------------------------------- the module
def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


class KDLoss(nn.Module):
    """All terms and their weighted total. Owns the shared ``fit_dense`` (train it with
    the student). ``forward(student_out, teacher_out, attention_mask)`` takes objects or
    dicts with ``hidden_states`` (embedding output first), ``attention_scores``
    (pre-softmax, one per layer) and ``logits``; teacher tensors are detached."""

    def __init__(self, *, student_hidden: int, teacher_hidden: int, student_layers: int,
                 teacher_layers: int, student_heads: int, teacher_heads: int,
                 layer_map: Mapping[int, int] | Sequence[int] | None = None,
                 weights: KDWeights | None = None, temperature: float = 1.0,
                 is_regression: bool = False, fit_dense: bool | None = None) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature={temperature!r} must be positive")
        self.student_hidden, self.teacher_hidden = student_hidden, teacher_hidden
        self.student_layers, self.teacher_layers = student_layers, teacher_layers
        self.student_heads, self.teacher_heads = student_heads, teacher_heads
        self.layer_map = (uniform_layer_map(student_layers, teacher_layers) if layer_map is None
                          else check_layer_map(layer_map, student_layers, teacher_layers))
        self.weights = weights or KDWeights()
        self.temperature, self.is_regression = temperature, is_regression
        use_fit = student_hidden != teacher_hidden if fit_dense is None else fit_dense
        if not use_fit and student_hidden != teacher_hidden:
            raise DistillShapeError(f"fit_dense=False needs equal widths, got student "
                                    f"{student_hidden} and teacher {teacher_hidden}")
        self.fit_dense: nn.Module = (nn.Linear(student_hidden, teacher_hidden) if use_fit
                                     else nn.Identity())

    @classmethod
    def for_models(cls, student_config: Any, teacher_config: Any, **kwargs: Any) -> KDLoss:
        """From a :class:`~distill.config.StudentConfig` and a Hugging Face config
        (``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``)."""
        kwargs.setdefault("is_regression", bool(getattr(student_config, "is_regression", False)))
        return cls(student_hidden=student_config.hidden,
                   teacher_hidden=teacher_config.hidden_size,
                   student_layers=student_config.num_layers,
                   teacher_layers=teacher_config.num_hidden_layers,
                   student_heads=student_config.heads,
                   teacher_heads=teacher_config.num_attention_heads, **kwargs)

    @property
    def attention_active(self) -> bool:
        return self.weights.attention != 0 and self.student_heads == self.teacher_heads

    def describe(self) -> str:
        return describe_distillation(self)

    def forward(self, student: Any, teacher: Any, attention_mask: torch.Tensor | None = None,
                *, skip_hidden_padding: bool = False) -> dict[str, torch.Tensor]:
        s_hidden, t_hidden = _get(student, "hidden_states"), _get(teacher, "hidden_states")
        if attention_mask is None:
            attention_mask = _get(student, "attention_mask")
        device = self._device(s_hidden, student)
        keep = (attention_mask.bool()[..., None].to(device)
                if skip_hidden_padding and attention_mask is not None else None)
        zero = torch.zeros((), device=device)
        terms = dict.fromkeys(TERMS, zero)
        w = self.weights
        if w.hidden or w.embedding:
            self._check_count("hidden_states", s_hidden, self.student_layers + 1,
                              t_hidden, self.teacher_layers + 1)
        if w.embedding:
            terms["embedding"] = hidden_mse(s_hidden[0], t_hidden[0].detach(), self.fit_dense,
                                           keep)
        if w.hidden:
            terms["hidden"] = sum((hidden_mse(s_hidden[s], t_hidden[t].detach(), self.fit_dense,
                                              keep) for s, t in self.layer_map.items()), zero)
        if self.attention_active:
            s_att, t_att = _get(student, "attention_scores"), _get(teacher, "attention_scores")
            self._check_count("attention_scores", s_att, self.student_layers,
                              t_att, self.teacher_layers)
            terms["attention"] = sum((attention_mse(s_att[s - 1], t_att[t - 1].detach(),
                                                    attention_mask)
                                      for s, t in self.layer_map.items()), zero)
        if w.prediction:
            s_log, t_log = _get(student, "logits"), _get(teacher, "logits")
            if s_log is None or t_log is None:
                raise DistillShapeError("the prediction term needs logits from both models; "
                                        "pass them or use KDWeights(prediction=0)")
            terms["prediction"] = (regression_mse(s_log, t_log.detach()) if self.is_regression
                                   else soft_cross_entropy(s_log, t_log.detach(),
                                                           self.temperature))
        terms["total"] = sum((getattr(w, k) * terms[k] for k in TERMS), zero)
        return terms

    @staticmethod
    def _device(hidden: Any, student: Any) -> torch.device:
        if hidden:
            return hidden[0].device
        logits = _get(student, "logits")
        return logits.device if logits is not None else torch.device("cpu")

    @staticmethod
    def _check_count(what: str, s: Any, s_want: int, t: Any, t_want: int) -> None:
        for who, seq, want in (("student", s, s_want), ("teacher", t, t_want)):
            if seq is None or len(seq) != want:
                got = "none" if seq is None else len(seq)
                hint = (" (a Hugging Face teacher gives post-softmax `attentions`; its "
                        "pre-softmax scores must be captured, or use KDWeights(attention=0))"
                        if what == "attention_scores" and who == "teacher" else "")
                raise DistillShapeError(f"{who} {what}: expected {want} tensors, got {got}"
                                        f"{hint}")


def describe_distillation(kd: KDLoss) -> str:
    """In words: what is distilled from which teacher layer, and what is skipped and why."""
    w, pairs = kd.weights, kd.layer_map
    s_list = ", ".join(str(s) for s in pairs)
    t_list = ", ".join(str(t) for t in pairs.values())
    fit = (f"the shared fit_dense Linear({kd.student_hidden} -> {kd.teacher_hidden})"
           if isinstance(kd.fit_dense, nn.Linear) else "no projection (equal widths)")
    done, skipped = [], []
    if w.attention and kd.attention_active:
        done.append(f"attention: pre-softmax scores of student layers {s_list} <- teacher "
                    f"layers {t_list}, {kd.student_heads} heads each, MSE with masked "
                    f"positions zeroed (weight {w.attention:g})")
    elif w.attention:
        skipped.append(
            f"attention: the student has {kd.student_heads} heads and the teacher "
            f"{kd.teacher_heads}; scores cannot be compared head by head, so no attention "
            f"map is distilled (give the student {kd.teacher_heads} heads, with hidden "
            f"divisible by {kd.teacher_heads}, to enable it)")
    if w.hidden:
        done.append(f"hidden states: student layers {s_list} <- teacher layers {t_list} "
                    f"through {fit}, MSE (weight {w.hidden:g})")
    if w.embedding:
        done.append(f"embedding output through {fit}, MSE (weight {w.embedding:g})")
    if w.prediction:
        how = ("MSE on the regression output" if kd.is_regression else
               f"soft cross-entropy at temperature {kd.temperature:g}")
        done.append(f"predictions: {how} (weight {w.prediction:g})")
    for name in TERMS:
        if not getattr(w, name):
            skipped.append(f"{name}: weight 0")
    unused = [t for t in range(1, kd.teacher_layers + 1) if t not in pairs.values()]
    if unused and (w.hidden or kd.attention_active):
        skipped.append(f"teacher layers {', '.join(map(str, unused))}: no student layer maps "
                       "to them")
    unmapped = [s for s in range(1, kd.student_layers + 1) if s not in pairs]
    if unmapped:
        skipped.append(f"student layers {', '.join(map(str, unmapped))}: not in the layer "
                       "map, no layer-wise target")
    lines = ["Distilled:"] + ([f"  - {d}" for d in done] or ["  (nothing)"])
    lines += ["Skipped:"] + ([f"  - {s}" for s in skipped] or ["  (nothing)"])
    return "\n".join(lines)
