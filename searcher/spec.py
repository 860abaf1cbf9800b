"""The plain data a scorer receives: picklable, no search state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlpgraph import MLPLayer


@dataclass(frozen=True)
class CandidateSpec:
    """What a scorer gets for one candidate: its id, the model width and one
    :class:`mlpgraph.MLPLayer` per layer (what ``distill.score`` builds a student from;
    graphs travel as graphs: hash-consed nodes survive pickling into worker processes)."""

    candidate_id: str
    hidden: int
    layers: tuple[MLPLayer, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"candidate_id": self.candidate_id, "hidden": self.hidden,
                "layers": [[g.expr, g.stacks, g.d_inner(self.hidden)] for g in self.layers]}
