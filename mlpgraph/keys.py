"""Keys and equivalence: canonical keys, functional fingerprints, sympy meaning, proofs.

- :func:`canonical_key`: the simplified graph as a RecExpr string; equal keys mean the
  same simplified graph. Stable across processes and ``PYTHONHASHSEED``.
- :func:`fingerprint`: a hash of the outputs on fixed, seeded probe inputs and weights
  (float64, every output value, quantized to 1e-8 relative), so graphs that compute the
  same function share it even when no rewrite rule shows it.
- :func:`equivalent`: numeric probing, then a sympy proof on the element-wise parts.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

import numpy as np
import sympy
import torch

from .graph import Graph
from .interp import evaluate
from .ir import Node, Op, toposort
from .recexpr import write_recexpr
from .simplify import simplify

KEY_VERSION = "v1"
PROBE_D, PROBE_K, PROBE_ROWS = 7, 5, 12


def _key_row(n: Node, kids: list[int]) -> str:
    op = n.op
    if op is Op.INPUT:
        return "x"
    if op is Op.CONST:
        return f"c{n.width.value}:{n.name}"
    at = ",".join(map(str, kids))
    if op is Op.LINEAR:
        return f"{n.name}:{n.width.value}({at})"
    return f"{n.name}({at})"  # a primitive, or narrow


def recexpr_key(graph: Graph) -> str:
    """The graph (as is, not simplified) as a compact RecExpr string."""
    return ";".join(write_recexpr(graph.nodes, _key_row))


def canonical_key(graph: Graph) -> str:
    """A stable string naming the simplified graph, e.g. ``v1|x;W1:k(0);gelu(1);W2:d(2)``."""
    return f"{KEY_VERSION}|{recexpr_key(simplify(graph))}"


# ------------------------------------------------------------------ fingerprint
def probe_weights(graph: Graph, d_model: int = PROBE_D, d_inner: int = PROBE_K) -> dict:
    """Fixed weights per linear name (seeded by the name, so independent of graph order)."""
    out = {}
    for name, (w_in, w_out) in graph.linears.items():
        gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        o, i = w_out.bind(d_model, d_inner), w_in.bind(d_model, d_inner)
        out[name] = (torch.randn(o, i, generator=gen, dtype=torch.float64) / i**0.5,
                     torch.randn(o, generator=gen, dtype=torch.float64) * 0.1)
    return out


def probe_outputs(graph: Graph, seed: int = 0) -> torch.Tensor:
    """Outputs of ``graph`` on the fixed probe input ``seed`` (float64)."""
    gen = torch.Generator().manual_seed(1234 + seed)
    x = torch.randn(PROBE_ROWS, PROBE_D, generator=gen, dtype=torch.float64) * 1.5
    with torch.no_grad():
        return evaluate(graph, x, probe_weights(graph), d_inner=PROBE_K)


def fingerprint(graph: Graph) -> str:
    """Functional hash: equal for graphs computing the same function (up to float noise)."""
    y = probe_outputs(graph).numpy()
    finite = np.isfinite(y)
    yf = np.where(finite, y, 0.0)
    exp = np.floor(np.log2(np.maximum(1.0, np.abs(yf))))  # values > 1 keep 1e-8 relative
    q = np.round(yf / np.exp2(exp) * 1e8).astype(np.int64)
    h = hashlib.sha256()
    h.update(q.tobytes())
    h.update(exp.astype(np.int64).tobytes())
    h.update(np.where(finite, 0, np.sign(np.nan_to_num(y, nan=2.0))).astype(np.int8).tobytes())
    return h.hexdigest()[:24]


# ------------------------------------------------------------------ sympy
X = sympy.Symbol("x", real=True)


def to_sympy(graph: Graph | Node) -> sympy.Expr:
    """The element-wise meaning: ``x`` a real symbol, each linear an uninterpreted function
    ``W1(...)``, each ``narrow`` an uninterpreted ``narrow(...)``."""
    root = graph.root if isinstance(graph, Graph) else graph
    memo: dict[Node, sympy.Expr] = {}
    for n in toposort(root):
        if n.op is Op.INPUT:
            e = X
        elif n.op is Op.CONST:
            e = sympy.nsimplify(n.value, rational=True)
        elif n.op is Op.LINEAR:
            e = sympy.Function(n.name)(memo[n.src[0]])
        elif n.op is Op.NARROW:
            e = sympy.Function("narrow")(memo[n.src[0]])
        else:
            e = n.prim.sym(*(memo[s] for s in n.src))
        memo[n] = e
    return memo[root]


@dataclass(frozen=True)
class Equivalence:
    """Result of :func:`equivalent`: truthy when equivalent; says which method decided."""

    equivalent: bool
    method: str  # "structural", "numeric" or "sympy"
    reason: str

    def __bool__(self) -> bool:
        return self.equivalent


def _sympy_proves(a: Graph, b: Graph) -> bool | None:
    try:
        diff = to_sympy(a) - to_sympy(b)
        if diff == 0 or sympy.expand(diff) == 0:
            return True
        if sympy.count_ops(diff) > 150:
            return None
        return True if sympy.simplify(diff) == 0 else None
    except Exception:  # noqa: BLE001 - sympy failing to decide is "undecided"
        return None


def equivalent(a: Graph, b: Graph, *, seeds: int = 3, use_sympy: bool = True) -> Equivalence:
    """Do ``a`` and ``b`` compute the same function for all weights?

    Equal canonical keys prove it ("structural"). Otherwise the graphs are run on
    seeded probes: a difference proves they differ ("numeric"). If they agree, a sympy
    proof on the element-wise parts is tried ("sympy"); if sympy cannot decide, the
    answer rests on the probes ("numeric", with the number of probes in ``reason``).
    """
    sa, sb = simplify(a), simplify(b)
    if sa == sb:
        return Equivalence(True, "structural", "equal canonical keys after simplification")
    if sa.linears != sb.linears:
        return Equivalence(False, "structural",
                           f"different linear layers: {dict(sa.linears)} vs {dict(sb.linears)}")
    for s in range(seeds):
        ya, yb = probe_outputs(sa, s), probe_outputs(sb, s)
        if not torch.allclose(ya, yb, rtol=1e-9, atol=1e-12, equal_nan=True):
            i = int((ya - yb).abs().nan_to_num(float("inf")).argmax())
            return Equivalence(False, "numeric", f"outputs differ on probe {s} at flat index "
                               f"{i}: {ya.flatten()[i].item()!r} vs {yb.flatten()[i].item()!r}")
    if use_sympy and _sympy_proves(sa, sb):
        return Equivalence(True, "sympy", "sympy proved the element-wise expressions equal")
    return Equivalence(True, "numeric", f"outputs agree on {seeds} seeded probes of "
                       f"{PROBE_ROWS}x{PROBE_D} inputs (no symbolic proof found)")
