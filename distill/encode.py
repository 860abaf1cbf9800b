"""Tokenized data for training: :class:`EncodedTexts` keeps token ids without padding
(flat arrays plus lengths), pads each batch to its own longest example, and
:func:`batch_order` groups examples of similar length into batches (fewer pad tokens)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class EncodedTexts:
    """``N`` tokenized examples without padding, stored flat (``ids[offsets[i]:...]``)."""

    ids: np.ndarray  # int32 [sum of lengths]
    types: np.ndarray  # int8 [sum of lengths], token type (segment) ids
    lengths: np.ndarray  # int32 [N]
    labels: np.ndarray | None = None  # [N] int64 (classes) or float32 (regression)
    pad_id: int = 0
    offsets: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.lengths = np.asarray(self.lengths, dtype=np.int32)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])
        if len(self.ids) != self.offsets[-1] or len(self.types) != len(self.ids):
            raise ValueError(f"EncodedTexts: {len(self.ids)} ids / {len(self.types)} types for "
                             f"lengths summing to {self.offsets[-1]}")
        if self.labels is not None and len(self.labels) != len(self.lengths):
            raise ValueError(f"EncodedTexts: {len(self.labels)} labels for "
                             f"{len(self.lengths)} examples")

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def from_lists(cls, input_ids: Sequence[Sequence[int]],
                   token_type_ids: Sequence[Sequence[int]] | None = None,
                   labels: Sequence[float] | None = None, pad_id: int = 0) -> EncodedTexts:
        lengths = [len(x) for x in input_ids]
        if min(lengths, default=1) < 1:
            raise ValueError("EncodedTexts: an example has no tokens")
        flat = np.fromiter((t for x in input_ids for t in x), np.int32, sum(lengths))
        types = (np.zeros_like(flat, dtype=np.int8) if token_type_ids is None else
                 np.fromiter((t for x in token_type_ids for t in x), np.int8, sum(lengths)))
        lab = None if labels is None else np.asarray(labels)
        if lab is not None:
            lab = lab.astype(np.float32 if lab.dtype.kind == "f" else np.int64)
        return cls(flat, types, np.asarray(lengths), lab, pad_id)

    def subset(self, indices: Sequence[int] | np.ndarray) -> EncodedTexts:
        idx = np.asarray(indices, dtype=np.int64)
        parts = [slice(self.offsets[i], self.offsets[i + 1]) for i in idx]

        def cat(a: np.ndarray) -> np.ndarray:
            return np.concatenate([a[p] for p in parts]) if parts else a[:0]

        return EncodedTexts(cat(self.ids), cat(self.types), self.lengths[idx],
                            None if self.labels is None else self.labels[idx], self.pad_id)

    def fingerprint(self) -> str:
        """sha256 of the ids, types and lengths (not the labels)."""
        h = hashlib.sha256()
        for a in (self.lengths, self.ids, self.types):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def batch(self, indices: Sequence[int] | np.ndarray,
              device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask``, ``token_type_ids`` [B, T] padded to the longest
        example, and ``labels`` [B] when known."""
        idx = np.asarray(indices, dtype=np.int64)
        t = int(self.lengths[idx].max())
        ids = np.full((len(idx), t), self.pad_id, dtype=np.int64)
        types = np.zeros((len(idx), t), dtype=np.int64)
        mask = np.zeros((len(idx), t), dtype=np.int64)
        for row, i in enumerate(idx):
            a, b = self.offsets[i], self.offsets[i + 1]
            ids[row, : b - a], types[row, : b - a], mask[row, : b - a] = self.ids[a:b], \
                self.types[a:b], 1
        out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        if self.labels is not None:
            out["labels"] = self.labels[idx]
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in out.items()}


def encode_texts(tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None = None,
                 max_length: int = 128, labels: Sequence[float] | None = None,
                 chunk: int = 4096) -> EncodedTexts:
    """Tokenize (truncating to ``max_length``, no padding) single sentences or pairs."""
    ids: list[list[int]] = []
    types: list[list[int]] = []
    for i in range(0, len(texts), chunk):
        args = [list(texts[i:i + chunk])] + ([list(pairs[i:i + chunk])] if pairs else [])
        enc = tokenizer(*args, truncation=True, max_length=max_length, padding=False)
        ids += enc["input_ids"]
        types += enc.get("token_type_ids") or [[0] * len(x) for x in enc["input_ids"]]
    return EncodedTexts.from_lists(ids, types, labels, pad_id=tokenizer.pad_token_id or 0)


def encode_split(dataset: Any, tokenizer: Any, spec: Any, max_length: int = 128) -> EncodedTexts:
    """Tokenize one split of a task (``spec``: :class:`distill.data.TaskSpec`) with labels."""
    missing = [c for c in spec.text_columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"split lacks text column(s) {missing} of task {spec.name}; it has "
                         f"{dataset.column_names}")
    cols = [dataset[c] for c in spec.text_columns]
    labels = dataset["label"] if "label" in dataset.column_names else None
    return encode_texts(tokenizer, cols[0], cols[1] if len(cols) > 1 else None, max_length,
                        labels)


def batch_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                group_by_length: bool = True) -> list[np.ndarray]:
    """The batches of one epoch: a seeded permutation; with ``group_by_length`` sorted by
    length inside windows of 50 batches, then the batches shuffled."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    if not group_by_length:
        return [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
    batches = []
    for i in range(0, len(perm), 50 * batch_size):
        chunk = perm[i:i + 50 * batch_size]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    return [batches[k] for k in rng.permutation(len(batches))]
