"""Write the embedded tweets sentiment set as two CSV files, to try `efficientbert run` on
"your own data" (README, "Your own data").

    python examples/tweets_to_csv.py data/       # data/train.csv, data/test.csv

Columns: ``text`` and ``sentiment`` (the strings ``negative`` / ``positive``). The train file
holds the task's train and heldout rows (the run cuts its own held-out part from it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import datasets

from distill.sentiment import load_sentiment_task

NAMES = ("negative", "positive")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for train.csv and test.csv")
    out = ap.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    task = load_sentiment_task("tweets_binary")
    train = datasets.concatenate_datasets([task["train"], task["heldout"]])
    for name, split in (("train", train), ("test", task["test"])):
        rows = split.map(lambda r: {"text": r["sentence"], "sentiment": NAMES[r["label"]]},
                         remove_columns=split.column_names)
        rows.to_csv(str(out / f"{name}.csv"), index=False)
        print(f"{out / name}.csv: {len(rows)} rows")


if __name__ == "__main__":
    main()
