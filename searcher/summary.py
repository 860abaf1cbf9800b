"""A run's results as tables: one function from ``results.json`` to rows, used by the
terminal summary of ``efficientbert run`` (rich) and by the HTML report (a jinja2 template).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    """A titled table: ``rows`` hold plain values (numbers stay numbers)."""

    title: str
    header: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class Summary:
    """Everything the terminal and the report show about a run."""

    facts: list[tuple[str, str]] = field(default_factory=list)  # (label, text)
    tables: list[Table] = field(default_factory=list)
    verdict: str = ""


def _stage_table(results: dict[str, Any]) -> Table:
    rank = next((s.get("rank_by") for s in results.get("stages", [])), None) or "score"
    rows = [[f"stage {s['stage']}", s["evaluations"], s["best_score"], s.get("base_score"),
             f"{s['dedupe']['hit_rate']:.0%}", round(s["seconds"]), s["describe"]]
            for s in results.get("stages", [])]
    return Table("Search stages", ["stage", "evals", f"best held-out {rank}", "start score",
                                   "dedupe", "seconds", "winner (expr @ s x ratio per layer)"],
                 rows)


_NAMES = {"teacher": "teacher (fine-tuned)", "winner": "searched winner",
          "baseline": "standard FFN, same shape"}


def _final_table(final: dict[str, Any]) -> Table:
    metrics = final.get("metrics", [])
    split = final.get("splits", {})
    header = ["model", "params", "MLP MFLOPs", "latency ms",
              *(f"{split.get('eval', 'eval')} {m}" for m in metrics[:1]),
              *(f"TEST {m}" if split.get("test") == "test" else f"{split.get('test')} {m}"
                for m in metrics)]
    rows = []
    for key, name in _NAMES.items():
        if key in final:
            r = final[key]
            rows.append([name, r["params"], r.get("mlp_mflops"), r["latency_ms"],
                         *(r.get("eval", {}).get(m) for m in metrics[:1]),
                         *(r.get("test", {}).get(m) for m in metrics)])
    note = ("Search scores come from held-out rows of the training data; the test split is "
            "read only for this table. Both students get the same task KD from the same "
            "supernet; latency is the median of interleaved measurements (batch 8 x 64).")
    return Table("Winner vs standard FFN", header, rows, note)


def summarize(results: dict[str, Any]) -> Summary:
    """The rows of a run (``results.json`` as a dict)."""
    t = results.get("timings", {})
    teacher, caches = results.get("teacher", {}), results.get("caches", {})
    out = Summary()
    out.facts = [
        ("run folder", str(results.get("run_dir", ""))),
        ("teacher", f"{'reused from the cache' if teacher.get('reused') else 'fine-tuned now'}"
                    f" ({t.get('teacher', 0):.0f} s) {teacher.get('folder', '')}"),
        ("caches", f"teacher outputs {'reused' if caches.get('reused') else 'computed'} "
                   f"({t.get('teacher_output_caches', 0):.0f} s); "
                   f"assets {t.get('assets', 0):.0f} s"),
        ("wall time", f"{t.get('total', 0) / 60:.1f} min in all; "
                      f"{t.get('job_excluding_one_time', 0) / 60:.1f} min excluding assets, "
                      "teacher fine-tune and teacher-output caches"),
        ("steps", ", ".join(f"{k} {v:.0f} s" for k, v in t.items()
                            if k.startswith(("warmup", "rewarm", "final", "stage")))),
    ]
    if results.get("stages"):
        out.tables.append(_stage_table(results))
    final = results.get("final", {})
    if final:
        out.tables.append(_final_table(final))
        metric = (final.get("metrics") or [None])[0]
        w, b = final.get("winner", {}).get("test", {}), final.get("baseline", {}).get("test", {})
        if metric and metric in w and metric in b:
            out.verdict = (f"winner - baseline on {final['splits'].get('test')}: "
                           f"{w[metric] - b[metric]:+.4f} {metric} (one seed)")
    return out


def print_summary(results: dict[str, Any]) -> None:
    """The terminal summary (rich tables)."""
    from mlpgraph.cli_common import print_table

    s = summarize(results)
    width = max(len(label) for label, _ in s.facts)
    for label, text in s.facts:
        print(f"{label + ':':<{width + 1}} {text}")
    for table in s.tables:
        print()
        print_table(table.header, table.rows, table.title)
    if s.verdict:
        print("\n" + s.verdict)
    if results.get("report"):
        print(f"report: {results['report']}")
