"""Stand-ins shared by the search tests (no tests here).

Cheap deterministic fitness functions for UNIT TESTS ONLY: they score the expression text
and widths, not a trained model. They are module-level (or instances of module-level
classes) so worker processes can unpickle them, and import nothing heavy, so spawned
workers start fast.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass

from distill.result import ScoreResult


def toy_score(spec, budget) -> ScoreResult:
    """A deterministic pseudo-accuracy in [0, 1) that grows with the training steps."""
    s = 0.0
    for layer in spec.layers:
        h = int(hashlib.sha256(str(layer.graph).encode()).hexdigest()[:8], 16) / 2**32
        s += 0.6 * h + 0.05 * math.log(layer.stacks * layer.d_inner(spec.hidden))
    steps = getattr(budget, "steps", 0) or 0
    rep = getattr(budget, "rep", 0)  # another seed: a little noise, the same for everyone
    noise = 0.01 * math.sin(7.0 * rep + 13.0 * s)
    return ScoreResult({"score": s / len(spec.layers) * 0.5
                        + 0.2 * (1 - math.exp(-steps / 50)) + noise})


def slow_logged_score(spec, budget) -> ScoreResult:
    """:func:`toy_score` that takes a little time and appends ``<id> <steps>`` to the file
    named by ``SEARCH_TOY_LOG`` (to count scorer calls across a kill and a resume)."""
    time.sleep(float(os.environ.get("SEARCH_TOY_SLEEP", "0.01")))
    out = toy_score(spec, budget)
    log = os.environ.get("SEARCH_TOY_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{spec.candidate_id} {getattr(budget, 'steps', 0)} "
                    f"{getattr(budget, 'rep', 0)}\n")
    return out


def broken_score(spec, budget) -> ScoreResult:
    """A scorer whose set-up is broken: it fails on every candidate."""
    raise FileNotFoundError("no warmed-up supernet checkpoint at /nowhere")


@dataclass(frozen=True)
class FaultyScorer:
    """:func:`toy_score`, except: raises for ``raise_ids``, kills its process for
    ``crash_ids`` and sleeps ``hang_seconds`` for ``hang_ids``."""

    raise_ids: tuple[str, ...] = ()
    crash_ids: tuple[str, ...] = ()
    hang_ids: tuple[str, ...] = ()
    hang_seconds: float = 600.0

    def __call__(self, spec, budget) -> ScoreResult:
        if spec.candidate_id in self.raise_ids:
            raise RuntimeError(f"stand-in failure for {spec.candidate_id}")
        if spec.candidate_id in self.crash_ids:
            os._exit(7)
        if spec.candidate_id in self.hang_ids:
            time.sleep(self.hang_seconds)
        return toy_score(spec, budget)


#: two rungs: every candidate 5 steps; the best 6 then 20 steps over 2 seeds
RUNGS = ({"steps": 5}, {"steps": 20, "keep": 6, "seeds": 2})

#: flat test shorthands -> (sub-model of SearchConfig, field)
ALIASES = {"controller": ("controller", "kind"), "executor": ("executor", "kind"),
           "batch_size": ("controller", "proposals_per_step")}


def nested(base: dict, changes: dict) -> dict:
    """``base`` (a SearchConfig dict) with flat ``changes`` routed to their sub-models."""
    from searcher.config import SearchConfig

    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    groups = {name: SearchConfig.model_fields[name].annotation for name in
              ("controller", "constraints", "executor", "fidelity")}
    for key, value in changes.items():
        group, field = ALIASES.get(key, (None, key))
        if group is None:
            group = next((g for g, cls in groups.items() if key in cls.model_fields), None)
        if group is None:
            out[key] = value
        else:
            out[group] = {**out.get(group, {}), field: value}
    return out


def small_config(**changes):
    """A tiny 3-layer search at hidden 32 with a window that excludes some candidates."""
    from searcher.config import SearchConfig

    base = nested({"num_layers": 3, "seed": 3}, dict(
        student_config=None, hidden=32, non_mlp_params=5000, param_window=(12_000, 30_000),
        evaluations=24, batch_size=4, population=8, sample_size=3, executor="inline"))
    return SearchConfig.load(nested(base, changes))


def history_key(result) -> list[tuple]:
    """What must be equal between two runs: ids, statuses and fitness in proposal order."""
    return [(e.candidate.id, e.status, e.fitness, e.params) for e in result.history]
