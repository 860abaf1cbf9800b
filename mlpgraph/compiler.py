"""Compile a :class:`Graph` to a ``torch.nn.Module`` with any declared backend
(:mod:`mlpgraph.backends`: eager FX, Inductor, ``torch.export``, legacy TorchScript),
over weights of its own or borrowed from a supernet, with a bounded compile cache and
kernel inspection.

Every module runs the *functional* form of the (by default simplified) graph,
``f(x2d, w1_weight, w1_bias, ...)``, as built by its backend: one artifact
(:class:`~mlpgraph.module.MLPFunction`) serves every module of the same structure
whatever its weights. Each artifact has its own generated code object, hence its own
Dynamo cache and recompile budget; artifacts live in a bounded LRU keyed by the graph's
canonical key (:func:`compile_cache_info`), and evicting one releases the backend's
state for it (Dynamo's entries for its code).
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import torch

from . import keys
from .backends import (
    BACKENDS,
    Backend,
    TorchScriptDeprecationWarning,
    check_options,
    get_backend,
    inductor_kwargs,
)
from .codegen import build_functional, inner_width, weight_arg_names
from .cost import linear_shapes
from .errors import BackendError
from .graph import Graph
from .module import (
    BorrowedLinear,
    ExportedMLP,
    MLPFunction,
    MLPModule,
    OwnedLinear,
    Slot,
    as_weight_pair,
    inherit_weights,
    require_weights,
)
from .parser import parse
from .simplify import simplify as run_simplify

__all__ = [
    "BACKENDS", "CacheInfo", "CompileReport", "ExportedMLP", "KernelReport", "MLPModule",
    "TorchScriptDeprecationWarning", "clear_compile_cache", "compile_cache_info", "compile_graph",
    "count_kernels", "inherit_weights", "inspect_inductor", "resolve_device",
    "set_compile_cache_size",
]

DEFAULT_CACHE_SIZE = 128
_MATMUL = re.compile(r"(?<![\w.])(?:extern_kernels\.(?:mm|addmm|bmm|baddbmm)|torch\.ops\.aten\."
                     r"(?:mm|addmm|bmm)\.default|torch\.ops\.mkldnn\._linear_pointwise(?:\.\w+)?"
                     r"|torch\.ops\.mkl\._mkl_linear(?:\.\w+)?)\(")
_KERNEL = re.compile(r"^(\w+) = async_compile\.(?:cpp_pybinding|cpp|triton)\(", re.M)


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


# ------------------------------------------------------------------ the cache
class _LRU:
    def __init__(self, maxsize: int) -> None:
        self.maxsize, self.hits, self.misses, self.evictions = maxsize, 0, 0, 0
        self.data: OrderedDict[tuple, MLPFunction] = OrderedDict()
        self.lock = threading.RLock()

    def get(self, key: tuple) -> MLPFunction | None:
        with self.lock:
            fn = self.data.get(key)
            self.hits, self.misses = self.hits + (fn is not None), self.misses + (fn is None)
            if fn is not None:
                self.data.move_to_end(key)
            return fn

    def put(self, key: tuple, fn: MLPFunction) -> None:
        with self.lock:
            self.data[key] = fn
            self.shrink(self.maxsize)

    def shrink(self, size: int) -> None:
        with self.lock:
            while len(self.data) > size:
                fn = self.data.popitem(last=False)[1]
                spec = BACKENDS.get(fn.backend)
                if spec is not None and spec.release is not None:
                    spec.release(fn.fx_module)
                self.evictions += 1


_CACHE = _LRU(DEFAULT_CACHE_SIZE)


def compile_cache_info() -> CacheInfo:
    """Hits, misses, evictions, maximum and current size of the compile cache."""
    return CacheInfo(_CACHE.hits, _CACHE.misses, _CACHE.evictions, _CACHE.maxsize,
                     len(_CACHE.data))


def clear_compile_cache() -> None:
    """Empty the compile cache (releasing its artifacts) and reset its counts."""
    with _CACHE.lock:
        _CACHE.shrink(0)
        _CACHE.hits = _CACHE.misses = _CACHE.evictions = 0


def set_compile_cache_size(maxsize: int) -> None:
    """Bound the compile cache to ``maxsize`` artifacts (evicting the oldest now)."""
    if maxsize < 1:
        raise BackendError(f"compile cache size must be at least 1, got {maxsize}")
    _CACHE.maxsize = maxsize
    _CACHE.shrink(maxsize)


@lru_cache(maxsize=1024)
def _target(graph: Graph, simplify: bool) -> tuple[Graph, str, str]:
    """The graph to compile, its cache key (canonical, or exact without ``simplify``) and
    the text of ``graph`` (memoized here: a supernet step compiles dozens of graphs)."""
    if not simplify:
        return graph, "exact|" + keys.recexpr_key(graph), str(graph)
    return run_simplify(graph), keys.canonical_key(graph), str(graph)


# ------------------------------------------------------------------ artifacts
def _function(graph: Graph, d_model: int, d_inner: int | None, spec: Backend,
              slots: Mapping[str, Slot], dtype: torch.dtype, device: torch.device,
              simplify: bool, warmup_tokens: int | None, options: dict[str, Any]
              ) -> tuple[MLPFunction, bool]:
    """The shared artifact running ``graph`` (simplified unless ``simplify=False``) with
    backend ``spec`` on weights like ``slots``', and whether it came from the cache."""
    target, key, _ = _target(graph, simplify)
    has_bias = {n: slots[n].has_bias for n in target.linears}
    borrowed = any(slots[n].borrowed for n in target.linears)  # strided blocks: specialize
    ckey = (key, d_model, d_inner, spec.name, str(dtype), str(device),
            tuple(has_bias.items()), borrowed,
            tuple(sorted((k, repr(v)) for k, v in options.items())))
    fn = _CACHE.get(ckey)
    if fn is not None:
        return fn, True
    t0 = time.perf_counter()
    fgm = build_functional(target, d_model, d_inner, has_bias=has_bias,
                           compiled_forms=spec.compiled_forms)
    arg_names = tuple(weight_arg_names(target, has_bias))
    x = torch.zeros(max(2, warmup_tokens or 2), d_model, dtype=dtype, device=device)
    example = (x, *(getattr(slots[m], k).detach() for m, k in arg_names))
    runner = spec.build(fgm, example, options, bool(warmup_tokens))
    fn = MLPFunction(spec.name, target, fgm, arg_names, runner, time.perf_counter() - t0)
    _CACHE.put(ckey, fn)
    return fn, False


