"""Compile backends, declared once each.

A backend turns the functional FX form of a graph (:func:`mlpgraph.codegen.build_functional`,
``forward(x2d, w1_weight, w1_bias, ...)``) into a runner with the same signature. It is
declared with :func:`backend` on its build function, which receives the FX module, an
example ``(x2d, *weights)``, the caller's options and whether to compile now::

    @backend("mine", options={"fast"}, doc="what it does")
    def _mine(fx_module, example, options, warmup):
        return some_compiler(fx_module, **options)

Everything else is derived from the registry :data:`BACKENDS`: the compiler's choices
and option checks, the CLI's ``--backend`` choices, cache release on eviction.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch import nn

from .errors import BackendError

__all__ = ["BACKENDS", "Backend", "TorchScriptDeprecationWarning", "backend", "check_options",
           "get_backend", "inductor_kwargs"]

Example = tuple[torch.Tensor, ...]
Build = Callable[[torch.fx.GraphModule, Example, Mapping[str, Any], bool],
                 Callable[..., torch.Tensor]]


@dataclass(frozen=True)
class Backend:
    """One compile backend.

    ``build(fx_module, example, options, warmup) -> runner``; ``options``: the keyword
    options it accepts; ``compiled_forms``: emit each primitive's compiled-backend form
    (:attr:`Primitive.compiled`) instead of its main torch form; ``check(options)``:
    validates option values and availability before anything is built (it may warn,
    with ``stacklevel=3`` pointing at the compiler's caller); ``release(fx_module)``:
    called when the compile cache evicts an artifact of this backend.
    """

    name: str
    build: Build
    options: frozenset[str] = frozenset()
    compiled_forms: bool = False
    check: Callable[[Mapping[str, Any]], None] | None = None
    release: Callable[[torch.fx.GraphModule], None] | None = None
    doc: str = ""


#: name -> Backend, in declaration order
BACKENDS: dict[str, Backend] = {}


def backend(name: str, *, options: Collection[str] = (), compiled_forms: bool = False,
            check: Callable[[Mapping[str, Any]], None] | None = None,
            release: Callable[[torch.fx.GraphModule], None] | None = None, doc: str = "",
            replace: bool = False) -> Callable[[Build], Build]:
    """Declare the decorated build function as backend ``name`` (see :class:`Backend`)."""
    def register(build: Build) -> Build:
        if name in BACKENDS and not replace:
            raise BackendError(f"backend {name!r} is already declared; pass replace=True to "
                               "redefine it")
        BACKENDS[name] = Backend(name, build, frozenset(options), compiled_forms, check,
                                 release, doc or (inspect.getdoc(build) or "").split("\n")[0])
        return build
    return register


def get_backend(name: str) -> Backend:
    """The declared backend ``name``; an unknown name lists the choices."""
    spec = BACKENDS.get(name)
    if spec is None:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return spec


def check_options(spec: Backend, options: Mapping[str, Any]) -> None:
    """Refuse option names ``spec`` does not accept, naming the ones it does."""
    bad = sorted(set(options) - spec.options)
    if not bad:
        return
    if not spec.options:
        raise BackendError(f"option(s) {bad} do not apply to backend {spec.name!r} (it takes "
                           "none)")
    raise BackendError(f"unknown option(s) {bad} for backend {spec.name!r}; it accepts "
                       f"{sorted(spec.options)}")


# ------------------------------------------------------------------ eager
@backend("eager", doc="the generated FX code, run by the Python interpreter")
def _eager(fx_module: torch.fx.GraphModule, example: Example, options: Mapping[str, Any],
           warmup: bool) -> Callable[..., torch.Tensor]:
    return fx_module.forward


# ------------------------------------------------------------------ inductor
_COMPILE_PARAMS = inspect.signature(torch.compile).parameters


def inductor_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """``torch.compile`` keywords for Inductor: ``options`` plus isolated recompiles."""
    kw = {"backend": "inductor", **options}
    if "isolate_recompiles" in _COMPILE_PARAMS:
        kw.setdefault("isolate_recompiles", True)
    return kw


def _reset_code(fx_module: torch.fx.GraphModule) -> None:
    """Drop Dynamo's compiled entries for an evicted artifact's code (a live module still
    using it recompiles on its next call)."""
    reset_code = getattr(torch._dynamo, "reset_code", None)
    if reset_code is not None:
        reset_code(fx_module.forward.__code__)


@backend("inductor", options=set(_COMPILE_PARAMS) - {"model", "backend"}, compiled_forms=True,
         release=_reset_code,
         doc="torch.compile with Inductor; options pass through (dynamic, mode, options=...)")
def _inductor(fx_module: torch.fx.GraphModule, example: Example, options: Mapping[str, Any],
              warmup: bool) -> Callable[..., torch.Tensor]:
    runner = torch.compile(fx_module.forward, **inductor_kwargs(options))
    if warmup:  # compile now, as general in the token count as allowed
        if options.get("dynamic") is not False:
            torch._dynamo.mark_dynamic(example[0], 0)
        with torch.no_grad():
            runner(*example)
    return runner


# ------------------------------------------------------------------ inductor-fused
class _InferenceOrPlain:
    """Runs the fused form, which has no autograd formula, unless autograd records a call
    (grad mode on and an input that requires grad): then the plain form, compiled by
    Inductor on first such use."""

    def __init__(self, fused: Callable[..., torch.Tensor],
                 plain: Callable[[], Callable[..., torch.Tensor]]) -> None:
        self.fused, self._make_plain, self._plain = fused, plain, None

    def __call__(self, x: torch.Tensor, *weights: torch.Tensor | None) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or any(
                w is not None and w.requires_grad for w in weights)):
            if self._plain is None:
                self._plain = self._make_plain()
            return self._plain(x, *weights)
        return self.fused(x, *weights)


def _reset_fused(fx_module: torch.fx.GraphModule) -> None:
    _reset_code(fx_module)
    fused = fx_module.meta.get("mlpgraph", {}).get("fused_module")
    if fused is not None:
        _reset_code(fused)


@backend("inductor-fused", options=(set(_COMPILE_PARAMS) - {"model", "backend"}) | {"prepack"},
         compiled_forms=True, release=_reset_fused,
         doc="Inductor with each linear's bias and next op in the GEMM epilogue (oneDNN "
             "post-ops on CPU, Triton templates on CUDA); inference, plain Inductor under "
             "autograd; option prepack")
def _inductor_fused(fx_module: torch.fx.GraphModule, example: Example,
                    options: Mapping[str, Any], warmup: bool) -> Callable[..., torch.Tensor]:
    from .codegen import build_functional
    from .fusion import TRITON_OPTIONS, epilogue_plan, fused_calls

    opts = dict(options)
    prepack = bool(opts.pop("prepack", True))
    where = epilogue_plan(example[0].device, example[0].dtype)
    if where == "triton":  # Inductor's matmul templates take the epilogue themselves
        opts["options"] = {**TRITON_OPTIONS, **opts.get("options", {})}
    if where != "onednn":  # (no library fuses epilogues here: the plain Inductor form)
        return _inductor(fx_module, example, opts, warmup)
    meta = fx_module.meta["mlpgraph"]
    calls = fused_calls(meta["graph"], prepack=prepack)
    fgm = build_functional(meta["graph"], meta["d_model"], meta["d_inner"],
                           has_bias=meta["has_bias"], compiled_forms=True, fused=calls)
    meta["fused_module"] = fgm
    # only elementwise work left outside the GEMMs is worth compiling
    fused = torch.compile(fgm.forward, **inductor_kwargs(opts)) if calls.kernels \
        else fgm.forward
    runner = _InferenceOrPlain(
        fused, lambda: torch.compile(fx_module.forward, **inductor_kwargs(opts)))
    if warmup:
        if calls.kernels and opts.get("dynamic") is not False:
            torch._dynamo.mark_dynamic(example[0], 0)
        with torch.no_grad():
            runner(*example)
    return runner


# ------------------------------------------------------------------ export
@backend("export", options={"strict"},
         doc="a torch.export program (dynamic in the token count); option strict")
def _export(fx_module: torch.fx.GraphModule, example: Example, options: Mapping[str, Any],
            warmup: bool) -> Callable[..., torch.Tensor]:
    dims = ({0: torch.export.Dim("tokens", min=1)},) + (None,) * (len(example) - 1)
    return torch.export.export(fx_module, example, dynamic_shapes=dims, **options).module()


# ------------------------------------------------------------------ torchscript
class TorchScriptDeprecationWarning(DeprecationWarning):
    """The legacy TorchScript backend was used (emitted once per process)."""


_TS_STATE: dict[str, Any] = {"warned": False, "support": None}


def _torchscript_check(options: Mapping[str, Any]) -> None:
    """Refuse a bad ``method`` or a torch without TorchScript; warn (once) that it is legacy."""
    if options.get("method", "script") not in ("script", "trace"):
        raise BackendError(f"method={options['method']!r} for backend 'torchscript'; use "
                           "method='script' or method='trace'")
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


@backend("torchscript", options={"method"}, check=_torchscript_check,
         doc="legacy TorchScript (method='script', falling back to 'trace')")
def _torchscript(fx_module: torch.fx.GraphModule, example: Example, options: Mapping[str, Any],
                 warmup: bool) -> Callable[..., torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own deprecation notices: ours was shown
        if options.get("method", "script") == "script":
            try:
                return torch.jit.script(fx_module)
            except Exception:  # noqa: BLE001, S110 - e.g. a user primitive it cannot parse
                pass  # tracing records the ops instead (inputs are always 2-D here)
        return torch.jit.trace(fx_module, example, check_trace=False)
