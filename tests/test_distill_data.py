"""Data loaders, splits, tokenization and asset checks on tiny local files.

No network and no real assets are needed; the tests that use the real cached assets
are skipped (with the reason) when they are absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import datasets
import numpy as np
import pytest

from distill import assets
from distill.assets import MANIFEST, AssetSpec, ensure_asset, offline_env
from distill.data import get_task_spec, tokenize_task
from distill.errors import DataFormatError, DatasetUnavailableError, MissingAssetError
from distill.glue import GLUE_TASKS, load_glue
from distill.metrics import squad_v1_metrics
from distill.sentiment import (
    austen_sentences,
    iter_unlabeled_text,
    load_sentiment_task,
    make_sentiment_task,
    parse_rating_file,
)
from distill.squad import load_squad, postprocess_squad_predictions, tokenize_squad

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "cat", "dog", "sat", "on",
         "mat", "where", "did", "what", "is", "?", ".", ",", "film", "fun", "dull", "was",
         "in", "paris", "france", "city", "capital", "of", "##s", "it", "big", "river"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tok")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    # from_pretrained(dir) works on transformers 4 and 5 (v5 ignores vocab_file=...)
    tok = BertTokenizerFast.from_pretrained(str(folder))
    assert tok.is_fast and tok.tokenize("cats") == ["cat", "##s"]
    return tok


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


# ----------------------------------------------------------------------------- GLUE
def test_task_table() -> None:
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte",
                               "wnli"}
    mnli = get_task_spec("MNLI")
    assert mnli.text_columns == ("premise", "hypothesis") and mnli.num_labels == 3
    assert mnli.eval_splits == ("validation_matched", "validation_mismatched")
    stsb = get_task_spec("stsb")
    assert stsb.is_regression and stsb.num_labels == 1 and stsb.is_pair
    assert get_task_spec("cola").metric_names == ("mcc",)
    assert get_task_spec("movie_binary").eval_splits == ("heldout",)
    with pytest.raises(ValueError, match="unknown task"):
        get_task_spec("imdb")


def test_load_glue_sst2_tsv(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.tsv", 'sentence\tlabel\tidx\na "fun" film\t1\t0\n'
                   "it 's dull , isn't it\t0\t1\nNA\t1\t2\n")
    dev = _write(tmp_path / "dev.tsv", "sentence\tlabel\tidx\nthe cat\t1\t0\n")
    ds = load_glue("sst2", {"train": train, "validation": dev}, cache_dir=tmp_path / "hf")
    assert ds["train"]["sentence"] == ['a "fun" film', "it 's dull , isn't it", "NA"]
    assert ds["train"]["label"] == [1, 0, 1] and ds["train"]["idx"] == [0, 1, 2]
    assert ds["train"].features["label"].names == ["negative", "positive"]
    assert len(ds["validation"]) == 1


def test_load_glue_mnli_matched_mismatched_jsonl(tmp_path: Path) -> None:
    row = {"premise": "the cat sat", "hypothesis": "a cat sat", "label": 0, "idx": 0}
    files = {
        "train": _jsonl(tmp_path / "train.jsonl", [row, {**row, "label": 2, "idx": 1}]),
        "validation_matched": _jsonl(tmp_path / "m.jsonl", [{**row, "label": "neutral"}]),
        "validation_mismatched": _jsonl(tmp_path / "mm.jsonl", [{**row, "label": "contradiction"}]),
    }
    ds = load_glue("mnli", files, cache_dir=tmp_path / "hf")
    assert set(ds) == {"train", "validation_matched", "validation_mismatched"}
    assert ds["train"]["label"] == [0, 2]
    assert ds["validation_matched"]["label"] == [1]  # string label mapped to its id
    assert ds["validation_mismatched"]["label"] == [2]
    assert ds["train"].column_names == ["premise", "hypothesis", "label", "idx"]


def test_load_glue_stsb_csv_and_unlabeled_test(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.csv", 'sentence1,sentence2,label,idx\n'
                   '"a cat, big",a dog,3.8,0\nthe mat,a mat,0.5,1\n')
    test = _write(tmp_path / "test.csv", "sentence1,sentence2\nthe film,a film\n")
    ds = load_glue("stsb", {"train": train, "test": test}, cache_dir=tmp_path / "hf")
    assert ds["train"]["sentence1"][0] == "a cat, big"
    assert np.allclose(ds["train"]["label"], [3.8, 0.5])
    assert ds["test"]["label"] == [-1.0] and ds["test"]["idx"] == [0]


def test_load_glue_errors(tmp_path: Path) -> None:
    bad = _write(tmp_path / "train.csv", "question1,label\nwhat ?,1\n")
    with pytest.raises(DataFormatError, match=r"lacks column\(s\) \['question2'\]"):
        load_glue("qqp", {"train": bad}, cache_dir=tmp_path / "hf")
    rte = _write(tmp_path / "rte.csv", "sentence1,sentence2,label\na,b,maybe\n")
    with pytest.raises(DataFormatError, match="'maybe' is neither"):
        load_glue("rte", {"train": rte}, cache_dir=tmp_path / "hf")
    with pytest.raises(DataFormatError, match="reserved"):
        load_glue("rte", {"all": rte})
    with pytest.raises(DataFormatError, match="not found"):
        load_glue("rte", {"train": tmp_path / "missing.csv"})
    with pytest.raises(ValueError, match="not a GLUE task"):
        load_glue("movie_binary")


def test_load_glue_offline_without_files_says_what_to_do(tmp_path: Path) -> None:
    with offline_env(), pytest.raises(DatasetUnavailableError, match="pass local files"):
        load_glue("rte", cache_dir=tmp_path / "hf")


def _cache_glue_sst2(root: Path) -> None:
    """Write GLUE sst2 into a datasets cache at ``root`` in the layout ``load_dataset``
    leaves behind for ``nyu-mll/glue`` (what a user who loaded it once has on disk)."""
    import shutil

    import pandas as pd
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = {}
    for split, n in (("train", 12), ("validation", 6), ("test", 4)):
        files[split] = str(root / f"{split}.parquet")
        pd.DataFrame({"sentence": [f"{split} sentence {i}" for i in range(n)],
                      "label": [-1 if split == "test" else i % 2 for i in range(n)],
                      "idx": list(range(n))}).to_parquet(files[split])
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"]),
                                  "idx": datasets.Value("int32")})
    builder = Parquet(cache_dir=str(root / "build"), dataset_name="glue", config_name="sst2",
                      data_files=files, features=features, hash="0" * 16)
    builder.download_and_prepare()
    (root / "cache" / "nyu-mll___glue").mkdir(parents=True)
    config_dir = next((root / "build" / "glue").iterdir())  # sst2-<hash of the files>
    shutil.move(str(config_dir), str(root / "cache" / "nyu-mll___glue" / "sst2"))


def test_glue_task_from_the_local_datasets_cache(tmp_path: Path, monkeypatch) -> None:
    # what `efficientbert run --task sst2` loads: the registry's spec, offline, from the
    # datasets cache (not efficientbert's asset cache)
    _cache_glue_sst2(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    spec = get_task_spec("sst2")
    with offline_env():
        ds = spec.load(tmp_path / "efficientbert-cache")
    assert ds["train"].num_rows == 12 and ds["validation"].num_rows == 6
    assert list(ds["validation"]["label"]) == [i % 2 for i in range(6)]
    assert spec.final_split == "validation" and spec.train_split == "train"


# ----------------------------------------------------------------------------- SQuAD
SQUAD_ROWS = [
    {"id": "q1", "title": "Paris", "context": "Paris is the capital of France.",
     "question": "what is the capital of France ?",
     "answers": {"text": ["Paris"], "answer_start": [0]}},
    {"id": "q2", "title": "Paris", "context": "The river in Paris was big.",
     "question": "what was big ?", "answers": {"text": ["river"], "answer_start": [4]}},
]


def test_load_squad_v1_jsonl(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "dev.jsonl", SQUAD_ROWS)
    ds = load_squad(1, {"validation": f}, cache_dir=tmp_path / "hf")
    assert ds["validation"]["id"] == ["q1", "q2"]
    assert ds["validation"][1]["answers"] == {"text": ["river"], "answer_start": [4]}
    no_answer = _jsonl(tmp_path / "na.jsonl", [{**SQUAD_ROWS[0], "answers": {
        "text": [], "answer_start": []}}])
    with pytest.raises(DataFormatError, match="version=2"):
        load_squad(1, {"validation": no_answer}, cache_dir=tmp_path / "hf")


def test_load_squad_v2_official_nested_json(tmp_path: Path) -> None:
    doc = {"version": "v2.0", "data": [{"title": "Paris", "paragraphs": [{
        "context": "Paris is the capital of France.",
        "qas": [{"id": "a", "question": "capital ?", "is_impossible": False,
                 "answers": [{"text": "Paris", "answer_start": 0}]},
                {"id": "b", "question": "river ?", "is_impossible": True, "answers": [],
                 "plausible_answers": [{"text": "France", "answer_start": 24}]}]}]}]}
    f = _write(tmp_path / "dev-v2.0.json", json.dumps(doc))
    ds = load_squad(2, {"validation": f}, cache_dir=tmp_path / "hf")["validation"]
    assert ds["id"] == ["a", "b"] and ds["title"] == ["Paris", "Paris"]
    assert ds[1]["answers"] == {"text": [], "answer_start": []}


# ----------------------------------------------------------------------------- tokenization
def test_tokenize_single_and_pair(tmp_path: Path, tokenizer) -> None:  # noqa: ANN001
    sst = _write(tmp_path / "sst.tsv", "sentence\tlabel\tidx\nthe film was fun\t1\t0\n")
    ds = load_glue("sst2", {"train": sst}, cache_dir=tmp_path / "hf")
    tok = tokenize_task(ds, tokenizer, get_task_spec("sst2"), max_length=12)
    row = tok["train"][0]
    assert set(tok["train"].column_names) == {"input_ids", "token_type_ids", "attention_mask",
                                              "label"}
    assert len(row["input_ids"]) == 12 and sum(row["attention_mask"]) == 6
    assert tokenizer.convert_ids_to_tokens(row["input_ids"][:6]) == [
        "[CLS]", "the", "film", "was", "fun", "[SEP]"]
    mnli = _jsonl(tmp_path / "m.jsonl", [{"premise": "the cat sat on the mat",
                                          "hypothesis": "a dog sat", "label": 1, "idx": 7}])
    spec = get_task_spec("mnli")
    pair = tokenize_task(load_glue("mnli", {"train": mnli}, cache_dir=tmp_path / "hf")["train"],
                         tokenizer, spec, max_length=8, keep_columns=("idx",))
    r = pair[0]
    assert len(r["input_ids"]) == 8 and 1 in r["token_type_ids"] and r["idx"] == 7
    assert r["input_ids"][-1] == tokenizer.sep_token_id  # truncated to fit
    with pytest.raises(DataFormatError, match="lacks text column"):
        tokenize_task(pair, tokenizer, spec)


def test_squad_features_round_trip(tmp_path: Path, tokenizer) -> None:  # noqa: ANN001
    ds = load_squad(1, {"validation": _jsonl(tmp_path / "d.jsonl", SQUAD_ROWS)},
                    cache_dir=tmp_path / "hf")["validation"]
    train = tokenize_squad(ds, tokenizer, max_length=16, doc_stride=4, train=True)
    spans = [tokenizer.decode(f["input_ids"][f["start_positions"]: f["end_positions"] + 1])
             for f in train if f["start_positions"] > 0]
    assert set(spans) == {"paris", "river"}
    assert len(train) > len(ds)  # long contexts overflow into several windows
    assert any(f["start_positions"] == 0 for f in train)  # windows without the answer -> CLS
    feats = tokenize_squad(ds, tokenizer, max_length=16, doc_stride=4, train=False)
    assert set(feats["example_id"]) == {"q1", "q2"}
    assert feats[0]["offset_mapping"][0] is None  # [CLS] is not context
    # logits that peak on the gold tokens recover the gold text
    start = np.full((len(feats), 16), -5.0)
    end = np.full((len(feats), 16), -5.0)
    for i, f in enumerate(train):
        if f["start_positions"] > 0:
            start[i, f["start_positions"]] = end[i, f["end_positions"]] = 5.0
    preds = postprocess_squad_predictions(ds, feats, start, end)
    assert preds == {"q1": "Paris", "q2": "river"}
    assert squad_v1_metrics(preds, dict(zip(ds["id"], ds["answers"], strict=True)))["f1"] == 100
    null = postprocess_squad_predictions(ds, feats, start - 20, end - 20, version_2=True)
    start[:, 0] = end[:, 0] = 9.0
    assert postprocess_squad_predictions(ds, feats, start, end, version_2=True) == {
        "q1": "", "q2": ""}
    assert null == preds
    with pytest.raises(ValueError, match="doc_stride"):
        tokenize_squad(ds, tokenizer, max_length=12, doc_stride=8)


# ----------------------------------------------------------------------------- sentiment data
def _rating_file(path: Path, n: int = 300, seed: int = 0) -> tuple[Path, list[str]]:
    rng = random.Random(seed)
    lines = ["1\t2.26666666667\tThe Rock is ''Conan'' and \"huge\" &amp; fun.",
             "2\t-0.3\tA neutral\tline with a tab",
             "3\t0.5\tBorderline positive.", "4\t-0.5\tBorderline negative.",
             "5\t1.5\tA duplicate sentence.", "6\t1.7\tA duplicate  SENTENCE."]
    lines += [f"{i}\t{rng.uniform(-4, 4):.3f}\tsentence number {i} here" for i in range(7, n)]
    _write(path, "\r\n".join(lines))  # CRLF and no final newline, as in the real files
    return path, lines


def test_parse_rating_file_format(tmp_path: Path) -> None:
    path, _ = _rating_file(tmp_path / "movie.txt")
    rows = parse_rating_file(path)
    assert len(rows) == 299
    assert rows[0].text == "The Rock is ''Conan'' and \"huge\" & fun." and rows[0].id == "1"
    assert rows[1].text == "A neutral\tline with a tab" and rows[1].rating == -0.3
    _write(tmp_path / "bad.txt", "1\t0.5\tok\n2 0.7 no tabs\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:2: expected"):
        parse_rating_file(tmp_path / "bad.txt")
    _write(tmp_path / "bad2.txt", "1\tx\tnot a number\n")
    with pytest.raises(DataFormatError, match="not a number"):
        parse_rating_file(tmp_path / "bad2.txt")


def test_binary_and_rating_rules_and_split_determinism(tmp_path: Path) -> None:
    path, lines = _rating_file(tmp_path / "movie.txt")
    rows = parse_rating_file(path)
    binary, rating = make_sentiment_task(rows, "binary"), make_sentiment_task(rows, "rating")
    all_bin = [r for s in binary.values() for r in s.to_list()]
    assert len(all_bin) == sum(abs(r.rating) >= 0.5 for r in rows)
    assert all(r["label"] == int(r["rating"] > 0) for r in all_bin)
    assert {"Borderline positive.", "Borderline negative."} <= {r["sentence"] for r in all_bin}
    assert "A neutral\tline with a tab" not in {r["sentence"] for r in all_bin}
    assert sum(len(s) for s in rating.values()) == len(rows)
    sizes = {k: len(v) for k, v in rating.items()}
    assert sizes["train"] == pytest.approx(0.8 * len(rows), abs=3)
    assert sizes["heldout"] == pytest.approx(0.1 * len(rows), abs=3)
    where = {t: s for s, d in rating.items() for t in d["sentence"]}
    assert where["A duplicate sentence."] == where["A duplicate  SENTENCE."]
    for split, d in binary.items():  # a sentence sits in the same split in both tasks
        assert all(where[t] == split for t in d["sentence"])
    # the split (membership and order) does not depend on the file order
    shuffled = lines[:]
    random.Random(1).shuffle(shuffled)
    again = make_sentiment_task(parse_rating_file(_write(tmp_path / "s.txt",
                                                         "\n".join(shuffled))), "rating")
    assert all(again[s]["sentence"] == rating[s]["sentence"] for s in rating)
    other = make_sentiment_task(rows, "rating", seed=1)
    assert other["test"]["sentence"] != rating["test"]["sentence"]


# ----------------------------------------------------------------------------- assets
def _fake_asset(monkeypatch: pytest.MonkeyPatch, cache: Path, name: str,
                files: dict[str, bytes]) -> Path:
    spec = MANIFEST[name]
    folder = cache / spec.subdir
    folder.mkdir(parents=True, exist_ok=True)
    for fname, data in files.items():
        (folder / fname).write_bytes(data)
    monkeypatch.setitem(MANIFEST, name, AssetSpec(name, spec.subdir, spec.description, {
        f: hashlib.sha256(d).hexdigest() for f, d in files.items()}, spec.optional))
    return folder


def test_ensure_asset_missing_and_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingAssetError, match="efficientbert assets") as info:
        ensure_asset("teacher", cache_dir=tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    folder = _fake_asset(monkeypatch, tmp_path, "movies", {"a.txt": b"hello"})
    assert ensure_asset("movies", cache_dir=tmp_path) == folder
    assert (folder / ".efficientbert-verified.json").is_file()
    (folder / "a.txt").write_bytes(b"tampered")
    with pytest.raises(MissingAssetError, match="sha256 mismatch"):
        ensure_asset("movies", cache_dir=tmp_path)
    monkeypatch.setenv("EFFICIENTBERT_CACHE", str(tmp_path / "env"))
    assert assets.asset_dir("teacher") == tmp_path / "env" / "models/all-MiniLM-L6-v2"
    with pytest.raises(ValueError, match="unknown asset"):
        ensure_asset("bert-large")


def test_offline_env_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    with offline_env():
        assert os.environ["HF_HUB_OFFLINE"] == os.environ["HF_DATASETS_OFFLINE"] == "1"
        assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["TRANSFORMERS_OFFLINE"] == "0"


def test_sentiment_task_and_unlabeled_text_from_cache(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _, lines = _rating_file(tmp_path / "m.txt")
    files = {f: "\r\n".join(lines).encode() for f in (
        "movieReviewSnippets_GroundTruth.txt", "tweets_GroundTruth.txt",
        "amazonReviewSnippets_GroundTruth.txt", "nytEditorialSnippets_GroundTruth.txt")}
    _fake_asset(monkeypatch, tmp_path, "movies", files)
    ds = load_sentiment_task("tweets_binary", cache_dir=tmp_path)
    assert set(ds) == {"train", "heldout", "test"}
    texts = list(iter_unlabeled_text(cache_dir=tmp_path))  # no austen asset: skipped
    assert len(texts) == 4 * 299
    fewer = list(iter_unlabeled_text(cache_dir=tmp_path, exclude_movie_eval=True))
    assert len(fewer) == 3 * 299 + len(load_sentiment_task("movie_rating", tmp_path)["train"])
    with pytest.raises(ValueError, match="unknown embedded task"):
        load_sentiment_task("imdb_binary", cache_dir=tmp_path)


def test_austen_sentence_split() -> None:
    text = ("CHAPTER I\n\n\nIt is a truth universally acknowledged, that a single man\n"
            "must be in want of a wife.  \"My dear Mr. Bennet,\" said his lady, \"have you\n"
            "heard?\" Mr. Bennet replied that he had not.\n\nYes.\n")
    assert austen_sentences(text) == [
        "It is a truth universally acknowledged, that a single man must be in want of a wife.",
        '"My dear Mr. Bennet," said his lady, "have you heard?"',
        "Mr. Bennet replied that he had not."]


# ----------------------------------------------------------------------------- real assets
def _real(name: str) -> Path:
    try:
        return ensure_asset(name)
    except MissingAssetError:
        pytest.skip(f"real '{name}' asset not in the cache; run `efficientbert assets` to test it")


def test_real_movie_task_sizes() -> None:
    _real("movies")
    ds = load_sentiment_task("movie_binary")
    assert sum(len(s) for s in ds.values()) == 10_072
    assert {k: len(v) for k, v in ds.items()} == {"train": 8061, "heldout": 1012, "test": 999}
    assert sum(len(s) for s in load_sentiment_task("movie_rating").values()) == 10_605


@pytest.mark.slow
def test_real_teacher_loads_offline() -> None:
    path = _real("teacher")
    from transformers import AutoModel, AutoTokenizer

    with offline_env():
        model, tok = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    assert model.config.hidden_size == 384 and model.config.num_attention_heads == 12
    assert len(tok) == 30522
