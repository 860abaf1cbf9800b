"""The pipeline config tree, the ``run`` command line, and bad input refused before any work
(nothing loaded, nothing written)."""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path

import pytest

import mlpgraph
from searcher.budget import ParamCounter, derive_constraints
from searcher.candidate import Candidate, uniform_candidate
from searcher.cli import build_parser, main
from searcher.cli_run import parse_stages
from searcher.config import ControllerSpec, SearchConfig
from searcher.errors import SearchConfigError
from searcher.run import search_config
from searcher.run_config import (
    BudgetSpec,
    Pipeline,
    Stage1,
    Stage2,
    Stage3,
    WarmupSpec,
    full_preset,
    load_pipeline,
    pipeline_schema,
    quick_preset,
)
from searcher.warmup import expression_pool, supernet_sampler


# ----------------------------------------------------------------- the tree
@pytest.mark.parametrize("make", [quick_preset, full_preset])
def test_pipeline_round_trips_through_json(make):
    p = make()
    assert Pipeline.from_json(p.to_json()) == p
    assert Pipeline.load(p.dump()) == p
    assert json.loads(p.to_json())["stages"][2]["stage"] == 3
    assert [s.stage for s in p.select([3, 1])] == [1, 3]


def test_pipeline_errors_name_the_field(tmp_path):
    d = quick_preset().dump()
    d["stages"][0]["kd_stepz"] = 3
    with pytest.raises(SearchConfigError, match=r"^stages\[0\]\.kd_stepz: Extra inputs"):
        Pipeline.load(d)
    d = quick_preset().dump()
    d["stages"][1]["stage"] = 7
    with pytest.raises(SearchConfigError, match=r"^stages\[1\]: .*expected tags: 1, 2, 3"):
        Pipeline.load(d)
    d = quick_preset().dump()
    d["stages"][0]["controller"]["evaluations"] = -3
    with pytest.raises(SearchConfigError, match=r"^stages\[0\]\.controller\.evaluations: .*> ?0|"
                                                r"greater than 0"):
        Pipeline.load(d)
    with pytest.raises(SearchConfigError, match="unknown preset"):
        load_pipeline("huge")
    with pytest.raises(SearchConfigError, match="pipeline: stages .* in order"):
        Pipeline.load({"stages": [{"stage": 2}, {"stage": 1}]})
    with pytest.raises(SearchConfigError, match="stage 3 is not in"):
        Pipeline(stages=[Stage1()]).stage(3)
    with pytest.raises(SearchConfigError, match=r"^student: hidden=100 is not divisible"):
        Pipeline.load({"student": {"hidden": 100}})
    with pytest.raises(SearchConfigError, match="^budget: mlp_width"):
        Pipeline.load({"budget": {"mlp_width": [2, 1]}})
    f = tmp_path / "p.json"
    f.write_text(quick_preset().to_json())
    assert load_pipeline(path=f) == quick_preset()
    f.write_text("{not json")
    with pytest.raises(SearchConfigError, match="is not valid JSON"):
        load_pipeline(path=f)


def test_schema_covers_every_field():
    schema = pipeline_schema()
    assert set(schema["properties"]) == set(Pipeline.model_fields)
    defs = schema["$defs"]
    for name in ("Stage1", "Stage2", "Stage3", "ControllerSpec", "WarmupSpec", "ScoreSpec"):
        assert name in defs
    assert set(defs["ControllerSpec"]["properties"]) == set(ControllerSpec.model_fields)


