"""``efficientbert report RUN_DIR``: a self-contained HTML report of a run folder.

Reads the stage journals (``RUN_DIR/stage*/journal.sqlite``, or ``RUN_DIR/journal.sqlite``
for a single search) and, when present, ``RUN_DIR/results.json``; writes into
``RUN_DIR/report/``: ``index.html`` (relative image links, an inline sort script, nothing
loaded from the network), the winners' graphs per layer side by side
(``winner_<section>.svg``, via :func:`mlpgraph.render`), the Pareto front (``pareto.png``),
the best score over evaluations (``progress.png``), the lineage of the winners
(``lineage.svg``: parent -> child edges labelled with the mutations), the dedupe hit rate
(``dedupe.png``) and a table of every candidate.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlpgraph
from mlpgraph.drawing import DagEdge, DagNode, DagPanel, dag_to_dot, draw_dag

from .budget import pareto_front
from .candidate import Candidate
from .journal import FILENAME, Journal, JournalRow

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th, col) => {
  th.addEventListener('click', () => {
    const body = th.closest('table').tBodies[0];
    const rows = Array.from(body.rows);
    const dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir > 0 ? 'asc' : 'desc';
    const key = r => { const t = r.cells[col].dataset.v ?? r.cells[col].textContent;
                       const n = parseFloat(t); return isNaN(n) ? t : n; };
    rows.sort((a, b) => { const x = key(a), y = key(b);
                          return (x > y ? 1 : x < y ? -1 : 0) * dir; });
    rows.forEach(r => body.appendChild(r));
  });
});"""
CSS = """body{font-family:sans-serif;margin:24px;max-width:1500px;color:#222}
h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 6px}
th{background:#f1f3f5;cursor:pointer}td:first-child{white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee;margin:6px 0}.note{color:#555;font-size:13px}
code{background:#f6f6f6;padding:1px 3px}"""


@dataclass
class Section:
    """One search (a stage of a run, or a lone search folder)."""

    name: str
    folder: Path
    rows: list[JournalRow]
    summaries: list[dict[str, Any]]
    config: dict[str, Any]
    stage_info: dict[str, Any]

    @property
    def scored(self) -> list[JournalRow]:
        return [r for r in self.rows if r.status == "evaluated" and r.score is not None]

    @property
    def winner(self) -> JournalRow | None:
        ok = self.scored
        return max(ok, key=lambda r: r.score) if ok else None  # first of equals wins

    @property
    def hidden(self) -> int | None:
        if self.config.get("hidden"):
            return int(self.config["hidden"])
        try:
            from distill.config import load_config

            return load_config(self.config["student_config"]).hidden
        except Exception:  # noqa: BLE001 - a report without integer widths is still useful
            return None


def model_latency(row: JournalRow) -> float | None:
    """The scorer's measured whole-model latency (ms) of the last evaluation, if any."""
    return row.evaluations[-1].get("latency_ms") if row.evaluations else None


def load_sections(run_dir: Path) -> list[Section]:
    """The searches of ``run_dir`` (stages in order, or the folder itself)."""
    folders = ([("search", run_dir)] if (run_dir / FILENAME).is_file() else
               [(p.name.replace("stage", "stage "), p) for p in sorted(run_dir.glob("stage*"))
                if (p / FILENAME).is_file()])
    if not folders:
        raise FileNotFoundError(f"{run_dir} holds no search journal ({FILENAME} in the folder "
                                "or in stage*/ subfolders); pass the folder of an "
                                "`efficientbert run` or of a run_search call")
    out = []
    for name, folder in folders:
        with Journal.in_folder(folder) as j:
            rows, summaries = j.read_all(), j.summaries()
            config = json.loads(j.get_meta("config") or "{}")
        info = folder / "stage.json"
        out.append(Section(name, folder, rows, summaries, config,
                           json.loads(info.read_text()) if info.is_file() else {}))
    return out


# ------------------------------------------------------------------------ figures
def _figure(ncols: int, height: float = 4.0) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 5.0 * ncols), height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def draw_winner(sec: Section, path: Path) -> Path | None:
    """The winner's graph of every layer, side by side, titled with ``s`` and ratio."""
    w = sec.winner
    if w is None:
        return None
    cand = Candidate.from_dict(w.candidate)
    h = sec.hidden
    items = [(f"layer {i + 1}: s={g.stacks}, ratio {g.ratio}", g.graph)
             for i, g in enumerate(cand.layers)]
    kw = {} if h is None else {"d_model": h, "d_inner": [g.d_inner(h) for g in cand.layers]}
    return mlpgraph.render(items, path, **kw)


