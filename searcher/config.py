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

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

import mlpgraph
import mlpgraph.space
from mlpgraph import Space

from .candidate import Candidate, parse_ratio, uniform_candidate
from .errors import CandidateError, SearchConfigError
from .mutations import GENES, STAGE_GENES

PIPELINE_FORMAT = "efficientbert.pipeline/2"
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


# ------------------------------------------------------------------ pipeline pieces
class StudentShape(Model):
    """Sizes of the supernet and students (a ``distill.config.StudentConfig`` without its
    layers: the MLPs come from the search). ``num_layers`` must divide the teacher's."""

    num_layers: PositiveInt = 3
    hidden: PositiveInt = 192  # divisible by heads
    heads: PositiveInt = 12  # the teacher's head count (attention-score KD)
    embedding_size: PositiveInt | None = 24  # factorized word embeddings (None: hidden); the
    #   quick student's 30,522-token table is kept small so that its MLPs hold >= 25% of its
    #   parameters, as in the paper's model
    trigram: bool = False  # MobileBERT-style 3-gram embedding (the paper's supernet)
    max_position: PositiveInt = 128

    @model_validator(mode="after")
    def _check(self) -> StudentShape:
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} is not divisible by heads={self.heads}")
        return self

    def to_config(self, num_labels: int = 2, is_regression: bool = False,
                  vocab_size: int = 30522) -> Any:
        """The ``distill.config.StudentConfig`` with the standard FFN in every layer (the
        vocabulary is the teacher's)."""
        from distill.config import StudentConfig

        return StudentConfig(layers=[(STANDARD_FFN, 1, self.hidden)] * self.num_layers,
                             vocab_size=vocab_size, hidden=self.hidden, heads=self.heads,
                             embedding_size=self.embedding_size, trigram=self.trigram,
                             max_position=self.max_position, num_labels=num_labels,
                             is_regression=is_regression)


class BudgetSpec(Model):
    """The constraints. The paper's only one is a 15M..16M parameter window; here the window
    admits exactly the uniform standard FFNs whose ``s x ratio`` (MLP width in units of
    ``hidden``) lies in ``mlp_width``. The latency budget is ``latency_factor`` x the MLP-stack
    cost of the costliest of those seeds: "flops" (exact), "measure" (wall time) or None."""

    mlp_width: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = (2.0, 3.0)
    latency: Literal["flops", "measure"] | None = "flops"
    latency_factor: Annotated[float, Field(gt=0)] = 1.0

    @model_validator(mode="after")
    def _check(self) -> BudgetSpec:
        if self.mlp_width[0] > self.mlp_width[1]:
            raise ValueError(f"mlp_width {self.mlp_width} must be (low, high), low <= high")
        return self


class ScoreSpec(Model):
    """How stages score a candidate (``distill.score.ScoreBudget``): task KD on rows
    ``train_slice`` of the TRAINING split, then metrics on held-out rows: the task's metrics
    on the first ``heldout_size`` rows of its evaluation split, and the KD objective
    (``kd_loss``) and the KL from the teacher's outputs (``teacher_kl``) on those rows plus
    ``fitness_rows`` unlabeled sentences no warm-up saw. The test split is never read during
    the search."""

    train_slice: tuple[NonNegativeInt, PositiveInt] = (0, 3200)
    heldout_size: PositiveInt = 1000
    fitness_rows: NonNegativeInt = 500  # held-out unlabeled sentences for the KD fitness
    batch_size: PositiveInt = 32  # KD minibatch
    lr: Annotated[float, Field(gt=0)] = 4e-4
    rank_by: str | None = "kd_loss"  # the metric the search ranks by (None: the task's
    #   first metric); kd_loss was the more valid fitness in benchmarks/bench_signal.py
    tie_break: str | None = "teacher_kl"  # orders equal scores (then the candidate id)
    common_noise: bool = True  # every candidate of a stage sees the same batches and the
    #                            same dropout stream per step (common random numbers)
    latency_repeats: NonNegativeInt = 0  # timed forward runs of each candidate (0: none;
    #                                      the budget check uses exact FLOPs)


class WarmupSpec(Model):
    """One warm-up KD of the supernet: general KD (pretrained teacher, unlabeled text) for
    ``general_steps``, then task KD (fine-tuned teacher, training split) for ``task_steps``.
    Every step trains one random sub-network inside the parameter window."""

    general_steps: NonNegativeInt = 300
    task_steps: NonNegativeInt = 500
    general_lr: Annotated[float, Field(gt=0)] = 5e-4
    task_lr: Annotated[float, Field(gt=0)] = 4e-4
    batch_size: PositiveInt = 32  # KD minibatch
    pool: Literal["base", "mixed"] = "mixed"  # the expression of each layer at each step:
    #     "base": the stage's own (the standard FFN before stage 1, stage 2's winner before
    #     stage 3); "mixed": the stage's own with probability own_share, else one drawn from
    #     the standard FFN, the paper's six and random_members random members of the space
    own_share: Probability = 0.0
    random_members: NonNegativeInt = 8


