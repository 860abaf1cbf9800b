"""Primitives, declared once.

A :class:`Primitive` holds everything every backend needs: the torch code
(ordinary torch ops, so ``torch.compile`` fuses it), the sympy meaning, the
algebraic properties the simplifier relies on, and a cost. The interpreter, the
sympy translation, the FX code generator and the drawings are all derived from it.

Users add their own with the same decorator the built-ins use::

    import sympy, torch
    from mlpgraph import primitive

    @primitive(sympy=lambda a: a * sympy.tanh(sympy.log(1 + sympy.exp(a))),
               tags={"activation"}, flops=8)
    def mish(a):
        return a * torch.tanh(torch.nn.functional.softplus(a))

Registration checks the declaration (arity, shape, finiteness on probe inputs,
torch/sympy agreement, and each claimed algebraic property) and refuses it with a
message naming the failed check and the value that failed it.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch

from .errors import PrimitiveError

_NAME = re.compile(r"^[a-z_][A-Za-z0-9_]*$")
RESERVED = frozenset({"x", "narrow", "fill"})

#: probe values for the finiteness check ("0, -1 and large values")
FINITE_PROBES = (0.0, -1.0, 1.0, 0.5, -3.0, 20.0, -20.0, 1e3, -1e3)
#: probe values where torch and sympy must agree, and properties must hold
AGREE_PROBES = (-2.5, -1.0, -0.3, 0.0, 0.7, 1.0, 2.0)


@dataclass(frozen=True, eq=False)
class Primitive:
    """One primitive operation, declared once."""

    name: str
    fn: Callable[..., torch.Tensor]  # torch implementation (element-wise)
    sym: Callable[..., sympy.Expr]  # sympy meaning
    arity: int
    commutative: bool = False
    associative: bool = False
    idempotent: bool = False  # unary: f(f(a)) == f(a); binary: f(a, a) == a
    involution: bool = False  # unary: f(f(a)) == a
    identity: float | None = None  # f(a, e) == f(e, a) == a
    right_identity: float | None = None  # f(a, e) == a
    absorbing: float | None = None  # f(a, z) == f(z, a) == z (for finite a)
    monotone: bool = False  # non-decreasing in every argument
    flops: float = 1.0  # floating-point operations per output element
    tags: frozenset[str] = frozenset()  # e.g. {"activation"}
    aliases: tuple[str, ...] = ()
    doc: str = ""
    properties: dict[str, Any] = field(default_factory=dict, repr=False)
    # optional equivalent torch form used by compiled backends (Inductor), written so that
    # the fused kernel is cheaper (e.g. a rational tanh); checked against ``fn`` on register
    compiled: Callable[..., torch.Tensor] | None = field(default=None, repr=False)

    def torch_fn(self, compiled: bool = False) -> Callable[..., torch.Tensor]:
        """The torch code to emit: ``compiled`` picks the compiled-backend form if declared."""
        return self.compiled if compiled and self.compiled is not None else self.fn

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(*args)

    @property
    def is_activation(self) -> bool:
        return "activation" in self.tags

    def sympy_expr(self) -> sympy.Expr:
        """The sympy meaning applied to fresh symbols a, b, ..."""
        return self.sym(*sympy.symbols(" ".join("abc"[: self.arity]), real=True, seq=True))

    def signature(self) -> tuple:
        """What makes two declarations 'the same meaning'."""
        return (self.arity, sympy.srepr(self.sympy_expr()), self.commutative, self.associative,
                self.idempotent, self.involution, self.identity, self.right_identity,
                self.absorbing, self.monotone)


class Registry:
    """Name -> :class:`Primitive`, with aliases."""

    def __init__(self) -> None:
        self._prims: dict[str, Primitive] = {}
        self._alias: dict[str, str] = {}
        self.version = 0  # bumped on every change (caches keyed on it)

    def __contains__(self, name: str) -> bool:
        return name in self._prims or name in self._alias

    def __iter__(self):
        return iter(self._prims.values())

    def names(self) -> list[str]:
        return sorted([*self._prims, *self._alias])

    def lookup(self, name: str) -> Primitive | None:
        """The primitive ``name`` (or an alias of it) names, or ``None`` if there is none."""
        prim = self._prims.get(name)
        return prim if prim is not None else self._prims.get(self._alias.get(name, name))

    def get(self, name: str) -> Primitive:
        """The primitive ``name`` (or an alias of it) names; :class:`PrimitiveError` (with
        close matches) if there is none."""
        prim = self.lookup(name)
        if prim is None:
            close = difflib.get_close_matches(name, self.names(), n=4, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise PrimitiveError(
                f"unknown primitive {name!r}{hint} (known: {', '.join(self.names())}; "
                "register new ones with @mlpgraph.primitive)"
            )
        return prim

    def add(self, prim: Primitive, *, check: bool = True, replace: bool = False) -> Primitive:
        for n in (prim.name, *prim.aliases):
            if not _NAME.match(n) or n in RESERVED:
                raise PrimitiveError(
                    f"check 'name': {n!r} is not a valid primitive name (lower-case identifier, "
                    f"not one of {sorted(RESERVED)}, not starting with 'W')"
                )
        if check:
            check_primitive(prim)
        old = self._prims.get(self._alias.get(prim.name, prim.name))
        if old is not None and not replace:
            same_compiled = prim.compiled is None or _same_function(old.compiled, prim.compiled)
            if (old.fn is prim.fn or old.signature() == prim.signature()) and same_compiled:
                return old  # the same declaration again (e.g. a module re-import)
            if not same_compiled:
                raise PrimitiveError(
                    f"primitive {prim.name!r} is already registered with another compiled "
                    "form; pass replace=True to change it")
            raise PrimitiveError(
                f"primitive {prim.name!r} is already registered with a different meaning "
                f"({old.sympy_expr()} vs {prim.sympy_expr()}); choose another name or pass "
                "replace=True"
            )
        for a in prim.aliases:
            if a in self._prims or (a in self._alias and self._alias[a] != prim.name):
                raise PrimitiveError(f"alias {a!r} of {prim.name!r} is already taken")
        self._prims[prim.name] = prim
        for a in prim.aliases:
            self._alias[a] = prim.name
        self.version += 1
        return prim


REGISTRY = Registry()


def get_primitive(name: str) -> Primitive:
    """Look up a primitive (or alias) in the default registry."""
    return REGISTRY.get(name)


def _same_function(a: Callable | None, b: Callable | None) -> bool:
    """The same object, or the same definition seen again (a module re-import/reload)."""
    return a is b or (a is not None and b is not None and
                      (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)
                      and "<lambda>" not in a.__qualname__)


def primitive(
    fn: Callable[..., torch.Tensor] | None = None,
    *,
    sympy: Callable[..., Any],  # noqa: A002 - the declaration's field name
    name: str | None = None,
    arity: int | None = None,
    commutative: bool = False,
    associative: bool = False,
    idempotent: bool = False,
    involution: bool = False,
    identity: float | None = None,
    right_identity: float | None = None,
    absorbing: float | None = None,
    monotone: bool = False,
    flops: float = 1.0,
    tags: Iterable[str] = (),
    aliases: Iterable[str] = (),
    check: bool = True,
    replace: bool = False,
    registry: Registry | None = None,
    compiled: Callable[..., torch.Tensor] | None = None,
) -> Any:
    """Declare and register a primitive; use as ``@primitive(sympy=...)`` on a torch function.

    ``compiled``: an optional second torch form of the same function that compiled
    backends (Inductor) emit instead, e.g. one that fuses into a cheaper kernel; it must
    agree with the main form to float32 precision (checked when ``check`` is true).
    """

    def register(f: Callable[..., torch.Tensor]) -> Primitive:
        n_args = _positional_arity(f, arity)
        if arity is not None and arity != n_args:
            raise PrimitiveError(
                f"check 'arity' failed for {name or f.__name__!r}: declared arity {arity} but "
                f"the torch function takes {n_args} positional argument(s)"
            )
        if n_args not in (1, 2):
            raise PrimitiveError(
                f"check 'arity' failed for {name or f.__name__!r}: primitives are unary or "
                f"binary, the function takes {n_args} argument(s)"
            )
        prim = Primitive(
            name=name or f.__name__, fn=f, sym=sympy, arity=n_args, commutative=commutative,
            associative=associative, idempotent=idempotent, involution=involution,
            identity=identity, right_identity=right_identity, absorbing=absorbing,
            monotone=monotone, flops=float(flops), tags=frozenset(tags),
            aliases=tuple(aliases), doc=inspect.getdoc(f) or "", compiled=compiled,
        )
        return (registry or REGISTRY).add(prim, check=check, replace=replace)

    return register(fn) if fn is not None else register


def _positional_arity(f: Callable[..., Any], declared: int | None) -> int:
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError) as e:
        if declared is not None:  # e.g. a C builtin such as torch.tanh
            return declared
        raise PrimitiveError(f"check 'arity': cannot read the signature of {f!r} ({e}); "
                             "pass arity=... to the decorator") from None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


# ------------------------------------------------------------ declaration checks
def _fail(prim: Primitive, check: str, detail: str) -> PrimitiveError:
    return PrimitiveError(f"primitive {prim.name!r} refused, check {check!r} failed: {detail}")


def _grid(values: Iterable[float], arity: int) -> list[tuple[float, ...]]:
    return list(itertools.product(values, repeat=arity))


def _run(prim: Primitive, points: list[tuple[float, ...]], dtype: torch.dtype) -> torch.Tensor:
    cols = [torch.tensor([p[i] for p in points], dtype=dtype) for i in range(prim.arity)]
    with torch.no_grad():
        out = prim.fn(*cols)
    if not isinstance(out, torch.Tensor):
        raise _fail(prim, "shape", f"returned {type(out).__name__}, not a torch.Tensor")
    return out


def _sympy_values(prim: Primitive, points: list[tuple[float, ...]]) -> list[float]:
    syms = sympy.symbols(" ".join(f"p{i}" for i in range(prim.arity)), real=True, seq=True)
    expr = prim.sym(*syms)
    try:
        f = sympy.lambdify(syms, expr, modules=["mpmath"])
        return [float(f(*p)) for p in points]
    except Exception:  # noqa: BLE001 - fall back to exact substitution
        return [float(expr.subs(dict(zip(syms, p, strict=True))).evalf()) for p in points]


def check_primitive(prim: Primitive) -> None:
    """Run every registration check on a declaration; raise :class:`PrimitiveError` on failure."""
    # shape: output shape equals input shape (also for a batch of matrices)
    shaped = [torch.linspace(-2, 2, 15).reshape(3, 5) + i for i in range(prim.arity)]
    try:
        out = prim.fn(*shaped)
    except Exception as e:  # noqa: BLE001 - report any failure of user code
        raise _fail(prim, "shape", f"calling it on tensors of shape (3, 5) raised {e!r}") from e
    if not isinstance(out, torch.Tensor) or out.shape != shaped[0].shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise _fail(prim, "shape", f"inputs of shape (3, 5) gave output {got}")
    # finite on probes, float32 as in training
    pts = _grid(FINITE_PROBES, prim.arity)
    vals = _run(prim, pts, torch.float32)
    bad = (~torch.isfinite(vals)).nonzero()
    if len(bad):
        p = pts[int(bad[0, 0])]
        raise _fail(prim, "finite", f"output {vals[int(bad[0, 0])].item()} at input {p}")
    # torch and sympy agree
    pts = _grid(AGREE_PROBES, prim.arity)
    tv = _run(prim, pts, torch.float64).tolist()
    try:
        sv = _sympy_values(prim, pts)
    except Exception as e:  # noqa: BLE001
        raise _fail(prim, "sympy", f"the sympy meaning cannot be evaluated: {e!r}") from e
    for p, a, b in zip(pts, tv, sv, strict=True):
        if not math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6):
            raise _fail(prim, "sympy", f"torch gives {a!r} but sympy gives {b!r} at input {p}")
    if prim.compiled is not None:
        _check_compiled_form(prim)
    _check_properties(prim)


def _check_compiled_form(prim: Primitive) -> None:
    """The compiled-backend form equals the main form (float32 and float64, values and
    gradients), and in float16/bfloat16 its values and gradients are finite wherever the
    main form's are."""
    ends = torch.logspace(-12, 1.5, 300, dtype=torch.float64)
    line = torch.cat([-ends.flip(0), torch.zeros(1, dtype=torch.float64), ends,
                      torch.linspace(-8, 8, 801, dtype=torch.float64)])
    cols = [line] if prim.arity == 1 else [line.repeat_interleave(7),
                                           torch.linspace(-3, 3, 7).repeat(len(line))]
    # dtype -> (rtol, atol) for values, or None: half precision only has to stay finite
    tolerances = {torch.float32: (2e-6, 2e-7), torch.float64: (1e-12, 1e-15),
                  torch.float16: None, torch.bfloat16: None}
    for dtype, tol in tolerances.items():
        want, g_want = _value_and_grad(prim, prim.fn, "main", cols, dtype)
        got, g_got = _value_and_grad(prim, prim.compiled, "compiled", cols, dtype)
        for what, x, y in (("value", want, got), *(("gradient", u, v)
                                                    for u, v in zip(g_want, g_got, strict=True))):
            if tol is None:
                ok = ~(torch.isfinite(x) & ~torch.isfinite(y))
            else:  # gradients: the main form may itself lose ulps (e.g. GELU's 1 + tanh)
                rtol, atol = tol[0], tol[1] * (1 if what == "value" else 5)
                ok = torch.isclose(y, x, rtol=rtol, atol=atol) | (torch.isnan(x) & torch.isnan(y))
            if not bool(ok.all()):
                i = int((~ok).nonzero()[0, 0])
                at = tuple(float(c[i]) for c in cols)
                hint = "differs from" if tol is not None else "is not finite, unlike"
                raise _fail(prim, "compiled", f"{dtype} {what} {float(y[i])!r} of the compiled "
                            f"form {hint} {float(x[i])!r} of the torch form at input {at}"
                            + ("" if tol is not None else " (compute in float32 and cast "
                               "back?)"))


