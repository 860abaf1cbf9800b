"""A weight-sharing supernet and fast extraction of sub-networks from it.

The supernet is a :class:`~distill.student.Student` at maximal sizes: every layer
runs the standard FFN ``W2(gelu(W1(x)))`` at inner width ``d_inner = hidden``
(ratio 1), stacked ``max_stacks`` (4) times. A sub-network chooses per layer an
``(expression, s, k)`` and inherits, as in the paper:

- the first ``s`` stacks of the layer (each with its own weights and LayerNorm);
- for every linear of the expression, the leading block of a maximal supernet weight:
  ``weight[:out, :in]`` and ``bias[:out]``. The input projection (the first linear, in
  first-use order, mapping d -> k) inherits ``W1``, i.e. its first ``k`` rows; the
  output projection (the first linear mapping k or m -> d) inherits ``W2``, i.e. its
  first ``k`` (or ``m = min(d, k)``) columns. For the paper's expressions these are the
  linears named ``W1`` and ``W2``; the rule follows roles, not names, so the output
  ``W3`` of ``W3(silu(W1(x)) * W2(x))`` still inherits the trained ``W2``;
- embeddings, attention, pooler and classifier unchanged (same sizes everywhere).

Every other linear (a GLU's gate, a d -> d or k -> k layer) gets its own pool per
(layer, stack, linear name): a maximal ``[hidden, hidden]`` weight created on demand
and registered in :attr:`Supernet.extra` (key ``l{layer}_s{stack}_{name}``),
initialized as a copy of that stack's ``W1`` when the linear reads width d and of its
``W2`` otherwise; from then on it trains on its own. Create the pools before building
an optimizer with :meth:`Supernet.add_pools` (extraction creates missing ones).

Two modes:

``"copy"``
    an independent student owning copies of the inherited tensors (train a candidate).
``"view"``
    a student sharing the supernet's modules and borrowing its MLP weights (reading
    their leading blocks at every forward pass): no copy, gradients reach the supernet
    (score without training, or train the supernet on a random sub-network per step).

Both modes run each MLP through the same compiled functional form as any student
(:class:`~distill.student.GraphMLP`), on copied or on borrowed weights.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Literal

import torch
from torch import nn

import mlpgraph
from mlpgraph import STANDARD_FFN, MLPLayer, Width

from .config import StudentConfig, as_layer
from .errors import CheckpointError, ConfigError
from .student import (
    CONFIG_NAME,
    EncoderLayer,
    GraphMLP,
    MLPStack,
    Student,
    StudentOutput,
    read_checkpoint,
    write_checkpoint,
)

MAX_STACKS = 4
SUPERNET_NAME = "supernet.json"
Mode = Literal["copy", "view"]
#: a layer of a sub-network: an MLPLayer, or ``(graph or text, stacks, d_inner)``
LayerLike = MLPLayer | tuple[mlpgraph.Graph | str, int, int]


def supernet_config(config: StudentConfig, *, max_stacks: int = MAX_STACKS) -> StudentConfig:
    """``config`` with every layer replaced by ``max_stacks`` standard FFNs at ratio 1."""
    ffn = MLPLayer(mlpgraph.parse(STANDARD_FFN), max_stacks, Fraction(1))
    return config.replace(layers=[ffn] * config.num_layers)


class Supernet(nn.Module):
    """The maximal network; :meth:`extract` cuts sub-networks out of it.

    ``config`` supplies the sizes (hidden, heads, vocabulary, embedding, head); only
    the *number* of its layers is used, the layers themselves are the maximal FFNs.
    """

    def __init__(self, config: StudentConfig, *, max_stacks: int = MAX_STACKS,
                 seed: int | None = None, backend: str = "eager") -> None:
        super().__init__()
        if isinstance(max_stacks, bool) or not isinstance(max_stacks, int) or max_stacks < 1:
            raise ConfigError("max_stacks", f"max_stacks={max_stacks!r} must be an integer >= 1")
        self.max_stacks, self.backend = max_stacks, backend
        self.config = supernet_config(config, max_stacks=max_stacks)
        self.model = Student(self.config, backend=backend, seed=seed)
        self.extra = nn.ModuleDict()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> StudentOutput:
        """The maximal network (every stack, full width)."""
        return self.model(input_ids, attention_mask, token_type_ids)

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def hidden(self) -> int:
        return self.config.hidden

    # ----------------------------------------------------------------- weight pools
    def sources(self, layer: int, stack: int, graph: mlpgraph.Graph) -> dict[str, nn.Module]:
        """The maximal linear (a module with ``weight``/``bias``) each linear of ``graph``
        inherits in (``layer``, ``stack``) (0-based), creating missing extra pools (see
        the module doc)."""
        unit = self.model.layers[layer].mlp.units[stack]
        out = {}
        for name, role in pool_assignment(graph).items():
            if role != "extra":
                out[name] = unit.fn.slots[role]
                continue
            key = f"l{layer}_s{stack}_{name}"
            if key not in self.extra:
                reads_d = graph.linears[name][0] is Width.D
                w, b = unit.weights()["W1" if reads_d else "W2"]
                pool = nn.Linear(self.hidden, self.hidden, device=w.device, dtype=w.dtype)
                with torch.no_grad():
                    pool.weight.copy_(w)
                    pool.bias.copy_(b)
                self.extra[key] = pool
            out[name] = self.extra[key]
        return out

    def add_pools(self, graphs: Sequence[mlpgraph.Graph]) -> list[str]:
        """Create the extra pools ``graphs`` need in every layer and stack (call before
        building the optimizer). Returns the keys of the pools created."""
        before = set(self.extra)
        for graph in graphs:
            if not isinstance(graph, mlpgraph.Graph):
                raise TypeError(f"add_pools takes mlpgraph.Graph objects, got "
                                f"{type(graph).__name__} {graph!r}; parse text first "
                                "(mlpgraph.parse)")
            for layer in range(self.num_layers):
                for stack in range(self.max_stacks):
                    self.sources(layer, stack, graph)
        return sorted(set(self.extra) - before)

    # ------------------------------------------------------------------- extraction
    def extract(self, layer_specs: Sequence[LayerLike], *, mode: Mode = "copy",
                backend: str | None = None) -> Student:
        """A student with one :class:`~mlpgraph.MLPLayer` (or ``(expression, stacks,
        d_inner)``) per layer, inheriting weights."""
        return extract(self, layer_specs, mode=mode, backend=backend)

    # ---------------------------------------------------------------------- files
    def save_pretrained(self, path: str | Path) -> Path:
        """``config.json`` (the maximal config), ``supernet.json`` and ``model.safetensors``."""
        extra = {SUPERNET_NAME: {"max_stacks": self.max_stacks, "extra": sorted(self.extra)}}
        return write_checkpoint(path, self.config.to_json(), self, extra)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, backend: str = "eager",
                        device: str | torch.device | None = None) -> Supernet:
        path = Path(path)
        meta_file = path / SUPERNET_NAME
        if not meta_file.is_file() or not (path / CONFIG_NAME).is_file():
            raise CheckpointError(f"{path} is not a saved supernet (needs {CONFIG_NAME} and "
                                  f"{SUPERNET_NAME}); save one with Supernet.save_pretrained")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        net = cls(StudentConfig.load(path / CONFIG_NAME), max_stacks=meta["max_stacks"],
                  backend=backend)
        for key in meta["extra"]:
            net.extra[key] = nn.Linear(net.hidden, net.hidden)
        read_checkpoint(path, net)
        return net.to(device) if device is not None else net


def extract(supernet: Supernet, layer_specs: Sequence[LayerLike], *, mode: Mode = "copy",
            backend: str | None = None) -> Student:
    """Cut the sub-network ``layer_specs`` (one :class:`~mlpgraph.MLPLayer` or
    ``(graph, s, k)`` per layer; text is parsed) out of ``supernet``: ``mode="copy"`` gives an
    independent student, ``mode="view"`` one that shares the supernet's storage (see the
    module doc)."""
    if mode not in ("copy", "view"):
        raise ValueError(f"mode={mode!r}; use 'copy' (independent weights) or 'view' (shared)")
    backend = backend or supernet.backend
    d = supernet.hidden
    specs = [as_layer(s, d, i) for i, s in enumerate(layer_specs)]
    config = supernet.config.replace(layers=specs)  # validates types and expressions
    _check_specs(supernet, specs)
    share = (lambda m: m) if mode == "view" else copy.deepcopy
    model = supernet.model
    layers = []
    for li, spec in enumerate(specs):
        src = model.layers[li]
        units = [GraphMLP(spec.graph, d, spec.d_inner(d), backend=backend,
                          weights=supernet.sources(li, si, spec.graph),
                          share_weights=mode == "view") for si in range(spec.stacks)]
        norms = [share(src.mlp.norms[si]) for si in range(spec.stacks)]
        layers.append(EncoderLayer(share(src.attention), share(src.attn_norm),
                                   MLPStack(units, norms, config.dropout), config.dropout))
    student = Student.assemble(config, share(model.embeddings), layers, share(model.pooler),
                               share(model.classifier), backend=backend)
    return student.train(supernet.training)


def pool_assignment(graph: mlpgraph.Graph) -> dict[str, str]:
    """Linear name -> the pool it inherits: ``"W1"`` (the first d -> k linear), ``"W2"``
    (the first k or m -> d linear) or ``"extra"`` (its own pool), in first-use order."""
    out: dict[str, str] = {}
    for name, (w_in, w_out) in graph.linears.items():
        if "W1" not in out.values() and w_in is Width.D and w_out is Width.K:
            out[name] = "W1"
        elif "W2" not in out.values() and w_in in (Width.K, Width.M) and w_out is Width.D:
            out[name] = "W2"
        else:
            out[name] = "extra"
    return out


def _check_specs(supernet: Supernet, specs: list[MLPLayer]) -> None:
    if len(specs) != supernet.num_layers:
        raise ConfigError("layer_specs", f"{len(specs)} layer specs for a supernet of "
                          f"{supernet.num_layers} layers; give exactly one per layer")
    for i, spec in enumerate(specs):
        if not 1 <= spec.stacks <= supernet.max_stacks:
            raise ConfigError(f"layer_specs[{i}].stacks", f"stacks={spec.stacks} is outside "
                              f"1..{supernet.max_stacks}, the supernet's maximum")
        k = spec.d_inner(supernet.hidden)
        if not 1 <= k <= supernet.hidden:
            raise ConfigError(f"layer_specs[{i}].d_inner", f"d_inner={k} is outside "
                              f"1..{supernet.hidden} (the supernet's widths are ratio 1 of hidden)")
