"""The configuration tree: every setting of a run, typed, commented and validated in one place.

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

Models are pydantic v2 (unknown fields are errors, values are checked on construction); a bad
value raises :class:`~searcher.errors.SearchConfigError` naming its path, e.g.
``stages[0].controller.evaluations``. :func:`pipeline_schema` is the JSON schema of a pipeline
file (``efficientbert config --schema``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_serializer,
    model_validator,
)

import mlpgraph
import mlpgraph.space
from mlpgraph import Space

from .candidate import Candidate
from .errors import CandidateError, SearchConfigError
from .mutations import GENES, STAGE_GENES

STANDARD_FFN = "W2(gelu(W1(x)))"
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _path(loc: tuple[Any, ...]) -> str:
    out, after_index = "", False
    for part in loc:
        if isinstance(part, int):
            if not after_index:  # an int right after an index is a union tag (stage number)
                out += f"[{part}]"
            after_index = not after_index
            continue
        after_index = False
        out += ("." if out else "") + str(part)
    return out


def config_error(err: ValidationError, where: str = "", root: str = "config"
                 ) -> SearchConfigError:
    """The first problem of a pydantic error as a :class:`SearchConfigError` with its path
    (``root`` names a problem of the whole object)."""
    e = err.errors()[0]
    field = _path(((where,) if where else ()) + tuple(e["loc"])) or root
    msg = e["msg"].removeprefix("Value error, ")
    leaf = "input" in e and e["type"] != "missing" and not isinstance(e["input"], dict)
    return SearchConfigError(field, msg + (f" (got {e['input']!r:.80})" if leaf else ""))


class Model(BaseModel):
    """Base of every config model: unknown fields are errors. Constructing one from keyword
    arguments raises pydantic's ``ValidationError`` (a ``ValueError``); :meth:`load` (files,
    dicts) raises :class:`SearchConfigError` naming the path of the bad value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def load(cls, data: Any, where: str = "") -> Any:
        """Validate a dict (e.g. parsed JSON) into this model; raise SearchConfigError."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in ("format", "comment")}
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise config_error(e, where, cls.__name__.lower()) from None

    def dump(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists)."""
        return self.model_dump(mode="json")

    def but(self, **changes: Any) -> Any:
        """A validated copy with some fields changed."""
        return type(self).load({**self.dump(), **changes})


# ------------------------------------------------------------------ search pieces
class ControllerSpec(Model):
    """The controller of one search and its budget."""

    kind: Literal["evolution", "paper", "random"] = "evolution"
    evaluations: PositiveInt = 24  # distinct candidates scored (duplicates are free)
    proposals_per_step: PositiveInt = 2  # proposals per search step (>= workers keeps them
    #                                      busy); results depend on it, not on workers
    population: PositiveInt = 8  # evolution: population size (all islands together)
    sample_size: PositiveInt = 3  # evolution: tournament size
    islands: PositiveInt = 1  # evolution: islands (1 = none)
    migration_interval: NonNegativeInt = 0  # evolution: children between migrations (0: never)
    crossover_prob: Probability = 0.0  # evolution: chance a child comes from crossover
    crossover: Literal["genes", "subtree"] = "genes"  # uniform per layer gene, or subtrees
    max_mutations: PositiveInt = 3  # paper controller: 1..max_mutations mutations a proposal
    mutation_weights: dict[str, float] = Field(default_factory=dict)  # name -> weight

    def options(self) -> dict[str, Any]:
        """The keyword arguments of this controller kind (``make_controller``)."""
        names = {"evolution": ("population", "sample_size", "islands", "migration_interval",
                               "crossover_prob", "crossover"),
                 "paper": ("max_mutations",), "random": ()}[self.kind]
        return {n: getattr(self, n) for n in names}


class Rung(Model):
    """One fidelity of scoring: ``steps`` KD steps, averaged over ``seeds`` seeds."""

    steps: NonNegativeInt | None  # KD steps per candidate (0: score the inherited weights;
    #                               None: the score budget's own)
    keep: PositiveInt | None = None  # how many of the previous rung's best get this rung
    #                                  (None: every candidate; the first rung's is None)
    seeds: PositiveInt = 1  # scoring seeds per candidate; the rung ranks by their mean