def _value_and_grad(prim: Primitive, fn: Callable[..., torch.Tensor], which: str,
                    cols: list[torch.Tensor], dtype: torch.dtype
                    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    ins = [c.to(dtype).requires_grad_() for c in cols]
    try:
        out = fn(*ins)
        grads = torch.autograd.grad(out.sum(), ins, allow_unused=True, materialize_grads=True)
    except Exception as e:  # noqa: BLE001 - report any failure of user code
        raise _fail(prim, "compiled", f"the {which} torch form raised {e!r} on {dtype} "
                    "inputs") from e
    return out.detach(), tuple(g.detach() for g in grads)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=1e-9, atol=1e-12))


def _check_properties(prim: Primitive) -> None:
    v = torch.tensor(AGREE_PROBES, dtype=torch.float64)
    f = prim.fn
    a, b = torch.meshgrid(v, v, indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    if prim.arity == 1:
        if prim.commutative or prim.associative or prim.identity is not None \
                or prim.absorbing is not None or prim.right_identity is not None:
            raise _fail(prim, "properties", "commutative/associative/identity/absorbing "
                        "apply to binary primitives only")
        if prim.idempotent and not _close(f(f(v)), f(v)):
            raise _fail(prim, "idempotent", f"f(f(a)) != f(a), e.g. {f(f(v)).tolist()}")
        if prim.involution and not _close(f(f(v)), v):
            raise _fail(prim, "involution", f"f(f(a)) != a, e.g. {f(f(v)).tolist()}")
        if prim.monotone and bool((f(v.sort().values).diff() < -1e-12).any()):
            raise _fail(prim, "monotone", "the output decreases somewhere on the probes")
        return
    if prim.involution:
        raise _fail(prim, "properties", "involution applies to unary primitives only")
    if prim.commutative and not _close(f(a, b), f(b, a)):
        raise _fail(prim, "commutative", "f(a, b) != f(b, a) on the probe grid")
    if prim.associative:
        for x, y, z in itertools.product(AGREE_PROBES[:4], repeat=3):
            tx, ty, tz = (torch.tensor([t], dtype=torch.float64) for t in (x, y, z))
            if not torch.allclose(f(f(tx, ty), tz), f(tx, f(ty, tz)), rtol=1e-9):
                raise _fail(prim, "associative", f"fails at (a, b, c) = {(x, y, z)}")
    if prim.idempotent and not _close(f(v, v), v):
        raise _fail(prim, "idempotent", "f(a, a) != a on the probes")
    for e, both in ((prim.identity, True), (prim.right_identity, False)):
        if e is not None:
            ev = torch.full_like(v, e)
            if not _close(f(v, ev), v) or (both and not _close(f(ev, v), v)):
                raise _fail(prim, "identity", f"{e} is not an identity element")
    if prim.absorbing is not None:
        z = torch.full_like(v, prim.absorbing)
        if not _close(f(v, z), z) or not _close(f(z, v), z):
            raise _fail(prim, "absorbing", f"{prim.absorbing} is not an absorbing element")
    if prim.monotone:
        step = f(a + 0.5, b) - f(a, b), f(a, b + 0.5) - f(a, b)
        if any(bool((s < -1e-12).any()) for s in step):
            raise _fail(prim, "monotone", "the output decreases in an argument on the probes")
