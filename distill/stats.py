"""Comparing noisy numbers honestly: paired confidence intervals, the consistency of a fitness
(ICC), its validity (rank correlation with the real outcome), and a verdict in words.

The protocol (``shared/statistics.md``): compare two models on the same seeds (the same data
order and, where shapes match, the same initial weights); report the mean of the per-seed
differences with a 95% interval from the t distribution; call something "better" only when
the interval excludes zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Paired:
    """``a - b`` over paired seeds: the mean difference and its 95% t interval."""

    a: list[float]  # per seed
    b: list[float]  # per seed, same order
    delta_mean: float
    ci95: tuple[float, float]
    sd: float  # of the per-seed differences

    @property
    def n(self) -> int:
        return len(self.a)

    def excludes_zero(self) -> bool:
        lo, hi = self.ci95
        return lo > 0 or hi < 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d


def paired(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Paired:
    """Mean of ``a[s] - b[s]`` and its ``level`` interval (t with S-1 degrees of freedom).
    One seed gives an infinite interval: one seed proves nothing."""
    from scipy import stats

    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError(f"paired() needs two equally long, non-empty lists (one value per "
                         f"seed), got {len(x)} and {len(y)}")
    d = x - y
    mean = float(d.mean())
    if len(d) < 2:
        return Paired(x.tolist(), y.tolist(), mean, (-math.inf, math.inf), math.nan)
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1)) * sd / math.sqrt(len(d))
    return Paired(x.tolist(), y.tolist(), mean, (mean - half, mean + half), sd)


def verdict(p: Paired, metric: str, a: str, b: str, *, higher_is_better: bool = True,
            digits: int = 4) -> str:
    """A sentence that says exactly what the interval says."""
    lo, hi = p.ci95
    ci = f"[{lo:+.{digits}f}, {hi:+.{digits}f}]"
    head = (f"{metric}: {a} - {b} = {p.delta_mean:+.{digits}f} over {p.n} paired seed(s), "
            f"95% CI {ci}")
    if not p.excludes_zero():
        return f"{head}: no difference detected (the interval contains 0)"
    better = (p.delta_mean > 0) == higher_is_better
    return f"{head}: {a} is {'better' if better else 'worse'} than {b} (the interval excludes 0)"


def icc_consistency(table: Sequence[Sequence[float]]) -> float:
    """ICC(3,1): two-way mixed, consistency, single measure, of ``table[i][j]`` (candidate
    ``i``, seed ``j``). 1: candidates keep their order across seeds; <= 0: the order is noise."""
    a = np.asarray(table, float)
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 2:
        raise ValueError(f"ICC needs at least 2 candidates x 2 seeds, got shape {a.shape}")
    n, k = a.shape
    grand = a.mean()
    ssr = k * ((a.mean(axis=1) - grand) ** 2).sum()
    ssc = n * ((a.mean(axis=0) - grand) ** 2).sum()
    sse = ((a - grand) ** 2).sum() - ssr - ssc
    msr, mse = ssr / (n - 1), sse / ((n - 1) * (k - 1))
    return float((msr - mse) / (msr + (k - 1) * mse))


@dataclass(frozen=True)
class RankAgreement:
    """Kendall's tau between two scorings of the same candidates, and its p-value."""

    tau: float
    p_value: float
    n: int


def kendall(x: Sequence[float], y: Sequence[float]) -> RankAgreement:
    """Kendall's tau-b of ``x`` and ``y`` (same candidates, same order)."""
    from scipy import stats

    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"kendall() needs two equally long lists of >= 3 values, got "
                         f"{len(x)} and {len(y)}")
    r = stats.kendalltau(x, y)
    return RankAgreement(float(r.statistic), float(r.pvalue), len(x))


def bootstrap_delta(a: np.ndarray, b: np.ndarray, *, reps: int = 2000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float]:
    """Interval of ``mean(a) - mean(b)`` resampling seeds and examples together: ``a``, ``b``
    are ``[seeds, examples]`` per-example scores (e.g. 0/1 correctness) of two models on the
    same examples."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"bootstrap_delta() needs two [seeds, examples] arrays of one shape, "
                         f"got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    s, m = a.shape
    out = np.empty(reps)
    for r in range(reps):
        si, ei = rng.integers(0, s, s), rng.integers(0, m, m)
        out[r] = (a[np.ix_(si, ei)] - b[np.ix_(si, ei)]).mean()
    tail = (1 - level) / 2
    return float(np.quantile(out, tail)), float(np.quantile(out, 1 - tail))
