"""Never evaluate the same candidate twice.

Two candidates are duplicates when their ids are equal (every layer has the same
canonical key, ``s`` and ratio: same simplified graphs) or when their *functional*
fingerprints are equal (every layer computes the same function on ``mlpgraph``'s seeded
probes, with the same ``s`` and ratio), which catches equalities no rewrite rule shows.
A duplicate is not evaluated: the search looks up the earlier result. The hit rate is
reported in :class:`DedupeStats`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from functools import lru_cache

import mlpgraph
from mlpgraph import Graph

from .candidate import Candidate


@lru_cache(maxsize=8192)
def graph_fingerprint(graph: Graph) -> str:
    """``mlpgraph.fingerprint``, memoized."""
    return mlpgraph.fingerprint(graph)


def functional_key(cand: Candidate) -> str:
    """Hash of the per-layer ``(fingerprint, s, ratio)``."""
    text = "|".join(f"{graph_fingerprint(g.graph)}#s{g.stacks}#r{g.ratio}" for g in cand.layers)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


@dataclass
class DedupeStats:
    """How many proposals were looked up and how many were duplicates, by kind."""

    lookups: int = 0
    key_hits: int = 0
    fingerprint_hits: int = 0

    @property
    def hits(self) -> int:
        return self.key_hits + self.fingerprint_hits

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "hits": self.hits, "hit_rate": self.hit_rate}


class Deduper:
    """Maps candidate ids and functional keys to the id of the first candidate seen."""

    def __init__(self, use_fingerprint: bool = True) -> None:
        self.use_fingerprint = use_fingerprint
        self.by_key: dict[str, str] = {}
        self.by_function: dict[str, str] = {}
        self.stats = DedupeStats()

    def lookup(self, cand: Candidate) -> tuple[str, str] | None:
        """``(kind, original id)`` if ``cand`` duplicates a known candidate, else ``None``;
        ``kind`` is ``"key"`` or ``"fingerprint"``. Counts toward the stats."""
        self.stats.lookups += 1
        hit = self.by_key.get(cand.id)
        if hit is not None:
            self.stats.key_hits += 1
            return "key", hit
        if self.use_fingerprint:
            hit = self.by_function.get(functional_key(cand))
            if hit is not None:
                self.stats.fingerprint_hits += 1
                return "fingerprint", hit
        return None

    def add(self, cand: Candidate) -> None:
        """Remember ``cand`` as evaluated (or about to be)."""
        self.by_key.setdefault(cand.id, cand.id)
        if self.use_fingerprint:
            self.by_function.setdefault(functional_key(cand), cand.id)

    def check_and_add(self, cand: Candidate) -> tuple[str, str] | None:
        hit = self.lookup(cand)
        if hit is None:
            self.add(cand)
        return hit

    def load_stats(self, d: dict[str, int]) -> None:
        self.stats = DedupeStats(int(d.get("lookups", 0)), int(d.get("key_hits", 0)),
                                 int(d.get("fingerprint_hits", 0)))
