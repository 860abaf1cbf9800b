"""The ``"local"`` executor (the default): ``workers`` spawn-context processes on this machine.

Each worker is its own one-process ``concurrent.futures.ProcessPoolExecutor`` (why not
Pebble: docs/decisions.md, searcher): a crash breaks (and is charged to) that one slot only,
a hung one is killed by its pid, and the slot is replaced in the background (tasks go to it
once started: a timeout never includes a restart). Processes live across ``run`` calls (so
do the scorer's per-process caches) and exit when the search process dies, even by SIGKILL.
A worker imports the plugins, then unpickles the scorer, before it takes any task.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.reduction import ForkingPickler
from typing import Any

from .errors import WorkerError
from .execution import Call, Executor, Job, Task, call_scorer, executor
from .plugins import load_plugins

_SCORER: Any = None  # set in each worker process by _init_worker


def _init_worker(plugins: Sequence[str], scorer: bytes) -> None:
    global _SCORER
    import mlpgraph  # noqa: F401 - candidate specs carry graphs: load while starting, not in
    #                  the first (timed) task
    load_plugins(plugins)  # before the scorer and any task is unpickled
    _SCORER = ForkingPickler.loads(scorer)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose search process died (even by SIGKILL) must not linger."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _run_in_worker(spec: Any, budget: Any) -> Call:
    return call_scorer(_SCORER, spec, budget)


class _Slot:
    """One worker process: a single-process executor whose pid we know."""

    def __init__(self, index: int, scorer: Any, plugins: Sequence[str],
                 startup_timeout: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.index, self.startup_timeout = index, startup_timeout
        try:
            payload = bytes(ForkingPickler.dumps(scorer))
            self.ex = ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker,
                                          initargs=(tuple(plugins), payload))
        except Exception as e:  # noqa: BLE001 - e.g. the scorer cannot be pickled
            raise self._error(f"could not be started ({type(e).__name__}: {e})") from None
        try:
            self.started = self.ex.submit(os.getpid)  # starts the process now; gives its pid
        except Exception as e:  # noqa: BLE001 - e.g. the process cannot be spawned
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


@executor("local")
class LocalExecutor(Executor):
    """``workers`` spawn processes (see the module doc)."""

    def __init__(self, scorer: Any, *, workers: int = 1, timeout: float | None = None,
                 plugins: Sequence[str] | None = None, startup_timeout: float = 300.0) -> None:
        super().__init__(scorer, workers=workers, timeout=timeout, plugins=plugins)
        self.startup_timeout = startup_timeout
        self.slots: list[_Slot | None] = [None] * workers

    def _new_slot(self, i: int) -> _Slot:
        return _Slot(i, self.scorer, self.plugins, self.startup_timeout)

    def _get(self, i: int) -> _Slot:
        """Slot ``i``, its process started in the background if it had none (non-blocking)."""
        slot = self.slots[i]
        if slot is None:
            slot = self.slots[i] = self._new_slot(i)
        return slot

    def _replace(self, i: int) -> None:
        slot = self.slots[i]
        if slot is not None:
            slot.kill()
        self.slots[i] = self._new_slot(i)  # starts in the background

    def start(self, count: int | None = None) -> None:
        """Start the worker processes now, all at once (each imports the scorer's modules)."""
        n = self.workers if count is None else min(count, self.workers)
        for slot in [self._get(i) for i in range(n)]:
            slot.wait_ready()

    def _prepare(self, count: int) -> None:
        self.start(count)

    def _launch(self, index: int, task: Task) -> Job | None:
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
            return Job(index, future, slot.name, time.time(), slot)
        return None

    def _wakeups(self) -> tuple[list[Future], float | None]:
        starting = [s for s in self.slots if s is not None and not s.busy and not s.pid]
        return [s.started for s in starting], min((s.deadline for s in starting), default=None)

    def _finished(self, job: Job, error: Exception | None) -> str | None:
        slot: _Slot = job.handle
        slot.busy = False
        if not isinstance(error, BrokenProcessPool):
            return None
        self._replace(slot.index)
        return (f"worker process {job.worker} died while scoring (a crash, os._exit or the "
                "out-of-memory killer); the candidate is marked failed")

    def _kill(self, job: Job) -> str:
        self._replace(job.handle.index)
        return f"worker {job.worker} was killed"

    def close(self) -> None:
        for slot in self.slots:
            if slot is not None and slot.busy:  # a run was interrupted: do not wait for it
                slot.kill()
            elif slot is not None:
                slot.ex.shutdown(wait=True, cancel_futures=True)
        self.slots = [None] * self.workers
