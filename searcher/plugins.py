"""Plugins: the user's own code, imported in the main process and in every worker process.

A plugin is a ``.py`` file path or a dotted module name whose import declares extensions:
primitives (``@mlpgraph.primitive``), compile backends (``@mlpgraph.backends.backend``),
mutations (``@searcher.mutations.mutation``), controllers (``@searcher.controller.controller``),
executors (``@searcher.workers.executor``), tasks and metrics (``distill.register_task``,
``distill.register_metric``). Importing a plugin runs its code; that is what it is for, so
name only code you trust.

:func:`load_plugins` imports each source once per process (a file under the stable module
name :func:`mlpgraph.plugins.module_name_for_file` gives it, the same in every process) and
remembers it: :func:`loaded_plugins` is what every executor imports in each of its worker
processes before it unpickles the scorer or any task.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import mlpgraph
from mlpgraph.plugins import module_name_for_file

from .errors import PluginError

#: source (an absolute file path or a module name) -> its module name, in loading order
_LOADED: dict[str, str] = {}
#: module name -> the primitives its import registered
_PRIMITIVES: dict[str, tuple[str, ...]] = {}


def _is_file(source: str) -> bool:
    return source.endswith(".py") or "/" in source or "\\" in source


def _normal(source: str) -> str:
    """A file source as its absolute path (a worker may run elsewhere), else the module."""
    return str(Path(source).expanduser().resolve()) if _is_file(source) else source


def _run_file(path: Path, name: str) -> ModuleType:
    if not path.is_file():
        raise PluginError(f"plugin file {str(path)!r} not found; give a .py file path or a "
                          "dotted module name")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _import(source: str) -> str:
    """Import ``source`` (normalized) unless it is imported already; its module name."""
    name = module_name_for_file(source) if _is_file(source) else source
    if name in sys.modules:
        return name
    before = {id(p) for p in mlpgraph.REGISTRY}
    try:
        if _is_file(source):
            _run_file(Path(source), name)
        else:
            importlib.import_module(source)
    except PluginError:
        raise
    except ModuleNotFoundError as e:
        raise PluginError(f"cannot import plugin {source!r}: {e}; give a .py file path or a "
                          "module on the Python path") from e
    except Exception as e:  # noqa: BLE001 - any failure of user code, named
        raise PluginError(f"importing plugin {source!r} failed: {type(e).__name__}: {e}") from e
    new = [p for p in mlpgraph.REGISTRY if id(p) not in before]
    for p in new:
        mlpgraph.primitive_digest(p)  # fixed now, as imported
    _PRIMITIVES[name] = tuple(p.name for p in new)
    return name


def load_plugins(sources: Sequence[str]) -> list[str]:
    """Import each source (``FILE.py`` or ``dotted.module``) once in this process and
    remember it for the worker processes; returns their module names."""
    names = []
    for source in map(_normal, map(str, sources)):
        if source not in _LOADED:
            _LOADED[source] = _import(source)
        names.append(_LOADED[source])
    return names


def loaded_plugins() -> tuple[str, ...]:
    """The plugins this process imported (absolute file paths or module names), in order."""
    return tuple(_LOADED)


def plugin_primitives(sources: Sequence[str]) -> dict[str, str]:
    """The primitives the plugins declare -> the digest of each definition (a resumed
    search refuses changed definitions). Loads the plugins first."""
    out: dict[str, str] = {}
    for module in load_plugins(sources):
        names = _PRIMITIVES.get(module) or tuple(  # imported before, e.g. by mlpgraph
            p.name for p in mlpgraph.REGISTRY if getattr(p.fn, "__module__", None) == module)
        for n in names:
            out.setdefault(n, mlpgraph.primitive_digest(mlpgraph.get_primitive(n)))
    return out


__all__ = ["load_plugins", "loaded_plugins", "plugin_primitives"]
