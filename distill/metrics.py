"""Evaluation metrics implemented from their definitions with numpy.

* Classification: accuracy, binary F1 (positive class 1), macro F1 (mean of the per-class
  F1s), Matthews correlation
  (multi-class form; equals the binary phi coefficient for two classes).
* Regression: Pearson and Spearman correlation (Spearman = Pearson of average ranks,
  so ties get the mean of the ranks they span).
* GLUE: :func:`glue_metrics` maps each task to its official metrics
  (CoLA: MCC; STS-B: Pearson + Spearman; MRPC/QQP: accuracy + F1; others: accuracy).
* SQuAD v1.1 / v2.0: exact match and F1 with the official answer normalization,
  max over the gold answers; v2.0 scores an empty prediction as "no answer" and
  reports HasAns / NoAns breakdowns. Scores are percentages as in the official scripts.

Conventions: values are fractions in [0, 1] (or [-1, 1]) except SQuAD (0-100).
Undefined cases (a zero denominator in MCC or F1, a constant input to a correlation)
return 0.0 instead of NaN so that model selection by ``max`` keeps working.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

ArrayLike = Sequence[float] | Sequence[int] | np.ndarray

GLUE_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("mcc",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearman"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}
REGRESSION_METRICS = frozenset({"pearson", "spearman"})


def _pair(preds: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(preds), np.asarray(labels)
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"predictions ({p.shape[0]}) and labels ({y.shape[0]}) differ in length")
    if p.shape[0] == 0:
        raise ValueError("cannot compute a metric on zero examples")
    return p, y


def accuracy(preds: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of predictions equal to the label."""
    p, y = _pair(preds, labels)
    return float(np.mean(p == y))


def f1_binary(preds: ArrayLike, labels: ArrayLike, positive: int = 1) -> float:
    """F1 of the positive class: 2 TP / (2 TP + FP + FN); 0.0 if there is no positive."""
    p, y = _pair(preds, labels)
    tp = np.sum((p == positive) & (y == positive))
    fp = np.sum((p == positive) & (y != positive))
    fn = np.sum((p != positive) & (y == positive))
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom else 0.0


def f1_macro(preds: ArrayLike, labels: ArrayLike) -> float:
    """Unweighted mean over classes of each class's F1 (one class against the rest); the
    classes are those present in the labels or the predictions (as scikit-learn's
    ``f1_score(average="macro")``)."""
    p, y = _pair(preds, labels)
    return float(np.mean([f1_binary(p, y, positive=c) for c in np.union1d(p, y)]))


def matthews_corrcoef(preds: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation from the confusion matrix C (rows: labels, cols: preds):
    (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) with c = trace, s = total,
    t = per-class true counts, p = per-class predicted counts. 0.0 if undefined."""
    p, y = _pair(preds, labels)
    classes, inverse = np.unique(np.concatenate([y, p]), return_inverse=True)
    k, n = len(classes), len(y)
    conf = np.zeros((k, k), dtype=np.float64)
    np.add.at(conf, (inverse[:n], inverse[n:]), 1.0)
    t, pc = conf.sum(axis=1), conf.sum(axis=0)
    c, s = np.trace(conf), conf.sum()
    denom = np.sqrt((s * s - pc @ pc) * (s * s - t @ t))
    return float((c * s - t @ pc) / denom) if denom > 0 else 0.0


def pearson(preds: ArrayLike, labels: ArrayLike) -> float:
    """Pearson correlation; 0.0 when either input is constant."""
    p, y = _pair(preds, labels)
    p, y = p.astype(np.float64).ravel(), y.astype(np.float64).ravel()
    pd, yd = p - p.mean(), y - y.mean()
    denom = np.sqrt((pd @ pd) * (yd @ yd))
    return float(np.clip((pd @ yd) / denom, -1.0, 1.0)) if denom > 0 else 0.0


def rankdata(values: ArrayLike) -> np.ndarray:
    """1-based ranks; tied values get the average of the ranks they occupy."""
    v = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    # start index of each run of equal values
    starts = np.flatnonzero(np.concatenate([[True], sorted_v[1:] != sorted_v[:-1]]))
    ends = np.append(starts[1:], len(v))
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(preds: ArrayLike, labels: ArrayLike) -> float:
    """Spearman rank correlation: Pearson of average ranks (tie-corrected)."""
    p, y = _pair(preds, labels)
    return pearson(rankdata(p), rankdata(y))


# ----------------------------------------------------------------------------- the registry
class UnknownMetricError(ValueError):
    """A metric name that no one declared (so its direction is unknown)."""


@dataclass(frozen=True)
class Metric:
    """A measured quantity, declared once: its name, whether larger is better, what it is.
    Task metrics also carry the function computing them from predictions and labels."""

    name: str
    higher_is_better: bool
    description: str = ""
    fn: Callable[[np.ndarray, np.ndarray], float] | None = field(default=None, compare=False)

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    @property
    def arrow(self) -> str:
        """``↑`` when larger is better, else ``↓`` (for progress bars and tables)."""
        return "↑" if self.higher_is_better else "↓"


METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, higher_is_better: bool, description: str = "",
                    fn: Callable[[np.ndarray, np.ndarray], float] | None = None) -> Metric:
    """Declare a metric (re-declaring the same name with another direction is an error)."""
    m = Metric(name, higher_is_better, description, fn)
    old = METRICS.get(name)
    if old is not None and old.higher_is_better != higher_is_better:
        raise ValueError(f"metric {name!r} is already declared with higher_is_better="
                         f"{old.higher_is_better}")
    METRICS[name] = m
    return m


def metric(name: str) -> Metric:
    """The declared metric ``name``; :class:`UnknownMetricError` names the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise UnknownMetricError(
            f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}. Declare a new one "
            "with distill.register_metric(name, higher_is_better=...)") from None


