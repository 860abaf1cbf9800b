"""Predict with a saved model: a student folder (:func:`distill.pipeline.save_student`) or a
Hugging Face sequence-classification folder (a fine-tuned teacher).

::

    p = Predictor.from_pretrained("runs/x/winner")
    p.predict(["a fine film", "dull"])
    # [{"label": "positive", "score": 0.93, "probabilities": {"negative": 0.07, ...}}, ...]

Label names come from the folder's ``labels.json`` (:func:`save_label_names`), else from a
Hugging Face config's ``id2label``, else ``LABEL_<i>`` as transformers' ``pipeline`` names
them. For regression the row's ``label`` is None, ``probabilities`` empty and ``score`` the
predicted value.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .assets import offline_env
from .errors import CheckpointError

LABELS_NAME = "labels.json"
STUDENT_FORMAT_KEY = "format"


def save_label_names(folder: str | Path, names: Sequence[str]) -> Path:
    """Write the class names (index order) of a model folder to ``labels.json``."""
    path = Path(folder) / LABELS_NAME
    path.write_text(json.dumps({"label_names": list(names)}, indent=2) + "\n", encoding="utf-8")
    return path


def read_label_names(folder: str | Path) -> tuple[str, ...] | None:
    """The names :func:`save_label_names` wrote, or None if the folder has none."""
    path = Path(folder) / LABELS_NAME
    if not path.is_file():
        return None
    try:
        return tuple(str(n) for n in json.loads(path.read_text(encoding="utf-8"))["label_names"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a label file ({e}); expected "
                              '{"label_names": [...]}') from None


def is_student_folder(folder: str | Path) -> bool:
    """True for a folder saved by ``Student.save_pretrained`` (its config has a format key)."""
    config = Path(folder) / "config.json"
    try:
        return STUDENT_FORMAT_KEY in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


class LogitsModel(nn.Module):
    """``(input_ids, attention_mask, token_type_ids) -> logits`` over a student or a Hugging
    Face classifier: the one signature predict and export use."""

    def __init__(self, model: nn.Module, student: bool) -> None:
        super().__init__()
        self.model, self.student = model, student
        self.takes_types = student or \
            "token_type_ids" in inspect.signature(model.forward).parameters

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        if self.student:
            return self.model(input_ids, attention_mask, token_type_ids).logits
        kwargs = {"token_type_ids": token_type_ids} if self.takes_types else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits


def load_model(folder: str | Path, device: str | torch.device | None = None
               ) -> tuple[LogitsModel, tuple[str, ...], bool, int]:
    """``(logits model in eval mode, label names, is_regression, max positions)`` of a
    student folder or a Hugging Face sequence-classification folder."""
    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} is not a model folder (no config.json); give a "
                              "student folder (a run's winner, `distill -o`) or a fine-tuned "
                              "teacher folder")
    names = read_label_names(folder)
    if is_student_folder(folder):
        from .student import Student

        student = Student.from_pretrained(folder)
        n, regression = student.config.num_outputs, student.config.is_regression
        model, positions = LogitsModel(student, True), student.config.max_position
    else:
        from transformers import AutoModelForSequenceClassification

        with offline_env():
            try:
                hf = AutoModelForSequenceClassification.from_pretrained(
                    str(folder), local_files_only=True)
            except (OSError, ValueError, KeyError) as e:
                raise CheckpointError(f"cannot load a sequence classifier from {folder}: "
                                      f"{e}") from e
        n = hf.config.num_labels
        regression = hf.config.problem_type == "regression" or n == 1
        if names is None and hf.config.id2label:
            names = tuple(hf.config.id2label[i] for i in range(n))
        model = LogitsModel(hf, False)
        positions = getattr(hf.config, "max_position_embeddings", 512)
    if regression:
        names = ()
    elif names is None:
        names = tuple(f"LABEL_{i}" for i in range(n))
    if not regression and len(names) != n:
        raise CheckpointError(f"{folder}: {len(names)} label names for {n} outputs; fix "
                              f"{LABELS_NAME}")
    return model.to(device or "cpu").eval(), names, regression, positions


class Predictor:
    """Tokenizer + model of a folder; :meth:`predict` turns texts into labelled rows."""

    def __init__(self, model: LogitsModel, tokenizer: Any, label_names: Sequence[str],
                 is_regression: bool, max_length: int) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.label_names, self.is_regression = tuple(label_names), is_regression
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, max_length: int | None = None,
                        device: str | torch.device | None = None) -> Predictor:
        """Load a student or Hugging Face folder that holds its tokenizer files. Inputs are
        truncated to ``max_length`` (default: the model's positions, at most 512)."""
        from transformers import AutoTokenizer

        model, names, regression, positions = load_model(folder, device)
        try:
            with offline_env():
                tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{folder} has no tokenizer files ({e}); save the student "
                                  "with save_student(..., tokenizer)") from None
        return cls(model, tokenizer, names, regression, max_length or min(positions, 512))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None
               ) -> dict[str, torch.Tensor]:
        """One padded batch: input_ids, attention_mask, token_type_ids."""
        args = [list(texts)] + ([list(pairs)] if pairs is not None else [])
        enc = self.tokenizer(*args, truncation=True, max_length=self.max_length,
                             padding=True, return_tensors="pt")
        ids = enc["input_ids"]
        types = enc.get("token_type_ids")
        return {"input_ids": ids.to(self.device),
                "attention_mask": enc["attention_mask"].to(self.device),
                "token_type_ids": (torch.zeros_like(ids) if types is None else types
                                   ).to(self.device)}

    @torch.inference_mode()
    def logits(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
               batch_size: int = 32) -> torch.Tensor:
        """``[N, num_labels]`` logits (``[N, 1]`` for regression), in input order."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = []
        for i in range(0, len(texts), batch_size):
            batch = self.encode(texts[i:i + batch_size],
                                None if pairs is None else pairs[i:i + batch_size])
            out.append(self.model(**batch).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, max(len(self.label_names), 1))

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                batch_size: int = 32) -> list[dict[str, Any]]:
        """One row per text: ``label`` (name), ``score`` (its probability; for regression
        the value) and ``probabilities`` (name -> probability)."""
        logits = self.logits(texts, pairs, batch_size)
        if self.is_regression:
            return [{"label": None, "score": float(v), "probabilities": {}}
                    for v in logits[:, 0]]
        probs = logits.softmax(-1)
        rows = []
        for p in probs.tolist():
            top = max(range(len(p)), key=p.__getitem__)
            rows.append({"label": self.label_names[top], "score": p[top],
                         "probabilities": dict(zip(self.label_names, p, strict=True))})
        return rows


__all__ = ["LABELS_NAME", "LogitsModel", "Predictor", "is_student_folder", "load_model",
           "read_label_names", "save_label_names"]
