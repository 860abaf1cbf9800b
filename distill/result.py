"""The one record of scoring a candidate, from the scorer to the search journal.

:class:`ScoreResult` is what :func:`distill.score.score` returns, what a worker sends back,
what the search ranks and what its journal stores (as JSON). It lives in this small module
without heavy imports so that processes that only read results (the search, the report)
do not load torch or datasets for it.

Every measured value sits in ``metrics`` under its name: the task's metrics on the held-out
rows (``accuracy``, ``f1``, ``pearson``, ...) and losses (``kd_loss``, ...). Whether a larger
value is better is declared once, in :data:`LOWER_IS_BETTER`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

#: metric names for which smaller is better; every other metric is maximized
LOWER_IS_BETTER = frozenset({"kd_loss", "teacher_kl", "train_loss", "loss", "mse"})


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better (see :data:`LOWER_IS_BETTER`)."""
    return name not in LOWER_IS_BETTER


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

    def value(self, name: str) -> float | None:
        """The metric ``name``; None when absent, not finite or the candidate diverged."""
        v = self.metrics.get(name)
        if self.diverged or v is None or not math.isfinite(v):
            return None
        return float(v)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become None)."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreResult:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["metrics"] = {k: (math.nan if v is None else float(v))
                         for k, v in dict(kw.get("metrics") or {}).items()}
        return cls(**kw)

    @classmethod
    def coerce(cls, raw: Any) -> ScoreResult:
        """A ScoreResult from what a scorer returned: a ScoreResult, a number (metric
        ``score``), or a mapping / object with ``score`` or ``metrics`` and optionally
        ``params``, ``latency_ms`` (or ``latency``) and ``diverged``. Raises ``TypeError``
        naming what was returned when it holds no number to rank by."""
        if isinstance(raw, cls):
            return raw
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return cls({"score": float(raw)}, diverged=not math.isfinite(raw))
        data = dict(raw) if isinstance(raw, Mapping) else (
            asdict(raw) if is_dataclass(raw) else vars(raw) if hasattr(raw, "__dict__") else {})
        metrics = {k: float(v) for k, v in dict(data.get("metrics") or {}).items()
                   if _number(v) is not None}
        if _number(data.get("score")) is not None:
            metrics.setdefault("score", float(data["score"]))
        if not metrics:
            raise TypeError(f"the scorer returned {type(raw).__name__} {raw!r:.200}, which has "
                            "no numeric 'score' or 'metrics'; return a number, a mapping or a "
                            "distill.result.ScoreResult")
        latency = data.get("latency_ms", data.get("latency"))
        diverged = bool(data.get("diverged", False)) or not all(map(math.isfinite,
                                                                    metrics.values()))
        return cls(metrics, None if data.get("params") is None else int(data["params"]),
                   _number(latency), int(data.get("steps") or 0),
                   float(data.get("wall_seconds") or 0.0), diverged,
                   _number(data.get("train_loss", data.get("final_loss"))))


def _number(v: Any) -> float | None:
    try:
        return None if v is None or isinstance(v, bool) else float(v)
    except (TypeError, ValueError):
        return None


def _jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v
