"""Fidelity: successive halving over rungs, paired controls, the winner's fresh-seed score.

A *rung* scores a candidate with some KD steps, over one or more seeds (``rep`` 0, 1, ...);
every candidate of a search gets rung 0, and after the search the best ``keep`` of rung
``r - 1`` get rung ``r``. The confirmation is one more "rung" (index ``len(plan)``) with the
last rung's steps on seeds no rung used: the winner's reported score, free of the winner's
curse (selection bias). A *control* is the space's seed expression (the standard FFN) at a
candidate's exact shape, scored under the same seeds: the candidate's score minus the
control's removes what the shape alone buys.

Within a rung every candidate and control of a given ``rep`` gets the same score-budget seed
(common random numbers: the same batches, the same dropout stream per step).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import mlpgraph
from distill import metric
from mlpgraph import MLPLayer

from .budget import Constraints
from .candidate import Candidate
from .config import Rung
from .records import Evaluated, Evaluation, Fitness, mean_at, rung_scores
from .scoring import EvalBudget

if TYPE_CHECKING:
    from .config import SearchConfig

SEED_STRIDE = 7919  # score-budget seed of rep k: seed + k * SEED_STRIDE


def rung_budget(base: Any, rung: Rung, rep: int, index: int) -> Any:
    """The score budget for ``rep`` of ``rung`` (``index`` in the plan): ``base`` with its
    ``kd_steps`` (or ``steps``) set to the rung's and its ``seed`` moved by ``rep``; an
    :class:`~searcher.scoring.EvalBudget` when there is no base."""
    if base is None:
        return EvalBudget(index, rung.steps or 0, rep)
    if not dataclasses.is_dataclass(base):
        return base
    names = {f.name for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    if rung.steps is not None:
        changes.update({n: rung.steps for n in ("kd_steps", "steps") if n in names})
    if "seed" in names and rep:
        changes["seed"] = base.seed + rep * SEED_STRIDE
    return dataclasses.replace(base, **changes) if changes else base


def fitness(evals: Sequence[Evaluation], plan: Sequence[Rung], larger_better: bool,
            tie_break: str | None = None, tie_larger_better: bool = True) -> Fitness | None:
    """``(rung, mean score, tie value)`` at the highest rung whose every seed was scored ok,
    signed so that larger is better; None when even rung 0 failed."""
    for r in range(len(plan) - 1, -1, -1):
        scores = rung_scores(evals, r, plan[r].seeds)
        if scores is not None:
            value = statistics.fmean(scores)
            tie = mean_at(evals, r, tie_break) if tie_break else None
            tie = 0.0 if tie is None else (tie if tie_larger_better else -tie)
            return r, value if larger_better else -value, tie
    return None


def shape_key(cand: Candidate) -> str:
    """What a control is keyed by: every layer's ``s`` and ratio."""
    return "|".join(f"{g.stacks}x{g.ratio}" for g in cand.layers)


def control_of(cand: Candidate, seed_expression: str) -> Candidate:
    """The space's seed expression (the standard FFN) at ``cand``'s shape."""
    graph = mlpgraph.parse(seed_expression)
    return Candidate(tuple(MLPLayer(graph, g.stacks, g.ratio) for g in cand.layers))


def wants_control(mode: str, rung: int) -> bool:
    """Whether rung ``rung`` scores controls under the fidelity's ``control`` mode."""
    return mode == "all" or (mode == "promoted" and rung > 0)


def stage_winner(top: Evaluated, cfg: SearchConfig) -> tuple[Candidate, int | None, str | None]:
    """What a stage hands on: ``(candidate, params, fallback note)``. The best candidate,
    unless it scored worse than the standard FFN of its shape under the same seeds at its
    highest rung (no candidate of the stage was shown better than that FFN): then that FFN,
    when it fits the constraints (a GLU's FFN control can fall below the parameter window)."""
    if top.delta is None or top.delta == 0 or \
            (top.delta > 0) == metric(cfg.rank_by).higher_is_better:
        return top.candidate, top.params, None
    note = (f"the best candidate ({top.candidate.describe()}) scored {top.delta:+.4f} "
            f"{cfg.rank_by} against the standard FFN of its shape under the same seeds, i.e. "
            "worse")
    control = control_of(top.candidate, cfg.resolve_space().seed_expressions[0])
    fits = Constraints.from_spec(cfg.constraints)
    if not fits(control):
        return top.candidate, top.params, note + ("; that FFN is outside the constraints, so "
                                                  "the best candidate goes on")
    return control, fits.measure(control)["params"], note + "; that FFN goes on"
