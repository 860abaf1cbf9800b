"""``efficientbert predict`` and ``efficientbert export``: use a saved model (a run's winner,
a ``distill -o`` folder or a fine-tuned teacher). Registered by :func:`distill.cli.register`.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from mlpgraph.cli_common import EXIT_CODES_HELP, Parents, positive_int, print_table

from .errors import DataFileError, ExportCheckError

#: largest |artifact - model| an export may show on its probe batch
EXPORT_TOLERANCE = 1e-4
_WRITERS = (".csv", ".tsv", ".jsonl", ".json")


def _inputs(args: argparse.Namespace) -> tuple[list[str], list[str] | None]:
    if args.text is not None:
        if args.text_column or args.text_pair_column:
            raise DataFileError("--text-column / --text-pair-column go with --file, not --text")
        if args.text_pair is not None and len(args.text_pair) != len(args.text):
            raise DataFileError(f"{len(args.text)} --text but {len(args.text_pair)} "
                                "--text-pair; give one pair per text")
        return list(args.text), None if args.text_pair is None else list(args.text_pair)
    from .datafiles import read_file
    from .userdata import guess_text_column

    if args.text_pair is not None:
        raise DataFileError("--text-pair goes with --text; with --file use --text-pair-column")
    ds = read_file(args.file, args.cache_dir, role="input")
    cols = ([args.text_column] if args.text_column else
            [guess_text_column(list(ds.column_names), args.file)])
    if args.text_pair_column:
        cols.append(args.text_pair_column)
    for c in cols:
        if c not in ds.column_names:
            raise DataFileError(f"{args.file}: no column {c!r}; columns present: "
                                f"{list(ds.column_names)}")
    texts = [[("" if v is None else str(v)) for v in ds[c]] for c in cols]
    return texts[0], texts[1] if len(texts) > 1 else None


def _write(path: Path, texts: list[str], pairs: list[str] | None,
           rows: list[dict[str, Any]], names: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (text, row) in enumerate(zip(texts, rows, strict=True)):
        rec = {"text": text, **({"text_pair": pairs[i]} if pairs is not None else {}), **row}
        records.append(rec)
    if path.suffix.lower() in (".jsonl", ".json"):
        with open(path, "w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return
    fixed = ["text", *(["text_pair"] if pairs is not None else []), "label", "score"]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        writer.writerow([*fixed, *(f"p_{n}" for n in names)])
        for rec in records:
            writer.writerow([*("" if rec[k] is None else rec[k] for k in fixed),
                             *(rec["probabilities"][n] for n in names)])


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import Predictor

    if args.out is not None and Path(args.out).suffix.lower() not in _WRITERS:
        raise DataFileError(f"--out {args.out}: write .csv, .tsv or .jsonl")
    texts, pairs = _inputs(args)
    predictor = Predictor.from_pretrained(args.model_dir, max_length=args.max_length,
                                          device=args.device)
    rows = predictor.predict(texts, pairs, batch_size=args.batch_size)
    names = predictor.label_names
    if args.out is not None:
        _write(Path(args.out), texts, pairs, rows, names)
        print(f"wrote {len(rows)} predictions to {args.out}")
        return 0

    def short(t: str) -> str:
        return t if len(t) <= 60 else t[:57] + "..."

    if predictor.is_regression:
        print_table(("#", "text", "value"),
                    [(i + 1, short(t), r["score"])
                     for i, (t, r) in enumerate(zip(texts, rows, strict=True))])
        return 0
    shown = names if len(names) <= 6 else ()
    print_table(("#", "text", "label", "score", *(f"p({n})" for n in shown)),
                [(i + 1, short(t), r["label"], r["score"],
                  *(r["probabilities"][n] for n in shown))
                 for i, (t, r) in enumerate(zip(texts, rows, strict=True))])
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    res = export(args.model_dir, args.format, args.out)
    size = res.path.stat().st_size / 2 ** 20
    print(f"wrote {res.path} ({res.format}, {size:.2f} MiB, {res.seconds:.1f} s) and "
          f"{res.path}.json")
    if res.max_abs_diff is None:
        print("not checked: onnxruntime is not installed (pip install onnxruntime)")
    elif res.max_abs_diff > EXPORT_TOLERANCE:
        raise ExportCheckError(f"the artifact's logits differ from the model's by "
                               f"{res.max_abs_diff:.3g} (> {EXPORT_TOLERANCE}) on a probe "
                               f"batch ({res.checked_with})")
    else:
        print(f"checked with {res.checked_with}: max |artifact - model| = "
              f"{res.max_abs_diff:.2e} on a probe batch")
    return 0


def register(subparsers: Any, parents: Parents) -> None:
    """Add ``predict`` and ``export``."""
    p = subparsers.add_parser(
        "predict", parents=[parents.runtime], help="label texts with a saved model",
        description="Predict with a student folder (a run's winner, `distill -o`) or a "
        "fine-tuned teacher folder: the label, its probability (score) and every class's "
        "probability per text; for regression the value.", epilog=EXIT_CODES_HELP)
    p.add_argument("model_dir", metavar="MODEL_DIR")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a text to label (repeatable)")
    src.add_argument("--file", metavar="FILE", help="rows to label (.csv, .tsv, .jsonl, "
                     ".parquet)")
    p.add_argument("--text-pair", action="append", help="second text of a pair, per --text")
    p.add_argument("--text-column", metavar="COL", help="with --file (default: 'sentence' or "
                   "'text')")
    p.add_argument("--text-pair-column", metavar="COL", help="with --file, for pairs")
    p.add_argument("--out", metavar="FILE", help="write .csv / .tsv / .jsonl instead of "
                   "printing a table")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--max-length", type=positive_int, default=None,
                   help="truncation in tokens (default: the model's positions, at most 512)")
    p.set_defaults(func=_cmd_predict)

    p = subparsers.add_parser(
        "export", parents=[parents.runtime], help="export a saved model for serving",
        description="Write (input_ids, attention_mask, token_type_ids) -> logits as a "
        "torch.export program (.pt2) or an ONNX model, with dynamic batch and sequence "
        "length; it runs without this package. The artifact is checked against the model.",
        epilog=EXIT_CODES_HELP)
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--format", required=True, choices=("torch-export", "onnx"))
    p.add_argument("--out", required=True, metavar="PATH", help="the artifact file")
    p.set_defaults(func=_cmd_export)
