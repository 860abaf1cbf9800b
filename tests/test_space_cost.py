"""Search-space rules as data, and parameter/FLOP counts against hand counts."""

from __future__ import annotations

import pytest

import mlpgraph as mg
from mlpgraph.space import PAPER_SPACE, SPACE_RULES, WIDE_SPACE, Space
from tests.conftest import GLU_EXPRESSIONS, PAPER_EXPRESSIONS, STANDARD_FFN

PAPER_K = [270, 540, 270, 270, 270, 180]


def test_paper_expressions_in_paper_space(paper_expr):
    assert PAPER_SPACE.violations(mg.parse(paper_expr)) == []
    assert WIDE_SPACE.contains(mg.parse(paper_expr))


@pytest.mark.parametrize("text, rule", [
    ("W2(W1(x))", "height"),
    ("W2(tanh(gelu(sigmoid(relu(elu(tanh(gelu(W1(x)))))))))", "height"),
    ("W2(gelu(W1(fill[d](1.0))))", "input-present"),
    ("W2(softplus(W1(x)))", "ops-allowed"),
    ("W2(gelu(W1(x) + 1))", "no-constants"),
    ("W2(gelu(W1(x)) + W1(tanh(x)))", "linears-once-in-order"),
    ("W1(gelu(W2[k](x)))", "linears-once-in-order"),
    ("W2(gelu(W3(x)))", "linears-once-in-order"),
    ("W2(gelu(tanh(W1(x))))", "no-activation-in-activation"),
    ("W2(W1(tanh(x)))", "no-linear-in-linear"),
    ("W2(gelu(max(W1(x), W1(x))))", "distinct-binary-args"),
])
def test_each_rule_rejects(text, rule):
    v = PAPER_SPACE.violations(mg.parse(text))
    assert any(s.startswith(rule + ":") for s in v), v
    with pytest.raises(mg.SpaceError, match=rule):
        PAPER_SPACE.check(mg.parse(text))


def test_wide_space_holds_glu_and_squared_relu():
    for text in [*GLU_EXPRESSIONS, "W2(squared_relu(W1(x)))"]:
        assert WIDE_SPACE.violations(mg.parse(text)) == []
        assert not PAPER_SPACE.contains(mg.parse(text))


def test_height_ignores_narrow():
    assert mg.parse("W2(relu(W1(x) * x))").ref_height == 4
    assert mg.parse(STANDARD_FFN).ref_height == 3


def test_space_json_round_trip_and_user_primitives():
    for sp in (PAPER_SPACE, WIDE_SPACE):
        assert Space.from_json(sp.to_json()) == sp
    bigger = PAPER_SPACE.with_primitives(unary=("softplus",), name="paper+softplus")
    assert bigger.contains(mg.parse("W2(softplus(W1(x)))"))
    with pytest.raises(mg.SpaceError, match="unknown rules"):
        Space(name="bad", unary=("tanh",), binary=("add",), rules=("nope",))
    with pytest.raises(mg.PrimitiveError):
        Space(name="bad", unary=("tanhh",), binary=())
    assert set(PAPER_SPACE.rules) == set(SPACE_RULES)
    assert PAPER_SPACE.widths(540) == [540, 270, 180, 135]


@pytest.mark.parametrize("text, k", list(zip(PAPER_EXPRESSIONS, PAPER_K, strict=True)))
def test_paper_params_match_hand_count(text, k):
    g = mg.parse(text)
    d = 540
    # W1: d -> k (weight k*d + bias k); W2: reads k (or min(d,k) = k after narrow) -> d
    hand = {270: 540 * 270 + 270 + 270 * 540 + 540, 540: 540 * 540 * 2 + 540 * 2,
            180: 540 * 180 + 180 + 180 * 540 + 540}[k]
    assert mg.count_params(g, d_model=d, d_inner=k) == hand
    assert mg.count_params(g, d_model=d, d_inner=k, bias=False) == 2 * d * k


def test_standard_ffn_and_glu_counts():
    g = mg.parse(STANDARD_FFN)
    assert mg.count_params(g, d_model=768, d_inner=3072) == 768 * 3072 * 2 + 3072 + 768
    glu = mg.parse("W3(silu(W1(x)) * W2(x))")
    assert mg.count_params(glu, d_model=8, d_inner=4) == 3 * (8 * 4) + 4 + 4 + 8
    # FLOPs: two matmuls of 2*d*k plus bias adds and 9 flops per gelu element
    assert mg.count_flops(g, d_model=8, d_inner=4) == 2 * 8 * 4 + 4 + 9 * 4 + 2 * 4 * 8 + 8


def test_paper_model_mlp_params():
    from mlpgraph.cli_paper import PAPER_LAYERS

    total = sum(mg.count_params(mg.parse(e), d_model=540, d_inner=k) * s
                for _, e, s, k in PAPER_LAYERS)
    per = {270: 292_410, 540: 584_280, 180: 195_120}
    assert total == 4 * per[270] + 2 * per[540] + per[270] + 2 * per[270] + per[270] + \
        2 * per[180]


@pytest.mark.parametrize("text, k", [*zip(PAPER_EXPRESSIONS, PAPER_K, strict=True),
                                     (STANDARD_FFN, 2160)])
def test_paper_expressions_type_check_at_paper_widths(text, k):
    import torch

    g = mg.parse(text)
    shapes = mg.linear_shapes(g, 540, k)
    assert shapes["W1"] == (k, 540) and shapes["W2"] == (540, k)  # L5: min(540, 270) = k
    y = mg.evaluate(g, torch.randn(3, 540), mg.random_weights(g, 540, k))
    assert y.shape == (3, 540)
    with pytest.raises(mg.WidthError, match="expected"):
        mg.evaluate(g, torch.randn(3, 540), mg.random_weights(g, 540, k), d_inner=k + 1)
