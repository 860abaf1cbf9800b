"""A user's labelled files as a task, with the conventions of transformers' ``run_glue.py``.

::

    files = DataFiles("train.csv", validation_file="dev.csv", text_column="review",
                      label_column="stars")
    spec = task_from_files(files)      # checked now, registered as e.g. "train-3f2a9c0d1e2b"
    spec.load()["train"]               # columns: review, label (ClassLabel or float32)

* Formats: ``.csv``, ``.tsv`` (no quoting, as GLUE's), ``.json`` / ``.jsonl`` (JSON Lines or a
  list of records) and ``.parquet``, read with ``datasets.load_dataset`` (offline; the
  Arrow cache lives under ``<cache>/datasets``). CSV / TSV cells are read verbatim: an empty
  cell is an empty string, ``NA`` is text.
* Labels: as in ``run_glue.py``, a float column means regression; string, integer or
  boolean labels mean classification, whose classes are the **sorted** distinct train
  labels (numbers numerically, strings alphabetically), so ids do not depend on row order;
  ``task_type`` overrides the guess. Metrics: accuracy + F1 (of the second class) for two
  classes, accuracy + macro-F1 for more, Pearson + Spearman for regression.
* Splits: ``train``; ``validation`` (the file, or else a seeded cut of
  ``heldout_fraction`` of train, stratified by class); ``test`` when a test file is given.
  Without one, validation is the final split (:attr:`TaskSpec.final_split`) and
  :attr:`TaskSpec.notes` says so.
* ``task="sst2"`` (a GLUE task): the files follow its official schema; its columns, label
  names and metrics are used, string or integer labels map to its ids.
* Bad input is refused before any training with :class:`DataFileError` (a ``ValueError``):
  see :func:`read_file` and :func:`_encode`. Empty texts are refused unless
  ``drop_empty_texts``; then the dropped rows are counted in the notes.

The task's name is ``<train file stem>-<12 hex of the fingerprint>`` (``<glue task>-...``),
the fingerprint hashing the files' bytes and every setting, so the same files give the same
name in every process; :func:`register_files` (e.g. in a worker) makes
``get_task_spec(name)`` find it, and the teacher's cache key includes the fingerprint.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from .data import TASKS, TaskSpec, get_task_spec, register_task
from .datafiles import TASK_TYPES, DataFiles, fingerprint, read_file
from .errors import DataFileError

_LOADED: dict[str, datasets.DatasetDict] = {}


# ----------------------------------------------------------------------------- checking
def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or \
        (isinstance(v, str) and not v.strip())


def _rows(idx: Sequence[int]) -> str:
    shown = ", ".join(str(i + 1) for i in idx[:5])
    return f"{shown}{', ...' if len(idx) > 5 else ''}"


def _columns(files: DataFiles, base: TaskSpec | None) -> tuple[str, ...]:
    if files.text_column is not None:
        return (files.text_column,) + ((files.text_pair_column,)
                                       if files.text_pair_column else ())
    if files.text_pair_column is not None:
        raise DataFileError("text_pair_column needs text_column too")
    return base.text_columns if base is not None else ()


def guess_text_column(cols: list[str], path: str) -> str:
    """``sentence`` or ``text``, whichever the columns have; else refused, listing them."""
    for c in ("sentence", "text"):
        if c in cols:
            return c
    raise DataFileError(f"{path}: which column holds the text? give text_column "
                        f"(--text-column); columns present: {cols}")


def _texts(ds: datasets.Dataset, cols: Sequence[str]) -> tuple[list[list[str]], list[int]]:
    """The text columns as strings and the rows (0-based) with an empty or NaN text."""
    out, empty = [], set()
    for c in cols:
        values = list(ds[c])
        empty.update(i for i, v in enumerate(values) if _missing(v))
        out.append(["" if _missing(v) else str(v) for v in values])
    return out, sorted(empty)


def _class_key(v: Any) -> int | float | str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if v.is_integer() else v
    return str(v).strip()


def _is_regression(labels: list[Any], files: DataFiles, base: TaskSpec | None) -> bool:
    if base is not None:
        return base.is_regression
    if files.task_type is not None:
        return files.task_type == "regression"
    return any(isinstance(v, float) for v in labels)  # run_glue: float labels: regression


def _numbers(labels: list[Any], rows: list[int], column: str, path: str) -> list[float]:
    out = []
    for i, v in zip(rows, labels, strict=True):
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise DataFileError(f"{path}: label column {column!r} is not numeric (row {i + 1} "
                                f"holds {v!r}); regression needs numbers, or use "
                                "task_type='classification' (--task-type)") from None
    return out


def _class_ids(labels: list[Any], names: tuple[str, ...], fixed: bool, path: str,
               column: str) -> list[int]:
    """Class ids; ``fixed`` (a GLUE schema) also takes integer ids into ``names``."""
    index = {n: i for i, n in enumerate(names)}

    def lookup(v: Any) -> int | None:
        key = _class_key(v)
        if str(key) in index:
            return index[str(key)]
        return key if fixed and isinstance(key, int) and 0 <= key < len(names) else None

    ids = [lookup(v) for v in labels]
    bad = sorted({str(_class_key(v)) for v, i in zip(labels, ids, strict=True) if i is None})
    if bad:
        what = f"one of {list(names)}" if fixed else f"seen in train ({list(names)})"
        raise DataFileError(f"{path}: label(s) {bad[:5]} in column {column!r} are not {what}; "
                            "every class must appear in the training file")
    return ids  # type: ignore[return-value]


def _encode(ds: datasets.Dataset, role: str, path: str, files: DataFiles,
            cols: tuple[str, ...], base: TaskSpec | None,
            kind: tuple[bool, tuple[str, ...]] | None) -> tuple[datasets.Dataset, int,
                                                                tuple[bool, tuple[str, ...]]]:
    """One split checked and encoded: text columns + ``label``; the number of dropped rows
    and ``(is_regression, label names)`` (decided on train, then imposed on the others)."""
    present = list(ds.column_names)
    if "label" in cols:
        raise DataFileError(f"{path}: the text column may not be named 'label'; rename it")
    for c, what in [*((c, "text") for c in cols), (files.label_column, "label")]:
        if c not in present:
            raise DataFileError(f"{path}: no {what} column {c!r}; columns present: {present}"
                                f"{'' if what == 'text' else ' (set --label-column)'}")
    texts, empty = _texts(ds, cols)
    labels = list(ds[files.label_column])
    unlabelled = [i for i, v in enumerate(labels)  # GLUE files: -1 marks an unlabelled row
                  if _missing(v) or (base is not None and _class_key(v) == -1)]
    if unlabelled:
        raise DataFileError(f"{path}: {len(unlabelled)} row(s) have no label in column "
                            f"{files.label_column!r} (rows {_rows(unlabelled)}, 1-based, header "
                            "not counted); every row of a train, validation or test file needs "
                            "one" + (" (GLUE's test labels are not public: leave out the "
                                     "test file; validation is then the final split)"
                                     if role == "test" and base is not None else ""))
    if empty and not files.drop_empty_texts:
        raise DataFileError(f"{path}: refused: {len(empty)} row(s) have an empty or missing "
                            f"text in {list(cols)} (rows {_rows(empty)}, 1-based, header not "
                            "counted); fix them, or drop them with drop_empty_texts "
                            "(--drop-empty-texts)")
    keep = sorted(set(range(len(labels))) - set(empty))
    if not keep:
        raise DataFileError(f"{path}: no rows left after dropping {len(empty)} with an empty "
                            "text")
    texts = [[t[i] for i in keep] for t in texts]
    labels = [labels[i] for i in keep]
    kind = kind or _kind(labels, files, base)
    values, feature = _label_values(labels, keep, kind, files, base, path, role)
    features = datasets.Features({**{c: datasets.Value("string") for c in cols},
                                  "label": feature})
    return datasets.Dataset.from_dict({**dict(zip(cols, texts, strict=True)), "label": values},
                                      features=features), len(empty), kind


def _kind(labels: list[Any], files: DataFiles,
          base: TaskSpec | None) -> tuple[bool, tuple[str, ...]]:
    """``(is_regression, class names)`` decided on the train labels (names sorted)."""
    if _is_regression(labels, files, base):
        return True, ()
    if base is not None:
        return False, base.label_names
    keys = sorted({_class_key(v) for v in labels}, key=lambda k: (isinstance(k, str), k))
    return False, tuple(str(k) for k in keys)


def _label_values(labels: list[Any], rows: list[int], kind: tuple[bool, tuple[str, ...]],
                  files: DataFiles, base: TaskSpec | None, path: str,
                  role: str) -> tuple[list[Any], Any]:
    """The encoded labels and their feature (float32, or a ClassLabel of the names)."""
    regression, names = kind
    if regression:
        return _numbers(labels, rows, files.label_column, path), datasets.Value("float32")
    values = _class_ids(labels, names, base is not None, path, files.label_column)
    if role == "train" and len(set(values)) < 2:
        raise DataFileError(f"{path}: a single class ({names[values[0]]!r}) in column "
                            f"{files.label_column!r}; classification needs two or more "
                            "(float labels? use --task-type regression)")
    return values, datasets.ClassLabel(names=list(names))


# ----------------------------------------------------------------------------- the task
def _cut(train: datasets.Dataset, files: DataFiles, regression: bool,
         path: str) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, held-out) from the train rows: seeded, stratified by class."""
    try:
        parts = train.train_test_split(test_size=files.heldout_fraction, seed=files.seed,
                                       stratify_by_column=None if regression else "label")
    except ValueError as e:
        raise DataFileError(f"{path}: cannot hold out {files.heldout_fraction:.0%} of "
                            f"{len(train)} rows{'' if regression else ' stratified by class'} "
                            f"({e}); give a validation file (--validation-file) or more "
                            "rows") from None
    return parts["train"], parts["test"]