def _slots(graph: Graph, d_model: int, d_inner: int, weights: Mapping[str, Any] | None,
           share: bool, bias: bool, dtype: torch.dtype, device: torch.device,
           seed: int | None) -> dict[str, Slot]:
    """One weight slot per linear: fresh, copied from ``weights`` or borrowing them."""
    shapes = linear_shapes(graph, d_model, d_inner)
    if weights is None:
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        slots: dict[str, Slot] = {}
        for name, (o, i) in shapes.items():
            bound = i ** -0.5  # nn.Linear's default init range; same draws as random_weights
            w = (torch.rand(o, i, generator=gen, dtype=dtype) * 2 - 1) * bound
            b = (torch.rand(o, generator=gen, dtype=dtype) * 2 - 1) * bound if bias else None
            slots[name] = OwnedLinear(w.to(device), None if b is None else b.to(device))
        return slots
    if not share:
        return {n: OwnedLinear(w.detach().to(device, dtype, copy=True),
                               None if b is None else b.detach().to(device, dtype, copy=True))
                for n, (w, b) in inherit_weights(graph, d_model, d_inner, weights).items()}
    require_weights(graph, weights)
    for name in shapes:
        for t in as_weight_pair(weights[name], name):
            if t is not None and (t.dtype != dtype or t.device != device):
                raise BackendError(
                    f"weights of {name} are {t.dtype} on {t.device} but dtype={dtype}, "
                    f"device={device} was asked; shared weights are used without copying, "
                    "so convert the owner first (or omit dtype/device, or share_weights=False)")
    return {n: BorrowedLinear(weights[n], o, i) for n, (o, i) in shapes.items()}


