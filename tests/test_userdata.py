"""A user's labelled files as a task: formats, label kinds, splits, names and fingerprints,
GLUE-schema files, truncation counts, and every kind of bad input refused before training."""

from __future__ import annotations

import base64
import csv
import json
import math
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from distill.data import get_task_spec
from distill.errors import DataFileError
from distill.metrics import f1_macro
from distill.userdata import (
    DataFiles,
    register_files,
    task_from_files,
    task_name,
    truncation_report,
)

ROOT = Path(__file__).resolve().parents[1]
WORDS = "good bad great awful fine poor movie film plot actor story dull fun".split()


def rows(n: int, seed: int = 0, classes: tuple = ("neg", "pos")) -> list[tuple[str, object]]:
    """``n`` (text, label) rows over the tiny vocabulary, classes cycling."""
    import random

    rng = random.Random(seed)
    return [(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))),
             classes[i % len(classes)]) for i in range(n)]


def write(path: Path, data: list[tuple], header: tuple = ("text", "label")) -> str:
    """Write rows as .csv / .tsv / .jsonl / .parquet (by suffix); return the path."""
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, delimiter="," if suffix == ".csv" else "\t",
                           quoting=csv.QUOTE_MINIMAL if suffix == ".csv" else csv.QUOTE_NONE)
            w.writerow(header)
            w.writerows(data)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(header, r, strict=True))) + "\n"
                                for r in data), encoding="utf-8")
    else:
        import pandas as pd

        pd.DataFrame(data, columns=list(header)).to_parquet(path)
    return str(path)


def spec_of(tmp_path: Path, **kw):  # noqa: ANN201
    return task_from_files(DataFiles(**kw), cache_dir=tmp_path / "cache")


# ----------------------------------------------------------------------------- the task
def test_csv_classification_with_a_stratified_seeded_cut(tmp_path: Path) -> None:
    data = rows(90, classes=("pos", "neg", "neg", "neu", "neg", "neg"))  # 15 pos, 60 neg, 15 neu
    train = write(tmp_path / "reviews.csv", data)
    spec = spec_of(tmp_path, train_file=train)
    assert spec.name.startswith("reviews-") and len(spec.name) == len("reviews-") + 12
    assert spec.label_names == ("neg", "neu", "pos")  # sorted, not first-seen (pos, neg, neu)
    assert spec.metric_names == ("accuracy", "f1_macro") and spec.num_labels == 3
    assert (spec.eval_splits, spec.test_splits, spec.final_split) == (("validation",), (),
                                                                      "validation")
    ds = spec.load()
    held = ds["validation"]
    assert len(held) == math.ceil(0.1 * 90) and len(ds["train"]) == 90 - len(held)
    counts = Counter(list(held["label"]))  # stratified: each class within one row of 10 %
    for cls, n in Counter(label for _, label in data).items():
        assert abs(counts[spec.label_names.index(cls)] - 0.1 * n) <= 1
    assert sorted(list(ds["train"]["text"]) + list(held["text"])) == sorted(t for t, _ in data)
    assert any(f"{len(held)} rows (10%) of train held out" in n for n in spec.notes)
    assert "no test file: validation is the final split" in spec.notes
    other = spec_of(tmp_path, train_file=train, seed=1)  # another seed, another cut
    assert other.name != spec.name
    assert list(other.load()["validation"]["text"]) != list(held["text"])
    assert spec_of(tmp_path, train_file=train) is spec  # same files and settings: same task


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_gives_the_same_rows(tmp_path: Path, suffix: str) -> None:
    train, dev = rows(40, 1), rows(12, 2)
    spec = spec_of(tmp_path, train_file=write(tmp_path / f"train{suffix}", train),
                   validation_file=write(tmp_path / f"dev{suffix}", dev),
                   test_file=write(tmp_path / f"test{suffix}", rows(10, 3)))
    ds = spec.load()
    assert list(ds["train"]["text"]) == [t for t, _ in train]
    assert list(ds["validation"]["label"]) == [spec.label_names.index(y) for _, y in dev]
    assert spec.final_split == "test" and spec.metric_names == ("accuracy", "f1")
    assert not any("final split" in n for n in spec.notes)


