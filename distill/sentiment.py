"""The embedded sentiment tasks and the unlabeled text for general distillation.

Embedded tasks (need the ``movies`` asset, see :mod:`distill.assets`)
----------------------------------------------------------------------
Built from the Hutto & Gilbert (ICWSM 2014) ground-truth files: tab-separated
``id, mean, text`` lines, the mean rating of 20+ people on -4..+4. HTML entities
(``&amp;``) are unescaped. For each source ``movie``, ``tweets``, ``amazon``, ``nyt``:

* ``<source>_binary``: drop neutral sentences (``|mean| < 0.5``), ``label = int(mean > 0)``.
* ``<source>_rating``: all sentences, ``label = mean`` (regression, STS-B-like).

Splits ``train`` / ``heldout`` / ``test`` (80/10/10) are assigned over the *whole*
file, the same in both tasks of a source: the distinct normalized texts are ordered by
``sha256(f"{seed}\\x1f{text}")`` and cut at 80 % and 90 %; duplicates share a split, and
neither the membership nor the order inside a split depends on the file order. ``heldout``
is for search fitness, ``test`` for final reports only. Sizes with the default seed 0
(train / heldout / test):

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

:func:`iter_unlabeled_text` yields the plain sentences of general (pre-training) KD: these
files, then the Austen novels when the optional ``austen`` asset is fetched.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets

from .assets import ensure_asset
from .errors import DataFormatError, MissingAssetError
from .taskspec import TaskSpec

SPLITS = ("train", "heldout", "test")
DEFAULT_SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
NEUTRAL_MARGIN = 0.5
SENTIMENT_SOURCES = {"movie": "movieReviewSnippets_GroundTruth.txt",
                     "tweets": "tweets_GroundTruth.txt",
                     "amazon": "amazonReviewSnippets_GroundTruth.txt",
                     "nyt": "nytEditorialSnippets_GroundTruth.txt"}


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


# ----------------------------------------------------------------------------- the tasks
def _load_sentiment(spec: TaskSpec, cache_dir: str | Path | None) -> datasets.DatasetDict:
    return load_sentiment_task(spec.name, cache_dir)


def _sentiment_text(spec: TaskSpec, cache_dir: str | Path | None) -> Iterator[str]:
    return iter_unlabeled_text(cache_dir, include_austen=False, exclude_movie_eval=True)


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


__all__ = ["DEFAULT_SPLIT_SEED", "SENTIMENT_SOURCES", "SENTIMENT_TASKS", "SPLITS",
           "RatedSentence", "assign_splits", "austen_sentences", "austen_text",
           "iter_unlabeled_text", "load_sentiment_task", "make_sentiment_task",
           "parse_rating_file", "split_sentences"]
