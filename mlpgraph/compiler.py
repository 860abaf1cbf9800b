"""Compile a :class:`Graph` to a ``torch.nn.Module``: eager FX, Inductor, ``torch.export``
or (legacy) TorchScript, with weight inheritance, a bounded compile cache and kernel
inspection.

The compiled backends run the *functional* FX form of the (by default simplified) graph,
``f(x2d, w1_weight, w1_bias, ...)``, so one compiled artifact serves every module of the
same structure whatever its weights (own parameters or views of a supernet). Each
artifact has its own generated code object, hence its own Dynamo cache and recompile
budget; artifacts live in a bounded LRU (:func:`compile_cache_info`), and evicting one
drops Dynamo's entries for its code.
"""

from __future__ import annotations

import inspect
import json
import re
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .codegen import (
    CompiledMLP,
    ExportedMLP,
    LinearSlot,
    as_weight_pair,
    build_functional,
    build_module,
    inherit_weights,
    make_slots,
    weight_arg_names,
)
from .errors import BackendError
from .ir import Graph
from .parser import parse

__all__ = [
    "BACKENDS", "CacheInfo", "CompileReport", "CompiledMLP", "ExportedMLP", "KernelReport",
    "TorchScriptDeprecationWarning", "clear_compile_cache", "compile_cache_info", "compile_graph",
    "count_kernels", "inherit_weights", "inspect_inductor", "load_exported", "resolve_device",
    "save_exported", "set_compile_cache_size",
]

BACKENDS = ("eager", "inductor", "export", "torchscript")
DEFAULT_CACHE_SIZE = 128
_MATMUL = re.compile(r"(?<![\w.])(?:extern_kernels\.(?:mm|addmm|bmm|baddbmm)|torch\.ops\.aten\."
                     r"(?:mm|addmm|bmm)\.default|torch\.ops\.mkldnn\._linear_pointwise(?:\.\w+)?"
                     r"|torch\.ops\.mkl\._mkl_linear(?:\.\w+)?)\(")
_KERNEL = re.compile(r"^(\w+) = async_compile\.(?:cpp_pybinding|cpp|triton)\(", re.M)


class TorchScriptDeprecationWarning(DeprecationWarning):
    """The legacy TorchScript backend was used (emitted once per process)."""


@dataclass
class CompileReport:
    """One :func:`compile_graph` call: ``seconds`` is its wall time, ``artifact_seconds``
    what building (and warming up) the shared compiled artifact cost when it was made."""

    backend: str
    expression: str
    key: str
    d_model: int
    d_inner: int | None
    dtype: str
    device: str
    cache_hit: bool
    seconds: float
    artifact_seconds: float


@dataclass
class KernelReport:
    """What Inductor generated for one graph (see :func:`inspect_inductor`)."""

    expression: str
    d_model: int
    d_inner: int | None
    tokens: int
    kernels: int  # fused (generated) kernels
    matmuls: int  # extern matrix-product calls
    kernel_names: list[str]
    compile_seconds: float
    fx_code: str
    output_code: list[str] = field(repr=False)
    files: list[str] = field(default_factory=list)


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    evictions: int
    maxsize: int
    currsize: int


@dataclass
class _Artifact:
    backend: str
    graph: Graph  # the graph compiled (simplified unless simplify=False)
    fx_module: torch.fx.GraphModule  # its functional FX form (eager)
    arg_names: list[tuple[str, str]]
    runner: Callable[..., torch.Tensor]
    seconds: float = 0.0

    def __deepcopy__(self, memo: dict) -> _Artifact:
        return self  # weight-free and immutable: copies of a module share it


def resolve_device(device: str | torch.device | None, weights: Mapping[str, Any] | None = None
                   ) -> torch.device:
    """The device to build on: ``device`` if given, else the weights' device, else CPU."""
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"device {str(dev)!r} was requested but CUDA is not available "
                               "(no GPU or a CPU-only torch build); pass device='cpu'")
        return dev
    devs = {as_weight_pair(v, n)[0].device for n, v in (weights or {}).items()}
    if len(devs) > 1:
        raise BackendError(f"the weights live on several devices {sorted(map(str, devs))}; "
                           "move them to one device first")
    return devs.pop() if devs else torch.device("cpu")


# ------------------------------------------------------------------ backends
def _torch_compile_kwargs(options: dict) -> dict:
    params = inspect.signature(torch.compile).parameters
    bad = sorted(set(options) - set(params) - {"model"})
    if bad:
        raise BackendError(f"unknown option(s) {bad} for backend 'inductor'; torch.compile "
                           f"accepts {sorted(p for p in params if p != 'model')}")
    kw = {"backend": "inductor", **options}
    if "isolate_recompiles" in params:
        kw.setdefault("isolate_recompiles", True)
    return kw