def _build(files: DataFiles, base: TaskSpec | None, eval_split: str,
           cache_dir: str | Path | None) -> tuple[datasets.DatasetDict, tuple[str, ...]]:
    """Every split read, checked and encoded; the notes a summary prints."""
    train = read_file(files.train_file, cache_dir, role="train")
    cols = _columns(files, base) or (guess_text_column(list(train.column_names), files.train_file),)
    out: dict[str, datasets.Dataset] = {}
    notes: list[str] = []
    kind = None
    for role, path in files.files().items():
        raw = train if role == "train" else read_file(path, cache_dir, role=role)
        split = eval_split if role == "validation" else role
        out[split], dropped, kind = _encode(raw, role, path, files, cols, base, kind)
        if dropped:
            notes.append(f"dropped {dropped} row(s) with an empty text from the {role} file "
                         f"({len(out[split])} kept)")
    regression, names = kind
    if files.validation_file is None:
        out["train"], out[eval_split] = _cut(out["train"], files, regression, files.train_file)
        notes.append(f"no validation file: {len(out[eval_split])} rows "
                     f"({files.heldout_fraction:.0%}) of train held out as {eval_split!r} "
                     f"({'' if regression else 'stratified by class, '}seed {files.seed}); "
                     f"train keeps {len(out['train'])}")
    if files.test_file is None:
        notes.append(f"no test file: {eval_split} is the final split")
    if not regression and base is None:
        notes.append(f"classes (sorted; ids in this order): {', '.join(names)}"
                     + (f"; f1 counts {names[1]!r} as positive" if len(names) == 2 else ""))
    return datasets.DatasetDict(out), tuple(notes)


