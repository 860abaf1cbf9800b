"""The teacher-output cache: run a teacher once over a dataset and keep its logits,
hidden states and pre-softmax attention scores on disk, so students never rerun it.

Cache layout (one folder per teacher x inputs x layers, written to a staging folder and
renamed when complete; every array memory-mapped ``.npy``)::

    meta.json            sizes, cached layers, fingerprints of the teacher and inputs
    ids.npy types.npy lengths.npy [labels.npy]   the inputs (no padding)
    hidden.npy           float16 [sum T, len(hidden_layers), H]
    attention.npy        float16 flat; example i: [len(attention_layers), heads, T_i, T_i]
    logits.npy           float32 [N, C] (classification teachers)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .assets import default_cache_dir
from .encode import EncodedTexts
from .errors import TeacherCacheError
from .teacher import (
    ScoreRecorder,
    load_teacher,
    model_fingerprint,
    publish_folder,
    teacher_dims,
    teacher_forward,
)
from .train import MASK_FILL

_CACHE_VERSION = 1


class TeacherOutputs:
    """Cached teacher outputs for ``inputs`` (optionally a subset view of the rows)."""

    def __init__(self, folder: str | Path, index: np.ndarray | None = None) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise TeacherCacheError(f"{self.folder} holds no complete teacher-output cache "
                                    "(no meta.json); create it with cache_teacher_outputs")
        self.meta = json.loads(meta_path.read_text())

        def load(name: str) -> np.ndarray:
            return np.load(self.folder / name, mmap_mode="r")

        labels = load("labels.npy") if (self.folder / "labels.npy").is_file() else None
        self._all = EncodedTexts(load("ids.npy"), load("types.npy"), np.load(
            self.folder / "lengths.npy"), labels, self.meta["pad_id"])
        self._hidden, self._attention = load("hidden.npy"), load("attention.npy")
        self.logits = load("logits.npy") if self.meta["has_logits"] else None
        lengths = self._all.lengths.astype(np.int64)
        self._att_off = np.concatenate([[0], np.cumsum(
            lengths ** 2 * self.meta["heads"] * len(self.meta["attention_layers"]))])
        self._index = np.arange(len(lengths)) if index is None else np.asarray(index)
        self.inputs = self._all if index is None else self._all.subset(self._index)
        self.config = SimpleNamespace(hidden_size=self.meta["hidden"],
                                      num_hidden_layers=self.meta["layers"],
                                      num_attention_heads=self.meta["heads"])
        self.hidden_layers = list(self.meta["hidden_layers"])
        self.attention_layers = list(self.meta["attention_layers"])

    def __len__(self) -> int:
        return len(self._index)

    def subset(self, indices: np.ndarray | list[int]) -> TeacherOutputs:
        """A view of some rows (indices into this view)."""
        return TeacherOutputs(self.folder, self._index[np.asarray(indices, dtype=np.int64)])

    def targets(self, indices: np.ndarray, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Padded ``hidden_states`` / ``attention_scores`` (None where not cached) and
        ``logits`` on the batch's device, for rows ``indices`` of this view."""
        device = batch["input_ids"].device
        b, t = batch["input_ids"].shape
        rows = self._index[np.asarray(indices, dtype=np.int64)]
        hl, al, heads = self.hidden_layers, self.attention_layers, self.meta["heads"]
        hid = np.zeros((len(hl), b, t, self.meta["hidden"]), np.float32)
        att = np.full((len(al), b, heads, t, t), MASK_FILL, np.float32)
        offsets, lengths = self._all.offsets, self._all.lengths
        for r, i in enumerate(rows):
            n = int(lengths[i])
            if n > t:
                raise TeacherCacheError(f"batch of length {t} is shorter than cached row {i} "
                                        f"({n} tokens); build batches from .inputs")
            hid[:, r, :n] = self._hidden[offsets[i]:offsets[i + 1]].transpose(1, 0, 2)
            att[:, r, :, :n, :n] = self._attention[self._att_off[i]:self._att_off[i + 1]
                                                   ].reshape(len(al), heads, n, n)
        hidden: list[torch.Tensor | None] = [None] * (self.meta["layers"] + 1)
        scores: list[torch.Tensor | None] = [None] * self.meta["layers"]
        for j, layer in enumerate(hl):
            hidden[layer] = torch.from_numpy(hid[j]).to(device)
        for j, layer in enumerate(al):
            scores[layer - 1] = torch.from_numpy(att[j]).to(device)
        logits = (None if self.logits is None
                  else torch.from_numpy(np.asarray(self.logits[rows])).to(device))
        return {"hidden_states": hidden, "attention_scores": scores, "logits": logits}


