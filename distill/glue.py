"""The GLUE tasks: their :class:`~distill.taskspec.TaskSpec` and :func:`load_glue`.

:func:`load_glue` calls ``datasets.load_dataset`` on the hub (``nyu-mll/glue``; online or
from the HF cache) or, with ``data_files``, on local csv / tsv / json / jsonl files in the
official Hugging Face schema.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from .assets import offline_env
from .errors import DataFormatError, DatasetUnavailableError
from .local_files import _check_files, _columns
from .metrics import GLUE_METRICS
from .taskspec import TaskSpec

GLUE_HUB_ID = "nyu-mll/glue"


def _load_local_glue(spec: TaskSpec, data_files: Mapping[str, str | Path],
                     cache_dir: str | None) -> datasets.DatasetDict:
    builder, kwargs = _check_files(data_files)
    columns = {split: _columns(Path(p), builder, kwargs) for split, p in data_files.items()}
    for split, cols in columns.items():
        missing = [c for c in spec.text_columns if c not in cols]
        if missing:
            raise DataFormatError(
                f"{data_files[split]} (split {split!r}) lacks column(s) {missing} of GLUE "
                f"{spec.name}; expected {list(spec.text_columns) + ['label', 'idx']}, "
                f"found {cols}")
    label = (datasets.Value("float32") if spec.is_regression
             else datasets.ClassLabel(names=list(spec.label_names)))
    final = datasets.Features({**{c: datasets.Value("string") for c in spec.text_columns},
                               "label": label, "idx": datasets.Value("int32")})
    out = {}
    for split, p in data_files.items():
        cols = columns[split]  # read every column as a string; converted below
        ds = datasets.load_dataset(builder, data_files={split: str(p)}, split=split,
                                   cache_dir=cache_dir, features=datasets.Features(
                                       {c: datasets.Value("string") for c in cols}), **kwargs)
        out[split] = ds.map(_glue_converter(spec, str(p), cols), batched=True, with_indices=True,
                            features=final, remove_columns=ds.column_names)
    return datasets.DatasetDict(out)


def _glue_converter(spec: TaskSpec, where: str,
                    cols: Sequence[str]) -> Callable[[dict[str, list], list[int]], dict]:
    names = {n: i for i, n in enumerate(spec.label_names)}

    def label_of(value: str | None) -> float | int:
        v = (value or "").strip()
        if v in ("", "-1", "-1.0"):  # unlabeled test rows, as in the hub data
            return -1.0 if spec.is_regression else -1
        if v in names:
            return names[v]
        try:
            return float(v) if spec.is_regression else int(float(v))
        except ValueError:
            raise DataFormatError(f"{where}: label {v!r} is neither a number nor one of "
                                  f"{list(spec.label_names)}") from None

    def convert(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out = {c: [s or "" for s in batch[c]] for c in spec.text_columns}
        out["label"] = [label_of(v) for v in batch.get("label", [None] * len(indices))]
        if "label" in cols and not spec.is_regression:
            bad = [v for v in out["label"] if not -1 <= v < len(names)]
            if bad:
                raise DataFormatError(f"{where}: label {bad[0]} out of range for {spec.name}")
        out["idx"] = [int(v) for v in batch["idx"]] if "idx" in cols else list(indices)
        return out

    return convert


def load_glue(task: str, data_files: Mapping[str, str | Path] | None = None,
              cache_dir: str | Path | None = None) -> datasets.DatasetDict:
    """Load GLUE ``task`` with columns ``<text columns>, label, idx``.

    With ``data_files`` ({split: path}; csv, tsv, json or jsonl in the HF glue schema,
    e.g. mnli: premise, hypothesis, label, idx; splits validation_matched /
    validation_mismatched) the files are read with ``datasets.load_dataset``; string
    labels (``"entailment"``) are mapped to ids. Otherwise the dataset comes from the local
    ``datasets`` cache (``cache_dir``, default ``HF_DATASETS_CACHE``) when it is there, else
    from the hub.
    """
    spec = GLUE_TASKS.get(task.lower())
    if spec is None:
        raise ValueError(f"{task!r} is not a GLUE task (GLUE: {', '.join(GLUE_TASKS)}); for "
                         "the embedded tasks use distill.sentiment.load_sentiment_task")
    cache = str(cache_dir) if cache_dir is not None else None
    if data_files:
        return _load_local_glue(spec, data_files, cache)
    try:  # the local datasets cache first, without touching the network
        with offline_env():
            return datasets.load_dataset(GLUE_HUB_ID, spec.name, cache_dir=cache)
    except Exception:
        pass
    try:
        return datasets.load_dataset(GLUE_HUB_ID, spec.name, cache_dir=cache)
    except Exception as exc:
        raise DatasetUnavailableError(
            f"could not load GLUE {spec.name!r} from the hub ({GLUE_HUB_ID}) or its cache: "
            f"{type(exc).__name__}: {exc}. Offline, pass local files in the official schema, "
            f"e.g. load_glue({spec.name!r}, data_files={{'train': 'train.tsv', "
            f"'{spec.eval_splits[0]}': 'dev.tsv'}}) with columns "
            f"{list(spec.text_columns) + ['label', 'idx']}") from exc


# ----------------------------------------------------------------------------- the tasks
def _load_glue_task(spec: TaskSpec, cache_dir: str | Path | None) -> datasets.DatasetDict:
    # ``cache_dir`` is efficientbert's asset cache; GLUE lives in the datasets cache
    return load_glue(spec.name)


GLUE_FINAL_NOTE = "GLUE's test labels are not public: validation is the final split"


def _glue(name: str, cols: tuple[str, ...], labels: tuple[str, ...], **kw: Any) -> TaskSpec:
    return TaskSpec(name, cols, max(len(labels), 1), not labels, GLUE_METRICS[name], labels,
                    test_splits=(), loader=_load_glue_task, notes=(GLUE_FINAL_NOTE,), **kw)


GLUE_TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    _glue("cola", ("sentence",), ("unacceptable", "acceptable")),
    _glue("sst2", ("sentence",), ("negative", "positive")),
    _glue("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent")),
    _glue("qqp", ("question1", "question2"), ("not_duplicate", "duplicate")),
    _glue("stsb", ("sentence1", "sentence2"), ()),
    _glue("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
          eval_splits=("validation_matched", "validation_mismatched")),
    _glue("qnli", ("question", "sentence"), ("entailment", "not_entailment")),
    _glue("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment")),
    _glue("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment")),
)}


__all__ = ["GLUE_FINAL_NOTE", "GLUE_HUB_ID", "GLUE_TASKS", "load_glue"]
