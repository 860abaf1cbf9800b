"""Plugins: each kind of extension declared in one file of the user's own, loaded through
``plugins`` (the pipeline field and ``--plugins``), registered in this process, valid in the
configuration at once, and imported in every worker process before anything is unpickled."""

from __future__ import annotations

import json
import os
import random
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest

import mlpgraph
from distill import get_task_spec
from mlpgraph.backends import BACKENDS
from searcher import controller as controller_mod
from searcher import plugins as plugins_mod
from searcher import workers as workers_mod
from searcher.candidate import seed_candidates, uniform_candidate
from searcher.cli import build_parser
from searcher.cli_run import pipeline_of
from searcher.config import ControllerSpec, ExecutorSpec
from searcher.errors import PluginError, SearchConfigError, WorkerError
from searcher.mutations import DEFAULT_TABLE, MutationContext, mutate
from searcher.plugins import load_plugins, loaded_plugins, plugin_primitives
from searcher.run_config import Pipeline, quick_preset
from searcher.workers import LocalExecutor, Task, make_executor

#: one file of the user's own per kind of extension
FILES = {
    "primitive": '''
        import sympy
        import torch

        from mlpgraph import primitive


        @primitive(sympy=lambda a: a * sympy.tanh(a), flops=3)
        def plug_tanhx(a):
            return a * torch.tanh(a)
    ''',
    "mutation": '''
        from dataclasses import replace

        from searcher.mutations import mutation


        @mutation("plug_smallest_ratio", weight=1000.0, gene="ratio")
        def smallest_ratio(gene, ctx):
            """The smallest width ratio of the space."""
            r = min(ctx.space.ratios)
            return None if gene.ratio == r else (replace(gene, ratio=r), {"to": str(r)})
    ''',
    "controller": '''
        from searcher.controller import RandomSampling, controller


        @controller("plug_random")
        class PlugRandom(RandomSampling):
            """Random sampling that remembers a tournament size it never uses."""

            def __init__(self, space, seeds, *, sample_size=3, **kw):
                super().__init__(space, seeds, **kw)
                self.sample_size = sample_size
    ''',
    "executor": '''
        from searcher.workers import InlineExecutor, executor


        @executor("plug_inline")
        class PlugInline(InlineExecutor):
            """Inline, with its own worker name."""

            def _launch(self, index, task):
                job = super()._launch(index, task)
                job.worker = "plug"
                return job
    ''',
    "task": '''
        from distill import TaskSpec, register_task

        register_task(TaskSpec(name="plug_task", text_columns=("sentence",), num_labels=2,
                               is_regression=False, metric_names=("accuracy",)))
    ''',
    "backend": '''
        from mlpgraph.backends import BACKENDS, backend

        BUILDS = []


        @backend("plug_eager", doc="eager, counting its builds")
        def plug_eager(fx_module, example, options, warmup):
            BUILDS.append(1)
            return BACKENDS["eager"].build(fx_module, example, options, warmup)
    ''',
}

#: a scorer that reports what its worker process has registered
SEER = '''
    import os


    class Seer:
        def __call__(self, spec, budget):
            import mlpgraph
            from distill import get_task_spec
            from mlpgraph.backends import BACKENDS
            from searcher.controller import CONTROLLERS
            from searcher.mutations import DEFAULT_TABLE
            from searcher.workers import EXECUTORS

            return {"pid": os.getpid(), "graph": str(spec),
                    "primitive": "plug_tanhx" in mlpgraph.REGISTRY,
                    "mutation": "plug_smallest_ratio" in DEFAULT_TABLE.entries,
                    "controller": "plug_random" in CONTROLLERS,
                    "executor": "plug_inline" in EXECUTORS,
                    "task": get_task_spec("plug_task").name == "plug_task",
                    "backend": "plug_eager" in BACKENDS}
'''


@pytest.fixture(autouse=True)
def _registries_restored():
    """What a test's plugins declare is gone afterwards (primitives stay: unique names)."""
    from distill.data import TASKS

    tables = [DEFAULT_TABLE.entries, controller_mod.CONTROLLERS, workers_mod.EXECUTORS,
              BACKENDS, TASKS, plugins_mod._LOADED]
    saved = [dict(t) for t in tables]
    modules = set(sys.modules)
    yield
    for table, old in zip(tables, saved, strict=True):
        table.clear()
        table.update(old)
    for name in set(sys.modules) - modules:
        if name.startswith("mlpgraph_user_"):
            del sys.modules[name]


