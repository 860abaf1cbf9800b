"""After the search loop: successive halving over the higher rungs, then the winner's
confirmation on fresh seeds (see :mod:`searcher.fidelity`). Every scorer call is journaled as
it finishes under the candidate's own ``(step, idx)``, so a resumed run re-scores nothing."""

from __future__ import annotations

from distill import metric

from .fidelity import fitness
from .records import Evaluated, Evaluation
from .state import SearchState
from .workers import Executor


def _ranked_at(run: SearchState, rung: int) -> list[int]:
    """History indices of the candidates with every seed of ``rung`` scored ok, best first
    (ties: the tie-break metric, then the candidate id)."""
    plan, cfg = run.plan[:rung + 1], run.cfg
    tie_up = metric(cfg.tie_break or "score").higher_is_better
    keyed = []
    for i, ev in enumerate(run.history):
        fit = fitness([e for e in ev.evaluations if e.rung <= rung], plan, run.larger_better,
                      cfg.tie_break, tie_up)
        if fit is not None and fit[0] == rung:
            keyed.append(((fit, ev.candidate.id), i))
    return [i for _, i in sorted(keyed, reverse=True)]


def _score(run: SearchState, executor: Executor, jobs: list[tuple[int, int, int]]) -> None:
    """Score ``(history index, rung, rep)`` jobs and rebuild those candidates' records."""
    done = {(i, e.rung, e.rep): e for i, ev in enumerate(run.history) for e in ev.evaluations}
    fresh: dict[int, list[Evaluation]] = {}

    def on_eval(i: int, ev: Evaluation, replay: bool) -> None:
        if not replay:
            old = run.history[i]
            run.journal.record_evaluation(old.step, old.idx, old.candidate.id, ev)
            fresh.setdefault(i, []).append(ev)

    run.score(executor, [(i, run.history[i].candidate, r, rep) for i, r, rep in jobs],
              on_eval, done)
    for i, evs in fresh.items():
        _replace(run, i, evs)
    for ev in run.history:  # controls scored just now
        run.attach_control(ev)


def _replace(run: SearchState, i: int, new: list[Evaluation]) -> Evaluated:
    old = run.history[i]
    ev = run.evaluated(old.candidate, [*old.evaluations, *new], old.step, old.idx, old.params,
                       old.latency_ms)
    run.history[i] = run.results[old.candidate.id] = ev
    return ev


def promote(run: SearchState, executor: Executor) -> None:
    """Run rungs 1.. on the best ``keep`` of each previous rung, then confirm the winner."""
    plan = run.plan
    for r in range(1, len(plan)):
        chosen = _ranked_at(run, r - 1)[:plan[r].keep]
        _score(run, executor, [(i, r, rep) for i in chosen for rep in range(plan[r].seeds)])
    n = run.cfg.fidelity.confirm_seeds
    best = run.best(1)
    if n and best:
        i = run.history.index(best[0])
        first = plan[-1].seeds  # fresh seeds: none of the rungs used them
        _score(run, executor, [(i, len(plan), first + k) for k in range(n)])
