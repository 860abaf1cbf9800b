"""The one record of scoring a candidate, from the scorer to the search journal.

:class:`ScoreResult` is what :func:`distill.score` returns, what a worker sends back, what
the search ranks and what its journal stores (as JSON). It lives in this small module
without heavy imports so that processes that only read results (the search, the report)
do not load torch or datasets for it.

``metrics`` holds every value measured on the held-out rows under its metric's name: the
task's metrics (``accuracy``, ``f1``, ``pearson``, ...) and the KD diagnostics
(``kd_loss``, ``teacher_kl``, ...). ``splits`` holds the task's metrics on other named
splits (only the final comparison asks for one: ``test``). Whether a larger value is better
is declared once, with the metric (:func:`distill.metrics.metric`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .metrics import metric


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better (its declaration decides; an
    undeclared name raises :class:`~distill.metrics.UnknownMetricError`)."""
    return metric(name).higher_is_better


@dataclass
class ScoreResult:
    """The outcome of scoring one candidate (see the module doc)."""

    metrics: dict[str, float] = field(default_factory=dict)  # name -> value (held-out rows)
    params: int | None = None  # parameters of the whole student
    latency_ms: float | None = None  # median forward time on the scorer's fixed batch
    steps: int = 0  # KD steps taken
    wall_seconds: float = 0.0
    diverged: bool = False  # a non-finite loss, gradient or metric: the candidate failed
    train_loss: float | None = None  # mean KD loss over the last logged training steps
    splits: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> metrics

    def value(self, name: str, split: str | None = None) -> float | None:
        """Metric ``name`` on the held-out rows (or on ``split``); None when absent, not
        finite or the candidate diverged."""
        source = self.metrics if split is None else self.splits.get(split, {})
        v = source.get(name)
        if self.diverged or v is None or not math.isfinite(v):
            return None
        return float(v)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become None)."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreResult:
        """From :meth:`to_dict`'s form (None becomes NaN again). A record written before
        ``splits`` existed kept them in ``metrics`` as ``"<split>/<name>"``: read there."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        metrics = {k: _float(v) for k, v in dict(kw.get("metrics") or {}).items()}
        splits = {s: {k: _float(v) for k, v in dict(m).items()}
                  for s, m in dict(kw.get("splits") or {}).items()}
        for key in [k for k in metrics if "/" in k]:  # the older form
            split, name = key.split("/", 1)
            splits.setdefault(split, {})[name] = metrics.pop(key)
        return cls(**{**kw, "metrics": metrics, "splits": splits})


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v
