"""The search loop: ``run_search(config, scorer, run_dir, resume=False) -> SearchResult``.

One *step*: the controller proposes ``proposals_per_step`` feasible candidates (parameter
window, latency budget); the proposals are journaled as pending; duplicates (by id or
functional fingerprint) are not scored; the rest are scored at rung 0 (every seed of it) in
parallel, with their paired controls when the fidelity asks (every finished scorer call is
journaled at once); the controller observes all proposals in proposal order; the step commits
in one transaction with the loop state. When the evaluation budget is spent, the promotion
phase (:mod:`searcher.promote`) runs the higher rungs and the winner's confirmation. Resuming
reloads the last committed state and re-runs the interrupted step, reading its finished
evaluations back from the journal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.result import ScoreResult, higher_is_better

from .budget import Constraints, pareto_front
from .candidate import Candidate, seed_candidates
from .config import SearchConfig
from .controller import Observation, make_controller
from .dedupe import Deduper, DedupeStats
from .errors import JournalError, ScorerError, SearchConfigError
from .fidelity import Fitness, control_of, fitness, rung_budget, score_at, shape_key, wants_control
from .graphedit import strip_outer_activations
from .journal import FILENAME, Evaluation, Journal, JournalRow
from .mutations import DEFAULT_TABLE, MutationTable
from .scoring import Scorer
from .workers import Executor, Outcome, Task, make_executor


@dataclass
class Evaluated:
    """A scored candidate: ``status`` of its last scorer call (``ok``, ``diverged``,
    ``failed``, ``timeout``); ``fitness`` ``(rung, value, tie)`` (larger is better; None when
    even rung 0 failed); ``score`` the ranked metric's mean at that rung; ``control`` the
    same-shape standard FFN's there (same seeds) and ``delta = score - control``;
    ``confirmed`` the mean on fresh seeds (the winner only)."""

    candidate: Candidate
    status: str
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
        return {"candidate": self.candidate.to_dict(), "status": self.status,
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


def _evaluation(o: Outcome, rung: int, rep: int, rank_by: str) -> Evaluation:
    times = {"error": o.error, "started_at": o.started_at, "finished_at": o.finished_at,
             "worker": o.worker, "rep": rep}
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
        self.plan = cfg.fidelity.plan()
        self.larger_better = higher_is_better(cfg.rank_by)
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
            if row.status in ("evaluated", "failed"):
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
                      higher_is_better(self.cfg.tie_break or "score"))
        ev = Evaluated(cand, evals[-1].status if evals else "failed", fit, params, latency,
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
                tasks.append(Task(("cand", key, rung, rep), cand.spec(self.hidden), budget))
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
            tasks.append(Task(("ctl", *ck), ctl.spec(self.hidden), budget))

        def finished(o: Outcome) -> None:
            kind, key, rung, rep = o.key
            ev = _evaluation(o, rung, rep, cfg.rank_by)
            if kind == "ctl":
                self._set_control((key, rung, rep), derived[(key, rung, rep)][1], ev)
                return
            on_eval(key, ev, replay=False)
            for ck, (job, cid) in derived.items():
                if job == key and ck[1:] == (rung, rep) and wants_control(
                        cfg.fidelity.control, rung) and rung < len(self.plan):
                    self._set_control(ck, cid, ev)

        if tasks:
            executor.run(tasks, finished)

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
        records: dict[int, list[Evaluation]] = {i: [] for i, d in enumerate(dups) if d is None}

        def on_eval(i: int, ev: Evaluation, replay: bool) -> None:
            if not replay:
                self.journal.record_evaluation(step, i, batch[i].id, ev)
            records[i].append(ev)

        self.score(executor, [(i, batch[i], 0, rep) for i in records
                              for rep in range(self.plan[0].seeds)],
                   on_eval, self.journal.evaluations_of(step))
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
                ev = self.evaluated(cand, records[i], step, i, info[i]["params"],
                                    info[i]["latency"])
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
                   "best_score": best[0].score if best else None,
                   "dedupe_hit_rate": self.deduper.stats.hit_rate}
        self.journal.commit_step(step, finals, self.state(), summary)
        self.step += 1

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


def run_search(config: SearchConfig, scorer: Scorer, run_dir: str | Path, resume: bool = False,
               *, table: MutationTable = DEFAULT_TABLE) -> SearchResult:
    """Run (or, with ``resume``, continue) a search in ``run_dir``; see the module doc.

    ``scorer(spec, budget)`` is called for every distinct candidate (in worker processes
    unless ``config.executor.kind == "inline"``). ``table`` is the mutation table (add your own
    mutations to :data:`searcher.mutations.DEFAULT_TABLE`).
    """
    from .promote import promote

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
            old = json.loads(stored)
            diff = config.differences(old)
            changed = [k.split(".", 1)[1] for k in diff if k.startswith("primitives.")]
            if changed:
                raise JournalError(
                    f"{path}: the definition of user primitive(s) {', '.join(changed)} changed "
                    "since this search started (their source digests differ); restore the "
                    "original definitions, or start a new run folder")
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
            promote(run, executor)
        return run.result(stopped, run_dir)
    finally:
        journal.close()