_TS_STATE: dict[str, Any] = {"warned": False, "support": None}


def _torchscript_check(options: dict) -> None:
    """Refuse bad options or a torch without TorchScript; warn (once) that it is legacy."""
    if sorted(set(options) - {"method"}) or options.get("method", "script") not in ("script",
                                                                                     "trace"):
        raise BackendError(f"bad option(s) {options} for backend 'torchscript' (accepts only "
                           "method='script' or method='trace')")
    if _TS_STATE["support"] is None:
        try:  # does this torch still have a working TorchScript?
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.jit.script(nn.Identity())
            _TS_STATE["support"] = True
        except Exception as e:  # noqa: BLE001 - any failure means "not supported here"
            _TS_STATE["support"] = f"{type(e).__name__}: {e}"
    if _TS_STATE["support"] is not True:
        raise BackendError(f"the installed torch {torch.__version__} no longer supports "
                           f"TorchScript ({_TS_STATE['support']}); use backend='export' or "
                           "backend='inductor'")
    if not _TS_STATE["warned"]:
        _TS_STATE["warned"] = True
        warnings.warn("backend='torchscript' is legacy (TorchScript is deprecated in torch); "
                      "prefer backend='export' or 'inductor'", TorchScriptDeprecationWarning,
                      stacklevel=3)


def _torchscript(fgm: torch.fx.GraphModule, example: tuple, options: dict) -> Callable:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own deprecation notices: ours was shown
        if options.get("method", "script") == "script":
            try:
                return torch.jit.script(fgm)
            except Exception:  # noqa: BLE001, S110 - e.g. a user primitive it cannot parse
                pass  # tracing records the ops instead (inputs are always 2-D here)
        return torch.jit.trace(fgm, example, check_trace=False)


def _build_artifact(backend: str, target: Graph, d_model: int, d_inner: int | None,
                    has_bias: dict[str, bool], weights: list[torch.Tensor], options: dict,
                    warmup_tokens: int | None, dtype: torch.dtype, device: torch.device
                    ) -> _Artifact:
    t0 = time.perf_counter()
    fgm = build_functional(target, d_model, d_inner, has_bias=has_bias,
                           compiled_forms=backend == "inductor")
    x = torch.zeros(max(2, warmup_tokens or 2), d_model, dtype=dtype, device=device)
    example = (x, *(w.detach() for w in weights))
    if backend == "inductor":
        runner = torch.compile(fgm.forward, **_torch_compile_kwargs(options))
        if warmup_tokens:  # compile now, as general in the token count as allowed
            if options.get("dynamic") is not False:
                torch._dynamo.mark_dynamic(x, 0)
            with torch.no_grad():
                runner(x, *weights)
    elif backend == "export":
        if set(options) - {"strict"}:
            raise BackendError(f"unknown option(s) {sorted(set(options) - {'strict'})} for "
                               "backend 'export' (accepts: strict)")
        dims = ({0: torch.export.Dim("tokens", min=1)},) + (None,) * len(weights)
        runner = torch.export.export(fgm, example, dynamic_shapes=dims, **options).module()
    else:
        runner = _torchscript(fgm, example, options)
    return _Artifact(backend, target, fgm, weight_arg_names(target, has_bias), runner,
                     time.perf_counter() - t0)


# ------------------------------------------------------------------ the cache
class _LRU:
    def __init__(self, maxsize: int) -> None:
        self.maxsize, self.hits, self.misses, self.evictions = maxsize, 0, 0, 0
        self.data: OrderedDict[tuple, _Artifact] = OrderedDict()
        self.lock = threading.RLock()

    def get(self, key: tuple) -> _Artifact | None:
        with self.lock:
            art = self.data.get(key)
            self.hits, self.misses = self.hits + (art is not None), self.misses + (art is None)
            if art is not None:
                self.data.move_to_end(key)
            return art

    def put(self, key: tuple, art: _Artifact) -> None:
        with self.lock:
            self.data[key] = art
            self.shrink(self.maxsize)

    def shrink(self, size: int) -> None:
        with self.lock:
            while len(self.data) > size:
                _release(self.data.popitem(last=False)[1])
                self.evictions += 1


def _release(art: _Artifact) -> None:
    """Drop Dynamo's compiled entries for an evicted artifact (a live module still using
    it recompiles on its next call)."""
    reset_code = getattr(torch._dynamo, "reset_code", None)
    if art.backend == "inductor" and reset_code is not None:
        reset_code(art.fx_module.forward.__code__)


_CACHE = _LRU(DEFAULT_CACHE_SIZE)


def compile_cache_info() -> CacheInfo:
    """Hits, misses, evictions, maximum and current size of the compile cache."""
    return CacheInfo(_CACHE.hits, _CACHE.misses, _CACHE.evictions, _CACHE.maxsize,
                     len(_CACHE.data))