def _write(folder: Path, name: str, text: str) -> str:
    path = folder / f"{name}_plugin.py"
    path.write_text(textwrap.dedent(text))
    return str(path)


def _files(folder: Path) -> dict[str, str]:
    return {kind: _write(folder, kind, text) for kind, text in FILES.items()}


def test_a_plugin_is_imported_once_and_remembered_for_the_workers(tmp_path):
    path = _write(tmp_path, "primitive", FILES["primitive"])
    first = load_plugins([path])
    assert load_plugins([path, path]) == first * 2  # imported once
    assert loaded_plugins()[-1] == str(Path(path).resolve())
    assert set(plugin_primitives([path])) == {"plug_tanhx"}
    assert plugin_primitives([path])["plug_tanhx"] == \
        mlpgraph.primitive_digest(mlpgraph.get_primitive("plug_tanhx"))
    with pytest.raises(PluginError, match="not found"):
        load_plugins([str(tmp_path / "absent.py")])
    with pytest.raises(PluginError, match="cannot import plugin 'no_such_module_p1'"):
        load_plugins(["no_such_module_p1"])
    broken = _write(tmp_path, "broken", "raise RuntimeError('the user code broke')\n")
    with pytest.raises(PluginError, match="RuntimeError: the user code broke"):
        load_plugins([broken])
    assert str(Path(broken).resolve()) not in loaded_plugins()


def test_a_primitive_plugin(tmp_path):
    f = _files(tmp_path)
    p = Pipeline.load({"plugins": [f["primitive"]],
                       "space": {"base": "paper", "add": ["plug_tanhx"]}})
    assert "plug_tanhx" in mlpgraph.REGISTRY and p.plugins == (f["primitive"],)
    assert mlpgraph.resolve_space(p.space).unary[-1] == "plug_tanhx"


def test_a_mutation_plugin(tmp_path):
    f = _files(tmp_path)
    load_plugins([f["mutation"]])
    m = DEFAULT_TABLE["plug_smallest_ratio"]
    assert (m.weight, m.gene, m.doc) == (1000.0, "ratio", "The smallest width ratio of the space.")
    assert list(DEFAULT_TABLE.entries)[-1] == "plug_smallest_ratio"  # after the built-ins
    # the search's table (DEFAULT_TABLE) draws it: with weight 1000 it is the first choice
    cand = uniform_candidate("W2(gelu(W1(x)))", 1, Fraction(1), 2)
    ctx = MutationContext(mlpgraph.PAPER_SPACE, random.Random(0))
    child, rec = mutate(cand, DEFAULT_TABLE, ctx)
    assert rec.name == "plug_smallest_ratio"
    assert child.layers[rec.layer].ratio == min(mlpgraph.PAPER_SPACE.ratios)
    spec = ControllerSpec.load({"mutation_weights": {"plug_smallest_ratio": 2.0}})
    assert spec.mutation_weights == {"plug_smallest_ratio": 2.0}


def test_a_controller_plugin(tmp_path):
    f = _files(tmp_path)
    with pytest.raises(SearchConfigError, match="unknown controller 'plug_random'"):
        ControllerSpec.load({"kind": "plug_random"})
    p = Pipeline.load({"plugins": [f["controller"]],  # the kind is valid in the same file
                       "stages": [{"stage": 1, "controller": {"kind": "plug_random"}}]})
    spec = p.stages[0].controller
    assert spec.options() == {"sample_size": 3}  # from the class's keyword-only parameters
    ctl = controller_mod.make_controller(spec.kind, mlpgraph.PAPER_SPACE,
                                         seed_candidates(mlpgraph.PAPER_SPACE, 2), seed=1,
                                         **spec.options())
    assert type(ctl).__name__ == "PlugRandom" and len(ctl.propose(3)) == 3
    assert "plug_random" in Pipeline.model_json_schema()["$defs"]["ControllerSpec"][
        "properties"]["kind"]["enum"]


def test_an_executor_plugin(tmp_path):
    f = _files(tmp_path)
    args = build_parser().parse_args(["run", "--plugins", f["executor"],
                                      "--executor", "plug_inline"])
    p = pipeline_of(args)
    assert p.executor == ExecutorSpec(kind="plug_inline") and p.plugins == (f["executor"],)
    with make_executor(p.executor.kind, lambda spec, budget: spec * 2, workers=1) as ex:
        out = ex.run([Task(i, i, None) for i in range(3)])
    assert [(o.result, o.worker) for o in out] == [(0, "plug"), (2, "plug"), (4, "plug")]


