"""A task's data files: the :class:`DataFiles` record, reading one file (:func:`read_file`)
and the fingerprint of the files' bytes and settings (:func:`fingerprint`).

The checks and the task built from the files are :mod:`distill.userdata`.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from .assets import default_cache_dir, offline_env
from .data import GLUE_TASKS
from .errors import DataFileError

TASK_TYPES = ("classification", "regression")
_READERS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {"keep_default_na": False, "encoding": "utf-8-sig"}),
    ".tsv": ("csv", {"sep": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False,
                     "encoding": "utf-8-sig"}),
    ".json": ("json", {}), ".jsonl": ("json", {}), ".parquet": ("parquet", {})}
_HASHES: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class DataFiles:
    """Where a task's rows are and how to read them (JSON-able: :meth:`to_dict`)."""

    train_file: str
    validation_file: str | None = None
    test_file: str | None = None
    text_column: str | None = None  # None: "sentence" or "text" (or the GLUE task's)
    text_pair_column: str | None = None
    label_column: str = "label"
    task_type: str | None = None  # "classification" | "regression" | None: guess
    max_length: int = 128
    seed: int = 0  # of the held-out cut
    heldout_fraction: float = 0.1  # of train, when there is no validation file
    drop_empty_texts: bool = False  # False: refuse rows with an empty text
    task: str | None = None  # a GLUE task whose schema the files follow

    def __post_init__(self) -> None:
        for f in ("train_file", "validation_file", "test_file"):
            value = getattr(self, f)
            if value is not None:
                object.__setattr__(self, f, str(Path(value).expanduser().resolve()))
        if self.task_type not in (None, *TASK_TYPES):
            raise DataFileError(f"task_type must be one of {TASK_TYPES} or None (guess), got "
                                f"{self.task_type!r}")
        if not 0 < self.heldout_fraction < 1:
            raise DataFileError(f"heldout_fraction must be in (0, 1), got "
                                f"{self.heldout_fraction}")
        if self.max_length < 2:
            raise DataFileError(f"max_length must be at least 2 tokens, got {self.max_length}")
        if self.task is not None and self.task.lower() not in GLUE_TASKS:
            raise DataFileError(f"data files follow the schema of a GLUE task "
                                f"({', '.join(GLUE_TASKS)}) or of none; got task "
                                f"{self.task!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataFiles:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise DataFileError(f"unknown data-file setting(s) {unknown}")
        return cls(**data)

    def files(self) -> dict[str, str]:
        """Role (train / validation / test) -> path, for the files given."""
        return {role: p for role, p in (("train", self.train_file),
                                        ("validation", self.validation_file),
                                        ("test", self.test_file)) if p is not None}


# ----------------------------------------------------------------------------- reading
def _content_hash(path: Path) -> str:
    """sha256 of a file's bytes; text formats must be UTF-8 (the byte offset of the first
    bad byte is named). Memoized by (path, size, mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _HASHES:
        return _HASHES[key]
    text = _READERS[path.suffix.lower()][0] != "parquet"
    h, dec, offset = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")(), 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            if text:
                pending = len(dec.getstate()[0])
                try:
                    dec.decode(block)
                except UnicodeDecodeError as e:
                    bad = e.object[e.start]
                    raise DataFileError(f"{path} is not UTF-8: invalid byte 0x{bad:02x} at "
                                        f"byte offset {offset - pending + e.start}; save it "
                                        "as UTF-8") from None
            offset += len(block)
    if text:
        try:
            dec.decode(b"", final=True)
        except UnicodeDecodeError:
            raise DataFileError(f"{path} is not UTF-8: it ends inside a multi-byte character "
                                f"at byte offset {offset - len(dec.getstate()[0])}") from None
    _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _check_path(path: str | Path, role: str = "data") -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataFileError(f"{role} file not found: {p}")
    if p.suffix.lower() not in _READERS:
        raise DataFileError(f"{p}: unsupported file type {p.suffix!r}; use one of "
                            f"{', '.join(_READERS)}")
    if p.stat().st_size == 0:
        raise DataFileError(f"{role} file {p} is empty (0 bytes)")
    return p


def read_file(path: str | Path, cache_dir: str | Path | None = None, *,
              role: str = "data") -> datasets.Dataset:
    """One data file as a ``Dataset`` (builder by suffix, offline, cached under
    ``<cache>/datasets``); a missing, empty, non-UTF-8 or unreadable file is refused."""
    p = _check_path(path, role)
    _content_hash(p)  # the UTF-8 check
    builder, kwargs = _READERS[p.suffix.lower()]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    quiet = not datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with offline_env():
            ds = datasets.load_dataset(builder, data_files={"rows": str(p)}, split="rows",
                                       cache_dir=str(root / "datasets"), **kwargs)
    except Exception as e:  # noqa: BLE001 - any reader failure, named with its file
        if "corresponds to no data" in str(e):
            raise DataFileError(f"{role} file {p} has no rows") from None
        raise DataFileError(f"cannot read {role} file {p} as {builder}: "
                            f"{type(e).__name__}: {e}") from e
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    if len(ds) == 0:
        raise DataFileError(f"{role} file {p} has no rows")
    return ds


def fingerprint(files: DataFiles) -> str:
    """sha256 over the files' bytes (by role) and every setting except the paths."""
    settings = {k: v for k, v in files.to_dict().items() if not k.endswith("_file")}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for role, p in files.files().items():
        h.update(f"\x1f{role}:{_content_hash(_check_path(p, role))}".encode())
    return h.hexdigest()
