"""``efficientbert report RUN_DIR``: a self-contained HTML report of a run folder.

Reads the stage journals (``RUN_DIR/stage*/journal.sqlite``, or ``RUN_DIR/journal.sqlite``
for a single search) and, when present, ``RUN_DIR/results.json``; writes into
``RUN_DIR/report/``: ``index.html`` (relative image links, an inline sort script, nothing
loaded from the network), the winners' graphs per layer side by side
(``winner_<section>.svg``, via :func:`mlpgraph.render`), the Pareto front (``pareto.png``),
the best score over evaluations (``progress.png``), the lineage of the winners
(``lineage.svg``: parent -> child edges labelled with the mutations), the dedupe hit rate
(``dedupe.png``) and a table of every candidate. The page is ``templates/report.html.j2``
(jinja2) fed by the same results -> rows function as the terminal summary
(:func:`searcher.summary.summarize`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlpgraph
from distill import load_config, metric
from mlpgraph.cli_common import cell
from mlpgraph.drawing import DagEdge, DagNode, DagPanel, dag_to_dot, draw_dag

from .budget import pareto_front
from .candidate import Candidate
from .journal import FILENAME, Journal, JournalRow
from .records import ProposalStatus
from .results import StageRecord, load_results, load_stage
from .summary import Summary, Table, summarize


@dataclass
class Section:
    """One search (a stage of a run, or a lone search folder)."""

    name: str
    folder: Path
    rows: list[JournalRow]
    summaries: list[dict[str, Any]]
    config: dict[str, Any]
    stage_info: StageRecord | None

    @property
    def scored(self) -> list[JournalRow]:
        return [r for r in self.rows
                if r.status == ProposalStatus.EVALUATED and r.score is not None]

    @property
    def rank_by(self) -> str:
        return str(self.config.get("rank_by", "score"))

    def fitness(self, row: JournalRow) -> tuple[int, float]:
        """``(rung, score)`` with the score signed so that larger is better."""
        sign = 1.0 if metric(self.rank_by).higher_is_better else -1.0
        return (row.rung or 0, sign * (row.score or 0.0))

    @property
    def winner(self) -> JournalRow | None:
        """The search's best: the candidate ``stage.json`` ranks first (mean over seeds at the
        top rung), else the best (rung, score) in the journal (first of equals)."""
        ok = self.scored
        top = (self.stage_info.top if self.stage_info else None) or [{}]
        best = top[0].get("candidate", {}).get("id")
        return next((r for r in ok if r.candidate_id == best),
                    max(ok, key=self.fitness) if ok else None)

    @property
    def fallback(self) -> str | None:
        """Why the stage handed on another candidate than its best (``stage_winner``)."""
        return self.stage_info.fallback if self.stage_info else None

    @property
    def hidden(self) -> int | None:
        if self.config.get("hidden"):
            return int(self.config["hidden"])
        try:
            return load_config(self.config["student_config"]).hidden
        except Exception:  # noqa: BLE001 - a report without integer widths is still useful
            return None


def model_latency(row: JournalRow) -> float | None:
    """The scorer's measured whole-model latency (ms) of the last evaluation, if any."""
    return row.result.latency_ms if row.result is not None else None


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
                           load_stage(info) if info.is_file() else None))
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
        ax.set_ylabel(f"held-out {sec.rank_by}")
        if not pts:
            ax.text(0.5, 0.5, "no latency measured", ha="center", transform=ax.transAxes)
            continue
        params = [r.params or 0 for r, _ in pts]
        lo, hi = min(params), max(params)
        sizes = [30 + 120 * ((p - lo) / (hi - lo) if hi > lo else 0.5) for p in params]
        sc = ax.scatter([lat for _, lat in pts], [r.score for r, _ in pts], c=params, s=sizes,
                        cmap="viridis", alpha=0.8, edgecolors="none")
        fig.colorbar(sc, ax=ax, label="parameters")
        front = pareto_front(pts, lambda p, sec=sec: (sec.fitness(p[0])[1], -p[1],
                                                      -(p[0].params or 0)))
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
        scores = [r.score for r in sec.scored]
        better = max if metric(sec.rank_by).higher_is_better else min
        best: list[float] = []
        for s in scores:
            best.append(better(best[-1], s) if best else s)
        xs = list(range(1, len(scores) + 1))
        ax.scatter(xs, scores, s=12, color="#74a9cf", label="candidate")
        ax.plot(xs, best, color="#08519c", lw=2, label="best so far")
        ax.set_title(f"{sec.name}: best score over evaluations")
        ax.set_xlabel("evaluation")
        ax.set_ylabel(f"held-out {sec.rank_by}")
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
            if r.candidate_id not in by_id or \
                    by_id[r.candidate_id].status == ProposalStatus.DUPLICATE:
                by_id[r.candidate_id] = r
        w = sec.winner
        if w is None:
            continue
        nodes: dict[str, DagNode] = {}
        edges: list[DagEdge] = []
        todo, cycles = [w.candidate_id], 0
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
                if parent not in by_id:
                    continue
                if _reaches(edges, f"{si}:{cid}", f"{si}:{parent}"):
                    cycles += 1  # an id met again (same structure) would close a loop
                    continue
                edges.append(DagEdge(f"{si}:{parent}", f"{si}:{cid}", label))
                todo.append(parent)
        beyond = sorted({e.src.split(":", 1)[1] for e in edges} - nodes.keys())
        stubs = [DagNode(f"{si}:{cid}", cid[:8], fill="#ffffff") for cid in beyond]
        notes = [f"{cycles} edge(s) back to a descendant omitted (a candidate proposed again "
                 "after its own offspring)"] if cycles else []
        panels.append(DagPanel(list(nodes.values()) + stubs, edges, sec.name, notes))
        if prev is not None and prev[1] in nodes:
            links.append(DagEdge(f"{prev[0]}:{prev[1]}", f"{si}:{prev[1]}",
                                 f"base of {sec.name}", dashed=True))
        prev = (si, w.candidate_id)
    return panels, links


