"""The search configuration: one commented dataclass, validated field by field."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpgraph import SPACES, Space

from .candidate import Candidate
from .controller import CONTROLLERS
from .errors import CandidateError, SearchConfigError
from .mutations import GENES, STAGE_GENES
from .scoring import budget_to_jsonable
from .workers import BACKENDS

#: fields that may differ between a run and its resumption: where candidates run (no effect
#: on results), and the budget (a larger ``evaluations`` continues a finished run)
RESUMABLE_CHANGES = frozenset({"workers", "backend", "address", "evaluations", "top_k",
                               "max_proposal_factor"})


@dataclass
class SearchConfig:
    """Everything a search run needs besides the scorer and the run folder."""

    # ---- what is searched
    space: str | Space = "paper"  # a name in mlpgraph.SPACES ("paper", "wide"), a Space JSON
    #                               file, or a Space object
    num_layers: int = 6  # Transformer layers; one (expression, s, ratio) gene each
    stage: int = 1  # 1: expression, s and ratio; 2: expressions only; 3: s and ratio only
    genes: tuple[str, ...] | None = None  # explicit mask overriding `stage` (see GENES)
    base: str | dict | None = None  # seed candidate (JSON file or dict), e.g. the stage-1
    #                                 winner for stages 2 and 3; None: the space's seed
    #                                 expressions (the standard FFN) at every (s, ratio)
    # ---- the parameter window (the paper's only constraint) and the latency budget
    student_config: str | None = "efficientbert_paper"  # distill config (name or JSON path)
    #                 whose embeddings/attention/head are counted; None: use the two below
    hidden: int | None = None  # model width d (required when student_config is None)
    non_mlp_params: int = 0  # parameters outside the MLPs when student_config is None
    param_window: tuple[int, int] | None = (15_000_000, 16_000_000)  # inclusive, whole student
    latency_budget: float | None = None  # max MLP-stack latency (ms; MFLOPs with "flops")
    latency_proxy: str = "measure"  # "measure" (median wall time here) or "flops" (exact)
    latency_tokens: int = 512  # rows of the timed input
    latency_repeats: int = 9  # timed forward runs per layer (median)
    latency_threads: int = 1  # torch threads while timing (the deployment's thread count)
    # ---- the controller
    controller: str = "evolution"  # "evolution", "paper" or "random"
    evaluations: int = 100  # budget: distinct candidates scored (duplicates are free)
    batch_size: int = 4  # proposals per step; results depend on it, not on `workers`
    population: int = 16  # evolution: population size (all islands together)
    sample_size: int = 4  # evolution: tournament size
    islands: int = 1  # evolution: islands (1 = none)
    migration_interval: int = 0  # evolution: children between ring migrations (0 = never)
    crossover_prob: float = 0.0  # evolution: chance a child comes from crossover
    crossover: str = "genes"  # "genes" (uniform per layer gene) or "subtree"
    max_mutations: int = 3  # paper controller: 1..max_mutations mutations per proposal
    mutation_weights: dict[str, float] = field(default_factory=dict)  # name -> weight
    seed: int = 0  # every random choice of the run derives from it
    dedupe_fingerprint: bool = True  # also dedupe by functional fingerprint
    # ---- where and how candidates are scored
    workers: int = 1  # parallel scorer calls
    backend: str = "local"  # "local" (spawn processes), "ray", or "inline" (this process)
    address: str | None = None  # Ray cluster address (None: start a local Ray)
    timeout: float | None = None  # seconds per scorer call before it is killed as failed
    score_budget: Any = None  # passed to the scorer (e.g. distill.score.ScoreBudget); its
    #                           kd_steps is replaced per rung when `rungs` is given
    rungs: tuple[int, ...] = ()  # progressive hurdles: KD steps per rung, e.g. (100, 400);
    #                              () = one scoring call with `score_budget` as given
    hurdle_quantile: float = 0.5  # go on to the next rung when >= this quantile of earlier
    hurdle_min_history: int = 4  # everyone goes on until a rung has this many scores
    fail_fast: bool = True  # stop (journaling nothing of that step) when every evaluation of
    #                         the first step fails: the scorer itself is broken
    # ---- bookkeeping
    top_k: int = 10  # best candidates listed in the result
    max_proposal_factor: int = 20  # stop after evaluations * factor proposals (duplicates)

    # ------------------------------------------------------------- derived
    def resolve_space(self) -> Space:
        if isinstance(self.space, Space):
            return self.space
        if self.space in SPACES:
            return SPACES[self.space]
        path = Path(self.space)
        if path.suffix == ".json" and path.is_file():
            return Space.from_json(path.read_text(encoding="utf-8"))
        raise SearchConfigError("space", f"{self.space!r} is neither a space name "
                                f"({', '.join(sorted(SPACES))}) nor a Space JSON file")

    def gene_mask(self) -> frozenset[str]:
        if self.genes is not None:
            return frozenset(self.genes)
        return STAGE_GENES[self.stage]

    def base_candidate(self) -> Candidate | None:
        if self.base is None:
            return None
        try:
            if isinstance(self.base, dict):
                return Candidate.from_dict(self.base)
            return Candidate.from_json(Path(self.base).read_text(encoding="utf-8"))
        except (OSError, CandidateError) as e:
            raise SearchConfigError("base", f"cannot load the base candidate {self.base!r:.80}: "
                                    f"{e}") from None

    # ---------------------------------------------------------- validation
    def validate(self) -> SearchConfig:
        """Raise :class:`SearchConfigError` naming the first bad field; return self."""
        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise SearchConfigError(name, f"{name}={getattr(self, name)!r} {why}")

        space = self.resolve_space()
        need(self.num_layers >= 1, "num_layers", "must be >= 1")
        need(self.stage in STAGE_GENES, "stage", "must be 1, 2 or 3")
        if self.genes is not None:
            need(bool(self.genes) and set(self.genes) <= set(GENES), "genes",
                 f"must be a non-empty subset of {GENES}")
        need(self.controller in CONTROLLERS, "controller", f"must be one of {sorted(CONTROLLERS)}")
        need(self.backend in BACKENDS, "backend", f"must be one of {BACKENDS}")
        for name in ("evaluations", "batch_size", "population", "sample_size", "islands",
                     "workers", "max_mutations", "top_k", "max_proposal_factor",
                     "latency_tokens", "latency_repeats", "latency_threads"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name,
                 "must be a positive integer")
        need(self.student_config is not None or (self.hidden or 0) >= 1, "hidden",
             "must be a positive integer when student_config is None")
        if self.param_window is not None:
            lo, hi = self.param_window
            need(0 <= lo <= hi, "param_window", "must be (low, high) with 0 <= low <= high")
        need(self.latency_proxy in ("measure", "flops"), "latency_proxy",
             "must be 'measure' or 'flops'")
        need(self.latency_budget is None or self.latency_budget > 0, "latency_budget",
             "must be positive or None")
        need(self.timeout is None or self.timeout > 0, "timeout", "must be positive or None")
        need(all(isinstance(s, int) and s >= 0 for s in self.rungs), "rungs",
             "must be non-negative KD step counts, e.g. (100, 400)")
        need(0.0 <= self.hurdle_quantile <= 1.0, "hurdle_quantile", "must be in [0, 1]")
        need(self.crossover in ("genes", "subtree"), "crossover", "must be 'genes' or 'subtree'")
        need(self.migration_interval >= 0, "migration_interval", "must be >= 0")
        base = self.base_candidate()
        if base is not None:
            need(base.num_layers == self.num_layers, "base",
                 f"has {base.num_layers} layers but num_layers={self.num_layers}")
            bad = base.violations(space)
            need(not bad, "base", f"is outside space {space.name!r}: {'; '.join(bad)}")
        return self

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(self.space, Space):
            d["space"] = json.loads(self.space.to_json())
        d["score_budget"] = budget_to_jsonable(self.score_budget)
        for k in ("param_window", "rungs", "genes"):
            d[k] = None if d[k] is None else list(d[k])
        return d

    def differences(self, stored: dict[str, Any]) -> list[str]:
        """Fields (other than :data:`RESUMABLE_CHANGES`) whose value differs from ``stored``."""
        now = json.loads(json.dumps(self.to_dict(), default=str))
        keys = set(now) | set(stored)
        return sorted(k for k in keys if k not in RESUMABLE_CHANGES and
                      now.get(k) != stored.get(k))