def test_stage_defaults_masks_and_composed_search_configs():
    assert Stage1().genes == {"expr", "stacks", "ratio"}
    assert Stage2().genes == {"expr"}
    assert Stage3().genes == {"stacks", "ratio"} and Stage3().no_training
    assert isinstance(Stage3().rewarm, WarmupSpec) and Stage1().rewarm is None
    assert (Stage1().controller.evaluations, Stage2().controller.evaluations,
            Stage3().controller.evaluations) == (14, 8, 24)
    p = quick_preset()
    cons, _ = derive_constraints(p, p.student.to_config())
    for spec in p.stages:
        cfg = search_config(p, spec, p.base_candidate(), cons, None)
        assert cfg.gene_mask() == spec.genes and cfg.stage == spec.stage
        assert (cfg.base is None) == (spec.stage == 1)
        # composed, not copied: the stage's and the pipeline's own sub-models
        assert cfg.controller == spec.controller and cfg.fidelity == spec.fidelity
        assert cfg.executor == p.executor and cfg.constraints == cons
        assert cfg.rank_by == "kd_loss" and cfg.tie_break == "teacher_kl"


def test_resumable_differences():
    a = SearchConfig.load({"constraints": {"student_config": None, "hidden": 8}})
    b = a.but(executor={"kind": "inline", "workers": 3},
              controller={**a.controller.dump(), "evaluations": 500})
    assert a.differences(b.dump()) == []
    c = a.but(seed=5, controller={**a.controller.dump(), "population": 3})
    assert a.differences(c.dump()) == ["controller.population", "seed"]


def test_a_finished_final_training_is_found_through_a_symlinked_run_folder(tmp_path):
    """The final step's key names files by where they are, not by how a path is spelled: a
    run resumed through a link to its folder reuses every finished training; another
    recipe (here another seed) gets another key."""
    from types import SimpleNamespace

    from distill.scoring import ScoreBudget
    from searcher.final import _done_path

    real = tmp_path / "w1"
    (real / "warmup" / "stage1").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    cand = uniform_candidate("W2(gelu(W1(x)))", 2, Fraction(1), 3)

    def key(run: Path, seed: int = 0) -> Path:
        budget = ScoreBudget(supernet=str(run / "warmup" / "stage1"), seed=seed,
                             save_to=str(run / "winner"))
        return _done_path(SimpleNamespace(run_dir=real), "winner", cand, budget)

    assert key(tmp_path / "link") == key(real) != key(real, seed=1)


def test_constraints_window_and_sampler():
    p = quick_preset()
    cfg = p.student.to_config()
    cons, seeds = derive_constraints(p, cfg)
    lo, hi = cons.param_window
    assert lo < hi and seeds == ["2x1", "3x1", "4x1/2"]  # s x ratio in [2, 3]
    assert cons.latency_budget and cons.latency_proxy == "flops"
    counter = ParamCounter.from_student_config(cfg)
    ffn = mlpgraph.parse("W2(gelu(W1(x)))")
    sample = supernet_sampler(mlpgraph.PAPER_SPACE, [ffn] * 3, cfg.hidden,
                              lambda c: lo <= counter(c) <= hi)
    a = [sample(random.Random(5)) for _ in range(3)]
    assert a == [sample(random.Random(5)) for _ in range(3)]  # deterministic
    cand = Candidate.from_dict({"layers": [
        {"graph": g.to_list(), "stacks": s, "ratio": str(k / cfg.hidden)} for g, s, k in a[0]]})
    assert lo <= counter(cand) <= hi
    with pytest.raises(SearchConfigError, match="admits no standard FFN"):
        derive_constraints(p.but(budget=BudgetSpec(mlp_width=(5.0, 6.0)).dump()), cfg)


def test_window_is_the_standard_ffns_in_every_space():
    """A wide space's GLU seeds (1.5x the parameters per unit of s x ratio) do not widen
    the window: it is the standard FFN's in both spaces, so an FFN at s x ratio 4 is out
    and a GLU at 2 x 1 (the FFN at 3 x 1's size) is in."""
    p = quick_preset()
    cfg = p.student.to_config()
    paper, _ = derive_constraints(p.but(space="paper"), cfg)
    wide, seeds = derive_constraints(p.but(space="wide"), cfg)
    assert wide.param_window == paper.param_window and seeds == ["2x1", "3x1", "4x1/2"]
    counter = ParamCounter.from_student_config(cfg)
    lo, hi = wide.param_window
    assert counter(uniform_candidate("W2(gelu(W1(x)))", 4, Fraction(1), 3)) > hi
    assert lo <= counter(uniform_candidate("W3(swish(W1(x)) * W2(x))", 2, Fraction(1), 3)) <= hi


