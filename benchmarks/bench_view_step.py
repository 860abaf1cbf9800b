"""One supernet warm-up step, timed: extract a random view-mode sub-network, then run its
forward and backward pass (the work ``distill.train.distill`` does per step with a sampler).

Per step, a seeded RNG draws per layer an expression (the paper's six, cycled, and a GLU),
a stack count in 1..4 and a ratio in 1, 1/2, 1/3, 1/4; the loss is the sum of the logits
and of every hidden state. Prints one JSON line: the median and the fastest (ms) over
``--steps`` steps of ``extract``, ``fwd_bwd`` and their sum, after ``--warmup`` untimed
steps (enough for the compile cache to hold every drawn structure), on ``--threads``
threads. Times are CPU time of the main thread (``time.thread_time``), by default with
one torch thread, where all the work runs on that thread: on cores shared with other
processes, wall-clock times of 2 OpenMP threads that spin-wait for each other swing tenfold.

    python benchmarks/bench_view_step.py [--preset quick|full] [--steps 40] [--root DIR]

``--root`` imports ``distill``/``mlpgraph`` from another checkout (to time an older
version with the same script).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

PRESETS = {  # searcher.stages quick_preset / full_preset student sizes
    "quick": {"layers": 3, "hidden": 96, "embedding_size": 64, "trigram": False},
    "full": {"layers": 6, "hidden": 264, "embedding_size": 128, "trigram": True},
}
EXPRESSIONS = ["tanh(W2(gelu(W1(x))))", "elu(W2(gelu(W1(x))))", "sigmoid(W2(relu(W1(x))))",
               "W2(gelu(W1(max(x, tanh(x)))))", "W2(relu(W1(x) * x))",
               "leaky_relu(W2(gelu(W1(x))))", "W3(silu(W1(x)) * W2(x))"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = ap.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    import torch

    import mlpgraph
    from distill.config import StudentConfig
    from distill.supernet import Supernet

    torch.set_num_threads(args.threads)
    p = PRESETS[args.preset]
    h = p["hidden"]
    cfg = StudentConfig(layers=[("W2(gelu(W1(x)))", 1, h)] * p["layers"], hidden=h, heads=12,
                        embedding_size=p["embedding_size"], trigram=p["trigram"],
                        max_position=128, vocab_size=30522)
    net = Supernet(cfg, seed=0).train()
    graphs = [mlpgraph.parse(e) for e in EXPRESSIONS]
    net.add_pools(graphs)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 30522, (args.batch, args.seq), generator=gen)
    mask = torch.ones_like(ids)
    rng = random.Random(0)
    times: dict[str, list[float]] = {"extract": [], "fwd_bwd": [], "step": []}
    for i in range(args.warmup + args.steps):
        specs = [(graphs[(i + li) % len(graphs)], rng.choice([1, 2, 3, 4]),
                  max(1, round(h * rng.choice([1, 1 / 2, 1 / 3, 1 / 4]))))
                 for li in range(p["layers"])]
        t0 = time.thread_time()
        sub = net.extract(specs, mode="view")
        t1 = time.thread_time()
        out = sub(ids, mask)
        loss = out.logits.sum() + sum(s.sum() for s in out.hidden_states)
        loss.backward()
        t2 = time.thread_time()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= args.warmup:
            times["extract"].append((t1 - t0) * 1e3)
            times["fwd_bwd"].append((t2 - t1) * 1e3)
            times["step"].append((t2 - t0) * 1e3)
    print(json.dumps({"preset": args.preset, "root": str(args.root), "steps": args.steps,
                      "tokens": [args.batch, args.seq], "threads": args.threads,
                      **{f"{k}_ms": round(statistics.median(v), 3) for k, v in times.items()},
                      **{f"{k}_min_ms": round(min(v), 3) for k, v in times.items()}}))


if __name__ == "__main__":
    main()
