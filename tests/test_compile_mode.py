"""Compiled training of students (distill.compile_mode, Student.compile_forward): a
compiled KD step computes the eager step's loss terms and gradients, dropout included."""

from __future__ import annotations

import copy

import pytest
import torch

from distill.compile_mode import compile_options, compiled_kd_step
from distill.losses import KDLoss, KDWeights
from distill.student import Student
from tests.test_student import MIXED, batch, tiny

TEACHER_HIDDEN = 20


def _teacher(cfg, ids: torch.Tensor) -> dict:
    g = torch.Generator().manual_seed(7)
    b, t = ids.shape
    return {"hidden_states": [torch.randn(b, t, TEACHER_HIDDEN, generator=g)
                              for _ in range(cfg.num_layers + 1)],
            "attention_scores": [torch.randn(b, cfg.heads, t, t, generator=g)
                                 for _ in range(cfg.num_layers)],
            "logits": torch.randn(b, cfg.num_outputs, generator=g)}


def _kd(cfg) -> KDLoss:
    return KDLoss(student_hidden=cfg.hidden, teacher_hidden=TEACHER_HIDDEN,
                  student_layers=cfg.num_layers, teacher_layers=cfg.num_layers,
                  student_heads=cfg.heads, teacher_heads=cfg.heads, weights=KDWeights.task())


def _grads(*modules: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{i}.{n}": p.grad.clone() for i, m in enumerate(modules)
            for n, p in m.named_parameters() if p.grad is not None}


def test_compile_options_default_to_torch_rng() -> None:
    assert compile_options({})["options"] == {"fallback_random": True}
    got = compile_options({"dynamic": True, "options": {"fallback_random": False}})
    assert got == {"dynamic": True, "options": {"fallback_random": False}}


@pytest.mark.parametrize("how", ["step", pytest.param("forward", marks=pytest.mark.slow)])
def test_compiled_kd_step_matches_eager(how: str) -> None:
    # two layers of different expressions (a GLU among them), training mode with dropout:
    # with torch's RNG the compiled step draws the eager step's masks, so the loss terms
    # and every gradient (student and fit_dense) agree to float32 rounding
    cfg = tiny(layers=MIXED[:2], dropout=0.1, attention_dropout=0.1)
    eager = Student(cfg, seed=0).train()
    model = copy.deepcopy(eager)
    kd_eager = _kd(cfg)
    kd = copy.deepcopy(kd_eager)
    ids, mask = batch()
    targets = _teacher(cfg, ids)
    if how == "step":
        step = compiled_kd_step(model, kd, dynamic=False)
    else:
        model.compile_forward(dynamic=False)

        def step(i, m, t):
            return kd(model(i, m), t, m)
    for seed in (0, 1):  # the second call runs the compiled code without compiling
        torch.manual_seed(seed)
        want = kd_eager(eager(ids, mask), targets, mask)
        torch.manual_seed(seed)
        got = step(ids, mask, targets)
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5)
        want["total"].backward()
        got["total"].backward()
        g_want, g_got = _grads(eager, kd_eager), _grads(model, kd)
        assert g_got.keys() == g_want.keys() and len(g_got) > 10
        for name, g in g_want.items():
            torch.testing.assert_close(g_got[name], g, rtol=1e-3, atol=1e-5, msg=name)
        for m in (eager, kd_eager, model, kd):
            m.zero_grad(set_to_none=True)
    if how == "forward":  # compiling the forward keeps the state dict's names
        assert list(model.state_dict()) == list(eager.state_dict())