class FidelitySpec(Model):
    """Successive halving: during the search every candidate gets ``rungs[0]``; afterwards
    the best ``keep`` of each rung get the next one; the winner is the best at the highest
    rung (by its mean over seeds) and is then re-scored on ``confirm_seeds`` fresh seeds (the
    number reported, free of the winner's curse). ``()``: one rung with the stage's
    ``kd_steps``. ``control``: also score the standard FFN of the same shape under the same
    seed ("all" rungs, "promoted" rungs only, or "none"), stored beside each candidate."""

    rungs: tuple[Rung, ...] = ()
    confirm_seeds: NonNegativeInt = 0
    control: Literal["all", "promoted", "none"] = "none"

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

    kind: Literal["local", "ray", "inline"] = "local"  # spawn processes, a Ray cluster, or
    #                                                    this process (debugging)
    workers: PositiveInt = 2  # parallel scorer calls (one torch thread each)
    address: str | None = None  # Ray cluster address (None: start a local Ray)
    timeout: Annotated[float, Field(gt=0)] | None = None  # seconds per call before it is killed


class ConstraintSpec(Model):
    """The feasibility test of a search: a parameter window over the whole student and an
    optional latency budget over the MLP stacks."""

    student_config: str | None = "efficientbert_paper"  # distill config (name or JSON path)
    #                 whose embeddings, attention and head are counted; None: the two below
    hidden: PositiveInt | None = None  # model width (required when student_config is None)
    non_mlp_params: NonNegativeInt = 0  # parameters outside the MLPs (student_config None)
    param_window: tuple[NonNegativeInt, NonNegativeInt] | None = (15_000_000, 16_000_000)
    latency_budget: Annotated[float, Field(gt=0)] | None = None  # ms, or MFLOPs with "flops"
    latency_proxy: Literal["measure", "flops"] = "measure"  # wall time here, or exact FLOPs
    latency_tokens: PositiveInt = 512  # rows of the timed input
    latency_repeats: PositiveInt = 9  # timed forward runs per layer (median)
    latency_threads: PositiveInt = 1  # torch threads while timing

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

    space: str | dict[str, Any] = "paper"  # a name in mlpgraph.SPACES ("paper", "wide"), a
    #   Space JSON file, or {"base": "paper", "add": ["mish"]} (with user primitives)
    num_layers: PositiveInt = 6  # Transformer layers; one (expression, s, ratio) gene each
    stage: Literal[1, 2, 3] = 1  # 1: expression, s and ratio; 2: expressions; 3: s and ratio
    genes: tuple[Literal["expr", "stacks", "ratio"], ...] | None = None  # overrides `stage`
    base: dict[str, Any] | str | None = None  # seed candidate (dict or JSON file); None: the
    #                                           space's seeds (standard FFN at every s, ratio)
    constraints: ConstraintSpec = ConstraintSpec()
    controller: ControllerSpec = ControllerSpec(evaluations=100, proposals_per_step=4,
                                                population=16, sample_size=4)
    fidelity: FidelitySpec = FidelitySpec()
    executor: ExecutorSpec = ExecutorSpec(workers=1)
    primitives: dict[str, str] = Field(default_factory=dict)  # user primitive -> digest of
    #   its definition: a resumed search refuses changed definitions
    rank_by: str = "score"  # the scorer's metric the search ranks by (direction: see
    #                         distill.result.LOWER_IS_BETTER)
    tie_break: str | None = None  # a second metric that orders equal scores (then the id;
    #                               never the proposal order)
    seed: int = 0  # every random choice of the run derives from it
    dedupe_fingerprint: bool = True  # also dedupe by functional fingerprint
    fail_fast: bool = True  # stop when every evaluation of the first step fails
    top_k: PositiveInt = 10  # best candidates listed in the result
    max_proposal_factor: PositiveInt = 20  # stop after evaluations * factor proposals
    score_budget: Any = None  # handed to the scorer (e.g. distill.score.ScoreBudget); its
    #                           kd_steps and seed are set per rung and seed

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
        """Settings (other than :attr:`RESUMABLE` ones) that differ from ``stored``."""
        now, old = _flatten(self.dump()), _flatten(stored)
        return sorted(k for k in set(now) | set(old) if now.get(k) != old.get(k)
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


__all__ = ["GENES", "STANDARD_FFN", "ConstraintSpec", "ControllerSpec", "ExecutorSpec",
           "FidelitySpec", "Model", "Rung", "SearchConfig", "config_error", "resolve_space"]
