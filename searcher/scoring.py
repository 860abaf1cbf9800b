"""The one door to knowledge distillation: a *scorer* and what it returns.

The search reaches KD only through ``scorer(spec, budget)``, normally
``distill.score.score`` with a ``distill.score.ScoreBudget``. Any callable of that shape
works (tests use cheap deterministic stand-ins). It must be picklable (a module-level
function, a ``functools.partial`` of one, or an instance of a module-level class) to run
in worker processes.

The result may be ``distill.score.ScoreResult``, any object with a ``score`` attribute
(``params``, ``latency_ms``/``latency`` and ``diverged`` are read when present), a mapping
with the same keys, or a plain number. :func:`normalize` turns it into a
:class:`ScoreRecord`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .spec import CandidateSpec

Scorer = Callable[[CandidateSpec, Any], Any]


@dataclass(frozen=True)
class EvalBudget:
    """The budget handed to a scorer when the search has no ``score_budget`` of its own:
    ``steps`` of training at hurdle ``rung`` (0 = the short first run)."""

    rung: int
    steps: int


def rung_budget(base: Any, rung: int, steps: int | None) -> Any:
    """The budget for ``rung``: ``base`` with ``kd_steps`` (or ``steps``) replaced by
    ``steps``; an :class:`EvalBudget` when there is no ``base``."""
    if base is None:
        return EvalBudget(rung, 0 if steps is None else steps)
    if steps is None:
        return base
    if dataclasses.is_dataclass(base):
        names = {f.name for f in dataclasses.fields(base)}
        for name in ("kd_steps", "steps"):
            if name in names:
                return dataclasses.replace(base, **{name: steps})
    return base


def budget_to_jsonable(budget: Any) -> Any:
    """A JSON-able description of a score budget (for the journal's config check)."""
    if budget is None:
        return None
    if dataclasses.is_dataclass(budget):
        return {k: v if isinstance(v, int | float | str | bool | type(None)) else str(v)
                for k, v in dataclasses.asdict(budget).items()}
    return repr(budget)


@dataclass(frozen=True)
class ScoreRecord:
    """A normalized scorer result. ``score`` is ``-inf`` for a diverged candidate."""

    score: float
    params: int | None = None
    latency_ms: float | None = None
    diverged: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.diverged and math.isfinite(self.score)


def _num(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def normalize(raw: Any) -> ScoreRecord:
    """Read a scorer's return value (see the module doc). Raises ``TypeError`` naming what
    was returned when there is no score in it."""
    if isinstance(raw, ScoreRecord):
        return raw
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        s = float(raw)
        return ScoreRecord(s, diverged=not math.isfinite(s))
    get = raw.get if isinstance(raw, Mapping) else (lambda k, d=None: getattr(raw, k, d))
    score = _num(get("score"))
    if score is None:
        raise TypeError(f"the scorer returned {type(raw).__name__} {raw!r:.200}, which has no "
                        "numeric 'score'; return a number, a mapping or an object with .score")
    params = get("params")
    latency = _num(get("latency_ms", get("latency")))
    diverged = bool(get("diverged", False)) or not math.isfinite(score)
    if hasattr(raw, "to_dict"):
        extra = raw.to_dict()
    elif isinstance(raw, Mapping):
        extra = dict(raw)
    elif dataclasses.is_dataclass(raw):
        extra = dataclasses.asdict(raw)
    else:
        extra = {}
    extra = {k: v for k, v in extra.items() if k not in ("score", "params", "latency_ms",
                                                         "latency", "diverged")}
    return ScoreRecord(score if not diverged else float("-inf"),
                       None if params is None else int(params), latency, diverged,
                       _jsonable(extra))


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[str(k)] = None
        elif isinstance(v, int | float | str | bool | type(None)):
            out[str(k)] = v
        elif isinstance(v, Mapping):
            out[str(k)] = _jsonable(dict(v))
        elif isinstance(v, list | tuple):
            out[str(k)] = [x if isinstance(x, int | float | str | bool | type(None)) else str(x)
                           for x in v]
        else:
            out[str(k)] = str(v)
    return out