def clear_compile_cache() -> None:
    """Empty the compile cache (dropping Dynamo's entries for its artifacts), reset counts."""
    with _CACHE.lock:
        _CACHE.shrink(0)
        _CACHE.hits = _CACHE.misses = _CACHE.evictions = 0


def set_compile_cache_size(maxsize: int) -> None:
    """Bound the compile cache to ``maxsize`` artifacts (evicting the oldest now)."""
    if maxsize < 1:
        raise BackendError(f"compile cache size must be at least 1, got {maxsize}")
    _CACHE.maxsize = maxsize
    _CACHE.shrink(maxsize)


def _target(graph: Graph, simplify: bool) -> tuple[Graph, str]:
    try:
        from . import keys
        from .simplify import simplify as run_simplify
    except ImportError:  # no simplifier/keys: the exact structure is the key
        return graph, "json|" + graph.to_json()
    if not simplify:
        return graph, "exact|" + keys.recexpr_key(graph)
    return run_simplify(graph), keys.canonical_key(graph)


# ------------------------------------------------------------------ compile
def compile_graph(graph: Graph | str, d_model: int, d_inner: int | None, backend: str = "eager",
                  *, weights: Mapping[str, Any] | None = None, bias: bool = True,
                  dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                  seed: int | None = None, simplify: bool = True,
                  warmup_tokens: int | None = 16, **options: Any) -> nn.Module:
    """Build ``graph`` as a module mapping ``[..., d_model] -> [..., d_model]``.

    backend: ``"eager"`` (the FX :class:`~mlpgraph.codegen.MLPModule`), ``"inductor"``
    (``torch.compile``; ``options`` such as ``dynamic``, ``mode`` or Inductor's own
    ``options={...}`` pass through),
    ``"export"`` (a ``torch.export`` program; option ``strict``) or ``"torchscript"``
    (legacy; option ``method='script'|'trace'``).
    weights: ``name -> (weight, bias)`` (or an ``nn.Linear``), possibly larger tensors of
    a supernet: the module uses views of their first rows/columns, without copying.
    Otherwise fresh ``nn.Linear``-style weights are drawn (from ``seed``, or torch's RNG),
    with biases if ``bias``.
    simplify: compiled backends run the simplified graph and share artifacts by its
    canonical key (eager always runs ``graph`` as given).
    warmup_tokens: Inductor compiles lazily, so it is run once on this many rows to
    compile now (``None``: compile on first call).
    The module carries ``compile_seconds`` and a :class:`CompileReport` as ``report``.
    """
    t0 = time.perf_counter()
    if isinstance(graph, str):
        graph = parse(graph)
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "eager" and options:
        raise BackendError(f"option(s) {sorted(options)} do not apply to backend 'eager'")
    if backend == "torchscript":
        _torchscript_check(options)
    dev = resolve_device(device, weights)
    if dtype is None:
        first = next(iter(weights.items()), None) if weights else None
        dtype = as_weight_pair(first[1], first[0])[0].dtype if first else \
            torch.get_default_dtype()
    slots = make_slots(graph, d_model, d_inner, weights, bias, dtype, dev, seed)
    hit, key, art_seconds = False, "", 0.0
    if backend == "eager":
        module: nn.Module = build_module(graph, d_model, d_inner, slots)
    else:
        target, key = _target(graph, simplify)
        has_bias = {n: slots[n].bias is not None for n in target.linears}
        inherited = any(slots[n].inherited for n in target.linears)
        ckey = (key, d_model, d_inner, backend, str(dtype), str(dev),
                tuple(sorted(has_bias.items())), inherited,
                tuple(sorted((k, repr(v)) for k, v in options.items())))
        art = _CACHE.get(ckey)
        hit = art is not None
        if art is None:
            ws = [getattr(slots[m], k) for m, k in weight_arg_names(target, has_bias)]
            art = _build_artifact(backend, target, d_model, d_inner, has_bias, ws, options,
                                  warmup_tokens, dtype, dev)
            _CACHE.put(ckey, art)
        module = CompiledMLP(graph, d_model, d_inner, slots, art)
        art_seconds = art.seconds
    seconds = time.perf_counter() - t0
    module.compile_seconds = seconds
    module.report = CompileReport(backend, str(graph), key, d_model, d_inner, str(dtype),
                                  str(dev), hit, seconds, art_seconds)
    return module


