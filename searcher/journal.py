"""The run journal: one SQLite file (stdlib ``sqlite3``, WAL mode) in the run folder.

Tables:

- ``meta``: the search configuration (JSON) and format version;
- ``proposals``: every proposed candidate of every step (JSON, params and latency from the
  budget check, lineage inside the JSON), ``pending`` until its step commits, then
  ``evaluated``, ``duplicate`` (with ``dup_of``) or ``failed``;
- ``evaluations``: one row per scorer call (step, index, hurdle rung), written as soon as
  it finishes, so no finished evaluation is lost in a crash;
- ``steps``: one row per committed step; ``state``: the loop's state after the last
  committed step (controller, hurdles, counters). A step commits in ONE transaction;
- ``latency``: measured MLP-stack latencies, reused on resume.

A run killed at any moment resumes from the last committed step: the controller state is
reloaded, the interrupted step is proposed again (identically: same seed, same state),
finished evaluations are read back and the rest re-submitted.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distill import ScoreResult

from .errors import JournalError
from .records import Evaluation, ProposalStatus

FILENAME = "journal.sqlite"
_EVAL_COLUMNS = "rung, rep, status, score, result, error, started_at, finished_at, worker"
FORMAT = "efficientbert.journal/3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS proposals (
    step INTEGER NOT NULL, idx INTEGER NOT NULL, candidate_id TEXT NOT NULL,
    candidate TEXT NOT NULL, params INTEGER, latency REAL, status TEXT NOT NULL,
    dup_of TEXT, proposed_at REAL NOT NULL, PRIMARY KEY (step, idx));
CREATE TABLE IF NOT EXISTS evaluations (
    step INTEGER NOT NULL, idx INTEGER NOT NULL, rung INTEGER NOT NULL, rep INTEGER NOT NULL,
    candidate_id TEXT NOT NULL, status TEXT NOT NULL, score REAL, result TEXT, error TEXT,
    started_at REAL, finished_at REAL, worker TEXT, PRIMARY KEY (step, idx, rung, rep));
CREATE TABLE IF NOT EXISTS controls (
    shape TEXT NOT NULL, rung INTEGER NOT NULL, rep INTEGER NOT NULL,
    candidate_id TEXT NOT NULL, status TEXT NOT NULL, score REAL, result TEXT, error TEXT,
    started_at REAL, finished_at REAL, worker TEXT, PRIMARY KEY (shape, rung, rep));
CREATE TABLE IF NOT EXISTS steps (
    step INTEGER PRIMARY KEY, committed_at REAL NOT NULL, summary TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (
    id INTEGER PRIMARY KEY CHECK (id = 0), step INTEGER NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS latency (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""


@dataclass
class JournalRow:
    """One proposal with its evaluations, as a report reads it."""

    step: int
    idx: int
    candidate_id: str
    candidate: dict[str, Any]  # Candidate.to_dict(): layers, lineage
    status: ProposalStatus
    dup_of: str | None
    params: int | None  # from the budget check
    latency_ms: float | None  # the measured MLP-stack latency (budget check)
    score: float | None  # the ranked metric at the highest rung reached
    rung: int | None
    evaluations: list[Evaluation]
    proposed_at: float
    finished_at: float | None

    @property
    def lineage(self) -> dict[str, Any]:
        return self.candidate.get("lineage", {})

    @property
    def result(self) -> ScoreResult | None:
        """The scorer's result at the highest rung reached."""
        return self.evaluations[-1].result if self.evaluations else None

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "evaluations"},
                "evaluations": [e.to_dict() for e in self.evaluations]}


