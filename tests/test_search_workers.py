"""Worker backends: failures are recorded and the search goes on; backends agree."""

from __future__ import annotations

import pytest
from test_search_support import FaultyScorer, history_key, small_config, toy_score

import mlpgraph
from searcher.budget import Constraints, ParamCounter, ParamWindow
from searcher.candidate import seed_candidates
from searcher.journal import Journal
from searcher.search import run_search
from searcher.spec import CandidateSpec, LayerChoice
from searcher.workers import InlineBackend, LocalPoolBackend, Task


def _feasible_seed_ids() -> list[str]:
    cfg = small_config()
    checks = Constraints(ParamCounter(cfg.hidden, cfg.non_mlp_params),
                         ParamWindow(*cfg.param_window))
    return [c.id for c in seed_candidates(mlpgraph.PAPER_SPACE, cfg.num_layers) if checks(c)]


def test_crash_raise_and_hang_are_failures_and_the_search_goes_on(tmp_path):
    raising, crashing, hanging = _feasible_seed_ids()[:3]
    scorer = FaultyScorer(raise_ids=(raising,), crash_ids=(crashing,), hang_ids=(hanging,))
    cfg = small_config(backend="local", workers=2, timeout=3.0, evaluations=12)
    res = run_search(cfg, scorer, tmp_path / "faulty")
    assert res.evaluations == 12 and res.stopped == "evaluation budget reached"
    by_id = {e.candidate.id: e for e in res.history}
    assert by_id[raising].status == "failed"
    assert "stand-in failure" in by_id[raising].evaluations[0].error
    assert by_id[crashing].status == "failed"
    assert "died" in by_id[crashing].evaluations[0].error
    assert by_id[hanging].status == "timeout"
    assert all(by_id[i].fitness is None for i in (raising, crashing, hanging))
    others = [e for e in res.history if e.candidate.id not in (raising, crashing, hanging)]
    assert others and all(e.status == "ok" for e in others)
    with Journal.in_folder(tmp_path / "faulty") as j:
        status = {r.candidate_id: r.status for r in j.read_all()}
    assert status[raising] == status[crashing] == status[hanging] == "failed"
    # in-process, the initial population (independent of scores) is proposed identically
    ref = run_search(small_config(evaluations=12), toy_score, tmp_path / "ref")
    assert [e.candidate.id for e in ref.history[:cfg.population]] == \
        [e.candidate.id for e in res.history[:cfg.population]]


def test_local_pool_returns_results_in_task_order():
    spec = CandidateSpec("x", 32, (LayerChoice("W2(gelu(W1(x)))", 1, 16),))
    tasks = [Task((i,), spec, None) for i in range(5)]
    done = []
    with LocalPoolBackend(toy_score, workers=2, timeout=30) as pool:
        out = pool.run(tasks, done.append)
    assert [o.key for o in out] == [(i,) for i in range(5)] and len(done) == 5
    assert [o.result for o in out] == [o.result for o in InlineBackend(toy_score).run(tasks)]


def test_ray_backend_matches_the_local_pool(tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("Ray cannot be imported (pip install 'efficientbert[ray]'); the Ray "
                    "backend test needs it")
    raising = _feasible_seed_ids()[1]
    scorer = FaultyScorer(raise_ids=(raising,))
    local = run_search(small_config(backend="local", workers=2, evaluations=12, rungs=(5, 20)),
                       scorer, tmp_path / "local")
    ray_run = run_search(small_config(backend="ray", workers=2, evaluations=12,
                                      rungs=(5, 20)), scorer, tmp_path / "ray")
    assert history_key(ray_run) == history_key(local)
    assert next(e for e in ray_run.history if e.candidate.id == raising).status == "failed"