def draw_pareto(sections: list[Section], path: Path) -> Path:
    """Held-out score vs measured latency per section; colour and size = parameters."""
    fig, axes = _figure(len(sections))
    for ax, sec in zip(axes, sections, strict=True):
        pts = [(r, model_latency(r)) for r in sec.scored]
        pts = [(r, lat) for r, lat in pts if lat is not None]
        ax.set_title(f"{sec.name}: score vs latency")
        ax.set_xlabel("measured model latency (ms)")
        ax.set_ylabel("held-out score")
        if not pts:
            ax.text(0.5, 0.5, "no latency measured", ha="center", transform=ax.transAxes)
            continue
        params = [r.params or 0 for r, _ in pts]
        lo, hi = min(params), max(params)
        sizes = [30 + 120 * ((p - lo) / (hi - lo) if hi > lo else 0.5) for p in params]
        sc = ax.scatter([lat for _, lat in pts], [r.score for r, _ in pts], c=params, s=sizes,
                        cmap="viridis", alpha=0.8, edgecolors="none")
        fig.colorbar(sc, ax=ax, label="parameters")
        front = pareto_front(pts, lambda p: (p[0].score, -p[1], -(p[0].params or 0)))
        front.sort(key=lambda p: p[1])
        ax.plot([lat for _, lat in front], [r.score for r, _ in front], "--", color="crimson",
                lw=1, drawstyle="steps-post", label="Pareto front")
        ax.scatter([lat for _, lat in front], [r.score for r, _ in front], s=80,
                   facecolors="none", edgecolors="crimson", lw=1.5)
        ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def draw_progress(sections: list[Section], path: Path) -> Path:
    """Each evaluation's score and the best so far, in evaluation order."""
    fig, axes = _figure(len(sections), 3.6)
    for ax, sec in zip(axes, sections, strict=True):
        scores = [r.score for r in sec.rows if r.status == "evaluated" and r.score is not None]
        best, running = [], float("-inf")
        for s in scores:
            running = max(running, s)
            best.append(running)
        xs = list(range(1, len(scores) + 1))
        ax.scatter(xs, scores, s=12, color="#74a9cf", label="candidate")
        ax.plot(xs, best, color="#08519c", lw=2, label="best so far")
        ax.set_title(f"{sec.name}: best score over evaluations")
        ax.set_xlabel("evaluation")
        ax.set_ylabel("held-out score")
        ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def draw_dedupe(sections: list[Section], path: Path) -> Path:
    """Cumulative dedupe hit rate after every committed step."""
    fig, axes = _figure(1, 3.2)
    ax = axes[0]
    for sec in sections:
        ax.plot([s["step"] for s in sec.summaries],
                [100 * s.get("dedupe_hit_rate", 0.0) for s in sec.summaries], marker=".",
                label=sec.name)
    ax.set_xlabel("search step")
    ax.set_ylabel("duplicates among proposals (%)")
    ax.set_title("dedupe hit rate (cumulative)")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def lineage_panels(sections: list[Section],
                   limit: int = 40) -> tuple[list[DagPanel], list[DagEdge]]:
    """Per section with a winner, a panel of the winner and up to ``limit`` ancestors
    (parent -> child edges labelled with the mutations; a parent past the limit is a
    bare box); dashed links join a section's winner to the same candidate in the next."""
    panels, links = [], []
    prev: tuple[int, str] | None = None  # the previous section's winner
    for si, sec in enumerate(sections):
        by_id: dict[str, JournalRow] = {}
        for r in sec.rows:  # duplicates can be parents too (they join the population)
            if r.candidate_id not in by_id or by_id[r.candidate_id].status == "duplicate":
                by_id[r.candidate_id] = r
        w = sec.winner
        if w is None:
            continue
        nodes: dict[str, DagNode] = {}
        edges: list[DagEdge] = []
        todo = [w.candidate_id]
        while todo and len(nodes) < limit:
            cid = todo.pop()
            if cid in nodes or cid not in by_id:
                continue
            r = by_id[cid]
            score = f"dup of {r.dup_of[:8]}" if r.dup_of else \
                "-" if r.score is None else f"{r.score:.4f}"
            nodes[cid] = DagNode(f"{si}:{cid}", f"{cid[:8]}\n{r.lineage.get('origin')} {score}",
                                 fill="#ffd8a8" if cid == w.candidate_id else "#f1f3f5")
            label = "\n".join(f"{m['name']}@L{m['layer'] + 1}"
                              for m in r.lineage.get("mutations", [])) or \
                r.lineage.get("origin", "")
            for parent in r.lineage.get("parents", []):
                if parent in by_id:
                    edges.append(DagEdge(f"{si}:{parent}", f"{si}:{cid}", label))
                    todo.append(parent)
        beyond = sorted({e.src.split(":", 1)[1] for e in edges} - nodes.keys())
        stubs = [DagNode(f"{si}:{cid}", cid[:8], fill="#ffffff") for cid in beyond]
        panels.append(DagPanel(list(nodes.values()) + stubs, edges, sec.name))
        if prev is not None and prev[1] in nodes:
            links.append(DagEdge(f"{prev[0]}:{prev[1]}", f"{si}:{prev[1]}",
                                 f"base of {sec.name}", dashed=True))
        prev = (si, w.candidate_id)
    return panels, links