def test_label_kinds_and_the_task_type_override(tmp_path: Path) -> None:
    ints = write(tmp_path / "ints.jsonl", rows(30, classes=(10, 9, 2)))
    assert spec_of(tmp_path, train_file=ints).label_names == ("2", "9", "10")  # numeric order
    floats = write(tmp_path / "floats.csv", [(t, i / 7) for i, (t, _) in enumerate(rows(30))])
    reg = spec_of(tmp_path, train_file=floats)
    assert reg.is_regression and reg.num_labels == 1 and reg.label_names == ()
    assert reg.metric_names == ("pearson", "spearman")
    assert reg.load()["train"].features["label"].dtype == "float32"
    forced = spec_of(tmp_path, train_file=ints, task_type="regression")
    assert forced.is_regression and sorted(set(forced.load()["train"]["label"])) == [2, 9, 10]
    binary_floats = write(tmp_path / "bf.jsonl", rows(30, classes=(0.0, 1.0)))
    assert spec_of(tmp_path, train_file=binary_floats).is_regression  # run_glue: floats
    cls = spec_of(tmp_path, train_file=binary_floats, task_type="classification")
    assert cls.label_names == ("0", "1") and cls.metric_names == ("accuracy", "f1")


def test_pairs_and_the_guessed_text_column(tmp_path: Path) -> None:
    data = [(a, b, y) for (a, y), (b, _) in zip(rows(30, 1), rows(30, 2), strict=True)]
    path = write(tmp_path / "pairs.csv", data, ("premise", "hypothesis", "label"))
    spec = spec_of(tmp_path, train_file=path, text_column="premise",
                   text_pair_column="hypothesis")
    assert spec.text_columns == ("premise", "hypothesis") and spec.is_pair
    guessed = spec_of(tmp_path, train_file=write(tmp_path / "s.csv", rows(20),
                                                 ("sentence", "label")))
    assert guessed.text_columns == ("sentence",)


def test_f1_macro_matches_scikit_learn() -> None:
    sklearn = pytest.importorskip("sklearn.metrics")
    y = [0, 1, 2, 2, 1, 0, 2, 2, 1, 3]
    p = [0, 2, 2, 2, 1, 0, 1, 2, 1, 0]
    assert f1_macro(p, y) == pytest.approx(sklearn.f1_score(y, p, average="macro"))


def test_truncation_is_counted_per_split(tmp_path: Path, teacher_dir: str) -> None:
    from transformers import AutoTokenizer

    train, dev = rows(40, 1), rows(15, 2)
    spec = spec_of(tmp_path, train_file=write(tmp_path / "t.csv", train),
                   validation_file=write(tmp_path / "d.csv", dev), max_length=7)
    report = truncation_report(spec, AutoTokenizer.from_pretrained(teacher_dir))
    for split, data in (("train", train), ("validation", dev)):
        tokens = [len(t.split()) + 2 for t, _ in data]  # one token per word, [CLS] and [SEP]
        assert report[split].truncated == sum(n > 7 for n in tokens) > 0
        assert (report[split].rows, report[split].longest) == (len(data), max(tokens))


# ----------------------------------------------------------------------------- names, caches
def test_the_name_and_spec_carry_over_to_a_fresh_process(tmp_path: Path) -> None:
    files = DataFiles(write(tmp_path / "train.csv", rows(30)), heldout_fraction=0.2)
    spec = task_from_files(files, cache_dir=tmp_path / "cache")
    blob = base64.b64encode(pickle.dumps(spec)).decode()
    code = ("import base64, json, pickle, sys; from distill.userdata import register_files; "
            "from distill.data import get_task_spec; "
            "name = register_files(json.loads(sys.argv[1]), sys.argv[3]).name; "
            "spec = pickle.loads(base64.b64decode(sys.argv[2])); "
            "print(json.dumps([name, get_task_spec(name).name, "
            "list(spec.load(sys.argv[3])['validation']['text'])]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(files.to_dict()), blob,
                          str(tmp_path / "cache")], cwd=ROOT, check=True, capture_output=True,
                         text=True, timeout=120)
    name, found, held = json.loads(out.stdout.strip().splitlines()[-1])
    assert name == found == spec.name == task_name(files)
    assert held == list(spec.load()["validation"]["text"])
    assert register_files(files.to_dict()) is get_task_spec(spec.name)


def test_teacher_cache_key_follows_the_file_contents(tmp_path: Path, teacher_dir: str) -> None:
    from distill.teacher import finetuned_teacher_dir

    a = tmp_path / "a" / "train.csv"
    b = tmp_path / "b" / "train.csv"
    for p, seed in ((a, 1), (b, 2)):
        p.parent.mkdir()
        write(p, rows(30, seed))
    specs = [spec_of(tmp_path, train_file=str(p)) for p in (a, b)]
    folders = [finetuned_teacher_dir(s.name, teacher_dir, cache_dir=tmp_path)[0] for s in specs]
    assert specs[0].name != specs[1].name and folders[0] != folders[1]
    again, settings = finetuned_teacher_dir(specs[0].name, teacher_dir, cache_dir=tmp_path)
    assert again == folders[0] and settings["data_fingerprint"] == specs[0].data_fingerprint


