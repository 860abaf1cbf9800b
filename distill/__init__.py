"""distill: BERT students built from MLP graphs, teachers, knowledge distillation, scoring.

This module is the layer's front door: the search (``searcher``) and user code import from
``distill`` only, never from a module inside it. Names load on first use (PEP 562), so
``import distill`` costs nothing and a process that only reads results never imports torch::

    from distill import ScoreBudget, score, StudentConfig, paired
"""

from __future__ import annotations

import importlib
from typing import Any

#: every public name -> the module that defines it (declared once, here)
_EXPORTS: dict[str, str] = {
    # scoring a candidate (the search's fitness) and its record
    "ScoreBudget": "scoring", "score": "scoring", "measure_latency": "latency",
    "interleaved_latency": "latency", "LatencySample": "latency",
    "search_splits": "scoring", "clear_caches": "scoring",
    "ScoreResult": "result",
    # metrics: each declared once with its direction
    "Metric": "metrics", "metric": "metrics", "register_metric": "metrics",
    "UnknownMetricError": "metrics",
    # configurations
    "StudentConfig": "config", "load_config": "config", "available_configs": "config",
    "student_schema": "config",
    "DataFiles": "datafiles",
    # tasks and data
    "TaskSpec": "taskspec", "get_task_spec": "data", "register_task": "data",
    "register_files": "userdata", "truncation_report": "userdata",
    "encode_texts": "encode", "encode_split": "encode", "EncodedTexts": "encode",
    # assets and the teacher
    "fetch_assets": "assets", "ensure_asset": "assets", "default_cache_dir": "assets",
    "finetune_teacher": "teacher", "finetuned_teacher_dir": "teacher",
    "is_finetuned": "teacher", "teacher_info": "teacher", "load_teacher": "teacher",
    "load_tokenizer": "teacher", "load_task": "teacher",
    "teacher_dims": "pipeline", "teacher_outputs": "pipeline", "evaluate_splits": "pipeline",
    "TeacherOutputs": "teacher_cache",
    "PreparedTeacher": "preparation", "TeacherCaches": "preparation",
    "prepare_teacher": "preparation", "prepare_caches": "preparation",
    "split_unlabeled": "preparation", "cache_lock": "preparation",
    "evaluate_teacher": "preparation",
    # students, the supernet, KD
    "Student": "student", "count_parameters": "student", "Supernet": "supernet",
    "save_student": "pipeline", "distill_student": "pipeline", "Recipe": "pipeline",
    "Phase": "pipeline", "kd_phase": "pipeline", "KDWeights": "losses",
    "TrainConfig": "loop", "resolve_device": "loop",
    "WarmupPhase": "warmup", "warm_up_supernet": "warmup", "TrainingError": "errors",
    # statistics
    "paired": "stats", "verdict": "stats", "Paired": "stats",
    # errors
    "DistillError": "errors", "ConfigError": "errors", "TeacherError": "errors",
    # the command line (subcommands and the run_glue-style data flags)
    "cli": "", "cli_use": "",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'distill' has no attribute {name!r}")
    value = importlib.import_module(f"distill.{module or name}")
    if module:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
