"""Controllers directly: JSON state round trip, aging, islands and migration."""

from __future__ import annotations

import json

import pytest

import mlpgraph
from searcher.candidate import seed_candidates
from searcher.controller import CONTROLLERS, Observation, RegularizedEvolution, make_controller
from searcher.errors import SearchConfigError


def _score(c) -> float:
    return sum(len(g.expr) * g.stacks for g in c.layers) % 97 / 97


def _drive(ctrl, steps: int, batch: int = 3) -> list[str]:
    ids = []
    for _ in range(steps):
        props = ctrl.propose(batch)
        ids += [c.id for c in props]
        ctrl.observe([Observation(c, None if i == 1 else (0, _score(c), 0.0))
                      for i, c in enumerate(props)])
    return ids


@pytest.mark.parametrize("kind", sorted(CONTROLLERS))
def test_state_round_trips_through_json(kind):
    seeds = seed_candidates(mlpgraph.PAPER_SPACE, 2)
    opts = {"population": 6, "sample_size": 2, "islands": 2, "migration_interval": 2,
            "crossover_prob": 0.5} if kind == "evolution" else {}
    a = make_controller(kind, mlpgraph.PAPER_SPACE, seeds, seed=7, **opts)
    _drive(a, 4)
    state = json.loads(json.dumps(a.state_dict()))
    b = make_controller(kind, mlpgraph.PAPER_SPACE, seeds, seed=999, **opts)
    b.load_state_dict(state)
    assert _drive(a, 5) == _drive(b, 5)  # same future from the restored state
    c = make_controller("random" if kind != "random" else "paper", mlpgraph.PAPER_SPACE,
                        seeds, seed=7)
    with pytest.raises(SearchConfigError, match="saved state is for controller"):
        c.load_state_dict(state)


def test_aging_islands_and_migration():
    seeds = seed_candidates(mlpgraph.PAPER_SPACE, 2)
    ev = RegularizedEvolution(mlpgraph.PAPER_SPACE, seeds, seed=1, population=8,
                              sample_size=2, islands=2, migration_interval=4)
    assert ev.capacity == 4 and ev.initial == 16  # all 16 seeds are proposed first
    first = ev.propose(16)
    assert [c.id for c in first] == [s.id for s in seeds]
    ev.observe([Observation(c, (0, float(i))) for i, c in enumerate(first)])
    for pop in ev.pops:  # aging: only the 4 youngest of each island survive
        assert len(pop) == 4
    assert [f for _, f in ev.pops[0]] == [(0, 8.0), (0, 10.0), (0, 12.0), (0, 14.0)]
    kids = ev.propose(4)
    assert all(k.lineage.origin == "mutation" for k in kids)
    ev.observe([Observation(k, None) for k in kids])  # failures never join a population
    assert ev.children == 4
    # ring migration after 4 children: each island's best joins the next as its youngest
    assert [f[1] for _, f in ev.pops[0]] == [10.0, 12.0, 14.0, 15.0]
    assert [f[1] for _, f in ev.pops[1]] == [11.0, 13.0, 15.0, 14.0]
    assert ev.pops[0][-1][0].id == first[15].id


def test_kinds_are_declared_once_with_their_options():
    """``@controller`` registers a class under its kind; its options are the keyword-only
    parameters its constructor adds, and ``ControllerSpec.options()`` hands exactly those."""
    import inspect

    from searcher.config import ControllerSpec
    from searcher.controller import Controller, PaperController, RandomSampling, controller
    from searcher.errors import RegistryError

    own = [p.name for p in inspect.signature(RegularizedEvolution.__init__).parameters.values()
           if p.kind is p.KEYWORD_ONLY]
    assert CONTROLLERS["evolution"] is RegularizedEvolution
    assert RegularizedEvolution.options == tuple(own) and RegularizedEvolution.kind == "evolution"
    assert (PaperController.options, RandomSampling.options) == (("max_mutations",), ())
    spec = ControllerSpec(kind="paper", max_mutations=2)
    assert spec.options() == {"max_mutations": 2}
    assert set(ControllerSpec().options()) == set(own)
    saved = dict(CONTROLLERS)
    try:
        @controller("sampler_t1")
        class Sampler(RandomSampling):
            def __init__(self, space, seeds, *, population: int = 8, **kw):
                super().__init__(space, seeds, **kw)
                self.population = population

        assert ControllerSpec(kind="sampler_t1", population=5).options() == {"population": 5}
        ctl = make_controller("sampler_t1", mlpgraph.PAPER_SPACE,
                              seed_candidates(mlpgraph.PAPER_SPACE, 2), seed=3, population=5)
        assert ctl.population == 5 and ctl.state_dict()["kind"] == "sampler_t1"
        with pytest.raises(RegistryError, match="already declared"):
            controller("sampler_t1")(Sampler)
        with pytest.raises(RegistryError, match="subclass of searcher.controller.Controller"):
            controller("not_one")(dict)

        @controller("odd_t1")
        class Odd(Controller):
            def __init__(self, space, seeds, *, temperature: float = 1.0, **kw):
                super().__init__(space, seeds, **kw)

            def _one(self):
                return None

        with pytest.raises(SearchConfigError, match="'odd_t1' takes option.*temperature"):
            ControllerSpec.load({"kind": "odd_t1"})
    finally:
        CONTROLLERS.clear()
        CONTROLLERS.update(saved)
    with pytest.raises(SearchConfigError, match="unknown controller 'sampler_t1'.*evolution"):
        ControllerSpec.load({"kind": "sampler_t1"})
