"""A BERT-style student encoder whose every layer runs its own MLP expression.

Layer ``l`` = post-LN multi-head self-attention, ``h = LayerNorm(h + Dropout(attn(h)))``,
then its MLP: the layer's expression applied ``stacks`` times, each application with
its own weights, ``h = LayerNorm(h + Dropout(f(h)))``. The output carries the logits,
every hidden state (embedding output first) and every layer's *pre-softmax* attention
scores, the inputs of the distillation losses in :mod:`distill.losses`.

Each MLP application is a :class:`GraphMLP`: the module ``mlpgraph.compile`` builds
(backend ``"eager"`` by default) with weight slots named ``fn.<linear>.weight`` /
``fn.<linear>.bias``, owning its parameters or, for a sub-network of a supernet,
borrowing the leading blocks of the supernet's; both run the same compiled code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

import mlpgraph
from mlpgraph.compiler import compile_graph
from mlpgraph.cost import linear_shapes
from mlpgraph.module import as_weight_pair, require_weights

from .compile_mode import compile_options
from .config import StudentConfig
from .errors import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
Pair = tuple[torch.Tensor, torch.Tensor | None]


class GraphMLP(nn.Module):
    """One application ``f(h)`` of an MLP expression at widths ``(d_model, d_inner)``.

    ``self.fn`` is the module ``mlpgraph.compile`` builds (backend ``"eager"`` unless
    asked; ``fn.backend``, ``fn.d_inner``, ``fn.code``...); its weight slots are named
    after the linears (``fn.W1.weight``, ...).
    Owned (``share_weights=False``): parameters of its own, copies of the leading blocks of
    ``weights`` if given (a missing bias becomes zeros), else normal(0, ``std``) weights
    and zero biases. Borrowed (``share_weights=True``): no parameters; ``weights``
    (linear name -> an ``nn.Linear``-like module or a ``(weight, bias)`` pair, e.g. a
    supernet's) are read at every call through their leading ``[:out, :in]`` blocks, so
    nothing is copied and gradients reach the owner. Both run the same compiled
    functional form.
    """

    def __init__(self, graph: mlpgraph.Graph, d_model: int, d_inner: int, *,
                 backend: str = "eager", weights: Mapping[str, Any] | None = None,
                 share_weights: bool = False, std: float = 0.02,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if share_weights and weights is None:
            raise ValueError("share_weights=True borrows weights; pass weights={linear: module}")
        if not share_weights:
            weights = _initial_weights(graph, d_model, d_inner, weights, std, generator)
        self.fn = compile_graph(graph, d_model, d_inner, backend, weights=weights,
                                share_weights=share_weights)

    @property
    def graph(self) -> mlpgraph.Graph:
        return self.fn.mlp_graph

    @property
    def borrowed(self) -> bool:
        return self.fn.borrowed

    def weights(self) -> dict[str, Pair]:
        """Linear name -> ``(weight [out, in], bias [out])`` as used by the forward pass."""
        return {name: (slot.weight, slot.bias) for name, slot in self.fn.slots.items()}

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fn(h)


def _initial_weights(graph: mlpgraph.Graph, d_model: int, d_inner: int,
                     weights: Mapping[str, Any] | None, std: float,
                     generator: torch.Generator | None) -> dict[str, Pair]:
    """Owned weights: ``weights`` with zero biases where they have none, or fresh ones."""
    if weights is not None:
        require_weights(graph, weights)
    out = {}
    for name, (o, i) in linear_shapes(graph, d_model, d_inner).items():
        if weights is None:
            out[name] = (torch.empty(o, i).normal_(0.0, std, generator=generator),
                         torch.zeros(o))
        else:
            w, b = as_weight_pair(weights[name], name)
            out[name] = (w, w.new_zeros(o) if b is None else b)
    return out


class MLPStack(nn.Module):
    """``stacks`` applications of an expression, each ``h = LayerNorm(h + Dropout(f(h)))``."""

    def __init__(self, units: list[GraphMLP], norms: list[nn.LayerNorm], dropout: float) -> None:
        super().__init__()
        self.units, self.norms = nn.ModuleList(units), nn.ModuleList(norms)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for f, norm in zip(self.units, self.norms, strict=True):
            h = norm(h + self.dropout(f(h)))
        return h


class SelfAttention(nn.Module):
    """Multi-head self-attention that also returns the pre-softmax scores."""

    def __init__(self, hidden: int, heads: int, attention_dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query, self.key = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.value, self.output = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(attention_dropout)

    def forward(self, h: torch.Tensor, key_masked: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, width = h.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        scores = q @ k.transpose(-1, -2) / self.head_dim ** 0.5  # [B, heads, T, T]
        if key_masked is not None:  # masked keys hold the dtype's most negative value
            scores = scores.masked_fill(key_masked, torch.finfo(scores.dtype).min)
        probs = self.dropout(scores.softmax(dim=-1))
        context = (probs @ v).transpose(1, 2).reshape(b, t, width)
        return self.output(context), scores


class EncoderLayer(nn.Module):
    """Post-LN attention block followed by the layer's stacked MLP."""

    def __init__(self, attention: SelfAttention, attn_norm: nn.LayerNorm, mlp: MLPStack,
                 dropout: float) -> None:
        super().__init__()
        self.attention, self.attn_norm, self.mlp = attention, attn_norm, mlp
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, key_masked: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        a, scores = self.attention(h, key_masked)
        h = self.attn_norm(h + self.dropout(a))
        return self.mlp(h), scores


class Embeddings(nn.Module):
    """Word (optionally factorized, MobileBERT 3-gram) + position + token type, LN, dropout."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        e, h = cfg.word_width, cfg.hidden
        self.trigram, self.max_position = cfg.trigram, cfg.max_position
        self.word = nn.Embedding(cfg.vocab_size, e)
        in_width = 3 * e if cfg.trigram else e
        self.project = nn.Linear(in_width, h) if in_width != h or cfg.trigram else None
        self.position = nn.Embedding(cfg.max_position, h)
        self.token_type = nn.Embedding(cfg.type_vocab, h)
        self.norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        if t > self.max_position:
            raise ValueError(f"sequence length {t} exceeds max_position={self.max_position}; "
                             "truncate the inputs or use a config with more positions")
        x = self.word(input_ids)
        if self.trigram:  # [token t+1, token t, token t-1], zeros past the ends
            x = torch.cat([F.pad(x[:, 1:], (0, 0, 0, 1)), x, F.pad(x[:, :-1], (0, 0, 1, 0))], -1)
        if self.project is not None:
            x = self.project(x)
        x = x + self.position.weight[:t] + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))


@dataclass
class StudentOutput:
    """What a forward pass returns (all tensors on the input's device)."""

    logits: torch.Tensor  # [B, num_labels] ([B, 1] for regression)
    hidden_states: tuple[torch.Tensor, ...]  # embedding output, then each layer: [B, T, H]
    attention_scores: tuple[torch.Tensor, ...]  # per layer, pre-softmax [B, heads, T, T];
    # masked keys hold torch.finfo(dtype).min
    pooled: torch.Tensor  # [B, H], tanh(pooler(first token))
    attention_mask: torch.Tensor  # [B, T], 1 = real token, 0 = padding


class Student(nn.Module):
    """The student encoder with a pooler and a classification / regression head."""

    def __init__(self, config: StudentConfig, *, backend: str = "eager",
                 seed: int | None = None) -> None:
        super().__init__()
        self.config, self.backend = config, backend
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            self._build(config, backend)
        self.reset_parameters(seed)

    def _build(self, config: StudentConfig, backend: str) -> None:
        h, p, eps = config.hidden, config.dropout, config.layer_norm_eps
        self.embeddings = Embeddings(config)
        layers = []
        for layer in config.layers:
            units = [GraphMLP(layer.graph, h, layer.d_inner(h), backend=backend)
                     for _ in range(layer.stacks)]
            norms = [nn.LayerNorm(h, eps=eps) for _ in range(layer.stacks)]
            attention = SelfAttention(h, config.heads, config.attention_dropout)
            layers.append(EncoderLayer(attention, nn.LayerNorm(h, eps=eps),
                                       MLPStack(units, norms, p), p))
        self.layers = nn.ModuleList(layers)
        self.pooler = nn.Linear(h, h)
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(h, config.num_outputs)

    @classmethod
    def assemble(cls, config: StudentConfig, embeddings: Embeddings, layers: list[EncoderLayer],
                 pooler: nn.Linear, classifier: nn.Linear, *, backend: str = "eager") -> Student:
        """A student from ready-made parts (used by supernet extraction; no initialization)."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.config, self.backend = config, backend
        self.embeddings, self.layers = embeddings, nn.ModuleList(layers)
        self.pooler, self.dropout, self.classifier = pooler, nn.Dropout(config.dropout), classifier
        return self

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """BERT init: normal(0, initializer_range) weights, zero biases, unit LayerNorms.
        With ``seed`` the result does not depend on (nor advance) the global RNG."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.initializer_range
        norms = [m for m in self.modules() if isinstance(m, nn.LayerNorm)]
        for m in norms:
            m.weight.fill_(1.0)
            m.bias.zero_()
        skip = {id(p) for m in norms for p in m.parameters()}
        for p in self.parameters():
            if id(p) in skip:
                continue
            if p.dim() == 1:
                p.zero_()
            elif p.device.type == "cpu":
                p.normal_(0.0, std, generator=gen)
            else:  # draw on the CPU so the values do not depend on the device
                p.copy_(torch.empty(p.shape, dtype=p.dtype).normal_(0.0, std, generator=gen))

    # -------------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> StudentOutput:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        key_masked = (attention_mask == 0)[:, None, None, :]
        h = self.embeddings(input_ids, token_type_ids)
        hidden, scores = [h], []
        for layer in self.layers:
            h, s = layer(h, key_masked)
            hidden.append(h)
            scores.append(s)
        pooled = torch.tanh(self.pooler(h[:, 0]))
        logits = self.classifier(self.dropout(pooled))
        return StudentOutput(logits, tuple(hidden), tuple(scores), pooled, attention_mask)

    # ------------------------------------------------------------------ compiling
    def compile_forward(self, **options: Any) -> Student:
        """Compile the whole forward pass (attention, MLPs, LayerNorms, head) with
        ``torch.compile`` (``options`` pass through, e.g. ``dynamic=True``); returns self.

        One graph per model, so Inductor fuses the elementwise work of the whole layer
        (bias, residual, dropout, LayerNorm, the MLP's ops), in the forward and in the
        backward AOTAutograd derives from it; state dict keys do not change. Compiled
        artifacts are cached on disk (Inductor's FX graph cache, AOTAutograd's cache, under
        ``TORCHINDUCTOR_CACHE_DIR``), so another process compiling the same structure pays
        much less. Build the student with ``backend="eager"`` (the default): the MLPs are
        then plain FX code that the whole-model graph takes in. See
        :func:`distill.compile_mode.compiled_kd_step` to compile the loss with the forward.

        Dropout masks come from torch's own RNG (Inductor's ``fallback_random``, unless
        ``options={"fallback_random": False}``): the same masks as the eager model for a
        seed.
        """
        self.compile(**compile_options(options))
        return self

    # ------------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        return self.pooler.weight.device

    def expressions(self) -> list[str]:
        return [layer.expr for layer in self.config.layers]

    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        """Parameters of this architecture (borrowed MLP slices counted at their size)."""
        counts = count_parameters(self.config)
        return counts["total"] - (counts["embeddings"] if exclude_embeddings else 0)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``config.json`` (with the expressions) and ``model.safetensors``."""
        return write_checkpoint(path, self.config.to_json(), self)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, backend: str = "eager",
                        device: str | torch.device | None = None) -> Student:
        path = Path(path)
        if not (path / CONFIG_NAME).is_file():
            raise CheckpointError(f"{path} has no {CONFIG_NAME}; save a student with "
                                  "Student.save_pretrained(path) first")
        model = cls(StudentConfig.load(path / CONFIG_NAME), backend=backend)
        read_checkpoint(path, model)
        model.eval()  # as Hugging Face models load: call .train() to fine-tune
        return model.to(device) if device is not None else model


def _normal_key(key: str) -> str:
    """State-dict key without wrapper segments added by ``torch.compile``."""
    return key.replace("_orig_mod.", "")


def write_checkpoint(path: str | Path, config_json: str, module: nn.Module,
                     extra: dict[str, Any] | None = None) -> Path:
    """Save ``module``'s weights as safetensors beside its config (and optional JSON extras)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_NAME).write_text(config_json, encoding="utf-8")
    if extra is not None:
        for name, data in extra.items():
            (path / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    state = {_normal_key(k): v.detach().to("cpu").contiguous()
             for k, v in module.state_dict().items()}
    save_file(state, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    return path


def read_checkpoint(path: str | Path, module: nn.Module) -> None:
    """Load ``model.safetensors`` from ``path`` into ``module``; name any key mismatch."""
    file = Path(path) / WEIGHTS_NAME
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; the folder must hold {WEIGHTS_NAME}")
    saved = load_file(str(file))
    keys = {_normal_key(k): k for k in module.state_dict()}
    missing, unexpected = sorted(set(keys) - set(saved)), sorted(set(saved) - set(keys))
    if missing or unexpected:
        raise CheckpointError(
            f"{file} does not match its config: missing {missing[:5]}{'...' * (len(missing) > 5)}"
            f", unexpected {unexpected[:5]}{'...' * (len(unexpected) > 5)}; was config.json "
            "edited after saving?")
    try:
        module.load_state_dict({keys[k]: v for k, v in saved.items()})
    except RuntimeError as e:
        raise CheckpointError(f"{file} does not match its config: {e}") from None


def count_parameters(config: StudentConfig) -> dict[str, int]:
    """Parameters by part (embeddings, attention, mlp, head, total), computed from the config."""
    h, e = config.hidden, config.word_width
    emb = config.vocab_size * e + (config.max_position + config.type_vocab) * h + 2 * h
    proj_in = 3 * e if config.trigram else e
    if proj_in != h or config.trigram:
        emb += proj_in * h + h
    attention = config.num_layers * (4 * (h * h + h) + 2 * h)
    mlp = sum(layer.params(h) for layer in config.layers)
    head = h * h + h + (h + 1) * config.num_outputs
    return {"embeddings": emb, "attention": attention, "mlp": mlp, "head": head,
            "total": emb + attention + mlp + head}