def lineage_dot(sections: list[Section], limit: int = 40) -> str:
    """DOT text of :func:`lineage_panels` (ancestors on top)."""
    panels, links = lineage_panels(sections, limit)
    if not panels:
        return "digraph lineage {\n}\n"
    return dag_to_dot(panels, direction="down", links=links, name="lineage")


def draw_lineage(sections: list[Section], path: Path) -> Path | None:
    """``lineage.svg`` by Graphviz when ``dot`` is installed, else by matplotlib; ``None``
    when no section has a winner."""
    panels, links = lineage_panels(sections)
    if not panels:
        return None
    return draw_dag(panels, path, direction="down", links=links, name="lineage")


# --------------------------------------------------------------------------- HTML
def _e(v: Any) -> str:
    return html.escape(str(v))


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return '<td class="num" data-v="">-</td>'
    text = f"{v:.{digits}f}" if isinstance(v, float) else f"{v:,}"
    return f'<td class="num" data-v="{v}">{text}</td>'


def _final_table(results: dict[str, Any]) -> str:
    final = results.get("final", {})
    names = {"teacher": "teacher (fine-tuned)", "winner": "searched winner",
             "baseline": "standard FFN, same shape"}
    body = "".join(
        f"<tr><td>{names[k]}</td>{_num(final[k]['params'])}{_num(final[k].get('mlp_mflops'), 1)}"
        f"{_num(final[k]['latency_ms'], 2)}{_num(final[k]['heldout'].get('accuracy'))}"
        f"{_num(final[k]['test'].get('accuracy'))}{_num(final[k]['test'].get('f1'))}</tr>"
        for k in names if k in final)
    teacher = results.get("teacher", {})
    return ("<table><tr><th>model</th><th>params</th><th>MLP MFLOPs</th><th>latency ms</th>"
            f"<th>heldout acc</th><th>TEST acc</th><th>TEST f1</th></tr>{body}</table>"
            "<p class='note'>Search scores are held-out accuracies (the <code>heldout</code> "
            "split, never trained on); the test split is read only for this table. Both "
            "students get the same task KD from the same supernet; latency is the median of "
            "interleaved measurements (batch 8 x 64). Teacher "
            f"{'reused from the cache' if teacher.get('reused') else 'fine-tuned in this run'}"
            ".</p>")


def _run_tables(results: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>stage {s['stage']}</td>{_num(s['evaluations'])}{_num(s['best_score'])}"
        f"{_num(s.get('base_score'))}<td class='num'>{s['dedupe']['hit_rate']:.0%}</td>"
        f"{_num(s['seconds'], 0)}<td><code>{_e(s['describe'])}</code></td></tr>"
        for s in results.get("stages", []))
    t = results.get("timings", {})
    timing = "".join(f"<tr><td>{_e(k)}</td>{_num(v, 0)}</tr>" for k, v in t.items())
    return ("<table><tr><th>stage</th><th>evaluations</th><th>best held-out</th><th>start "
            "score</th><th>dedupe</th><th>seconds</th><th>winner</th></tr>" + rows
            + "</table><h3>Wall time (seconds)</h3><table>" + timing + "</table>"
            "<p class='note'>job_excluding_one_time leaves out assets, the teacher fine-tune "
            "and the teacher-output caches (cached across runs).</p>")


