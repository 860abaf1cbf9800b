"""Where scorer calls run: in this process, a local process pool, or Ray (or a plugin's).

- ``"inline"`` (:mod:`searcher.execution`): in this process, one task at a time; for tests
  and debugging.
- ``"local"`` (:mod:`searcher.local_workers`, the default): spawn processes on this machine.
- ``"ray"`` (:mod:`searcher.ray_workers`): remote tasks on a Ray cluster.

The scheduling loop, :class:`Task`, :class:`Outcome` and the registry live in
:mod:`searcher.execution`; a new kind is a subclass of :class:`Executor` declared with
``@executor("name")``, and becomes a valid ``executor.kind`` at once.
"""

from __future__ import annotations

from typing import Any

from .errors import SearchConfigError
from .execution import (
    EXECUTORS,
    Executor,
    InlineExecutor,
    Job,
    Outcome,
    Task,
    call_scorer,
    executor,
)
from .local_workers import LocalExecutor
from .ray_workers import RayExecutor


def make_executor(kind: str, scorer: Any, *, workers: int = 1, timeout: float | None = None,
                  address: str | None = None) -> Executor:
    """An executor by kind, one of :data:`EXECUTORS` (``address`` only matters to Ray)."""
    cls = EXECUTORS.get(kind)
    if cls is None:
        raise SearchConfigError("executor.kind", f"unknown executor {kind!r}; choose one of "
                                f"{tuple(EXECUTORS)}")
    return cls.from_settings(scorer, workers=workers, timeout=timeout, address=address)


__all__ = ["EXECUTORS", "Executor", "InlineExecutor", "Job", "LocalExecutor", "Outcome",
           "RayExecutor", "Task", "call_scorer", "executor", "make_executor"]