class StageBase(Model):
    """What every stage holds; ``stage`` selects which genes mutate."""

    controller: ControllerSpec = ControllerSpec()
    fidelity: FidelitySpec = FidelitySpec()
    kd_steps: NonNegativeInt = 40  # task KD steps per candidate (0: score inherited weights)
    rewarm: WarmupSpec | None = None  # re-warm the supernet first (None: reuse the last one)

    @property
    def genes(self) -> frozenset[str]:
        return STAGE_GENES[self.stage]  # type: ignore[attr-defined]

    @property
    def no_training(self) -> bool:
        return self.kd_steps == 0


class Stage1(StageBase):
    """Coarse: expression, ``s`` and ratio of every layer; seeds: the standard FFN at every
    feasible ``(s, ratio)``."""

    stage: Literal[1] = 1
    controller: ControllerSpec = ControllerSpec(evaluations=16)
    fidelity: FidelitySpec = FidelitySpec(
        rungs=(Rung(steps=30), Rung(steps=100, keep=4), Rung(steps=150, keep=2, seeds=2)),
        confirm_seeds=2, control="promoted")


class Stage2(StageBase):
    """Fine, expressions only; ``s`` and ratio from stage 1's winner, which is the seed."""

    stage: Literal[2] = 2
    controller: ControllerSpec = ControllerSpec(evaluations=12)
    fidelity: FidelitySpec = FidelitySpec(
        rungs=(Rung(steps=30), Rung(steps=100, keep=4), Rung(steps=150, keep=2, seeds=2)),
        confirm_seeds=2, control="all")


class Stage3(StageBase):
    """Fine, ``s`` and ratio only, expressions from stage 2's winner; scored without
    training through the re-warmed weight-sharing supernet."""

    stage: Literal[3] = 3
    controller: ControllerSpec = ControllerSpec(evaluations=24)
    kd_steps: NonNegativeInt = 0
    rewarm: WarmupSpec | None = WarmupSpec(general_steps=100, task_steps=200, own_share=0.5)


Stage = Annotated[Stage1 | Stage2 | Stage3, Field(discriminator="stage")]


class FinalSpec(Model):
    """The winner's task KD and its comparison with the standard FFN of the same shape on
    the test split. ``init``: "warmup" (both inherit the first warm-up supernet) or "last"
    (the last stage's supernet)."""

    task_steps: PositiveInt = 300
    lr: Annotated[float, Field(gt=0)] = 1e-3  # bench_distill's tuned task-KD rate
    batch_size: PositiveInt = 32
    label_weight: NonNegativeFloat = 1.0  # hard-label loss added to task KD (0: pure KD)
    seeds: PositiveInt = 3  # paired seeds per student (same batches; same initial weights
    #                         where shapes match); 3 or more give a confidence interval
    equal_params: bool = True  # also train a uniform standard FFN of the winner's size
    fixed: tuple[str, ...] = ()  # expressions also trained on every layer at the winner's
    #                              shape (e.g. the best known MLP, "tanh(W2(gelu(W1(x))))")
    init: Literal["warmup", "last"] = "warmup"
    teacher_test: bool = True  # also report the teacher's test metrics


