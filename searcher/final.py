"""The main job's last step: the winner against the standard FFN of the same shape.

Both students inherit the same warmed-up supernet and get the same task KD
(:func:`distill.pipeline.kd_phase`); the task's evaluation split and its test split are
scored here, the test split for the first time in the run. Each student is saved as a model
folder (``RUN_DIR/winner``, ``RUN_DIR/baseline``) that ``Student.from_pretrained`` loads.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from distill.encode import encode_split
from distill.losses import KDWeights
from distill.pipeline import Phase, evaluate_splits, kd_phase, save_student
from distill.score import measure_latency
from distill.student import count_parameters
from distill.supernet import Supernet
from distill.teacher import load_task, load_teacher, load_tokenizer
from distill.train import TrainConfig
from mlpgraph import parse

from .budget import LatencyMeter
from .candidate import Candidate, LayerGene
from .config import STANDARD_FFN

if TYPE_CHECKING:
    from .run import Context


def final_splits(ctx: Context) -> dict[str, Any]:
    """The encoded evaluation and test splits (the only place the test split is read)."""
    spec = ctx.task
    ds = load_task(spec.name, ctx.cache_dir)
    tok = load_tokenizer(ctx.tuned)
    names = {"eval": spec.eval_splits[0], "test": spec.test_splits[0]}
    return {role: encode_split(ds[name], tok, spec, spec.max_length)
            for role, name in names.items()}


def final_compare(ctx: Context, winner: Candidate, supernet: Path) -> dict[str, Any]:
    """Task KD of the winner and of the standard FFN with the same per-layer ``s`` and ratio
    (same parameter count), both inheriting ``supernet``; metrics on the task's evaluation
    and test splits; latency measured interleaved."""
    p, fin, spec = ctx.pipeline, ctx.pipeline.final, ctx.task
    splits = final_splits(ctx)
    net = Supernet.from_pretrained(supernet)
    ffn = parse(STANDARD_FFN)
    models = {"winner": winner,
              "baseline": Candidate(tuple(LayerGene(ffn, g.stacks, g.ratio)
                                          for g in winner.layers))}
    flops = LatencyMeter(net.hidden, proxy="flops")
    tok = load_tokenizer(ctx.tuned)
    rows: dict[str, Any] = {}
    students = {}
    for name, cand in models.items():
        torch.manual_seed(p.seed)
        student = students[name] = net.extract(cand.spec(net.hidden).layers, mode="copy")
        res, kd = kd_phase(student, ctx.outputs["train"], Phase("final", KDWeights.task(),
                           TrainConfig(max_steps=fin.task_steps, batch_size=fin.batch_size,
                                       lr=fin.lr, seed=p.seed, device=p.device,
                                       progress=ctx.progress,
                                       desc=f"final KD {name}")), fit_dense=supernet)
        folder = save_student(ctx.run_dir / name, student, kd, tok)
        rows[name] = {"params": count_parameters(student.config)["total"],
                      "mlp_mflops": flops(cand), "diverged": res.diverged,
                      "kd_steps": res.steps, "final_loss": res.final_loss,
                      "expressions": [g.expr for g in cand.layers], "folder": str(folder),
                      **evaluate_splits(student, splits, spec)}
    times: dict[str, list[float]] = {n: [] for n in students}
    for _ in range(5):  # interleaved rounds: machine load hits both models alike
        for name, student in students.items():
            times[name].append(measure_latency(student, repeats=5))
    for name in students:
        rows[name]["latency_ms"] = statistics.median(times[name])
    (ctx.run_dir / "winner" / "candidate.json").write_text(winner.to_json() + "\n")
    if fin.teacher_test:
        teacher = load_teacher(ctx.tuned)
        rows["teacher"] = {"params": sum(t.numel() for t in teacher.parameters()),
                           "latency_ms": measure_latency(teacher), "folder": str(ctx.tuned),
                           **evaluate_splits(teacher, splits, spec)}
    return {"splits": {"eval": spec.eval_splits[0], "test": spec.test_splits[0]},
            "metrics": list(spec.metric_names), **rows}
