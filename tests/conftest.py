"""Shared fixtures: the paper's expressions and seeded random graphs."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

PAPER_EXPRESSIONS = [
    "tanh(W2(gelu(W1(x))))",
    "elu(W2(gelu(W1(x))))",
    "sigmoid(W2(relu(W1(x))))",
    "W2(gelu(W1(max(x, tanh(x)))))",
    "W2(relu(W1(x) * x))",
    "leaky_relu(W2(gelu(W1(x))))",
]
STANDARD_FFN = "W2(gelu(W1(x)))"
GLU_EXPRESSIONS = ["W3(silu(W1(x)) * W2(x))", "W3(gelu(W1(x)) * W2(x))"]


@pytest.fixture(params=[*PAPER_EXPRESSIONS, STANDARD_FFN])
def paper_expr(request: pytest.FixtureRequest) -> str:
    return request.param
