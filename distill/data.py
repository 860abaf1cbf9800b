"""Task data: the embedded sentiment tasks, real GLUE / SQuAD loaders, tokenization.

Embedded tasks (need the ``movies`` asset, see :mod:`distill.assets`)
----------------------------------------------------------------------
Built from the Hutto & Gilbert (ICWSM 2014) ground-truth files: tab-separated
``id, mean, text`` lines, the mean rating of 20+ people on -4..+4. HTML entities
(``&amp;``) are unescaped. For each source ``movie``, ``tweets``, ``amazon``, ``nyt``:

* ``<source>_binary``: drop neutral sentences (``|mean| < 0.5``), ``label = int(mean > 0)``.
* ``<source>_rating``: all sentences, ``label = mean`` (regression, STS-B-like).

Splits ``train`` / ``heldout`` / ``test`` (80/10/10) are assigned over the *whole*
file (so a sentence sits in the same split in both tasks): the distinct normalized
texts are ordered by ``sha256(f"{seed}\\x1f{text}")`` and cut at 80 % and 90 %;
duplicates share a split, and neither the membership nor the order inside a split
depends on the file order. ``heldout`` is for search fitness, ``test`` for final
reports only. Sizes measured with the default seed 0 (train / heldout / test):

=============  ======  =======  =====  ======
task           train   heldout  test   total
=============  ======  =======  =====  ======
movie_binary   8,061   1,012    999    10,072
movie_rating   8,484   1,060    1,061  10,605
tweets_binary  2,722   346      364    3,432
tweets_rating  3,357   418      425    4,200
amazon_binary  2,382   305      298    2,985
amazon_rating  2,966   371      371    3,708
nyt_binary     2,402   283      285    2,970
nyt_rating     4,154   517      519    5,190
=============  ======  =======  =====  ======

Columns: ``sentence`` (str), ``label`` (ClassLabel negative/positive, or float32),
``rating`` (float32 mean), ``id`` (str, the file's id).

GLUE and SQuAD
--------------
:func:`load_glue` and :func:`load_squad` call ``datasets.load_dataset`` on the hub
(``nyu-mll/glue``, ``rajpurkar/squad``, ``rajpurkar/squad_v2``; online or from the
HF cache) or, with ``data_files``, on local csv / tsv / json / jsonl files in the
official Hugging Face schema. Nothing synthetic is ever presented as GLUE.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from distill.assets import ensure_asset, offline_env
from distill.errors import DataFormatError, DatasetUnavailableError, MissingAssetError
from distill.local_files import _check_files, _columns
from distill.metrics import GLUE_METRICS
from distill.squad import SQUAD_FEATURES as SQUAD_FEATURES  # re-exported: SQuAD lives there
from distill.squad import SQUAD_HUB_IDS as SQUAD_HUB_IDS
from distill.squad import load_squad as load_squad
from distill.squad import postprocess_squad_predictions as postprocess_squad_predictions
from distill.squad import prepare_squad_features as prepare_squad_features
from distill.squad import tokenize_squad as tokenize_squad

SPLITS = ("train", "heldout", "test")
DEFAULT_SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
NEUTRAL_MARGIN = 0.5
SENTIMENT_SOURCES = {"movie": "movieReviewSnippets_GroundTruth.txt",
                     "tweets": "tweets_GroundTruth.txt",
                     "amazon": "amazonReviewSnippets_GroundTruth.txt",
                     "nyt": "nytEditorialSnippets_GroundTruth.txt"}
GLUE_HUB_ID = "nyu-mll/glue"


@dataclass(frozen=True)
class TaskSpec:
    """How to read, tokenize and score one sentence(-pair) task."""

    name: str
    text_columns: tuple[str, ...]
    num_labels: int  # 1 for regression
    is_regression: bool
    metric_names: tuple[str, ...]
    label_names: tuple[str, ...] = ()
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)
    max_length: int = 128  # default truncation in tokens
    loader: Callable[[TaskSpec, str | Path | None], datasets.DatasetDict] | None = field(
        default=None, compare=False, repr=False)  # (spec, cache_dir) -> the splits
    unlabeled_text: Callable[[TaskSpec, str | Path | None], Iterator[str]] | None = field(
        default=None, compare=False, repr=False)  # general-KD text (None: the train texts)
    assets: tuple[str, ...] = ()  # offline assets the loaders need (distill.assets)
    data_fingerprint: str | None = None  # of the data (file tasks): part of cache keys
    notes: tuple[str, ...] = field(default=(), compare=False)  # for summaries and reports

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def final_split(self) -> str:
        """The split final results are reported on: the first test split, or the first
        evaluation split when the task has no labelled test split (GLUE, files without a
        test file; :attr:`notes` then says so)."""
        return (self.test_splits or self.eval_splits)[0]

    @property
    def search_split(self) -> str | None:
        """The split a search may score candidates on: the first evaluation split that is not
        the final split (the sentiment tasks' ``heldout``, a user's validation file when a
        test file is given); None when the search must hold out rows of train instead."""
        return next((s for s in self.eval_splits if s != self.final_split), None)

    def load(self, cache_dir: str | Path | None = None) -> datasets.DatasetDict:
        """The task's ``DatasetDict`` (every split the loader provides)."""
        if self.loader is None:
            raise DatasetUnavailableError(f"task {self.name!r} has no loader; register it with "
                                          "register_task(TaskSpec(..., loader=fn))")
        return self.loader(self, cache_dir)

    def unlabeled(self, cache_dir: str | Path | None = None) -> Iterator[str]:
        """Sentences for general KD that hold no evaluation or test text: the task's own
        source of unlabeled text, or else the texts of its training split."""
        if self.unlabeled_text is not None:
            yield from self.unlabeled_text(self, cache_dir)
            return
        train = self.load(cache_dir)[self.train_split]
        for col in self.text_columns:
            yield from train[col]


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to :data:`TASKS` (its name must be new); return it."""
    if spec.name.lower() in TASKS:
        raise ValueError(f"a task named {spec.name!r} is already registered; choose another "
                         "name")
    TASKS[spec.name.lower()] = spec
    return spec


def get_task_spec(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of a GLUE task (``"mnli"``) or embedded task (``"movie_binary"``)."""
    try:
        return TASKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}") from None


