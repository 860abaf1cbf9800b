"""The search loop with a stand-in fitness: determinism, controllers on equal budgets,
stage masks, hurdles, the journal and configuration errors."""

from __future__ import annotations

import pytest
from test_search_support import broken_score, history_key, small_config, toy_score

import mlpgraph
from searcher.candidate import seed_candidates
from searcher.config import SearchConfig
from searcher.errors import JournalError, ScorerError, SearchConfigError
from searcher.journal import Journal
from searcher.search import run_search


def test_same_seed_same_result_other_seed_differs(tmp_path):
    cfg = small_config(rungs=(5, 20), crossover_prob=0.3, islands=2, migration_interval=3)
    a = run_search(cfg, toy_score, tmp_path / "a")
    b = run_search(small_config(rungs=(5, 20), crossover_prob=0.3, islands=2,
                                migration_interval=3), toy_score, tmp_path / "b")
    assert history_key(a) == history_key(b)
    assert [e.candidate.id for e in a.best] == [e.candidate.id for e in b.best]
    assert a.dedupe == b.dedupe and a.steps == b.steps
    c = run_search(small_config(rungs=(5, 20), crossover_prob=0.3, islands=2,
                                migration_interval=3, seed=4), toy_score, tmp_path / "c")
    assert history_key(c) != history_key(a)
    assert a.evaluations == 24 and len(a.history) == 24
    assert a.best == sorted(a.best, key=lambda e: e.fitness, reverse=True)


@pytest.mark.parametrize("kind", ["evolution", "paper", "random"])
def test_controllers_share_one_interface_and_budget(tmp_path, kind):
    cfg = small_config(controller=kind, evaluations=20)
    res = run_search(cfg, toy_score, tmp_path / kind)
    assert res.evaluations == 20 and res.stopped == "evaluation budget reached"
    lo, hi = cfg.constraints.param_window
    space = mlpgraph.PAPER_SPACE
    for e in res.history:
        assert lo <= e.params <= hi  # the budget filter: nothing outside the window is scored
        assert e.candidate.violations(space) == []
    if kind == "paper":  # only ever mutations of the seeds, never crossover
        seeds = {s.id for s in seed_candidates(space, 3)}
        for e in res.history:
            lin = e.candidate.lineage
            assert lin.origin == "mutation" and set(lin.parents) <= seeds
            assert 1 <= len(lin.mutations) <= cfg.controller.max_mutations
    if kind == "random":
        assert all(e.candidate.lineage.origin == "random" for e in res.history)
    if kind == "evolution":  # seeded with the standard FFN at every feasible (s, ratio)
        first = [e.candidate for e in res.history[:4]]
        assert all(c.lineage.origin == "seed" for c in first)
        assert all(g.expr == "W2(gelu(W1(x)))" for c in first for g in c.layers)


def test_stage_masks(tmp_path):
    base = seed_candidates(mlpgraph.PAPER_SPACE, 3)[4]  # s=2, ratio 1
    res2 = run_search(small_config(stage=2, base=base.to_dict(), evaluations=12), toy_score,
                      tmp_path / "s2")
    for e in res2.history:
        assert [(g.stacks, g.ratio) for g in e.candidate.layers] == \
            [(g.stacks, g.ratio) for g in base.layers]
    res3 = run_search(small_config(stage=3, base=base.to_dict(), evaluations=12), toy_score,
                      tmp_path / "s3")
    for e in res3.history:
        assert [g.graph for g in e.candidate.layers] == [g.graph for g in base.layers]
    assert len({e.candidate.id for e in res3.history}) == 12


