"""The search loop: ``run_search(config, scorer, run_dir, resume=False) -> SearchResult``.

One *step*: the controller proposes ``proposals_per_step`` feasible candidates (parameter window,
latency budget); the proposals are journaled as pending; duplicates (by id or functional
fingerprint) are not scored; the rest are scored at the first hurdle rung in parallel,
those above the running hurdle at the next rung, and so on (every finished scorer call is
journaled at once); the controller observes all proposals in proposal order; the step
commits in one transaction with the loop state. Resuming reloads the last committed state
and re-runs the interrupted step, reading its finished evaluations back from the journal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.result import ScoreResult, higher_is_better

from .budget import Constraints, Hurdles, pareto_front
from .candidate import Candidate, seed_candidates
from .config import SearchConfig
from .controller import Fitness, Observation, make_controller
from .dedupe import Deduper, DedupeStats
from .errors import JournalError, ScorerError, SearchConfigError
from .journal import FILENAME, Evaluation, Journal, JournalRow
from .mutations import DEFAULT_TABLE, MutationTable
from .scoring import Scorer, rung_budget
from .workers import Executor, Outcome, Task, make_executor


@dataclass
class Evaluated:
    """A scored candidate: ``status`` of its last scorer call (``ok``, ``diverged``,
    ``failed``, ``timeout``); ``fitness`` ``(rung, value)`` with ``value`` the ranked metric
    signed so that larger is better, or ``None`` when not ok; ``score`` the metric itself."""

    candidate: Candidate
    status: str
    fitness: Fitness | None
    params: int | None
    latency_ms: float | None
    step: int
    idx: int
    evaluations: list[Evaluation] = field(default_factory=list)

    @property
    def score(self) -> float | None:
        ok = [e for e in self.evaluations if e.status == "ok" and e.score is not None]
        return ok[-1].score if ok else None

    @property
    def result(self) -> ScoreResult | None:
        return self.evaluations[-1].result if self.evaluations else None

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate.to_dict(), "status": self.status,
                "fitness": None if self.fitness is None else list(self.fitness),
                "score": self.score, "params": self.params, "latency_ms": self.latency_ms,
                "step": self.step, "idx": self.idx}


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


def _fitness(evals: list[Evaluation], larger_better: bool) -> Fitness | None:
    ok = [e for e in evals if e.status == "ok" and e.score is not None]
    if not ok:
        return None
    return ok[-1].rung, ok[-1].score if larger_better else -ok[-1].score


def _evaluation(o: Outcome, rung: int, rank_by: str) -> Evaluation:
    times = {"error": o.error, "started_at": o.started_at, "finished_at": o.finished_at,
             "worker": o.worker}
    if o.status != "ok":
        return Evaluation(rung, o.status, **times)
    try:
        r = ScoreResult.coerce(o.result)
    except (TypeError, ValueError) as e:
        return Evaluation(rung, "failed", **{**times, "error": str(e)})
    value = r.value(rank_by)
    if value is None and not r.diverged:
        return Evaluation(rung, "failed", r, **{**times, "error": (
            f"the scorer's result has no finite {rank_by!r} to rank by (it has "
            f"{sorted(r.metrics)}); set rank_by to one of them")})
    return Evaluation(rung, "ok" if value is not None else "diverged", r, value, **times)


class _Run:
    """State of one run (built fresh, then possibly restored from the journal)."""

    def __init__(self, config: SearchConfig, journal: Journal, table: MutationTable) -> None:
        cfg = self.cfg = config
        self.journal = journal
        self.space = cfg.resolve_space()
        self.larger_better = higher_is_better(cfg.rank_by)
        self.constraints = Constraints.from_spec(cfg.constraints, cache=journal.latencies(),
                                                 on_measure=journal.put_latency)
        self.hidden = self.constraints.params.hidden
        base = cfg.base_candidate()
        seeds = [base] if base is not None else seed_candidates(self.space, cfg.num_layers)
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
        fid = cfg.fidelity
        self.hurdles = Hurdles(fid.rungs, fid.hurdle_quantile, fid.hurdle_min_history)
        self.deduper = Deduper(cfg.dedupe_fingerprint)
        self.results: dict[str, Evaluated] = {}
        self.history: list[Evaluated] = []
        self.step = self.evaluations = self.proposals = self.empty_steps = 0

    # ----------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict(), "hurdles": self.hurdles.state_dict(),
                "dedupe": self.deduper.stats.to_dict(), "constraints": self.constraints.stats(),
                "evaluations": self.evaluations, "proposals": self.proposals,
                "empty_steps": self.empty_steps}

    def restore(self) -> None:
        saved = self.journal.last_state()
        if saved is None:
            return
        step, st = saved
        self.controller.load_state_dict(st["controller"])
        self.hurdles.load_state_dict(st["hurdles"])
        self.deduper.load_stats(st["dedupe"])
        self.constraints.load_stats(st["constraints"])
        self.evaluations, self.proposals = st["evaluations"], st["proposals"]
        self.empty_steps = st["empty_steps"]
        self.step = step + 1
        for row in self.journal.read_all():
            if row.status in ("evaluated", "failed"):
                cand = Candidate.from_dict(row.candidate)
                self.deduper.add(cand)
                ev = self._from_row(cand, row)
                self.results[cand.id] = ev
                self.history.append(ev)

    def _from_row(self, cand: Candidate, row: JournalRow) -> Evaluated:
        return self._evaluated(cand, row.evaluations, row.step, row.idx, row.params,
                               row.latency_ms)

    def _evaluated(self, cand: Candidate, evals: list[Evaluation], step: int, idx: int,
                   params: int | None, latency: float | None) -> Evaluated:
        last = evals[-1].result if evals else None
        if params is None and last is not None:
            params = last.params
        if latency is None and last is not None:
            latency = last.latency_ms
        return Evaluated(cand, evals[-1].status if evals else "failed",
                         _fitness(evals, self.larger_better), params, latency, step, idx, evals)

    # ------------------------------------------------------------------ step
    def run_step(self, executor: Executor) -> None:
        cfg, step = self.cfg, self.step
        n = min(cfg.controller.proposals_per_step, cfg.controller.evaluations - self.evaluations)
        batch = self.controller.propose(n)
        self.proposals += len(batch)
        self.empty_steps = 0 if batch else self.empty_steps + 1
        info = [self.constraints.measure(c) for c in batch]
        self.journal.begin_step(step, [(c.id, c.to_json(), m["params"], m["latency"])
                                       for c, m in zip(batch, info, strict=True)])
        dups = [self.deduper.check_and_add(c) for c in batch]
        done = self.journal.evaluations_of(step)
        records: dict[int, list[Evaluation]] = {i: [] for i, d in enumerate(dups) if d is None}
        active = list(records)
        for rung in range(self.hurdles.num_rungs):
            budget = rung_budget(cfg.score_budget, rung, self.hurdles.steps_for(rung))
            tasks = []
            for i in active:
                if (i, rung) in done:
                    records[i].append(done[(i, rung)])
                else:
                    tasks.append(Task((i, rung), batch[i].spec(self.hidden), budget))

            def on_done(o: Outcome) -> None:
                i, r = o.key
                rec = _evaluation(o, r, cfg.rank_by)
                self.journal.record_evaluation(step, i, batch[i].id, rec)
                records[i].append(rec)

            if tasks:
                executor.run(tasks, on_done)
            nxt = []
            for i in active:
                rec = next(r for r in records[i] if r.rung == rung)
                if rec.status == "ok" and rec.score is not None:
                    value = rec.score if self.larger_better else -rec.score
                    if self.hurdles.passes(rung, value):
                        nxt.append(i)
                    self.hurdles.record(rung, value)
            active = nxt
        if cfg.fail_fast and self.evaluations == 0 and records and all(
                r.status in ("failed", "timeout") for recs in records.values() for r in recs):
            first = next(r for recs in records.values() for r in recs)
            self.journal.discard_step(step)
            raise ScorerError(f"the scorer failed on all {len(records)} candidates of the first "
                              f"step; the first error was: {first.error}\nFix the scorer (or "
                              "set fail_fast=False) and run again; nothing of this step was kept")
        observations, finals = [], []
        for i, cand in enumerate(batch):
            if dups[i] is None:
                recs = sorted(records[i], key=lambda r: r.rung)
                ev = self._evaluated(cand, recs, step, i, info[i]["params"], info[i]["latency"])
                self.results[cand.id] = ev
                self.history.append(ev)
                self.evaluations += 1
                finals.append(("evaluated" if ev.fitness is not None else "failed", None))
            else:
                ev = self.results[dups[i][1]]
                finals.append(("duplicate", dups[i][1]))
            observations.append(Observation(cand, ev.fitness))
        self.controller.observe(observations)
        best = self.best(1)
        summary = {"proposed": len(batch), "evaluations": self.evaluations,
                   "duplicates": sum(d is not None for d in dups),
                   "best_id": best[0].candidate.id if best else None,
                   "best": list(best[0].fitness) if best else None,
                   "dedupe_hit_rate": self.deduper.stats.hit_rate}
        self.journal.commit_step(step, finals, self.state(), summary)
        self.step += 1

    # ---------------------------------------------------------------- result
    def best(self, k: int) -> list[Evaluated]:
        ok = [e for e in self.history if e.fitness is not None]
        return sorted(ok, key=lambda e: e.fitness, reverse=True)[:k]  # stable: earlier first

    def result(self, stopped: str, run_dir: Path) -> SearchResult:
        ok = [e for e in self.history if e.fitness is not None]

        def objectives(e: Evaluated) -> tuple:
            return (e.fitness, -(e.latency_ms if e.latency_ms is not None else 0.0),
                    -(e.params if e.params is not None else 0))

        return SearchResult(self.best(self.cfg.top_k), pareto_front(ok, objectives),
                            list(self.history), self.deduper.stats, self.evaluations,
                            self.proposals, self.step, stopped, run_dir,
                            self.constraints.stats(), self.journal.path)


def run_search(config: SearchConfig, scorer: Scorer, run_dir: str | Path, resume: bool = False,
               *, table: MutationTable = DEFAULT_TABLE) -> SearchResult:
    """Run (or, with ``resume``, continue) a search in ``run_dir``; see the module doc.

    ``scorer(spec, budget)`` is called for every distinct candidate (in worker processes
    unless ``config.executor.kind == "inline"``). ``table`` is the mutation table (add your own
    mutations to :data:`searcher.mutations.DEFAULT_TABLE`).
    """
    run_dir = Path(run_dir)
    path = run_dir / FILENAME
    if path.exists() and not resume:
        raise JournalError(f"{run_dir} already holds a search journal; pass resume=True "
                           "(--resume) to continue that run, or choose a new run folder")
    journal = Journal(path)
    try:
        stored = journal.get_meta("config")
        if stored is None:
            journal.set_meta("config", json.dumps(config.dump()))
        else:
            diff = config.differences(json.loads(stored))
            if diff:
                raise JournalError(f"{path} was started with a different configuration (fields "
                                   f"{', '.join(diff)} differ); resume with the original "
                                   "configuration or start a new run folder")
        run = _Run(config, journal, table)
        run.restore()
        budget = config.controller.evaluations
        limit = budget * config.max_proposal_factor
        stopped = "evaluation budget reached"
        ex = config.executor
        with make_executor(ex.kind, scorer, workers=ex.workers, timeout=ex.timeout,
                           address=ex.address) as executor:
            while run.evaluations < budget:
                if run.proposals >= limit:
                    stopped = (f"stopped after {run.proposals} proposals (max_proposal_factor="
                               f"{config.max_proposal_factor}): the controller keeps proposing "
                               "duplicates")
                    break
                if run.empty_steps >= 3:
                    stopped = ("stopped: the controller found no feasible candidate in 3 steps; "
                               "widen the parameter window or the latency budget")
                    break
                run.run_step(executor)
        return run.result(stopped, run_dir)
    finally:
        journal.close()
