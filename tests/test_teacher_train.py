"""Teacher loading / score capture / output cache, the training loops, and score().

Everything is offline and tiny: a random BertModel built from a config, a 40-word
WordPiece vocabulary, synthetic sentences. No assets are needed.
"""

from __future__ import annotations

import math

import datasets
import numpy as np
import pytest
import torch
from conftest import SPECIAL, WORDS, sentences, tiny_bert_config
from transformers import (
    BertModel,
    MPNetConfig,
    MPNetModel,
)

from distill.config import StudentConfig
from distill.encode import EncodedTexts, batch_order, encode_texts
from distill.loop import TrainConfig, train_loop
from distill.losses import KDLoss, KDWeights
from distill.scoring import ScoreBudget, clear_caches, score
from distill.student import Student
from distill.supernet import Supernet
from distill.teacher import (
    LiveTeacher,
    ScoreRecorder,
    finetune_teacher,
    finetuned_teacher_dir,
    init_student_from_teacher,
    load_teacher,
    load_tokenizer,
    teacher_forward,
    teacher_info,
)
from distill.teacher_cache import cache_teacher_outputs
from distill.train import (
    distill,
    evaluate,
    evaluate_kd,
    finetune,
    general_distill,
    random_sampler,
    save_fit_dense,
)

FFN = "W2(gelu(W1(x)))"


@pytest.fixture(scope="module")
def encoded(teacher_dir) -> EncodedTexts:
    texts, labels = sentences(24, seed=1)
    return encode_texts(load_tokenizer(teacher_dir), texts, max_length=16, labels=labels)


def tiny_student_config(**kw) -> StudentConfig:
    base = {"vocab_size": len(SPECIAL) + len(WORDS), "hidden": 16, "heads": 4,
            "max_position": 40, "layers": [(FFN, 1, 32), (FFN, 1, 32)]}
    return StudentConfig(**{**base, **kw})


# ----------------------------------------------------------------------------- teacher
@pytest.mark.parametrize("family", ["bert", "mpnet"])
def test_pre_softmax_scores_match_hand_computation(family):
    torch.manual_seed(0)
    if family == "bert":
        model = BertModel(tiny_bert_config()).eval()
    else:
        cfg = MPNetConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=48, max_position_embeddings=40)
        cfg._attn_implementation = "eager"
        model = MPNetModel(cfg).eval()
    ids = torch.randint(5, 35, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    with torch.no_grad(), ScoreRecorder(model) as rec:
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True,
                    output_hidden_states=True)
        scores = rec.scores(mask)
    assert len(scores) == 2 and scores[0].shape == (3, 4, 9, 9)
    for layer, (s, probs) in enumerate(zip(scores, out.attentions, strict=True)):
        for b in range(3):
            n = int(mask[b].sum())
            torch.testing.assert_close(s[b, :, :n, :n].softmax(-1), probs[b, :, :n, :n],
                                       atol=1e-6, rtol=1e-5)
            assert (s[b, :, :, n:] <= -1e4).all() and (s[b, :, n:, :] <= -1e4).all()
        if family == "bert":  # q k^T / sqrt(d) from the weights by hand
            att = model.encoder.layer[layer].attention.self
            h = out.hidden_states[layer]
            q = (h @ att.query.weight.T + att.query.bias).view(3, 9, 4, 8).transpose(1, 2)
            k = (h @ att.key.weight.T + att.key.bias).view(3, 9, 4, 8).transpose(1, 2)
            hand = q @ k.transpose(-1, -2) / math.sqrt(8)
            n = int(mask[1].sum())
            torch.testing.assert_close(s[1, :, :n, :n], hand[1, :, :n, :n])


