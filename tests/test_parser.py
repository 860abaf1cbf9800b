"""Text syntax: the paper's expressions, round trips, errors with positions, fuzzing."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlpgraph as mg
from mlpgraph.gen import random_graphs
from tests.conftest import GLU_EXPRESSIONS, PAPER_EXPRESSIONS, STANDARD_FFN

STAGE1 = ["tanh(W2(gelu(W1 x)))", "W2(gelu(W1 x))", "sigmoid(W2(gelu(W1 x)))",
          "leaky_relu(W2(gelu(W1 x)))"]


@pytest.mark.parametrize("text", [*PAPER_EXPRESSIONS, STANDARD_FFN, *GLU_EXPRESSIONS])
def test_paper_and_glu_expressions_print_exactly(text):
    g = mg.parse(text)
    out = mg.format(g)
    assert mg.parse(out) == g
    if "silu" not in text:
        assert out == text  # printed exactly as written in the paper
    assert str(g) == out


@pytest.mark.parametrize("text", STAGE1)
def test_stage1_juxtaposition(text):
    assert mg.parse(text) == mg.parse(text.replace("W1 x", "W1(x)"))


def test_infix_precedence_and_constants():
    g = mg.parse("W2(W1(x) - x * 2 + -3)")
    assert mg.parse(mg.format(g)) == g
    a, b = mg.parse("W2(W1(x) - (x - x))"), mg.parse("W2(W1(x) - x - x)")
    assert a != b and mg.parse(str(a)) == a and mg.parse(str(b)) == b
    assert mg.parse("W2(-W1(x))") == mg.parse("W2(neg(W1(x)))")
    assert mg.parse("W2(fill[k](0.5))") == mg.parse(mg.format(mg.parse("W2(fill[k](0.5))")))


def test_round_trip_random_graphs():
    for g in random_graphs(11, 500):
        assert mg.parse(mg.format(g)) == g
        assert mg.parse(mg.format(g, explicit=True)) == g
        assert mg.parse(mg.format(g, infix=False)) == g


@pytest.mark.parametrize("text, msg, col", [
    ("W2(gelo(W1(x)))", "unknown name 'gelo'; did you mean gelu", 4),
    ("W2(gelu(W1(x))", "expected ')'", 15),
    ("W2(gelu(W1(x))))", "unexpected ')'", 16),
    ("W2(max(W1(x)))", "max takes 2 argument", 4),
    ("W2(gelu W1(x))", "gelu must be called", 9),
    ("W2(x(1))", "x is the input", 5),
    ("W2($)", "unexpected character '$'", 4),
    ("", "empty expression", 1),
    ("W2[q](x)", "width annotation", 4),
])
def test_parse_errors_have_position_and_caret(text, msg, col):
    with pytest.raises(mg.ParseError, match=re.escape(msg)) as err:
        mg.parse(text)
    e = err.value
    assert isinstance(e, ValueError)
    assert e.line == 1 and e.column == col
    assert str(e).splitlines()[-1].strip() == "^"


def test_multiline_error_position():
    with pytest.raises(mg.ParseError) as err:
        mg.parse("W2(\n  gelu(\n    W1(y)))")
    assert (err.value.line, err.value.column) == (3, 8)
    assert "unknown name 'y'" in str(err.value)


def test_type_error_in_text_is_a_parse_error_and_a_type_error():
    with pytest.raises(mg.ParseError) as err:
        mg.parse("W1(x)")
    assert isinstance(err.value, mg.GraphTypeError)


def test_deep_nesting_is_a_parse_error():
    with pytest.raises(mg.ParseError, match="nested deeper"):
        mg.parse("W2(" + "tanh(" * 500 + "W1(x)" + ")" * 501)
    with pytest.raises(mg.ParseError, match="nested deeper"):
        mg.parse("W2(" + "-" * 500 + "W1(x))")


ALPHABET = "xW12()+-*,[]dk .e5 gelutanhmaxrelsigmoid\n"


def _check_any(text: str) -> None:
    try:
        g = mg.parse(text)
    except mg.ParseError:
        return
    assert isinstance(g, mg.Graph)
    assert mg.parse(mg.format(g)) == g


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=ALPHABET, max_size=60))
def test_fuzz_random_strings(text):
    _check_any(text)


def test_fuzz_mutated_valid_strings():
    rng = random.Random(0)
    seeds = [*PAPER_EXPRESSIONS, STANDARD_FFN, *GLU_EXPRESSIONS,
             *(mg.format(g) for g in random_graphs(5, 50))]
    pieces = list("()+-*,[]x ") + ["W1", "W2", "W3", "gelu", "max", "1e3", "-", "narrow", "fill"]
    for _ in range(5000):
        s = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            i = rng.randrange(len(s) + 1)
            if op < 0.4 and s:
                del s[min(i, len(s) - 1)]
            elif op < 0.8:
                s.insert(i, rng.choice(pieces))
            elif s:
                j = rng.randrange(len(s))
                s[min(i, len(s) - 1)], s[j] = s[j], s[min(i, len(s) - 1)]
        _check_any("".join(s))