# ------------------------------------------------------------------ export save / load
def save_exported(module: nn.Module, path: str | Path) -> Path:
    """Save a module made by :func:`compile_graph` (any backend) as a ``torch.export``
    program holding a copy of its current weights; :func:`load_exported` reads it back."""
    graph = getattr(module, "mlp_graph", None)
    if not isinstance(graph, Graph):
        raise BackendError(f"save_exported needs a module made by mlpgraph.compile, got "
                           f"{type(module).__name__}")
    slots = {}
    for name in graph.linears:
        w, b = getattr(module, name).weight, getattr(module, name).bias
        slots[name] = LinearSlot(w.detach().clone(), None if b is None else b.detach().clone())
    eager = build_module(graph, module.d_model, module.d_inner, slots)
    w0 = next(iter(slots.values())).weight if slots else torch.zeros(())
    x = torch.zeros(2, module.d_model, dtype=w0.dtype, device=w0.device)
    program = torch.export.export(eager, (x,),
                                  dynamic_shapes=({0: torch.export.Dim("tokens", min=1)},))
    meta = {"format": "mlpgraph.exported/1", "graph": graph.to_json(),
            "d_model": module.d_model, "d_inner": module.d_inner}
    path = Path(path)
    torch.export.save(program, path, extra_files={"mlpgraph.json": json.dumps(meta)})
    return path


def load_exported(path: str | Path) -> ExportedMLP:
    """Load a file written by :func:`save_exported` as a module (any leading shape)."""
    extra = {"mlpgraph.json": ""}
    program = torch.export.load(Path(path), extra_files=extra)
    if not extra["mlpgraph.json"]:
        raise BackendError(f"{path} is a torch.export file but not one written by "
                           "mlpgraph.compiler.save_exported (it has no mlpgraph.json)")
    meta = json.loads(extra["mlpgraph.json"])
    return ExportedMLP(program, Graph.from_json(meta["graph"]), int(meta["d_model"]),
                       meta["d_inner"])


# ------------------------------------------------------------------ kernel inspection
def count_kernels(output_code: str) -> tuple[list[str], int]:
    """(generated kernel names, extern matrix-product calls) in Inductor output code:
    ``cpp_fused_*`` C++ kernels on CPU, Triton kernels on CUDA; mm/addmm/bmm calls."""
    return _KERNEL.findall(output_code), len(_MATMUL.findall(output_code))


def _run_and_get_code(fn: Callable, *args: Any) -> list[str]:
    try:
        from torch._inductor.utils import run_and_get_code
    except ImportError:  # fallback: read output_code.py from a TORCH_COMPILE_DEBUG trace dir
        import tempfile

        with tempfile.TemporaryDirectory() as tmp, \
                torch._inductor.config.patch({"trace.enabled": True, "trace.debug_dir": tmp}):
            fn(*args)
            return [p.read_text() for p in sorted(Path(tmp).rglob("output_code.py"))]
    return run_and_get_code(fn, *args)[1]


def inspect_inductor(graph: Graph | str, d_model: int, d_inner: int | None, tokens: int = 1024,
                     out_dir: str | Path | None = None, *, dtype: torch.dtype | None = None,
                     device: str | torch.device | None = None, simplify: bool = True,
                     **options: Any) -> KernelReport:
    """Compile ``graph`` with Inductor (fresh, bypassing the cache), run it once on
    ``tokens`` rows under ``no_grad`` and count its kernels; with ``out_dir``, write the
    FX code (``fx_code.py``) and Inductor's output code (``inductor_output_<i>.py``)."""
    if isinstance(graph, str):
        graph = parse(graph)
    target, _ = _target(graph, simplify)
    dev = resolve_device(device)
    slots = make_slots(target, d_model, d_inner, None, True,
                       dtype or torch.get_default_dtype(), dev, 0)
    has_bias = dict.fromkeys(target.linears, True)
    fgm = build_functional(target, d_model, d_inner, has_bias=has_bias, compiled_forms=True)
    ws = [getattr(slots[m], k).detach() for m, k in weight_arg_names(target, has_bias)]
    x = torch.randn(tokens, d_model, generator=torch.Generator().manual_seed(0),
                    dtype=dtype or torch.get_default_dtype()).to(dev)
    compiled = torch.compile(fgm.forward, **_torch_compile_kwargs(options))
    t0 = time.perf_counter()
    with torch.no_grad():
        codes = _run_and_get_code(compiled, x, *ws)
    seconds = time.perf_counter() - t0
    counts = [count_kernels(code) for code in codes]
    names = [n for k, _ in counts for n in k]
    report = KernelReport(str(target), d_model, d_inner, tokens, len(names),
                          sum(m for _, m in counts), names, seconds, fgm.code, codes)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {"fx_code.py": f"# {target}\n{fgm.code}"}
        files.update({f"inductor_output_{i}.py": code for i, code in enumerate(codes)})
        for name, text in files.items():
            (out / name).write_text(text)
            report.files.append(str(out / name))
    return report