def _metrics(regression: bool, n_classes: int) -> tuple[str, ...]:
    if regression:
        return ("pearson", "spearman")
    return ("accuracy", "f1") if n_classes == 2 else ("accuracy", "f1_macro")


def _load_files(files: DataFiles, spec: TaskSpec,
                cache_dir: str | Path | None) -> datasets.DatasetDict:
    """The loader of a file task (module level: a spec holding it pickles)."""
    if spec.data_fingerprint not in _LOADED:
        if fingerprint(files) != spec.data_fingerprint:
            raise DataFileError(f"the data files of task {spec.name!r} changed since it was "
                                f"registered ({files.train_file}, ...); register them again")
        _LOADED[spec.data_fingerprint], _ = _build(files, _base(files), spec.eval_splits[0],
                                                   cache_dir)
    return _LOADED[spec.data_fingerprint]


def _base(files: DataFiles) -> TaskSpec | None:
    return get_task_spec(files.task) if files.task else None


def task_name(files: DataFiles, data_fingerprint: str | None = None) -> str:
    """``<train stem or GLUE task>-<12 hex of the fingerprint>``."""
    stem = files.task or "".join(c if c.isalnum() else "_"
                                 for c in Path(files.train_file).stem.lower())
    return f"{stem}-{(data_fingerprint or fingerprint(files))[:12]}"


