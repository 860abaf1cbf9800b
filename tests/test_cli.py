"""The efficientbert command: paper report, show, errors, help."""

from __future__ import annotations

from searcher.cli import main


def test_paper_report(capsys):
    assert main(["paper", "--no-compile"]) == 0
    out = capsys.readouterr().out
    d, k = 540, 270  # L5 = W2(relu(W1(x) * x)) at 1 x 270: W1 d->k, W2 k->d, with biases
    assert "W2(relu(W1(x) * x))" in out and f"{(d * k + k) + (k * d + d):,}" in out


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
    out = capsys.readouterr().out
    assert out.startswith("usage: efficientbert") and "exit codes: 0 ok" in out


def test_an_unexpected_error_shows_its_traceback(capsys, monkeypatch):
    """A bug (not a refused input or a failed run) keeps its traceback on stderr."""
    from mlpgraph import cli_paper

    def boom(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr(cli_paper, "paper_report", boom)
    assert main(["paper"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "error: failed (KeyError)" in err


def test_run_help_says_plugins_run_code(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--plugins FILE.py|MODULE, --primitives FILE.py|MODULE" in out
    assert "runs with your permissions, by design" in out
    assert "--set PATH=VALUE" in out and "sets executor.workers: parallel scorer calls" in out


def test_the_run_module_has_no_second_entry_point():
    """``efficientbert`` is the one entry point (searcher/cli.py imports cli_run, never the
    other way round)."""
    import ast
    from pathlib import Path

    import searcher.cli_run as cli_run

    assert not hasattr(cli_run, "main")
    tree = ast.parse(Path(cli_run.__file__).read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in imports if n.level == 1 and n.module == "cli"]
