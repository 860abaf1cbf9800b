"""The typed records a run writes, read back by the summary, the report and ``--resume``.

::

    RunResults                  RUN_DIR/results.json (format FORMAT)
    ├── stages: StageRecord     RUN_DIR/stage<n>/stage.json, one per search stage
    └── final: FinalRecord      the winner against the FFN baselines over paired seeds
        ├── models: ModelRow    one per trained student (winner, baseline, equal_params, ...)
        ├── contrasts: Contrast the winner minus another model, one Comparison per metric
        └── teacher: TeacherRow the fine-tuned teacher on the same splits

Every model is pydantic: unknown fields are kept out (``extra="forbid"``) and the JSON schema
is :func:`results_schema` (``efficientbert config --schema results``). A metric in a record is
named by :class:`MetricRef` (the metric and the split it was measured on), never by a
``"split/name"`` string.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import RunFolderError

FORMAT = "efficientbert.run/3"
#: older results formats this version reads (their fields are a subset of today's)
READS = ("efficientbert.run/3",)


class Record(BaseModel):
    """Base of the records: unknown fields are errors, values are checked."""

    model_config = ConfigDict(extra="forbid")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class MetricRef(Record):
    """A metric measured on a split: ``split`` None means the held-out fitness rows (the
    search's split), otherwise the named task split (e.g. ``test``)."""

    name: str = Field(description="the metric (distill.metric(name) declares its direction)")
    split: str | None = Field(None, description="the task split; None: held-out fitness rows")

    @property
    def label(self) -> str:
        return self.name if self.split is None else f"{self.split} {self.name}"


class StageRecord(Record):
    """One search stage as ``stage<n>/stage.json`` keeps it."""

    stage: int = Field(description="1 (expression, s, ratio), 2 (expressions) or 3 (s, ratio)")
    seconds: float = Field(description="wall time of the stage's search")
    rank_by: str = Field(description="the metric the stage ranked by")
    evaluations: int = Field(description="distinct candidates scored")
    proposals: int = Field(description="candidates proposed (duplicates included)")
    best_score: float | None = Field(description="the best candidate's mean at its top rung")
    best_rung: int = Field(description="the rung that score comes from")
    confirmed: float | None = Field(description="the best candidate re-scored on fresh seeds")
    control: float | None = Field(description="the same-shape standard FFN at that rung")
    delta: float | None = Field(description="best_score - control (same seeds)")
    fallback: str | None = Field(description="why the FFN control went on instead, if so")
    searched: str = Field(description="the best candidate (expr @ s x ratio per layer)")
    winner: dict[str, Any] = Field(description="the candidate handed on (Candidate JSON)")
    describe: str = Field(description="that candidate, one line")
    params: int | None = Field(description="its parameters (whole student)")
    latency_ms: float | None = Field(description="its measured latency, if the scorer timed it")
    base: dict[str, Any] | None = Field(description="the stage's seed candidate (stages 2, 3)")
    base_score: float | None = Field(description="the seed candidate's score")
    dedupe: dict[str, Any] = Field(description="duplicate statistics (by key, fingerprint)")
    stopped: str = Field(description="why the search loop ended")
    supernet: str = Field(description="the warmed supernet the stage scored from")
    constraints: dict[str, Any] = Field(description="feasibility statistics of the proposals")
    top: list[dict[str, Any]] = Field(description="the five best candidates, best first")

    @property
    def handed_on(self) -> str | None:
        """The candidate handed on in place of the searched best (the FFN control), if any."""
        return self.describe if self.fallback and self.searched != self.describe else None


class Comparison(Record):
    """The winner minus another model on one metric, paired over seeds."""

    metric: MetricRef
    higher_is_better: bool
    a: list[float] = Field(description="the winner's value per seed")
    b: list[float] = Field(description="the other model's value per seed")
    delta_mean: float
    ci95: tuple[float, float] = Field(description="95% t-interval of the mean difference")
    seeds: int
    verdict: str = Field(description="one sentence that says what the interval says")

    @property
    def excludes_zero(self) -> bool:
        return self.ci95[0] > 0 or self.ci95[1] < 0


class Latency(Record):
    """Median forward time of a model (ms) at batch 1 and batch 32 (sequence: the task's
    length), over interleaved rounds."""

    batch1_ms: float
    batch32_ms: float


class LatencyConditions(Record):
    """Where and how the latencies of a final step were measured."""

    seq: int = Field(description="tokens per row")
    device: str
    threads: int = Field(description="torch threads")
    rounds: int = Field(description="interleaved rounds (each model once per round)")
    load: tuple[float, float] = Field(description="1-minute load average before and after")


class LatencyComparison(Record):
    """The winner's forward time relative to another model's at one batch size: the mean
    of the per-round ratios minus 1 (negative: the winner is faster) and its 95% interval."""

    batch: int
    change: float = Field(description="mean(winner / other) - 1 over the rounds")
    ci95: tuple[float, float]
    rounds: int
    verdict: str


class Contrast(Record):
    """The winner against one other model."""

    other: str = Field(description="the other model's role (baseline, equal_params, ...)")
    comparisons: list[Comparison]
    latency: list[LatencyComparison] = Field(default_factory=list)

    def get(self, ref: MetricRef) -> Comparison | None:
        return next((c for c in self.comparisons if c.metric == ref), None)


class ModelRow(Record):
    """One trained student, means over the final seeds."""

    role: str = Field(description="winner, baseline, equal_params, fixed1, ...")
    describe: str = Field(description="expr @ s x ratio per layer")
    expressions: list[str]
    params: int
    mlp_mflops: float | None = Field(description="the MLP stacks' exact MFLOPs (512 rows)")
    latency: Latency | None = Field(description="median forward times (LatencyConditions)")
    diverged: bool
    kd_steps: int
    eval: dict[str, float | None] = Field(description="task metrics on the held-out split")
    test: dict[str, float | None] = Field(description="task metrics on the final split")
    kd: dict[str, float | None] = Field(description="KD diagnostics on the fitness rows")
    per_seed: list[dict[str, Any]] = Field(description="each seed's ScoreResult")
    folder: str = Field(description="seed 0's model folder")
    same_as: str | None = Field(None, description="the role whose training this row reuses")


class TeacherRow(Record):
    """The fine-tuned teacher on the final and the held-out split."""

    params: int
    latency: Latency | None
    folder: str
    test: dict[str, float] = Field(default_factory=dict)
    eval: dict[str, float] = Field(default_factory=dict)


class FinalRecord(Record):
    """The final step: every trained model, the winner's contrasts, the teacher."""

    splits: dict[str, str] = Field(description="eval and test: the splits' names")
    notes: list[str] = Field(default_factory=list)
    metrics: list[str] = Field(description="the task's metrics, the first is primary")
    seeds: int
    recipe: dict[str, Any] = Field(description="the training budget every student got")
    models: dict[str, ModelRow]
    contrasts: list[Contrast]
    teacher: TeacherRow | None = None
    latency: LatencyConditions | None = None

    def contrast(self, other: str) -> Contrast | None:
        return next((c for c in self.contrasts if c.other == other), None)


class RunResults(Record):
    """``RUN_DIR/results.json``."""

    format: str = FORMAT
    run_dir: str
    pipeline: dict[str, Any]
    stages_run: list[int]
    constraints: dict[str, Any]
    stages: list[StageRecord]
    final: FinalRecord | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    teacher: dict[str, Any] = Field(default_factory=dict, description="the teacher's folder")
    task: dict[str, Any] = Field(default_factory=dict)
    caches: dict[str, Any] = Field(default_factory=dict)
    machine: dict[str, Any] = Field(default_factory=dict)
    report: str | None = None
    report_error: str | None = None


def results_schema() -> dict[str, Any]:
    """The JSON schema of ``results.json``."""
    return RunResults.model_json_schema()


def load_results(path: str | Path) -> RunResults:
    """Read a ``results.json``; an older or foreign format is refused with what to do."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RunFolderError(f"cannot read {path}: {e}") from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt not in READS:
        raise RunFolderError(
            f"{path} is a results file of format {fmt!r}; this version reads "
            f"{', '.join(READS)}. Re-run the final step with `efficientbert run --resume` "
            "(finished stages and trainings are reused) or use the version that wrote it")
    try:
        return RunResults.model_validate(data)
    except ValidationError as e:
        raise RunFolderError(f"{path} does not hold valid run results: "
                             f"{e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None


def load_stage(path: str | Path) -> StageRecord:
    """Read a ``stage.json`` (refused with the reason when it is not a stage record)."""
    path = Path(path)
    try:
        return StageRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError) as e:
        raise RunFolderError(f"{path} is not a stage record ({type(e).__name__}: "
                             f"{str(e).splitlines()[0]}); delete it to re-run that stage's "
                             "summary from its journal") from None


__all__ = ["FORMAT", "Comparison", "Contrast", "FinalRecord", "Latency", "LatencyComparison",
           "LatencyConditions", "MetricRef", "ModelRow",
           "RunResults", "StageRecord", "TeacherRow", "load_results", "load_stage",
           "results_schema"]
