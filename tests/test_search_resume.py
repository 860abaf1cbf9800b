"""A search killed with SIGKILL at random moments resumes to the very same result."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from test_search_support import RUNGS, history_key, slow_logged_score, small_config

import searcher
from searcher.search import run_search

ROOT = Path(searcher.__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
CONFIG = {"evaluations": 40, "rungs": list(RUNGS), "crossover_prob": 0.2, "control": "all",
          "confirm_seeds": 2}
SCRIPT = """
import json, sys
from test_search_support import RUNGS, history_key, slow_logged_score, small_config
from searcher.search import run_search
changes = json.loads(sys.argv[2])
res = run_search(small_config(**changes), slow_logged_score, sys.argv[1], resume=True)
print(json.dumps(history_key(res)))
"""


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:  # read-only: never create the file the search is about to create
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)
        try:
            return con.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _rows(db: Path) -> set[tuple]:
    con = sqlite3.connect(db)
    try:
        return set(con.execute("SELECT step, idx, -1, candidate_id, rung, rep, status, score "
                               "FROM evaluations")) | set(con.execute(
            "SELECT -1, -1, shape, candidate_id, rung, rep, status, score FROM controls"))
    finally:
        con.close()


def _launch(run_dir: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(run_dir), json.dumps(CONFIG)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_and_resume_reaches_the_same_result(tmp_path, monkeypatch):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    why = f"(kill points drawn with random seed {seed})"
    monkeypatch.setenv("SEARCH_TOY_SLEEP", "0")
    ref = run_search(small_config(**CONFIG), slow_logged_score, tmp_path / "ref")
    total = len(_rows(tmp_path / "ref" / "journal.sqlite"))
    calls_ref = len({r[3:6] for r in _rows(tmp_path / "ref" / "journal.sqlite")})

    run_dir, log = tmp_path / "killed", tmp_path / "calls.log"
    db = run_dir / "journal.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
           "SEARCH_TOY_LOG": str(log), "SEARCH_TOY_SLEEP": "0.01"}
    kills = 0
    for lo, hi in ((2, total // 3), (total // 3 + 2, 2 * total // 3)):
        target = rng.randint(lo, hi)
        proc = _launch(run_dir, env)
        deadline = time.time() + 120
        while proc.poll() is None and _count(db) < target and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.03))  # anywhere: mid-evaluation, mid-commit, ...
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
    assert kills >= 1, f"the run finished before it could be killed {why}"

    proc = _launch(run_dir, env)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    resumed = [tuple(tuple(x) if isinstance(x, list) else x for x in row)
               for row in json.loads(out.strip().splitlines()[-1])]
    assert resumed == history_key(ref), why
    assert _rows(db) == _rows(tmp_path / "ref" / "journal.sqlite"), why  # nothing lost
    calls = Counter(log.read_text().split("\n")[:-1])
    redone = sum(n - 1 for n in calls.values())
    assert redone <= kills, f"{redone} finished evaluations were redone {why}"  # in flight only
    assert len(calls) == calls_ref, why  # one scorer call per (candidate, rung, seed)
