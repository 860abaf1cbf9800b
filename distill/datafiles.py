"""A task's data files: the :class:`DataFiles` record, reading one file (:func:`read_file`)
and the fingerprint of the files' bytes and settings (:func:`fingerprint`).

The checks and the task built from the files are :mod:`distill.userdata`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import datasets
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .assets import default_cache_dir, offline_env
from .errors import DataFileError
from .glue import GLUE_TASKS

TaskType = Literal["classification", "regression"]
TASK_TYPES: tuple[str, ...] = get_args(TaskType)
_READERS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {"keep_default_na": False, "encoding": "utf-8-sig"}),
    ".tsv": ("csv", {"sep": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False,
                     "encoding": "utf-8-sig"}),
    ".json": ("json", {}), ".jsonl": ("json", {}), ".parquet": ("parquet", {})}
_HASHES: dict[tuple[str, int, int], str] = {}


class DataFiles(BaseModel):
    """Where a task's rows are and how to read them (JSON-able: :meth:`to_dict`). The train
    file may be given positionally: ``DataFiles("train.csv", task_type="regression")``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_file: str = Field(description="labelled training rows (.csv, .tsv, .json, .jsonl, "
                            ".parquet); stored as an absolute path")
    validation_file: str | None = Field(None, description="labelled evaluation rows (None: a "
                                        "seeded, stratified cut of train)")
    test_file: str | None = Field(None, description="labelled test rows (None: validation is "
                                  "the final split)")
    text_column: str | None = Field(None, description='None: "sentence" or "text" (or the '
                                    "GLUE task's columns)")
    text_pair_column: str | None = Field(None, description="second text of sentence pairs")
    label_column: str = Field("label", description="the column holding the labels")
    task_type: TaskType | None = Field(
        None, description="None: guess (float labels: regression; else classification)")
    max_length: int = Field(128, ge=2, description="truncation in tokens")
    seed: int = Field(0, description="seed of the held-out cut")
    heldout_fraction: float = Field(0.1, gt=0, lt=1, description="share of train held out "
                                    "when there is no validation file")
    drop_empty_texts: bool = Field(False, description="drop rows with an empty text (counted "
                                   "in the notes); False: refuse them")
    task: str | None = Field(None, description="a GLUE task whose official schema the files "
                             "follow")

    def __init__(self, train_file: str | Path | None = None, /, **data: Any) -> None:
        if train_file is not None:
            data["train_file"] = train_file
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise _files_error(e) from None

    @field_validator("train_file", "validation_file", "test_file", mode="before")
    @classmethod
    def _absolute(cls, value: Any) -> Any:
        return str(Path(value).expanduser().resolve()) if isinstance(value, str | Path) \
            else value

    @field_validator("task")
    @classmethod
    def _glue_task(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in GLUE_TASKS:
            raise DataFileError(f"data files follow the schema of a GLUE task "
                                f"({', '.join(GLUE_TASKS)}) or of none; got task {value!r}")
        return value

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataFiles:
        """From :meth:`to_dict`'s form; unknown settings are refused."""
        return cls(**data)

    def files(self) -> dict[str, str]:
        """Role (train / validation / test) -> path, for the files given."""
        return {role: p for role, p in (("train", self.train_file),
                                        ("validation", self.validation_file),
                                        ("test", self.test_file)) if p is not None}


def _files_error(err: ValidationError) -> DataFileError:
    """The first problem of a pydantic error as a :class:`DataFileError` naming the setting."""
    e = err.errors()[0]
    cause = e.get("ctx", {}).get("error")
    if isinstance(cause, DataFileError):
        return cause
    name = ".".join(map(str, e["loc"])) or "data files"
    if e["type"] == "extra_forbidden":
        unknown = sorted(str(x["loc"][0]) for x in err.errors() if x["type"] == e["type"])
        return DataFileError(f"unknown data-file setting(s) {unknown} (settings: "
                             f"{', '.join(DataFiles.model_fields)})")
    if name == "task_type":
        return DataFileError(f"task_type must be one of {TASK_TYPES} or None (guess), got "
                             f"{e['input']!r}")
    got = "" if e["type"] == "missing" else f", got {e['input']!r:.80}"
    return DataFileError(f"data-file setting {name}: {e['msg']}{got}")


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
