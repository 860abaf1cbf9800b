"""The one door to knowledge distillation: a *scorer* and what it returns.

The search reaches KD only through ``scorer(spec, budget)``, normally
``distill.scoring.score`` with a ``distill.scoring.ScoreBudget``. Any callable of that shape
works (tests use cheap deterministic stand-ins). It must be picklable (a module-level
function, a ``functools.partial`` of one, or an instance of a module-level class) to run
in worker processes.

The result may be a ``distill.result.ScoreResult`` (what ``distill.scoring.score`` returns), a
mapping or object with ``score`` or ``metrics`` (``params``, ``latency_ms`` and ``diverged``
are read when present), or a plain number (metric ``score``); the search turns it into a
``ScoreResult`` (:meth:`~distill.result.ScoreResult.coerce`) and ranks by the metric its
configuration names (``SearchConfig.rank_by``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .spec import CandidateSpec

Scorer = Callable[[CandidateSpec, Any], Any]


@dataclass(frozen=True)
class EvalBudget:
    """The budget handed to a scorer when the search has no ``score_budget`` of its own:
    ``steps`` of training at rung ``rung`` (0 = the short first run), seed number ``rep``."""

    rung: int
    steps: int
    rep: int = 0
