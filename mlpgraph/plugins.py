"""User primitives: import the user's code that declares ``@mlpgraph.primitive``s, and a
digest of each declaration.

``load_primitives(["my_prims.py", "pkg.ops"])`` imports each source (a ``.py`` file path,
imported under a stable module name derived from its resolved path, or a dotted module
name) with :mod:`importlib`, never ``eval``, and returns the primitives it registered. A
source imported again (in the same process) is not executed twice: its primitives are
remembered by module, so the same list comes back.

:func:`primitive_digest` hashes a declaration (the source code of its torch forms, its
sympy meaning and its declared properties), so a run can record what a user primitive was
and refuse to resume when it changed. The digest is fixed when the primitive is first
digested (:func:`load_primitives` digests on import), so editing the file afterwards does
not change the digest this process reports; a fresh process sees the new definition.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import sympy

from .errors import PrimitiveError
from .primitives import REGISTRY, Primitive

#: module name -> names of the primitives its import registered (in registration order)
_ORIGINS: dict[str, tuple[str, ...]] = {}
_DIGESTS: dict[Primitive, str] = {}
_FILE_PREFIX = "mlpgraph_user_"


def module_name_for_file(path: str | Path) -> str:
    """The stable module name a primitive file is imported under: the file's stem plus a
    hash of its resolved path (the same in every process)."""
    p = Path(path).expanduser().resolve()
    stem = "".join(c if c.isalnum() else "_" for c in p.stem)
    return f"{_FILE_PREFIX}{stem}_{hashlib.sha256(str(p).encode()).hexdigest()[:10]}"


def _is_file_source(source: str) -> bool:
    return source.endswith(".py") or "/" in source or "\\" in source


def _import_file(path: Path) -> tuple[str, Callable[[], ModuleType]]:
    if not path.is_file():
        raise PrimitiveError(f"primitive file {str(path)!r} not found; give a .py file path or "
                             "a dotted module name")
    name = module_name_for_file(path)

    def run() -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise PrimitiveError(f"cannot import {str(path)!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module

    return name, run


def _import(source: str) -> tuple[ModuleType, tuple[str, ...] | None]:
    """Import ``source``; return the module and the names it registered now (None when the
    module had been imported before)."""
    if _is_file_source(source):
        name, run = _import_file(Path(source).expanduser().resolve())
    else:
        name = source

        def run() -> ModuleType:
            return importlib.import_module(source)
    if name in sys.modules:
        return sys.modules[name], None
    before = {id(p) for p in REGISTRY}
    try:
        module = run()
    except PrimitiveError as e:
        raise PrimitiveError(f"importing primitives from {source!r}: {e}") from e
    except ModuleNotFoundError as e:
        raise PrimitiveError(f"cannot import primitives from {source!r}: {e}; give a .py file "
                             "path or a module on the Python path") from e
    except Exception as e:  # noqa: BLE001 - any failure of user code, named
        raise PrimitiveError(f"importing primitives from {source!r} failed: "
                             f"{type(e).__name__}: {e}") from e
    return module, tuple(p.name for p in REGISTRY if id(p) not in before)


def load_primitives(sources: Sequence[str]) -> list[Primitive]:
    """Import each source (``FILE.py`` or ``dotted.module``) and return the primitives it
    registered, in order, each once; a source that registers none is refused."""
    out: list[Primitive] = []
    for source in sources:
        module, new = _import(str(source))
        if new is not None:
            _ORIGINS[module.__name__] = tuple(dict.fromkeys(
                (*_ORIGINS.get(module.__name__, ()), *new)))
        names = _ORIGINS.get(module.__name__) or tuple(
            p.name for p in REGISTRY if getattr(p.fn, "__module__", None) == module.__name__)
        if not names:
            raise PrimitiveError(f"{source!r} registers no primitive; declare them with "
                                 "@mlpgraph.primitive(sympy=...) on a torch function")
        for n in names:
            prim = REGISTRY.get(n)
            primitive_digest(prim)  # fixed now, as imported
            if prim not in out:
                out.append(prim)
    return out


def _source(fn: Callable | None) -> str | None:
    if fn is None:
        return None
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):  # a C builtin (torch.tanh) or code without a file
        return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def primitive_digest(prim: Primitive) -> str:
    """sha256 (hex) of a primitive's definition: the source of its torch function (and of its
    compiled form), its sympy meaning (``srepr``) and every declared property. Stable across
    processes; changes when any of these change."""
    if prim not in _DIGESTS:
        record = {
            "name": prim.name, "arity": prim.arity,
            "sympy": sympy.srepr(prim.sympy_expr()),
            "fn": _source(prim.fn), "compiled": _source(prim.compiled),
            "properties": {"commutative": prim.commutative, "associative": prim.associative,
                           "idempotent": prim.idempotent, "involution": prim.involution,
                           "identity": prim.identity, "right_identity": prim.right_identity,
                           "absorbing": prim.absorbing, "monotone": prim.monotone,
                           "flops": prim.flops, "tags": sorted(prim.tags),
                           "aliases": list(prim.aliases)},
        }
        text = json.dumps(record, sort_keys=True, default=repr)
        _DIGESTS[prim] = hashlib.sha256(text.encode()).hexdigest()
    return _DIGESTS[prim]


__all__ = ["load_primitives", "module_name_for_file", "primitive_digest"]