def _reaches(edges: list[DagEdge], start: str, goal: str) -> bool:
    """Whether ``goal`` is ``start`` or below it along ``edges`` (parent -> child)."""
    todo, seen = [start], set()
    while todo:
        v = todo.pop()
        if v == goal:
            return True
        if v not in seen:
            seen.add(v)
            todo += [e.dst for e in edges if e.src == v]
    return False


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
def candidate_table(sections: list[Section]) -> Table:
    """Every proposal of every section."""
    rows = []
    for sec in sections:
        for r in sec.rows:
            lin = r.lineage
            muts = ", ".join(f"{m['name']}@L{m['layer'] + 1}" for m in lin.get("mutations", []))
            layers = " | ".join(f"{x.get('expr')} @ {x.get('stacks')}x{x.get('ratio')}"
                                for x in r.candidate.get("layers", []))
            rows.append([sec.name, f"{r.step}.{r.idx}", r.candidate_id[:10],
                         r.status + (f" of {r.dup_of[:8]}" if r.dup_of else ""), r.score,
                         r.params, model_latency(r), r.latency_ms, lin.get("origin", ""),
                         ", ".join(p[:8] for p in lin.get("parents", [])), muts, layers])
    return Table("", ["section", "step.idx", "id", "status", "score", "params", "model ms",
                      "MLP cost", "origin", "parents", "mutations",
                      "layers (expr @ s x ratio)"], rows)


def dedupe_table(sections: list[Section]) -> Table:
    rows = []
    for sec in sections:
        d = sec.stage_info.dedupe if sec.stage_info else {}
        dups = sum(r.status == ProposalStatus.DUPLICATE for r in sec.rows)
        rows.append([sec.name, len(sec.rows), dups, d.get("key_hits"), d.get("fingerprint_hits"),
                     f"{dups / len(sec.rows) if sec.rows else 0.0:.1%}"])
    return Table("", ["section", "proposals", "duplicates", "by key", "by fingerprint",
                      "hit rate"], rows)


def _winners(sections: list[Section], out: Path) -> list[dict[str, Any]]:
    items = []
    for sec in sections:
        w = sec.winner
        img = draw_winner(sec, out / f"winner_{sec.name.replace(' ', '')}.svg")
        items.append({"section": sec.name, "rank_by": sec.rank_by,
                      "image": None if w is None or img is None else img.name,
                      "score": None if w is None else w.score,
                      "params": None if w is None else w.params,
                      "describe": "" if w is None else
                      Candidate.from_dict(w.candidate).describe(),
                      "fallback": sec.fallback,
                      "handed_on": sec.stage_info.handed_on if sec.stage_info else None})
    return items


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report/index.html`` and its figures; return the HTML path."""
    import jinja2

    run_dir = Path(run_dir)
    sections = load_sections(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    res_file = run_dir / "results.json"
    results = load_results(res_file) if res_file.is_file() else None
    lineage = draw_lineage(sections, out / "lineage.svg")
    (out / "lineage.dot").write_text(lineage_dot(sections))
    figures = {"pareto": draw_pareto(sections, out / "pareto.png").name,
               "progress": draw_progress(sections, out / "progress.png").name,
               "dedupe": draw_dedupe(sections, out / "dedupe.png").name,
               "lineage": None if lineage is None else lineage.name}
    env = jinja2.Environment(loader=jinja2.PackageLoader("searcher", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["cell"] = cell
    summary = summarize(results) if results is not None else Summary()
    page = env.get_template("report.html.j2").render(
        run_dir=str(run_dir.resolve()), summary=summary,
        winners=_winners(sections, out), figures=figures, dedupe=dedupe_table(sections),
        candidates=candidate_table(sections))
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
