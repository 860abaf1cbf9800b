"""Student configuration: one pydantic model, JSON load/save, validation that names the field.

A student is a BERT-style encoder whose every layer holds an :class:`mlpgraph.MLPLayer`: an
expression graph (written in JSON as text such as ``W2(relu(W1(x) * x))``) applied
``stacks`` times at inner width ``ratio * hidden``. Inside the program the layer carries the
graph; text appears only at the edges: JSON files write a layer as ``{"expr", "stacks",
"d_inner"}`` (``{"expr", "stacks", "ratio"}`` is read too), and ``(graph or text, stacks,
d_inner)`` tuples are accepted wherever layers are given. Shipped configurations live in
``distill/configs/`` and load by name::

    from distill.config import load_config
    cfg = load_config("efficientbert_paper")      # or a path to any JSON file

A bad value raises :class:`~distill.errors.ConfigError` naming its field (``hidden``,
``layers[2].expr``); :func:`student_schema` is the JSON schema of a config file.
"""

from __future__ import annotations

import difflib
import json
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)

import mlpgraph
from mlpgraph import STANDARD_FFN, MLPLayer

from .errors import ConfigError

CONFIG_DIR = Path(__file__).with_name("configs")
FORMAT = "efficientbert.student/1"
_LAYER_KEYS = ("expr", "stacks", "d_inner", "ratio")

Count = Annotated[int, Field(strict=True, gt=0)]
Probability = Annotated[float, Field(strict=True, ge=0.0, lt=1.0)]
Positive = Annotated[float, Field(strict=True, gt=0.0)]
Flag = Annotated[bool, Field(strict=True)]
Layer = Annotated[MLPLayer, WithJsonSchema({
    "type": "object", "required": ["expr", "stacks"],
    "properties": {"expr": {"type": "string", "description": "the MLP expression"},
                   "stacks": {"type": "integer", "minimum": 1},
                   "d_inner": {"type": "integer", "minimum": 1,
                               "description": "inner width k (or give ratio)"},
                   "ratio": {"type": ["string", "number"],
                             "description": "k / hidden, e.g. '1/2' (or give d_inner)"}}})]


