"""Controllers behind one interface, so they compare on equal evaluation budgets.

``propose(n) -> list[Candidate]`` returns up to ``n`` feasible candidates;
``observe(observations)`` receives the outcome of *every* proposal of the last
``propose`` call, in proposal order; ``state_dict()`` / ``load_state_dict()`` round-trip
through JSON. All randomness comes from one ``random.Random(seed)``.

- :class:`RegularizedEvolution` (``"evolution"``): aging evolution with tournament
  selection (Real et al. 2019), seeded with the standard FFN at every ``(s, ratio)``;
  optional islands with ring migration and optional crossover.
- :class:`PaperController` (``"paper"``): the reference's controller: every proposal is
  1..``max_mutations`` mutations (subtree replacement, node replacement, insertion, and
  ``s``/ratio changes in stage 1) of a *seed*, never of an earlier winner, never crossover
  (the reference's LightGBM sample filter is not implemented: docs/decisions.md).
- :class:`RandomSampling` (``"random"``): independent random members of the space.

Each kind is declared once, with :func:`controller` on its class; its options (the
``ControllerSpec`` fields it takes) are the keyword-only parameters of its ``__init__``.
:data:`CONTROLLERS` is the registry the configuration's choices derive from.
"""

from __future__ import annotations

import inspect
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from mlpgraph import MLPLayer, Space

from .candidate import Candidate, Lineage
from .crossover import crossover_genes, crossover_subtree
from .errors import RegistryError, SearchConfigError
from .mutations import DEFAULT_TABLE, GENES, PAPER_MUTATIONS, MutationContext, MutationTable, mutate

Fitness = tuple[int, float, float]  # (rung, score there, tie-break); larger is better
Feasible = Callable[[Candidate], bool]


@dataclass(frozen=True)
class Observation:
    """The outcome of one proposal: ``fitness`` is ``None`` for a failed or diverged one."""

    candidate: Candidate
    fitness: Fitness | None


