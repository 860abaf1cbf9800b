"""Supernet warm-up for the main job: general KD, then task KD, one random sub-network per step.

Before stage 1 the supernet is warmed up from scratch (embeddings initialized from the
pretrained teacher); a stage with ``rewarm`` continues from the previous checkpoint with that
stage's expressions. Each step trains one sub-network drawn by :func:`supernet_sampler`: per
layer the stage's expression at a random ``(s, ratio)`` of the space, inside the parameter
window. The KD itself is :func:`distill.pipeline.kd_phase`.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import mlpgraph
from distill.loop import TrainConfig
from distill.losses import KDWeights
from distill.pipeline import Phase, kd_phase, save_student
from distill.supernet import Supernet
from distill.teacher import load_teacher
from mlpgraph import Graph, Space
from mlpgraph.paper import PAPER_EXPRESSIONS, STANDARD_FFN

from .budget import ParamCounter
from .candidate import Candidate, LayerGene
from .config import resolve_space
from .errors import SearchError
from .graphedit import Grower
from .run_config import WarmupSpec

if TYPE_CHECKING:
    from .run import Context

DONE = "warmup.json"
Sampler = Callable[[random.Random], list[tuple[Graph, int, int]]]


def expression_pool(space: Space, count: int, seed: int) -> list[Graph]:
    """The warm-up's pool: the standard FFN, the space's other seed expressions (a wide
    space's GLUs and squared ReLU), the paper's six searched MLPs that are in ``space``, and
    ``count`` random members of the space (drawn from ``seed``)."""
    pool: list[Graph] = []
    for e in (STANDARD_FFN, *space.seed_expressions, *PAPER_EXPRESSIONS):
        g = mlpgraph.parse(e)
        if g not in pool and not space.violations(g):
            pool.append(g)
    grower, target = Grower(space, random.Random(seed)), len(pool) + count
    while len(pool) < target:
        g = grower.random_member()
        if g not in pool:
            pool.append(g)
    return pool


def supernet_sampler(space: Space, graphs: Sequence[Graph], hidden: int,
                     feasible: Callable[[Candidate], bool] | None = None,
                     tries: int = 50, pool: Sequence[Graph] = (),
                     own_share: float = 1.0) -> Sampler:
    """``sampler(rng) -> [(graph, s, d_inner)]`` for supernet warm-up: per layer a random
    ``(s, ratio)`` of the space and, with probability ``own_share`` (or when ``pool`` is
    empty), that layer's graph in ``graphs``, else a uniform draw from ``pool``; resampled
    (up to ``tries`` times) until ``feasible`` accepts it."""

    def pick(rng: random.Random, own: Graph) -> Graph:
        return own if not pool or rng.random() < own_share else rng.choice(list(pool))

    def sample(rng: random.Random) -> list[tuple[Graph, int, int]]:
        cand = None
        for _ in range(tries):
            cand = Candidate(tuple(LayerGene(pick(rng, g), rng.choice(space.stacks),
                                             rng.choice(space.ratios)) for g in graphs))
            if feasible is None or feasible(cand):
                break
        assert cand is not None
        return [(g.graph, g.stacks, g.d_inner(hidden)) for g in cand.layers]

    return sample


def warm_supernet(ctx: Context, spec: WarmupSpec, out: Path, *, start: Path | None,
                  graphs: list[Graph], label: str) -> Path:
    """Warm up (or re-warm, from ``start``) the supernet into ``out``; reuse a finished one."""
    if (out / DONE).is_file():
        ctx.log(f"{label}: reusing the warmed supernet at {out}")
        return out
    p, t0 = ctx.pipeline, time.perf_counter()
    torch.manual_seed(p.seed)
    net = Supernet(ctx.student_config, seed=p.seed) if start is None else \
        Supernet.from_pretrained(start)
    space = resolve_space(p.space)
    pool = expression_pool(space, spec.random_members, p.seed) if spec.pool == "mixed" else []
    net.add_pools([*graphs, *pool])
    counter = ParamCounter.from_student_config(ctx.student_config)
    lo, hi = ctx.constraints.param_window
    sampler = supernet_sampler(space, graphs, net.hidden, lambda c: lo <= counter(c) <= hi,
                               pool=pool, own_share=spec.own_share)
    phases = [(Phase("general", KDWeights.pretraining(), _train(
                   ctx, spec, out, "general", spec.general_steps, spec.general_lr, label)),
               ctx.outputs["unlabeled"]),
              (Phase("task", KDWeights.task(), _train(
                  ctx, spec, out, "task", spec.task_steps, spec.task_lr, label)),
               ctx.outputs["train"])]
    fit, kd, history = start, None, {}
    for phase, outputs in phases:
        if phase.train.max_steps == 0:
            continue
        init = load_teacher(ctx.base_teacher) if fit is None and phase.name == "general" else None
        res, kd = kd_phase(net, outputs, phase, fit_dense=fit, init_from=init, sampler=sampler)
        if res.diverged:
            raise SearchError(f"{label}: {phase.name} KD of the supernet diverged at step "
                              f"{res.diverged_step}; lower warmup {phase.name}_lr (was "
                              f"{phase.train.lr})")
        fit = kd.fit_dense.state_dict()
        history[phase.name] = {"steps": res.steps, "final_loss": res.final_loss,
                               "seconds": res.wall_seconds}
    save_student(out, net, kd)
    for phase, _ in phases:
        shutil.rmtree(out / f"ckpt-{phase.name}", ignore_errors=True)
    (out / DONE).write_text(json.dumps({
        "spec": spec.dump(), "expressions": [str(g) for g in graphs],
        "pool": [str(g) for g in pool],
        "start": None if start is None else str(start), "phases": history,
        "seconds": time.perf_counter() - t0}, indent=2) + "\n")
    return out


def _train(ctx: Context, spec: WarmupSpec, out: Path, name: str, steps: int, lr: float,
           label: str) -> TrainConfig:
    """The schedule of one warm-up phase, checkpointed in ``out/ckpt-<name>``."""
    return TrainConfig(max_steps=steps, batch_size=spec.batch_size, lr=lr,
                       seed=ctx.pipeline.seed, device=ctx.pipeline.device,
                       progress=ctx.progress, desc=f"{label} {name} KD",
                       checkpoint_dir=out / f"ckpt-{name}", checkpoint_every=100)
