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
from functools import cached_property, lru_cache
from typing import Any

import mlpgraph
from mlpgraph import Graph, Space
from mlpgraph.errors import loads_json

from .errors import CandidateError
from .spec import CandidateSpec, LayerChoice

FORMAT = "efficientbert.candidate/1"
__all__ = ["FORMAT", "Candidate", "CandidateSpec", "LayerChoice", "LayerGene", "Lineage",
           "MutationRecord", "graph_key", "graph_text", "parse_ratio", "seed_candidates",
           "uniform_candidate"]


@lru_cache(maxsize=8192)
def graph_key(graph: Graph) -> str:
    """``mlpgraph.canonical_key`` of a graph, memoized (graphs are hash-consed)."""
    return mlpgraph.canonical_key(graph)


@lru_cache(maxsize=8192)
def graph_text(graph: Graph) -> str:
    """The graph as expression text (parses back to the same graph)."""
    return mlpgraph.format(graph)


def parse_ratio(value: Any) -> Fraction:
    """A width ratio from ``Fraction``, ``"1/2"``, ``0.5`` or ``1``."""
    try:
        r = value if isinstance(value, Fraction) else Fraction(str(value)).limit_denominator(64)
    except (ValueError, ZeroDivisionError):
        raise CandidateError(f"ratio {value!r} is not a number; write it as '1/2' or 0.5") from None
    if r <= 0:
        raise CandidateError(f"ratio {value!r} must be positive")
    return r


# ----------------------------------------------------------------------- genes
@dataclass(frozen=True)
class LayerGene:
    """One layer's MLP choice: ``graph`` applied ``stacks`` times at inner width
    ``ratio * hidden``."""

    graph: Graph
    stacks: int
    ratio: Fraction

    @property
    def expr(self) -> str:
        return graph_text(self.graph)

    @property
    def key(self) -> str:
        """Canonical key of the expression plus ``s`` and ratio."""
        return f"{graph_key(self.graph)}#s{self.stacks}#r{self.ratio}"

    def d_inner(self, hidden: int) -> int:
        """The inner width ``k`` at model width ``hidden`` (at least 1)."""
        return max(1, int(self.ratio * hidden))

    def to_dict(self) -> dict[str, Any]:
        return {"expr": self.expr, "stacks": self.stacks, "ratio": str(self.ratio),
                "graph": self.graph.to_list()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "layer") -> LayerGene:
        if not isinstance(data, dict) or "stacks" not in data or "ratio" not in data or \
                not ("graph" in data or "expr" in data):
            raise CandidateError(f"{where}: expected {{expr or graph, stacks, ratio}}, "
                                 f"got {data!r}")
        try:
            graph = Graph.from_list(data["graph"]) if "graph" in data else \
                mlpgraph.parse(data["expr"])
        except mlpgraph.MLPGraphError as e:
            raise CandidateError(f"{where}: the expression does not load: {e}") from None
        stacks = data["stacks"]
        if isinstance(stacks, bool) or not isinstance(stacks, int) or stacks < 1:
            raise CandidateError(f"{where}: stacks={stacks!r} must be a positive integer")
        return cls(graph, stacks, parse_ratio(data["ratio"]))


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
    """One point of the search: a :class:`LayerGene` per Transformer layer, plus lineage."""

    layers: tuple[LayerGene, ...]
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

    def with_layer(self, index: int, gene: LayerGene) -> Candidate:
        layers = list(self.layers)
        layers[index] = gene
        return Candidate(tuple(layers), self.lineage)

    def with_lineage(self, lineage: Lineage) -> Candidate:
        return replace(self, lineage=lineage)

    def spec(self, hidden: int) -> CandidateSpec:
        """The scorer's input at model width ``hidden``."""
        return CandidateSpec(self.id, hidden, tuple(
            LayerChoice(g.graph, g.stacks, g.d_inner(hidden)) for g in self.layers))

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
        return " | ".join(f"{g.expr} @ {g.stacks}x{g.ratio}" for g in self.layers)

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
        layers = tuple(LayerGene.from_dict(d, f"layer {i + 1}")
                       for i, d in enumerate(data["layers"]))
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
    graph = mlpgraph.parse(expr) if isinstance(expr, str) else expr
    gene = LayerGene(graph, stacks, parse_ratio(ratio))
    return Candidate((gene,) * num_layers, lineage or Lineage())


def seed_candidates(space: Space, num_layers: int) -> list[Candidate]:
    """The space's seed expressions (the standard FFN) at every ``(s, ratio)``, uniform over
    the layers, in a fixed order (expression, then s, then ratio)."""
    return [uniform_candidate(e, s, r, num_layers)
            for e in space.seed_expressions for s in space.stacks for r in space.ratios]
