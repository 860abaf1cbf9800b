"""The task registry: every task by name (:data:`TASKS`, :func:`get_task_spec`,
:func:`register_task`) and tokenization of a task's rows (:func:`tokenize_task`).

A task is a :class:`~distill.taskspec.TaskSpec`, declared beside its loader: the GLUE tasks
in :mod:`distill.glue`, the embedded sentiment tasks in :mod:`distill.sentiment`, a user's
data files in :mod:`distill.userdata` (registered on use); SQuAD is :mod:`distill.squad`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets

from .errors import DataFormatError
from .glue import GLUE_TASKS
from .sentiment import SENTIMENT_TASKS
from .taskspec import TaskSpec

TASKS: dict[str, TaskSpec] = {**GLUE_TASKS, **SENTIMENT_TASKS}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to :data:`TASKS` (its name must be new); return it."""
    if spec.name.lower() in TASKS:
        raise ValueError(f"a task named {spec.name!r} is already registered; choose another "
                         "name")
    TASKS[spec.name.lower()] = spec
    return spec


def get_task_spec(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of a GLUE task (``"mnli"``) or embedded task (``"movie_binary"``)."""
    try:
        return TASKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}") from None


def tokenize_task(dataset: datasets.Dataset | datasets.DatasetDict, tokenizer: Any,
                  spec: TaskSpec, max_length: int = 128, padding: bool | str = "max_length",
                  keep_columns: Sequence[str] = ()) -> datasets.Dataset | datasets.DatasetDict:
    """Tokenize a single-sentence or sentence-pair task.

    Output columns: the tokenizer's (input_ids, token_type_ids, attention_mask),
    ``label`` and any ``keep_columns``; pairs are truncated longest-first.
    """
    first = dataset[next(iter(dataset))] if isinstance(dataset, datasets.DatasetDict) else dataset
    missing = [c for c in spec.text_columns if c not in first.column_names]
    if missing:
        raise DataFormatError(f"dataset lacks text column(s) {missing} of task {spec.name}; "
                              f"it has {first.column_names}")
    keep = {"label", *keep_columns}

    def encode(batch: dict[str, list]) -> Any:
        return tokenizer(*(batch[c] for c in spec.text_columns), truncation=True,
                         max_length=max_length, padding=padding)

    return dataset.map(encode, batched=True, desc=f"tokenizing {spec.name}",
                       remove_columns=[c for c in first.column_names if c not in keep])


__all__ = ["TASKS", "TaskSpec", "get_task_spec", "register_task", "tokenize_task"]
