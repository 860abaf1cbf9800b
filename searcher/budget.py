"""Budgets: the parameter window, a measured latency budget, and the Pareto front of (score
up, latency down, params down).

- :class:`ParamCounter` counts a whole student: from a ``distill`` student configuration
  (embeddings, attention, head as ``distill.student.count_parameters`` counts them), or
  from a fixed non-MLP number plus ``mlpgraph.count_params`` per layer and stack (with
  each stack's LayerNorm, ``2 * hidden``).
- :class:`LatencyMeter` times a candidate's MLP stack (every layer, every stack,
  ``h = LayerNorm(h + f(h))``) compiled with ``backend`` (the pipeline's) on this machine,
  as the median of ``repeats`` forward runs on a fixed ``[tokens, hidden]`` input with
  ``threads`` torch threads (1 by default: CPU threads shared with workers make timings
  noisy). Layers are cached by canonical key.
  Measured time depends on the machine and its load, so a run with a latency budget is
  reproducible only through its journal (measurements are journaled and reused on resume);
  ``proxy="flops"`` uses a deterministic FLOP count instead.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import mlpgraph
from mlpgraph import MLPLayer
from mlpgraph.layer import graph_key

from .candidate import Candidate, seed_candidates
from .config import ConstraintSpec, resolve_space
from .errors import SearchConfigError

if TYPE_CHECKING:
    from .run_config import Pipeline

T = TypeVar("T")


# ------------------------------------------------------------------ parameters
class ParamCounter:
    """Total student parameters of a candidate: ``non_mlp`` plus every layer's MLP stacks."""

    def __init__(self, hidden: int, non_mlp: int) -> None:
        if hidden < 1 or non_mlp < 0:
            raise SearchConfigError("hidden/non_mlp_params", f"need hidden >= 1 and non-MLP "
                                    f"parameters >= 0, got {hidden} and {non_mlp}")
        self.hidden, self.non_mlp = hidden, non_mlp

    @classmethod
    def from_student_config(cls, config: Any) -> ParamCounter:
        """From a ``distill.config.StudentConfig`` or the name/path of one."""
        from distill import StudentConfig, count_parameters, load_config

        cfg = config if isinstance(config, StudentConfig) else load_config(config)
        parts = count_parameters(cfg)
        return cls(cfg.hidden, parts["total"] - parts["mlp"])

    def layer(self, gene: MLPLayer) -> int:
        return gene.params(self.hidden)

    def __call__(self, cand: Candidate) -> int:
        return self.non_mlp + sum(self.layer(g) for g in cand.layers)


@dataclass(frozen=True)
class ParamWindow:
    """Allowed total parameters, inclusive (the paper: 15M..16M)."""

    lo: int
    hi: int

    def __post_init__(self) -> None:
        if not 0 <= self.lo <= self.hi:
            raise SearchConfigError("param_window", f"({self.lo}, {self.hi}) must satisfy "
                                    "0 <= low <= high, e.g. (15_000_000, 16_000_000)")

    def __contains__(self, n: int) -> bool:
        return self.lo <= n <= self.hi


# --------------------------------------------------------------------- latency
class LatencyMeter:
    """Latency of a candidate's MLP stack in milliseconds (or MFLOPs with ``proxy="flops"``)."""

    def __init__(self, hidden: int, *, tokens: int = 512, repeats: int = 9, warmup: int = 2,
                 backend: str = "eager", proxy: str = "measure", threads: int = 1,
                 cache: dict[str, float] | None = None,
                 on_measure: Callable[[str, float], None] | None = None) -> None:
        if proxy not in ("measure", "flops"):
            raise SearchConfigError("latency_proxy", f"{proxy!r} is not 'measure' or 'flops'")
        self.hidden, self.tokens, self.repeats, self.warmup = hidden, tokens, repeats, warmup
        self.backend, self.proxy, self.threads = backend, proxy, threads
        self.cache: dict[str, float] = dict(cache or {})
        self.on_measure = on_measure
        self.measured = 0  # cache misses

    def key(self, gene: MLPLayer) -> str:
        return (f"{self.proxy}|{graph_key(gene.graph)}|s{gene.stacks}|k{gene.d_inner(self.hidden)}"
                f"|h{self.hidden}|t{self.tokens}|{self.backend}|j{self.threads}")

    def layer(self, gene: MLPLayer) -> float:
        key = self.key(gene)
        hit = self.cache.get(key)
        if hit is None:
            hit = self._flops(gene) if self.proxy == "flops" else self._measure(gene)
            self.cache[key] = hit
            self.measured += 1
            if self.on_measure is not None:
                self.on_measure(key, hit)
        return hit

    def __call__(self, cand: Candidate) -> float:
        return sum(self.layer(g) for g in cand.layers)

    def _flops(self, gene: MLPLayer) -> float:
        k = gene.d_inner(self.hidden)
        one = mlpgraph.count_flops(gene.graph, d_model=self.hidden, d_inner=k, tokens=self.tokens)
        return gene.stacks * (one + 8 * self.hidden * self.tokens) / 1e6  # + LayerNorm/residual

    def _measure(self, gene: MLPLayer) -> float:
        import torch

        h, k = self.hidden, gene.d_inner(self.hidden)
        fns = [mlpgraph.compile(gene.graph, h, k, self.backend, seed=i)
               for i in range(gene.stacks)]
        norms = [torch.nn.LayerNorm(h) for _ in range(gene.stacks)]
        x = torch.randn(self.tokens, h, generator=torch.Generator().manual_seed(0))
        times = []
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                for i in range(self.warmup + self.repeats):
                    start = time.perf_counter()
                    y = x
                    for f, ln in zip(fns, norms, strict=True):
                        y = ln(y + f(y))
                    if i >= self.warmup:
                        times.append(time.perf_counter() - start)
        finally:
            torch.set_num_threads(before)
        return 1000 * statistics.median(times)