def test_warmup_pool_holds_the_space_seeds():
    wide = [str(g) for g in expression_pool(mlpgraph.WIDE_SPACE, 2, 0)]
    assert wide[:4] == list(mlpgraph.WIDE_SPACE.seed_expressions)
    assert "tanh(W2(gelu(W1(x))))" in wide and len(wide) == len(set(wide)) == 10 + 2
    paper = [str(g) for g in expression_pool(mlpgraph.PAPER_SPACE, 2, 0)]
    assert paper[0] == "W2(gelu(W1(x)))" and len(paper) == 7 + 2
    assert not any("W3" in e for e in paper)


# ----------------------------------------------------------------- the command line
def test_run_arguments_parse():
    args = build_parser().parse_args(["run"])
    assert (args.preset, args.stages, args.executor, args.resume) == ("quick", [1, 2, 3],
                                                                       None, False)
    args = build_parser().parse_args(["run", "--preset", "full", "--stages", "3,1",
                                      "--seed", "4", "--executor", "ray", "--address",
                                      "auto", "--resume", "--out", "x", "--threads", "3"])
    assert args.stages == [1, 3] and args.seed == 4 and args.address == "auto"
    assert args.resume and args.out == Path("x") and args.threads == 3
    assert args.final_seeds is None
    assert build_parser().parse_args(["run", "--final-seeds", "5"]).final_seeds == 5
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--final-seeds", "0"])
    assert build_parser().parse_args(["report", "some/dir"]).run_dir == Path("some/dir")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--stages", "4"])
    with pytest.raises(Exception, match="stages are 1, 2 and 3"):
        parse_stages("0,2")


@pytest.mark.parametrize("command", [["run"], ["distill", "--student", "x"], ["teacher"],
                                     ["assets"], ["compile", "W2(W1(x))"]])
def test_shared_flags_are_spelled_once(command):
    args = build_parser().parse_args([*command, "--cache-dir", "c", "--threads", "2",
                                      "--device", "cpu"])
    assert (args.cache_dir, args.threads, args.device) == ("c", 2, "cpu")