def task_from_files(files: DataFiles, cache_dir: str | Path | None = None) -> TaskSpec:
    """Read and check the files (every :class:`DataFileError` is raised here, before any
    training), build their :class:`TaskSpec` and register it (idempotent)."""
    fp = fingerprint(files)
    name = task_name(files, fp)
    known = TASKS.get(name.lower())
    if known is not None and known.data_fingerprint == fp:
        return known
    base = _base(files)
    eval_split = base.eval_splits[0] if base is not None else "validation"
    ds, notes = _build(files, base, eval_split, cache_dir)
    _LOADED[fp] = ds
    label = ds["train"].features["label"]
    regression = not isinstance(label, datasets.ClassLabel)
    names = () if regression else tuple(label.names)
    spec = TaskSpec(name, _columns(files, base) or tuple(c for c in ds["train"].column_names
                                                         if c != "label"),
                    1 if regression else len(names), regression,
                    base.metric_names if base is not None else _metrics(regression, len(names)),
                    names, train_split="train", eval_splits=(eval_split,),
                    test_splits=("test",) if files.test_file else (),
                    max_length=files.max_length, loader=functools.partial(_load_files, files),
                    data_fingerprint=fp, notes=notes)
    return register_task(spec)


def register_files(files: DataFiles | Mapping[str, Any],
                   cache_dir: str | Path | None = None) -> TaskSpec:
    """Make ``get_task_spec(name)`` find the files' task in this process (e.g. a worker
    given :meth:`DataFiles.to_dict`); the same name in every process."""
    return task_from_files(files if isinstance(files, DataFiles) else DataFiles.from_dict(files),
                           cache_dir)


@dataclass(frozen=True)
class Truncation:
    """How many of a split's rows ``max_length`` cuts."""

    split: str
    rows: int
    truncated: int  # rows longer than max_length tokens (special tokens included)
    max_length: int
    longest: int  # tokens of the longest row, untruncated

    @property
    def fraction(self) -> float:
        return self.truncated / self.rows if self.rows else 0.0


def truncation_report(spec: TaskSpec, tokenizer: Any, cache_dir: str | Path | None = None,
                      max_length: int | None = None) -> dict[str, Truncation]:
    """Per split of ``spec`` (train, evaluation, test): rows that truncation to
    ``max_length`` (default: the task's) cuts, counted on the untruncated token lengths."""
    limit = max_length or spec.max_length
    ds = spec.load(cache_dir)
    out = {}
    for split in dict.fromkeys((spec.train_split, *spec.eval_splits, *spec.test_splits)):
        if split not in ds:
            continue
        cols = [list(ds[split][c]) for c in spec.text_columns]
        lengths = []
        for i in range(0, len(cols[0]), 4096):
            enc = tokenizer(*(c[i:i + 4096] for c in cols), truncation=False, verbose=False)
            lengths += [len(x) for x in enc["input_ids"]]
        out[split] = Truncation(split, len(lengths), sum(n > limit for n in lengths), limit,
                                max(lengths, default=0))
    return out


__all__ = ["TASK_TYPES", "DataFiles", "Truncation", "fingerprint", "guess_text_column",
           "read_file", "register_files", "task_from_files", "task_name", "truncation_report"]
