"""Distillation losses against hand-written formulas on tiny tensors."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from distill.config import StudentConfig
from distill.errors import DistillShapeError
from distill.losses import (
    KDLoss,
    KDWeights,
    attention_mse,
    check_layer_map,
    describe_distillation,
    hidden_mse,
    regression_mse,
    soft_cross_entropy,
    uniform_layer_map,
)
from distill.student import Student

G = torch.Generator().manual_seed(0)


def rnd(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=G, dtype=torch.float64)


def test_attention_mse_matches_loops_with_mask():
    s, t = rnd(2, 2, 3, 3), rnd(2, 2, 3, 3)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    s[1, :, :, 2] = torch.finfo(s.dtype).min  # the student fills masked keys
    t[1, :, :, 2] -= 10000.0  # original BERT adds -10000
    total, n = 0.0, 0
    for b in range(2):
        for h in range(2):
            for i in range(3):
                for j in range(3):
                    keep = mask[b, j] == 1
                    diff = (s[b, h, i, j] - t[b, h, i, j]).item() if keep else 0.0
                    total += diff * diff
                    n += 1
    expected = total / n  # masked entries count as zeros in the mean, as in the reference
    assert attention_mse(s, t, mask).item() == pytest.approx(expected, rel=1e-12)
    # without a mask the masked entries are found by their value
    assert attention_mse(s, t).item() == pytest.approx(expected, rel=1e-12)


def test_attention_mse_needs_equal_heads():
    with pytest.raises(DistillShapeError, match="head counts"):
        attention_mse(rnd(1, 4, 3, 3), rnd(1, 12, 3, 3))


def test_hidden_mse_through_fit_dense():
    s, t = rnd(2, 3, 4), rnd(2, 3, 5)
    fit = nn.Linear(4, 5).double()
    mapped = s @ fit.weight.T + fit.bias
    expected = ((mapped - t) ** 2).sum().item() / (2 * 3 * 5)
    assert hidden_mse(s, t, fit).item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(DistillShapeError, match="teacher's hidden state"):
        hidden_mse(s, rnd(2, 3, 6), fit)


def test_hidden_mse_skipping_padding_matches_filling_it_with_the_students_value():
    # the plain reference: padding targets replaced by the student's own mapped value
    s, t = rnd(2, 3, 4).requires_grad_(), rnd(2, 3, 5)
    keep = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)[..., None]
    fit = nn.Linear(4, 5).double()
    fast = hidden_mse(s, t, fit, keep)
    (g_fast,) = torch.autograd.grad(fast, s)
    with torch.no_grad():
        own = fit(s)
    ref = hidden_mse(s, torch.where(keep, t, own), fit)
    (g_ref,) = torch.autograd.grad(ref, s)
    mapped = (s @ fit.weight.T + fit.bias).detach()
    by_hand = (((mapped - t) ** 2) * keep).sum().item() / (2 * 3 * 5)
    assert fast.item() == pytest.approx(by_hand, rel=1e-12)
    assert fast.item() == pytest.approx(ref.item(), rel=1e-12)
    assert torch.allclose(g_fast, g_ref, rtol=0, atol=1e-14)
    assert g_fast[1, 1:].abs().max().item() == 0.0


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_soft_cross_entropy_matches_formula(temperature):
    s, t = rnd(3, 4), rnd(3, 4)
    total = 0.0
    for b in range(3):
        zs = [math.exp(v / temperature) for v in s[b].tolist()]
        zt = [math.exp(v / temperature) for v in t[b].tolist()]
        for c in range(4):
            p = zt[c] / sum(zt)
            total -= p * math.log(zs[c] / sum(zs))
    got = soft_cross_entropy(s, t, temperature).item()
    assert got == pytest.approx(total / 3, rel=1e-10)


def test_temperature_softens_and_minimum_is_teacher_entropy():
    t = rnd(2, 3) * 5
    entropy = -(t.softmax(-1) * t.log_softmax(-1)).sum(-1).mean()
    assert soft_cross_entropy(t.clone(), t).item() == pytest.approx(entropy.item())
    s = rnd(2, 3)
    assert soft_cross_entropy(s, t, 1.0) != soft_cross_entropy(s, t, 4.0)
    with pytest.raises(ValueError, match="temperature"):
        soft_cross_entropy(s, t, 0.0)


def test_regression_mse():
    s, t = rnd(4, 1), rnd(4)
    expected = sum((a - b) ** 2 for a, b in zip(s[:, 0].tolist(), t.tolist(), strict=True)) / 4
    assert regression_mse(s, t).item() == pytest.approx(expected)


def test_uniform_layer_map():
    assert uniform_layer_map(3, 6) == {1: 2, 2: 4, 3: 6}
    assert uniform_layer_map(6, 12) == {l: 2 * l for l in range(1, 7)}  # the paper's map
    assert uniform_layer_map(6, 6) == {l: l for l in range(1, 7)}
    with pytest.raises(DistillShapeError, match="custom") as info:
        uniform_layer_map(4, 6)
    assert "1.5" in str(info.value)
    assert check_layer_map([2, 3, 5, 6], 4, 6) == {1: 2, 2: 3, 3: 5, 4: 6}
    with pytest.raises(DistillShapeError, match="teacher layer"):
        check_layer_map({1: 7}, 4, 6)
    with pytest.raises(DistillShapeError, match="student layer"):
        check_layer_map({5: 1}, 4, 6)


def fake_outputs(layers: int, hidden: int, heads: int, b: int = 2, t: int = 3, labels: int = 2):
    return {"hidden_states": [rnd(b, t, hidden) for _ in range(layers + 1)],
            "attention_scores": [rnd(b, heads, t, t) for _ in range(layers)],
            "logits": rnd(b, labels)}


def test_kd_loss_terms_and_weighted_total():
    student, teacher = fake_outputs(2, 4, 3), fake_outputs(4, 6, 3)
    weights = KDWeights(attention=0.5, hidden=2.0, embedding=3.0, prediction=0.25)
    kd = KDLoss(student_hidden=4, teacher_hidden=6, student_layers=2, teacher_layers=4,
                student_heads=3, teacher_heads=3, weights=weights, temperature=2.0).double()
    terms = kd(student, teacher)
    sh, th = student["hidden_states"], teacher["hidden_states"]
    sa, ta = student["attention_scores"], teacher["attention_scores"]
    attention = attention_mse(sa[0], ta[1]) + attention_mse(sa[1], ta[3])  # layers 1->2, 2->4
    hidden = hidden_mse(sh[1], th[2], kd.fit_dense) + hidden_mse(sh[2], th[4], kd.fit_dense)
    embedding = hidden_mse(sh[0], th[0], kd.fit_dense)
    prediction = soft_cross_entropy(student["logits"], teacher["logits"], 2.0)
    for name, value in [("attention", attention), ("hidden", hidden),
                        ("embedding", embedding), ("prediction", prediction)]:
        torch.testing.assert_close(terms[name], value)
    total = 0.5 * attention + 2.0 * hidden + 3.0 * embedding + 0.25 * prediction
    torch.testing.assert_close(terms["total"], total)


def test_kd_loss_regression_and_zero_weights():
    student, teacher = fake_outputs(1, 4, 2, labels=1), fake_outputs(1, 4, 2, labels=1)
    kd = KDLoss(student_hidden=4, teacher_hidden=4, student_layers=1, teacher_layers=1,
                student_heads=2, teacher_heads=2, is_regression=True,
                weights=KDWeights(attention=0.0, hidden=0.0, embedding=0.0))
    assert isinstance(kd.fit_dense, nn.Identity)
    terms = kd(student, teacher)
    torch.testing.assert_close(terms["prediction"],
                               regression_mse(student["logits"], teacher["logits"]))
    assert terms["hidden"].item() == terms["attention"].item() == 0.0
    torch.testing.assert_close(terms["total"], terms["prediction"])


def test_head_mismatch_skips_attention_and_says_so():
    student, teacher = fake_outputs(2, 4, 2), fake_outputs(2, 4, 3)
    kd = KDLoss(student_hidden=4, teacher_hidden=4, student_layers=2, teacher_layers=2,
                student_heads=2, teacher_heads=3).double()
    terms = kd(student, teacher)
    assert terms["attention"].item() == 0.0 and terms["hidden"].item() > 0
    text = describe_distillation(kd)
    skipped = text.split("Skipped:")[1]
    assert "2 heads and the teacher 3" in skipped and "attention" in skipped
    assert "hidden states" in text.split("Skipped:")[0]


def test_kd_loss_on_a_real_student_trains_student_and_fit_dense():
    cfg = StudentConfig(vocab_size=40, hidden=12, heads=3, max_position=8,
                        layers=[("W2(relu(W1(x) * x))", 1, 6), ("W2(gelu(W1(x)))", 2, 12)])
    teacher_cfg = SimpleNamespace(hidden_size=16, num_hidden_layers=4, num_attention_heads=3)
    kd = KDLoss.for_models(cfg, teacher_cfg)
    assert kd.layer_map == {1: 2, 2: 4}
    assert "Linear(12 -> 16)" in kd.describe() and "teacher layers 1, 3" in kd.describe()
    model = Student(cfg, seed=0)
    ids = torch.randint(0, 40, (2, 5), generator=G)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    out = model(ids, mask)
    scores = []
    for _ in range(4):
        s = torch.randn(2, 3, 5, 5, generator=G)
        s[1, :, :, 3:] = torch.finfo(s.dtype).min
        scores.append(s.requires_grad_())
    teacher = SimpleNamespace(hidden_states=[torch.randn(2, 5, 16, generator=G)] * 5,
                              attention_scores=scores,
                              logits=torch.randn(2, 2, generator=G).requires_grad_())
    terms = kd(out, teacher)  # the mask comes from the student output
    assert all(torch.isfinite(v) for v in terms.values())
    terms["total"].backward()
    assert kd.fit_dense.weight.grad is not None
    assert model.layers[0].mlp.units[0].weights()["W1"][0].grad is not None
    assert teacher.logits.grad is None and scores[1].grad is None  # teacher is detached
    missing = SimpleNamespace(hidden_states=teacher.hidden_states, attention_scores=None,
                              logits=teacher.logits)
    with pytest.raises(DistillShapeError, match="pre-softmax"):
        kd(out, missing)
