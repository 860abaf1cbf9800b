"""Using a saved model: predict (student and Hugging Face folders) against a plain forward
pass per sentence, export (torch.export and ONNX) against the student, the artifacts loaded
in a process without this package, and the two commands."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SPECIAL, WORDS, sentences

from distill.config import StudentConfig
from distill.errors import CheckpointError, DataFileError, ExportError
from distill.export import INPUTS, example_inputs, export
from distill.pipeline import save_student
from distill.predict import Predictor, read_label_names
from distill.student import Student

NAMES = ("negative", "positive")
LAYERS = [("W2(relu(W1(x) * x))", 2, 8), ("W3(silu(W1(x)) * W2(x))", 1, 16)]


def tiny_student(num_labels: int = 2, regression: bool = False, seed: int = 0) -> Student:
    cfg = StudentConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden=24, heads=4,
                        max_position=40, layers=list(LAYERS), num_labels=num_labels,
                        is_regression=regression)
    return Student(cfg, seed=seed).eval()


def reference_logits(student: Student, tokenizer, texts, pairs=None) -> torch.Tensor:
    """One unpadded forward pass per text (no batching, no mask)."""
    out = []
    with torch.no_grad():
        for i, t in enumerate(texts):
            enc = tokenizer(t, *([pairs[i]] if pairs else []), return_tensors="pt")
            out.append(student(enc["input_ids"], enc["attention_mask"],
                               enc["token_type_ids"]).logits[0])
    return torch.stack(out)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny batches: one thread (two threads on a shared, busy machine cost ~5 ms a matmul)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, teacher_dir: str) -> Path:
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("student")
    save_student(folder, tiny_student(), None, AutoTokenizer.from_pretrained(teacher_dir),
                 label_names=NAMES)
    return folder


# ----------------------------------------------------------------------------- predict
def test_predict_matches_a_plain_forward_pass(student_dir: Path) -> None:
    texts, _ = sentences(37, seed=5)
    p = Predictor.from_pretrained(student_dir)
    assert p.label_names == NAMES == read_label_names(student_dir)
    want = reference_logits(Student.from_pretrained(student_dir).eval(), p.tokenizer, texts)
    for batch_size in (1, 32):  # padding to the batch's longest row changes nothing
        assert (p.logits(texts, batch_size=batch_size) - want).abs().max() <= 1e-5
    rows = p.predict(texts, batch_size=8)
    probs = want.softmax(-1)
    for row, pr in zip(rows, probs, strict=True):
        top = int(pr.argmax())
        assert row["label"] == NAMES[top] and row["score"] == pytest.approx(float(pr[top]),
                                                                            abs=1e-5)
        assert list(row["probabilities"]) == list(NAMES)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)


def test_predict_pairs_and_regression(tmp_path: Path, teacher_dir: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    student = tiny_student(num_labels=1, regression=True, seed=3)
    save_student(tmp_path, student, None, tok)
    a, _ = sentences(9, seed=1)
    b, _ = sentences(9, seed=2)
    p = Predictor.from_pretrained(tmp_path)
    want = reference_logits(student, tok, a, b)[:, 0]
    rows = p.predict(a, b, batch_size=4)
    assert [r["label"] for r in rows] == [None] * 9 and all(not r["probabilities"] for r in rows)
    assert np.abs(np.array([r["score"] for r in rows]) - want.numpy()).max() <= 1e-5


def test_predict_with_a_hugging_face_folder(teacher_dir: str) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts, _ = sentences(11, seed=4)
    p = Predictor.from_pretrained(teacher_dir)
    assert p.label_names == ("LABEL_0", "LABEL_1")  # transformers' default names
    hf = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    enc = AutoTokenizer.from_pretrained(teacher_dir)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = hf(**enc).logits
    assert (p.logits(texts, batch_size=3) - want).abs().max() <= 1e-5


def test_predict_refuses_folders_it_cannot_use(tmp_path: Path, student_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        Predictor.from_pretrained(tmp_path)
    bare = tmp_path / "bare"
    tiny_student().save_pretrained(bare)
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        Predictor.from_pretrained(bare)
    (bare / "labels.json").write_text(json.dumps({"label_names": ["a", "b", "c"]}))
    with pytest.raises(CheckpointError, match="3 label names for 2 outputs"):
        Predictor.from_pretrained(bare)


# ----------------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def artifacts(student_dir: Path, tmp_path_factory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("export")
    return {fmt: export(student_dir, fmt, out / name)
            for fmt, name in (("torch-export", "model.pt2"), ("onnx", "model.onnx"))}


def test_torch_export_matches_the_student(artifacts, student_dir: Path) -> None:
    res = artifacts["torch-export"]
    assert res.checked_with == "torch.export.load" and res.max_abs_diff <= 1e-5
    program = torch.export.load(str(res.path)).module()
    student = Student.from_pretrained(student_dir).eval()
    for b, t in ((1, 2), (5, 17), (2, 40)):  # dynamic batch and sequence length
        args = example_inputs(student.config.vocab_size, b, t, seed=b + t)
        with torch.no_grad():
            want = student(*args).logits
        assert (program(*args) - want).abs().max() <= 1e-5
    meta = json.loads(Path(f"{res.path}.json").read_text())
    assert meta["label_names"] == list(NAMES) and meta["inputs"] == list(INPUTS)


def test_onnx_matches_the_student(artifacts, student_dir: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    res = artifacts["onnx"]
    assert res.checked_with == "onnxruntime" and res.max_abs_diff <= 1e-5
    session = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    student = Student.from_pretrained(student_dir).eval()
    for b, t in ((1, 3), (6, 23)):
        args = example_inputs(student.config.vocab_size, b, t, seed=b * t)
        got = session.run(["logits"], {n: a.numpy() for n, a in zip(INPUTS, args, strict=True)})
        with torch.no_grad():
            assert np.abs(got[0] - student(*args).logits.numpy()).max() <= 1e-5


def test_artifacts_run_without_this_package(artifacts, tmp_path: Path) -> None:
    args = example_inputs(len(SPECIAL) + len(WORDS), 4, 13, seed=7)
    np.savez(tmp_path / "in.npz", *(a.numpy() for a in args))
    want = torch.export.load(str(artifacts["torch-export"].path)).module()(*args)
    code = f"""
