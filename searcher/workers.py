"""Where scorer calls run: in-process, a local process pool, or Ray.

Every backend's :meth:`Backend.run` takes a list of :class:`Task` and returns one
:class:`Outcome` per task *in task order* (so results are applied in proposal order
whatever the completion order), calling ``on_done`` as each one finishes (the search
journals it at once). A scorer that raises gives ``status="failed"`` with the traceback;
a worker that dies (segfault, ``os._exit``, out of memory) gives ``"failed"``; one that
runs past ``timeout`` seconds is killed and gives ``"timeout"``. The search goes on.

- ``"inline"``: in this process, one task at a time. For tests and debugging; a timeout
  cannot be enforced and a hard crash takes the search down with it.
- ``"local"`` (default): ``workers`` spawn-context processes. Each is its own
  one-process ``concurrent.futures.ProcessPoolExecutor``, so a crash breaks (and is
  charged to) that one slot only, and a hung one can be killed by its pid; the slot is
  then replaced. Processes live across steps, so the scorer's per-process caches do.
- ``"ray"``: ``ray.init(address=...)`` (``None`` starts a local Ray whose workers get this
  process's ``sys.path`` as ``PYTHONPATH``; a remote cluster must be able to import the
  scorer itself), one remote task per scorer call with ``max_retries=0``, at most
  ``workers`` in flight; a timeout cancels the task with ``force=True`` (killing its worker).
  Workers are warmed up (started, scorer loaded) first; a timeout still counts from
  submission, so it includes restarting a worker after a crash.
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
from typing import Any

from .errors import SearchConfigError, WorkerError

BACKENDS = ("inline", "local", "ray")
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
    _SCORER = scorer
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose search process died (even by SIGKILL) must not linger."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _warm_up(scorer: Any) -> int:
    return os.getpid()


def _run_in_worker(spec: Any, budget: Any) -> tuple[str, Any, str | None]:
    return call_scorer(_SCORER, spec, budget)


class Backend(ABC):
    """Runs scorer calls; see the module doc."""

    name = ""

    def __init__(self, scorer: Any, *, workers: int = 1, timeout: float | None = None) -> None:
        if workers < 1:
            raise SearchConfigError("workers", f"{workers} must be >= 1")
        if timeout is not None and not timeout > 0:
            raise SearchConfigError("timeout", f"{timeout} must be a positive number of "
                                    "seconds, or None for no limit")
        self.scorer, self.workers, self.timeout = scorer, workers, timeout

    @abstractmethod
    def run(self, tasks: list[Task], on_done: Callable[[Outcome], None] | None = None
            ) -> list[Outcome]: ...

    def close(self) -> None:
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InlineBackend(Backend):
    """In this process, sequentially (no timeout enforcement)."""

    name = "inline"

    def run(self, tasks: list[Task], on_done: Callable[[Outcome], None] | None = None
            ) -> list[Outcome]:
        out = []
        for t in tasks:
            start = time.time()
            status, result, err = call_scorer(self.scorer, t.spec, t.budget)
            o = Outcome(t.key, status, result, err, start, time.time(), "inline")
            if on_done is not None:
                on_done(o)
            out.append(o)
        return out


class _Slot:
    """One worker process: a single-process executor whose pid we know."""

    def __init__(self, index: int, scorer: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.index = index
        self.ex = ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker,
                                      initargs=(scorer,))
        self._pid_future = self.ex.submit(os.getpid)  # starts the process now
        self.pid = 0
        self.created = time.time()

    def poll(self, startup_timeout: float) -> bool:
        """Started yet? (Never blocks; raises if it failed or took too long.)"""
        if not self.pid and (self._pid_future.done() or
                             time.time() - self.created > startup_timeout):
            self.ready(0.0)
        return bool(self.pid)

    def ready(self, startup_timeout: float) -> _Slot:
        if not self.pid:
            try:
                self.pid = self._pid_future.result(timeout=startup_timeout)
            except Exception as e:
                self.ex.shutdown(wait=False, cancel_futures=True)
                what = f"did not start within {startup_timeout:.0f} s" if \
                    isinstance(e, TimeoutError) else f"failed to start ({type(e).__name__}: {e})"
                raise WorkerError(f"worker process {self.index} {what}; the scorer must be "
                                  "picklable and importable in a fresh spawned process (and "
                                  "the main script importable: guard it with "
                                  "`if __name__ == '__main__':`)") from None
        return self

    @property
    def name(self) -> str:
        return f"local-{self.index}:{self.pid}"

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.ex.shutdown(wait=False, cancel_futures=True)


class LocalPoolBackend(Backend):
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
            slot = self.slots[i] = _Slot(i, self.scorer)
        return slot

    def start(self, count: int | None = None) -> None:
        """Start the worker processes now, all at once (each imports the scorer's modules)."""
        n = self.workers if count is None else min(count, self.workers)
        for slot in [self._get(i) for i in range(n)]:
            slot.ready(self.startup_timeout)

    def run(self, tasks: list[Task], on_done: Callable[[Outcome], None] | None = None
            ) -> list[Outcome]:
        queue = deque(range(len(tasks)))
        results: list[Outcome | None] = [None] * len(tasks)
        running: dict[Future, tuple[int, int, float]] = {}  # future -> (task, slot, start)

        def finish(o: Outcome, i: int) -> None:
            results[i] = o
            if on_done is not None:
                on_done(o)

        self.start(len(tasks))
        while queue or running:
            busy = {s for _, s, _ in running.values()}
            starting = False
            for si in range(self.workers):
                if queue and si not in busy:
                    slot = self._get(si)
                    if not slot.poll(self.startup_timeout):  # a replacement still starting
                        starting = True
                        continue
                    ti = queue.popleft()
                    try:
                        fut = slot.ex.submit(_run_in_worker, tasks[ti].spec, tasks[ti].budget)
                    except (BrokenProcessPool, RuntimeError):  # it died while idle: replace it
                        queue.appendleft(ti)
                        self._drop(si)
                        starting = True
                        continue
                    running[fut] = (ti, si, time.time())
            if not running:
                time.sleep(0.02)
                continue
            wait_for = 0.05 if starting else 1.0
            if self.timeout is not None:
                now = time.time()
                wait_for = max(0.01, min([wait_for] + [self.timeout - (now - st) for _, _, st
                                                       in running.values()]))
            done, _ = wait(list(running), timeout=wait_for, return_when=FIRST_COMPLETED)
            for fut in done:
                ti, si, start = running.pop(fut)
                slot = self.slots[si]
                name = slot.name if slot else f"local-{si}"
                try:
                    status, result, err = fut.result()
                except BrokenProcessPool:
                    status, result, err = "failed", None, (
                        f"worker process {name} died while scoring (a crash, os._exit or the "
                        "out-of-memory killer); the candidate is marked failed")
                    self._drop(si)
                except Exception as e:  # noqa: BLE001 - e.g. an unpicklable result
                    status, result, err = "failed", None, f"{type(e).__name__}: {e}"
                finish(Outcome(tasks[ti].key, status, result, err, start, time.time(), name), ti)
            if self.timeout is not None:
                now = time.time()
                for fut, (ti, si, start) in list(running.items()):
                    if now - start > self.timeout:
                        running.pop(fut)
                        slot = self.slots[si]
                        name = slot.name if slot else f"local-{si}"
                        self._drop(si)
                        finish(Outcome(tasks[ti].key, "timeout", None,
                                       f"no result after {self.timeout:g} s; worker {name} "
                                       "was killed", start, now, name), ti)
        return [r for r in results if r is not None]

    def _drop(self, si: int) -> None:
        slot = self.slots[si]
        if slot is not None:
            slot.kill()
        self.slots[si] = _Slot(si, self.scorer)  # the replacement starts in the background

    def close(self) -> None:
        for slot in self.slots:
            if slot is not None:
                slot.ex.shutdown(wait=True, cancel_futures=True)
        self.slots = [None] * self.workers


class RayBackend(Backend):
    """Remote tasks on a Ray cluster (see the module doc)."""

    name = "ray"

    def __init__(self, scorer: Any, *, workers: int = 1, timeout: float | None = None,
                 address: str | None = None, num_cpus_per_task: float = 1.0,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(scorer, workers=workers, timeout=timeout)
        try:
            import ray
        except ImportError:
            raise WorkerError("backend 'ray' needs Ray: pip install 'efficientbert[ray]' "
                              "(or use backend 'local')") from None
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

    def run(self, tasks: list[Task], on_done: Callable[[Outcome], None] | None = None
            ) -> list[Outcome]:
        ray = self.ray
        queue = deque(range(len(tasks)))
        results: list[Outcome | None] = [None] * len(tasks)
        running: dict[Any, tuple[int, float]] = {}

        def finish(o: Outcome, i: int) -> None:
            results[i] = o
            if on_done is not None:
                on_done(o)

        while queue or running:
            while queue and len(running) < self.workers:
                ti = queue.popleft()
                ref = self.remote.remote(self.scorer_ref, tasks[ti].spec, tasks[ti].budget)
                running[ref] = (ti, time.time())
            wait_for = 1.0 if self.timeout is None else max(0.01, min(
                self.timeout - (time.time() - st) for _, st in running.values()))
            ready, _ = ray.wait(list(running), num_returns=1, timeout=wait_for)
            for ref in ready:
                ti, start = running.pop(ref)
                try:
                    status, result, err = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - worker crash, cancellation, ...
                    status, result, err = "failed", None, (
                        f"the Ray task failed ({type(e).__name__}: {str(e)[:500]}); the "
                        "candidate is marked failed")
                finish(Outcome(tasks[ti].key, status, result, err, start, time.time(),
                               "ray"), ti)
            if self.timeout is not None:
                now = time.time()
                for ref, (ti, start) in list(running.items()):
                    if now - start > self.timeout:
                        running.pop(ref)
                        ray.cancel(ref, force=True)
                        finish(Outcome(tasks[ti].key, "timeout", None,
                                       f"no result after {self.timeout:g} s; the Ray task was "
                                       "cancelled", start, now, "ray"), ti)
        return [r for r in results if r is not None]

    def close(self) -> None:
        if self.owns and self.ray.is_initialized():
            self.ray.shutdown()


def make_backend(kind: str, scorer: Any, *, workers: int = 1, timeout: float | None = None,
                 address: str | None = None) -> Backend:
    """A backend by name: ``"inline"``, ``"local"`` or ``"ray"``."""
    if kind == "inline":
        return InlineBackend(scorer, workers=workers, timeout=timeout)
    if kind == "local":
        return LocalPoolBackend(scorer, workers=workers, timeout=timeout)
    if kind == "ray":
        return RayBackend(scorer, workers=workers, timeout=timeout, address=address)
    raise SearchConfigError("backend", f"unknown backend {kind!r}; choose one of {BACKENDS}")
