"""Mutations, crossover and random members stay inside the space by construction."""

from __future__ import annotations

import random
import zlib
from fractions import Fraction

import pytest

import mlpgraph
from mlpgraph import PAPER_SPACE, WIDE_SPACE, MLPLayer
from searcher.candidate import Candidate, seed_candidates, uniform_candidate
from searcher.crossover import crossover_genes, crossover_subtree
from searcher.errors import MutationError
from searcher.graphedit import Grower
from searcher.mutations import (
    DEFAULT_TABLE,
    GENES,
    STAGE_GENES,
    Mutation,
    MutationContext,
    MutationTable,
    mutate,
)

SPACES = {"paper": PAPER_SPACE, "wide": WIDE_SPACE}
DRAWS = 2000
_POOLS: dict[str, list[MLPLayer]] = {}


def _pool(name: str) -> list[MLPLayer]:
    """Random members of the space (plus its seeds) at random (s, ratio), built once."""
    if name not in _POOLS:
        sp = SPACES[name]
        rng = random.Random(11)
        grower = Grower(sp, rng)
        graphs = [mlpgraph.parse(e) for e in sp.seed_expressions] + \
            [grower.random_member() for _ in range(250)]
        _POOLS[name] = [MLPLayer(g, rng.choice(sp.stacks), rng.choice(sp.ratios))
                        for g in graphs]
    return _POOLS[name]


@pytest.mark.parametrize("space", sorted(SPACES))
def test_random_members_are_valid(space):
    sp = SPACES[space]
    heights = set()
    for gene in _pool(space):
        assert sp.violations(gene.graph) == [], str(gene.graph)
        heights.add(gene.graph.ref_height)
    assert heights == set(range(sp.min_height, sp.max_height + 1))  # the whole window


