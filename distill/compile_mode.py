"""Compile modes for training students: the whole forward (``Student.compile_forward``)
or forward and loss as one function (:func:`compiled_kd_step`).

Both go through ``torch.compile`` with :func:`compile_options`: Inductor's
``fallback_random`` is on, so dropout draws its masks with torch's own RNG (the eager
model's masks for a seed; on CPU several times cheaper than Inductor's per-element
generator). Compiled artifacts are cached on disk by Inductor (FX graph cache) and
AOTAutograd under ``TORCHINDUCTOR_CACHE_DIR``, so a second process compiling the same
structure at the same shapes pays far less (``benchmarks/bench_student_step.py
--cold-warm`` measures both).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["compile_options", "compiled_kd_step"]


def compiled_kd_step(model: nn.Module, loss: Callable[..., Mapping[str, torch.Tensor]],
                     **options: Any) -> Callable[..., Mapping[str, torch.Tensor]]:
    """``step(input_ids, attention_mask, targets) -> loss(model(...), targets, mask)``
    compiled with ``torch.compile`` as one function (``options`` pass through), so the
    student's forward and the loss (e.g. a :class:`distill.losses.KDLoss`) are one graph
    and their backward one compiled graph; call ``.backward()`` on the result's total."""
    def step(input_ids: torch.Tensor, attention_mask: torch.Tensor,
             targets: Any) -> Mapping[str, torch.Tensor]:
        return loss(model(input_ids, attention_mask), targets, attention_mask)

    return torch.compile(step, **compile_options(options))


def compile_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``torch.compile`` keywords for a student: ``options`` with Inductor's
    ``fallback_random`` on unless set (see :meth:`Student.compile_forward`)."""
    out = dict(options)
    out["options"] = {"fallback_random": True, **out.get("options", {})}
    return out
