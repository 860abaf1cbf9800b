"""A run's results as tables: one function from ``results.json`` to rows, used by the
terminal summary of ``efficientbert run`` (rich) and by the HTML report (a jinja2 template).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .fidelity import handed_on


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
             f"{s['dedupe']['hit_rate']:.0%}", round(s["seconds"]),
             s["describe"] + (f" (fallback: {s['searched']} was worse than this FFN)"
                              if handed_on(s) else "")]
            for s in results.get("stages", [])]
    return Table("Search stages", ["stage", "evals", f"best held-out {rank}", "start score",
                                   "dedupe", "seconds", "winner (expr @ s x ratio per layer)"],
                 rows)


_NAMES = {"teacher": "teacher (fine-tuned)", "winner": "searched winner",
          "baseline": "standard FFN, same shape", "equal_params": "standard FFN, equal size"}


def _final_table(final: dict[str, Any]) -> Table:
    metrics = final.get("metrics", [])
    split = final.get("splits", {})
    test = "TEST" if split.get("test") == "test" else str(split.get("test"))
    seeds = final.get("seeds", 1)
    header = ["model", "params", "MLP MFLOPs", "latency ms", "held-out kd_loss",
              *(f"{split.get('eval', 'eval')} {m}" for m in metrics[:1]),
              *(f"{test} {m}" for m in metrics)]
    rows = []
    keys = [k for k in _NAMES if k in final] + sorted(k for k in final if k.startswith("fixed"))
    for key in keys:
        r = final[key]
        rows.append([_name(final, key), r["params"], r.get("mlp_mflops"), r.get("latency_ms"),
                     r.get("kd", {}).get("kd_loss"),
                     *(r.get("eval", {}).get(m) for m in metrics[:1]),
                     *(r.get("test", {}).get(m) for m in metrics)])
    note = (f"Students: means over {seeds} paired seed(s), one recipe (task KD from the warmed "
            "supernet). kd_loss: the task-KD objective on held-out rows (lower is better). "
            "Search scores come from held-out rows of the training data; the test split is "
            "read only for this table. Latency: median of interleaved runs (batch 8 x 64).")
    return Table("Winner vs standard FFN", header, rows, note)


def _name(final: dict[str, Any], key: str) -> str:
    if key in _NAMES:
        return _NAMES[key]
    return f"fixed: {final.get(key, {}).get('expressions', ['?'])[0]}, same shape"


def _comparison_table(final: dict[str, Any], key: str, other: str) -> Table | None:
    comp = final.get(key)
    if not comp:
        return None
    rows = [[m, sum(c["winner"]) / len(c["winner"]), sum(c[other]) / len(c[other]),
             c["delta_mean"], f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]", c["seeds"]]
            for m, c in comp.items()]
    return Table(f"Paired comparison: winner - {_name(final, other)}",
                 ["metric", "winner", other, "difference", "95% CI", "seeds"], rows,
                 "The interval is mean +- t(0.975, seeds-1) * sd / sqrt(seeds) of the per-seed "
                 "differences; 'better' is said only where it excludes 0.")


def summarize(results: dict[str, Any]) -> Summary:
    """The rows of a run (``results.json`` as a dict)."""
    t = results.get("timings", {})
    teacher, caches = results.get("teacher", {}), results.get("caches", {})
    out = Summary()
    task = results.get("task", {})
    cuts = ", ".join(f"{k} {v['truncated']}/{v['rows']}"
                     for k, v in task.get("truncated", {}).items())
    out.facts = [
        ("run folder", str(results.get("run_dir", ""))),
        *([("task", f"{task['name']}: metrics {', '.join(task['metrics'])}; final split "
                    f"{task['final_split']}; rows cut at {task['max_length']} tokens: {cuts}"
                    + "".join(f"; {n}" for n in task.get("notes", [])))] if task else []),
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
        others = [("comparison", "baseline")] + [
            (k, k.removeprefix("comparison_")) for k in final if k.startswith("comparison_")]
        for key, other in others:
            table = _comparison_table(final, key, other)
            if table is not None:
                out.tables.append(table)
        comp = final.get("comparison", {})
        test_metric = f"{final['splits'].get('test')}/{(final.get('metrics') or [''])[0]}"
        out.verdict = "\n".join(comp[m]["verdict"] for m in ("kd_loss", test_metric)
                                if m in comp)
        if final.get("same_as", {}).get("baseline") == "winner":
            out.verdict = ("The search's winner is the standard FFN itself (at its own "
                           "shape): it found nothing better than the baseline, so there is "
                           "no difference to test.")
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
