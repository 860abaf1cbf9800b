"""The efficientbert command: paper report, show, errors."""

from __future__ import annotations

import json

from searcher.cli import main


def test_paper_report(capsys):
    assert main(["paper", "--no-compile"]) == 0
    out = capsys.readouterr().out
    assert "W2(relu(W1(x) * x))" in out and "292,410" in out


def test_show_json_round_trip(capsys):
    import mlpgraph as mg

    assert main(["show", "W2(relu(W1(x) * x))", "--format", "json"]) == 0
    g = mg.Graph.from_json(capsys.readouterr().out)
    assert g == mg.parse("W2(relu(W1(x) * x))")


def test_bad_expression_exit_code(capsys):
    assert main(["show", "W2(gelo(W1(x)))"]) == 2
    assert "did you mean gelu" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "efficientbert" in capsys.readouterr().out
    json.dumps({})
