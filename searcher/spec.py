"""The plain data a scorer receives: picklable, no search state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from mlpgraph import Graph


class LayerChoice(NamedTuple):
    """Per layer ``(graph, stacks, d_inner)``: also accepted as a ``distill`` layer spec."""

    graph: Graph
    stacks: int
    d_inner: int


@dataclass(frozen=True)
class CandidateSpec:
    """What a scorer gets for one candidate. ``layers`` work directly as
    ``distill.config.StudentConfig`` layers and with ``distill.score.score``; graphs travel
    as graphs (hash-consed nodes survive pickling into worker processes)."""

    candidate_id: str
    hidden: int
    layers: tuple[LayerChoice, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"candidate_id": self.candidate_id, "hidden": self.hidden,
                "layers": [[str(g), s, k] for g, s, k in self.layers]}
