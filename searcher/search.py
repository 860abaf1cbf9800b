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
from pathlib import Path

from .config import SearchConfig
from .controller import Observation
from .errors import JournalError, ScorerError
from .journal import FILENAME, Journal
from .mutations import DEFAULT_TABLE, MutationTable
from .promote import promote
from .records import CallStatus, Evaluation, ProposalStatus, SearchResult
from .scoring import Scorer
from .state import SearchState
from .workers import Executor, make_executor


def run_step(run: SearchState, executor: Executor) -> None:
    """One step of the loop (see the module doc)."""
    cfg, step = run.cfg, run.step
    n = min(cfg.controller.proposals_per_step, cfg.controller.evaluations - run.evaluations)
    batch = run.controller.propose(n)
    run.proposals += len(batch)
    run.empty_steps = 0 if batch else run.empty_steps + 1
    info = [run.constraints.measure(c) for c in batch]
    run.journal.begin_step(step, [(c.id, c.to_json(), m["params"], m["latency"])
                                   for c, m in zip(batch, info, strict=True)])
    dups = [run.deduper.check_and_add(c) for c in batch]
    records: dict[int, list[Evaluation]] = {i: [] for i, d in enumerate(dups) if d is None}

    def on_eval(i: int, ev: Evaluation, replay: bool) -> None:
        if not replay:
            run.journal.record_evaluation(step, i, batch[i].id, ev)
        records[i].append(ev)

    run.score(executor, [(i, batch[i], 0, rep) for i in records
                          for rep in range(run.plan[0].seeds)],
               on_eval, run.journal.evaluations_of(step))
    broken = (CallStatus.FAILED, CallStatus.TIMEOUT)
    if cfg.fail_fast and run.evaluations == 0 and records and all(
            r.status in broken for recs in records.values() for r in recs):
        first = next(r for recs in records.values() for r in recs)
        run.journal.discard_step(step)
        raise ScorerError(f"the scorer failed on all {len(records)} candidates of the first "
                          f"step; the first error was: {first.error}\nFix the scorer (or "
                          "set fail_fast=False) and run again; nothing of this step was kept")
    observations, finals = [], []
    for i, cand in enumerate(batch):
        if dups[i] is None:
            ev = run.evaluated(cand, records[i], step, i, info[i]["params"],
                                info[i]["latency"])
            run.results[cand.id] = ev
            run.history.append(ev)
            run.evaluations += 1
            finals.append((ProposalStatus.EVALUATED if ev.fitness is not None
                           else ProposalStatus.FAILED, None))
        else:
            ev = run.results[dups[i][1]]
            finals.append((ProposalStatus.DUPLICATE, dups[i][1]))
        observations.append(Observation(cand, ev.fitness))
    run.controller.observe(observations)
    best = run.best(1)
    summary = {"proposed": len(batch), "evaluations": run.evaluations,
               "duplicates": sum(d is not None for d in dups),
               "best_id": best[0].candidate.id if best else None,
               "best": list(best[0].fitness) if best else None,
               "best_score": best[0].score if best else None,
               "dedupe_hit_rate": run.deduper.stats.hit_rate}
    run.journal.commit_step(step, finals, run.state(), summary)
    run.step += 1


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
        run = SearchState(config, journal, table)
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
                run_step(run, executor)
            promote(run, executor)
        return run.result(stopped, run_dir)
    finally:
        journal.close()
