"""The coarse-to-fine stage pipeline as data: one commented dataclass per stage, a
:class:`Pipeline` holding the list, JSON/dict round trip, presets, and the translation of a
stage into a :class:`~searcher.config.SearchConfig` plus a ``distill.score.ScoreBudget``.

Stages (arXiv 2109.07222, section "Coarse-to-fine search"):

1. :class:`Stage1` (coarse): expression, stack count ``s`` and ratio per layer together;
   seeds are the standard FFN ``W2(gelu(W1(x)))`` at every feasible ``(s, ratio)``.
   Candidates inherit the warmed-up supernet and are scored after a short task KD.
2. :class:`Stage2` (fine): expressions only; ``s`` and ratio fixed from stage 1's winner.
3. :class:`Stage3` (fine): per-layer ``s`` and ratio only, expressions fixed from stage 2's
   winner; the supernet is re-warmed with those expressions and a random ``(s, ratio)`` per
   layer at every step, and candidates are scored WITHOUT training (inherited weights).

Every stage starts from a warm-up KD checkpoint: the pipeline's :attr:`Pipeline.warmup`
before stage 1, and a stage's own :attr:`StageSpec.rewarm` when set (otherwise the previous
checkpoint is reused). The parameter window and latency budget are derived from the
student's sizes (see :class:`BudgetSpec`).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import mlpgraph

from .candidate import Candidate, LayerGene, parse_ratio, seed_candidates, uniform_candidate
from .errors import SearchConfigError
from .mutations import STAGE_GENES

FORMAT = "efficientbert.pipeline/1"
STANDARD_FFN = "W2(gelu(W1(x)))"


@dataclass
class WarmupSpec:
    """One warm-up KD of the supernet: general KD (pretrained teacher, unlabeled text,
    attention + hidden terms) for ``general_steps``, then task KD (fine-tuned teacher,
    training split, all terms) for ``task_steps``. Every step trains one random
    sub-network: per layer a random ``(s, ratio)`` inside the parameter window, with the
    stage's expressions (standard FFN before stages 1-2, stage 2's winner before stage 3)."""

    general_steps: int = 300  # general KD steps (0: none)
    task_steps: int = 600  # task KD steps afterwards (0: none); a task-trained supernet
    #                        makes a few dozen KD steps per candidate a usable signal
    general_lr: float = 5e-4
    task_lr: float = 4e-4
    batch_size: int = 32


@dataclass
class StageSpec:
    """Fields every stage has. ``stage`` (class attribute) selects the gene mask."""

    stage: ClassVar[int] = 0
    evaluations: int = 24  # distinct candidates scored (duplicates are free)
    controller: str = "evolution"  # "evolution", "paper" or "random"
    population: int = 8  # evolution: population size
    sample_size: int = 3  # evolution: tournament size
    batch_size: int = 2  # proposals per search step (>= workers keeps them busy)
    max_mutations: int = 3  # paper controller: mutations per proposal
    kd_steps: int = 40  # task KD steps per candidate (0 with no_training)
    rewarm: WarmupSpec | None = None  # re-warm the supernet first (None: reuse the last one)

    @property
    def genes(self) -> frozenset[str]:
        return STAGE_GENES[self.stage]

    @property
    def no_training(self) -> bool:
        return False


@dataclass
class Stage1(StageSpec):
    """Coarse search: expression, ``s`` and ratio of every layer together; seeds are the
    standard FFN at every ``(s, ratio)`` inside the budget."""

    stage: ClassVar[int] = 1
    evaluations: int = 24


@dataclass
class Stage2(StageSpec):
    """Fine search of the expressions only; ``s`` and ratio come from stage 1's winner,
    which is the seed (the population starts as its mutants)."""

    stage: ClassVar[int] = 2
    evaluations: int = 16


@dataclass
class Stage3(StageSpec):
    """Fine search of per-layer ``s`` and ratio with the expressions of stage 2's winner,
    scored without training through the re-warmed weight-sharing supernet."""

    stage: ClassVar[int] = 3
    evaluations: int = 40
    population: int = 12
    kd_steps: int = 0
    rewarm: WarmupSpec | None = field(default_factory=lambda: WarmupSpec(
        general_steps=100, task_steps=300))

    @property
    def no_training(self) -> bool:
        return True


STAGE_CLASSES: dict[int, type[StageSpec]] = {1: Stage1, 2: Stage2, 3: Stage3}


@dataclass
class StudentSpec:
    """Sizes of the supernet / students (a ``distill.config.StudentConfig`` without layers;
    the MLPs come from the search). ``num_layers`` must divide the teacher's layer count."""

    num_layers: int = 3
    hidden: int = 96  # divisible by heads
    heads: int = 12  # the teacher's head count (attention-score KD)
    embedding_size: int | None = 64  # factorized word embeddings (None: hidden)
    trigram: bool = False  # MobileBERT-style 3-gram embedding (the paper's supernet)
    max_position: int = 128

    def to_config(self, num_labels: int = 2, is_regression: bool = False) -> Any:
        from distill.config import StudentConfig

        return StudentConfig(layers=[(STANDARD_FFN, 1, self.hidden)] * self.num_layers,
                             hidden=self.hidden, heads=self.heads,
                             embedding_size=self.embedding_size, trigram=self.trigram,
                             max_position=self.max_position, num_labels=num_labels,
                             is_regression=is_regression)