# ----------------------------------------------------------------------------- sentiment
@dataclass(frozen=True)
class RatedSentence:
    id: str
    rating: float
    text: str


def parse_rating_file(path: str | Path) -> list[RatedSentence]:
    """Parse a ground-truth file: one ``id<TAB>mean<TAB>text`` per line (CRLF allowed).

    The text may contain quotes and further tabs (only the first two tabs split).
    Raises :class:`DataFormatError` naming the file and line of a malformed entry.
    """
    path = Path(path)
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise DataFormatError(f"{path}:{lineno}: expected 'id<TAB>mean<TAB>text', "
                                  f"found {len(parts)} field(s): {line[:80]!r}")
        try:
            rating = float(parts[1])
        except ValueError:
            raise DataFormatError(f"{path}:{lineno}: mean rating {parts[1]!r} is not a "
                                  "number") from None
        text = html.unescape(parts[2]).strip()
        if not text:
            raise DataFormatError(f"{path}:{lineno}: empty text")
        rows.append(RatedSentence(parts[0].strip(), rating, text))
    if not rows:
        raise DataFormatError(f"{path}: no rated sentences found")
    return rows


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _split_key(text: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\x1f{_norm(text)}".encode()).hexdigest()


def assign_splits(texts: Sequence[str], seed: int = DEFAULT_SPLIT_SEED,
                  fractions: Sequence[float] = SPLIT_FRACTIONS) -> list[str]:
    """Split name (train / heldout / test) of each text; equal texts share a split."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    unique = sorted({_norm(t): _split_key(t, seed) for t in texts}.items(), key=lambda kv: kv[1])
    cut1 = round(fractions[0] * len(unique))
    cut2 = cut1 + round(fractions[1] * len(unique))
    where = {t: SPLITS[0 if i < cut1 else 1 if i < cut2 else 2] for i, (t, _) in enumerate(unique)}
    return [where[_norm(t)] for t in texts]


def make_sentiment_task(rows: Sequence[RatedSentence], kind: str = "binary",
                        seed: int = DEFAULT_SPLIT_SEED) -> datasets.DatasetDict:
    """``DatasetDict`` (train / heldout / test) of a binary or rating task from parsed rows."""
    if kind not in ("binary", "rating"):
        raise ValueError(f"kind must be 'binary' or 'rating', got {kind!r}")
    buckets: dict[str, list[tuple[str, RatedSentence]]] = {s: [] for s in SPLITS}
    for row, split in zip(rows, assign_splits([r.text for r in rows], seed), strict=True):
        if kind == "binary" and abs(row.rating) < NEUTRAL_MARGIN:
            continue
        buckets[split].append((_split_key(row.text, seed), row))
    label = (datasets.ClassLabel(names=["negative", "positive"]) if kind == "binary"
             else datasets.Value("float32"))
    features = datasets.Features({"sentence": datasets.Value("string"), "label": label,
                                  "rating": datasets.Value("float32"),
                                  "id": datasets.Value("string")})
    out = {}
    for split, items in buckets.items():
        items.sort(key=lambda kr: (kr[0], kr[1].id))
        rs = [r for _, r in items]
        out[split] = datasets.Dataset.from_dict({
            "sentence": [r.text for r in rs],
            "label": [int(r.rating > 0) if kind == "binary" else r.rating for r in rs],
            "rating": [r.rating for r in rs], "id": [r.id for r in rs]}, features=features)
    return datasets.DatasetDict(out)


def load_sentiment_task(name: str = "movie_binary", cache_dir: str | Path | None = None,
                        seed: int = DEFAULT_SPLIT_SEED) -> datasets.DatasetDict:
    """Load an embedded task such as ``movie_binary`` or ``tweets_rating`` from the cache.

    Raises :class:`MissingAssetError` (with the fetch command) if the data is absent.
    """
    source, _, kind = name.partition("_")
    if source not in SENTIMENT_SOURCES or kind not in ("binary", "rating"):
        raise ValueError(f"unknown embedded task {name!r}; known: {sorted(SENTIMENT_TASKS)}")
    folder = ensure_asset("movies", cache_dir)
    return make_sentiment_task(parse_rating_file(folder / SENTIMENT_SOURCES[source]), kind, seed)


# ----------------------------------------------------------------------------- local files
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
    spec = get_task_spec(task)
    if spec.name not in GLUE_METRICS:
        raise ValueError(f"{task!r} is not a GLUE task; use load_sentiment_task")
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


# ----------------------------------------------------------------------------- the registry
def _load_glue_task(spec: TaskSpec, cache_dir: str | Path | None) -> datasets.DatasetDict:
    # ``cache_dir`` is efficientbert's asset cache; GLUE lives in the datasets cache
    return load_glue(spec.name)


def _load_sentiment(spec: TaskSpec, cache_dir: str | Path | None) -> datasets.DatasetDict:
    return load_sentiment_task(spec.name, cache_dir)


def _sentiment_text(spec: TaskSpec, cache_dir: str | Path | None) -> Iterator[str]:
    return iter_unlabeled_text(cache_dir, include_austen=False, exclude_movie_eval=True)


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
SENTIMENT_TASKS: dict[str, TaskSpec] = {}
for _src in SENTIMENT_SOURCES:
    SENTIMENT_TASKS[f"{_src}_binary"] = TaskSpec(
        f"{_src}_binary", ("sentence",), 2, False, ("accuracy", "f1"), ("negative", "positive"),
        eval_splits=("heldout",), test_splits=("test",), max_length=64, loader=_load_sentiment,
        unlabeled_text=_sentiment_text, assets=("movies",))
    SENTIMENT_TASKS[f"{_src}_rating"] = TaskSpec(
        f"{_src}_rating", ("sentence",), 1, True, ("pearson", "spearman"),
        eval_splits=("heldout",), test_splits=("test",), max_length=64, loader=_load_sentiment,
        unlabeled_text=_sentiment_text, assets=("movies",))
TASKS: dict[str, TaskSpec] = {**GLUE_TASKS, **SENTIMENT_TASKS}


# ----------------------------------------------------------------------------- tokenization
def tokenize_task(dataset: datasets.Dataset | datasets.DatasetDict, tokenizer: Any,
                  spec: TaskSpec, max_length: int = 128, padding: bool | str = "max_length",
                  keep_columns: Sequence[str] = ()) -> datasets.Dataset | datasets.DatasetDict:
    """Tokenize a single-sentence or sentence-pair task.

    Output columns: the tokenizer's (input_ids, token_type_ids, attention_mask),
    ``label`` and any ``keep_columns``; pairs are truncated longest-first.
    """
    first = dataset[next(iter(dataset))] if isinstance(dataset, datasets.DatasetDict) else dataset
    missing = [c for c in spec.text_columns if c not in first.column_names]
    if missing:
        raise DataFormatError(f"dataset lacks text column(s) {missing} of task {spec.name}; "
                              f"it has {first.column_names}")
    keep = {"label", *keep_columns}

    def encode(batch: dict[str, list]) -> Any:
        return tokenizer(*(batch[c] for c in spec.text_columns), truncation=True,
                         max_length=max_length, padding=padding)

    return dataset.map(encode, batched=True, desc=f"tokenizing {spec.name}",
                       remove_columns=[c for c in first.column_names if c not in keep])


# ----------------------------------------------------------------------------- unlabeled text
_ABBREV = re.compile(r"\b(Mr|Mrs|Ms|Dr|St|Esq|Col|Capt|Gen|Sir)\.")
_SENT_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’]))\s+(?=[\"'“‘(]?[A-Z])")
_HEADING = re.compile(r"^(CHAPTER|Chapter|VOLUME|Volume|BOOK)\b|^[^a-z]*$")


def split_sentences(paragraph: str, min_words: int = 3) -> list[str]:
    """Rule-based sentence split (abbreviations such as ``Mr.`` are kept intact)."""
    text = _ABBREV.sub(lambda m: m.group(1) + "\0", " ".join(paragraph.replace("_", "").split()))
    return [s.replace("\0", ".") for s in _SENT_END.split(text) if len(s.split()) >= min_words]


def austen_sentences(book_text: str, min_words: int = 3) -> list[str]:
    """Sentences of one novel: paragraphs are blank-line separated; headings are dropped."""
    out = []
    for para in re.split(r"\n\s*\n", book_text):
        para = para.strip()
        if para and not _HEADING.match(para):
            out.extend(split_sentences(para, min_words))
    return out


def iter_unlabeled_text(cache_dir: str | Path | None = None, include_austen: bool = True,
                        exclude_movie_eval: bool = False,
                        seed: int = DEFAULT_SPLIT_SEED) -> Iterator[str]:
    """Plain sentences for general (pre-training) distillation.

    The 23,703 sentences of the four ground-truth files, then, if the optional
    ``austen`` asset is fetched, the Austen novels' sentences (30,830 more, 54,533 in
    all). ``exclude_movie_eval`` drops the movie sentences of the heldout / test splits
    (given ``seed``) so that
    no evaluation text is seen, even unlabeled.
    """
    folder = ensure_asset("movies", cache_dir)
    for source, fname in SENTIMENT_SOURCES.items():
        rows = parse_rating_file(folder / fname)
        splits = (assign_splits([r.text for r in rows], seed)
                  if exclude_movie_eval and source == "movie" else ["train"] * len(rows))
        yield from (r.text for r, s in zip(rows, splits, strict=True) if s == "train")
    if include_austen:
        yield from austen_text(cache_dir)


def austen_text(cache_dir: str | Path | None = None) -> Iterator[str]:
    """The Austen novels' sentences, if the optional ``austen`` asset is fetched."""
    try:
        austen = ensure_asset("austen", cache_dir)
    except MissingAssetError:
        return
    for path in sorted(austen.glob("*.txt")):
        yield from austen_sentences(path.read_text(encoding="utf-8"))
