"""The record of one task: :class:`TaskSpec` (columns, labels, metrics, splits, loader).

The tasks themselves are declared beside their loaders (:mod:`distill.glue`,
:mod:`distill.sentiment`, :mod:`distill.userdata`); :mod:`distill.data` is the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from .errors import DatasetUnavailableError


@dataclass(frozen=True)
class TaskSpec:
    """How to read, tokenize and score one sentence(-pair) task."""

    name: str
    text_columns: tuple[str, ...]
    num_labels: int  # 1 for regression
    is_regression: bool
    metric_names: tuple[str, ...]
    label_names: tuple[str, ...] = ()
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)
    max_length: int = 128  # default truncation in tokens
    loader: Callable[[TaskSpec, str | Path | None], datasets.DatasetDict] | None = field(
        default=None, compare=False, repr=False)  # (spec, cache_dir) -> the splits
    unlabeled_text: Callable[[TaskSpec, str | Path | None], Iterator[str]] | None = field(
        default=None, compare=False, repr=False)  # general-KD text (None: the train texts)
    assets: tuple[str, ...] = ()  # offline assets the loaders need (distill.assets)
    data_fingerprint: str | None = None  # of the data (file tasks): part of cache keys
    notes: tuple[str, ...] = field(default=(), compare=False)  # for summaries and reports

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def final_split(self) -> str:
        """The split final results are reported on: the first test split, or the first
        evaluation split when the task has no labelled test split (GLUE, files without a
        test file; :attr:`notes` then says so)."""
        return (self.test_splits or self.eval_splits)[0]

    @property
    def search_split(self) -> str | None:
        """The split a search may score candidates on: the first evaluation split that is not
        the final split (the sentiment tasks' ``heldout``, a user's validation file when a
        test file is given); None when the search must hold out rows of train instead."""
        return next((s for s in self.eval_splits if s != self.final_split), None)

    def load(self, cache_dir: str | Path | None = None) -> datasets.DatasetDict:
        """The task's ``DatasetDict`` (every split the loader provides)."""
        if self.loader is None:
            raise DatasetUnavailableError(f"task {self.name!r} has no loader; register it with "
                                          "register_task(TaskSpec(..., loader=fn))")
        return self.loader(self, cache_dir)

    def unlabeled(self, cache_dir: str | Path | None = None) -> Iterator[str]:
        """Sentences for general KD that hold no evaluation or test text: the task's own
        source of unlabeled text, or else the texts of its training split."""
        if self.unlabeled_text is not None:
            yield from self.unlabeled_text(self, cache_dir)
            return
        train = self.load(cache_dir)[self.train_split]
        for col in self.text_columns:
            yield from train[col]


__all__ = ["TaskSpec"]