@dataclass
class BudgetSpec:
    """The constraints. The paper's only one is a 15M..16M parameter window; here the
    window admits exactly the uniform standard FFNs whose ``s x ratio`` (MLP width in units
    of ``hidden``) lies in ``mlp_width``: [smallest, largest] of their whole-student sizes.
    The latency budget is ``latency_factor`` x the MLP-stack cost of the costliest of those
    seeds: "flops" (exact, deterministic), "measure" (median wall time) or None (off)."""

    mlp_width: tuple[float, float] = (0.75, 1.5)
    latency: str | None = "flops"
    latency_factor: float = 1.0


@dataclass
class ScoringSpec:
    """How stages 1-2 score a candidate (``distill.score.ScoreBudget``): task KD on rows
    ``train_slice`` of the TRAINING split, accuracy on the first ``heldout_size`` rows of
    the ``heldout`` split. The test split is never read during the search."""

    train_slice: tuple[int, int] = (0, 3200)
    heldout_size: int = 1000
    batch_size: int = 32
    lr: float = 4e-4


@dataclass
class FinalSpec:
    """The winner's task KD and its comparison with the standard FFN of the same shape (same
    per-layer ``s`` and ratio: the same parameter count) on the test split. ``init``:
    "warmup" (both inherit the first warm-up supernet, which was warmed with standard-FFN
    sub-networks: any bias favours the baseline) or "last" (the last stage's supernet)."""

    task_steps: int = 600
    lr: float = 3e-4
    batch_size: int = 32
    init: str = "warmup"
    teacher_test: bool = True  # also report the teacher's test accuracy