def test_every_subcommand_documents_the_exit_codes(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert "exit codes: 0 ok; 2 bad input" in (p.epilog or ""), name


def test_config_command_prints_a_loadable_pipeline_and_the_schema(capsys):
    assert main(["config", "--preset", "full"]) == 0
    assert Pipeline.from_json(capsys.readouterr().out) == full_preset()
    assert main(["config", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == pipeline_schema()


# ----------------------------------------------------------------- bad input first
def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(["run", "--quiet", *argv])
    return code, capsys.readouterr().err


def test_resume_of_a_folder_without_a_run_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _run(["--resume", "--out", str(empty)], capsys)
    assert code == 2 and f"--resume: {empty} holds no run" in err
    assert list(empty.iterdir()) == []
    code, err = _run(["--resume", "--out", str(tmp_path / "missing")], capsys)
    assert code == 2 and not (tmp_path / "missing").exists()


def test_bad_pipeline_is_refused_before_anything_is_written(tmp_path, capsys):
    bad = tmp_path / "p.json"
    d = quick_preset().dump()
    d["stages"][0]["controller"]["evaluations"] = -3
    bad.write_text(json.dumps(d))
    out = tmp_path / "run"
    code, err = _run(["--pipeline", str(bad), "--out", str(out)], capsys)
    assert code == 2 and "stages[0].controller.evaluations" in err
    assert not out.exists()
    d = quick_preset().dump()
    d["teacher"] = str(tmp_path / "no-teacher")
    bad.write_text(json.dumps(d))
    code, err = _run(["--pipeline", str(bad), "--out", str(out)], capsys)
    assert code == 2 and "teacher:" in err and "no config.json" in err and not out.exists()
    d["teacher"], d["task"] = None, "mnli_typo"
    bad.write_text(json.dumps(d))
    code, err = _run(["--pipeline", str(bad), "--out", str(out)], capsys)
    assert code == 2 and "unknown task 'mnli_typo'" in err and not out.exists()


def test_a_folder_holding_something_else_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, err = _run(["--out", str(tmp_path)], capsys)
    assert code == 2 and "already holds other files" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ----------------------------------------------------------------- one config style
def _properties(schema: dict) -> list[tuple[str, dict]]:
    out = [(f"Pipeline.{k}", v) for k, v in schema["properties"].items()]
    for name, d in schema["$defs"].items():
        out += [(f"{name}.{k}", v) for k, v in d.get("properties", {}).items()]
    return out


@pytest.mark.parametrize("schema", [pipeline_schema(), SearchConfig.model_json_schema()])
def test_every_field_is_described_in_the_schema(schema):
    undescribed = [name for name, prop in _properties(schema) if not prop.get("description")]
    assert not undescribed


def test_config_fields_lists_every_leaf_with_its_description(capsys):
    from searcher.config_base import field_rows

    rows = list(field_rows(quick_preset()))
    assert all(what for _, _, what in rows)
    paths = {p: v for p, v, _ in rows}
    assert paths["stages[0].controller.evaluations"] == 14 and paths["executor.workers"] == 2
    assert main(["config", "--fields"]) == 0
    out = capsys.readouterr().out
    assert "stages[2].rewarm.own_share=0.5\n    'mixed' pool" in out


def test_kinds_and_names_come_from_their_registries():
    from mlpgraph.backends import BACKENDS
    from searcher.controller import CONTROLLERS
    from searcher.workers import EXECUTORS

    props = dict(_properties(pipeline_schema()))
    assert props["ControllerSpec.kind"]["enum"] == list(CONTROLLERS)
    assert props["ExecutorSpec.kind"]["enum"] == list(EXECUTORS)
    assert props["Pipeline.backend"]["enum"] == list(BACKENDS)
    with pytest.raises(SearchConfigError, match=r"^executor\.kind: unknown executor 'gpu'; "
                                                r"choose one of inline, local, ray"):
        Pipeline.load({"executor": {"kind": "gpu"}})
    with pytest.raises(SearchConfigError, match=r"^stages\[0\]\.controller\.kind: unknown "
                                                r"controller 'evolutoin'; choose one of"):
        Pipeline.load({"stages": [{"stage": 1, "controller": {"kind": "evolutoin"}}]})
    with pytest.raises(SearchConfigError, match=r"mutation_weights: unknown mutation\(s\) "
                                                r"\['swap'\]; declared: replace_op"):
        ControllerSpec.load({"mutation_weights": {"swap": 1.0}})
    with pytest.raises(SearchConfigError, match="^backend: unknown backend 'tvm'; choose one "
                                                "of eager"):
        Pipeline.load({"backend": "tvm"})


def test_ranked_metrics_are_declared_metrics():
    """rank_by and tie_break name declared metrics (their direction is known): a misspelled
    one is refused with the known names; a newly declared one is accepted."""
    from distill import register_metric
    from distill.metrics import METRICS

    with pytest.raises(SearchConfigError, match=r"^score\.rank_by: unknown metric 'kd_los'; "
                                                r"known: .*kd_loss"):
        Pipeline.load({"score": {"rank_by": "kd_los"}})
    with pytest.raises(SearchConfigError, match="^tie_break: unknown metric 'kl'"):
        SearchConfig.load({"constraints": {"student_config": None, "hidden": 8},
                           "tie_break": "kl"})
    assert Pipeline.load({"score": {"rank_by": None, "tie_break": None}}).score.rank_by is None
    register_metric("my_loss_t1", higher_is_better=False, description="a test's loss")
    try:
        assert Pipeline.load({"score": {"rank_by": "my_loss_t1"}}).score.rank_by == "my_loss_t1"
    finally:
        del METRICS["my_loss_t1"]


def test_set_changes_one_field_by_its_path():
    from searcher.config_base import parse_setting, with_settings

    p = quick_preset()
    assert parse_setting("seed=3") == ("seed", 3)
    assert parse_setting("device=cpu") == ("device", "cpu")
    assert parse_setting("score.tie_break=null") == ("score.tie_break", None)
    assert parse_setting('space={"base": "paper"}') == ("space", {"base": "paper"})
    q = with_settings(p, [parse_setting(t) for t in (
        "stages[0].controller.evaluations=30", "stages.1.kd_steps=7",
        "stages[0].controller.mutation_weights.swap_operands=0", "executor.kind=inline",
        "student.hidden=100", "student.heads=10")])  # validated once: these fit together
    assert q.stages[0].controller.evaluations == 30 and q.stages[1].kd_steps == 7
    assert q.stages[0].controller.mutation_weights == {"swap_operands": 0}
    assert (q.executor.kind, q.student.hidden, q.student.heads) == ("inline", 100, 10)
    assert with_settings(p, []) is p and p == quick_preset()  # the original is unchanged
    for text, error in (
            ("stages[0].controller.evalutions=3", r"^stages\[0\]\.controller\.evalutions: "
             r"ControllerSpec has no field 'evalutions'; its fields: kind, evaluations"),
            ("stages[5].kd_steps=3", r"^stages\[5\]: give an index 0\.\.2 \(it has 3"),
            ("stages[0].rewarm.task_steps=3", r"^stages\[0\]\.rewarm: is null, not an object"),
            ("space.base=paper", r"^space: is a str, not an object"),
            ("stages[0].controller.crossover=mixed", r"^stages\[0\]\.controller\.crossover: "
             r"Input should be 'genes' or 'subtree'"),
            ("seed=three", r"^seed: Input should be a valid integer"),
            ("stages[0]..kind=3", r"is not a field path"),
            ("seed", r"^--set: 'seed' is not PATH=VALUE")):
        with pytest.raises(SearchConfigError, match=error):
            with_settings(p, [parse_setting(text)])


def test_flags_are_aliases_of_set_paths():
    """Each common flag is ``--set`` on its path, through the same mechanism; ``--set``
    comes last, so it wins."""
    from searcher.cli_run import FLAG_PATHS, pipeline_of
    from searcher.config_base import with_settings

    flags = {"--seed": "4", "--threads": "3", "--device": "cpu", "--task": "sst2",
             "--space": '{"base": "paper", "add": []}', "--final-seeds": "5",
             "--executor": "inline", "--workers": "3", "--address": "auto"}
    assert set(flags) == set(FLAG_PATHS)
    args = build_parser().parse_args(["run", *[x for kv in flags.items() for x in kv]])
    values = {"--seed": 4, "--threads": 3, "--device": "cpu", "--task": "sst2",
              "--space": {"base": "paper", "add": []}, "--final-seeds": 5,
              "--executor": "inline", "--workers": 3, "--address": "auto"}
    want = with_settings(quick_preset(), [(FLAG_PATHS[f][0], v) for f, v in values.items()])
    assert pipeline_of(args) == want
    assert (want.final.seeds, want.executor.workers, want.executor.address) == (5, 3, "auto")
    args = build_parser().parse_args(["run", "--seed", "4", "--set", "seed=9"])
    assert pipeline_of(args).seed == 9
    assert pipeline_of(build_parser().parse_args(["run"])) == quick_preset()


def test_a_setting_added_later_at_its_default_is_no_difference():
    a = SearchConfig.load({"constraints": {"student_config": None, "hidden": 8}})
    old = a.dump()
    del old["constraints"]["latency_backend"]  # written before the field existed
    assert a.differences(old) == []
    b = a.but(constraints={**a.constraints.dump(), "latency_backend": "torchscript"})
    assert b.differences(old) == ["constraints.latency_backend"]
