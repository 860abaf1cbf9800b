"""The statistics against plain hand computations (shared/statistics.md)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from distill.stats import bootstrap_delta, icc_consistency, kendall, paired, verdict


def test_paired_interval_by_hand():
    a, b = [0.82, 0.81, 0.83], [0.80, 0.79, 0.80]
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    p = paired(a, b)
    assert p.delta_mean == pytest.approx(mean) and p.sd == pytest.approx(sd)
    assert p.ci95 == pytest.approx((mean - half, mean + half))
    assert p.excludes_zero() and "better" in verdict(p, "accuracy", "winner", "FFN")
    lower = verdict(p, "kd_loss", "winner", "FFN", higher_is_better=False)
    assert "winner is worse than FFN" in lower
    same = paired([1.0, 2.0, 3.0], [1.1, 1.9, 3.0])
    assert not same.excludes_zero() and "no difference detected" in verdict(same, "m", "a", "b")
    one = paired([1.0], [0.0])
    assert one.ci95 == (-math.inf, math.inf) and not one.excludes_zero()
    with pytest.raises(ValueError, match="equally long"):
        paired([1.0, 2.0], [1.0])


def _icc_reference(a):
    """ICC(3,1) as shared/statistics.md writes it, with plain loops."""
    n, k = len(a), len(a[0])
    grand = sum(map(sum, a)) / (n * k)
    rows = [sum(r) / k for r in a]
    cols = [sum(a[i][j] for i in range(n)) / n for j in range(k)]
    ssr = k * sum((r - grand) ** 2 for r in rows)
    ssc = n * sum((c - grand) ** 2 for c in cols)
    sst = sum((a[i][j] - grand) ** 2 for i in range(n) for j in range(k))
    sse = sst - ssr - ssc
    msr, mse = ssr / (n - 1), sse / ((n - 1) * (k - 1))
    return (msr - mse) / (msr + (k - 1) * mse)


def test_icc_matches_the_reference_and_its_extremes():
    rng = random.Random(0)
    for _ in range(20):
        a = [[rng.gauss(0, 1) for _ in range(3)] for _ in range(8)]
        assert icc_consistency(a) == pytest.approx(_icc_reference(a))
    # a seed shift applied to every candidate alike does not lower consistency
    base = [1.0, 2.0, 3.0, 4.0]
    assert icc_consistency([[v + s for s in (0.0, 5.0, -2.0)] for v in base]) == pytest.approx(1)
    noise = np.random.default_rng(1).normal(size=(200, 3))
    assert abs(icc_consistency(noise)) < 0.15
    with pytest.raises(ValueError, match="2 candidates x 2 seeds"):
        icc_consistency([[1.0, 2.0]])


def test_kendall_and_bootstrap():
    r = kendall([1, 2, 3, 4, 5], [2, 1, 3, 4, 5])
    assert r.tau == pytest.approx((9 - 1) / 10) and r.n == 5
    assert kendall([1, 2, 3], [3, 2, 1]).tau == pytest.approx(-1)
    rng = np.random.default_rng(0)
    a = (rng.random((3, 400)) < 0.8).astype(float)
    lo, hi = bootstrap_delta(a, a)
    assert lo == hi == 0.0
    b = a.copy()
    b[:, :40] = 0.0  # b is wrong on 40 examples a may get right
    lo, hi = bootstrap_delta(a, b)
    assert 0 < lo < (a - b).mean() < hi
