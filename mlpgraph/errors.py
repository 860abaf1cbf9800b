"""Error types of mlpgraph: one ``ValueError`` subclass per kind of bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def loads_json(text: str, error: Callable[[str], ValueError]) -> Any:
    """``json.loads(text)``, raising ``error(what the JSON parser said)`` for bad JSON, so
    each caller reports it as its own kind of error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(str(e)) from None


class MLPGraphError(ValueError):
    """Base class of every error mlpgraph raises for bad input."""


class ParseError(MLPGraphError):
    """Text that is not a valid expression. Carries ``line``, ``column`` and a caret line."""

    def __init__(self, message: str, text: str = "", pos: int = 0) -> None:
        self.text = text
        self.pos = pos
        before = text[:pos]
        self.line = before.count("\n") + 1
        self.column = pos - (before.rfind("\n") + 1) + 1
        src_line = text.split("\n")[self.line - 1]
        caret = " " * (self.column - 1) + "^"
        self.message = message
        super().__init__(
            f"{message} (line {self.line}, column {self.column})\n  {src_line}\n  {caret}"
        )


class GraphTypeError(MLPGraphError):
    """A graph whose widths do not fit together; the message names the offending node."""


class PrimitiveError(MLPGraphError):
    """A primitive declaration that failed a registration check, or an unknown primitive."""


class SpaceError(MLPGraphError):
    """A graph that is well-typed but outside a search space (see ``mlpgraph.space``)."""


class SerializationError(MLPGraphError):
    """A serialized graph (JSON / RecExpr list) that is malformed."""


class WidthError(MLPGraphError):
    """Integer widths that do not fit a graph (e.g. missing ``d_inner`` or bad weight shapes)."""


class BackendError(MLPGraphError):
    """A compile backend that is unknown, unsupported by the installed torch, or misused."""


class LayerError(MLPGraphError):
    """A layer's MLP choice (graph, stacks, ratio) that is malformed (``mlpgraph.MLPLayer``)."""


class UnsafeFileError(SerializationError):
    """A file refused unread because loading it could run code: a pickle, or an archive that
    ``torch.load``/``torch.export.load`` would unpickle or evaluate (``mlpgraph.exported``)."""
