"""The configuration tree: every setting of a run, typed, described and validated in one place.

::

    Pipeline                     efficientbert run; RUN_DIR/pipeline.json; presets "quick", "full"
    ├── student: StudentShape    sizes of the supernet and of every student
    ├── budget: BudgetSpec       the parameter window and the latency budget
    ├── score: ScoreSpec         how a candidate is scored (short KD, held-out rows)
    ├── warmup: WarmupSpec       supernet warm-up KD before stage 1
    ├── stages: Stage1, Stage2, Stage3
    │   ├── controller: ControllerSpec   the search (evolution, paper, random) and its budget
    │   ├── fidelity: FidelitySpec       progressive hurdles (KD steps per rung)
    │   └── rewarm: WarmupSpec | None    re-warm the supernet before the stage
    ├── executor: ExecutorSpec   where candidates are scored (local processes, Ray, inline)
    └── final: FinalSpec         the winner's KD and its comparison with the standard FFN

    SearchConfig                 one search (run_search): what is searched (space, layers, genes,
                                 base, constraints: ConstraintSpec) + the same ControllerSpec,
                                 FidelitySpec and ExecutorSpec a pipeline stage holds

Models are pydantic v2 (unknown fields are errors, values are checked on construction; every
field carries its ``description``, shown by the schema and ``efficientbert config --fields``).
Kinds and names are checked against their registries (controllers, executors, mutations,
backends, metrics), so a plugin's declarations are valid values at once. A bad value raises
:class:`~searcher.errors.SearchConfigError` naming its path, e.g.
``stages[0].controller.evaluations``. :func:`pipeline_schema` is the JSON schema of a pipeline
file (``efficientbert config --schema``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveInt,
    field_serializer,
    field_validator,
    model_validator,
)

import mlpgraph
import mlpgraph.space
from mlpgraph import STANDARD_FFN, Space

from .candidate import Candidate
from .config_base import (
    BackendName,
    MetricName,
    Model,
    Probability,
    config_error,
    enum_of,
    registered,
)
from .controller import CONTROLLERS
from .errors import CandidateError
from .mutations import DEFAULT_TABLE, GENES, STAGE_GENES
from .workers import EXECUTORS

Gene = Literal[GENES]  # type: ignore[valid-type]


# ------------------------------------------------------------------ search pieces
class ControllerSpec(Model):
    """The controller of one search and its budget."""

    kind: str = Field("evolution", description="the search algorithm, a kind declared with "
                      "@controller: evolution (aging evolution), paper (the reference's "
                      "mutations of the seeds), random (independent samples), or a plugin's",
                      json_schema_extra=enum_of(CONTROLLERS))
    evaluations: PositiveInt = Field(24, description="distinct candidates scored (duplicates "
                                     "are free)")
    proposals_per_step: PositiveInt = Field(2, description="proposals per search step (>= "
                                            "workers keeps them busy); results depend on it, "
                                            "not on workers")
    population: PositiveInt = Field(8, description="evolution: population size (all islands "
                                    "together)")
    sample_size: PositiveInt = Field(3, description="evolution: tournament size")
    islands: PositiveInt = Field(1, description="evolution: islands (1 = none)")
    migration_interval: NonNegativeInt = Field(0, description="evolution: children between "
                                               "ring migrations (0: never)")
    crossover_prob: Probability = Field(0.0, description="evolution: chance a child comes "
                                        "from crossover")
    crossover: Literal["genes", "subtree"] = Field("genes", description="evolution: 'genes' "
                                                   "(each layer gene from either parent) or "
                                                   "'subtree' (graft a linear-free subtree)")
    max_mutations: PositiveInt = Field(3, description="paper: 1..max_mutations mutations per "
                                       "proposal")
    mutation_weights: dict[str, float] = Field(
        default_factory=dict, description="mutation name -> weight, replacing the weight it "
        "was declared with (0 turns it off)")

    @field_validator("kind")
    @classmethod
    def _kind(cls, kind: str) -> str:
        registered(CONTROLLERS, "controller")(kind)
        unknown = [o for o in CONTROLLERS[kind].options if o not in cls.model_fields]
        if unknown:
            raise ValueError(f"controller {kind!r} takes option(s) {unknown} that "
                             "ControllerSpec has no field for; a controller's keyword-only "
                             f"options must be among {sorted(cls.model_fields)}")
        return kind

    @field_validator("mutation_weights")
    @classmethod
    def _weights(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(DEFAULT_TABLE.entries))
        if unknown:
            raise ValueError(f"unknown mutation(s) {unknown}; declared: "
                             f"{', '.join(DEFAULT_TABLE.entries)}")
        return weights

    def options(self) -> dict[str, Any]:
        """The keyword arguments of this controller kind (``make_controller``): the fields
        its declaration takes."""
        return {n: getattr(self, n) for n in CONTROLLERS[self.kind].options}


class Rung(Model):
    """One fidelity of scoring: ``steps`` KD steps, averaged over ``seeds`` seeds."""

    steps: NonNegativeInt | None = Field(description="KD steps per candidate (0: score the "
                                         "inherited weights; null: the score budget's own)")
    keep: PositiveInt | None = Field(None, description="how many of the previous rung's best "
                                     "get this rung (null: every candidate; the first rung's "
                                     "is null)")
    seeds: PositiveInt = Field(1, description="scoring seeds per candidate; the rung ranks by "
                               "their mean")


class FidelitySpec(Model):
    """Successive halving: during the search every candidate gets ``rungs[0]``; afterwards
    the best ``keep`` of each rung get the next one; the winner is the best at the highest
    rung (by its mean over seeds) and is then re-scored on ``confirm_seeds`` fresh seeds (the
    number reported, free of the winner's curse). ``()``: one rung with the stage's
    ``kd_steps``. ``control``: also score the standard FFN of the same shape under the same
    seed ("all" rungs, "promoted" rungs only, or "none"), stored beside each candidate."""

    rungs: tuple[Rung, ...] = Field((), description="the fidelities, lowest first (empty: one "
                                    "rung with the stage's kd_steps)")
    confirm_seeds: NonNegativeInt = Field(0, description="fresh seeds the winner is re-scored "
                                          "on (the number reported)")
    control: Literal["all", "promoted", "none"] = Field(
        "none", description="also score the standard FFN of each candidate's shape under the "
        "same seed: at all rungs, at promoted rungs only, or none")

    @model_validator(mode="after")
    def _check(self) -> FidelitySpec:
        if self.rungs and self.rungs[0].keep is not None:
            raise ValueError("rungs[0].keep must be null: every candidate gets the first rung")
        for i, r in enumerate(self.rungs[1:], 1):
            if r.keep is None:
                raise ValueError(f"rungs[{i}].keep is required (how many go on to rung {i})")
        return self

    def plan(self) -> tuple[Rung, ...]:
        """The rungs to run (one rung with the score budget's own steps when none are set)."""
        return self.rungs or (Rung(steps=None),)


class ExecutorSpec(Model):
    """Where scorer calls run."""

    kind: str = Field("local", description="an executor declared with @executor: local "
                      "(spawned processes), ray (a Ray cluster), inline (this process, for "
                      "debugging), or a plugin's", json_schema_extra=enum_of(EXECUTORS))
    workers: PositiveInt = Field(2, description="parallel scorer calls (one torch thread "
                                 "each)")
    address: str | None = Field(None, description="Ray cluster address (null: start a local "
                                "Ray)")
    timeout: Annotated[float, Field(gt=0)] | None = Field(
        None, description="seconds a scorer call may run before it is killed (null: no limit)")

    @field_validator("kind")
    @classmethod
    def _kind(cls, kind: str) -> str:
        return registered(EXECUTORS, "executor")(kind)


class ConstraintSpec(Model):
    """The feasibility test of a search: a parameter window over the whole student and an
    optional latency budget over the MLP stacks."""

    student_config: str | None = Field(
        "efficientbert_paper", description="distill student config (name or JSON path) whose "
        "embeddings, attention and head are counted; null: hidden and non_mlp_params")
    hidden: PositiveInt | None = Field(None, description="model width (required when "
                                       "student_config is null)")
    non_mlp_params: NonNegativeInt = Field(0, description="parameters outside the MLPs (when "
                                           "student_config is null)")
    param_window: tuple[NonNegativeInt, NonNegativeInt] | None = Field(
        (15_000_000, 16_000_000), description="allowed total parameters (low, high), "
        "inclusive; null: no window")
    latency_budget: Annotated[float, Field(gt=0)] | None = Field(
        None, description="the MLP stacks' latency limit: ms, or MFLOPs with latency_proxy "
        "'flops' (null: none)")
    latency_proxy: Literal["measure", "flops"] = Field(
        "measure", description="'measure': wall time on this machine; 'flops': exact FLOPs")
    latency_tokens: PositiveInt = Field(512, description="rows of the timed input")
    latency_repeats: PositiveInt = Field(9, description="timed forward runs per layer (their "
                                         "median counts)")
    latency_threads: PositiveInt = Field(1, description="torch threads while timing")
    latency_backend: BackendName = Field("eager", description="the compile backend the "
                                         "latency is measured with")

    @model_validator(mode="after")
    def _check(self) -> ConstraintSpec:
        if self.student_config is None and self.hidden is None:
            raise ValueError("hidden is required when student_config is None")
        if self.param_window is not None and self.param_window[0] > self.param_window[1]:
            raise ValueError(f"param_window {self.param_window} must be (low, high), low <= high")
        return self


class SearchConfig(Model):
    """Everything one search (:func:`searcher.search.run_search`) needs besides the scorer."""

    RESUMABLE: ClassVar[frozenset[str]] = frozenset({
        "executor", "controller.evaluations", "top_k", "max_proposal_factor"})

    space: str | dict[str, Any] = Field(
        "paper", description='a name in mlpgraph.SPACES ("paper", "wide"), a Space JSON file, '
        'or {"base": "paper", "add": ["mish"]} (with user primitives)')
    num_layers: PositiveInt = Field(6, description="Transformer layers; one (expression, s, "
                                    "ratio) gene each")
    stage: Literal[1, 2, 3] = Field(1, description="1: expression, s and ratio; 2: "
                                    "expressions; 3: s and ratio")
    genes: tuple[Gene, ...] | None = Field(None, description="the genes that mutate "
                                           "(overrides stage)")
    base: dict[str, Any] | str | None = Field(
        None, description="seed candidate (dict or JSON file); null: the space's seeds (the "
        "standard FFN at every s, ratio)")
    constraints: ConstraintSpec = Field(ConstraintSpec(), description="the parameter window "
                                        "and latency budget")
    controller: ControllerSpec = Field(
        ControllerSpec(evaluations=100, proposals_per_step=4, population=16, sample_size=4),
        description="the search algorithm and its budget")
    fidelity: FidelitySpec = Field(FidelitySpec(), description="progressive hurdles (KD "
                                   "steps per rung)")
    executor: ExecutorSpec = Field(ExecutorSpec(workers=1), description="where candidates "
                                   "are scored")
    primitives: dict[str, str] = Field(
        default_factory=dict, description="user primitive -> digest of its definition: a "
        "resumed search refuses changed definitions")
    rank_by: MetricName = Field("score", description="the scorer's metric the search ranks "
                                "by (its direction comes from its declaration, distill.metric)")
    tie_break: MetricName | None = Field(None, description="a second metric that orders equal "
                                         "scores (then the id; never the proposal order)")
    seed: int = Field(0, description="every random choice of the search derives from it")
    dedupe_fingerprint: bool = Field(True, description="also dedupe by functional "
                                     "fingerprint")
    fail_fast: bool = Field(True, description="stop when every evaluation of the first step "
                            "fails")
    top_k: PositiveInt = Field(10, description="best candidates listed in the result")
    max_proposal_factor: PositiveInt = Field(20, description="stop after evaluations x factor "
                                             "proposals")
    score_budget: Any = Field(None, description="handed to the scorer (e.g. "
                              "distill.ScoreBudget); its kd_steps and seed are set per rung "
                              "and seed")

    @field_serializer("score_budget")
    def _budget(self, budget: Any) -> Any:
        from dataclasses import asdict, is_dataclass

        if budget is None or not is_dataclass(budget):
            return None if budget is None else repr(budget)
        return {k: v if isinstance(v, int | float | str | bool | type(None)) else str(v)
                for k, v in asdict(budget).items()}

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        space = self.resolve_space()
        base = self.base_candidate()
        if base is not None:
            if base.num_layers != self.num_layers:
                raise ValueError(f"base has {base.num_layers} layers but num_layers="
                                 f"{self.num_layers}")
            bad = base.violations(space)
            if bad:
                raise ValueError(f"base is outside space {space.name!r}: {'; '.join(bad)}")
        return self

    def resolve_space(self) -> Space:
        return resolve_space(self.space)

    def gene_mask(self) -> frozenset[str]:
        return frozenset(self.genes) if self.genes is not None else STAGE_GENES[self.stage]

    def base_candidate(self) -> Candidate | None:
        if self.base is None:
            return None
        try:
            if isinstance(self.base, dict):
                return Candidate.from_dict(self.base)
            return Candidate.from_json(Path(self.base).read_text(encoding="utf-8"))
        except (OSError, CandidateError) as e:
            raise ValueError(f"cannot load the base candidate {self.base!r:.80}: {e}") from None

    def differences(self, stored: dict[str, Any]) -> list[str]:
        """Settings (other than :attr:`RESUMABLE` ones) that differ from ``stored``; a
        setting added since ``stored`` was written counts only when it is not at its
        default."""
        now, old = _flatten(self.dump()), _flatten(stored)
        default = _flatten(type(self).model_construct().dump())
        return sorted(k for k in set(now) | set(old) if now.get(k) != old.get(k)
                      and not (k not in old and now[k] == default.get(k, now[k]))
                      and not any(k == r or k.startswith(r + ".") for r in self.RESUMABLE))


def resolve_space(value: str | dict[str, Any]) -> Space:
    """A space: a name (``mlpgraph.SPACES``), a Space JSON file, ``{"base": "paper", "add":
    ["mish"]}`` (a named space extended with registered primitives) or a full space record."""
    if isinstance(value, str) and value.endswith(".json") and Path(value).is_file():
        return Space.from_json(Path(value).read_text(encoding="utf-8"))
    return mlpgraph.space.resolve_space(value)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "base":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


__all__ = ["GENES", "STANDARD_FFN", "BackendName", "ConstraintSpec", "ControllerSpec",
           "ExecutorSpec", "FidelitySpec", "MetricName", "Model", "Rung", "SearchConfig",
           "config_error", "enum_of", "registered", "resolve_space"]