class StudentConfig(BaseModel):
    """Every size and option of a student encoder (see ``distill/configs/*.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    vocab_size: Count = Field(30522, description="WordPiece vocabulary (BERT-uncased, as the "
                              "teachers use)")
    hidden: Count = Field(384, description="model width d; must be divisible by heads")
    heads: Count = Field(12, description="attention heads; equal to the teacher's for "
                         "attention-map KD")
    max_position: Count = Field(512, description="learned absolute position embeddings")
    type_vocab: Count = Field(2, description="token type (segment) embeddings")
    layer_norm_eps: Positive = Field(1e-12, description="BERT's LayerNorm epsilon")
    dropout: Probability = Field(0.1, description="on embeddings, residual branches and "
                                 "before the classifier")
    attention_dropout: Probability = Field(0.1, description="on the attention probabilities")
    num_labels: Count = Field(2, description="classifier outputs; 1 when is_regression")
    is_regression: Flag = Field(False, description="a single real-valued output trained "
                                "with MSE")
    embedding_size: Count | None = Field(None, description=(
        "width of the word vectors (MobileBERT-style factorization, used by the paper); "
        "None: hidden, no projection. Without trigram a Linear(embedding_size -> hidden) maps "
        "them to the model width when the widths differ"))
    trigram: Flag = Field(False, description=(
        "concatenate the word vectors of tokens t+1, t, t-1 (zero past the ends) and map "
        "them with a Linear(3 * embedding_size -> hidden)"))
    initializer_range: Positive = Field(0.02, description="std of the normal init of "
                                        "linear and embedding weights")
    layers: list[Layer] = Field(description=(
        "one MLP choice per Transformer layer, bottom to top: {expr, stacks, d_inner} (or "
        "ratio instead of d_inner)"))

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise _config_error(e) from None

    # ---------------------------------------------------------------- validation
    @field_validator("layers", mode="before")
    @classmethod
    def _layers(cls, value: Any, info: ValidationInfo) -> list[MLPLayer]:
        if "hidden" not in info.data:  # hidden is bad: its own error comes first
            raise ValueError("layers need a valid hidden width")
        if not isinstance(value, list | tuple) or not value:
            raise ConfigError("layers", "a student needs at least one layer; give a list of "
                              f'{{"expr": "{STANDARD_FFN}", "stacks": 1, "d_inner": ...}}')
        return [as_layer(v, info.data["hidden"], i) for i, v in enumerate(value)]

    @model_validator(mode="after")
    def _check(self) -> StudentConfig:
        if self.hidden % self.heads:
            near = self.heads * max(1, round(self.hidden / self.heads))
            raise ConfigError(
                "hidden", f"hidden={self.hidden} is not divisible by heads={self.heads}; choose "
                f"a multiple of {self.heads} (e.g. {near}) or change heads")
        if self.is_regression and self.num_labels != 1:
            raise ConfigError("num_labels", f"a regression student has one output, but "
                              f"num_labels={self.num_labels}; set num_labels to 1")
        return self

    @field_serializer("layers")
    def _write_layers(self, layers: list[MLPLayer]) -> list[dict[str, Any]]:
        return [{"expr": la.expr, "stacks": la.stacks, "d_inner": la.d_inner(self.hidden)}
                for la in layers]

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
        return [layer.graph for layer in self.layers]

    # ---------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; layers as ``{"expr": text, "stacks", "d_inner"}``."""
        out = self.model_dump(mode="json")
        return {"layers": out.pop("layers"), **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        """Build from a dict (as written by :meth:`to_dict`); unknown keys are errors."""
        if not isinstance(data, dict):
            raise ConfigError("<root>", f"expected a JSON object, got {type(data).__name__}")
        return cls(**{k: v for k, v in data.items() if k not in ("format", "comment")})

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
        """A validated copy with some fields changed (e.g. ``layers=...``); layers keep their
        ratio, so a new ``hidden`` scales their widths."""
        return type(self)(**{**{k: getattr(self, k) for k in type(self).model_fields},
                             **changes})


def student_schema() -> dict[str, Any]:
    """The JSON schema of a student config file (field descriptions included)."""
    return StudentConfig.model_json_schema()


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


# ----------------------------------------------------------------------------- layers
def as_layer(value: Any, hidden: int, i: int = 0) -> MLPLayer:
    """An :class:`~mlpgraph.MLPLayer` from itself, a JSON dict ``{expr, stacks, d_inner}`` (or
    ``ratio``) or a ``(graph or text, stacks, d_inner)`` tuple, at model width ``hidden``;
    errors name ``layers[i]``."""
    if isinstance(value, MLPLayer):
        return value
    where = f"layers[{i}]"
    if isinstance(value, dict):
        extra = set(value) - set(_LAYER_KEYS)
        widths = [k for k in ("d_inner", "ratio") if k in value]
        if extra or "expr" not in value or len(widths) != 1:
            what = (f"unknown key(s) {sorted(extra)}" if extra else "no 'expr'"
                    if "expr" not in value else "give one of 'd_inner' or 'ratio'")
            raise ConfigError(where, f"{what}; a layer is {{expr, stacks, d_inner}} or "
                              "{expr, stacks, ratio}")
        graph, stacks = _graph(value["expr"], i), value.get("stacks", 1)
        _positive_int(stacks, f"{where}.stacks")
        if widths == ["ratio"]:
            try:
                return MLPLayer(graph, stacks, mlpgraph.parse_ratio(value["ratio"]))
            except mlpgraph.LayerError as e:
                raise ConfigError(f"{where}.ratio", str(e)) from None
        return _with_width(graph, stacks, value["d_inner"], hidden, where)
    if isinstance(value, list | tuple) and len(value) == 3:
        return _with_width(_graph(value[0], i), value[1], value[2], hidden, where)
    raise ConfigError(where, f"expected an MLPLayer, a dict or (graph or text, stacks, "
                      f"d_inner), got {value!r}")


def _with_width(graph: mlpgraph.Graph, stacks: Any, d_inner: Any, hidden: int,
                where: str) -> MLPLayer:
    _positive_int(stacks, f"{where}.stacks")
    _positive_int(d_inner, f"{where}.d_inner")
    return MLPLayer(graph, stacks, Fraction(d_inner, hidden))


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


def _config_error(err: ValidationError) -> ConfigError:
    """The first problem of a pydantic error as a :class:`ConfigError` naming its field."""
    e = err.errors()[0]
    cause = e.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    field = ".".join(map(str, e["loc"])) or "<root>"
    known = sorted(StudentConfig.model_fields)
    if e["type"] == "extra_forbidden":
        close = difflib.get_close_matches(field, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigError(field, f"unknown field {field!r}{hint} (fields: {', '.join(known)})")
    if e["type"] == "missing":
        return ConfigError(field, "missing; give one {expr, stacks, d_inner} per layer"
                           if field == "layers" else "missing")
    return ConfigError(field, f"{e['msg']} (got {e['input']!r:.80})")


__all__ = ["CONFIG_DIR", "FORMAT", "StudentConfig", "as_layer", "available_configs",
           "load_config", "student_schema"]
