"""The pipeline of ``efficientbert run``: the rest of the configuration tree (see
:mod:`searcher.config` for the tree and the search pieces a stage holds,
:mod:`searcher.run_parts` for the leaf pieces below).

::

    Pipeline                     RUN_DIR/pipeline.json; presets "quick" (the defaults), "full"
    ├── plugins, backend         user code imported everywhere; the compile backend
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
    NonNegativeInt,
    PositiveInt,
    field_validator,
    model_validator,
)

from mlpgraph import STANDARD_FFN, LayerError, parse_ratio

from .candidate import Candidate, uniform_candidate
from .config import ControllerSpec, ExecutorSpec, FidelitySpec, Rung, resolve_space
from .config_base import BackendName, Model
from .errors import SearchConfigError
from .mutations import STAGE_GENES
from .plugins import load_plugins
from .run_parts import BudgetSpec, FinalSpec, ScoreSpec, StudentShape, WarmupSpec

PIPELINE_FORMAT = "efficientbert.pipeline/2"


# ------------------------------------------------------------------ pipeline pieces
class StageBase(Model):
    """What every stage holds; ``stage`` selects which genes mutate."""

    controller: ControllerSpec = Field(ControllerSpec(), description="the search algorithm "
                                       "and its budget")
    fidelity: FidelitySpec = Field(FidelitySpec(), description="progressive hurdles (KD "
                                   "steps per rung)")
    kd_steps: NonNegativeInt = Field(40, description="task KD steps per candidate (0: score "
                                     "the inherited weights)")
    rewarm: WarmupSpec | None = Field(None, description="re-warm the supernet before the "
                                      "stage (null: reuse the last one)")

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

    stage: Literal[1] = Field(1, description="1: expression, s and ratio of every layer")
    controller: ControllerSpec = Field(ControllerSpec(evaluations=14),
                                       description="the search algorithm and its budget")
    fidelity: FidelitySpec = Field(
        FidelitySpec(rungs=QUICK_RUNGS, confirm_seeds=2, control="promoted"),
        description="progressive hurdles (KD steps per rung)")


class Stage2(StageBase):
    """Fine, expressions only; ``s`` and ratio from stage 1's winner, which is the seed."""

    stage: Literal[2] = Field(2, description="2: expressions only")
    controller: ControllerSpec = Field(ControllerSpec(evaluations=8),
                                       description="the search algorithm and its budget")
    fidelity: FidelitySpec = Field(
        FidelitySpec(rungs=QUICK_RUNGS_FINE, confirm_seeds=2, control="all"),
        description="progressive hurdles (KD steps per rung)")


class Stage3(StageBase):
    """Fine, ``s`` and ratio only, expressions from stage 2's winner; scored without
    training through the re-warmed weight-sharing supernet."""

    stage: Literal[3] = Field(3, description="3: s and ratio only")
    controller: ControllerSpec = Field(ControllerSpec(evaluations=24),
                                       description="the search algorithm and its budget")
    kd_steps: NonNegativeInt = Field(0, description="task KD steps per candidate (0: score "
                                     "the inherited weights)")
    rewarm: WarmupSpec | None = Field(
        WarmupSpec(general_steps=100, task_steps=200, own_share=0.5),
        description="re-warm the supernet before the stage (null: reuse the last one)")


Stage = Annotated[Stage1 | Stage2 | Stage3, Field(discriminator="stage")]


class Pipeline(Model):
    """The whole coarse-to-fine run (a preset, possibly edited)."""

    name: str = Field("quick", description="the preset it started from (names the run "
                      "folder)")
    plugins: tuple[str, ...] = Field(
        (), description="user code (FILE.py paths or module names) imported here and in "
        "every worker before anything else: it may declare primitives, mutations, "
        "controllers, executors, tasks, metrics and backends. Importing runs its code.")
    task: str = Field("movie_binary", description="a task name (distill's registered tasks); "
                      "with data, a GLUE task whose schema the files follow, or ignored")
    data: dict[str, Any] | None = Field(
        None, description="your own labelled files (distill.DataFiles: train_file, "
        "validation_file, test_file, text_column, label_column, ...)")
    teacher: str | None = Field(None, description="base teacher model folder (null: "
                                "all-MiniLM-L6-v2, fetched by `efficientbert assets`); "
                                "fine-tuned on the task once")
    space: str | dict[str, Any] = Field(
        "wide", description='a name ("wide": the paper\'s space plus GLUs and squared ReLU; '
        '"paper": the paper\'s space), a Space JSON file, or {"base": "paper", "add": '
        '["mish"]}')
    backend: BackendName = Field("eager", description="the compile backend (declared with "
                                 "@mlpgraph.backends.backend) that students and the search's "
                                 "latency meter use")
    seed: int = Field(0, description="every random choice of the run derives from it")
    device: str | None = Field(None, description='"cpu" or "cuda" (null: CUDA when present)')
    threads: PositiveInt = Field(2, description="torch threads of the main process (teacher, "
                                 "warm-ups, final KD; the workers are idle then), capped at "
                                 "the usable CPUs")
    unlabeled_limit: PositiveInt | None = Field(6000, description="general-KD sentences (even "
                                                "stride; null: all)")
    default_base: tuple[PositiveInt, str] = Field(
        (2, "1"), description="(s, ratio) of the standard FFN a stage starts from without an "
        "earlier winner")
    student: StudentShape = Field(StudentShape(), description="sizes of the supernet and of "
                                  "every student")
    budget: BudgetSpec = Field(BudgetSpec(), description="the parameter window and the "
                               "latency budget")
    score: ScoreSpec = Field(ScoreSpec(), description="how a candidate is scored")
    warmup: WarmupSpec = Field(WarmupSpec(), description="supernet warm-up KD before stage 1")
    stages: list[Stage] = Field(default_factory=lambda: [Stage1(), Stage2(), Stage3()],
                                description="the search stages, in order (1, 2, 3 or a "
                                "subset)")
    executor: ExecutorSpec = Field(ExecutorSpec(), description="where candidates are scored")
    final: FinalSpec = Field(FinalSpec(), description="the winner's KD and its comparison "
                             "with the standard FFN")

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        """A pipeline written before plugins were named so: its ``primitives`` key."""
        if isinstance(data, dict) and "primitives" in data:
            old, new = data["primitives"], data.get("plugins") or ()
            if new and list(new) != list(old or ()):
                raise ValueError("give plugins only (primitives is its old name), not both")
            data = {**{k: v for k, v in data.items() if k != "primitives"}, "plugins": old}
        return data

    @field_validator("plugins")
    @classmethod
    def _plugins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        load_plugins(value)  # now, before the fields that may name their declarations
        return value

    @field_validator("data")
    @classmethod
    def _data(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from distill import DataFiles

        return None if value is None else DataFiles.from_dict(value).to_dict()

    @model_validator(mode="after")
    def _check(self) -> Pipeline:
        numbers = [s.stage for s in self.stages]
        if not numbers or numbers != sorted(set(numbers)):
            raise ValueError(f"stages {numbers} must be distinct and in order (1, 2, 3 or a "
                             "subset)")
        resolve_space(self.space)
        try:
            parse_ratio(self.default_base[1])
        except LayerError as e:
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