def test_teacher_outputs_cache_round_trip(teacher_dir, encoded, tmp_path, monkeypatch):
    teacher = load_teacher(teacher_dir)
    assert type(teacher).__name__ == "BertForSequenceClassification"
    cached = cache_teacher_outputs(teacher_dir, encoded, hidden_layers=[0, 2],
                                   attention_layers=[2], cache_dir=tmp_path, batch_size=5,
                                   progress=False)
    assert len(cached) == len(encoded) and cached.logits.shape == (len(encoded), 2)
    rows = np.array([3, 0, 17, 9])
    batch = encoded.batch(rows)
    got = cached.targets(rows, batch)
    with ScoreRecorder(teacher) as rec:
        live = teacher_forward(teacher, batch, rec)
    keep = batch["attention_mask"].bool()
    assert got["hidden_states"][1] is None and got["attention_scores"][0] is None
    for layer in (0, 2):
        torch.testing.assert_close(got["hidden_states"][layer][keep],
                                   live["hidden_states"][layer][keep], atol=2e-2, rtol=2e-3)
    both = keep[:, None, :, None] & keep[:, None, None, :]
    torch.testing.assert_close(got["attention_scores"][1].expand(-1, 4, -1, -1)[both.expand(
        -1, 4, -1, -1)], live["attention_scores"][1][both.expand(-1, 4, -1, -1)],
        atol=2e-2, rtol=2e-3)
    torch.testing.assert_close(got["logits"], live["logits"])
    sub = cached.subset([17, 9])  # a view: indices are relative to it
    torch.testing.assert_close(sub.targets(np.array([0]), encoded.batch([17]))["logits"],
                               live["logits"][2:3])
    assert sub.inputs.fingerprint() == encoded.subset([17, 9]).fingerprint()

    def boom(*a, **k):
        raise AssertionError("cache not reused")
    monkeypatch.setattr("distill.teacher.teacher_forward", boom)
    again = cache_teacher_outputs(teacher_dir, encoded, hidden_layers=[0, 2],
                                  attention_layers=[2], cache_dir=tmp_path, progress=False)
    assert again.folder == cached.folder


def test_finetune_teacher_once_then_reuse(teacher_dir, tmp_path, monkeypatch):
    texts, labels = sentences(32, seed=7)
    data = {"train": datasets.Dataset.from_dict({"sentence": texts, "label": labels}),
            "heldout": datasets.Dataset.from_dict({"sentence": texts[:8], "label": labels[:8]})}
    kw = {"teacher_dir": teacher_dir, "batch_size": 8, "cache_dir": tmp_path, "data": data,
          "progress": False}
    folder = finetune_teacher("movie_binary", **kw)
    info = teacher_info(folder)
    assert info["steps"] == 4 and 0 <= info["metrics"]["heldout"]["accuracy"] <= 1
    assert type(load_teacher(folder)).__name__ == "BertForSequenceClassification"

    def boom(*a, **k):
        raise AssertionError("fine-tuned twice")
    monkeypatch.setattr("distill.teacher.finetune", boom)
    assert finetune_teacher("movie_binary", **kw) == folder
    other, _ = finetuned_teacher_dir("movie_binary", teacher_dir, lr=1e-4, cache_dir=tmp_path,
                                     data=data)
    assert other != folder


def test_student_init_from_teacher(teacher_dir):
    teacher = load_teacher(teacher_dir)
    student = Student(tiny_student_config(embedding_size=8, trigram=True), seed=0)
    fit = torch.nn.Linear(16, 32)
    init_student_from_teacher(student, teacher, fit)
    word_t = teacher.get_input_embeddings().weight
    vh = torch.linalg.svd(word_t.detach(), full_matrices=False).Vh
    torch.testing.assert_close(student.embeddings.word.weight, word_t.detach() @ vh[:8].T)
    torch.testing.assert_close(fit.weight, vh[:16].T)


# ----------------------------------------------------------------------------- training
def test_batch_order_covers_every_example_once():
    lengths = np.random.default_rng(0).integers(1, 30, 203)
    for group in (True, False):
        batches = batch_order(lengths, 8, seed=3, epoch=1, group_by_length=group)
        assert len(batches) == math.ceil(203 / 8)
        assert sorted(np.concatenate(batches).tolist()) == list(range(203))
        again = batch_order(lengths, 8, seed=3, epoch=1, group_by_length=group)
        assert all((a == b).all() for a, b in zip(batches, again, strict=True))


def test_kd_steps_reduce_loss(teacher_dir, encoded):
    teacher = load_teacher(teacher_dir)
    data = encoded.subset(range(8))
    cfg = tiny_student_config(dropout=0.0, attention_dropout=0.0)
    student = Student(cfg, seed=0)
    kd = KDLoss.for_models(cfg, teacher.config, weights=KDWeights.task())
    result = distill(student, LiveTeacher(teacher, data), kd, TrainConfig(
        max_steps=40, batch_size=8, lr=3e-3, warmup_ratio=0.0, log_every=1, progress=False))
    losses = [h["total"] for h in result.history]
    assert not result.diverged and result.steps == 40
    assert losses[-1] < 0.6 * losses[0], losses[::8]
    assert all(h["attention"] > 0 and h["prediction"] > 0 for h in result.history)