# ----------------------------------------------------------------- constraints
@dataclass
class Constraints:
    """The feasibility test a controller applies to every candidate before proposing it."""

    params: ParamCounter | None = None
    window: ParamWindow | None = None
    latency: LatencyMeter | None = None
    max_latency: float | None = None
    checked: int = 0
    rejected_params: int = 0
    rejected_latency: int = 0
    info: dict[str, dict[str, float | int | None]] = field(default_factory=dict)

    def measure(self, cand: Candidate) -> dict[str, float | int | None]:
        """``{"params": ..., "latency": ...}`` (``None`` where not configured)."""
        hit = self.info.get(cand.id)
        if hit is None:
            n = self.params(cand) if self.params is not None else None
            lat = None
            if self.latency is not None and (self.window is None or n is None or n in self.window):
                lat = self.latency(cand)
            hit = {"params": n, "latency": lat}
            if len(self.info) > 50_000:
                self.info.clear()
            self.info[cand.id] = hit
        return hit

    def __call__(self, cand: Candidate) -> bool:
        self.checked += 1
        m = self.measure(cand)
        if self.window is not None and m["params"] is not None and m["params"] not in self.window:
            self.rejected_params += 1
            return False
        if self.max_latency is not None and m["latency"] is not None and \
                m["latency"] > self.max_latency:
            self.rejected_latency += 1
            return False
        return True

    @classmethod
    def from_spec(cls, spec: ConstraintSpec, *, cache: dict[str, float] | None = None,
                  on_measure: Callable[[str, float], None] | None = None) -> Constraints:
        """The test a :class:`~searcher.config.ConstraintSpec` describes (``cache`` and
        ``on_measure``: measured latencies reused from, and reported to, a journal)."""
        if spec.student_config is not None:
            params = ParamCounter.from_student_config(spec.student_config)
            if spec.hidden is not None and spec.hidden != params.hidden:
                params = ParamCounter(spec.hidden, params.non_mlp)
        else:
            params = ParamCounter(int(spec.hidden or 0), spec.non_mlp_params)
        meter = None
        if spec.latency_budget is not None:
            meter = LatencyMeter(params.hidden, tokens=spec.latency_tokens,
                                 repeats=spec.latency_repeats, backend=spec.latency_backend,
                                 proxy=spec.latency_proxy, threads=spec.latency_threads,
                                 cache=cache, on_measure=on_measure)
        window = None if spec.param_window is None else ParamWindow(*spec.param_window)
        return cls(params, window, meter, spec.latency_budget)

    def stats(self) -> dict[str, int]:
        return {"checked": self.checked, "rejected_params": self.rejected_params,
                "rejected_latency": self.rejected_latency}

    def load_stats(self, d: dict[str, int]) -> None:
        self.checked = int(d.get("checked", 0))
        self.rejected_params = int(d.get("rejected_params", 0))
        self.rejected_latency = int(d.get("rejected_latency", 0))


# ---------------------------------------------------------------------- pareto
def dominates(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere (all maximized)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and \
        any(x > y for x, y in zip(a, b, strict=True))


def pareto_front(items: Sequence[T], objectives: Callable[[T], Sequence[Any]]) -> list[T]:
    """The items no other item dominates, in input order. ``objectives`` returns values to
    *maximize* (negate those to minimize); values may be tuples (compared lexicographically)."""
    vals = [tuple(objectives(it)) for it in items]
    return [it for i, it in enumerate(items)
            if not any(dominates(vals[j], vals[i]) for j in range(len(items)) if j != i)]


# ------------------------------------------------------------- a run's constraints
def derive_constraints(pipeline: Pipeline, student_config: Any
                       ) -> tuple[ConstraintSpec, list[str]]:
    """The constraints of a run (see :class:`~searcher.config.BudgetSpec`) for
    ``student_config``, and the ``"s x ratio"`` of the standard FFNs that define the window."""
    space = resolve_space(pipeline.space)
    counter = ParamCounter.from_student_config(student_config)
    lo, hi = pipeline.budget.mlp_width
    ffn_only = replace(space, seed_expressions=space.seed_expressions[:1])  # GLU seeds of a
    #   wide space are 1.5x wider per unit of s x ratio: they must not widen the window
    seeds = [c for c in seed_candidates(ffn_only, pipeline.student.num_layers)
             if lo <= float(c.layers[0].stacks * c.layers[0].ratio) <= hi]
    if not seeds:
        raise SearchConfigError("budget.mlp_width", f"({lo}, {hi}) admits no standard FFN: "
                                "s x ratio takes values such as 0.25, 0.5, 1, 2; widen it")
    sizes = [counter(c) for c in seeds]
    proxy = pipeline.budget.latency or "flops"
    latency = None
    if pipeline.budget.latency is not None:
        meter = LatencyMeter(counter.hidden, backend=pipeline.backend, proxy=proxy)
        latency = pipeline.budget.latency_factor * max(meter(c) for c in seeds)
    spec = ConstraintSpec(student_config=None, hidden=counter.hidden,
                          non_mlp_params=counter.non_mlp, param_window=(min(sizes), max(sizes)),
                          latency_budget=latency, latency_proxy=proxy,
                          latency_backend=pipeline.backend)
    return spec, [f"{c.layers[0].stacks}x{c.layers[0].ratio}" for c in seeds]
