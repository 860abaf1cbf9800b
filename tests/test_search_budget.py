"""Dedupe, parameter window, latency budget, Pareto front, scorer results."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

import mlpgraph
from distill import ScoreResult, count_parameters, load_config, metric
from mlpgraph import MLPLayer, parse_ratio
from searcher.budget import (
    Constraints,
    LatencyMeter,
    ParamCounter,
    ParamWindow,
    dominates,
    pareto_front,
)
from searcher.candidate import Candidate, uniform_candidate
from searcher.config import ConstraintSpec, Rung
from searcher.dedupe import Deduper, functional_key
from searcher.errors import SearchConfigError
from searcher.fidelity import SEED_STRIDE, rung_budget
from searcher.scoring import EvalBudget


def _cand(*exprs: str, s: int = 1, r: str = "1/2") -> Candidate:
    return Candidate(tuple(MLPLayer(mlpgraph.parse(e), s, parse_ratio(r)) for e in exprs))


def test_dedupe_hits_equal_keys_and_equal_fingerprints():
    d = Deduper()
    a = _cand("W2(gelu(W1(x)) * x)", "W2(relu(W1(x)))")
    assert d.check_and_add(a) is None
    # same canonical key (commuted operands): a key hit
    b = _cand("W2(x * gelu(W1(x)))", "W2(relu(W1(x)))")
    assert b.id == a.id and d.check_and_add(b) == ("key", a.id)
    # max(y, relu(y)) == relu(y) is not a rewrite rule, but the probes see the same function
    c = _cand("W2(gelu(W1(x)) * x)", "W2(max(W1(x), relu(W1(x))))")
    assert c.id != a.id and functional_key(c) == functional_key(a)
    assert d.check_and_add(c) == ("fingerprint", a.id)
    # a different function, or the same expression at another width, is new
    assert d.check_and_add(_cand("W2(tanh(W1(x)))", "W2(relu(W1(x)))")) is None
    assert d.check_and_add(_cand("W2(gelu(W1(x)) * x)", "W2(relu(W1(x)))", r="1/4")) is None
    st = d.stats
    assert (st.lookups, st.key_hits, st.fingerprint_hits) == (5, 1, 1)
    assert math.isclose(st.hit_rate, 2 / 5)
    off = Deduper(use_fingerprint=False)
    off.check_and_add(a)
    assert off.check_and_add(c) is None


def test_param_counter_matches_distill_and_window_filters():
    cfg = load_config("efficientbert_paper")
    counter = ParamCounter.from_student_config("efficientbert_paper")
    paper = Candidate(tuple(cfg.layers))
    assert all(isinstance(g, MLPLayer) for g in paper.layers)
    assert counter(paper) == count_parameters(cfg)["total"]
    assert 15_000_000 <= counter(paper) <= 16_000_000  # the paper's window holds its model
    window = ParamWindow(15_000_000, 16_000_000)
    checks = Constraints(counter, window)
    assert checks(paper)
    assert not checks(uniform_candidate("W2(gelu(W1(x)))", 4, "1", 6))  # far too big
    assert checks.stats() == {"checked": 2, "rejected_params": 1, "rejected_latency": 0}
    # the seeds inside the window: s * ratio near 1 (1x1, 2x1/2, 3x1/3, 4x1/4)
    from searcher.candidate import seed_candidates

    inside = [(c.layers[0].stacks, c.layers[0].ratio)
              for c in seed_candidates(mlpgraph.PAPER_SPACE, 6) if checks(c)]
    assert sorted(inside) == [(1, 1), (2, parse_ratio("1/2")), (3, parse_ratio("1/3")),
                              (4, parse_ratio("1/4"))]
    with pytest.raises(SearchConfigError, match="param_window"):
        ParamWindow(10, 5)


def test_latency_budget_and_cache():
    meter = LatencyMeter(32, tokens=16, repeats=3, proxy="flops")
    small, big = _cand("W2(gelu(W1(x)))", r="1/4"), _cand("W2(gelu(W1(x)))", s=4, r="1")
    assert meter(small) < meter(big)
    checks = Constraints(latency=meter, max_latency=meter(small) * 1.01)
    assert checks(small) and not checks(big)
    assert checks.rejected_latency == 1
    seen = []
    timed = LatencyMeter(32, tokens=16, repeats=3, on_measure=lambda k, v: seen.append(v))
    ms = timed(_cand("W2(gelu(W1(x)))", "tanh(W2(relu(W1(x))))"))
    assert ms > 0 and timed.measured == 2 and len(seen) == 2
    timed(_cand("W2(gelu(W1(x)))", "W2(gelu(W1(x)))"))  # both layers cached by key
    assert timed.measured == 2
    assert LatencyMeter(32, tokens=16, cache=timed.cache)(_cand("W2(gelu(W1(x)))")) == seen[0]


def test_the_latency_meter_uses_the_configured_backend():
    """The constraints' meter compiles with ``latency_backend`` (the pipeline's ``backend``):
    another backend is another measurement (its own cache key), and an unknown one is
    refused with the declared names."""
    spec = ConstraintSpec(student_config=None, hidden=32, latency_budget=1.0,
                          latency_backend="torchscript", latency_proxy="flops")
    meter = Constraints.from_spec(spec).latency
    assert meter is not None and meter.backend == "torchscript"
    gene = _cand("W2(gelu(W1(x)))").layers[0]
    eager = LatencyMeter(32, proxy="flops")
    assert meter.key(gene) == eager.key(gene).replace("|eager|", "|torchscript|")
    with pytest.raises(SearchConfigError, match="latency_backend: unknown backend 'tvm'.*eager"):
        ConstraintSpec.load({**spec.dump(), "latency_backend": "tvm"})


def test_pareto_front():
    pts = {"a": (0.9, -10, -5), "b": (0.8, -5, -5), "c": (0.7, -12, -6), "d": (0.9, -10, -5),
           "e": (0.95, -20, -9)}
    front = pareto_front(list(pts), lambda k: pts[k])
    assert front == ["a", "b", "d", "e"]  # c is dominated by a; a and d tie (both stay)
    assert dominates((1, 2), (1, 1)) and not dominates((1, 1), (1, 1))
    # tuples compare lexicographically: (rung, score) as one objective
    assert dominates(((1, 0.5), -3), ((0, 0.9), -3))


@dataclass(frozen=True)
class _Budget:
    kd_steps: int = 200
    lr: float = 1e-4
    seed: int = 3


def test_scorer_results_and_budgets_normalize():
    full = ScoreResult({"accuracy": 0.9, "kd_loss": 1.5}, 10, 2.0, 40, 1.0, False, 1.7)
    assert ScoreResult.from_dict(full.to_dict()) == full
    assert (full.value("accuracy"), full.value("score")) == (0.9, None)
    gone = ScoreResult({"kd_loss": float("nan")}, 10)
    assert gone.value("kd_loss") is None
    assert ScoreResult({"kd_loss": 1.0}, diverged=True).value("kd_loss") is None
    assert (metric("accuracy").higher_is_better, metric("kd_loss").higher_is_better) == \
        (True, False)
    assert rung_budget(None, Rung(steps=40), 2, 1) == EvalBudget(1, 40, 2)
    assert rung_budget(_Budget(), Rung(steps=50), 0, 0) == _Budget(kd_steps=50)
    assert rung_budget(_Budget(), Rung(steps=None), 0, 0) == _Budget()
    assert rung_budget(_Budget(), Rung(steps=9), 2, 1) == _Budget(9, seed=3 + 2 * SEED_STRIDE)
