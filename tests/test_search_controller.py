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
