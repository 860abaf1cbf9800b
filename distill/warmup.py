"""Warm-up KD of a weight-sharing supernet: general KD, then task KD, one sampled
sub-network per step.

:func:`warm_up_supernet` builds (or continues) the :class:`~distill.supernet.Supernet`,
adds the expression pools its sub-networks may use, runs each :class:`WarmupPhase` with
:func:`distill.pipeline.kd_phase` and saves the result as a model folder (weights and the
trained ``fit_dense``). What a step trains is the caller's choice: a ``sampler(rng)`` that
returns one ``(graph, stacks, d_inner)`` per layer (the search draws inside its space and
parameter window).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mlpgraph import Graph

from .errors import TrainingError
from .loop import TrainConfig
from .losses import KDWeights
from .pipeline import Phase, kd_phase, save_student
from .supernet import Supernet
from .teacher import load_teacher
from .teacher_cache import TeacherOutputs
from .train import Sampler

#: the loss terms of each warm-up phase kind
WEIGHTS = {"general": KDWeights.pretraining, "task": KDWeights.task}


@dataclass(frozen=True)
class WarmupPhase:
    """One phase: ``name`` "general" (pretrained teacher, unlabeled text: attention and
    hidden-state terms) or "task" (fine-tuned teacher, training split: every term), its
    teacher ``outputs``, steps, learning rate and batch size."""

    name: str
    outputs: TeacherOutputs
    steps: int
    lr: float
    batch_size: int = 32


def warm_up_supernet(out: str | Path, phases: Sequence[WarmupPhase], sampler: Sampler, *,
                     config: Any = None, start: str | Path | None = None,
                     pools: Sequence[Graph] = (), base_teacher: str | Path | None = None,
                     seed: int = 0, device: str | None = None, progress: bool = True,
                     label: str = "warm-up", backend: str = "eager"
                     ) -> dict[str, dict[str, Any]]:
    """Warm up a supernet into the model folder ``out``; return each phase's steps, final
    loss and seconds.

    The supernet is new (``config``: a StudentConfig; its embeddings and ``fit_dense`` are
    initialized from ``base_teacher`` before the first general phase) or continues the one
    saved at ``start``. ``pools``: the expressions sub-networks may use besides each
    layer's own. Each phase checkpoints into ``out/ckpt-<name>`` (a killed warm-up resumes
    there) and the checkpoints are removed at the end. ``backend``: the mlpgraph backend the
    sub-networks' MLPs are compiled with. Raises :class:`TrainingError` when a
    phase diverges."""
    out = Path(out)
    torch.manual_seed(seed)
    net = Supernet(config, seed=seed, backend=backend) if start is None else \
        Supernet.from_pretrained(start, backend=backend)
    net.add_pools(list(pools))
    fit, kd, history = (None if start is None else start), None, {}
    for phase in phases:
        if phase.steps == 0:
            continue
        init = (load_teacher(base_teacher) if fit is None and phase.name == "general"
                and base_teacher is not None else None)
        train = TrainConfig(max_steps=phase.steps, batch_size=phase.batch_size, lr=phase.lr,
                            seed=seed, device=device, progress=progress,
                            desc=f"{label} {phase.name} KD",
                            checkpoint_dir=out / f"ckpt-{phase.name}", checkpoint_every=100)
        res, kd = kd_phase(net, phase.outputs, Phase(phase.name, WEIGHTS[phase.name](), train),
                           fit_dense=fit, init_from=init, sampler=sampler)
        if res.diverged:
            raise TrainingError(f"{label}: {phase.name} KD of the supernet diverged at step "
                                f"{res.diverged_step}; lower the warm-up {phase.name}_lr (was "
                                f"{phase.lr})")
        fit = kd.fit_dense.state_dict()
        history[phase.name] = {"steps": res.steps, "final_loss": res.final_loss,
                               "seconds": res.wall_seconds}
    save_student(out, net, kd)
    for phase in phases:
        shutil.rmtree(out / f"ckpt-{phase.name}", ignore_errors=True)
    return history


__all__ = ["WEIGHTS", "WarmupPhase", "warm_up_supernet"]
