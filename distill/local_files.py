"""Local data files (csv / tsv / json / jsonl): format detection and column checks.

Shared by the GLUE loader in :mod:`distill.glue` and the SQuAD loader in
:mod:`distill.squad`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distill.errors import DataFormatError


def _reader(path: Path) -> tuple[str, dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv", {"keep_default_na": False}
    if suffix in (".tsv", ".txt"):
        return "csv", {"sep": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False}
    if suffix in (".json", ".jsonl"):
        return "json", {}
    raise DataFormatError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .json "
                          "or .jsonl")


def _columns(path: Path, builder: str, kwargs: Mapping[str, Any]) -> list[str]:
    """Column names from the header (csv / tsv) or the first record (json / jsonl)."""
    with open(path, encoding="utf-8") as fh:
        if builder == "csv":
            return next(csv.reader(fh, delimiter=kwargs.get("sep", ","),
                                   quoting=kwargs.get("quoting", csv.QUOTE_MINIMAL)), [])
        line = fh.readline()
        while line and not line.strip():
            line = fh.readline()
        try:  # a JSON list of records is read whole; JSON Lines only up to its first line
            first = json.loads(line + fh.read()) if line.lstrip()[:1] == "[" else json.loads(line)
        except ValueError as exc:
            raise DataFormatError(f"{path}: neither JSON Lines nor a JSON list of records "
                                  f"({exc})") from None
    first = first[0] if isinstance(first, list) and first else first
    return list(first) if isinstance(first, dict) else []


def _check_files(data_files: Mapping[str, str | Path]) -> tuple[str, dict[str, Any]]:
    if not data_files:
        raise DataFormatError("data_files is empty; give {split: path}")
    if "all" in data_files:
        raise DataFormatError("'all' is reserved by the datasets library; rename that split")
    kinds = []
    for split, p in data_files.items():
        if not Path(p).is_file():
            raise DataFormatError(f"data file for split {split!r} not found: {p}")
        kinds.append(_reader(Path(p)))
    if any(k != kinds[0] for k in kinds):
        raise DataFormatError("all data files must share one format (csv, tsv or json/jsonl), "
                              f"got {[str(p) for p in data_files.values()]}")
    return kinds[0]
