"""Candidates: per-layer genes (expression graph, stack count ``s``, width ratio), a stable
id from canonical keys, JSON round trip, lineage, and the plain :class:`CandidateSpec`
handed to the scorer.

A candidate's id depends only on *what it computes structurally*: the canonical key
(the simplified graph) of each layer's expression plus its ``s`` and ratio. Two
candidates that print differently but simplify to the same graphs share an id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cached_property
from typing import Any

from mlpgraph import Graph, LayerError, MLPLayer, Space
from mlpgraph.errors import loads_json

from .errors import CandidateError
from .spec import CandidateSpec

FORMAT = "efficientbert.candidate/1"
__all__ = ["FORMAT", "Candidate", "CandidateSpec", "Lineage", "MutationRecord",
           "seed_candidates", "uniform_candidate"]


@dataclass(frozen=True)
class MutationRecord:
    """One applied mutation: its table name, the layer it touched and its arguments
    (JSON-able: the site as text, the chosen op, the old and new values, ...)."""

    name: str
    layer: int
    args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.layer, "args": self.args}


@dataclass(frozen=True)
class Lineage:
    """Where a candidate came from: ``origin`` is ``"seed"``, ``"random"``, ``"mutation"``
    or ``"crossover"``; ``parents`` are candidate ids; ``mutations`` in the order applied."""

    origin: str = "seed"
    parents: tuple[str, ...] = ()
    mutations: tuple[MutationRecord, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"origin": self.origin, "parents": list(self.parents),
                "mutations": [m.to_dict() for m in self.mutations]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lineage:
        muts = tuple(MutationRecord(m["name"], int(m["layer"]), dict(m.get("args", {})))
                     for m in data.get("mutations", ()))
        return cls(str(data.get("origin", "seed")), tuple(data.get("parents", ())), muts)


# ------------------------------------------------------------------ candidate
@dataclass(frozen=True)
class Candidate:
    """One point of the search: an :class:`mlpgraph.MLPLayer` per Transformer layer (its
    gene: expression, ``s``, ratio), plus lineage."""

    layers: tuple[MLPLayer, ...]
    lineage: Lineage = Lineage()

    def __post_init__(self) -> None:
        if not self.layers:
            raise CandidateError("a candidate needs at least one layer")

    @cached_property
    def id(self) -> str:
        """16 hex digits from the layers' canonical keys, ``s`` and ratios (not lineage)."""
        h = hashlib.blake2b("|".join(g.key for g in self.layers).encode(), digest_size=8)
        return h.hexdigest()

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def with_layer(self, index: int, gene: MLPLayer) -> Candidate:
        layers = list(self.layers)
        layers[index] = gene
        return Candidate(tuple(layers), self.lineage)

    def with_lineage(self, lineage: Lineage) -> Candidate:
        return replace(self, lineage=lineage)

    def spec(self, hidden: int) -> CandidateSpec:
        """The scorer's input at model width ``hidden``."""
        return CandidateSpec(self.id, hidden, self.layers)

    def violations(self, space: Space) -> list[str]:
        """Every way this candidate is outside ``space`` (``"layer 2: ..."`` strings)."""
        out = []
        for i, g in enumerate(self.layers):
            out += [f"layer {i + 1}: {v}" for v in space.violations(g.graph)]
            if g.stacks not in space.stacks:
                out.append(f"layer {i + 1}: stacks {g.stacks} not in {list(space.stacks)}")
            if g.ratio not in space.ratios:
                out.append(f"layer {i + 1}: ratio {g.ratio} not in "
                           f"{[str(r) for r in space.ratios]}")
        return out

    def check(self, space: Space) -> Candidate:
        """Return self if inside ``space``, else raise :class:`CandidateError`."""
        bad = self.violations(space)
        if bad:
            raise CandidateError(f"candidate {self.id} is outside space {space.name!r}: "
                                 + "; ".join(bad))
        return self

    def describe(self) -> str:
        """One line: ``expr @ s x ratio`` per layer."""
        return " | ".join(g.describe() for g in self.layers)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "id": self.id, "layers": [g.to_dict() for g in self.layers],
                "lineage": self.lineage.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
            raise CandidateError("expected a candidate object with a 'layers' list, got "
                                 f"{type(data).__name__}")
        try:
            layers = tuple(MLPLayer.from_dict(d, f"layer {i + 1}")
                           for i, d in enumerate(data["layers"]))
        except LayerError as e:
            raise CandidateError(str(e)) from None
        cand = cls(layers, Lineage.from_dict(data.get("lineage") or {}))
        if "id" in data and data["id"] != cand.id:
            raise CandidateError(f"stored id {data['id']} does not match the layers (id "
                                 f"{cand.id}); the file was edited or written by another "
                                 "key version; drop the 'id' field to accept the layers")
        return cand

    @classmethod
    def from_json(cls, text: str) -> Candidate:
        return cls.from_dict(loads_json(
            text, lambda why: CandidateError(f"candidate JSON does not parse: {why}")))


def uniform_candidate(expr: str | Graph, stacks: int, ratio: Fraction | str,
                      num_layers: int, lineage: Lineage | None = None) -> Candidate:
    """The same ``(expr, s, ratio)`` in every layer (the paper's seeds)."""
    gene = MLPLayer.of(expr, stacks, ratio)
    return Candidate((gene,) * num_layers, lineage or Lineage())


def seed_candidates(space: Space, num_layers: int) -> list[Candidate]:
    """The space's seed expressions (the standard FFN) at every ``(s, ratio)``, uniform over
    the layers, in a fixed order (expression, then s, then ratio)."""
    return [uniform_candidate(e, s, r, num_layers)
            for e in space.seed_expressions for s in space.stacks for r in space.ratios]
