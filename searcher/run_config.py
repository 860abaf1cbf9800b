"""The pipeline of ``efficientbert run``: the rest of the configuration tree (see
:mod:`searcher.config` for the tree, the base model and the search pieces a stage holds).

::

    Pipeline                     RUN_DIR/pipeline.json; presets "quick" (the defaults), "full"
    ├── student: StudentShape    sizes of the supernet and of every student
    ├── budget: BudgetSpec       the parameter window and the latency budget
    ├── score: ScoreSpec         how a candidate is scored (short KD, held-out rows)
    ├── warmup: WarmupSpec       supernet warm-up KD before stage 1
    ├── stages: Stage1, Stage2, Stage3 (controller, fidelity, kd_steps, rewarm)
    ├── executor: ExecutorSpec   where candidates are scored
    └── final: FinalSpec         the winner's KD and its comparison with the standard FFN
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    field_validator,
    model_validator,
)

import mlpgraph

from .candidate import Candidate, parse_ratio, uniform_candidate
from .config import (
    STANDARD_FFN,
    ControllerSpec,
    ExecutorSpec,
    FidelitySpec,
    Model,
    Probability,
    Rung,
    resolve_space,
)
from .errors import CandidateError, SearchConfigError
from .mutations import STAGE_GENES

PIPELINE_FORMAT = "efficientbert.pipeline/2"


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
    fitness_rows: NonNegativeInt = 300  # held-out unlabeled sentences for the KD fitness
    batch_size: PositiveInt = 32  # KD minibatch
    lr: Annotated[float, Field(gt=0)] = 4e-4
    rank_by: str | None = "kd_loss"  # the metric the search ranks by (None: the task's
    #   first metric); kd_loss was the more valid fitness in benchmarks/bench_signal.py
    tie_break: str | None = "teacher_kl"  # orders equal scores (then the candidate id)
    common_noise: bool = True  # every candidate of a stage sees the same batches and the
    #                            same dropout stream per step (common random numbers)
    dropout: Probability | None = 0.0  # dropout during a candidate's short KD (None: the
    #   student's 0.1); 0 makes a score depend on the batches only, and steps faster
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


#: the quick preset's successive halving: every candidate 30 KD steps, the best 4 then 100,
#: the best 2 then 150 over two seeds
QUICK_RUNGS = (Rung(steps=30), Rung(steps=100, keep=4), Rung(steps=150, keep=2, seeds=2))
#: stage 2's (fewer candidates, one shape): 30 KD steps, then the best 2 at 150 over two seeds
QUICK_RUNGS_FINE = (Rung(steps=30), Rung(steps=150, keep=2, seeds=2))


class Stage1(StageBase):
    """Coarse: expression, ``s`` and ratio of every layer; seeds: the standard FFN at every
    feasible ``(s, ratio)``."""

    stage: Literal[1] = 1
    controller: ControllerSpec = ControllerSpec(evaluations=14)
    fidelity: FidelitySpec = FidelitySpec(rungs=QUICK_RUNGS, confirm_seeds=2,
                                          control="promoted")


class Stage2(StageBase):
    """Fine, expressions only; ``s`` and ratio from stage 1's winner, which is the seed."""

    stage: Literal[2] = 2
    controller: ControllerSpec = ControllerSpec(evaluations=8)
    fidelity: FidelitySpec = FidelitySpec(rungs=QUICK_RUNGS_FINE, confirm_seeds=2,
                                          control="all")


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
    space: str | dict[str, Any] = "wide"  # a name ("wide": the paper's space plus GLUs and
    #   squared ReLU, which beat the FFN when trained in benchmarks/README; "paper": the
    #   paper's space), a Space JSON file, or {"base": "paper", "add": ["mish"]}
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

    def halving(keep: tuple[int, int]) -> FidelitySpec:
        return FidelitySpec(rungs=(Rung(steps=300), Rung(steps=1000, keep=keep[0]),
                                   Rung(steps=2500, keep=keep[1], seeds=3)),
                            confirm_seeds=3, control="promoted")

    return Pipeline(
        name="full", threads=4, unlabeled_limit=None, executor=ExecutorSpec(workers=4),
        student=StudentShape(num_layers=6, hidden=264, embedding_size=128, trigram=True),
        score=ScoreSpec(train_slice=(0, 8000), heldout_size=1012, fitness_rows=3000),
        warmup=WarmupSpec(general_steps=20_000, task_steps=4_000),
        stages=[Stage1(controller=ControllerSpec(evaluations=300, **wide),
                       fidelity=halving((32, 6))),
                Stage2(controller=ControllerSpec(evaluations=200, population=32, sample_size=6,
                                                 proposals_per_step=8),
                       fidelity=halving((24, 4))),
                Stage3(controller=ControllerSpec(evaluations=500, **wide),
                       rewarm=WarmupSpec(general_steps=10_000, task_steps=4_000,
                                         own_share=0.5))],
        final=FinalSpec(task_steps=5_000, lr=5e-4, seeds=5))


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




__all__ = ["PIPELINE_FORMAT", "PRESETS", "BudgetSpec", "FinalSpec", "Pipeline", "ScoreSpec",
           "Stage1", "Stage2", "Stage3", "StageBase", "StudentShape", "WarmupSpec",
           "full_preset", "load_pipeline", "pipeline_schema", "quick_preset"]
