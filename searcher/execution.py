"""The scheduling loop every executor shares, the executor registry, and the inline executor.

Every executor's :meth:`Executor.run` takes a list of :class:`Task` and returns one
:class:`Outcome` per task *in task order* (so results are applied in proposal order
whatever the completion order), calling ``on_done`` as each one finishes (the search
journals it at once; tasks that finish together are reported in task order). A scorer that
raises gives :attr:`CallStatus.FAILED` with the traceback; a worker that dies (segfault,
``os._exit``, out of memory) gives ``failed`` and is replaced; one that runs past
``timeout`` seconds is killed (and replaced) and gives ``timeout``. The search goes on.

One loop (:meth:`Executor.run`) serves every executor: keep up to ``workers`` tasks in
flight, sleep until the first completion or the nearest deadline
(``concurrent.futures.wait``), record what finished, kill what is overdue. An executor says
only how to launch a task as a ``Future`` (``_launch``), what a failed future means
(``_finished``) and how to kill an overdue task (``_kill``). A timeout counts from the launch.

Each kind is declared once, with :func:`executor` on its class; :data:`EXECUTORS` is the
registry the configuration's choices (``ExecutorSpec.kind``) derive from. An executor that
starts worker processes imports the plugins (:func:`searcher.plugins.loaded_plugins`) in each
of them before it unpickles the scorer or a task.
"""

from __future__ import annotations

import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .errors import RegistryError, SearchConfigError
from .plugins import loaded_plugins
from .records import CallStatus

Call = tuple[CallStatus, Any, str | None]  # (status, the scorer's value, error text)


@dataclass(frozen=True)
class Task:
    """One scorer call: ``key`` identifies it to the caller (e.g. ``(step, idx, rung)``)."""

    key: Any
    spec: Any
    budget: Any


@dataclass
class Outcome:
    """What came back: ``status`` ok (``result`` holds the scorer's value), failed or
    timeout (``error`` says what happened)."""

    key: Any
    status: CallStatus
    result: Any = None
    error: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    worker: str = ""


def call_scorer(scorer: Any, spec: Any, budget: Any) -> Call:
    """Run one scorer call, catching its exceptions (this runs inside workers)."""
    try:
        return CallStatus.OK, scorer(spec, budget), None
    except Exception as e:  # noqa: BLE001 - any scorer error marks the candidate failed
        tb = traceback.format_exc(limit=20)
        return CallStatus.FAILED, None, f"{type(e).__name__}: {e}\n{tb}"


@dataclass(eq=False)
class Job:
    """A task in flight: its index in the ``run`` call, its future, where and since when it
    runs, and the executor's own handle on it (a local slot, a Ray ObjectRef)."""

    index: int
    future: Future
    worker: str
    started: float
    handle: Any = None


class Executor(ABC):
    """Runs scorer calls through the one scheduling loop; see the module doc. ``plugins``:
    what worker processes import first (default: every plugin this process loaded)."""

    name: ClassVar[str] = ""  # set by @executor

    def __init__(self, scorer: Any, *, workers: int = 1, timeout: float | None = None,
                 plugins: Sequence[str] | None = None) -> None:
        if workers < 1:
            raise SearchConfigError("workers", f"{workers} must be >= 1")
        if timeout is not None and not timeout > 0:
            raise SearchConfigError("timeout", f"{timeout} must be a positive number of "
                                    "seconds, or None for no limit")
        self.scorer, self.workers, self.timeout = scorer, workers, timeout
        self.plugins = tuple(loaded_plugins() if plugins is None else plugins)

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

        def finish(job: Job, status: CallStatus, result: Any, err: str | None,
                   at: float) -> None:
            o = Outcome(tasks[job.index].key, status, result, err, job.started, at, job.worker)
            results[job.index] = o
            if on_done is not None:
                on_done(o)

        self._prepare(len(tasks))
        queue, running = deque(range(len(tasks))), dict[Future, Job]()
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
                finish(job, CallStatus.TIMEOUT, None,
                       f"no result after {self.timeout:g} s; {self._kill(job)}", now)
        return [r for r in results if r is not None]

    def _wait(self, running: dict[Future, Job], wants_more: bool) -> list[Job]:
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

    def _settle(self, job: Job) -> Call:
        try:
            status, result, err = job.future.result()
        except Exception as e:  # noqa: BLE001 - a dead worker, an unpicklable result, ...
            return (CallStatus.FAILED, None,
                    self._finished(job, e) or f"{type(e).__name__}: {e}")
        self._finished(job, None)
        return CallStatus(status), result, err

    def _overdue(self, running: dict[Future, Job], now: float) -> list[Job]:
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
    def _launch(self, index: int, task: Task) -> Job | None:
        """Start ``task`` now on a free, ready worker, or ``None`` if there is none yet."""

    def _wakeups(self) -> tuple[list[Future], float | None]:
        """While none is free: futures that finish when a worker becomes ready, and the time
        by which the loop must look again (a startup deadline)."""
        return [], None

    def _finished(self, job: Job, error: Exception | None) -> str | None:
        """Bookkeeping for a job whose future completed (``error`` if it raised instead of
        returning); returns what to report for the error (``None``: its type and text)."""
        return None

    def _kill(self, job: Job) -> str:
        """Stop an overdue job; returns what was done (ends the timeout message)."""
        job.future.cancel()
        return "the task was cancelled"

    def close(self) -> None:
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: the executors by kind, in declaration order (:func:`executor` adds to it)
EXECUTORS: dict[str, type[Executor]] = {}
E = TypeVar("E", bound=type[Executor])


def executor(name: str, *, replace: bool = False) -> Callable[[E], E]:
    """Declare the decorated :class:`Executor` subclass as executor kind ``name`` (built by
    its ``from_settings`` from ``ExecutorSpec``'s ``workers``, ``timeout`` and ``address``)."""
    def register(cls: E) -> E:
        if not (isinstance(cls, type) and issubclass(cls, Executor)):
            raise RegistryError(f"@executor({name!r}) decorates {cls!r}; it must be a "
                                "subclass of searcher.workers.Executor")
        if name in EXECUTORS and not replace:
            raise RegistryError(f"executor {name!r} is already declared; choose another name "
                                "or pass replace=True")
        cls.name = name
        EXECUTORS[name] = cls
        return cls
    return register


@executor("inline")
class InlineExecutor(Executor):
    """In this process, one task at a time (its future is done when launched). For tests and
    debugging: a timeout cannot be enforced and a hard crash takes the search down."""

    @property
    def capacity(self) -> int:
        return 1  # one at a time: each outcome is reported before the next call starts

    def _launch(self, index: int, task: Task) -> Job:
        start, future = time.time(), Future()
        future.set_result(call_scorer(self.scorer, task.spec, task.budget))
        return Job(index, future, "inline", start)