def test_hurdles_promote_only_the_good(tmp_path):
    res = run_search(small_config(rungs=(5, 40), hurdle_min_history=4, evaluations=24),
                     toy_score, tmp_path / "h")
    rungs = [len(e.evaluations) for e in res.history]
    assert set(rungs) == {1, 2}  # some went on, some did not
    assert all(rungs[i] == 2 for i in range(4))  # too little history: the first four go on
    scores0 = []
    for e, n in zip(res.history, rungs, strict=True):
        s0 = e.evaluations[0].score
        if len(scores0) >= 4 and n == 2:
            assert s0 >= sorted(scores0)[len(scores0) // 2 - 1]
        scores0.append(s0)
    assert all(e.fitness[0] == len(e.evaluations) - 1 for e in res.history)


def test_journal_reads_back_everything(tmp_path):
    res = run_search(small_config(evaluations=12), toy_score, tmp_path / "j")
    with Journal.in_folder(tmp_path / "j") as j:
        rows = j.read_all()
        summaries = j.summaries()
    assert len(rows) == res.proposals
    assert sum(r.status == "evaluated" for r in rows) == 12
    for r in rows:
        assert r.candidate["id"] == r.candidate_id and "lineage" in r.candidate
        assert r.proposed_at > 0
        if r.status == "evaluated":
            assert r.score is not None and r.evaluations[0].status == "ok"
            assert r.finished_at >= r.proposed_at
        if r.status == "duplicate":
            assert r.dup_of is not None
    assert summaries[-1]["evaluations"] == 12 and len(summaries) == res.steps
    best_row = next(r for r in rows if r.candidate_id == res.best[0].candidate.id)
    assert best_row.score == res.best[0].score


def test_pareto_front_in_result(tmp_path):
    res = run_search(small_config(latency_budget=10.0, latency_proxy="flops",
                                  evaluations=16), toy_score, tmp_path / "p")
    assert res.pareto and all(e.latency_ms <= 10.0 for e in res.history)
    for p in res.pareto:  # nothing is better in every objective
        for e in res.history:
            assert not (e.fitness > p.fitness and e.latency_ms < p.latency_ms
                        and e.params < p.params)


def test_configuration_errors(tmp_path):
    with pytest.raises(SearchConfigError, match=r"^controller\.kind: .*'evolution'"):
        small_config(controller="lightgbm")
    with pytest.raises(SearchConfigError, match="space 'nope' is neither"):
        small_config(space="nope")
    with pytest.raises(SearchConfigError, match="sample_size"):
        run_search(small_config(sample_size=50), toy_score, tmp_path / "y")
    with pytest.raises(SearchConfigError, match="none of the 16 seed candidates"):
        run_search(small_config(param_window=(1, 2)), toy_score, tmp_path / "z")
    with pytest.raises(SearchConfigError, match="^constraints: hidden is required"):
        SearchConfig.load({"constraints": {"student_config": None}})
    with pytest.raises(SearchConfigError, match=r"^controller\.evaluations: .*greater than 0"):
        SearchConfig.load({"controller": {"evaluations": -3}})
    run_search(small_config(evaluations=4), toy_score, tmp_path / "done")
    with pytest.raises(JournalError, match="resume=True"):
        run_search(small_config(evaluations=4), toy_score, tmp_path / "done")
    with pytest.raises(JournalError, match="seed"):
        run_search(small_config(evaluations=4, seed=9), toy_score, tmp_path / "done",
                   resume=True)
    # resuming a finished run changes nothing; a larger budget continues it
    again = run_search(small_config(evaluations=4), toy_score, tmp_path / "done", resume=True)
    assert again.evaluations == 4 and again.steps == 1
    more = run_search(small_config(evaluations=8), toy_score, tmp_path / "done", resume=True)
    assert more.evaluations == 8 and more.history[:4] == again.history[:4]


def test_a_broken_scorer_stops_the_run_and_journals_no_failure(tmp_path):
    with pytest.raises(ScorerError, match="no warmed-up supernet checkpoint"):
        run_search(small_config(), broken_score, tmp_path / "b")
    with Journal.in_folder(tmp_path / "b") as j:
        assert j.read_all() == [] and j.last_state() is None
    fixed = run_search(small_config(), toy_score, tmp_path / "b", resume=True)
    assert history_key(fixed) == history_key(run_search(small_config(), toy_score,
                                                        tmp_path / "fresh"))
