"""The ``"ray"`` executor: one remote task per scorer call on a Ray cluster.

``ray.init(address=...)`` (``None`` starts a local Ray whose workers get this process's
``sys.path`` as ``PYTHONPATH``; a remote cluster must be able to import the scorer and the
plugins itself), one remote task per call (``max_retries=0``), waited on as
``ObjectRef.future()``; a timeout cancels it with ``force=True`` (killing its worker).
Workers are warmed up before any timeout runs; a timeout counts from submission, so it
includes a restart after a crash. The scorer and each task travel as pickled bytes that a
worker unpickles only after importing the plugins (so their primitives, tasks and classes
resolve).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import time
from collections.abc import Sequence
from typing import Any

from .errors import WorkerError
from .execution import Call, Executor, Job, Task, call_scorer, executor
from .plugins import load_plugins

_SCORERS: dict[bytes, Any] = {}  # in each Ray worker: digest of the pickled scorer -> it


def _worker_scorer(plugins: Sequence[str], scorer: bytes) -> Any:
    """The scorer, unpickled once per worker process after the plugins are imported."""
    import mlpgraph  # noqa: F401 - specs carry graphs

    key = hashlib.sha256(scorer).digest()
    if key not in _SCORERS:
        load_plugins(plugins)
        _SCORERS[key] = pickle.loads(scorer)
    return _SCORERS[key]


def _warm_up(plugins: Sequence[str], scorer: bytes) -> int:
    _worker_scorer(plugins, scorer)
    return os.getpid()


def _call(plugins: Sequence[str], scorer: bytes, task: bytes) -> Call:
    fn = _worker_scorer(plugins, scorer)
    spec, budget = pickle.loads(task)
    return call_scorer(fn, spec, budget)


@executor("ray")
class RayExecutor(Executor):
    """Remote tasks on a Ray cluster (see the module doc)."""

    def __init__(self, scorer: Any, *, workers: int = 1, timeout: float | None = None,
                 address: str | None = None, num_cpus_per_task: float = 1.0,
                 init_kwargs: dict[str, Any] | None = None,
                 plugins: Sequence[str] | None = None) -> None:
        super().__init__(scorer, workers=workers, timeout=timeout, plugins=plugins)
        try:
            import ray
            from ray import cloudpickle
        except ImportError:
            raise WorkerError("executor 'ray' needs Ray: pip install 'efficientbert[ray]' "
                              "(or use executor 'local')") from None
        self.ray, self.pickle = ray, cloudpickle
        self.owns = not ray.is_initialized()
        if self.owns:
            self._init(address, workers, init_kwargs)
        remote = ray.remote(max_retries=0, num_cpus=num_cpus_per_task)
        self.remote = remote(_call)
        self.scorer_ref = ray.put(cloudpickle.dumps(scorer))
        # warm up: start the workers and load the scorer there before any timeout runs
        warm = remote(_warm_up)
        ray.get([warm.remote(self.plugins, self.scorer_ref) for _ in range(workers)])

    def _init(self, address: str | None, workers: int,
              init_kwargs: dict[str, Any] | None) -> None:
        kw = {"include_dashboard": False, "log_to_driver": False, **(init_kwargs or {})}
        if address is None:  # a local Ray: its workers import what this process can
            kw.setdefault("num_cpus", workers)
            path = [p for p in sys.path if p and os.path.isdir(p)]
            kw.setdefault("runtime_env", {"env_vars": {"PYTHONPATH": os.pathsep.join(path)}})
        try:
            self.ray.init(address=address, **kw)
        except Exception as e:  # noqa: BLE001 - connection errors come in many types
            raise WorkerError(f"cannot start or reach Ray at address={address!r}: "
                              f"{type(e).__name__}: {e}") from None

    @classmethod
    def from_settings(cls, scorer: Any, *, workers: int, timeout: float | None,
                      address: str | None) -> Executor:
        return cls(scorer, workers=workers, timeout=timeout, address=address)

    def _launch(self, index: int, task: Task) -> Job:
        payload = self.pickle.dumps((task.spec, task.budget))
        ref = self.remote.remote(self.plugins, self.scorer_ref, payload)
        return Job(index, ref.future(), "ray", time.time(), ref)

    def _finished(self, job: Job, error: Exception | None) -> str | None:
        return None if error is None else (
            f"the Ray task failed ({type(error).__name__}: {str(error)[:500]}); the candidate "
            "is marked failed")

    def _kill(self, job: Job) -> str:
        self.ray.cancel(job.handle, force=True)
        return "the Ray task was cancelled"

    def close(self) -> None:
        if self.owns and self.ray.is_initialized():
            self.ray.shutdown()
