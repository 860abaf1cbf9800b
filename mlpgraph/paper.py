"""The paper's searched MLPs, declared once (EfficientBERT, arXiv 2109.07222).

Stage 2's six expressions with stage 3's stacks and inner widths, at the paper's hidden width
540; and the standard BERT feed-forward network they are compared with.
"""

from __future__ import annotations

from .layer import STANDARD_FFN

PAPER_D_MODEL = 540
#: (layer, expression, stacks, inner width at d_model 540)
PAPER_LAYERS: tuple[tuple[str, str, int, int], ...] = (
    ("L1", "tanh(W2(gelu(W1(x))))", 4, 270),
    ("L2", "elu(W2(gelu(W1(x))))", 2, 540),
    ("L3", "sigmoid(W2(relu(W1(x))))", 1, 270),
    ("L4", "W2(gelu(W1(max(x, tanh(x)))))", 2, 270),
    ("L5", "W2(relu(W1(x) * x))", 1, 270),
    ("L6", "leaky_relu(W2(gelu(W1(x))))", 2, 180),
)
PAPER_EXPRESSIONS: tuple[str, ...] = tuple(e for _, e, _, _ in PAPER_LAYERS)

__all__ = ["PAPER_D_MODEL", "PAPER_EXPRESSIONS", "PAPER_LAYERS", "STANDARD_FFN"]
