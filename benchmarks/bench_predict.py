"""Predict latency per sentence: a student folder against a teacher folder, batch 1 and 32.

For each model and batch size the same sentences go through
:meth:`distill.predict.Predictor.predict` (tokenization, forward pass, softmax and label
names: what a user of ``efficientbert predict`` pays); a round labels every sentence once;
milliseconds per sentence = round time / sentences. Rounds of the two models are
interleaved (machine load hits both alike) after one warm-up round each; the table gives
the median and the min..max over rounds, with the torch thread count.

    python benchmarks/bench_predict.py --student runs/x/winner --teacher <teacher folder>
    python benchmarks/bench_predict.py --student S --teacher T --smoke   # a quick check

Sentences: the embedded movie-review test split when the ``movies`` asset is present,
else ``--texts FILE`` (one per line). Writes ``benchmarks/results/predict.json`` and
``predict.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
from pathlib import Path
from typing import Any

import torch
from common import wait_for_others  # benchmarks/common.py
from timing import interleaved  # benchmarks/timing.py

from distill.predict import Predictor


def load_sentences(args: argparse.Namespace) -> list[str]:
    if args.texts:
        lines = Path(args.texts).read_text(encoding="utf-8").splitlines()
        return [t for t in lines if t.strip()][: args.sentences]
    from distill.sentiment import load_sentiment_task

    return list(load_sentiment_task("movie_binary")["test"]["sentence"])[: args.sentences]


def measure(models: dict[str, Predictor], texts: list[str], batch: int,
            rounds: int) -> dict[str, list[float]]:
    """Per model, ms per sentence of each round (one labelling of every sentence; models
    interleaved round by round after one warm-up round each)."""
    calls = {name: functools.partial(p.predict, texts, batch_size=batch)
             for name, p in models.items()}
    seconds = interleaved(calls, rounds=rounds, calls=1, warmup=1)
    return {name: [s * 1000 / len(texts) for s in v] for name, v in seconds.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", required=True, help="a student folder (save_student)")
    ap.add_argument("--teacher", required=True, help="a teacher (Hugging Face) folder")
    ap.add_argument("--texts", default=None, help="sentences, one per line")
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--smoke", action="store_true", help="32 sentences, 2 rounds, no waiting")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results") / "predict"))
    args = ap.parse_args()
    if args.smoke:
        args.sentences, args.rounds = 32, 2
    else:
        wait_for_others("bench_predict")
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = load_sentences(args)
    models = {"student": Predictor.from_pretrained(args.student),
              "teacher": Predictor.from_pretrained(args.teacher)}
    params = {n: sum(t.numel() for t in p.model.parameters()) for n, p in models.items()}
    rows: list[dict[str, Any]] = []
    for batch in args.batches:
        for name, values in measure(models, texts, batch, args.rounds).items():
            rows.append({"model": name, "batch": batch, "ms_per_sentence":
                         statistics.median(values), "min": min(values), "max": max(values),
                         "rounds": values, "params": params[name]})
    result = {"student": str(Path(args.student).resolve()),
              "teacher": str(Path(args.teacher).resolve()), "sentences": len(texts),
              "rounds": args.rounds, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# predict latency ({len(texts)} sentences, {args.rounds} rounds, "
             f"{result['threads']} threads, torch {torch.__version__})", "",
             "| model | params | batch | ms / sentence (median) | min..max |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['params']:,} | {r['batch']} | {r['ms_per_sentence']:.3f} | "
              f"{r['min']:.3f}..{r['max']:.3f} |" for r in rows]
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
