"""Executors: failures are recorded and the search goes on; executors agree.

The scheduling loop is shared: the same faults (raise, crash, hang) give the same outcomes,
in task order, on the local pool and on Ray."""

from __future__ import annotations

import operator
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_search_support import RUNGS, FaultyScorer, history_key, small_config, toy_score

import mlpgraph
from mlpgraph import MLPLayer
from searcher.budget import Constraints
from searcher.candidate import seed_candidates
from searcher.errors import SearchConfigError, WorkerError
from searcher.journal import Journal
from searcher.records import CallStatus
from searcher.search import run_search
from searcher.spec import CandidateSpec
from searcher.workers import (
    EXECUTORS,
    InlineExecutor,
    LocalExecutor,
    RayExecutor,
    Task,
    make_executor,
)

ROOT = Path(__file__).resolve().parents[1]
#: one task per kind; the hang comes first so that it starts on a warm worker everywhere
KINDS = ("hang", "ok", "crash", "ok", "raise", "ok", "ok", "ok")
WANT = {"ok": "ok", "hang": "timeout", "crash": "failed", "raise": "failed"}


def _feasible_seed_ids() -> list[str]:
    cfg = small_config()
    checks = Constraints.from_spec(cfg.constraints)
    return [c.id for c in seed_candidates(mlpgraph.PAPER_SPACE, cfg.num_layers) if checks(c)]


def test_crash_raise_and_hang_are_failures_and_the_search_goes_on(tmp_path):
    raising, crashing, hanging = _feasible_seed_ids()[:3]
    scorer = FaultyScorer(raise_ids=(raising,), crash_ids=(crashing,), hang_ids=(hanging,))
    cfg = small_config(executor="local", workers=2, timeout=3.0, evaluations=12)
    res = run_search(cfg, scorer, tmp_path / "faulty")
    assert res.evaluations == 12 and res.stopped == "evaluation budget reached"
    by_id = {e.candidate.id: e for e in res.history}
    assert by_id[raising].status == "failed"
    assert "stand-in failure" in by_id[raising].evaluations[0].error
    assert by_id[crashing].status == "failed"
    assert "died" in by_id[crashing].evaluations[0].error
    assert by_id[hanging].status == "timeout"
    assert all(by_id[i].fitness is None for i in (raising, crashing, hanging))
    others = [e for e in res.history if e.candidate.id not in (raising, crashing, hanging)]
    assert others and all(e.status == "ok" for e in others)
    with Journal.in_folder(tmp_path / "faulty") as j:
        status = {r.candidate_id: r.status for r in j.read_all()}
    assert status[raising] == status[crashing] == status[hanging] == "failed"
    # in-process, the initial population (independent of scores) is proposed identically
    ref = run_search(small_config(evaluations=12), toy_score, tmp_path / "ref")
    assert [e.candidate.id for e in ref.history[:cfg.controller.population]] == \
        [e.candidate.id for e in res.history[:cfg.controller.population]]


def test_local_pool_returns_results_in_task_order():
    spec = CandidateSpec("x", 32, (MLPLayer.of("W2(gelu(W1(x)))", 1, "1/2"),))
    tasks = [Task((i,), spec, None) for i in range(5)]
    done = []
    with LocalExecutor(toy_score, workers=2, timeout=30) as pool:
        out = pool.run(tasks, done.append)
    assert [o.key for o in out] == [(i,) for i in range(5)] and len(done) == 5
    assert [o.result for o in out] == [o.result for o in InlineExecutor(toy_score).run(tasks)]


def _need_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("Ray cannot be imported (pip install 'efficientbert[ray]'); the Ray "
                    "executor tests need it")


def test_ray_executor_matches_the_local_pool(tmp_path):
    _need_ray()
    raising = _feasible_seed_ids()[1]
    scorer = FaultyScorer(raise_ids=(raising,))
    local = run_search(small_config(executor="local", workers=2, evaluations=12, rungs=RUNGS),
                       scorer, tmp_path / "local")
    ray_run = run_search(small_config(executor="ray", workers=2, evaluations=12,
                                      rungs=RUNGS), scorer, tmp_path / "ray")
    assert history_key(ray_run) == history_key(local)
    assert next(e for e in ray_run.history if e.candidate.id == raising).status == "failed"


def _fault_tasks() -> tuple[FaultyScorer, list[Task]]:
    """One task per entry of KINDS, each with its own widths (so results differ)."""
    names = [f"{kind}-{i}" for i, kind in enumerate(KINDS)]
    of = {kind: tuple(n for n in names if n.startswith(kind)) for kind in WANT}
    scorer = FaultyScorer(raise_ids=of["raise"], crash_ids=of["crash"], hang_ids=of["hang"])
    tasks = [Task((i,), CandidateSpec(n, 32, (MLPLayer.of("W2(gelu(W1(x)))", 1, f"{i + 1}/4"),)),
                  None) for i, n in enumerate(names)]
    return scorer, tasks