def test_a_task_plugin(tmp_path):
    f = _files(tmp_path)
    args = build_parser().parse_args(["run", "--primitives", f["task"], "--task", "plug_task"])
    p = pipeline_of(args)  # --primitives: the old name of --plugins
    assert p.task == "plug_task" and get_task_spec("plug_task").metric_names == ("accuracy",)


def test_a_backend_plugin_reaches_the_latency_meter(tmp_path):
    from searcher.budget import Constraints, derive_constraints

    f = _files(tmp_path)
    with pytest.raises(SearchConfigError, match="^backend: unknown backend 'plug_eager'"):
        Pipeline.load({"backend": "plug_eager"})
    p = Pipeline.load({"plugins": [f["backend"]], "backend": "plug_eager",
                       "budget": {"latency": "measure"}})
    builds = sys.modules[load_plugins([f["backend"]])[0]].BUILDS
    spec, _ = derive_constraints(p, p.student.to_config())
    assert spec.latency_backend == "plug_eager" and spec.latency_budget > 0
    assert len(builds) > 0  # the budget was measured through the plugin's backend
    before = len(builds)
    meter = Constraints.from_spec(spec).latency
    cand = uniform_candidate("W2(relu(W1(x)))", 2, Fraction(1, 2), p.student.num_layers)
    assert meter(cand) > 0 and len(builds) > before


def test_every_kind_reaches_a_real_worker_process(tmp_path):
    """A local worker imports the plugins before it unpickles the scorer (a class of a plugin
    file) and the task (a graph over a plugin's primitive), and sees every declaration."""
    f = _files(tmp_path)
    seer = _write(tmp_path, "seer", SEER)
    modules = load_plugins([*f.values(), seer])
    scorer = sys.modules[modules[-1]].Seer()
    graph = mlpgraph.parse("W2(plug_tanhx(W1(x)))")
    with LocalExecutor(scorer, workers=1, timeout=120) as pool:
        assert pool.plugins == loaded_plugins()
        (out,) = pool.run([Task(0, graph, None)])
    assert out.status == "ok", out.error
    seen = out.result
    assert seen.pop("pid") != os.getpid() and seen.pop("graph") == str(graph)
    assert seen == dict.fromkeys(FILES, True)
    # without the plugins the worker cannot even unpickle the scorer
    with pytest.raises(WorkerError, match="worker process 0 failed to start"):
        with LocalExecutor(scorer, workers=1, plugins=()) as pool:
            pool.run([Task(0, graph, None)])


def test_ray_workers_import_the_plugins_first(tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("Ray cannot be imported (pip install 'efficientbert[ray]')")
    from searcher.workers import RayExecutor

    f = _files(tmp_path)
    modules = load_plugins([f["primitive"], f["task"], _write(tmp_path, "seer", SEER)])
    graph = mlpgraph.parse("W2(plug_tanhx(W1(x)))")
    with RayExecutor(sys.modules[modules[-1]].Seer(), workers=1, timeout=120) as ex:
        (out,) = ex.run([Task(0, graph, None)])
    assert out.status == "ok", out.error
    assert out.result["primitive"] and out.result["task"] and out.result["pid"] != os.getpid()


def test_the_pipeline_file_and_the_flags_combine(tmp_path):
    f = _files(tmp_path)
    old = {k: v for k, v in quick_preset().dump().items() if k not in ("plugins", "backend")}
    old["primitives"] = [f["controller"]]  # a pipeline written before plugins were so named
    old["stages"][0]["controller"]["kind"] = "plug_random"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(old))
    args = build_parser().parse_args(["run", "--pipeline", str(path), "--plugins", f["task"],
                                      "--task", "plug_task"])
    p = pipeline_of(args)
    assert p.plugins == (f["controller"], f["task"])
    assert p.stages[0].controller.kind == "plug_random" and p.task == "plug_task"
    assert Pipeline().but(primitives=[f["task"]]).plugins == (f["task"],)
    with pytest.raises(SearchConfigError, match="plugins only .* not both"):
        Pipeline.load({"plugins": [f["task"]], "primitives": [f["controller"]]})