# ----------------------------------------------------------------------------- GLUE schema
def test_glue_files_in_the_official_schema(tmp_path: Path) -> None:
    train = write(tmp_path / "train.tsv", [(t, i % 2, i) for i, (t, _) in enumerate(rows(30))],
                  ("sentence", "label", "idx"))
    dev = write(tmp_path / "dev.tsv", [(t, ("negative", "positive")[i % 2], i)
                                       for i, (t, _) in enumerate(rows(10, 2))],
                ("sentence", "label", "idx"))
    spec = spec_of(tmp_path, train_file=train, validation_file=dev, task="sst2")
    assert spec.name.startswith("sst2-") and spec.final_split == "validation"
    assert spec.label_names == ("negative", "positive") and spec.metric_names == ("accuracy",)
    assert list(spec.load()["validation"]["label"]) == [i % 2 for i in range(10)]
    assert get_task_spec("sst2").final_split == "validation"  # hub/cache GLUE: the same
    assert get_task_spec("sst2").test_splits == ()
    test = write(tmp_path / "test.tsv", [(t, -1, i) for i, (t, _) in enumerate(rows(5))],
                 ("sentence", "label", "idx"))
    with pytest.raises(DataFileError, match="5 row.*no label.*GLUE's test labels"):
        spec_of(tmp_path, train_file=train, validation_file=dev, test_file=test, task="sst2")
    with pytest.raises(DataFileError, match="schema of a GLUE task"):
        DataFiles(train, task="movie_binary")
    pairs = [(a, b, round(i / 6, 3), i) for i, ((a, _), (b, _)) in
             enumerate(zip(rows(24, 1), rows(24, 2), strict=True))]
    header = ("sentence1", "sentence2", "label", "idx")
    stsb = spec_of(tmp_path, train_file=write(tmp_path / "sts.csv", pairs, header),
                   task="stsb")
    assert stsb.is_regression and stsb.metric_names == ("pearson", "spearman")
    assert stsb.text_columns == ("sentence1", "sentence2")
    unlabelled = write(tmp_path / "sts_test.csv", [(a, b, -1.0, i) for a, b, _, i in pairs],
                       header)
    with pytest.raises(DataFileError, match="24 row.*no label"):
        spec_of(tmp_path, train_file=str(tmp_path / "sts.csv"), test_file=unlabelled,
                task="stsb")


# ----------------------------------------------------------------------------- bad input
def test_missing_empty_and_unreadable_files(tmp_path: Path) -> None:
    good = write(tmp_path / "good.csv", rows(20))
    with pytest.raises(DataFileError, match="validation file not found: .*nope.csv"):
        spec_of(tmp_path, train_file=good, validation_file=tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataFileError, match="empty.csv is empty"):
        spec_of(tmp_path, train_file=tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("text,label\n")
    with pytest.raises(DataFileError, match="header.csv has no rows"):
        spec_of(tmp_path, train_file=tmp_path / "header.csv")
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataFileError, match="unsupported file type '.xlsx'"):
        spec_of(tmp_path, train_file=tmp_path / "data.xlsx")
    text = "text,label\ngood film,pos\nbad film,neg\n"
    prefix = (text + "caf").encode()
    (tmp_path / "latin1.csv").write_bytes(prefix + "é,pos\n".encode("latin-1"))
    with pytest.raises(DataFileError, match=f"latin1.csv is not UTF-8: invalid byte 0xe9 at "
                                            f"byte offset {len(prefix)}"):
        spec_of(tmp_path, train_file=tmp_path / "latin1.csv")