def _rng_state(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _set_rng_state(rng: random.Random, state: list[Any]) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


def _fit(v: Any) -> Fitness | None:
    return None if v is None else (int(v[0]), float(v[1]), float(v[2]) if len(v) > 2 else 0.0)


class Controller(ABC):
    """Common machinery: RNG, mutation context, the feasibility filter, the seeds."""

    kind: ClassVar[str] = ""  # set by @controller
    options: ClassVar[tuple[str, ...]] = ()  # set by @controller: the kind's own options

    def __init__(self, space: Space, seeds: Sequence[Candidate], *, seed: int = 0,
                 genes: frozenset[str] = frozenset(GENES),
                 table: MutationTable = DEFAULT_TABLE, feasible: Feasible | None = None,
                 max_tries: int = 50) -> None:
        self.space = space
        self.rng = random.Random(seed)
        self.ctx = MutationContext(space, self.rng)
        self.genes = frozenset(genes)
        self.table = table.for_genes(self.genes)
        self.feasible: Feasible = feasible or (lambda c: True)
        self.max_tries = max_tries
        all_seeds = list(seeds)
        self.seeds = [s for s in all_seeds if self.feasible(s)]
        if not self.seeds:
            raise SearchConfigError("param_window", f"none of the {len(all_seeds)} seed "
                                    "candidates satisfies the parameter/latency budget; widen "
                                    "the window, raise the latency budget or give a base "
                                    "candidate inside it")
        self.proposed = 0
        self.observed = 0
        self.unproductive = 0  # proposals for which no feasible candidate was found

    # ----------------------------------------------------------- interface
    def propose(self, n: int = 1) -> list[Candidate]:
        out = []
        for _ in range(n):
            cand = self._one()
            if cand is None:
                self.unproductive += 1
            else:
                self.proposed += 1
                out.append(cand)
        return out

    def observe(self, observations: Sequence[Observation]) -> None:
        self.observed += len(observations)
        self._observe(observations)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rng": _rng_state(self.rng), "proposed": self.proposed,
                "observed": self.observed, "unproductive": self.unproductive,
                "mutation_counters": [self.ctx.built, self.ctx.guard_rejections],
                **self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise SearchConfigError("controller", f"saved state is for controller "
                                    f"{state.get('kind')!r}, not {self.kind!r}; resume with "
                                    "the configuration the run was started with")
        _set_rng_state(self.rng, state["rng"])
        self.proposed, self.observed = int(state["proposed"]), int(state["observed"])
        self.unproductive = int(state["unproductive"])
        self.ctx.built, self.ctx.guard_rejections = map(int, state["mutation_counters"])
        self._load(state)

    # ------------------------------------------------------------- helpers
    def mutant(self, parent: Candidate, count: int = 1,
               table: MutationTable | None = None) -> Candidate | None:
        """``parent`` after ``count`` mutations, feasible and different from it."""
        table = table or self.table
        for _ in range(self.max_tries):
            child, records = parent, []
            for _ in range(count):
                out = mutate(child, table, self.ctx)
                if out is None:
                    break
                child, rec = out
                records.append(rec)
            if records and child.id != parent.id and self.feasible(child):
                return child.with_lineage(Lineage("mutation", (parent.id,), tuple(records)))
        return None

    @abstractmethod
    def _one(self) -> Candidate | None: ...

    def _observe(self, observations: Sequence[Observation]) -> None:
        return None

    def _state(self) -> dict[str, Any]:
        return {}

    def _load(self, state: dict[str, Any]) -> None:
        return None


#: the controllers by kind, in declaration order (:func:`controller` adds to it)
CONTROLLERS: dict[str, type[Controller]] = {}
C = TypeVar("C", bound=type[Controller])


def controller(name: str, *, replace: bool = False) -> Callable[[C], C]:
    """Declare the decorated :class:`Controller` subclass as controller kind ``name``; its
    options are the keyword-only parameters its ``__init__`` (and its bases' up to
    :class:`Controller`) add, each a ``ControllerSpec`` field of the same name."""
    def register(cls: C) -> C:
        if not (isinstance(cls, type) and issubclass(cls, Controller)):
            raise RegistryError(f"@controller({name!r}) decorates {cls!r}; it must be a "
                                "subclass of searcher.controller.Controller")
        if name in CONTROLLERS and not replace:
            raise RegistryError(f"controller {name!r} is already declared; choose another "
                                "name or pass replace=True")
        cls.kind, cls.options = name, _own_options(cls)
        CONTROLLERS[name] = cls
        return cls
    return register


def _own_options(cls: type[Controller]) -> tuple[str, ...]:
    base = set(inspect.signature(Controller.__init__).parameters)
    names: dict[str, None] = {}
    for klass in cls.__mro__:
        if klass is Controller or not issubclass(klass, Controller):
            break
        if "__init__" in vars(klass):
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.kind is p.KEYWORD_ONLY and p.name not in base:
                    names[p.name] = None
    return tuple(names)


@controller("evolution")
class RegularizedEvolution(Controller):
    """Aging evolution: tournament of ``sample_size``, the oldest member dies."""

    def __init__(self, space: Space, seeds: Sequence[Candidate], *, population: int = 16,
                 sample_size: int = 4, islands: int = 1, migration_interval: int = 0,
                 crossover_prob: float = 0.0, crossover: str = "genes", **kw: Any) -> None:
        super().__init__(space, seeds, **kw)
        if islands < 1 or population < islands:
            raise SearchConfigError("islands", f"{islands} islands for a population of "
                                    f"{population}: need 1 <= islands <= population")
        if not 1 <= sample_size <= population // islands:
            raise SearchConfigError("sample_size", f"{sample_size} must be between 1 and the "
                                    f"island population {population // islands}")
        if not 0.0 <= crossover_prob <= 1.0 or crossover not in ("genes", "subtree"):
            raise SearchConfigError("crossover", f"crossover_prob={crossover_prob} must be in "
                                    f"[0, 1] and crossover={crossover!r} 'genes' or 'subtree'")
        self.population, self.sample_size, self.islands = population, sample_size, islands
        self.capacity = population // islands
        self.migration_interval, self.crossover_prob = migration_interval, crossover_prob
        self.crossover = crossover
        self.initial = max(population, len(self.seeds))
        self.pops: list[list[tuple[Candidate, Fitness]]] = [[] for _ in range(islands)]
        self.pending: list[int] = []  # island of each proposal not yet observed
        self.children = 0  # observed non-initial proposals (drives migration)

    def tournament(self, pop: list[tuple[Candidate, Fitness]]) -> Candidate:
        picks = self.rng.sample(range(len(pop)), min(self.sample_size, len(pop)))
        best = max(picks, key=lambda i: pop[i][1])  # first of equals wins
        return pop[best][0]

    def _one(self) -> Candidate | None:
        k = self.proposed + self.unproductive
        island = k % self.islands
        if k < self.initial:
            cand = self.seeds[k] if k < len(self.seeds) else \
                self.mutant(self.rng.choice(self.seeds))
        elif not self.pops[island]:
            cand = self.mutant(self.rng.choice(self.seeds))
        else:
            cand = self._child(self.pops[island])
        if cand is not None:
            self.pending.append(island)
        return cand

    def _child(self, pop: list[tuple[Candidate, Fitness]]) -> Candidate | None:
        parent = self.tournament(pop)
        if self.crossover_prob and len(pop) > 1 and self.rng.random() < self.crossover_prob:
            other = self.tournament(pop)
            child = crossover_genes(parent, other, self.ctx, self.genes) \
                if self.crossover == "genes" else \
                (crossover_subtree(parent, other, self.ctx) if "expr" in self.genes else None)
            if child is not None and child.id not in (parent.id, other.id) and \
                    self.feasible(child):
                return child
        return self.mutant(parent)

    def _observe(self, observations: Sequence[Observation]) -> None:
        first = self.observed - len(observations)  # number of this batch's first observation
        for j, obs in enumerate(observations):
            island = self.pending.pop(0)
            if obs.fitness is not None:
                self._push(island, obs.candidate, obs.fitness)
            if first + j >= self.initial:
                self.children += 1
                if self.migration_interval and self.islands > 1 and \
                        self.children % self.migration_interval == 0:
                    self._migrate()

    def _push(self, island: int, cand: Candidate, fitness: Fitness) -> None:
        pop = self.pops[island]
        pop.append((cand, fitness))
        while len(pop) > self.capacity:
            pop.pop(0)

    def _migrate(self) -> None:
        """Ring migration: each island's best joins the next island as its youngest member."""
        best = [max(p, key=lambda m: m[1]) if p else None for p in self.pops]
        for i, b in enumerate(best):
            if b is not None:
                self._push((i + 1) % self.islands, *b)

    def _state(self) -> dict[str, Any]:
        return {"pops": [[[c.to_dict(), list(f)] for c, f in p] for p in self.pops],
                "pending": list(self.pending), "children": self.children}

    def _load(self, state: dict[str, Any]) -> None:
        self.pops = [[(Candidate.from_dict(c), _fit(f)) for c, f in p] for p in state["pops"]]
        self.pending = [int(i) for i in state["pending"]]
        self.children = int(state["children"])


@controller("paper")
class PaperController(Controller):
    """Mutations of the seeds only (see the module doc); ``observe`` changes nothing."""

    def __init__(self, space: Space, seeds: Sequence[Candidate], *, max_mutations: int = 3,
                 **kw: Any) -> None:
        super().__init__(space, seeds, **kw)
        if max_mutations < 1:
            raise SearchConfigError("max_mutations", f"{max_mutations} must be >= 1")
        self.max_mutations = max_mutations
        keep = [m for m in self.table if m.name in PAPER_MUTATIONS]
        self.paper_table = MutationTable(keep)

    def _one(self) -> Candidate | None:
        parent = self.rng.choice(self.seeds)
        return self.mutant(parent, self.rng.randint(1, self.max_mutations), self.paper_table)


@controller("random")
class RandomSampling(Controller):
    """Independent samples: every allowed gene drawn at random; masked genes from a seed."""

    def _one(self) -> Candidate | None:
        rng, sp = self.rng, self.space
        for _ in range(self.max_tries * 4):
            base = rng.choice(self.seeds)
            layers = []
            for g in base.layers:
                graph = self.ctx.grower.random_member() if "expr" in self.genes else g.graph
                s = rng.choice(sp.stacks) if "stacks" in self.genes else g.stacks
                r = rng.choice(sp.ratios) if "ratio" in self.genes else g.ratio
                layers.append(MLPLayer(graph, s, r))
            cand = Candidate(tuple(layers), Lineage("random"))
            if self.feasible(cand):
                return cand
        return None


def make_controller(kind: str, space: Space, seeds: Sequence[Candidate],
                    **options: Any) -> Controller:
    """A controller by kind, one of :data:`CONTROLLERS` (``"evolution"``, ``"paper"``,
    ``"random"`` or a plugin's)."""
    try:
        cls = CONTROLLERS[kind]
    except KeyError:
        raise SearchConfigError("controller", f"unknown controller {kind!r}; choose one of "
                                f"{', '.join(CONTROLLERS)}") from None
    return cls(space, seeds, **options)