@dataclass
class Pipeline:
    """The whole coarse-to-fine run (a preset, possibly edited)."""

    name: str = "quick"
    task: str = "movie_binary"
    space: str = "paper"
    seed: int = 0
    workers: int = 2  # parallel candidate scorers (one torch thread each)
    threads: int = 2  # torch threads of the main process (teacher fine-tune, warm-ups,
    #                   final KD; the workers are idle then), capped at the CPU count; on a
    #                   shared machine use the free cores only (more makes OpenMP spin)
    unlabeled_limit: int | None = 6000  # general-KD sentences (an even stride; None: all)
    default_base: tuple[int, str] = (2, "1/2")  # (s, ratio) of the standard FFN a stage
    #                                             starts from when no earlier winner exists
    student: StudentSpec = field(default_factory=StudentSpec)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    scoring: ScoringSpec = field(default_factory=ScoringSpec)
    warmup: WarmupSpec = field(default_factory=WarmupSpec)
    stages: list[StageSpec] = field(default_factory=lambda: [Stage1(), Stage2(), Stage3()])
    final: FinalSpec = field(default_factory=FinalSpec)

    def stage(self, number: int) -> StageSpec:
        for s in self.stages:
            if s.stage == number:
                return s
        raise SearchConfigError("stages", f"stage {number} is not in pipeline {self.name!r} "
                                f"(it has {[s.stage for s in self.stages]})")

    def select(self, numbers: Iterable[int]) -> list[StageSpec]:
        """The stages to run, in pipeline order (``--stages 1,3``)."""
        wanted = sorted(set(numbers))
        return [self.stage(n) for n in wanted]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stages"] = [{"stage": s.stage, **dataclasses.asdict(s)} for s in self.stages]
        return {"format": FORMAT, **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pipeline:
        if not isinstance(data, dict):
            raise SearchConfigError("pipeline", "expected a JSON object, got "
                                    f"{type(data).__name__}")
        data = {k: v for k, v in data.items() if k != "format"}
        sub = {"student": StudentSpec, "budget": BudgetSpec, "scoring": ScoringSpec,
               "warmup": WarmupSpec, "final": FinalSpec}
        kw: dict[str, Any] = {}
        for key, value in data.items():
            if key in sub:
                kw[key] = _build(sub[key], value, key)
            elif key == "stages":
                kw[key] = [_stage(s, i) for i, s in enumerate(value)]
            else:
                kw[key] = value
        kw = _fix_tuples(kw)
        return _build(cls, kw, "pipeline", nested=False)

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> Pipeline:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SearchConfigError("pipeline", f"{source} is not valid JSON: {e}") from None

    def validate(self) -> Pipeline:
        """Raise :class:`SearchConfigError` naming the first bad field; return self."""
        numbers = [s.stage for s in self.stages]
        if not numbers or numbers != sorted(set(numbers)):
            raise SearchConfigError("stages", f"stages {numbers} must be distinct and in order "
                                    "(1, 2, 3 or a subset)")
        lo, hi = self.budget.mlp_width
        if not 0 < lo <= hi:
            raise SearchConfigError("budget.mlp_width", f"({lo}, {hi}) must satisfy 0 < lo <= hi")
        if self.budget.latency not in (None, "flops", "measure"):
            raise SearchConfigError("budget.latency", f"{self.budget.latency!r} must be "
                                    "'flops', 'measure' or null")
        if self.final.init not in ("warmup", "last"):
            raise SearchConfigError("final.init", f"{self.final.init!r} must be 'warmup' or "
                                    "'last'")
        for name in ("workers", "threads"):
            if getattr(self, name) < 1:
                raise SearchConfigError(name, f"{name}={getattr(self, name)} must be >= 1")
        if self.student.hidden % self.student.heads:
            raise SearchConfigError("student.hidden", f"{self.student.hidden} is not divisible "
                                    f"by heads={self.student.heads}")
        return self


def _build(cls: type, value: Any, where: str, nested: bool = True) -> Any:
    if not isinstance(value, dict):
        raise SearchConfigError(where, f"expected an object, got {value!r}")
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - known - {"stage"})
    if unknown:
        raise SearchConfigError(where, f"unknown field(s) {unknown}; known: {sorted(known)}")
    value = {k: v for k, v in value.items() if k != "stage"}
    if cls in STAGE_CLASSES.values() and isinstance(value.get("rewarm"), dict):
        value["rewarm"] = _build(WarmupSpec, value["rewarm"], f"{where}.rewarm")
    return cls(**(_fix_tuples(value) if nested else value))


def _stage(value: Any, i: int) -> StageSpec:
    number = value.get("stage") if isinstance(value, dict) else None
    if number not in STAGE_CLASSES:
        raise SearchConfigError(f"stages[{i}].stage", f"{number!r} must be 1, 2 or 3")
    return _build(STAGE_CLASSES[number], value, f"stages[{i}]")