def test_evaluate_kd_against_one_plain_batch(teacher_dir, encoded):
    """Sorted batches give the row-weighted mean of the terms; one batch of every row is the
    plain reference, and teacher_kl is the KL of the two softmaxes computed by hand."""
    teacher = load_teacher(teacher_dir)
    cfg = tiny_student_config()
    student = Student(cfg, seed=1).eval()
    with torch.no_grad():  # logits far from the random teacher's, so the KL is not ~0
        student.classifier.weight.normal_(0, 1, generator=torch.Generator().manual_seed(0))
    kd = KDLoss.for_models(cfg, teacher.config, weights=KDWeights.task())
    live = LiveTeacher(teacher, encoded)
    whole = evaluate_kd(student, live, kd, batch_size=len(encoded))
    rows = np.arange(len(encoded))
    batch = encoded.batch(rows, torch.device("cpu"))
    with torch.no_grad():
        out = student(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        t = live.targets(rows, batch)
        terms = kd(out, t, batch["attention_mask"], skip_hidden_padding=True)
    assert whole["kd_loss"] == pytest.approx(float(terms["total"]), rel=1e-5)
    assert whole["kd_attention"] == pytest.approx(float(terms["attention"]), rel=1e-5)
    s_log = out.logits.double().numpy()
    t_log = t["logits"].double().numpy()
    ps = np.exp(s_log - s_log.max(1, keepdims=True))
    ps /= ps.sum(1, keepdims=True)
    pt = np.exp(t_log - t_log.max(1, keepdims=True))
    pt /= pt.sum(1, keepdims=True)
    assert whole["teacher_kl"] == pytest.approx((pt * np.log(pt / ps)).sum(1).mean(), rel=1e-4)
    with_metrics = evaluate_kd(student, live, kd, batch_size=5, metric_names=("accuracy", "f1"))
    plain = evaluate(student, encoded, ("accuracy", "f1"))  # the same forward, reordered
    assert {k: with_metrics[k] for k in plain} == pytest.approx(plain)
    small = evaluate_kd(student, live, kd, batch_size=5)  # other batches, same kind of number
    assert small["teacher_kl"] == pytest.approx(whole["teacher_kl"], rel=1e-4)
    assert small["kd_loss"] == pytest.approx(whole["kd_loss"], rel=0.5)


def test_common_noise_repeats_the_dropout_of_each_step(teacher_dir, encoded):
    """With reseed_every_step, a step's noise depends on (seed, step) only: a run continued
    after other random draws matches an uninterrupted one."""
    teacher = load_teacher(teacher_dir)
    cfg = tiny_student_config()

    def run(draw_between: bool) -> list[float]:
        torch.manual_seed(0)  # the fit_dense's initial draw
        student = Student(cfg, seed=0)
        kd = KDLoss.for_models(cfg, teacher.config, weights=KDWeights.task())
        losses = []

        def on_step(step, terms):
            losses.append(terms["total"])
            if draw_between:
                torch.rand(1000)  # any other use of the global RNG between steps

        distill(student, LiveTeacher(teacher, encoded), kd, TrainConfig(
            max_steps=4, batch_size=8, progress=False, reseed_every_step=True), on_step=on_step)
        return losses

    assert run(False) == run(True)


def _supernet_run(encoded, teacher, folder, stop_at=None):
    torch.manual_seed(0)
    net = Supernet(tiny_student_config(), max_stacks=2, seed=0)

    def kill(step, terms):
        if step == stop_at:
            raise KeyboardInterrupt
    config = TrainConfig(max_steps=6, batch_size=4, lr=1e-3, progress=False, seed=5,
                         checkpoint_dir=folder, checkpoint_every=2 if folder else 0)
    result, kd = general_distill(net, LiveTeacher(teacher, encoded), config, on_step=kill,
                                 sampler=random_sampler(2, 16, stacks=(1, 2), ratios=(1, 0.5)))
    assert kd.weights == KDWeights.pretraining()
    return net, kd, result


def test_checkpoint_resume_is_bit_identical(teacher_dir, encoded, tmp_path):
    teacher = load_teacher(teacher_dir)
    reference, ref_kd, _ = _supernet_run(encoded, teacher, None)
    with pytest.raises(KeyboardInterrupt):  # killed after step 3; newest checkpoint: step 2
        _supernet_run(encoded, teacher, tmp_path, stop_at=3)
    resumed, kd, result = _supernet_run(encoded, teacher, tmp_path)
    assert result.resumed_from == 2 and result.steps == 6
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(ref_kd.fit_dense.weight, kd.fit_dense.weight)


def test_non_finite_loss_is_reported_as_diverged(encoded):
    model = torch.nn.Linear(2, 2)

    def step_loss(indices, rng):
        value = float("nan") if step_loss.calls == 3 else 1.0
        step_loss.calls += 1
        return {"total": (model.weight.sum() * 0 + value)}
    step_loss.calls = 0
    result = train_loop(model, step_loss, encoded.lengths, TrainConfig(
        max_steps=10, batch_size=4, progress=False))
    assert result.diverged and result.diverged_step == 3 and result.steps == 3
    student = Student(tiny_student_config(), seed=0)
    with torch.no_grad():
        student.classifier.weight.fill_(float("inf"))
    result = finetune(student, encoded, TrainConfig(max_steps=5, batch_size=4, progress=False))
    assert result.diverged and result.steps == 0


# ----------------------------------------------------------------------------- score
class NoTestSplit(dict):
    """A DatasetDict stand-in that fails the test if the test split is touched."""

    def __getitem__(self, key):
        if key == "test":
            raise AssertionError("score() read the test split")
        return super().__getitem__(key)

    def values(self):
        raise AssertionError("score() iterated over all splits")

    items = values


def test_score_is_deterministic_and_never_reads_test(teacher_dir, tmp_path):
    def split(n, seed):
        texts, labels = sentences(n, seed)
        return datasets.Dataset.from_dict({"sentence": texts, "label": labels})
    data = NoTestSplit(train=split(48, 2), heldout=split(16, 3), test=split(8, 4))
    net = Supernet(tiny_student_config(), max_stacks=2, seed=0)
    kd = KDLoss.for_models(net.config, load_teacher(teacher_dir).config)
    net.save_pretrained(tmp_path / "supernet")
    save_fit_dense(kd, tmp_path / "supernet")
    budget = ScoreBudget(supernet=tmp_path / "supernet", teacher=teacher_dir, kd_steps=6,
                         batch_size=8, lr=1e-3, train_slice=(0, 40), heldout_size=12,
                         seed=1, cache_dir=tmp_path / "cache", latency_repeats=2,
                         latency_batch=(2, 16))
    candidate = [("tanh(W2(gelu(W1(x))))", 2, 8), ("W2(relu(W1(x) * x))", 1, 16)]
    first = score(candidate, budget, data=data)
    clear_caches()
    second = score(candidate, budget, data=data)
    assert not first.diverged and first.steps == 6
    assert sorted(first.metrics) == ["accuracy", "f1", "score"]  # score: their mean
    assert (first.metrics, first.train_loss, first.params) == (second.metrics, second.train_loss,
                                                               second.params)
    assert 0 <= first.value("accuracy") <= 1 and first.latency_ms > 0
    inherited = score(candidate, ScoreBudget(**{**budget.__dict__, "no_training": True}),
                      data=data)
    assert inherited.steps == 0 and not inherited.diverged
    exploded = score(candidate, ScoreBudget(**{**budget.__dict__, "lr": 1e12}), data=data)
    assert exploded.diverged and exploded.value("accuracy") is None and exploded.steps < 6


def test_distill_student_general_then_task_kd(teacher_dir, tiny_task, tmp_path):
    """The `efficientbert distill` pipeline on the tiny task: both phases run, the folder it
    saves loads back and predicts the same logits."""
    from distill.pipeline import Recipe, distill_student

    recipe = Recipe(warmup_epochs=0.2, task_epochs=0.5, batch_size=16, label_weight=1.0)
    out = distill_student(tiny_student_config(), tiny_task, recipe=recipe, teacher_dir=teacher_dir,
                          eval_splits=("heldout", "test"), out_dir=tmp_path / "student",
                          cache_dir=tmp_path / "cache", progress=False)
    assert not out["diverged"] and out["general"]["steps"] == 3 and out["task"]["steps"] == 8
    assert set(out["metrics"]) == {"heldout", "test"} and out["recipe"]["label_weight"] == 1.0
    back = Student.from_pretrained(tmp_path / "student")
    ids = torch.tensor([[2, 7, 9, 3]])
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, out["model"].eval()(ids).logits)


def test_score_budget_round_trips_through_json():
    """``results.json`` stores a budget with lists for tuples; ``from_dict`` restores it."""
    import dataclasses
    import json

    b = ScoreBudget(supernet="s", kd_steps=7, train_slice=(2, 9), fitness=("a", "b"),
                    report_splits=("test",), seed=3)
    stored = json.loads(json.dumps({**dataclasses.asdict(b), "unknown": 1}))
    assert ScoreBudget.from_dict(stored) == b
