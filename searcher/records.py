"""The search's records: statuses, one scorer call (:class:`Evaluation`), a scored candidate
(:class:`Evaluated`) and what a search returns (:class:`SearchResult`).

They hold data only; the journal (:mod:`searcher.journal`) stores them, the search state
(:mod:`searcher.state`) builds them, fidelity and promotion read them.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from distill import ScoreResult

from .candidate import Candidate
from .dedupe import DedupeStats

Fitness = tuple[int, float, float]  # (rung, value, tie), each larger-is-better


class CallStatus(StrEnum):
    """How one scorer call ended."""

    OK = "ok"  # a finite value of the ranked metric
    DIVERGED = "diverged"  # a non-finite loss, gradient or metric
    FAILED = "failed"  # the scorer raised, its worker died, or its result was unusable
    TIMEOUT = "timeout"  # killed after the executor's timeout


class ProposalStatus(StrEnum):
    """A proposal's state in the journal."""

    PENDING = "pending"  # its step has not committed yet
    EVALUATED = "evaluated"  # scored (at least rung 0 finished)
    DUPLICATE = "duplicate"  # the same id or fingerprint as an earlier candidate
    FAILED = "failed"  # every scorer call failed


@dataclass
class Evaluation:
    """One scorer call as the journal stores it: its :class:`CallStatus`; ``result`` is the
    scorer's :class:`~distill.result.ScoreResult` (None when it failed); ``score`` the value
    of the metric the search ranks by (None unless ok)."""

    rung: int
    status: CallStatus
    result: ScoreResult | None = None
    score: float | None = None
    error: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    worker: str = ""
    rep: int = 0  # which seed of the rung

    @property
    def ok(self) -> bool:
        return self.status == CallStatus.OK and self.score is not None

    def to_dict(self) -> dict[str, Any]:
        return {"rung": self.rung, "rep": self.rep, "status": str(self.status), "score": self.score,
                "result": None if self.result is None else self.result.to_dict(),
                "error": self.error, "started_at": self.started_at,
                "finished_at": self.finished_at, "worker": self.worker}

    @classmethod
    def from_row(cls, r: tuple) -> Evaluation:
        """From a row of :data:`_EVAL_COLUMNS`."""
        rung, rep, status, score, result, error, started, finished, worker = r
        res = None if result is None else ScoreResult.from_dict(json.loads(result))
        return cls(rung, CallStatus(status), res, score, error, started or 0.0, finished or 0.0,
                   worker or "", rep)

    def row(self) -> tuple:
        """The values of :data:`_EVAL_COLUMNS`."""
        return (self.rung, self.rep, str(self.status), self.score,
                None if self.result is None else json.dumps(self.result.to_dict()),
                self.error, self.started_at, self.finished_at, self.worker)


@dataclass
class Evaluated:
    """A scored candidate: ``status`` of its last scorer call; ``fitness`` ``(rung, value,
    tie)`` (larger is better; None when even rung 0 failed); ``score`` the ranked metric's
    mean at that rung; ``control`` the same-shape standard FFN's there (same seeds) and
    ``delta = score - control``; ``confirmed`` the mean on fresh seeds (the winner only)."""

    candidate: Candidate
    status: CallStatus
    fitness: Fitness | None
    params: int | None
    latency_ms: float | None
    step: int
    idx: int
    evaluations: list[Evaluation] = field(default_factory=list)
    control: float | None = None
    confirmed: float | None = None

    @property
    def score(self) -> float | None:
        return None if self.fitness is None else score_at(self.evaluations, self.fitness[0])

    @property
    def delta(self) -> float | None:
        s, c = self.score, self.control
        return None if s is None or c is None else s - c

    @property
    def result(self) -> ScoreResult | None:
        return self.evaluations[-1].result if self.evaluations else None

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate.to_dict(), "status": str(self.status),
                "fitness": None if self.fitness is None else list(self.fitness),
                "score": self.score, "control": self.control, "delta": self.delta,
                "confirmed": self.confirmed, "params": self.params,
                "latency_ms": self.latency_ms, "step": self.step, "idx": self.idx}


@dataclass
class SearchResult:
    """What a run produced (the journal holds everything else)."""

    best: list[Evaluated]  # top_k by fitness, best first
    pareto: list[Evaluated]  # not dominated in (fitness up, latency down, params down)
    history: list[Evaluated]  # every scored candidate, in proposal order
    dedupe: DedupeStats
    evaluations: int
    proposals: int
    steps: int
    stopped: str  # why the loop ended
    run_dir: Path
    constraints: dict[str, int]
    journal_path: Path

    def to_dict(self) -> dict[str, Any]:
        return {"best": [e.to_dict() for e in self.best],
                "pareto": [e.to_dict() for e in self.pareto],
                "history": [e.to_dict() for e in self.history],
                "dedupe": self.dedupe.to_dict(), "evaluations": self.evaluations,
                "proposals": self.proposals, "steps": self.steps, "stopped": self.stopped,
                "run_dir": str(self.run_dir), "constraints": self.constraints}

    def summary(self) -> str:
        top = self.best[0] if self.best else None
        return (f"{self.evaluations} evaluations in {self.steps} steps ({self.stopped}); "
                f"dedupe hit rate {self.dedupe.hit_rate:.1%}; best "
                + (f"{top.score:.4f} {top.candidate.describe()}" if top else "none"))


def rung_scores(evals: Sequence[Evaluation], rung: int, reps: int) -> list[float] | None:
    """The scores of ``rung`` when all of its ``reps`` seeds were scored ok, else None."""
    ok = sorted((e.rep, e.score) for e in evals if e.rung == rung and e.ok)
    return [s for _, s in ok] if len(ok) == reps else None


def mean_at(evals: Sequence[Evaluation], rung: int, metric: str | None) -> float | None:
    """The mean of ``metric`` (None: the ranked score) over the ok seeds of ``rung``."""
    vals = [e.result.value(metric) if metric else e.score for e in evals
            if e.rung == rung and e.ok and e.result is not None]
    vals = [v for v in vals if v is not None]
    return statistics.fmean(vals) if vals else None


def score_at(evals: Sequence[Evaluation], rung: int) -> float | None:
    """The mean ranked score over the ok seeds of ``rung``."""
    return mean_at(evals, rung, None)