def _fix_tuples(d: dict[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples the dataclasses declare."""
    return {k: tuple(v) if k in ("mlp_width", "train_slice", "default_base") and
            isinstance(v, list) else v for k, v in d.items()}


# ------------------------------------------------------------------------- presets
def quick_preset() -> Pipeline:
    """Fits in about 15 minutes on 2 CPU cores (after the one-time teacher fine-tune):
    a 3-layer, hidden-96 student; short KD runs; small evaluation budgets."""
    return Pipeline()


def full_preset() -> Pipeline:
    """For a real machine (many cores or a GPU): 6 layers with the paper's 3-gram
    embedding, longer warm-ups and KD runs, a few hundred evaluations per stage."""
    return Pipeline(
        name="full", workers=4, threads=4, unlabeled_limit=None,
        student=StudentSpec(num_layers=6, hidden=264, embedding_size=128, trigram=True),
        scoring=ScoringSpec(train_slice=(0, 8000), heldout_size=1012),
        warmup=WarmupSpec(general_steps=20_000, task_steps=4_000),
        stages=[Stage1(evaluations=300, population=48, sample_size=8, batch_size=8,
                       kd_steps=500),
                Stage2(evaluations=200, population=32, sample_size=6, batch_size=8,
                       kd_steps=500),
                Stage3(evaluations=500, population=48, sample_size=8, batch_size=8,
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
        return Pipeline.from_json(text, str(path)).validate()
    if preset not in PRESETS:
        raise SearchConfigError("preset", f"unknown preset {preset!r}; choose one of "
                                f"{sorted(PRESETS)} or pass a pipeline JSON file")
    return PRESETS[preset]().validate()


# ------------------------------------------------------------- budgets and samplers
@dataclass(frozen=True)
class Constraints:
    """The absolute constraints of a run, derived from :class:`BudgetSpec`."""

    param_window: tuple[int, int]
    latency_budget: float | None
    latency_proxy: str
    window_seeds: tuple[str, ...]  # "s x ratio" of the standard FFNs that define the window

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def derive_constraints(pipeline: Pipeline, student_config: Any) -> Constraints:
    """The parameter window and latency budget for ``student_config`` (see BudgetSpec)."""
    from .budget import LatencyMeter, ParamCounter

    space = mlpgraph.SPACES[pipeline.space]
    counter = ParamCounter.from_student_config(student_config)
    lo, hi = pipeline.budget.mlp_width
    seeds = [c for c in seed_candidates(space, pipeline.student.num_layers)
             if lo <= float(c.layers[0].stacks * c.layers[0].ratio) <= hi]
    if not seeds:
        raise SearchConfigError("budget.mlp_width", f"({lo}, {hi}) admits no standard FFN: "
                                "s x ratio takes values such as 0.25, 0.5, 1, 2; widen it")
    sizes = [counter(c) for c in seeds]
    proxy = pipeline.budget.latency or "flops"
    latency = None
    if pipeline.budget.latency is not None:
        meter = LatencyMeter(counter.hidden, proxy=proxy)
        latency = pipeline.budget.latency_factor * max(meter(c) for c in seeds)
    names = tuple(f"{c.layers[0].stacks}x{c.layers[0].ratio}" for c in seeds)
    return Constraints((min(sizes), max(sizes)), latency, proxy, names)


def default_base(pipeline: Pipeline) -> Candidate:
    """The uniform standard FFN at :attr:`Pipeline.default_base`."""
    s, r = pipeline.default_base
    return uniform_candidate(STANDARD_FFN, int(s), parse_ratio(r), pipeline.student.num_layers)


def supernet_sampler(space: mlpgraph.Space, expressions: Sequence[str], hidden: int,
                     feasible: Callable[[Candidate], bool] | None = None,
                     tries: int = 50) -> Callable[[random.Random], list[tuple[str, int, int]]]:
    """``sampler(rng) -> [(expr, s, d_inner)]`` for supernet warm-up: per layer a random
    ``(s, ratio)`` of the space with that layer's expression, resampled (up to ``tries``
    times) until ``feasible`` accepts it."""
    graphs = [mlpgraph.parse(e) for e in expressions]

    def sample(rng: random.Random) -> list[tuple[str, int, int]]:
        cand = None
        for _ in range(tries):
            genes = tuple(LayerGene(g, rng.choice(space.stacks), rng.choice(space.ratios))
                          for g in graphs)
            cand = Candidate(genes)
            if feasible is None or feasible(cand):
                break
        assert cand is not None
        return [(e, g.stacks, g.d_inner(hidden))
                for e, g in zip(expressions, cand.layers, strict=True)]

    return sample


def search_config(pipeline: Pipeline, spec: StageSpec, *, base: Candidate | None,
                  student_config: str | Path, constraints: Constraints,
                  score_budget: Any, backend: str = "local",
                  address: str | None = None) -> Any:
    """The :class:`~searcher.config.SearchConfig` of one stage."""
    from .config import SearchConfig

    return SearchConfig(
        space=pipeline.space, num_layers=pipeline.student.num_layers, stage=spec.stage,
        base=None if spec.stage == 1 or base is None else base.to_dict(),
        student_config=str(student_config), param_window=constraints.param_window,
        latency_budget=constraints.latency_budget, latency_proxy=constraints.latency_proxy,
        controller=spec.controller, evaluations=spec.evaluations, batch_size=spec.batch_size,
        population=spec.population, sample_size=spec.sample_size,
        max_mutations=spec.max_mutations, seed=pipeline.seed * 100 + spec.stage,
        workers=pipeline.workers, backend=backend, address=address,
        score_budget=score_budget).validate()
