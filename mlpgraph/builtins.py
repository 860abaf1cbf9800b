"""Built-in primitives: the paper's seven unary and three binary ops, plus modern FFN ops.

Every one is declared with the public :func:`mlpgraph.primitive` decorator, exactly
as a user would. They are registered with ``check=False`` to keep ``import``
fast; ``tests/test_primitives.py`` runs every registration check on each of them.
"""

from __future__ import annotations

import sympy as sp
import torch
import torch.nn.functional as F

from .primitives import primitive

_C = sp.sqrt(2 / sp.pi)
ACT = {"activation"}
PAPER = {"activation", "paper"}


# Compiled-backend forms, for Inductor: tanh as a rational function (no exp at all) and GELU
# written through exp (1 + tanh(z) = 2 sigmoid(2z), free of cancellation); both accurate to
# float32 precision, and `check_primitive` compares them with the main form. Why, the fit and
# the timings: docs/decisions.md (mlpgraph, "Inductor's tanh and GELU forms").
_GELU_C = 0.7978845608028654  # sqrt(2 / pi)
# tanh(x) ~ x P(x^2) / Q(x^2) on [-9, 9], P and Q of degree 4 (in x^2), Q with positive
# coefficients (no poles); beyond |x| = 9 float32 tanh rounds to +-1, hence the clamp.
_TANH_P = (1.0, 0.13381027, 0.003495589, 2.0609095e-05, 1.3354677e-08)
_TANH_Q = (1.0, 0.46714342, 0.025876986, 0.00032856362, 7.776565e-07)


def _tanh_rational(a: torch.Tensor) -> torch.Tensor:
    if a.dtype == torch.float64:  # a float32-accurate fit; float64 keeps the exact op
        return torch.tanh(a)
    x = a.float().clamp(-9.0, 9.0)  # float16/bfloat16 are evaluated in float32
    t = x * x
    p0, p1, p2, p3, p4 = _TANH_P
    q0, q1, q2, q3, q4 = _TANH_Q
    num = x * (p0 + t * (p1 + t * (p2 + t * (p3 + t * p4))))
    den = q0 + t * (q1 + t * (q2 + t * (q3 + t * q4)))
    # |P/Q| may exceed 1 by an ulp near the clamp: keep tanh's range exactly
    return (num / den).clamp(-1.0, 1.0).to(a.dtype)


def _gelu_exp(a: torch.Tensor) -> torch.Tensor:
    # float16/bfloat16 are evaluated in float32 (exp(80) would overflow them); the clamp
    # keeps exp finite (and the gradient free of inf * 0) far left of 0
    x = a.float() if a.dtype in (torch.float16, torch.bfloat16) else a
    return (x / (1 + torch.exp((-2 * _GELU_C * (x + 0.044715 * x * x * x)).clamp_max(80.0)))
            ).to(a.dtype)


# ------------------------------------------------ the paper's unary ops (7)
@primitive(sympy=lambda a: a / 2 * (1 + sp.tanh(_C * (a + sp.Rational(44715, 10**6) * a**3))),
           tags=PAPER, flops=9, check=False, compiled=_gelu_exp)
def gelu(a):
    """GELU, tanh approximation (as in BERT's reference code and the paper)."""
    return F.gelu(a, approximate="tanh")


@primitive(sympy=lambda a: 1 / (1 + sp.exp(-a)), tags=PAPER, monotone=True, flops=4, check=False)
def sigmoid(a):
    """Logistic sigmoid."""
    return torch.sigmoid(a)


@primitive(sympy=sp.tanh, tags=PAPER, monotone=True, flops=5, check=False, compiled=_tanh_rational)
def tanh(a):
    """Hyperbolic tangent."""
    return torch.tanh(a)


@primitive(sympy=lambda a: sp.Max(a, 0), tags=PAPER, idempotent=True, monotone=True, flops=1,
           check=False)
def relu(a):
    """max(a, 0)."""
    return torch.relu(a)


@primitive(sympy=lambda a: sp.Max(a, a / 100), tags=PAPER, monotone=True, flops=2, check=False)
def leaky_relu(a):
    """Leaky ReLU with negative slope 0.01."""
    return F.leaky_relu(a, 0.01)


@primitive(sympy=lambda a: sp.Piecewise((a, a > 0), (sp.exp(a) - 1, True)), tags=PAPER,
           monotone=True, flops=4, check=False)
def elu(a):
    """ELU with alpha 1."""
    return F.elu(a, 1.0)


@primitive(sympy=lambda a: a / (1 + sp.exp(-a)), tags=PAPER, aliases=("silu",), flops=5,
           check=False)
def swish(a):
    """a * sigmoid(a) (also called SiLU)."""
    return F.silu(a)


# ------------------------------------------------ the paper's binary ops (3)
@primitive(sympy=lambda a, b: a + b, tags={"paper"}, commutative=True, associative=True,
           identity=0.0, monotone=True, flops=1, check=False)
def add(a, b):
    """a + b."""
    return a + b


@primitive(sympy=lambda a, b: a * b, tags={"paper"}, commutative=True, associative=True,
           identity=1.0, absorbing=0.0, flops=1, check=False)
def mul(a, b):
    """a * b."""
    return a * b


@primitive(sympy=sp.Max, tags={"paper"}, commutative=True, associative=True, idempotent=True,
           monotone=True, flops=1, check=False)
def max(a, b):  # noqa: A001 - the primitive's public name
    """Element-wise maximum."""
    return torch.maximum(a, b)


# ------------------------------------------------ beyond the paper
@primitive(sympy=lambda a: a, idempotent=True, monotone=True, flops=0, check=False)
def identity(a):
    """a."""
    return a


@primitive(sympy=lambda a: -a, involution=True, flops=1, check=False)
def neg(a):
    """-a."""
    return torch.neg(a)


@primitive(sympy=lambda a, b: a - b, right_identity=0.0, flops=1, check=False)
def sub(a, b):
    """a - b."""
    return a - b


@primitive(sympy=sp.Min, commutative=True, associative=True, idempotent=True, monotone=True,
           flops=1, check=False)
def min(a, b):  # noqa: A001 - the primitive's public name
    """Element-wise minimum."""
    return torch.minimum(a, b)


@primitive(sympy=lambda a: a**2, flops=1, check=False)
def square(a):
    """a * a."""
    return a * a


@primitive(sympy=lambda a: sp.Max(a, 0) ** 2, tags=ACT, monotone=True, flops=2, check=False)
def squared_relu(a):
    """relu(a)**2 (Primer's squared ReLU)."""
    r = torch.relu(a)
    return r * r


@primitive(sympy=lambda a: sp.log(1 + sp.exp(a)), tags=ACT, monotone=True, flops=5, check=False)
def softplus(a):
    """log(1 + exp(a)), computed stably."""
    return F.softplus(a)


@primitive(sympy=lambda a: a / 2 * (1 + sp.erf(a / sp.sqrt(2))), tags=ACT, aliases=("erf_gelu",),
           flops=10, check=False)
def gelu_erf(a):
    """Exact GELU, a * Phi(a) with the error function."""
    return F.gelu(a)


PAPER_UNARY = ("gelu", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "swish")
PAPER_BINARY = ("add", "mul", "max")
