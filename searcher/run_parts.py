"""The leaf pieces of a pipeline (see :mod:`searcher.run_config`): the student's shape, the
budget, how a candidate is scored, a warm-up, and the final comparison.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt, model_validator

from mlpgraph import STANDARD_FFN

from .config_base import MetricName, Model, Probability


class StudentShape(Model):
    """Sizes of the supernet and students (a ``distill.StudentConfig`` without its layers:
    the MLPs come from the search). ``num_layers`` must divide the teacher's."""

    num_layers: PositiveInt = Field(3, description="Transformer layers (must divide the "
                                    "teacher's)")
    hidden: PositiveInt = Field(192, description="model width (divisible by heads)")
    heads: PositiveInt = Field(12, description="attention heads: the teacher's count "
                               "(attention-score KD)")
    embedding_size: PositiveInt | None = Field(
        24, description="factorized word embeddings (null: hidden); small, so that the "
        "MLPs hold >= 25% of the parameters, as in the paper's model")
    trigram: bool = Field(False, description="MobileBERT-style 3-gram embedding (the paper's "
                          "supernet)")
    max_position: PositiveInt = Field(128, description="position embeddings (longest input)")

    @model_validator(mode="after")
    def _check(self) -> StudentShape:
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} is not divisible by heads={self.heads}")
        return self

    def to_config(self, num_labels: int = 2, is_regression: bool = False,
                  vocab_size: int = 30522) -> Any:
        """The ``distill.StudentConfig`` with the standard FFN in every layer (the
        vocabulary is the teacher's)."""
        from distill import StudentConfig

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

    mlp_width: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = Field(
        (2.0, 3.0), description="(low, high) s x ratio of the standard FFNs that span the "
        "parameter window")
    latency: Literal["flops", "measure"] | None = Field(
        "flops", description="the latency budget's cost: exact FLOPs, measured wall time, or "
        "null (no latency budget)")
    latency_factor: Annotated[float, Field(gt=0)] = Field(
        1.0, description="the budget as a multiple of the costliest window seed's cost")

    @model_validator(mode="after")
    def _check(self) -> BudgetSpec:
        if self.mlp_width[0] > self.mlp_width[1]:
            raise ValueError(f"mlp_width {self.mlp_width} must be (low, high), low <= high")
        return self


class ScoreSpec(Model):
    """How stages score a candidate (``distill.ScoreBudget``): task KD on rows
    ``train_slice`` of the TRAINING split, then metrics on held-out rows: the task's metrics
    on the first ``heldout_size`` rows of its evaluation split, and the KD objective
    (``kd_loss``) and the KL from the teacher's outputs (``teacher_kl``) on those rows plus
    ``fitness_rows`` unlabeled sentences no warm-up saw. The test split is never read during
    the search."""

    train_slice: tuple[NonNegativeInt, PositiveInt] = Field(
        (0, 3200), description="(start, stop) rows of the training split a candidate's KD "
        "reads")
    heldout_size: PositiveInt = Field(1000, description="held-out rows of the evaluation "
                                      "split the metrics are measured on")
    fitness_rows: NonNegativeInt = Field(300, description="held-out unlabeled sentences for "
                                         "the KD fitness")
    batch_size: PositiveInt = Field(32, description="KD minibatch")
    lr: Annotated[float, Field(gt=0)] = Field(4e-4, description="KD learning rate")
    rank_by: MetricName | None = Field(
        "kd_loss", description="the metric the search ranks by, in its declared direction "
        "(null: the task's first metric)")
    tie_break: MetricName | None = Field("teacher_kl", description="orders equal scores (then "
                                         "the candidate id)")
    common_noise: bool = Field(True, description="every candidate of a stage sees the same "
                               "batches and the same dropout stream per step (common random "
                               "numbers)")
    dropout: Probability | None = Field(
        0.0, description="dropout during a candidate's short KD (null: the student's 0.1); 0 "
        "makes a score depend on the batches only, and steps faster")
    latency_repeats: NonNegativeInt = Field(0, description="timed forward runs of each "
                                            "candidate (0: none; the budget check uses exact "
                                            "FLOPs)")


class WarmupSpec(Model):
    """One warm-up KD of the supernet: general KD (pretrained teacher, unlabeled text) for
    ``general_steps``, then task KD (fine-tuned teacher, training split) for ``task_steps``.
    Every step trains one random sub-network inside the parameter window."""

    general_steps: NonNegativeInt = Field(300, description="general-KD steps (pretrained "
                                          "teacher, unlabeled text)")
    task_steps: NonNegativeInt = Field(500, description="task-KD steps (fine-tuned teacher, "
                                       "training split)")
    general_lr: Annotated[float, Field(gt=0)] = Field(5e-4, description="general-KD "
                                                      "learning rate")
    task_lr: Annotated[float, Field(gt=0)] = Field(4e-4, description="task-KD learning rate")
    batch_size: PositiveInt = Field(32, description="KD minibatch")
    pool: Literal["base", "mixed"] = Field(
        "mixed", description="the expression of each layer at each step: 'base': the stage's "
        "own (the standard FFN before stage 1, stage 2's winner before stage 3); 'mixed': the "
        "stage's own with probability own_share, else one drawn from the standard FFN, the "
        "paper's six and random_members random members of the space")
    own_share: Probability = Field(0.0, description="'mixed' pool: chance a step trains the "
                                   "stage's own expressions")
    random_members: NonNegativeInt = Field(8, description="'mixed' pool: random members of "
                                           "the space in the pool")


class FinalSpec(Model):
    """The winner's task KD and its comparison with the standard FFN of the same shape on
    the test split. ``init``: "warmup" (both inherit the first warm-up supernet) or "last"
    (the last stage's supernet)."""

    task_steps: PositiveInt = Field(300, description="task-KD steps of each final student")
    lr: Annotated[float, Field(gt=0)] = Field(1e-3, description="task-KD learning rate "
                                              "(bench_distill's tuned rate)")
    batch_size: PositiveInt = Field(32, description="KD minibatch")
    label_weight: NonNegativeFloat = Field(1.0, description="hard-label loss added to task "
                                           "KD (0: pure KD)")
    seeds: PositiveInt = Field(3, description="paired seeds per student (same batches; same "
                               "initial weights where shapes match); 3 or more give a "
                               "confidence interval")
    equal_params: bool = Field(True, description="also train a uniform standard FFN of the "
                               "winner's size")
    fixed: tuple[str, ...] = Field((), description="expressions also trained on every layer "
                                   'at the winner\'s shape (e.g. "tanh(W2(gelu(W1(x))))")')
    init: Literal["warmup", "last"] = Field(
        "warmup", description="initial weights: 'warmup' (the first warm-up supernet) or "
        "'last' (the last stage's supernet)")
    teacher_test: bool = Field(True, description="also report the teacher's test metrics")


__all__ = ["BudgetSpec", "FinalSpec", "ScoreSpec", "StudentShape", "WarmupSpec"]
