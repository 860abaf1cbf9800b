"""The plain data a scorer receives (kept free of heavy imports, so worker processes that
unpickle it start fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class LayerChoice(NamedTuple):
    """Per layer ``(expr, stacks, d_inner)``: also accepted as a ``distill`` layer spec."""

    expr: str
    stacks: int
    d_inner: int


@dataclass(frozen=True)
class CandidateSpec:
    """What a scorer gets for one candidate: picklable, no graphs, no search state.
    ``layers`` work directly as ``distill.config.StudentConfig`` layers and with
    ``distill.score.score``."""

    candidate_id: str
    hidden: int
    layers: tuple[LayerChoice, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"candidate_id": self.candidate_id, "hidden": self.hidden,
                "layers": [list(c) for c in self.layers]}