for _name, _fn, _what in (
        ("accuracy", accuracy, "fraction of correct predictions"),
        ("f1", f1_binary, "F1 of the positive class (label 1)"),
        ("f1_macro", f1_macro, "unweighted mean of the per-class F1s"),
        ("mcc", matthews_corrcoef, "Matthews correlation"),
        ("pearson", pearson, "Pearson correlation (regression)"),
        ("spearman", spearman, "Spearman rank correlation (regression)")):
    register_metric(_name, higher_is_better=True, description=_what, fn=_fn)
register_metric("score", higher_is_better=True,
                description="a scorer's single fitness value (the mean of the task metrics)")
for _name, _what in (
        ("kd_loss", "the task-KD objective on held-out rows (all weighted terms)"),
        ("kd_attention", "attention-score MSE term of the KD objective"),
        ("kd_hidden", "hidden-state MSE term of the KD objective"),
        ("kd_embedding", "embedding-output MSE term of the KD objective"),
        ("kd_prediction", "prediction (soft cross-entropy / MSE) term of the KD objective"),
        ("teacher_kl", "mean KL from the teacher's output distribution to the student's"),
        ("label_nll", "mean negative log-likelihood of the true labels (held-out)"),
        ("train_loss", "mean training loss over the last logged steps"),
        ("loss", "a training loss"), ("mse", "mean squared error")):
    register_metric(_name, higher_is_better=False, description=_what)

_METRIC_FUNCS = {m.name: m.fn for m in METRICS.values() if m.fn is not None}


def to_predictions(outputs: ArrayLike, is_regression: bool) -> np.ndarray:
    """Model outputs -> predictions: argmax of 2-D logits, or squeezed regression values."""
    out = np.asarray(outputs)
    if is_regression:
        return out.reshape(out.shape[0], -1)[:, 0].astype(np.float64)
    return out.argmax(axis=-1) if out.ndim == 2 else out