class Pipeline(Model):
    """The whole coarse-to-fine run (a preset, possibly edited)."""

    name: str = "quick"
    task: str = "movie_binary"  # a task name (distill.data.TASKS); with ``data``, a GLUE task
    #                             whose schema the files follow, or ignored
    data: dict[str, Any] | None = None  # your own labelled files (distill.datafiles.DataFiles:
    #   train_file, validation_file, test_file, text_column, label_column, ...)
    primitives: tuple[str, ...] = ()  # user primitives: FILE.py paths or module names,
    #                                   imported here and in every worker
    teacher: str | None = None  # base teacher model folder (None: all-MiniLM-L6-v2, fetched
    #                             by `efficientbert assets`); fine-tuned on the task once
    space: str | dict[str, Any] = "paper"  # a name, a Space JSON file, or {"base": "paper",
    #                                         "add": ["mish"]}
    seed: int = 0
    device: str | None = None  # "cpu" or "cuda" (None: CUDA when present)
    threads: PositiveInt = 2  # torch threads of the main process (teacher, warm-ups, final
    #                           KD; the workers are idle then), capped at the usable CPUs
    unlabeled_limit: PositiveInt | None = 6000  # general-KD sentences (even stride; None: all)
    default_base: tuple[PositiveInt, str] = (2, "1")  # (s, ratio) of the standard FFN a stage
    #                                                     starts from without an earlier winner
    student: StudentShape = StudentShape()
    budget: BudgetSpec = BudgetSpec()
    score: ScoreSpec = ScoreSpec()
    warmup: WarmupSpec = WarmupSpec()
    stages: list[Stage] = Field(default_factory=lambda: [Stage1(), Stage2(), Stage3()])
    executor: ExecutorSpec = ExecutorSpec()
    final: FinalSpec = FinalSpec()

    @field_validator("data")
    @classmethod
    def _data(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from distill.datafiles import DataFiles

        return None if value is None else DataFiles.from_dict(value).to_dict()

    @field_validator("primitives")
    @classmethod
    def _primitives(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value:  # imported now: the space and the search may use them
            mlpgraph.load_primitives(list(value))
        return value

    @model_validator(mode="after")
    def _check(self) -> Pipeline:
        numbers = [s.stage for s in self.stages]
        if not numbers or numbers != sorted(set(numbers)):
            raise ValueError(f"stages {numbers} must be distinct and in order (1, 2, 3 or a "
                             "subset)")
        resolve_space(self.space)
        try:
            parse_ratio(self.default_base[1])
        except CandidateError as e:
            raise ValueError(f"default_base: {e}") from None
        return self

    def stage(self, number: int) -> StageBase:
        for s in self.stages:
            if s.stage == number:
                return s
        raise SearchConfigError("stages", f"stage {number} is not in pipeline {self.name!r} "
                                f"(it has {[s.stage for s in self.stages]})")

    def select(self, numbers: list[int]) -> list[StageBase]:
        """The stages to run, in pipeline order (``--stages 1,3``)."""
        return [self.stage(n) for n in sorted(set(numbers))]

    def base_candidate(self) -> Candidate:
        """The uniform standard FFN at :attr:`default_base`."""
        s, r = self.default_base
        return uniform_candidate(STANDARD_FFN, s, parse_ratio(r), self.student.num_layers)

    def to_json(self) -> str:
        return json.dumps({"format": PIPELINE_FORMAT, **self.dump()}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> Pipeline:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SearchConfigError("pipeline", f"{source} is not valid JSON: {e}") from None
        return cls.load(data)


# ------------------------------------------------------------------ presets
def quick_preset() -> Pipeline:
    """Fits in about 15 minutes on 2 CPU cores (after the one-time teacher fine-tune)."""
    return Pipeline()


def full_preset() -> Pipeline:
    """For a real machine (many cores or a GPU): 6 layers with the paper's 3-gram embedding,
    longer warm-ups and KD runs, a few hundred evaluations per stage."""
    wide = {"population": 48, "sample_size": 8, "proposals_per_step": 8}
    return Pipeline(
        name="full", threads=4, unlabeled_limit=None, executor=ExecutorSpec(workers=4),
        student=StudentShape(num_layers=6, hidden=264, embedding_size=128, trigram=True),
        score=ScoreSpec(train_slice=(0, 8000), heldout_size=1012),
        warmup=WarmupSpec(general_steps=20_000, task_steps=4_000),
        stages=[Stage1(controller=ControllerSpec(evaluations=300, **wide), kd_steps=500),
                Stage2(controller=ControllerSpec(evaluations=200, population=32, sample_size=6,
                                                 proposals_per_step=8), kd_steps=500),
                Stage3(controller=ControllerSpec(evaluations=500, **wide),
                       rewarm=WarmupSpec(general_steps=10_000, task_steps=4_000))],
        final=FinalSpec(task_steps=5_000, lr=2e-4))


PRESETS: dict[str, Callable[[], Pipeline]] = {"quick": quick_preset, "full": full_preset}


def load_pipeline(preset: str = "quick", path: str | Path | None = None) -> Pipeline:
    """A preset by name, or a pipeline JSON file (as written to ``RUN_DIR/pipeline.json``)."""
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise SearchConfigError("pipeline", f"cannot read {path}: {e}") from None
        return Pipeline.from_json(text, str(path))
    if preset not in PRESETS:
        raise SearchConfigError("preset", f"unknown preset {preset!r}; choose one of "
                                f"{sorted(PRESETS)} or pass a pipeline JSON file")
    return PRESETS[preset]()


def pipeline_schema() -> dict[str, Any]:
    """The JSON schema of a pipeline file."""
    return Pipeline.model_json_schema()


__all__ = ["GENES", "PIPELINE_FORMAT", "PRESETS", "STANDARD_FFN", "BudgetSpec",
           "ConstraintSpec", "ControllerSpec", "ExecutorSpec", "FidelitySpec", "FinalSpec",
           "Pipeline", "ScoreSpec", "SearchConfig", "Stage1", "Stage2", "Stage3", "StageBase",
           "StudentShape", "WarmupSpec", "config_error", "full_preset", "load_pipeline",
           "pipeline_schema", "quick_preset"]
