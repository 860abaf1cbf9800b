"""Supernet warm-up for the main job: general KD, then task KD, one random sub-network per step.

Before stage 1 the supernet is warmed up from scratch (embeddings initialized from the
pretrained teacher); a stage with ``rewarm`` continues from the previous checkpoint with that
stage's expressions. Each step trains one sub-network drawn by :func:`supernet_sampler`: per
layer the stage's expression at a random ``(s, ratio)`` of the space, inside the parameter
window. The KD itself is :func:`distill.warm_up_supernet`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import mlpgraph
from distill import TrainingError, WarmupPhase, warm_up_supernet
from mlpgraph import STANDARD_FFN, Graph, MLPLayer, Space
from mlpgraph.paper import PAPER_EXPRESSIONS

from .budget import ParamCounter
from .candidate import Candidate
from .config import resolve_space
from .context import Context
from .errors import SearchError
from .graphedit import Grower
from .run_config import WarmupSpec

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
            cand = Candidate(tuple(MLPLayer(pick(rng, g), rng.choice(space.stacks),
                                             rng.choice(space.ratios)) for g in graphs))
            if feasible is None or feasible(cand):
                break
        assert cand is not None
        return [(g.graph, g.stacks, g.d_inner(hidden)) for g in cand.layers]

    return sample


def warm_supernet(ctx: Context, spec: WarmupSpec, out: Path, *, start: Path | None,
                  graphs: list[Graph], label: str) -> Path:
    """Warm up (or re-warm, from ``start``) the supernet into ``out``; reuse a finished one.
    The KD is :func:`distill.warm_up_supernet`; here: which expressions and shapes."""
    if (out / DONE).is_file():
        ctx.log(f"{label}: reusing the warmed supernet at {out}")
        return out
    p, t0 = ctx.pipeline, time.perf_counter()
    teacher, caches = ctx.prepared()
    space = resolve_space(p.space)
    pool = expression_pool(space, spec.random_members, p.seed) if spec.pool == "mixed" else []
    counter = ParamCounter.from_student_config(ctx.student_config)
    lo, hi = ctx.constraints.param_window
    hidden = ctx.student_config.hidden
    sampler = supernet_sampler(space, graphs, hidden, lambda c: lo <= counter(c) <= hi,
                               pool=pool, own_share=spec.own_share)
    phases = [WarmupPhase("general", caches.unlabeled, spec.general_steps, spec.general_lr,
                          spec.batch_size),
              WarmupPhase("task", caches.train, spec.task_steps, spec.task_lr,
                          spec.batch_size)]
    try:
        history = warm_up_supernet(out, phases, sampler, config=ctx.student_config,
                                   start=start, pools=[*graphs, *pool],
                                   base_teacher=teacher.base, seed=p.seed, device=p.device,
                                   progress=ctx.progress, label=label, backend=p.backend)
    except TrainingError as e:
        raise SearchError(str(e)) from None
    (out / DONE).write_text(json.dumps({
        "spec": spec.dump(), "expressions": [str(g) for g in graphs],
        "pool": [str(g) for g in pool],
        "start": None if start is None else str(start), "phases": history,
        "seconds": time.perf_counter() - t0}, indent=2) + "\n")
    return out