class Journal:
    """A run folder's journal (see the module doc). Single writer: the search process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        if self.get_meta("format") is None:
            self.set_meta("format", FORMAT)
        elif self.get_meta("format") != FORMAT:
            raise JournalError(f"{self.path} is a {self.get_meta('format')} journal; this "
                               f"version reads {FORMAT}; start a new run folder")

    @classmethod
    def in_folder(cls, run_dir: str | Path) -> Journal:
        return cls(Path(run_dir) / FILENAME)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -------------------------------------------------------------------- meta
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ writes
    def begin_step(self, step: int, rows: list[tuple[str, str, int | None, float | None]]) -> None:
        """Record the step's proposals ``(candidate_id, candidate_json, params, latency)`` as
        pending. On resume the interrupted step's rows exist: they must match."""
        have = self.db.execute("SELECT candidate_id FROM proposals WHERE step = ? ORDER BY idx",
                               (step,)).fetchall()
        if have:
            if [r[0] for r in have] != [r[0] for r in rows]:
                raise JournalError(
                    f"{self.path}: step {step} was proposed as {[r[0] for r in have]} before the "
                    f"interruption but now as {[r[0] for r in rows]}; the configuration, the "
                    "code or a measured latency changed since the run started. Resume with the "
                    "same code and configuration, or start a new run folder")
            return
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO proposals VALUES (?, ?, ?, ?, ?, ?, 'pending', NULL, ?)",
                [(step, i, cid, text, params, lat, now)
                 for i, (cid, text, params, lat) in enumerate(rows)])

    def record_evaluation(self, step: int, idx: int, candidate_id: str, ev: Evaluation) -> None:
        """Write one finished scorer call (its own small transaction)."""
        with self.transaction() as db:
            db.execute(f"INSERT OR REPLACE INTO evaluations (step, idx, candidate_id, "
                       f"{_EVAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (step, idx, candidate_id, *ev.row()))

    def record_control(self, shape: str, candidate_id: str, ev: Evaluation) -> None:
        """Write one finished scorer call of a paired control (a same-shape standard FFN)."""
        with self.transaction() as db:
            db.execute(f"INSERT OR REPLACE INTO controls (shape, candidate_id, {_EVAL_COLUMNS}) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (shape, candidate_id, *ev.row()))

    def controls(self) -> dict[tuple[str, int, int], Evaluation]:
        """Every finished control by ``(shape, rung, rep)``."""
        return {(r[0], r[1], r[2]): Evaluation.from_row(r[1:]) for r in self.db.execute(
            f"SELECT shape, {_EVAL_COLUMNS} FROM controls")}

    def commit_step(self, step: int, finals: list[tuple[str, str | None]], state: dict[str, Any],
                    summary: dict[str, Any]) -> None:
        """One transaction: every proposal's final ``(status, dup_of)``, the step row and the
        loop state after the step."""
        with self.transaction() as db:
            db.executemany("UPDATE proposals SET status = ?, dup_of = ? WHERE step = ? AND idx = ?",
                           [(st, dup, step, i) for i, (st, dup) in enumerate(finals)])
            db.execute("INSERT INTO steps VALUES (?, ?, ?)", (step, time.time(),
                                                              json.dumps(summary)))
            db.execute("INSERT OR REPLACE INTO state VALUES (0, ?, ?)", (step, json.dumps(state)))

    def discard_step(self, step: int) -> None:
        """Forget an uncommitted step's proposals and evaluations (after a broken scorer)."""
        with self.transaction() as db:
            db.execute("DELETE FROM evaluations WHERE step = ?", (step,))
            db.execute("DELETE FROM proposals WHERE step = ? AND status = 'pending'", (step,))

    def put_latency(self, key: str, value: float) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO latency VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------- reads
    def latencies(self) -> dict[str, float]:
        return dict(self.db.execute("SELECT key, value FROM latency").fetchall())

    def last_state(self) -> tuple[int, dict[str, Any]] | None:
        row = self.db.execute("SELECT step, state FROM state WHERE id = 0").fetchone()
        return None if row is None else (int(row[0]), json.loads(row[1]))

    def evaluations_of(self, step: int) -> dict[tuple[int, int, int], Evaluation]:
        """Finished scorer calls of ``step`` by ``(idx, rung, rep)`` (read back on resume)."""
        return {(r[0], r[1], r[2]): Evaluation.from_row(r[1:]) for r in self.db.execute(
            f"SELECT idx, {_EVAL_COLUMNS} FROM evaluations WHERE step = ?", (step,))}

    def committed_proposals(self) -> list[tuple[str, str, str | None]]:
        """``(candidate_json, status, dup_of)`` of committed steps, in order."""
        return self.db.execute("SELECT candidate, status, dup_of FROM proposals WHERE status != "
                               "'pending' ORDER BY step, idx").fetchall()

    def read_all(self) -> list[JournalRow]:
        """Every proposal, oldest first, with its evaluations (see :class:`JournalRow`)."""
        evals: dict[tuple[int, int], list[Evaluation]] = {}
        for r in self.db.execute(f"SELECT step, idx, {_EVAL_COLUMNS} FROM evaluations "
                                 "ORDER BY step, idx, rung, rep"):
            evals.setdefault((r[0], r[1]), []).append(Evaluation.from_row(r[2:]))
        rows = []
        for r in self.db.execute("SELECT step, idx, candidate_id, candidate, params, latency, "
                                 "status, dup_of, proposed_at FROM proposals ORDER BY step, idx"):
            ev = evals.get((r[0], r[1]), [])
            last = ev[-1] if ev else None
            rows.append(JournalRow(
                step=r[0], idx=r[1], candidate_id=r[2], candidate=json.loads(r[3]),
                status=ProposalStatus(r[6]), dup_of=r[7], params=r[4], latency_ms=r[5],
                score=None if last is None else last.score,
                rung=None if last is None else last.rung, evaluations=ev,
                proposed_at=r[8], finished_at=None if last is None else last.finished_at))
        return rows

    def summaries(self) -> list[dict[str, Any]]:
        """Per committed step: its summary (best so far, evaluations, dedupe, ...)."""
        return [{"step": s, "committed_at": t, **json.loads(j)} for s, t, j in
                self.db.execute("SELECT step, committed_at, summary FROM steps ORDER BY step")]
