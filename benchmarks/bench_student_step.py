"""One KD training step of a Student vs an equal-shape Hugging Face BERT, eager and compiled.

Every variant does what ``distill.loop`` does per step: forward, the task-KD loss
(``distill.losses.KDLoss``: attention, hidden, embedding and prediction terms against fixed
teacher targets of a 384-wide teacher with as many layers and heads), backward, gradient
clipping at 1.0, an AdamW step (``distill.loop.make_optimizer``) and zeroing the gradients.

- ``student``: ``distill.student.Student`` (MLPs ``W2(gelu(W1(x)))``, eager backend);
- ``student-compiled``: the same with its forward compiled (``Student.compile_forward``);
- ``student-step``: the student's KD step compiled as one function, forward and loss
  (``distill.compile_mode.compiled_kd_step``: one Inductor graph for forward + loss, and its
  backward);
- ``bert``: ``transformers`` ``BertForSequenceClassification`` of the same widths (eager
  attention, which returns the attention maps the attention term needs; GELU with the tanh
  approximation like the student's), eager;
- ``bert-compiled``: the same model under ``torch.compile``;
- ``student-step-bf16``, ``bert-bf16``: ``student-step`` and ``bert`` under CPU autocast to
  bfloat16 (mixed precision: float32 weights and optimizer, bfloat16 matrix products).

Variants run step by step round-robin, ``--steps`` steps per round and ``--rounds``
rounds, after warm-up steps that compile. Per variant and round the median step time is
kept, wall (``perf_counter``) and CPU time of the main thread (``thread_time``: with one
torch thread all the work runs on it, so it is the figure other jobs on the cores disturb
least); ratios are medians over rounds of per-round ratios to ``bert``.
``--cold-warm`` measures compile time instead: the first step of ``student-compiled`` and
``student-step`` in fresh processes, twice on one new ``TORCHINDUCTOR_CACHE_DIR`` (cold,
then warm: Inductor's FX graph cache and AOTAutograd's cache on disk).

    python benchmarks/bench_student_step.py [--threads 1] [--rounds 5] [--steps 5]
    python benchmarks/bench_student_step.py --cold-warm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "benchmarks"))

from timing import cpu_idle_percent, load_label, machine_meta, paired_ratio  # noqa: E402

from distill.compile_mode import compiled_kd_step  # noqa: E402
from distill.config import StudentConfig  # noqa: E402
from distill.loop import make_optimizer  # noqa: E402
from distill.losses import KDLoss, KDWeights  # noqa: E402
from distill.student import Student  # noqa: E402

VARIANTS = ("student", "student-compiled", "student-step", "bert", "bert-compiled",
            "student-step-bf16", "bert-bf16")
TEACHER_HIDDEN = 384


def _targets(a: argparse.Namespace, gen: torch.Generator) -> dict:
    """Fixed teacher outputs: hidden states (embedding output first), pre-softmax attention
    scores and logits of a TEACHER_HIDDEN-wide teacher with ``a.layers`` layers."""
    b, t = a.batch, a.seq
    return {"hidden_states": [torch.randn(b, t, TEACHER_HIDDEN, generator=gen)
                              for _ in range(a.layers + 1)],
            "attention_scores": [torch.randn(b, a.heads, t, t, generator=gen)
                                 for _ in range(a.layers)],
            "logits": torch.randn(b, 2, generator=gen)}


def _kd(a: argparse.Namespace) -> KDLoss:
    return KDLoss(student_hidden=a.hidden, teacher_hidden=TEACHER_HIDDEN,
                  student_layers=a.layers, teacher_layers=a.layers, student_heads=a.heads,
                  teacher_heads=a.heads, weights=KDWeights.task())


def _bert(a: argparse.Namespace) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                     num_attention_heads=a.heads, intermediate_size=a.ffn,
                     max_position_embeddings=512, hidden_act="gelu_pytorch_tanh",
                     attn_implementation="eager", num_labels=2)
    return BertForSequenceClassification(cfg).train()


class _BertOut:
    """A BERT output read like a StudentOutput by KDLoss (post-softmax attention maps
    stand in for the scores: the same shapes, the same loss work)."""

    def __init__(self, out, mask: torch.Tensor) -> None:
        self.hidden_states, self.attention_scores = out.hidden_states, out.attentions
        self.logits, self.attention_mask = out.logits, mask


def make_step(variant: str, a: argparse.Namespace, batch: dict, targets: dict):
    """A callable doing one training step of ``variant``."""
    amp = variant.endswith("-bf16")
    variant = variant.removesuffix("-bf16")
    kd = _kd(a)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if variant.startswith("student"):
        cfg = StudentConfig(layers=[("W2(gelu(W1(x)))", 1, a.ffn)] * a.layers, hidden=a.hidden,
                            heads=a.heads, vocab_size=a.vocab, max_position=512)
        model = Student(cfg, seed=0).train()
        if variant == "student-compiled":
            model.compile_forward(options=a.inductor_options)
        if variant == "student-step":
            step_fn = compiled_kd_step(model, kd, options=a.inductor_options)

            def loss_fn(ids: torch.Tensor, mask: torch.Tensor, targets: dict) -> torch.Tensor:
                return step_fn(ids, mask, targets)["total"]
        else:
            def loss_fn(ids: torch.Tensor, mask: torch.Tensor, targets: dict) -> torch.Tensor:
                return kd(model(ids, mask), targets, mask)["total"]
    else:
        model = _bert(a)
        fwd = torch.compile(model, options=a.inductor_options) if variant == "bert-compiled" \
            else model

        def loss_fn(ids: torch.Tensor, mask: torch.Tensor, targets: dict) -> torch.Tensor:
            out = fwd(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                      output_attentions=True)
            return kd(_BertOut(out, mask), targets, mask)["total"]
    opt = make_optimizer([model, kd], lr=1e-4, weight_decay=0.01)
    params = [p for g in opt.param_groups for p in g["params"]]

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(ids, mask, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    step.model = model
    return step


def _batch(a: argparse.Namespace, gen: torch.Generator) -> dict:
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=gen)
    mask = torch.ones(a.batch, a.seq, dtype=torch.long)
    mask[: a.batch // 2, a.seq * 3 // 4:] = 0  # some padding, as real batches have
    return {"input_ids": ids, "attention_mask": mask}


def time_steps(a: argparse.Namespace) -> dict:
    gen = torch.Generator().manual_seed(0)
    batch, targets = _batch(a, gen), _targets(a, gen)
    steps, first = {}, {}
    for v in a.variants:
        torch.manual_seed(0)
        steps[v] = make_step(v, a, batch, targets)
        t0 = time.perf_counter()
        steps[v]()  # compiles the compiled variants
        first[v] = time.perf_counter() - t0
        for _ in range(a.warmup):
            steps[v]()
    wall = {v: [] for v in a.variants}
    cpu = {v: [] for v in a.variants}
    for _ in range(a.rounds):
        w_s = {v: [] for v in a.variants}
        c_s = {v: [] for v in a.variants}
        for _ in range(a.steps):
            for v, fn in steps.items():
                w0, c0 = time.perf_counter(), time.thread_time()
                fn()
                c_s[v].append(time.thread_time() - c0)
                w_s[v].append(time.perf_counter() - w0)
        for v in a.variants:
            wall[v].append(statistics.median(w_s[v]))
            cpu[v].append(statistics.median(c_s[v]))
    ref = "bert" if "bert" in a.variants else a.variants[0]
    rows = {v: {"wall_ms": statistics.median(wall[v]) * 1e3,
                "cpu_ms": statistics.median(cpu[v]) * 1e3,
                "wall_over_bert": paired_ratio(wall[v], wall[ref]),
                "cpu_over_bert": paired_ratio(cpu[v], cpu[ref]),
                "first_step_s": first[v], "wall_rounds_ms": [x * 1e3 for x in wall[v]],
                "cpu_rounds_ms": [x * 1e3 for x in cpu[v]]} for v in a.variants}
    return {"reference": ref, "rows": rows}


def first_step(a: argparse.Namespace) -> dict:
    """Seconds of the first step (compile + step) of each variant, in this process."""
    gen = torch.Generator().manual_seed(0)
    batch, targets = _batch(a, gen), _targets(a, gen)
    out = {}
    for v in a.variants:
        fn = make_step(v, a, batch, targets)
        t0 = time.perf_counter()
        fn()
        out[v] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fn()
        out[v + " (second step)"] = time.perf_counter() - t0
    return out


def cold_warm(a: argparse.Namespace) -> dict:
    """First-step seconds in fresh processes on one new cache directory: cold, then warm."""
    runs = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        for label in ("cold", "warm"):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--first-step-only",
                   "--variants", "student-compiled", "student-step", *_shape_argv(a)]
            res = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            runs[label] = json.loads(res.stdout.strip().splitlines()[-1])
            print(label, runs[label], flush=True)
    return runs


def _shape_argv(a: argparse.Namespace) -> list[str]:
    return [f"--{k}={getattr(a, k)}" for k in ("batch", "seq", "hidden", "layers", "ffn",
                                                "heads", "vocab", "threads")]


def write(a: argparse.Namespace, res: dict) -> None:
    a.out.mkdir(parents=True, exist_ok=True)
    stem = f"student_step_{a.tag}" if a.tag else "student_step"
    (a.out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    lines = [f"Load: {res['load']}.", "",
             f"KD training step, batch {a.batch}x{a.seq}, hidden {a.hidden}, {a.layers} layers, "
             f"FFN {a.ffn}, {a.heads} heads, vocab {a.vocab}; torch {res['meta']['torch']}, "
             f"{res['meta']['threads']} thread(s); {a.rounds} rounds of {a.steps} interleaved "
             "steps; ms: median over rounds of per-round medians; ratios: median over rounds "
             "of per-round ratios to `bert` (eager)", "",
             "| variant | step ms (CPU) | step ms (wall) | / bert (CPU) | / bert (wall) "
             "| first step s |", "|---|---|---|---|---|---|"]
    for v, r in res["timing"]["rows"].items():
        lines.append(f"| {v} | {r['cpu_ms']:.1f} | {r['wall_ms']:.1f} | {r['cpu_over_bert']:.3f} "
                     f"| {r['wall_over_bert']:.3f} | {r['first_step_s']:.1f} |")
    if "cold_warm" in res:
        lines += ["", "First step (compile + one step) in a fresh process, seconds:", ""]
        for label, r in res["cold_warm"].items():
            lines.append(f"- {label} cache: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()))
    (a.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in (("batch", 32), ("seq", 64), ("hidden", 256), ("layers", 4),
                          ("ffn", 1024), ("heads", 4), ("vocab", 30522)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--cold-warm", action="store_true",
                    help="also time the first step in fresh processes, cold then warm cache")
    ap.add_argument("--first-step-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--tag", default="", help="write student_step_TAG.json/.md")
    ap.add_argument("--inductor-random", action="store_true",
                    help="compiled variants draw dropout masks with Inductor's own RNG "
                         "(default: aten's, as Student.compile_forward does)")
    a = ap.parse_args()
    a.inductor_options = {"fallback_random": not a.inductor_random}
    torch.set_num_threads(a.threads)
    if a.first_step_only:
        print(json.dumps(first_step(a)))
        return
    idle0 = cpu_idle_percent()
    res = {"timing": time_steps(a)}
    if a.cold_warm:
        res["cold_warm"] = cold_warm(a)
    idle = (idle0, cpu_idle_percent())
    res.update(meta=machine_meta(), cpu_idle=idle, load=load_label(idle), args=vars(a) | {
        "out": str(a.out)})
    write(a, res)


if __name__ == "__main__":
    main()