def compute_metrics(names: Sequence[str], preds: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Compute the named metrics (any of accuracy, f1, f1_macro, mcc, pearson, spearman).

    ``preds`` may be logits (2-D, argmax is taken) for classification metrics, or
    values (1-D or N x 1) for correlations. ``score`` is the mean of the metrics.
    """
    unknown = [n for n in names if n not in _METRIC_FUNCS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(_METRIC_FUNCS)}")
    regression = any(n in REGRESSION_METRICS for n in names)
    p = to_predictions(preds, regression)
    result = {n: _METRIC_FUNCS[n](p, labels) for n in names}
    result["score"] = float(np.mean(list(result.values())))
    return result


def glue_metrics(task: str, preds: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Official GLUE metrics of ``task`` plus ``score`` (their mean), e.g.
    ``glue_metrics("mrpc", logits, labels) -> {"accuracy", "f1", "score"}``."""
    key = task.lower().replace("-", "_")
    key = {"sst_2": "sst2", "sts_b": "stsb", "mnli_mm": "mnli_mismatched",
           "mnli_m": "mnli_matched"}.get(key, key)
    if key not in GLUE_METRICS:
        raise ValueError(f"unknown GLUE task {task!r}; known: {sorted(GLUE_METRICS)}")
    return compute_metrics(GLUE_METRICS[key], preds, labels)


# ----------------------------------------------------------------------------- SQuAD
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Official SQuAD normalization: lowercase, drop punctuation, drop the articles
    a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 if the normalized strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, empty_matches_empty: bool = True) -> float:
    """Bag-of-tokens F1 of the normalized strings. With ``empty_matches_empty`` (v2.0
    rule) two empty answers score 1 and one empty answer scores 0."""
    pred_toks, gold_toks = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if empty_matches_empty and (not pred_toks or not gold_toks):
        return float(pred_toks == gold_toks)
    common = collections.Counter(pred_toks) & collections.Counter(gold_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def _gold_list(answers: object) -> list[str]:
    """Accept ``{"text": [...], ...}`` (HF schema) or a plain list of strings."""
    if isinstance(answers, Mapping):
        answers = answers.get("text", [])
    if isinstance(answers, str):
        return [answers]
    return [str(a) for a in answers]  # type: ignore[union-attr]


def squad_v1_metrics(predictions: Mapping[str, str],
                     references: Mapping[str, object]) -> dict[str, float]:
    """SQuAD v1.1: ``{"exact_match", "f1", "total"}`` in percent, max over gold answers.

    ``references`` maps question id -> answers (HF ``answers`` dict or list of strings).
    Questions without a prediction count as wrong (as in the official script).
    """
    em = f1 = 0.0
    for qid, answers in references.items():
        golds = _gold_list(answers)
        if not golds:
            raise ValueError(f"question {qid!r} has no gold answer; SQuAD v1.1 needs one "
                             "(use squad_v2_metrics for unanswerable questions)")
        pred = predictions.get(qid)
        if pred is None:
            continue
        em += max(exact_match(pred, g) for g in golds)
        f1 += max(token_f1(pred, g, empty_matches_empty=False) for g in golds)
    total = len(references)
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total, "total": float(total)}


def squad_v2_metrics(predictions: Mapping[str, str], references: Mapping[str, object],
                     na_probs: Mapping[str, float] | None = None,
                     na_prob_thresh: float = 1.0) -> dict[str, float]:
    """SQuAD v2.0: exact / f1 overall and for HasAns / NoAns questions (percent).

    An empty prediction means "no answer"; it scores 1 on an unanswerable question
    (empty gold list; gold answers that normalize to empty also count as ""). A
    question with no prediction scores 0. With
    ``na_probs``, a prediction whose no-answer probability exceeds ``na_prob_thresh``
    is treated as empty, as in the official script.
    """
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    has_ans = set()
    for qid, answers in references.items():
        raw_golds = _gold_list(answers)
        if raw_golds:
            has_ans.add(qid)
        golds = [g for g in raw_golds if normalize_answer(g)] or [""]
        if qid not in predictions:
            exact[qid] = f1[qid] = 0.0
            continue
        pred = predictions[qid]
        if na_probs is not None and na_probs.get(qid, 0.0) > na_prob_thresh:
            pred = ""
        exact[qid] = max(exact_match(pred, g) for g in golds)
        f1[qid] = max(token_f1(pred, g) for g in golds)

    def summary(ids: Sequence[str], prefix: str = "") -> dict[str, float]:
        n = len(ids)
        return {f"{prefix}exact": 100.0 * sum(exact[i] for i in ids) / n if n else 0.0,
                f"{prefix}f1": 100.0 * sum(f1[i] for i in ids) / n if n else 0.0,
                f"{prefix}total": float(n)}

    ids = list(references)
    result = summary(ids)
    result.update(summary([i for i in ids if i in has_ans], "HasAns_"))
    result.update(summary([i for i in ids if i not in has_ans], "NoAns_"))
    return result
