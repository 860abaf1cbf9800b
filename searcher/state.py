"""The state of one search (:class:`SearchState`): what has been proposed and scored, the
controller, the deduper and the paired controls, and how a batch of scorer calls is run and
journaled. The loop that drives it is :mod:`searcher.search`; the higher rungs after the
loop are :mod:`searcher.promote`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill import ScoreResult, metric

from .budget import Constraints, pareto_front
from .candidate import Candidate, seed_candidates
from .config import SearchConfig
from .controller import make_controller
from .dedupe import Deduper
from .errors import SearchConfigError
from .fidelity import control_of, fitness, rung_budget, shape_key, wants_control
from .graphedit import strip_outer_activations
from .journal import Journal, JournalRow
from .mutations import MutationTable
from .records import CallStatus, Evaluated, Evaluation, ProposalStatus, SearchResult, score_at
from .workers import Executor, Outcome, Task


@dataclass(frozen=True)
class CandidateCall:
    """The key of a scorer call for a proposed candidate: its ``key`` (history index or
    proposal index), the rung and the seed number ``rep``."""

    key: int
    rung: int
    rep: int


@dataclass(frozen=True)
class ControlCall:
    """The key of a scorer call for a paired control: the shape it stands for."""

    shape: str
    rung: int
    rep: int

    @property
    def key(self) -> str:
        return self.shape

    @property
    def control_key(self) -> tuple[str, int, int]:
        return (self.shape, self.rung, self.rep)


def _evaluation(o: Outcome, rung: int, rep: int, rank_by: str) -> Evaluation:
    times = {"error": o.error, "started_at": o.started_at, "finished_at": o.finished_at,
             "worker": o.worker, "rep": rep}
    if o.status != CallStatus.OK:
        return Evaluation(rung, CallStatus(o.status), **times)
    r = o.result
    if not isinstance(r, ScoreResult):
        return Evaluation(rung, CallStatus.FAILED, **{**times, "error": (
            f"the scorer returned {type(r).__name__} {r!r:.120}; a scorer returns a "
            "distill.ScoreResult")})
    value = r.value(rank_by)
    if value is None and not r.diverged:
        return Evaluation(rung, CallStatus.FAILED, r, **{**times, "error": (
            f"the scorer's result has no finite {rank_by!r} to rank by (it has "
            f"{sorted(r.metrics)}); set rank_by to one of them")})
    status = CallStatus.OK if value is not None else CallStatus.DIVERGED
    return Evaluation(rung, status, r, value, **times)


class SearchState:
    """The state of one search: its configuration, journal, controller, deduper, constraints
    and every scored candidate (``history`` in proposal order, ``results`` by id, the paired
    ``controls``). Built fresh, then possibly restored from the journal; the search loop
    (:mod:`searcher.search`) and the promotion phase (:mod:`searcher.promote`) drive it."""

    def __init__(self, config: SearchConfig, journal: Journal, table: MutationTable) -> None:
        cfg = self.cfg = config
        self.journal = journal
        self.space = cfg.resolve_space()
        self.plan = cfg.fidelity.plan()
        self.larger_better = metric(cfg.rank_by).higher_is_better
        self.constraints = Constraints.from_spec(cfg.constraints, cache=journal.latencies(),
                                                 on_measure=journal.put_latency)
        self.hidden = self.constraints.params.hidden
        seeds = self._seeds()
        if not any(self.constraints(c) for c in seeds):
            sizes = [self.constraints.measure(c) for c in seeds]
            params = sorted(m["params"] for m in sizes)
            lat = sorted(m["latency"] for m in sizes if m["latency"] is not None)
            cons = cfg.constraints
            raise SearchConfigError(
                "constraints.param_window", f"none of the {len(seeds)} seed candidates fits: "
                f"they have {params[0]}..{params[-1]} parameters (window {cons.param_window})"
                + (f" and latency {lat[0]:.3g}..{lat[-1]:.3g} (budget {cons.latency_budget})"
                   if lat else "") + "; widen the window or the latency budget, or give a "
                "base candidate inside them")
        ctl = cfg.controller
        self.controller = make_controller(
            ctl.kind, self.space, seeds, seed=cfg.seed, genes=cfg.gene_mask(),
            table=table.with_weights(ctl.mutation_weights), feasible=self.constraints,
            **ctl.options())
        self.deduper = Deduper(cfg.dedupe_fingerprint)
        self.results: dict[str, Evaluated] = {}
        self.history: list[Evaluated] = []
        self.controls: dict[tuple[str, int, int], Evaluation] = journal.controls()
        self.step = self.evaluations = self.proposals = self.empty_steps = 0

    def _seeds(self) -> list[Candidate]:
        """The base candidate (and, when expressions mutate, the base with its outer
        activations removed, as the paper seeds stage 2), or the space's seeds."""
        base = self.cfg.base_candidate()
        if base is None:
            return seed_candidates(self.space, self.cfg.num_layers)
        out = [base]
        if "expr" in self.cfg.gene_mask():
            bare = strip_outer_activations(base, self.space)
            if bare.id != base.id:
                out.append(bare)
        return out

    # ----------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict(),
                "dedupe": self.deduper.stats.to_dict(), "constraints": self.constraints.stats(),
                "evaluations": self.evaluations, "proposals": self.proposals,
                "empty_steps": self.empty_steps}

    def restore(self) -> None:
        saved = self.journal.last_state()
        if saved is None:
            return
        step, st = saved
        self.controller.load_state_dict(st["controller"])
        self.deduper.load_stats(st["dedupe"])
        self.constraints.load_stats(st["constraints"])
        self.evaluations, self.proposals = st["evaluations"], st["proposals"]
        self.empty_steps = st["empty_steps"]
        self.step = step + 1
        for row in self.journal.read_all():
            if row.status in (ProposalStatus.EVALUATED, ProposalStatus.FAILED):
                cand = Candidate.from_dict(row.candidate)
                self.deduper.add(cand)
                ev = self._from_row(cand, row)
                self.results[cand.id] = ev
                self.history.append(ev)

    def _from_row(self, cand: Candidate, row: JournalRow) -> Evaluated:
        return self.evaluated(cand, row.evaluations, row.step, row.idx, row.params,
                              row.latency_ms)

    def evaluated(self, cand: Candidate, evals: list[Evaluation], step: int, idx: int,
                  params: int | None, latency: float | None) -> Evaluated:
        """An :class:`Evaluated` from its evaluations (and the controls known so far)."""
        evals = sorted(evals, key=lambda e: (e.rung, e.rep))
        last = evals[-1].result if evals else None
        if params is None and last is not None:
            params = last.params
        if latency is None and last is not None:
            latency = last.latency_ms
        fit = fitness(evals, self.plan, self.larger_better, self.cfg.tie_break,
                      metric(self.cfg.tie_break or "score").higher_is_better)
        ev = Evaluated(cand, evals[-1].status if evals else CallStatus.FAILED, fit, params, latency,
                       step, idx, evals)
        self.attach_control(ev)
        ev.confirmed = score_at(evals, len(self.plan))
        return ev

    def attach_control(self, ev: Evaluated) -> None:
        """Fill ``ev.control``: the mean control score at ``ev``'s fitness rung."""
        if ev.fitness is None:
            return
        rung, key = ev.fitness[0], shape_key(ev.candidate)
        vals = [c.score for (k, r, _), c in self.controls.items()
                if k == key and r == rung and c.ok]
        if self.control_id(ev.candidate) == ev.candidate.id:
            ev.control = ev.score  # the standard FFN is its own control
        elif len(vals) == self.plan[rung].seeds:
            ev.control = sum(vals) / len(vals)

    def control_id(self, cand: Candidate) -> str:
        return control_of(cand, self.space.seed_expressions[0]).id

    # ------------------------------------------------------------------ scoring
    def _known(self, cand_id: str, rung: int, rep: int) -> Evaluation | None:
        """A finished scorer call of candidate ``cand_id`` at ``(rung, rep)``, if any."""
        ev = self.results.get(cand_id)
        hits = [] if ev is None else [e for e in ev.evaluations if (e.rung, e.rep) == (rung, rep)]
        return hits[0] if hits else None

    def _set_control(self, ck: tuple[str, int, int], control_id: str, ev: Evaluation) -> None:
        self.journal.record_control(ck[0], control_id, ev)
        self.controls[ck] = ev

    def score(self, executor: Executor, jobs: list[tuple[int, Candidate, int, int]],
              on_eval: Any, done: dict[tuple[int, int, int], Evaluation]) -> None:
        """Score ``(key, candidate, rung, rep)`` jobs (skipping finished ones in ``done``),
        with their controls; ``on_eval(key, evaluation, replay)`` journals each. A control
        that is a scored candidate (the standard FFN at that shape) is not scored twice."""
        cfg, tasks = self.cfg, []
        derived: dict[tuple[str, int, int], tuple[int, str]] = {}  # control <- this batch's job
        for key, cand, rung, rep in jobs:
            if (key, rung, rep) in done:
                on_eval(key, done[(key, rung, rep)], replay=True)
            elif (hit := self.controls.get((shape_key(cand), rung, rep))) is not None and \
                    self.control_id(cand) == cand.id:
                on_eval(key, hit, replay=False)  # the FFN was scored as a control already
            else:
                budget = rung_budget(cfg.score_budget, self.plan[min(rung, len(self.plan) - 1)],
                                     rep, rung)
                tasks.append(Task(CandidateCall(key, rung, rep), cand.spec(self.hidden), budget))
                if self.control_id(cand) == cand.id:
                    derived[(shape_key(cand), rung, rep)] = (key, cand.id)
        for _key, cand, rung, rep in jobs:
            ck = (shape_key(cand), rung, rep)
            if not wants_control(cfg.fidelity.control, rung) or rung >= len(self.plan) or \
                    ck in self.controls or ck in derived:
                continue
            ctl = control_of(cand, self.space.seed_expressions[0])
            if (hit := self._known(ctl.id, rung, rep)) is not None:
                self._set_control(ck, ctl.id, hit)
                continue
            budget = rung_budget(cfg.score_budget, self.plan[rung], rep, rung)
            derived[ck] = (-1, ctl.id)
            tasks.append(Task(ControlCall(*ck), ctl.spec(self.hidden), budget))

        def finished(o: Outcome) -> None:
            call = o.key
            key, rung, rep = call.key, call.rung, call.rep
            ev = _evaluation(o, rung, rep, cfg.rank_by)
            if isinstance(call, ControlCall):
                self._set_control(call.control_key, derived[call.control_key][1], ev)
                return
            on_eval(key, ev, replay=False)
            for ck, (job, cid) in derived.items():
                if job == key and ck[1:] == (rung, rep) and wants_control(
                        cfg.fidelity.control, rung) and rung < len(self.plan):
                    self._set_control(ck, cid, ev)

        if tasks:
            executor.run(tasks, finished)

    # ---------------------------------------------------------------- result
    def best(self, k: int) -> list[Evaluated]:
        """The ``k`` best by fitness; equal fitness is ordered by candidate id."""
        ok = [e for e in self.history if e.fitness is not None]
        return sorted(ok, key=lambda e: (e.fitness, e.candidate.id), reverse=True)[:k]

    def result(self, stopped: str, run_dir: Path) -> SearchResult:
        ok = [e for e in self.history if e.fitness is not None]

        def objectives(e: Evaluated) -> tuple:
            return (e.fitness, -(e.latency_ms if e.latency_ms is not None else 0.0),
                    -(e.params if e.params is not None else 0))

        return SearchResult(self.best(self.cfg.top_k), pareto_front(ok, objectives),
                            list(self.history), self.deduper.stats, self.evaluations,
                            self.proposals, self.step, stopped, run_dir,
                            self.constraints.stats(), self.journal.path)
