"""Metrics against hand-worked values and against scikit-learn / scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.metrics import (
    GLUE_METRICS,
    accuracy,
    compute_metrics,
    exact_match,
    f1_binary,
    glue_metrics,
    matthews_corrcoef,
    normalize_answer,
    pearson,
    rankdata,
    spearman,
    squad_v1_metrics,
    squad_v2_metrics,
    token_f1,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


# ----------------------------------------------------------------------------- hand-worked
def test_accuracy_and_f1_by_hand() -> None:
    preds, labels = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    assert accuracy(preds, labels) == pytest.approx(3 / 5)
    # TP=2, FP=1, FN=1 -> 2*2 / (2*2 + 1 + 1)
    assert f1_binary(preds, labels) == pytest.approx(4 / 6)
    assert f1_binary([0, 0], [0, 0]) == 0.0  # no positive anywhere: defined as 0


def test_mcc_by_hand() -> None:
    preds, labels = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    # TP=2 TN=1 FP=1 FN=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert matthews_corrcoef(preds, labels) == pytest.approx(1 / 6)
    assert matthews_corrcoef([1, 1, 1], [0, 1, 0]) == 0.0  # constant prediction
    assert matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)


def test_pearson_and_spearman_by_hand() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0  # constant input: defined as 0
    assert rankdata([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert rankdata([3, 3, 3]).tolist() == [2.0, 2.0, 2.0]
    # ranks y = [1, 2, 3.5, 5, 3.5]: sum dx*dy = 8, sum dx^2 = 10, sum dy^2 = 9.5
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="zero examples"):
        accuracy([], [])
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(["bleu"], [1], [1])


# ----------------------------------------------------------------------------- references
def test_against_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 200)
        p = np.where(rng.random(200) < 0.7, y, 1 - y)
        assert accuracy(p, y) == pytest.approx(sklearn_metrics.accuracy_score(y, p))
        assert f1_binary(p, y) == pytest.approx(sklearn_metrics.f1_score(y, p))
        assert matthews_corrcoef(p, y) == pytest.approx(sklearn_metrics.matthews_corrcoef(y, p))
    y3, p3 = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    assert matthews_corrcoef(p3, y3) == pytest.approx(sklearn_metrics.matthews_corrcoef(y3, p3))


def test_against_scipy_if_installed() -> None:
    stats = pytest.importorskip("scipy.stats", reason="scipy is optional")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, 100).astype(float)  # many ties
    y = x + rng.normal(0, 2, 100)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    assert np.allclose(rankdata(x), stats.rankdata(x))


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.integers(-1000, 1000), min_size=3, max_size=40))
def test_spearman_invariant_under_monotone_maps(xs: list[int]) -> None:
    x = np.array(xs, dtype=float)
    y = np.arange(len(x), dtype=float)[::-1]
    expected = spearman(x, y)
    assert spearman(x**3 + x, y) == pytest.approx(expected, abs=1e-9)  # exact in float64
    assert -1.0 <= pearson(x, y) <= 1.0
    assert pearson(x, y) == pytest.approx(pearson(y, x))


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=50))
def test_binary_metrics_match_sklearn(pairs: list[tuple[int, int]]) -> None:
    p, y = np.array(pairs).T
    if len(set(p) | set(y)) == 1:  # sklearn warns about a single label; MCC is 0 by definition
        assert matthews_corrcoef(p, y) == 0.0
        return
    assert f1_binary(p, y) == pytest.approx(sklearn_metrics.f1_score(y, p, zero_division=0))
    assert matthews_corrcoef(p, y) == pytest.approx(sklearn_metrics.matthews_corrcoef(y, p))


# ----------------------------------------------------------------------------- GLUE mapping
def test_glue_metric_mapping() -> None:
    assert set(GLUE_METRICS) >= {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte",
                                 "wnli"}
    logits = np.array([[2.0, 0.1], [0.0, 1.0], [0.3, 0.2], [0.1, 0.9]])
    labels = [0, 1, 1, 1]
    m = glue_metrics("mrpc", logits, labels)  # argmax -> [0, 1, 0, 1]
    assert set(m) == {"accuracy", "f1", "score"}
    assert m["accuracy"] == pytest.approx(0.75) and m["f1"] == pytest.approx(0.8)
    assert m["score"] == pytest.approx(0.775)
    assert set(glue_metrics("CoLA", [0, 1], [0, 1])) == {"mcc", "score"}
    assert set(glue_metrics("qqp", [0, 1], [0, 1])) == {"accuracy", "f1", "score"}
    assert set(glue_metrics("mnli-mm", [2, 1], [2, 1])) == {"accuracy", "score"}
    s = glue_metrics("stsb", np.array([[0.5], [2.0], [4.5]]), [1.0, 2.0, 5.0])
    assert set(s) == {"pearson", "spearman", "score"} and s["spearman"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown GLUE task"):
        glue_metrics("squad", [1], [1])


# ----------------------------------------------------------------------------- SQuAD
def test_squad_normalization_and_scores() -> None:
    assert normalize_answer("The  Cat's, a hat!") == "cats hat"
    assert normalize_answer("An apple") == "apple"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert exact_match("the Eiffel Tower.", "Eiffel tower") == 1.0
    # pred tokens [cat, sat, on, mat], gold [cat, on, mat]: P = 3/4, R = 1
    assert token_f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("", "", empty_matches_empty=False) == 0.0


def test_squad_v1_max_over_golds_and_missing() -> None:
    refs = {"q1": {"text": ["Denver Broncos", "the Broncos"], "answer_start": [0, 5]},
            "q2": ["Santa Clara"], "q3": ["1990"]}
    preds = {"q1": "Broncos", "q2": "Santa Clara, California"}
    m = squad_v1_metrics(preds, refs)
    assert m["total"] == 3
    assert m["exact_match"] == pytest.approx(100 / 3)  # q1 matches "the Broncos"
    f1_q2 = 2 * (2 / 3) * 1 / (2 / 3 + 1)  # pred [santa, clara, california]
    assert m["f1"] == pytest.approx(100 * (1 + f1_q2 + 0) / 3)
    with pytest.raises(ValueError, match="no gold answer"):
        squad_v1_metrics({"q": ""}, {"q": []})


def test_squad_v2_no_answer_handling() -> None:
    refs = {"a": {"text": ["Normandy"], "answer_start": [3]},
            "b": {"text": [], "answer_start": []},
            "c": {"text": [], "answer_start": []},
            "d": ["in France"]}
    preds = {"a": "Normandy", "b": "", "c": "France", "d": ""}
    m = squad_v2_metrics(preds, refs)
    assert m["total"] == 4 and m["HasAns_total"] == 2 and m["NoAns_total"] == 2
    assert m["exact"] == pytest.approx(50.0)
    assert m["HasAns_exact"] == pytest.approx(50.0) and m["NoAns_exact"] == pytest.approx(50.0)
    assert m["f1"] == pytest.approx(50.0)
    # a no-answer probability above the threshold turns a prediction into ""
    m2 = squad_v2_metrics(preds, refs, na_probs={"c": 0.9}, na_prob_thresh=0.5)
    assert m2["NoAns_exact"] == pytest.approx(100.0)
