"""The search loop with a stand-in fitness: determinism, controllers on equal budgets,
stage masks, hurdles, the journal and configuration errors."""

from __future__ import annotations

import pytest
from test_search_support import RUNGS, broken_score, history_key, small_config, toy_score

import mlpgraph
from distill.result import ScoreResult
from mlpgraph import MLPLayer
from searcher.budget import ParamCounter
from searcher.candidate import Candidate, seed_candidates, uniform_candidate
from searcher.config import SearchConfig
from searcher.errors import JournalError, ScorerError, SearchConfigError
from searcher.fidelity import control_of, shape_key, stage_winner
from searcher.journal import Journal
from searcher.records import Evaluated, Evaluation, score_at
from searcher.scoring import EvalBudget
from searcher.search import run_search


def test_same_seed_same_result_other_seed_differs(tmp_path):
    kw = dict(rungs=RUNGS, crossover_prob=0.3, islands=2, migration_interval=3)
    a = run_search(small_config(**kw), toy_score, tmp_path / "a")
    b = run_search(small_config(**kw), toy_score, tmp_path / "b")
    assert history_key(a) == history_key(b)
    assert [e.candidate.id for e in a.best] == [e.candidate.id for e in b.best]
    assert a.dedupe == b.dedupe and a.steps == b.steps
    c = run_search(small_config(**kw, seed=4), toy_score, tmp_path / "c")
    assert history_key(c) != history_key(a)
    assert a.evaluations == 24 and len(a.history) == 24
    assert a.best == sorted(a.best, key=lambda e: (e.fitness, e.candidate.id), reverse=True)


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


def test_successive_halving_promotes_the_best_and_confirms_the_winner(tmp_path):
    res = run_search(small_config(rungs=RUNGS, confirm_seeds=3, evaluations=24), toy_score,
                     tmp_path / "h")
    at0 = sorted((e for e in res.history if e.fitness is not None),
                 key=lambda e: (score_at(e.evaluations, 0), e.candidate.id), reverse=True)
    promoted = [e for e in res.history if e.fitness[0] == 1]
    assert {e.candidate.id for e in promoted} == {e.candidate.id for e in at0[:6]}
    for e in promoted:  # rung 1: two seeds; fitness is their mean
        r1 = sorted((x.rep, x.score) for x in e.evaluations if x.rung == 1)
        assert [rep for rep, _ in r1] == [0, 1]
        assert e.fitness[1] == pytest.approx((r1[0][1] + r1[1][1]) / 2)
    winner = res.best[0]
    assert winner.fitness[0] == 1 and winner in promoted
    fresh = sorted(x.rep for x in winner.evaluations if x.rung == 2)
    assert fresh == [2, 3, 4]  # three seeds none of the rungs used
    assert winner.confirmed == pytest.approx(
        sum(x.score for x in winner.evaluations if x.rung == 2) / 3)
    assert all(e.confirmed is None for e in res.history if e is not winner)


def test_paired_controls_are_the_same_shape_ffn_under_the_same_seed(tmp_path):
    res = run_search(small_config(rungs=RUNGS, control="all", evaluations=12), toy_score,
                     tmp_path / "c")
    ffn = mlpgraph.parse("W2(gelu(W1(x)))")
    for e in res.history:
        ctl = Candidate(tuple(MLPLayer(ffn, g.stacks, g.ratio) for g in e.candidate.layers))
        rung = e.fitness[0]
        budgets = [EvalBudget(rung, RUNGS[rung]["steps"], rep)
                   for rep in range(RUNGS[rung].get("seeds", 1))]
        want = sum(toy_score(ctl.spec(32), b).metrics["score"] for b in budgets) / len(budgets)
        assert e.control == pytest.approx(want) and e.delta == pytest.approx(e.score - want)
    with Journal.in_folder(tmp_path / "c") as j:
        shapes = {k[0] for k in j.controls()}
    assert shapes == {shape_key(e.candidate) for e in res.history}  # the FFN's own score too


def test_a_best_worse_than_its_control_hands_on_the_control_when_it_fits():
    glu = uniform_candidate("W3(swish(W1(x)) * W2(x))", 2, "1", 3)
    ffn = control_of(glu, "W2(gelu(W1(x)))")
    counter = ParamCounter(32, 5000)
    wide = small_config(param_window=(counter(ffn), counter(glu)))
    ev = Evaluated(glu, "ok", (1, -3.0, 0.0), counter(glu), None, 0, 0)
    ev.evaluations = [Evaluation(1, "ok", ScoreResult({"kd_loss": 3.0}), 3.0, rep=0)]
    for control, fallback in ((2.9, True), (3.1, False), (3.0, False), (None, False)):
        ev.control = control  # kd_loss: lower is better, so 3.0 against 2.9 is worse
        cand, params, note = stage_winner(ev, wide.but(rank_by="kd_loss"))
        assert (cand.id, params) == ((ffn.id, counter(ffn)) if fallback else
                                     (glu.id, counter(glu)))
        assert (note is not None) == fallback
        if fallback:
            assert "+0.1000 kd_loss" in note and note.endswith("that FFN goes on")
    ev.control = 3.1  # accuracy: higher is better, so 3.0 against 3.1 is worse
    assert stage_winner(ev, wide.but(rank_by="accuracy"))[0].id == ffn.id
    # the FFN control of a GLU holds fewer parameters: below the window, the GLU goes on
    narrow = small_config(param_window=(counter(ffn) + 1, counter(glu)), rank_by="accuracy")
    cand, _, note = stage_winner(ev, narrow)
    assert cand.id == glu.id and "outside the constraints" in note


def test_stage_two_is_seeded_with_the_base_and_its_bare_variant(tmp_path):
    base = uniform_candidate("tanh(W2(gelu(W1(x))))", 2, "1", 3)
    res = run_search(small_config(stage=2, base=base.to_dict(), evaluations=6,
                                  population=2, sample_size=2), toy_score, tmp_path / "s2")
    seeds = [e.candidate for e in res.history if e.candidate.lineage.origin == "seed"]
    assert [str(g.graph) for c in seeds for g in c.layers] == \
        ["tanh(W2(gelu(W1(x))))"] * 3 + ["W2(gelu(W1(x)))"] * 3


def test_ties_are_broken_by_a_metric_then_the_id_not_by_order(tmp_path):
    res = run_search(small_config(evaluations=12, tie_break="score"), flat_score, tmp_path / "t")
    assert len({e.fitness[1] for e in res.history}) == 1  # every candidate ties
    assert [e.candidate.id for e in res.best] == sorted(
        (e.candidate.id for e in res.history), reverse=True)[:len(res.best)]


def flat_score(spec, budget) -> ScoreResult:
    return ScoreResult({"score": 0.5})


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
    with pytest.raises(SearchConfigError, match=r"^controller\.kind: .*evolution"):
        small_config(controller="lightgbm")
    with pytest.raises(SearchConfigError, match="unknown space 'nope' \\(known: paper, wide\\)"):
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
