"""Student configuration: one dataclass, JSON load/save, validation that names the field.

A student is a BERT-style encoder whose every layer has its own MLP *expression*
(an :class:`mlpgraph.Graph`, written in JSON as text such as ``W2(relu(W1(x) * x))``),
applied ``stacks`` times with inner width ``d_inner``. Inside the program a
:class:`LayerSpec` carries the graph; text appears only at the edges (JSON files,
``(text, stacks, d_inner)`` tuples, which :func:`as_layer_spec` parses). Shipped
configurations live in ``distill/configs/`` and load by name::

    from distill.config import load_config
    cfg = load_config("efficientbert_paper")      # or a path to any JSON file
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlpgraph

from .errors import ConfigError

CONFIG_DIR = Path(__file__).with_name("configs")
#: the standard BERT feed-forward network as an expression
STANDARD_FFN = "W2(gelu(W1(x)))"
FORMAT = "efficientbert.student/1"


@dataclass(frozen=True)
class LayerSpec:
    """The MLP of one Transformer layer: the expression ``graph`` applied ``stacks`` times,
    each with its own weights and its own ``LayerNorm(h + Dropout(f(h)))`` wrapper, at
    inner width ``d_inner`` (the width ``k`` of the expression)."""

    graph: mlpgraph.Graph
    stacks: int = 1
    d_inner: int = 1536

    def __post_init__(self) -> None:
        if not isinstance(self.graph, mlpgraph.Graph):
            raise ConfigError("graph", f"a LayerSpec holds an mlpgraph.Graph, got "
                              f"{type(self.graph).__name__} {self.graph!r}; parse text with "
                              "mlpgraph.parse, or use as_layer_spec((text, stacks, d_inner))")

    @property
    def expr(self) -> str:
        """The expression as text (how JSON files and reports write it)."""
        return mlpgraph.format(self.graph)

    def to_dict(self) -> dict[str, Any]:
        """``{"expr": text, "stacks": s, "d_inner": k}``, the JSON form."""
        return {"expr": self.expr, "stacks": self.stacks, "d_inner": self.d_inner}


@dataclass
class StudentConfig:
    """Every size and option of a student encoder (see ``distill/configs/*.json``)."""

    layers: list[LayerSpec]  # one MLP choice per Transformer layer, bottom to top
    vocab_size: int = 30522  # WordPiece vocabulary (BERT-uncased, as the teachers use)
    hidden: int = 384  # model width d; must be divisible by ``heads``
    heads: int = 12  # attention heads; equal to the teacher's for attention-map KD
    max_position: int = 512  # learned absolute position embeddings
    type_vocab: int = 2  # token type (segment) embeddings
    layer_norm_eps: float = 1e-12  # BERT's LayerNorm epsilon
    dropout: float = 0.1  # on embeddings, residual branches and before the classifier
    attention_dropout: float = 0.1  # on the attention probabilities
    num_labels: int = 2  # classifier outputs; 1 when ``is_regression``
    is_regression: bool = False  # a single real-valued output trained with MSE
    # Embedding options (MobileBERT-style factorization, used by the paper):
    # word vectors of width ``embedding_size`` (None: ``hidden``, no projection); with
    # ``trigram`` the vectors of tokens t-1, t, t+1 ... are concatenated ([next, this, prev],
    # zero past the ends) and a Linear(3 * embedding_size -> hidden) maps them to the model
    # width; without it a Linear(embedding_size -> hidden) is used when the widths differ.
    embedding_size: int | None = None
    trigram: bool = False
    initializer_range: float = 0.02  # std of the normal init of linear/embedding weights

    def __post_init__(self) -> None:
        self.layers = [as_layer_spec(spec, i) for i, spec in enumerate(self.layers)]
        self.validate()

    # ------------------------------------------------------------- derived sizes
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def word_width(self) -> int:
        """Width of the word embedding table."""
        return self.embedding_size if self.embedding_size is not None else self.hidden

    @property
    def num_outputs(self) -> int:
        return 1 if self.is_regression else self.num_labels

    def graphs(self) -> list[mlpgraph.Graph]:
        return [spec.graph for spec in self.layers]

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field and how to fix it."""
        for name in ("vocab_size", "hidden", "heads", "max_position", "type_vocab", "num_labels"):
            _positive_int(getattr(self, name), name)
        if self.hidden % self.heads:
            near = self.heads * max(1, round(self.hidden / self.heads))
            raise ConfigError(
                "hidden", f"hidden={self.hidden} is not divisible by heads={self.heads}; choose "
                f"a multiple of {self.heads} (e.g. {near}) or change heads")
        for name in ("dropout", "attention_dropout"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1:
                raise ConfigError(name, f"{name}={p!r} must be a probability in [0, 1)")
        for name in ("layer_norm_eps", "initializer_range"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise ConfigError(name, f"{name}={v!r} must be a positive number")
        for name in ("is_regression", "trigram"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"{name}={getattr(self, name)!r} must be true or false")
        if self.is_regression and self.num_labels != 1:
            raise ConfigError("num_labels", f"a regression student has one output, but "
                              f"num_labels={self.num_labels}; set num_labels to 1")
        if self.embedding_size is not None:
            _positive_int(self.embedding_size, "embedding_size")
        if not self.layers:
            raise ConfigError("layers", "a student needs at least one layer; give a list of "
                              f'{{"expr": "{STANDARD_FFN}", "stacks": 1, "d_inner": ...}}')
        for i, spec in enumerate(self.layers):
            _positive_int(spec.stacks, f"layers[{i}].stacks")
            _positive_int(spec.d_inner, f"layers[{i}].d_inner")

    # ---------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; layers as ``{"expr": text, "stacks", "d_inner"}``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["layers"] = [spec.to_dict() for spec in self.layers]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        """Build from a dict (as written by :meth:`to_dict`); unknown keys are errors."""
        if not isinstance(data, dict):
            raise ConfigError("<root>", f"expected a JSON object, got {type(data).__name__}")
        data = {k: v for k, v in data.items() if k not in ("format", "comment")}
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(key, f"unknown field {key!r}{hint} (fields: "
                                  f"{', '.join(sorted(known))})")
        if "layers" not in data:
            raise ConfigError("layers", "missing; give one {expr, stacks, d_inner} per layer")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **self.to_dict()}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "<string>") -> StudentConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError("<root>", f"{source} is not valid JSON: {e}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> StudentConfig:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError("<file>", f"cannot read config {path}: {e}") from None
        try:
            return cls.from_json(text, source=str(path))
        except ConfigError as e:
            raise ConfigError(e.field, f"in {path}: {e.reason}") from None

    def replace(self, **changes: Any) -> StudentConfig:
        """A validated copy with some fields changed (e.g. ``layers=...``)."""
        return dataclasses.replace(self, **changes)


def available_configs() -> list[str]:
    """Names of the configurations shipped in ``distill/configs/``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | Path) -> StudentConfig:
    """A shipped configuration by name (``"efficientbert_paper"``) or any JSON file."""
    path = Path(name_or_path)
    if path.suffix != ".json" or not path.exists():
        shipped = CONFIG_DIR / f"{name_or_path}.json"
        if shipped.exists():
            path = shipped
        elif not path.exists():
            raise ConfigError("<file>", f"no config file {str(name_or_path)!r} and no shipped "
                              f"config of that name (shipped: {', '.join(available_configs())})")
    return StudentConfig.load(path)


def as_layer_spec(spec: Any, i: int = 0) -> LayerSpec:
    """A :class:`LayerSpec` from itself, a JSON dict ``{expr, stacks, d_inner}`` or a
    ``(Graph or text, stacks, d_inner)`` tuple; errors name ``layers[i]``."""
    if isinstance(spec, LayerSpec):
        return spec
    if isinstance(spec, dict):
        allowed = {"expr", "stacks", "d_inner"}
        extra = set(spec) - allowed
        if extra or "expr" not in spec:
            what = f"unknown key(s) {sorted(extra)}" if extra else "no 'expr'"
            raise ConfigError(f"layers[{i}]", f"{what}; a layer is {{expr, stacks, d_inner}}")
        rest = {k: v for k, v in spec.items() if k != "expr"}
        return LayerSpec(_graph(spec["expr"], i), **rest)
    if isinstance(spec, list | tuple) and len(spec) == 3:
        return LayerSpec(_graph(spec[0], i), spec[1], spec[2])
    raise ConfigError(f"layers[{i}]", f"expected a LayerSpec, a dict or (graph or text, "
                      f"stacks, d_inner), got {spec!r}")


def _graph(value: Any, i: int) -> mlpgraph.Graph:
    if isinstance(value, mlpgraph.Graph):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"layers[{i}].expr", f"expected expression text or an mlpgraph.Graph, "
                          f"got {type(value).__name__}")
    try:
        return mlpgraph.parse(value)
    except mlpgraph.MLPGraphError as e:
        raise ConfigError(f"layers[{i}].expr",
                          f"{value!r} is not a valid MLP expression: {e}") from None


def _positive_int(v: Any, name: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(name, f"{name}={v!r} must be a positive integer")