import sys
for name in ("mlpgraph", "distill", "searcher"):
    sys.modules[name] = None  # importing any of them now fails
import numpy as np, torch
arrays = np.load({str(tmp_path / 'in.npz')!r})
args = [torch.from_numpy(arrays[f"arr_{{i}}"]) for i in range(3)]
out = {{"torch": torch.export.load({str(artifacts['torch-export'].path)!r}).module()(*args)
        .detach().numpy().tolist()}}
try:
    import onnxruntime
    s = onnxruntime.InferenceSession({str(artifacts['onnx'].path)!r})
    feed = dict(zip(("input_ids", "attention_mask", "token_type_ids"), (a.numpy() for a in args)))
    out["onnx"] = s.run(["logits"], feed)[0].tolist()
except ImportError:
    pass
import json; print(json.dumps(out))
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True,
                         capture_output=True, text=True, timeout=120)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for fmt, values in got.items():
        assert np.abs(np.array(values) - want.detach().numpy()).max() <= 1e-5, fmt


def test_export_refusals(student_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export(student_dir, "tflite", tmp_path / "m")
    with pytest.raises(ExportError, match=f"ending in .onnx, e.g. {tmp_path}/model.onnx"):
        export(student_dir, "onnx", tmp_path)
    with pytest.raises(ExportError, match="ending in .pt2, e.g. .*model.pt2"):
        export(student_dir, "torch-export", tmp_path / "model.onnx")


# ----------------------------------------------------------------------------- commands
def test_predict_command_table_and_files(student_dir: Path, tmp_path: Path, capsys) -> None:
    from searcher.cli import main

    texts, _ = sentences(5, seed=9)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main(["predict", str(student_dir), "--text", texts[0], "--text", texts[1]]) == 0
    out = capsys.readouterr().out
    assert "p(negative)" in out and texts[0][:20] in out
    src = tmp_path / "in.csv"
    with open(src, "w", newline="") as fh:
        csv.writer(fh).writerows([("review",), *((t,) for t in texts)])
    want = Predictor.from_pretrained(student_dir).predict(texts)
    for name in ("out.jsonl", "out.csv"):
        assert main(["predict", str(student_dir), "--file", str(src), "--text-column",
                     "review", "--out", str(tmp_path / name), *cache]) == 0
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [x["text"] for x in lines] == texts and [x["label"] for x in lines] == \
        [w["label"] for w in want]
    with open(tmp_path / "out.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["text", "label", "score", "p_negative", "p_positive"]
    assert [float(r["score"]) for r in table] == pytest.approx([w["score"] for w in want])
    assert main(["predict", str(student_dir), "--file", str(src), *cache]) == 2
    assert "which column holds the text" in capsys.readouterr().err
    with pytest.raises(DataFileError):  # the handler raises; main maps it to exit code 2
        from distill.cli_use import _inputs

        _inputs(type("A", (), {"text": ["a"], "text_pair": ["x", "y"], "text_column": None,
                               "text_pair_column": None})())


def test_export_command(student_dir: Path, tmp_path: Path, capsys) -> None:
    from searcher.cli import main

    out = tmp_path / "m.pt2"
    assert main(["export", str(student_dir), "--format", "torch-export", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "checked with torch.export.load" in text
    assert main(["export", str(student_dir), "--format", "onnx", "--out", str(tmp_path)]) == 2