def _run_faults(executor, tasks: list[Task], timeout: float) -> list:
    """Run the fault tasks; check what every executor must give. Returns the outcomes."""
    done = []
    out = executor.run(tasks, done.append)
    assert [o.key for o in out] == [t.key for t in tasks]  # task order, whatever finished first
    assert sorted(o.key for o in done) == [t.key for t in tasks]  # each reported once
    assert [o.status for o in out] == [WANT[k] for k in KINDS]
    assert all(type(o.status) is CallStatus for o in out)
    ok = [t for t, k in zip(tasks, KINDS, strict=True) if k == "ok"]
    assert [o.result for o in out if o.status == "ok"] == \
        [o.result for o in InlineExecutor(toy_score).run(ok)]
    assert "stand-in failure" in out[KINDS.index("raise")].error
    hang = out[KINDS.index("hang")]
    assert f"no result after {timeout:g} s" in hang.error
    assert hang.finished_at - hang.started_at >= timeout and hang.result is None
    return out


def _alive(pid: int) -> bool:
    """Is process ``pid`` running (a zombie is not)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _pid(outcome) -> int:
    return int(outcome.worker.rsplit(":", 1)[1])


def test_local_loop_times_out_replaces_dead_workers_and_keeps_them_across_runs():
    scorer, tasks = _fault_tasks()
    with LocalExecutor(scorer, workers=2, timeout=2.0) as pool:
        out = _run_faults(pool, tasks, 2.0)
        crash = out[KINDS.index("crash")]
        assert "died" in crash.error and crash.worker in crash.error
        gone = {_pid(out[KINDS.index(k)]) for k in ("hang", "crash")}
        deadline = time.monotonic() + 10.0  # a SIGKILLed process takes a moment to go
        while any(_alive(p) for p in gone) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(gone) == 2 and not any(_alive(p) for p in gone)  # killed, not lingering
        again = [Task((i,), t.spec, None) for i, t in enumerate(tasks) if KINDS[i] == "ok"] * 2
        first, second = pool.run(again), pool.run(again)
        assert all(o.status == "ok" for o in first + second)
        live = {_pid(o) for o in first}
        assert len(live) == 2 and not live & gone  # two replacements, both used
        assert {_pid(o) for o in second} == live  # the same processes serve the next run


def test_ray_loop_times_out_and_survives_a_crash():
    _need_ray()
    scorer, tasks = _fault_tasks()
    with RayExecutor(scorer, workers=2, timeout=12.0) as ray_pool:  # a restart after the
        out = _run_faults(ray_pool, tasks, 12.0)  # crash starts a fresh Ray worker: slack
    assert "the Ray task failed" in out[KINDS.index("crash")].error
    assert "cancelled" in out[KINDS.index("hang")].error


def test_inline_reports_each_outcome_before_the_next_call():
    events = []

    def scorer(spec, budget):
        events.append(("call", spec.candidate_id))
        return toy_score(spec, budget)

    _, tasks = _fault_tasks()
    ex = InlineExecutor(scorer, workers=3)
    ex.run(tasks, lambda o: events.append(("done", tasks[o.key[0]].spec.candidate_id)))
    assert events == [(what, t.spec.candidate_id) for t in tasks for what in ("call", "done")]


class _Unloadable:
    """Pickles, but unpickling it (in the worker) raises ZeroDivisionError."""

    def __reduce__(self):
        return operator.truediv, (1, 0)


def test_startup_failures_are_worker_errors():
    _, tasks = _fault_tasks()
    with pytest.raises(WorkerError, match="worker process 0 failed to start .*importable"):
        with LocalExecutor(_Unloadable(), workers=2) as pool:
            pool.run(tasks[:1])
    with pytest.raises(WorkerError, match="could not be started .*pickle.*picklable"):
        with LocalExecutor(lambda spec, budget: 0.0, workers=1) as pool:
            pool.run(tasks[:1])


WORKER_SCRIPT = """
import time
from test_search_support import toy_score
from searcher.workers import LocalExecutor
pool = LocalExecutor(toy_score, workers=2)
pool.start()
print(*[slot.pid for slot in pool.slots], flush=True)
time.sleep(600)
"""


def test_workers_exit_when_the_search_process_is_killed(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    err = tmp_path / "stderr.txt"
    with open(err, "w") as err_file:  # a file, not a pipe: lingering workers would hold it
        proc = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT], env=env,
                                stdout=subprocess.PIPE, stderr=err_file, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert len(pids) == 2, err.read_text()
    deadline = time.time() + 15  # each worker looks for its parent once a second
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    lingering = [p for p in pids if _alive(p)]
    for p in lingering:  # do not leave them behind when the check fails
        os.kill(p, signal.SIGKILL)
    assert not lingering, f"worker processes {lingering} outlived the killed search process"


def test_executors_are_declared_once_and_made_by_name():
    assert EXECUTORS == {"inline": InlineExecutor, "local": LocalExecutor, "ray": RayExecutor}
    with make_executor("inline", toy_score, workers=3, timeout=5.0) as ex:
        assert type(ex) is InlineExecutor and (ex.workers, ex.timeout) == (3, 5.0)
    with make_executor("local", toy_score, workers=2, address="ignored:1") as ex:
        assert type(ex) is LocalExecutor and ex.slots == [None, None]  # nothing started yet
    with pytest.raises(SearchConfigError, match="unknown executor 'gpu'.*'local'"):
        make_executor("gpu", toy_score)
    with pytest.raises(SearchConfigError, match="workers"):
        make_executor("local", toy_score, workers=0)
    with pytest.raises(SearchConfigError, match="timeout"):
        make_executor("inline", toy_score, timeout=0)
