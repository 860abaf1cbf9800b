"""Forward latency of whole models, measured so that comparisons are fair.

:func:`interleaved_latency` times several models in rounds (every model once per round, in
the same order), so a change of machine load during the measurement hits every model alike;
each round gives a paired sample. It records the load average while it measured, so a
number taken on a busy machine says so.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn


@torch.no_grad()
def measure_latency(model: nn.Module, batch: tuple[int, int] = (8, 64), repeats: int = 10,
                    device: str | torch.device = "cpu", warmup: int = 2) -> float:
    """Median forward time in milliseconds on a fixed random batch ``(batch, seq)`` (``seq``
    capped at the model's positions)."""
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", 1000)
    most = getattr(config, "max_position", getattr(config, "max_position_embeddings", batch[1]))
    shape = (batch[0], min(batch[1], most))
    ids = torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)
    model.to(device).eval()
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        model(ids, mask)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@dataclass
class LatencySample:
    """Per model and batch size: one median (ms) per round, and the conditions."""

    rounds: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    seq: int = 64
    device: str = "cpu"
    threads: int = 1
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after

    def median(self, name: str, batch: int) -> float:
        return statistics.median(self.rounds[name][batch])


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def interleaved_latency(models: Mapping[str, nn.Module], batches: Sequence[int] = (1, 32), *,
                        seq: int = 64, rounds: int = 5, repeats: int = 5,
                        device: str | torch.device = "cpu") -> LatencySample:
    """Every model's median forward time at each batch size (sequence ``seq``), over
    ``rounds`` interleaved rounds (see the module doc)."""
    out = LatencySample({n: {b: [] for b in batches} for n in models}, seq, str(device),
                        torch.get_num_threads())
    before = _load()
    for _ in range(rounds):
        for name, model in models.items():
            for b in batches:
                reps = repeats if b <= 8 else max(2, repeats // 2)
                out.rounds[name][b].append(measure_latency(model, (b, seq), reps, device))
    out.load = (before, _load())
    return out


__all__ = ["LatencySample", "interleaved_latency", "measure_latency"]