def cache_teacher_outputs(teacher: nn.Module | str | Path, inputs: EncodedTexts, *,
                          hidden_layers: list[int] | None = None,
                          attention_layers: list[int] | None = None, name: str = "outputs",
                          cache_dir: str | Path | None = None, batch_size: int = 64,
                          device: str | None = None, progress: bool = True,
                          force: bool = False) -> TeacherOutputs:
    """Run ``teacher`` (a model or a folder) once over ``inputs`` and cache its logits, the
    hidden states ``hidden_layers`` (0 = embedding output; default all) and the pre-softmax
    scores of ``attention_layers`` (1-based; default all) under
    ``<cache>/teacher_outputs/<name>-<key>``; an existing complete cache is reused."""
    model = teacher if isinstance(teacher, nn.Module) else load_teacher(teacher)
    dims = teacher_dims(model.config)
    n_layers = dims.num_hidden_layers
    hl = sorted(set(range(n_layers + 1) if hidden_layers is None else hidden_layers))
    al = sorted(set(range(1, n_layers + 1) if attention_layers is None else attention_layers))
    if not all(0 <= h <= n_layers for h in hl) or not all(1 <= a <= n_layers for a in al):
        raise TeacherCacheError(f"layers out of range for a {n_layers}-layer teacher: hidden "
                                f"{hl} (0..{n_layers}), attention {al} (1..{n_layers})")
    who = model_fingerprint(model)  # the same key for a folder and the model loaded from it
    key = hashlib.sha256(json.dumps([_CACHE_VERSION, who, inputs.fingerprint(), hl, al]
                                    ).encode()).hexdigest()[:16]
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    out = root / "teacher_outputs" / f"{name}-{key}"
    if (out / "meta.json").is_file() and not force:
        return TeacherOutputs(out)
    staging = out.with_name(f"{out.name}.partial-{os.getpid()}")  # one per process
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    lengths = inputs.lengths.astype(np.int64)
    for fname, arr in (("ids", inputs.ids), ("types", inputs.types), ("lengths", lengths),
                       ("labels", inputs.labels)):
        if arr is not None:
            np.save(staging / f"{fname}.npy", np.asarray(arr))
    heads = dims.num_attention_heads
    att_off = np.concatenate([[0], np.cumsum(lengths ** 2 * heads * len(al))])
    mm = np.lib.format.open_memmap
    hidden = mm(staging / "hidden.npy", "w+", np.float16, (int(lengths.sum()), len(hl),
                                                            dims.hidden_size))
    attention = mm(staging / "attention.npy", "w+", np.float16, (int(att_off[-1]),))
    logits_out = None
    dev = torch.device(device) if device else torch.device("cpu")
    model.to(dev).eval()
    order = np.argsort(-lengths, kind="stable")
    with ScoreRecorder(model) as rec:
        for i in tqdm(range(0, len(order), batch_size), desc=f"teacher outputs {name}",
                      disable=not progress, unit="batch"):
            rows = order[i:i + batch_size]
            res = teacher_forward(model, inputs.batch(rows, dev), rec)
            hs = torch.stack([res["hidden_states"][h] for h in hl], 2).float().cpu().numpy()
            sc = torch.stack([res["attention_scores"][a - 1] for a in al], 1).float().cpu()
            for r, row in enumerate(rows):
                n = int(lengths[row])
                hidden[inputs.offsets[row]:inputs.offsets[row + 1]] = hs[r, :n]
                attention[att_off[row]:att_off[row + 1]] = sc[r, :, :, :n, :n].reshape(-1)
            if res["logits"] is not None:
                if logits_out is None:
                    logits_out = np.zeros((len(lengths), res["logits"].shape[-1]), np.float32)
                logits_out[rows] = res["logits"].float().cpu().numpy()
    hidden.flush()
    attention.flush()
    del hidden, attention
    if logits_out is not None:
        np.save(staging / "logits.npy", logits_out)
    meta = {"version": _CACHE_VERSION, "teacher": who, "inputs": inputs.fingerprint(),
            "n": len(lengths), "hidden": dims.hidden_size, "layers": n_layers, "heads": heads,
            "hidden_layers": hl, "attention_layers": al, "has_logits": logits_out is not None,
            "pad_id": int(inputs.pad_id), "dtype": "float16"}
    (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    publish_folder(staging, out, "meta.json", replace=force)
    return TeacherOutputs(out)
