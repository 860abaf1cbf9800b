"""Latency measured interleaved, and the final step's paired latency comparison, checked
against models whose forward time is known (they sleep)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from torch import nn

from distill import interleaved_latency, measure_latency
from searcher.final import latency_comparison


class Sleeper(nn.Module):
    """A 'model' whose forward takes ``ms`` milliseconds."""

    def __init__(self, ms: float) -> None:
        super().__init__()
        self.ms = ms
        self.config = SimpleNamespace(vocab_size=10, max_position=16)
        self.calls: list[tuple[int, int]] = []

    def forward(self, ids, mask):  # noqa: ANN001, ANN201 - the models' calling convention
        self.calls.append(tuple(ids.shape))
        time.sleep(self.ms / 1000)
        return ids


def test_measure_latency_is_the_median_forward_time():
    m = Sleeper(5.0)
    ms = measure_latency(m, (2, 64), repeats=5)
    assert 4.9 <= ms <= 9.0
    assert set(m.calls) == {(2, 16)}  # the sequence is capped at the model's positions
    assert len(m.calls) == 2 + 5  # warm-up runs, then the timed ones


def test_interleaved_rounds_and_the_paired_ratio():
    fast, slow = Sleeper(20.0), Sleeper(40.0)
    sample = interleaved_latency({"winner": fast, "baseline": slow}, (1, 32), seq=8, rounds=3,
                                 repeats=2)
    assert [len(sample.rounds[n][b]) for n in ("winner", "baseline") for b in (1, 32)] == \
        [3, 3, 3, 3]
    assert sample.seq == 8 and sample.threads >= 1 and len(sample.load) == 2
    for c in latency_comparison(sample, "winner", "baseline"):
        ratios = [a / b for a, b in zip(sample.rounds["winner"][c.batch],
                                        sample.rounds["baseline"][c.batch], strict=True)]
        assert c.change == pytest.approx(sum(ratios) / len(ratios) - 1)  # the plain mean
        assert c.change == pytest.approx(-0.5, abs=0.15) and c.rounds == 3
        assert c.ci95[0] <= c.change <= c.ci95[1] < 0
        assert c.verdict.endswith("winner is faster")
    same = latency_comparison(sample, "winner", "winner")
    assert all(c.change == 0 and "no difference detected" in c.verdict for c in same)