def test_missing_columns_are_named_with_the_columns_present(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", rows(20), ("review", "stars"))
    with pytest.raises(DataFileError, match=r"no text column 'text'; columns present: "
                                            r"\['review', 'stars'\]"):
        spec_of(tmp_path, train_file=path, text_column="text", label_column="stars")
    with pytest.raises(DataFileError, match=r"no label column 'label'.*\['review', 'stars'\]"):
        spec_of(tmp_path, train_file=path, text_column="review")
    with pytest.raises(DataFileError, match="which column holds the text"):
        spec_of(tmp_path, train_file=path, label_column="stars")


def test_labels_unseen_in_train_single_class_and_non_numeric(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", rows(20))
    dev = write(tmp_path / "dev.csv", rows(9, classes=("neg", "pos", "meh")))
    with pytest.raises(DataFileError, match=r"dev.csv: label\(s\) \['meh'\].*not seen in train"):
        spec_of(tmp_path, train_file=train, validation_file=dev)
    one = write(tmp_path / "one.csv", rows(20, classes=("pos",)))
    with pytest.raises(DataFileError, match="a single class \\('pos'\\)"):
        spec_of(tmp_path, train_file=one)
    with pytest.raises(DataFileError, match="label column 'label' is not numeric \\(row 1 "
                                            "holds 'neg'\\)"):
        spec_of(tmp_path, train_file=train, task_type="regression")
    data = rows(20)
    data[4] = (data[4][0], "")
    with pytest.raises(DataFileError, match="1 row\\(s\\) have no label.*rows 5,"):
        spec_of(tmp_path, train_file=write(tmp_path / "nolabel.csv", data))


def test_empty_texts_are_refused_or_dropped_and_counted(tmp_path: Path) -> None:
    data = rows(30)
    data[3], data[7] = ("", "pos"), ("   ", "neg")
    path = write(tmp_path / "t.csv", data)
    with pytest.raises(DataFileError, match=r"refused: 2 row\(s\) have an empty or missing "
                                            r"text .*rows 4, 8.*--drop-empty-texts"):
        spec_of(tmp_path, train_file=path)
    jsonl = tmp_path / "nulls.jsonl"  # JSON null (NaN) texts
    jsonl.write_text("".join(json.dumps({"text": None if i in (0, 5, 6) else t, "label": y})
                             + "\n" for i, (t, y) in enumerate(rows(30))))
    with pytest.raises(DataFileError, match="refused: 3 row"):
        spec_of(tmp_path, train_file=jsonl)
    spec = spec_of(tmp_path, train_file=path, drop_empty_texts=True)
    ds = spec.load()
    assert len(ds["train"]) + len(ds["validation"]) == 28
    assert "dropped 2 row(s) with an empty text from the train file (28 kept)" in spec.notes


def test_bad_settings_are_refused() -> None:
    for kw, msg in (({"task_type": "ranking"}, "task_type must be"),
                    ({"heldout_fraction": 1.5}, "heldout_fraction"),
                    ({"max_length": 1}, "max_length")):
        with pytest.raises(DataFileError, match=msg):
            DataFiles("x.csv", **kw)
    with pytest.raises(DataFileError, match="unknown data-file setting"):
        DataFiles.from_dict({"train_file": "x.csv", "txt_column": "a"})
    with pytest.raises(DataFileError, match="train_file"):
        DataFiles.from_dict({"label_column": "y"})
    assert issubclass(DataFileError, ValueError)


def test_data_files_record(tmp_path: Path) -> None:
    files = DataFiles(tmp_path / "a.csv", max_length=64, task_type="regression")
    assert files == DataFiles(train_file=str(tmp_path / "a.csv"), max_length=64,
                              task_type="regression")
    assert files.train_file == str((tmp_path / "a.csv").resolve())
    assert DataFiles.from_dict(files.to_dict()) == files
    assert list(files.to_dict()) == list(DataFiles.model_fields)
    props = DataFiles.model_json_schema()["properties"]
    assert set(props) == set(DataFiles.model_fields)
    assert all(p.get("description") for p in props.values())


# ----------------------------------------------------------------------------- the commands
def test_cli_refuses_bad_data_before_training(tmp_path: Path, capsys, teacher_dir) -> None:
    from searcher.cli import main

    assert main(["teacher", "--text-column", "review"]) == 2
    assert "--text-column need(s) --train-file" in capsys.readouterr().err
    path = write(tmp_path / "t.csv", rows(20), ("review", "stars"))
    argv = ["distill", "--student", "student_tiny", "--train-file", path, "--text-column",
            "review", "--teacher-dir",
            teacher_dir, "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bad input" in err and "no label column 'label'" in err and "Traceback" not in err


def test_teacher_command_on_a_csv(tmp_path: Path, capsys, teacher_dir) -> None:
    from distill.predict import Predictor
    from searcher.cli import main

    path = write(tmp_path / "mine.csv", rows(40, classes=("bad", "good")), ("review", "y"))
    assert main(["teacher", "--train-file", path, "--text-column", "review", "--label-column",
                 "y", "--teacher-dir", teacher_dir, "--cache-dir", str(tmp_path / "c"),
                 "--epochs", "1", "--batch-size", "16", "--no-outputs", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "final split validation" in out and "no test file" in out
    folder = next(line.split(": ", 1)[1] for line in out.splitlines()
                  if line.startswith("fine-tuned teacher:"))
    assert Path(folder).name.startswith("mine-")
    rows_ = Predictor.from_pretrained(folder).predict(["good film", "bad plot"])
    assert {r["label"] for r in rows_} <= {"bad", "good"}
