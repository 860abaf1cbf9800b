"""The teacher: load a local Hugging Face BERT-family folder, fine-tune it once per task,
read its pre-softmax attention scores (the output cache is :mod:`distill.teacher_cache`).

Pre-softmax scores. ``output_attentions`` gives post-softmax probabilities only, so
:class:`ScoreRecorder` hooks the query and key projections of every self-attention
(``query``/``key`` in BERT, RoBERTa, ELECTRA; ``q``/``k`` in MPNet, whose relative
position bias is captured from the call's arguments; ``q_lin``/``k_lin`` in DistilBERT)
and computes ``q k^T / sqrt(d_head)`` (+ position bias); masked keys and padding query
rows hold a large negative value, which the losses ignore.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from .assets import default_cache_dir, ensure_asset, offline_env
from .data import get_task_spec
from .encode import EncodedTexts, encode_split
from .errors import TeacherError, TrainingError
from .loop import TrainConfig
from .loop import model_inputs as _inputs
from .train import MASK_FILL, evaluate, finetune

_QK_NAMES = (("query", "key"), ("q", "k"), ("q_lin", "k_lin"))
_DONE = "teacher.json"
_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


# ----------------------------------------------------------------------------- loading
def _check_folder(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise TeacherError(f"{path} is not a Hugging Face model folder (no config.json); give "
                           "a folder saved by save_pretrained, or fetch the default teacher "
                           "with `efficientbert assets`")
    return path


def load_tokenizer(path: str | Path | None = None) -> Any:
    """The teacher's tokenizer (``AutoTokenizer``, offline); default: the MiniLM asset."""
    from transformers import AutoTokenizer

    folder = _check_folder(path if path is not None else ensure_asset("teacher"))
    with offline_env():
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def load_teacher(path: str | Path | None = None, *, num_labels: int | None = None,
                 is_regression: bool = False, attn_implementation: str = "eager",
                 device: str | torch.device | None = None) -> nn.Module:
    """A BERT-family model from a local folder, in eval mode, offline.

    ``num_labels`` given, or a folder saved from a ``...ForSequenceClassification``: a
    sequence classifier (new head initialized when absent); otherwise the bare encoder.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    folder = _check_folder(path if path is not None else ensure_asset("teacher"))
    with offline_env():
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        classifier = num_labels is not None or any(
            a.endswith("ForSequenceClassification") for a in config.architectures or [])
        kwargs: dict[str, Any] = {"attn_implementation": attn_implementation,
                                  "local_files_only": True}
        if num_labels is not None:
            kwargs.update(num_labels=num_labels, problem_type="regression" if is_regression
                          else "single_label_classification")
        cls = AutoModelForSequenceClassification if classifier else AutoModel
        try:
            with _quiet_transformers():  # a new head is expected; the load report is noise
                model = cls.from_pretrained(str(folder), **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise TeacherError(f"cannot load {cls.__name__} from {folder}: {exc}") from exc
    return model.to(device or "cpu").eval()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' loading messages and progress bars off, restored afterwards."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def teacher_dims(config: Any) -> SimpleNamespace:
    """``hidden_size``, ``num_hidden_layers``, ``num_attention_heads`` (and ``vocab_size``)
    of any BERT-family config (DistilBERT names them ``dim``, ``n_layers``, ``n_heads``)."""
    def get(*names: str) -> int:
        return next(getattr(config, n) for n in names if hasattr(config, n))

    return SimpleNamespace(hidden_size=get("hidden_size", "dim"),
                           num_hidden_layers=get("num_hidden_layers", "n_layers"),
                           num_attention_heads=get("num_attention_heads", "n_heads"),
                           vocab_size=getattr(config, "vocab_size", None))


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the names and bytes of the state dict."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def folder_fingerprint(path: str | Path) -> str:
    """sha256 over a model folder's config and weight files (memoized per process)."""
    folder = _check_folder(path)
    h = hashlib.sha256()
    for f in sorted(folder.glob("*")):
        if f.suffix not in (".json", ".safetensors", ".bin") or f.name == _DONE:
            continue
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _FINGERPRINTS:
            _FINGERPRINTS[key] = hashlib.sha256(f.read_bytes()).hexdigest()
        h.update(f.name.encode() + _FINGERPRINTS[key].encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- scores
class ScoreRecorder:
    """Forward hooks that yield each layer's pre-softmax attention scores (see module doc).

    Use ``with ScoreRecorder(model) as rec: model(...); rec.scores(mask)`` or keep it
    attached with :meth:`attach` / :meth:`detach`."""

    def __init__(self, model: nn.Module) -> None:
        dims = teacher_dims(model.config)
        self.heads = dims.num_attention_heads
        self.found = []
        for mod in model.modules():
            for qn, kn in _QK_NAMES:
                q, k = getattr(mod, qn, None), getattr(mod, kn, None)
                if isinstance(q, nn.Linear) and isinstance(k, nn.Linear):
                    self.found.append((mod, q, k))
                    break
        if len(self.found) != dims.num_hidden_layers:
            raise TeacherError(
                f"{type(model).__name__}: found {len(self.found)} self-attention modules with "
                f"query/key projections ({_QK_NAMES}) but the config has "
                f"{dims.num_hidden_layers} layers; this architecture is not supported for "
                "attention KD (use KDWeights(attention=0))")
        n = len(self.found)
        self._q: list[Any] = [None] * n
        self._k: list[Any] = [None] * n
        self._bias: list[Any] = [None] * n
        self._handles: list[Any] = []

    def attach(self) -> ScoreRecorder:
        if self._handles:
            return self
        for j, (owner, q, k) in enumerate(self.found):
            self._handles.append(q.register_forward_hook(
                lambda m, i, o, j=j: self._q.__setitem__(j, o)))
            self._handles.append(k.register_forward_hook(
                lambda m, i, o, j=j: self._k.__setitem__(j, o)))
            params = list(inspect.signature(owner.forward).parameters)
            if "position_bias" in params:  # MPNet: a relative position bias is added
                pos = params.index("position_bias")
                self._handles.append(owner.register_forward_pre_hook(
                    lambda m, a, kw, j=j, pos=pos: self._bias.__setitem__(
                        j, kw.get("position_bias", a[pos] if len(a) > pos else None)),
                    with_kwargs=True))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> ScoreRecorder:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def scores(self, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """``[B, heads, T, T]`` per layer from the last forward pass."""
        if any(q is None for q in self._q):
            raise TeacherError("no forward pass recorded; run the model with the recorder "
                               "attached first")
        keep = attention_mask.bool()
        masked = ~(keep[:, None, :, None] & keep[:, None, None, :])
        out = []
        for q, k, bias in zip(self._q, self._k, self._bias, strict=True):
            b, t, width = q.shape
            d = width // self.heads
            qh = q.view(b, t, self.heads, d).transpose(1, 2)
            kh = k.view(b, t, self.heads, d).transpose(1, 2)
            s = (qh @ kh.transpose(-1, -2)) / d ** 0.5
            if isinstance(bias, torch.Tensor):
                s = s + bias
            out.append(s.masked_fill(masked, MASK_FILL))
        return out


@torch.no_grad()
def teacher_forward(model: nn.Module, batch: dict[str, torch.Tensor],
                    recorder: ScoreRecorder) -> dict[str, Any]:
    """``hidden_states`` (embedding output first), pre-softmax ``attention_scores`` and
    ``logits`` (None for a bare encoder) of one batch."""
    out = model(**_inputs(model, batch), output_hidden_states=True)
    return {"hidden_states": tuple(out.hidden_states),
            "attention_scores": recorder.scores(batch["attention_mask"]),
            "logits": getattr(out, "logits", None)}


class LiveTeacher:
    """Runs the teacher at every step (no cache) for :func:`distill.train.distill`."""

    def __init__(self, model: nn.Module, inputs: EncodedTexts) -> None:
        self.model, self.inputs = model.eval(), inputs
        self.config = teacher_dims(model.config)
        self.recorder = ScoreRecorder(model).attach()

    def targets(self, indices: np.ndarray, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        self.model.to(batch["input_ids"].device).eval()
        return teacher_forward(self.model, batch, self.recorder)


# ----------------------------------------------------------------------------- fine-tuning
def load_task(task: str, cache_dir: str | Path | None = None) -> Any:
    """The ``DatasetDict`` of an embedded sentiment task or a GLUE task."""
    return get_task_spec(task).load(cache_dir)


def default_max_length(task: str) -> int:
    """The task's default truncation length in tokens."""
    return get_task_spec(task).max_length


def finetuned_teacher_dir(task: str = "movie_binary", teacher_dir: str | Path | None = None, *,
                          epochs: float = 1.0, lr: float = 5e-5, batch_size: int = 32,
                          max_length: int | None = None, seed: int = 0,
                          warmup_ratio: float = 0.1, cache_dir: str | Path | None = None,
                          data: Any = None) -> tuple[Path, dict[str, Any]]:
    """Where :func:`finetune_teacher` with these settings saves (or saved) its teacher:
    ``(<cache>/teachers/<task>-<key>, settings)``; the folder may not exist yet. The key
    covers the task (a file task's name and ``data_fingerprint``: the files' bytes), the
    base teacher's weights and every setting."""
    spec = get_task_spec(task)
    base = _check_folder(teacher_dir if teacher_dir is not None
                         else ensure_asset("teacher", cache_dir))
    settings = {"task": spec.name, "base": folder_fingerprint(base), "base_dir": str(base),
                "epochs": epochs, "lr": lr, "batch_size": batch_size,
                "max_length": max_length or default_max_length(task), "seed": seed,
                "warmup_ratio": warmup_ratio}
    if spec.data_fingerprint is not None:  # a file task: the files' bytes and settings
        settings["data_fingerprint"] = spec.data_fingerprint
    if data is not None:
        settings["data"] = hashlib.sha256(repr(data[spec.train_split][:50]).encode()).hexdigest()
    keyed = {k: v for k, v in settings.items() if k != "base_dir"}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return root / "teachers" / f"{spec.name}-{key}", settings


def is_finetuned(folder: str | Path) -> bool:
    """True when ``folder`` holds a completed :func:`finetune_teacher` result."""
    return (Path(folder) / _DONE).is_file()


def finetune_teacher(task: str = "movie_binary", teacher_dir: str | Path | None = None, *,
                     epochs: float = 1.0, lr: float = 5e-5, batch_size: int = 32,
                     max_length: int | None = None, seed: int = 0, warmup_ratio: float = 0.1,
                     cache_dir: str | Path | None = None, device: str | None = None,
                     progress: bool = True, force: bool = False, data: Any = None) -> Path:
    """Fine-tune the teacher on ``task`` once; return the saved folder (reused when present).

    The folder (see :func:`finetuned_teacher_dir`) is keyed by the task, the base
    teacher's weights and every setting; ``teacher.json`` in it records the settings, the
    held-out metrics and the wall time. ``data``: a ``DatasetDict`` instead of ``task``'s.
    """
    spec = get_task_spec(task)
    out, settings = finetuned_teacher_dir(task, teacher_dir, epochs=epochs, lr=lr,
                                          batch_size=batch_size, max_length=max_length,
                                          seed=seed, warmup_ratio=warmup_ratio,
                                          cache_dir=cache_dir, data=data)
    base = Path(settings["base_dir"])
    if is_finetuned(out) and not force:
        return out
    ds = data if data is not None else load_task(task, cache_dir)
    tokenizer = load_tokenizer(base)
    train = encode_split(ds[spec.train_split], tokenizer, spec, settings["max_length"])
    torch.manual_seed(seed)  # the new classifier head
    model = load_teacher(base, num_labels=spec.num_labels, is_regression=spec.is_regression)
    start = time.perf_counter()
    result = finetune(model, train, TrainConfig(
        epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, warmup_ratio=warmup_ratio,
        device=device, progress=progress, desc=f"teacher {spec.name}"),
        is_regression=spec.is_regression)
    if result.diverged:
        raise TrainingError(f"teacher fine-tuning on {spec.name} diverged at step "
                            f"{result.diverged_step}; lower lr (was {lr})")
    metrics = {}
    for split in spec.eval_splits:
        if split in ds:
            held = encode_split(ds[split], tokenizer, spec, settings["max_length"])
            metrics[split] = evaluate(model, held, spec.metric_names,
                                      is_regression=spec.is_regression, device=device)
    if spec.label_names:  # so the folder predicts with the task's label names
        model.config.id2label = dict(enumerate(spec.label_names))
        model.config.label2id = {n: i for i, n in enumerate(spec.label_names)}
    staging = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    (staging / _DONE).write_text(json.dumps({
        "settings": settings, "metrics": metrics, "steps": result.steps,
        "wall_seconds": time.perf_counter() - start}, indent=2) + "\n")
    publish_folder(staging, out, _DONE, replace=force)
    return out


def publish_folder(staging: Path, out: Path, marker: str, replace: bool = False) -> None:
    """Move a finished staging folder into place; if another process already published a
    complete ``out`` (its ``marker`` file exists), keep that one unless ``replace``."""
    if (out / marker).is_file() and not replace:
        shutil.rmtree(staging, ignore_errors=True)
        return
    shutil.rmtree(out, ignore_errors=True)
    staging.replace(out)


def teacher_info(folder: str | Path) -> dict[str, Any]:
    """The ``teacher.json`` record of a fine-tuned teacher folder ({} if absent)."""
    path = Path(folder) / _DONE
    return json.loads(path.read_text()) if path.is_file() else {}


# ----------------------------------------------------------------------------- student init
@torch.no_grad()
def init_student_from_teacher(student: nn.Module, teacher: nn.Module,
                              fit_dense: nn.Module | None = None) -> None:
    """Initialize a student's embeddings from the teacher's (TinyBERT / MiniLM style).

    With ``P`` the top ``H_s`` right singular vectors of the teacher's word embeddings:
    word vectors are the teacher's projected on the top ``e`` directions (``e`` = the
    student's word width), the word projection (if any) maps them into the ``P`` basis,
    position and token-type vectors are the teacher's times ``P``, and ``fit_dense``
    (Linear ``H_s -> H_t``) starts as ``P``. The vocabularies must be equal.
    """
    word_t = teacher.get_input_embeddings().weight.detach().float().cpu()
    emb_s = student.embeddings
    if emb_s.word.weight.shape[0] != word_t.shape[0]:
        raise TeacherError(f"vocabulary sizes differ: student {emb_s.word.weight.shape[0]}, "
                           f"teacher {word_t.shape[0]}; give the student the teacher's "
                           "vocab_size (and tokenizer)")
    h_t, e, h_s = word_t.shape[1], emb_s.word.weight.shape[1], student.config.hidden
    vt = torch.linalg.svd(word_t, full_matrices=False).Vh  # [H_t, H_t]
    basis = torch.zeros(h_t, h_s)
    basis[:, :min(h_s, h_t)] = vt[:min(h_s, h_t)].T  # P
    top_e = torch.zeros(h_t, e)
    top_e[:, :min(e, h_t)] = vt[:min(e, h_t)].T
    dev = emb_s.word.weight.device
    if emb_s.project is None:
        emb_s.word.weight.copy_((word_t @ basis).to(dev))
    else:
        emb_s.word.weight.copy_((word_t @ top_e).to(dev))
        block = (basis.T @ top_e).to(dev)  # [H_s, e]
        emb_s.project.weight.zero_()
        mid = e if emb_s.trigram else 0  # [next, this, prev]: the middle block is this token
        emb_s.project.weight[:, mid:mid + e] = block
        emb_s.project.bias.zero_()
    tables = getattr(teacher.base_model, "embeddings", None)
    for own, attr in ((emb_s.position, "position_embeddings"),
                      (emb_s.token_type, "token_type_embeddings")):
        theirs = getattr(tables, attr, None)
        if isinstance(theirs, nn.Embedding):
            n = min(own.weight.shape[0], theirs.weight.shape[0])
            own.weight[:n] = (theirs.weight[:n].float().cpu() @ basis).to(dev)
    if isinstance(fit_dense, nn.Linear):
        fit_dense.weight.copy_(basis.to(fit_dense.weight.device))
        fit_dense.bias.zero_()
