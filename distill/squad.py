"""SQuAD v1.1 / v2.0: loading, feature preparation and answer post-processing.

:func:`load_squad` reads the hub data (``rajpurkar/squad``, ``rajpurkar/squad_v2``;
online or from the HF cache) or local json / jsonl files in the Hugging Face schema,
or the official nested files. :func:`prepare_squad_features` /
:func:`tokenize_squad` cut examples into overlapping context windows and
:func:`postprocess_squad_predictions` maps start / end logits back to answer text.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from tqdm.auto import tqdm

from distill.assets import default_cache_dir
from distill.errors import DataFormatError, DatasetUnavailableError
from distill.local_files import _check_files, _columns

SQUAD_HUB_IDS = {1: "rajpurkar/squad", 2: "rajpurkar/squad_v2"}

SQUAD_FEATURES = datasets.Features({
    "id": datasets.Value("string"), "title": datasets.Value("string"),
    "context": datasets.Value("string"), "question": datasets.Value("string"),
    "answers": {"text": datasets.List(datasets.Value("string")),
                "answer_start": datasets.List(datasets.Value("int32"))}})


def _is_nested_squad(path: Path) -> bool:
    """True for the official layout: one JSON object with a ``data`` list of articles."""
    if path.suffix.lower() != ".json":
        return False
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # JSON Lines
        return False
    return isinstance(doc, dict) and isinstance(doc.get("data"), list)


def _squad_nested_to_jsonl(path: Path, out_dir: Path) -> Path:
    """Convert an official nested SQuAD file (``{"data": [...]}``) to HF-schema jsonl."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    target = out_dir / f"squad-{path.stem}-{digest}.jsonl"
    if target.is_file():
        return target
    doc = json.loads(path.read_text(encoding="utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".tmp"), "w", encoding="utf-8") as fh:
        for article in doc["data"]:
            for para in article["paragraphs"]:
                for qa in para["qas"]:
                    answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                    fh.write(json.dumps({
                        "id": qa["id"], "title": article.get("title", ""),
                        "context": para["context"], "question": qa["question"],
                        "answers": {"text": [a["text"] for a in answers],
                                    "answer_start": [a["answer_start"] for a in answers]}}) + "\n")
    target.with_suffix(".tmp").replace(target)
    return target


def load_squad(version: int = 1, data_files: Mapping[str, str | Path] | None = None,
               cache_dir: str | Path | None = None) -> datasets.DatasetDict:
    """Load SQuAD v1.1 (``version=1``) or v2.0 (``version=2``).

    Columns: id, title, context, question, answers{text: list, answer_start: list}
    (v2.0 unanswerable questions have empty lists). ``data_files`` may be json / jsonl
    in that schema, or the official nested files (``train-v1.1.json``, ``dev-v2.0.json``).
    """
    if version not in SQUAD_HUB_IDS:
        raise ValueError(f"version must be 1 or 2, got {version!r}")
    cache = str(cache_dir) if cache_dir is not None else None
    if not data_files:
        try:
            return datasets.load_dataset(SQUAD_HUB_IDS[version], cache_dir=cache)
        except Exception as exc:
            raise DatasetUnavailableError(
                f"could not load {SQUAD_HUB_IDS[version]} from the hub or its cache: "
                f"{type(exc).__name__}: {exc}. Offline, pass local files: load_squad("
                f"{version}, data_files={{'train': 'train-v{version}.json', 'validation': "
                "'dev.json'}) (official nested json, or jsonl with id, title, context, "
                "question, answers)") from exc
    builder, _ = _check_files(data_files)
    if builder != "json":
        raise DataFormatError("SQuAD data_files must be .json or .jsonl")
    files = {}
    for split, p in data_files.items():
        p = Path(p)
        files[split] = str(_squad_nested_to_jsonl(p, Path(cache or default_cache_dir()) /
                                                  "converted") if _is_nested_squad(p) else p)
        cols = _columns(Path(files[split]), "json", {})
        missing = [c for c in SQUAD_FEATURES if c not in cols]
        if missing:
            raise DataFormatError(f"{p} (split {split!r}) lacks SQuAD column(s) {missing}; "
                                  f"expected {list(SQUAD_FEATURES)}, found {cols}")
    ds = datasets.load_dataset("json", data_files=files, features=SQUAD_FEATURES, cache_dir=cache)
    if version == 1:
        for split, d in ds.items():
            empty = [i for i, a in enumerate(d["answers"]) if not a["text"]]
            if empty:
                raise DataFormatError(f"SQuAD v1.1 split {split!r} has {len(empty)} question(s) "
                                      f"without an answer (first: row {empty[0]}); use version=2")
    return ds


# ----------------------------------------------------------------------------- features
def prepare_squad_features(examples: Mapping[str, list], tokenizer: Any, max_length: int = 384,
                           doc_stride: int = 128, train: bool = True) -> dict[str, list]:
    """Batch of SQuAD examples -> features (question first, context windows of
    ``max_length`` tokens overlapping by ``doc_stride``); needs a fast tokenizer.

    ``train``: adds ``start_positions`` / ``end_positions`` (token 0, the [CLS] token,
    when the answer is absent or not inside the window). Otherwise: adds
    ``example_id`` and ``offset_mapping`` (None outside the context) for
    :func:`postprocess_squad_predictions`.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("SQuAD feature preparation needs a fast tokenizer (offset mapping); "
                         "load it with AutoTokenizer.from_pretrained(path) or BertTokenizerFast")
    if doc_stride >= max_length:
        raise ValueError(f"doc_stride ({doc_stride}) must be < max_length ({max_length})")
    questions = [q.lstrip() for q in examples["question"]]
    longest_q = max((len(ids) for ids in tokenizer(questions, add_special_tokens=False)
                     ["input_ids"]), default=0)
    room = max_length - longest_q - tokenizer.num_special_tokens_to_add(pair=True)
    if room <= doc_stride:
        raise ValueError(f"a question of {longest_q} tokens leaves {room} context tokens per "
                         f"window, not more than doc_stride={doc_stride}; raise max_length "
                         "or lower doc_stride")
    enc = tokenizer(questions, list(examples["context"]),
                    truncation="only_second", max_length=max_length, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True,
                    padding="max_length")
    sample_map = enc.pop("overflow_to_sample_mapping")
    starts, ends, ids, offsets_out = [], [], [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        seq = enc.sequence_ids(i)
        ex = sample_map[i]
        if not train:
            ids.append(examples["id"][ex])
            offsets_out.append([o if seq[k] == 1 else None for k, o in enumerate(offsets)])
            continue
        ctx = [k for k, s in enumerate(seq) if s == 1]
        answers = examples["answers"][ex]
        if not answers["text"] or not ctx:
            starts.append(0)
            ends.append(0)
            continue
        a_start = answers["answer_start"][0]
        a_end = a_start + len(answers["text"][0])
        if offsets[ctx[0]][0] > a_start or offsets[ctx[-1]][1] < a_end:
            starts.append(0)
            ends.append(0)
            continue
        starts.append(max(k for k in ctx if offsets[k][0] <= a_start))
        ends.append(min(k for k in ctx if offsets[k][1] >= a_end))
    if train:
        enc.pop("offset_mapping")
        enc["start_positions"], enc["end_positions"] = starts, ends
    else:
        enc["example_id"], enc["offset_mapping"] = ids, offsets_out
    return dict(enc)


def tokenize_squad(dataset: datasets.Dataset, tokenizer: Any, max_length: int = 384,
                   doc_stride: int = 128, train: bool = True) -> datasets.Dataset:
    """Map :func:`prepare_squad_features` over a SQuAD split (one example -> >= 1 features)."""
    return dataset.map(prepare_squad_features, batched=True,
                       remove_columns=dataset.column_names, desc="preparing SQuAD features",
                       fn_kwargs={"tokenizer": tokenizer, "max_length": max_length,
                                  "doc_stride": doc_stride, "train": train})


def postprocess_squad_predictions(examples: datasets.Dataset, features: datasets.Dataset,
                                  start_logits: np.ndarray, end_logits: np.ndarray,
                                  n_best: int = 20, max_answer_length: int = 30,
                                  version_2: bool = False,
                                  null_threshold: float = 0.0) -> dict[str, str]:
    """Best answer text per example id from per-feature start / end logits.

    Spans must lie in the context, end >= start, length <= ``max_answer_length``.
    With ``version_2`` the answer is "" when the null score (token 0) beats the best
    span by more than ``null_threshold``.
    """
    by_example: dict[str, list[int]] = defaultdict(list)
    for i, eid in enumerate(features["example_id"]):
        by_example[eid].append(i)
    offsets_all = features["offset_mapping"]
    preds: dict[str, str] = {}
    for ex in tqdm(examples, desc="SQuAD predictions", leave=False):
        best, best_score, null_score = None, -np.inf, np.inf
        for fi in by_example.get(ex["id"], []):
            s, e, offsets = start_logits[fi], end_logits[fi], offsets_all[fi]
            null_score = min(null_score, float(s[0] + e[0]))
            for a in np.argsort(s)[::-1][:n_best]:
                for b in np.argsort(e)[::-1][:n_best]:
                    if (offsets[a] is None or offsets[b] is None or b < a
                            or b - a + 1 > max_answer_length):
                        continue
                    if s[a] + e[b] > best_score:
                        best_score = float(s[a] + e[b])
                        best = (offsets[a][0], offsets[b][1])
        if best is None or (version_2 and null_score - best_score > null_threshold):
            preds[ex["id"]] = ""
        else:
            preds[ex["id"]] = ex["context"][best[0]: best[1]]
    return preds