def _candidate_table(sections: list[Section]) -> str:
    head = ("section", "step.idx", "id", "status", "score", "params", "model ms",
            "MLP cost", "origin", "parents", "mutations", "layers (expr @ s x ratio)")
    out = ["<table class='sortable'><thead><tr>" + "".join(f"<th>{h}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for sec in sections:
        for r in sec.rows:
            lin = r.lineage
            muts = ", ".join(f"{m['name']}@L{m['layer'] + 1}" for m in lin.get("mutations", []))
            layers = " | ".join(f"{x.get('expr')} @ {x.get('stacks')}x{x.get('ratio')}"
                                for x in r.candidate.get("layers", []))
            status = r.status + (f" of {r.dup_of[:8]}" if r.dup_of else "")
            out.append(f"<tr><td>{_e(sec.name)}</td><td data-v='{r.step * 1000 + r.idx}'>"
                       f"{r.step}.{r.idx}</td><td><code>{r.candidate_id[:10]}</code></td>"
                       f"<td>{_e(status)}</td>{_num(r.score)}{_num(r.params)}"
                       f"{_num(model_latency(r), 2)}{_num(r.latency_ms, 2)}"
                       f"<td>{_e(lin.get('origin', ''))}</td>"
                       f"<td>{_e(', '.join(p[:8] for p in lin.get('parents', [])))}</td>"
                       f"<td>{_e(muts)}</td><td>{_e(layers)}</td></tr>")
    return "\n".join(out) + "</tbody></table>"


def _dedupe_table(sections: list[Section]) -> str:
    rows = []
    for sec in sections:
        d = sec.stage_info.get("dedupe", {})
        dups = sum(r.status == "duplicate" for r in sec.rows)
        rate = dups / len(sec.rows) if sec.rows else 0.0
        rows.append(f"<tr><td>{_e(sec.name)}</td>{_num(len(sec.rows))}{_num(dups)}"
                    f"{_num(d.get('key_hits'))}{_num(d.get('fingerprint_hits'))}"
                    f"<td class='num'>{rate:.1%}</td></tr>")
    return ("<table><tr><th>section</th><th>proposals</th><th>duplicates</th><th>by key</th>"
            "<th>by fingerprint</th><th>hit rate</th></tr>" + "".join(rows) + "</table>")


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report/index.html`` and its figures; return the HTML path."""
    run_dir = Path(run_dir)
    sections = load_sections(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    res_file = run_dir / "results.json"
    results = json.loads(res_file.read_text()) if res_file.is_file() else {}
    parts = [f"<h1>efficientbert search report</h1><p class='note'>{_e(run_dir.resolve())}</p>"]
    if results.get("final"):
        parts.append("<h2>Winner vs standard FFN (test split)</h2>" + _final_table(results))
    if results.get("stages"):
        parts.append("<h2>Stages</h2>" + _run_tables(results))
    parts.append("<h2>Winners: graphs per layer</h2>")
    for sec in sections:
        w = sec.winner
        slug = sec.name.replace(" ", "")
        img = draw_winner(sec, out / f"winner_{slug}.svg")
        if w is None or img is None:
            parts.append(f"<p>{_e(sec.name)}: no candidate scored.</p>")
            continue
        desc = Candidate.from_dict(w.candidate).describe()
        parts.append(f"<h3>{_e(sec.name)}: score {w.score:.4f}, {w.params or 0:,} params</h3>"
                     f"<p><code>{_e(desc)}</code></p><img src='{img.name}' alt='winner graphs'>")
    parts.append("<h2>Pareto front</h2><p class='note'>Not dominated in (score up, latency "
                 "down, parameters down). Stage 3 scores are without training, so stages are "
                 "plotted apart.</p>"
                 f"<img src='{draw_pareto(sections, out / 'pareto.png').name}'>")
    parts.append("<h2>Best score over evaluations</h2>"
                 f"<img src='{draw_progress(sections, out / 'progress.png').name}'>")
    lineage = draw_lineage(sections, out / "lineage.svg")
    (out / "lineage.dot").write_text(lineage_dot(sections))
    parts.append("<h2>Lineage of the winners</h2><p class='note'>parent &rarr; child, edges "
                 "labelled with the mutations (name@layer); orange: a section's winner.</p>"
                 + (f"<img src='{lineage.name}'>" if lineage else
                    "<p>No section has a scored candidate yet.</p>"))
    parts.append("<h2>Dedupe</h2>" + _dedupe_table(sections)
                 + f"<img src='{draw_dedupe(sections, out / 'dedupe.png').name}'>")
    parts.append(f"<h2>Every candidate ({sum(len(s.rows) for s in sections)})</h2><p "
                 "class='note'>Click a header to sort. <i>model ms</i>: the scorer's measured "
                 "latency; <i>MLP cost</i>: the budget check's value (MFLOPs with the flops "
                 "proxy).</p>" + _candidate_table(sections))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>efficientbert report"
            f"</title><style>{CSS}</style></head><body>{''.join(parts)}"
            f"<script>{SORT_JS}</script></body></html>\n")
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
