"""Export a saved model (a student folder or a Hugging Face classifier folder) as an artifact
that runs without this package: ``(input_ids, attention_mask, token_type_ids) -> logits``
(int64 ``[batch, seq]`` inputs, dynamic batch and sequence length).

* ``torch-export``: :func:`torch.export.export` then :func:`torch.export.save` (``.pt2``);
  load with ``torch.export.load(path).module()``.
* ``onnx``: :func:`torch.onnx.export` with the torch.export-based exporter (needs
  ``onnxscript``; the legacy TorchScript exporter is used when it is absent), weights inside
  the one ``.onnx`` file; run with onnxruntime, inputs and output named as above.

Beside the artifact, ``<artifact>.json`` records the inputs, the label names, whether the
model is a regressor and the maximum sequence length (the tokenizer is the model folder's).
:func:`export` loads the artifact back and reports its largest difference from the model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ExportError
from .predict import load_model

FORMATS = ("torch-export", "onnx")
SUFFIXES = {"torch-export": ".pt2", "onnx": ".onnx"}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MAX_BATCH = 4096


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float | None  # artifact vs the model on a probe batch (None: not checked)
    seconds: float
    checked_with: str | None  # "torch.export.load", "onnxruntime" or None


def example_inputs(vocab: int, batch: int, seq: int, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random batch with padded rows (the last rows' masks end early), types 0 then 1."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)
    for r in range(1, batch):
        mask[r, max(2, seq - r):] = 0
    types[:, seq // 2:] = 1
    return ids, mask, types


def _vocab(model: nn.Module) -> int:
    return next(m for m in model.modules() if isinstance(m, nn.Embedding)).num_embeddings


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporters' chatter (deprecations, renamed axes, optional torchvision ops) off."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for cat in (UserWarning, FutureWarning, DeprecationWarning):
                warnings.simplefilter("ignore", cat)
            yield
    finally:
        log.setLevel(level)


def _dynamic(positions: int) -> dict[str, dict[int, torch.export.Dim]]:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    seq = torch.export.Dim("seq", min=2, max=positions)
    return {name: {0: batch, 1: seq} for name in INPUTS}


def _onnx(model: nn.Module, args: tuple, out: Path, positions: int) -> None:
    try:
        import onnxscript  # noqa: F401 - the torch.export-based exporter needs it
        dynamo = True
    except ImportError:
        dynamo = False
    kwargs = ({"dynamic_shapes": _dynamic(positions), "external_data": False} if dynamo else
              {"dynamic_axes": {n: {0: "batch", 1: "seq"} for n in (*INPUTS, "logits")}})
    try:
        torch.onnx.export(model, args, str(out), dynamo=dynamo, input_names=list(INPUTS),
                          output_names=["logits"], verbose=False, **kwargs)
    except ImportError as e:
        raise ExportError(f"ONNX export needs the onnx package ({e}); pip install onnx "
                          "onnxscript") from e


def _run_artifact(path: Path, fmt: str, args: tuple) -> tuple[np.ndarray | None, str | None]:
    if fmt == "torch-export":
        with torch.inference_mode():
            out = torch.export.load(str(path)).module()(*args)
        return out.detach().numpy(), "torch.export.load"
    try:
        import onnxruntime
    except ImportError:
        return None, None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: t.numpy() for name, t in zip(INPUTS, args, strict=True)}
    return session.run(["logits"], feed)[0], "onnxruntime"


def export(model_dir: str | Path, format: str, out: str | Path, *,
           check: bool = True) -> ExportResult:
    """Write ``model_dir``'s model to ``out`` in ``format`` (``torch-export`` | ``onnx``) and
    its metadata to ``<out>.json``; with ``check``, run the artifact on a probe batch of
    another shape than the one traced and compare with the model."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {FORMATS}")
    out = Path(out).expanduser()
    suffix = SUFFIXES[format]
    if out.is_dir() or out.suffix != suffix:
        example = out / f"model{suffix}" if out.is_dir() else out.with_suffix(suffix)
        raise ExportError(f"--out {out}: a {format} artifact is a file ending in {suffix}, "
                          f"e.g. {example}")
    out.parent.mkdir(parents=True, exist_ok=True)
    model, names, regression, positions = load_model(model_dir)
    positions = min(positions, 512)
    vocab = _vocab(model)
    traced = example_inputs(vocab, 2, min(8, positions), seed=0)
    start = time.perf_counter()
    with _quiet():
        if format == "torch-export":
            program = torch.export.export(model, traced, dynamic_shapes=_dynamic(positions))
            torch.export.save(program, str(out))
        else:
            _onnx(model, traced, out, positions)
    seconds = time.perf_counter() - start
    meta = {"format": format, "inputs": list(INPUTS), "input_dtype": "int64",
            "output": "logits", "label_names": list(names), "is_regression": regression,
            "max_length": positions, "source": str(Path(model_dir).resolve())}
    Path(f"{out}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    diff, how = None, None
    if check:
        probe = example_inputs(vocab, 3, min(11, positions), seed=1)
        got, how = _run_artifact(out, format, probe)
        if got is not None:
            with torch.inference_mode():
                want = model(*probe).numpy()
            diff = float(np.abs(got - want).max())
    return ExportResult(out, format, diff, seconds, how)


__all__ = ["FORMATS", "INPUTS", "ExportError", "ExportResult", "example_inputs", "export"]
