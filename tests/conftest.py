"""Shared fixtures: the paper's expressions, a tiny offline teacher and a tiny task.

Everything is offline and tiny: a random ``BertForSequenceClassification`` built from a
config, a 35-word WordPiece vocabulary and synthetic sentences labelled by a rule.
"""

from __future__ import annotations

import os
import random

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

WORDS = ("good bad great awful fine poor movie film plot actor story the a is was very not "
         "and but it dull fun boring smart funny sad long short best worst").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_TASK = "tiny_sentiment"


@pytest.fixture(params=[*PAPER_EXPRESSIONS, STANDARD_FFN])
def paper_expr(request: pytest.FixtureRequest) -> str:
    return request.param


def tiny_bert_config(**kw):  # noqa: ANN201 - transformers.BertConfig
    """A 2-layer, hidden-32, 4-head BERT over the tiny vocabulary."""
    from transformers import BertConfig

    cfg = BertConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=40,
                     **kw)
    cfg._attn_implementation = "eager"
    return cfg


def sentences(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Random sentences over the tiny vocabulary, labelled positive when praise outnumbers
    blame."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]
    labels = [int(t.count("good") + t.count("great") >= t.count("bad") + t.count("awful"))
              for t in texts]
    return texts, labels


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random BertForSequenceClassification + tokenizer saved as a model folder."""
    from transformers import BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("teacher")
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    torch.manual_seed(0)
    BertForSequenceClassification(tiny_bert_config(num_labels=2)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def _tiny_splits(spec, cache_dir):  # noqa: ANN001, ANN202 - a TaskSpec loader
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    out = {}
    for split, n, seed in (("train", 240, 1), ("heldout", 48, 2), ("test", 48, 3)):
        texts, labels = sentences(n, seed)
        out[split] = datasets.Dataset.from_dict({"sentence": texts, "label": labels},
                                                features=features)
    return datasets.DatasetDict(out)


@pytest.fixture(scope="session")
def tiny_task() -> str:
    """A registered sentence task of synthetic data (train / heldout / test)."""
    from distill.data import TASKS, TaskSpec, register_task

    if TINY_TASK not in TASKS:
        register_task(TaskSpec(TINY_TASK, ("sentence",), 2, False, ("accuracy", "f1"),
                               ("negative", "positive"), eval_splits=("heldout",),
                               test_splits=("test",), max_length=16, loader=_tiny_splits))
    return TINY_TASK
