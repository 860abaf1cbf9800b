"""A run's results as tables: one function from :class:`~searcher.results.RunResults` to
rows, used by the terminal summary of ``efficientbert run`` (rich) and by the HTML report
(a jinja2 template).

What a user measures comes first: the verdict on the task's test metric, then the table of
test metrics, latency and size; KD loss and teacher KL follow as diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .results import Contrast, FinalRecord, Latency, MetricRef, RunResults


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
    verdicts: list[str] = field(default_factory=list)  # one sentence each, primary first

    @property
    def verdict(self) -> str:
        return "\n".join(self.verdicts)


NAMES = {"teacher": "teacher (fine-tuned)", "winner": "searched winner",
         "baseline": "standard FFN, same shape", "equal_params": "standard FFN, equal size"}


def model_name(final: FinalRecord, role: str) -> str:
    if role in NAMES:
        return NAMES[role]
    row = final.models.get(role)
    return f"fixed: {row.expressions[0] if row else '?'}, same shape"


def _stage_table(results: RunResults) -> Table:
    rank = next((s.rank_by for s in results.stages), "score")
    rows = [[f"stage {s.stage}", s.evaluations, s.best_score, s.base_score,
             f"{s.dedupe.get('hit_rate', 0.0):.0%}", round(s.seconds),
             s.describe + (f" (fallback: {s.searched} was worse than this FFN)"
                           if s.handed_on else "")]
            for s in results.stages]
    return Table("Search stages", ["stage", "evals", f"best held-out {rank}", "start score",
                                   "dedupe", "seconds", "winner (expr @ s x ratio per layer)"],
                 rows, "Search scores: the fitness rung's mean on held-out rows of the "
                 "training data (the rung the candidate was selected on).")


def _final_table(final: FinalRecord) -> Table:
    metrics, test = final.metrics, _split_label(final)
    header = ["model", *(f"{test} {m}" for m in metrics), "ms, batch 1", "ms, batch 32",
              "params", "MLP MFLOPs", f"{final.splits.get('eval', 'eval')} {metrics[0]}",
              "held-out kd_loss", "teacher KL"]
    rows = []
    for role, r in final.models.items():
        rows.append([model_name(final, role), *(r.test.get(m) for m in metrics),
                     *_times(r.latency), r.params, r.mlp_mflops, r.eval.get(metrics[0]),
                     r.kd.get("kd_loss"), r.kd.get("teacher_kl")])
    if final.teacher is not None:
        t = final.teacher
        rows.insert(0, [NAMES["teacher"], *(t.test.get(m) for m in metrics),
                        *_times(t.latency), t.params, None, t.eval.get(metrics[0]), None,
                        None])
    lat = final.latency
    where = (f"median of {lat.rounds} interleaved rounds, {lat.seq} tokens, {lat.device}, "
             f"{lat.threads} thread(s), load average {lat.load[0]:.1f} -> {lat.load[1]:.1f}"
             if lat is not None else "not measured")
    note = (f"Students: means over {final.seeds} paired seed(s), one recipe. The {test} split "
            f"is read only for this table. Latency: {where}. kd_loss (the task-KD objective "
            "on held-out rows) and teacher KL are diagnostics; lower is better for both.")
    return Table("Winner vs standard FFN", header, rows, note)


def _times(latency: Latency | None) -> list[float | None]:
    return [None, None] if latency is None else [latency.batch1_ms, latency.batch32_ms]


def _split_label(final: FinalRecord) -> str:
    test = final.splits.get("test")
    return "TEST" if test == "test" else str(test)


def _contrast_table(final: FinalRecord, contrast: Contrast) -> Table:
    rows = [[c.metric.label, sum(c.a) / len(c.a), sum(c.b) / len(c.b), c.delta_mean,
             f"[{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}]", c.seeds]
            for c in _user_first(final, contrast)]
    return Table(f"Paired comparison: winner - {model_name(final, contrast.other)}",
                 ["metric", "winner", contrast.other, "difference", "95% CI", "seeds"], rows,
                 "The interval is mean +- t(0.975, seeds-1) * sd / sqrt(seeds) of the per-seed "
                 "differences; 'better' is said only where it excludes 0.")


def _user_first(final: FinalRecord, contrast: Contrast) -> list[Any]:
    """The contrast's comparisons: the test metrics first, then the held-out ones, then the
    KD diagnostics."""
    test = final.splits.get("test")
    return sorted(contrast.comparisons, key=lambda c: (c.metric.split != test,
                                                       c.metric.name not in final.metrics))


def verdicts(final: FinalRecord) -> list[str]:
    """One sentence per contrast on the primary test metric, then latency and size against
    the same-shape FFN, then the KD diagnostic."""
    if final.models.get("baseline") is not None and final.models["baseline"].same_as == "winner":
        return ["The search's winner is the standard FFN itself (at its own shape): it found "
                "nothing better than the baseline, so there is no difference to test."]
    test = MetricRef(name=final.metrics[0], split=final.splits.get("test"))
    out = []
    for contrast in final.contrasts:
        c = contrast.get(test)
        if c is not None:
            out.append(c.verdict)
    out += [c.verdict for contrast in final.contrasts for c in contrast.latency]
    w, b = final.models.get("winner"), final.models.get("baseline")
    if w is not None and b is not None:
        out.append(f"size: the winner has {w.params:,} parameters, the same-shape FFN "
                   f"{b.params:,} ({w.params / b.params - 1:+.1%})")
    base = final.contrast("baseline")
    kd = base.get(MetricRef(name="kd_loss")) if base else None
    if kd is not None:
        out.append(f"(diagnostic) {kd.verdict}")
    return out


def _facts(results: RunResults) -> list[tuple[str, str]]:
    t, teacher, caches, task = results.timings, results.teacher, results.caches, results.task
    cuts = ", ".join(f"{k} {v['truncated']}/{v['rows']}"
                     for k, v in task.get("truncated", {}).items())
    return [
        ("run folder", results.run_dir),
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


def summarize(results: RunResults) -> Summary:
    """The rows of a run."""
    out = Summary(facts=_facts(results))
    final = results.final
    if final is not None:
        out.verdicts = verdicts(final)
        out.tables.append(_final_table(final))
        out.tables += [_contrast_table(final, c) for c in final.contrasts if c.comparisons]
    if results.stages:
        out.tables.append(_stage_table(results))
    return out


def print_summary(results: RunResults) -> None:
    """The terminal summary (rich tables; user text is never markup)."""
    from mlpgraph.cli_common import print_table

    s = summarize(results)
    width = max(len(label) for label, _ in s.facts)
    for label, text in s.facts:
        print(f"{label + ':':<{width + 1}} {text}")
    if s.verdicts:
        print()
        for line in s.verdicts:
            print(line)
    for table in s.tables:
        print()
        print_table(table.header, table.rows, table.title)
    if results.report:
        print(f"report: {results.report}")
