"""Where scorer calls run: in this process, a local process pool, or Ray.

Every executor's :meth:`Executor.run` takes a list of :class:`Task` and returns one
:class:`Outcome` per task *in task order* (so results are applied in proposal order
whatever the completion order), calling ``on_done`` as each one finishes (the search
journals it at once; tasks that finish together are reported in task order). A scorer that
raises gives ``status="failed"`` with the traceback; a worker that dies (segfault,
``os._exit``, out of memory) gives ``"failed"`` and is replaced; one that runs past
``timeout`` seconds is killed (and replaced) and gives ``"timeout"``. The search goes on.

One scheduling loop (:meth:`Executor.run`) serves every executor: keep up to ``workers``
tasks in flight, sleep until the first completion or the nearest deadline
(``concurrent.futures.wait``), record what finished, kill what is overdue. An executor says
only how to launch a task as a ``Future`` (``_launch``), what a failed future means
(``_finished``) and how to kill an overdue task (``_kill``). A timeout counts from the launch.

- ``"inline"``: in this process, one task at a time (its future is done when launched). For
  tests and debugging; a timeout cannot be enforced and a hard crash takes the search down.
- ``"local"`` (default): ``workers`` spawn-context processes, each its own one-process
  ``concurrent.futures.ProcessPoolExecutor``: a crash breaks (and is charged to) that one
  slot only, a hung one is killed by its pid, and the slot is replaced in the background
  (tasks go to it once started: a timeout never includes a restart). Processes live across
  ``run`` calls (so do the scorer's per-process caches) and exit when the search process
  dies, even by SIGKILL.
- ``"ray"``: ``ray.init(address=...)`` (``None`` starts a local Ray whose workers get this
  process's ``sys.path`` as ``PYTHONPATH``; a remote cluster must import the scorer itself),
  one remote task per call (``max_retries=0``), waited on as ``ObjectRef.future()``; a
  timeout cancels it with ``force=True`` (killing its worker). Workers are warmed up before
  any timeout runs; a timeout counts from submission, so it includes a restart after a crash.

Why ``concurrent.futures`` and not Pebble (evaluated: 5.2.3, maintained; ``ProcessPool`` has
per-task timeouts, worker restarts, initializer, spawn context): its workers share one pipe
and one process-shared lock, and it is weakest on the paths this module exists for. Killing
an idle worker (as the out-of-memory killer may, one holding large caches) breaks the whole
pool (measured: the next ``schedule`` raises ``RuntimeError: Unexpected error within the
Pool``; every worker and cache is gone); a worker dying in its initializer orphans or aborts
tasks; noxdafox/pebble#153 (open: a task never completes when a worker is killed for a
timeout as it takes the next task), #163 (a worker killed holding the channel lock blocks the
others). Its timeouts would not remove the loop's deadline sweep, which Ray needs anyway. A
single-process standard-library executor per slot shares nothing: a slot breaks and is
replaced alone, and no (LGPL) dependency is added.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import SearchConfigError, WorkerError

_SCORER: Any = None  # set in each worker process by _init_worker


@dataclass(frozen=True)
class Task:
    """One scorer call: ``key`` identifies it to the caller (e.g. ``(step, idx, rung)``)."""

    key: tuple
    spec: Any
    budget: Any


@dataclass
class Outcome:
    """What came back: ``status`` ``ok`` (``result`` holds the scorer's value), ``failed``
    or ``timeout`` (``error`` says what happened)."""

    key: tuple
    status: str
    result: Any = None
    error: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    worker: str = ""


def call_scorer(scorer: Any, spec: Any, budget: Any) -> tuple[str, Any, str | None]:
    """Run one scorer call, catching its exceptions (this runs inside workers)."""
    try:
        return "ok", scorer(spec, budget), None
    except Exception as e:  # noqa: BLE001 - any scorer error marks the candidate failed
        tb = traceback.format_exc(limit=20)
        return "failed", None, f"{type(e).__name__}: {e}\n{tb}"


def _init_worker(scorer: Any) -> None:
    global _SCORER
    import mlpgraph  # noqa: F401 - candidate specs carry graphs: load while starting, not in
    #                  the first (timed) task
    _SCORER = scorer
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose search process died (even by SIGKILL) must not linger."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _warm_up(scorer: Any) -> int:
    import mlpgraph  # noqa: F401 - as in _init_worker: specs carry graphs

    return os.getpid()


def _run_in_worker(spec: Any, budget: Any) -> tuple[str, Any, str | None]:
    return call_scorer(_SCORER, spec, budget)


@dataclass(eq=False)
class _Job:
    """A task in flight: its index in the ``run`` call, its future, where and since when it
    runs, and the executor's own handle on it (a local slot, a Ray ObjectRef)."""

    index: int
    future: Future
    worker: str
    started: float
    handle: Any = None


class Executor(ABC):
    """Runs scorer calls through the one scheduling loop; see the module doc."""

    name: ClassVar[str] = ""

    def __init__(self, scorer: Any, *, workers: int = 1, timeout: float | None = None) -> None:
        if workers < 1:
            raise SearchConfigError("workers", f"{workers} must be >= 1")
        if timeout is not None and not timeout > 0:
            raise SearchConfigError("timeout", f"{timeout} must be a positive number of "
                                    "seconds, or None for no limit")
        self.scorer, self.workers, self.timeout = scorer, workers, timeout

    @classmethod
    def from_settings(cls, scorer: Any, *, workers: int, timeout: float | None,
                      address: str | None) -> Executor:
        """Build from the search settings (``address`` only matters to Ray)."""
        return cls(scorer, workers=workers, timeout=timeout)

    # ------------------------------------------------------------ the scheduling loop
    def run(self, tasks: list[Task], on_done: Callable[[Outcome], None] | None = None
            ) -> list[Outcome]:
        """One :class:`Outcome` per task, in task order; ``on_done`` as each finishes."""
        results: list[Outcome | None] = [None] * len(tasks)

        def finish(job: _Job, status: str, result: Any, err: str | None, at: float) -> None:
            o = Outcome(tasks[job.index].key, status, result, err, job.started, at, job.worker)
            results[job.index] = o
            if on_done is not None:
                on_done(o)

        self._prepare(len(tasks))
        queue, running = deque(range(len(tasks))), dict[Future, _Job]()
        while queue or running:
            while queue and len(running) < self.capacity:
                job = self._launch(queue[0], tasks[queue[0]])
                if job is None:  # no worker free and ready yet
                    break
                running[job.future] = job
                queue.popleft()
            wants_more = bool(queue) and len(running) < self.capacity
            for job in self._wait(running, wants_more):
                del running[job.future]
                finish(job, *self._settle(job), time.time())
            now = time.time()
            for job in self._overdue(running, now):
                del running[job.future]
                finish(job, "timeout", None,
                       f"no result after {self.timeout:g} s; {self._kill(job)}", now)
        return [r for r in results if r is not None]

    def _wait(self, running: dict[Future, _Job], wants_more: bool) -> list[_Job]:
        """Sleep until a job finishes, the nearest deadline passes or (if a worker is wanted)
        a starting worker is ready; the finished jobs in task order."""
        futures, deadline = self._wakeups() if wants_more else ([], None)
        if self.timeout is not None and running:
            ends = [j.started + self.timeout for j in running.values()]
            deadline = min(ends if deadline is None else [*ends, deadline])
        futures = [*running, *futures]
        if not futures and deadline is None:
            raise RuntimeError(f"{self.name} executor: tasks are queued but no worker is "
                               "running or starting (a bug in the executor)")
        left = None if deadline is None else max(0.0, deadline - time.time())
        done, _ = wait(futures, timeout=left, return_when=FIRST_COMPLETED)
        return sorted((running[f] for f in done if f in running), key=lambda j: j.index)

    def _settle(self, job: _Job) -> tuple[str, Any, str | None]:
        try:
            status, result, err = job.future.result()
        except Exception as e:  # noqa: BLE001 - a dead worker, an unpicklable result, ...
            return "failed", None, self._finished(job, e) or f"{type(e).__name__}: {e}"
        self._finished(job, None)
        return status, result, err

    def _overdue(self, running: dict[Future, _Job], now: float) -> list[_Job]:
        if self.timeout is None:
            return []
        late = [j for j in running.values() if now - j.started >= self.timeout]
        return sorted(late, key=lambda j: j.index)

    # ------------------------------------------------------------ what an executor says
    @property
    def capacity(self) -> int:
        """How many tasks may be in flight at once."""
        return self.workers

    def _prepare(self, count: int) -> None:
        """Called before a ``run`` of ``count`` tasks (e.g. start the workers)."""
        return None

    @abstractmethod
    def _launch(self, index: int, task: Task) -> _Job | None:
        """Start ``task`` now on a free, ready worker, or ``None`` if there is none yet."""

    def _wakeups(self) -> tuple[list[Future], float | None]:
        """While none is free: futures that finish when a worker becomes ready, and the time
        by which the loop must look again (a startup deadline)."""
        return [], None

    def _finished(self, job: _Job, error: Exception | None) -> str | None:
        """Bookkeeping for a job whose future completed (``error`` if it raised instead of
        returning); returns what to report for the error (``None``: its type and text)."""
        return None

    def _kill(self, job: _Job) -> str:
        """Stop an overdue job; returns what was done (ends the timeout message)."""
        job.future.cancel()
        return "the task was cancelled"

    def close(self) -> None:
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InlineExecutor(Executor):
    """In this process, sequentially (no timeout enforcement)."""

    name = "inline"

    @property
    def capacity(self) -> int:
        return 1  # one at a time: each outcome is reported before the next call starts

    def _launch(self, index: int, task: Task) -> _Job:
        start, future = time.time(), Future()
        future.set_result(call_scorer(self.scorer, task.spec, task.budget))
        return _Job(index, future, "inline", start)


class _Slot:
    """One worker process: a single-process executor whose pid we know."""

    def __init__(self, index: int, scorer: Any, startup_timeout: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.index, self.startup_timeout = index, startup_timeout
        self.ex = ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker,
                                      initargs=(scorer,))
        try:
            self.started = self.ex.submit(os.getpid)  # starts the process now; gives its pid
        except Exception as e:  # noqa: BLE001 - e.g. the scorer cannot be pickled
            self.ex.shutdown(wait=False, cancel_futures=True)
            raise self._error(f"could not be started ({type(e).__name__}: {e})") from None
        self.deadline = time.time() + startup_timeout
        self.pid = 0
        self.busy = False

    def ready_now(self) -> bool:
        """Started yet? (Never blocks; raises if it failed or took too long.)"""
        if not self.pid and (self.started.done() or time.time() >= self.deadline):
            self.wait_ready()
        return bool(self.pid)

    def wait_ready(self) -> _Slot:
        if not self.pid:
            try:
                self.pid = self.started.result(timeout=max(0.0, self.deadline - time.time()))
            except Exception as e:
                self.ex.shutdown(wait=False, cancel_futures=True)
                raise self._error(
                    f"did not start within {self.startup_timeout:.0f} s"
                    if isinstance(e, TimeoutError) else
                    f"failed to start ({type(e).__name__}: {e})") from None
        return self

    def _error(self, what: str) -> WorkerError:
        return WorkerError(f"worker process {self.index} {what}; the scorer must be picklable "
                           "and importable in a fresh spawned process (and the main script "
                           "importable: guard it with `if __name__ == '__main__':`)")

    @property
    def name(self) -> str:
        return f"local-{self.index}:{self.pid}"

    def kill(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.ex.shutdown(wait=False, cancel_futures=True)


class LocalExecutor(Executor):
    """``workers`` spawn processes (see the module doc)."""

    name = "local"

    def __init__(self, scorer: Any, *, workers: int = 1, timeout: float | None = None,
                 startup_timeout: float = 300.0) -> None:
        super().__init__(scorer, workers=workers, timeout=timeout)
        self.startup_timeout = startup_timeout
        self.slots: list[_Slot | None] = [None] * workers

    def _get(self, i: int) -> _Slot:
        """Slot ``i``, its process started in the background if it had none (non-blocking)."""
        slot = self.slots[i]
        if slot is None:
            slot = self.slots[i] = _Slot(i, self.scorer, self.startup_timeout)
        return slot

    def _replace(self, i: int) -> None:
        slot = self.slots[i]
        if slot is not None:
            slot.kill()
        self.slots[i] = _Slot(i, self.scorer, self.startup_timeout)  # starts in the background

    def start(self, count: int | None = None) -> None:
        """Start the worker processes now, all at once (each imports the scorer's modules)."""
        n = self.workers if count is None else min(count, self.workers)
        for slot in [self._get(i) for i in range(n)]:
            slot.wait_ready()

    def _prepare(self, count: int) -> None:
        self.start(count)

    def _launch(self, index: int, task: Task) -> _Job | None:
        for i in range(self.workers):
            slot = self._get(i)
            if slot.busy or not slot.ready_now():
                continue
            try:
                future = slot.ex.submit(_run_in_worker, task.spec, task.budget)
            except (BrokenProcessPool, RuntimeError):  # it died while idle: replace it
                self._replace(i)
                continue
            slot.busy = True
            return _Job(index, future, slot.name, time.time(), slot)
        return None

    def _wakeups(self) -> tuple[list[Future], float | None]:
        starting = [s for s in self.slots if s is not None and not s.busy and not s.pid]
        return [s.started for s in starting], min((s.deadline for s in starting), default=None)

    def _finished(self, job: _Job, error: Exception | None) -> str | None:
        slot: _Slot = job.handle
        slot.busy = False
        if not isinstance(error, BrokenProcessPool):
            return None
        self._replace(slot.index)
        return (f"worker process {job.worker} died while scoring (a crash, os._exit or the "
                "out-of-memory killer); the candidate is marked failed")

    def _kill(self, job: _Job) -> str:
        self._replace(job.handle.index)
        return f"worker {job.worker} was killed"

    def close(self) -> None:
        for slot in self.slots:
            if slot is not None and slot.busy:  # a run was interrupted: do not wait for it
                slot.kill()
            elif slot is not None:
                slot.ex.shutdown(wait=True, cancel_futures=True)
        self.slots = [None] * self.workers


class RayExecutor(Executor):
    """Remote tasks on a Ray cluster (see the module doc)."""

    name = "ray"

    def __init__(self, scorer: Any, *, workers: int = 1, timeout: float | None = None,
                 address: str | None = None, num_cpus_per_task: float = 1.0,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(scorer, workers=workers, timeout=timeout)
        try:
            import ray
        except ImportError:
            raise WorkerError("executor 'ray' needs Ray: pip install 'efficientbert[ray]' "
                              "(or use executor 'local')") from None
        self.ray = ray
        self.owns = not ray.is_initialized()
        if self.owns:
            kw = {"include_dashboard": False, "log_to_driver": False, **(init_kwargs or {})}
            if address is None:  # a local Ray: its workers import what this process can
                kw.setdefault("num_cpus", workers)
                path = [p for p in sys.path if p and os.path.isdir(p)]
                kw.setdefault("runtime_env", {"env_vars": {"PYTHONPATH": os.pathsep.join(path)}})
            try:
                ray.init(address=address, **kw)
            except Exception as e:  # noqa: BLE001 - connection errors come in many types
                raise WorkerError(f"cannot start or reach Ray at address={address!r}: "
                                  f"{type(e).__name__}: {e}") from None
        self.remote = ray.remote(max_retries=0, num_cpus=num_cpus_per_task)(call_scorer)
        self.scorer_ref = ray.put(scorer)
        # warm up: start the workers and load the scorer there before any timeout runs
        warm = ray.remote(max_retries=0, num_cpus=num_cpus_per_task)(_warm_up)
        ray.get([warm.remote(self.scorer_ref) for _ in range(workers)])

    @classmethod
    def from_settings(cls, scorer: Any, *, workers: int, timeout: float | None,
                      address: str | None) -> Executor:
        return cls(scorer, workers=workers, timeout=timeout, address=address)

    def _launch(self, index: int, task: Task) -> _Job:
        ref = self.remote.remote(self.scorer_ref, task.spec, task.budget)
        return _Job(index, ref.future(), "ray", time.time(), ref)

    def _finished(self, job: _Job, error: Exception | None) -> str | None:
        return None if error is None else (
            f"the Ray task failed ({type(error).__name__}: {str(error)[:500]}); the candidate "
            "is marked failed")

    def _kill(self, job: _Job) -> str:
        self.ray.cancel(job.handle, force=True)
        return "the Ray task was cancelled"

    def close(self) -> None:
        if self.owns and self.ray.is_initialized():
            self.ray.shutdown()


#: the executors by name, declared once (the search config's choices derive from it)
EXECUTORS: dict[str, type[Executor]] = {
    cls.name: cls for cls in (InlineExecutor, LocalExecutor, RayExecutor)}


def make_executor(kind: str, scorer: Any, *, workers: int = 1, timeout: float | None = None,
                  address: str | None = None) -> Executor:
    """An executor by name, one of :data:`EXECUTORS` (``address`` only matters to Ray)."""
    cls = EXECUTORS.get(kind)
    if cls is None:
        raise SearchConfigError("executor.kind", f"unknown executor {kind!r}; choose one of "
                                f"{tuple(EXECUTORS)}")
    return cls.from_settings(scorer, workers=workers, timeout=timeout, address=address)