# ------------------------------------------------------------------ compile
def compile_graph(graph: Graph | str, d_model: int, d_inner: int | None, backend: str = "eager",
                  *, weights: Mapping[str, Any] | None = None, share_weights: bool = True,
                  bias: bool = True, dtype: torch.dtype | None = None,
                  device: str | torch.device | None = None, seed: int | None = None,
                  simplify: bool = True, warmup_tokens: int | None = 16,
                  **options: Any) -> MLPModule:
    """Build ``graph`` as a module mapping ``[..., d_model] -> [..., d_model]``.

    backend: a name in :data:`~mlpgraph.backends.BACKENDS`: ``"eager"`` (the generated FX
    code), ``"inductor"`` (``torch.compile``; ``options`` such as ``dynamic``, ``mode`` or
    Inductor's own ``options={...}`` pass through), ``"export"`` (a ``torch.export``
    program; option ``strict``) or ``"torchscript"`` (legacy; ``method='script'|'trace'``).
    weights: ``name -> (weight, bias)``, a weight tensor or an ``nn.Linear``-like module,
    possibly larger (a supernet's): the module uses their leading ``[:out, :in]`` blocks.
    With ``share_weights`` (the default) it borrows them: nothing is copied, it owns no
    parameters, reads them at every call (a module is read live, so its owner may move),
    gradients reach them and ``load_state_dict`` writes into them. Otherwise it owns
    copies. Without ``weights``, fresh ``nn.Linear``-style weights are drawn (from
    ``seed``, or torch's RNG), with biases if ``bias``.
    simplify: run the simplified graph and share artifacts by its canonical key.
    warmup_tokens: Inductor compiles lazily, so it is run once on this many rows to
    compile now (``None``: compile on first call).
    The module carries ``compile_seconds`` and a :class:`CompileReport` as ``report``.
    """
    t0 = time.perf_counter()
    if isinstance(graph, str):
        graph = parse(graph)
    spec = get_backend(backend)
    check_options(spec, options)
    if spec.check is not None:
        spec.check(options)  # may warn with stacklevel=3: our caller
    k = inner_width(graph, d_model, d_inner)
    dev = resolve_device(device, weights)
    if dtype is None:
        first = next(iter(weights.items()), None) if weights else None
        dtype = as_weight_pair(first[1], first[0])[0].dtype if first else \
            torch.get_default_dtype()
    slots = _slots(graph, d_model, k, weights, share_weights, bias, dtype, dev, seed)
    fn, hit = _function(graph, d_model, d_inner, spec, slots, dtype, dev, simplify,
                        warmup_tokens, options)
    module = MLPModule(graph, d_model, d_inner, slots, fn)
    seconds = time.perf_counter() - t0
    module.compile_seconds = seconds
    _, key, text = _target(graph, simplify)
    module.report = CompileReport(spec.name, text, key, d_model, d_inner, str(dtype), str(dev),
                                  hit, seconds, fn.seconds)
    return module


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
    check_options(BACKENDS["inductor"], options)
    target = _target(graph, simplify)[0]
    dev, dtype = resolve_device(device), dtype or torch.get_default_dtype()
    slots = _slots(target, d_model, inner_width(target, d_model, d_inner), None, False, True,
                   dtype, dev, 0)
    has_bias = dict.fromkeys(target.linears, True)
    fgm = build_functional(target, d_model, d_inner, has_bias=has_bias, compiled_forms=True)
    ws = [getattr(slots[m], k).detach() for m, k in weight_arg_names(target, has_bias)]
    x = torch.randn(tokens, d_model, generator=torch.Generator().manual_seed(0),
                    dtype=dtype).to(dev)
    compiled = torch.compile(fgm.forward, **inductor_kwargs(options))
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