@pytest.mark.parametrize("name", [m.name for m in DEFAULT_TABLE])
@pytest.mark.parametrize("space", sorted(SPACES))
def test_mutation_keeps_validity(space, name):
    sp, m = SPACES[space], DEFAULT_TABLE[name]
    rng = random.Random(zlib.crc32(f"{space}/{name}".encode()))
    ctx = MutationContext(sp, rng)
    pool = list(_pool(space))
    applied = 0
    for _ in range(DRAWS):
        gene = rng.choice(pool)
        out = m.fn(gene, ctx)
        if out is None:
            continue
        new, args = out
        applied += 1
        assert isinstance(args, dict)
        assert sp.violations(new.graph) == [], f"{name}: {gene.graph} -> {new.graph} {args}"
        assert new.stacks in sp.stacks and new.ratio in sp.ratios
        assert new != gene
        if m.gene == "expr":
            assert (new.stacks, new.ratio) == (gene.stacks, gene.ratio)
            assert sorted(new.graph.linears) == sorted(gene.graph.linears)
        else:
            assert new.graph == gene.graph
        if rng.random() < 0.15:  # chains of mutations, not only one step from the pool
            pool.append(new)
    if name == "swap_operands" and space == "paper":
        assert applied == 0  # every binary op of the paper's space is commutative
    else:  # swap_operands applies only where there is a non-commutative op (sub)
        assert applied > DRAWS * (0.4 if name == "swap_operands" else 0.8), (name, applied)
    # constructive: the final guard almost never has to refuse an edit
    assert ctx.guard_rejections <= max(3, ctx.built // 100), (ctx.built, ctx.guard_rejections)


def test_mutate_records_lineage_and_respects_stage_masks():
    rng = random.Random(0)
    ctx = MutationContext(PAPER_SPACE, rng)
    cand = uniform_candidate("W2(gelu(W1(x)))", 2, "1/2", 4)
    for stage, genes in STAGE_GENES.items():
        table = DEFAULT_TABLE.for_genes(genes)
        for _ in range(100):
            child, rec = mutate(cand, table, ctx)
            assert rec.name in table.entries and 0 <= rec.layer < 4
            changed = [i for i in range(4) if child.layers[i] != cand.layers[i]]
            assert changed == [rec.layer]
            a, b = cand.layers[rec.layer], child.layers[rec.layer]
            if stage == 2:
                assert (a.stacks, a.ratio) == (b.stacks, b.ratio)
            if stage == 3:
                assert a.graph == b.graph
            assert child.check(PAPER_SPACE) is child


def test_table_is_data():
    def noop_mutation(gene, ctx):
        return None

    t = DEFAULT_TABLE.add(Mutation("mine", noop_mutation, 2.0, "expr"))
    assert "mine" in t.entries and "mine" not in DEFAULT_TABLE.entries
    assert t.with_weights({"mine": 0.0}).weights()["mine"] == 0.0
    assert set(DEFAULT_TABLE.for_genes({"stacks"}).entries) == {"change_stacks"}
    with pytest.raises(MutationError, match="no mutation 'nope'"):
        DEFAULT_TABLE.with_weights({"nope": 1.0})
    with pytest.raises(MutationError, match="declares gene"):
        Mutation("bad", noop_mutation, 1.0, "width")
    with pytest.raises(MutationError, match="twice"):
        MutationTable([DEFAULT_TABLE["replace_op"], DEFAULT_TABLE["replace_op"]])
    assert set(GENES) == {"expr", "stacks", "ratio"}


def test_crossover_children_are_valid_and_differ():
    rng = random.Random(5)
    for sp in (PAPER_SPACE, WIDE_SPACE):
        ctx = MutationContext(sp, rng)
        pool = _pool(sp.name)
        for _ in range(200):
            a = Candidate(tuple(rng.choice(pool) for _ in range(3)))
            b = Candidate(tuple(rng.choice(pool) for _ in range(3)))
            for child in (crossover_genes(a, b, ctx, frozenset(GENES)),
                          crossover_subtree(a, b, ctx)):
                if child is None:
                    continue
                assert child.violations(sp) == []
                assert child.id not in (a.id, b.id)
                assert child.lineage.origin == "crossover"
                assert child.lineage.parents == (a.id, b.id)
        # gene-wise crossover under a stage-3 mask never moves an expression
        a = Candidate(tuple(pool[:3]))
        b = Candidate(tuple(pool[3:6]))
        for _ in range(20):
            child = crossover_genes(a, b, ctx, STAGE_GENES[3])
            if child is not None:
                assert [g.graph for g in child.layers] == [g.graph for g in a.layers]


def test_seeds_and_candidate_round_trip():
    seeds = seed_candidates(PAPER_SPACE, 6)
    assert len(seeds) == 16 and len({s.id for s in seeds}) == 16
    assert all(g.expr == "W2(gelu(W1(x)))" for s in seeds for g in s.layers)
    rng = random.Random(2)
    ctx = MutationContext(WIDE_SPACE, rng)
    cand = Candidate(tuple(_pool("wide")[10:14]))
    child, rec = mutate(cand, DEFAULT_TABLE, ctx)
    back = Candidate.from_json(child.to_json())
    assert back.id == child.id and back.layers == child.layers
    # ids come from canonical keys: a differently written but equal graph has the same id
    a = uniform_candidate("W2(gelu(W1(x)) * x)", 1, Fraction(1, 2), 2)
    b = uniform_candidate("W2(x * gelu(W1(x)))", 1, "1/2", 2)
    assert a.id == b.id
    spec = a.spec(540)
    assert spec.layers[0] == MLPLayer(mlpgraph.parse("W2(gelu(W1(x)) * x)"), 1, Fraction(1, 2))
    assert spec.to_dict()["layers"][0] == ["W2(gelu(W1(x)) * x)", 1, 270]


def test_the_table_is_the_declarations():
    """Each mutation is declared once (``@mutation`` on its function): the default table holds
    the declared functions in source order, with their docstrings as descriptions; a second
    declaration of a name is refused unless it replaces the first (in place)."""
    import inspect

    from searcher import mutations
    from searcher.mutations import mutation

    entries = list(DEFAULT_TABLE)
    assert all(m.fn is getattr(mutations, m.fn.__name__) for m in entries)
    assert [m.name for m in entries] == sorted(
        (m.name for m in entries), key=lambda n: DEFAULT_TABLE[n].fn.__code__.co_firstlineno)
    assert all(m.doc == inspect.getdoc(m.fn) and m.doc for m in entries)
    assert DEFAULT_TABLE.weights() == {**dict.fromkeys(DEFAULT_TABLE.entries, 1.0),
                                       "swap_operands": 0.5}
    assert {m.name: m.gene for m in entries if m.gene != "expr"} == {
        "change_stacks": "stacks", "change_ratio": "ratio"}
    saved = dict(DEFAULT_TABLE.entries)
    try:
        with pytest.raises(MutationError, match="'replace_op' is already declared"):
            mutation("replace_op")(lambda gene, ctx: None)

        def quieter(gene, ctx):
            """Never applies."""

        mutation("replace_op", weight=0.25, replace=True)(quieter)
        assert list(DEFAULT_TABLE.entries) == list(saved)  # the same place in the table
        assert (DEFAULT_TABLE["replace_op"].fn, DEFAULT_TABLE["replace_op"].weight) == \
            (quieter, 0.25)
        with pytest.raises(MutationError, match="declares gene 'width'"):
            mutation("wide_one", gene="width")(quieter)
    finally:
        DEFAULT_TABLE.entries.clear()
        DEFAULT_TABLE.entries.update(saved)
