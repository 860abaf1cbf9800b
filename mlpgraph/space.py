"""Search spaces as data: which graphs a search may propose.

The IR accepts any well-typed DAG; a :class:`Space` narrows that to a family of
MLPs. A space is a plain record (JSON round-trip) of allowed primitives, linear
layer sets, a height window, per-layer stack counts and width ratios, and the
names of the validity rules it enforces (:data:`SPACE_RULES`).

:data:`PAPER_SPACE` is EfficientBERT's space (seven unary and three binary ops, W1
then W2, height 3..7, the reference's validity rules). :data:`WIDE_SPACE` adds the
GLU family (three linear layers), squared ReLU, exact GELU, softplus, sub and min.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction

from .builtins import PAPER_BINARY, PAPER_UNARY
from .errors import SpaceError
from .graph import Graph
from .ir import Node, Op, ancestors, skip_narrow
from .layer import STANDARD_FFN
from .primitives import get_primitive

# ------------------------------------------------------------ validity rules
RuleFn = Callable[[Graph, "Space"], str | None]


def _height(g: Graph, sp: Space) -> str | None:
    h = g.ref_height  # narrow nodes are not counted, as in the reference
    if not sp.min_height <= h <= sp.max_height:
        return f"height {h} is outside {sp.min_height}..{sp.max_height}"
    return None


def _has_input(g: Graph, sp: Space) -> str | None:
    return None if any(n.op is Op.INPUT for n in g.nodes) else "the input x does not appear"


def _ops_allowed(g: Graph, sp: Space) -> str | None:
    allowed = set(sp.unary) | set(sp.binary)
    bad = sorted({n.name for n in g.nodes if n.op is Op.PRIM} - allowed)
    return f"primitives {bad} are not in this space" if bad else None


def _no_constants(g: Graph, sp: Space) -> str | None:
    return "constants are not allowed" if any(n.op is Op.CONST for n in g.nodes) else None


def _linears(g: Graph, sp: Space) -> str | None:
    names = tuple(g.linears)
    match = next((s for s in sp.linear_sets if set(s) == set(names)), None)
    if match is None:
        return f"linear layers {sorted(names)} are not one of {[list(s) for s in sp.linear_sets]}"
    uses: dict[str, list[Node]] = {}
    for n in g.nodes:
        if n.op is Op.LINEAR:
            uses.setdefault(n.name, []).append(n)
    twice = sorted(k for k, v in uses.items() if len(v) > 1)
    if twice:
        return f"linear layers {twice} are used more than once"
    outer = uses[match[-1]][0]
    inner_ok = all(outer in ancestors(g, uses[name][0]) for name in match[:-1])
    return None if inner_ok else f"{match[-1]} must be applied after {list(match[:-1])}"


def _no_nested_activation(g: Graph, sp: Space) -> str | None:
    for n in g.nodes:
        if n.op is Op.PRIM and n.prim.is_activation:
            inner = skip_narrow(n.src[0])
            if inner.op is Op.PRIM and inner.prim.is_activation:
                return f"activation {inner.name} directly inside activation {n.name}"
    return None


def _no_nested_linear(g: Graph, sp: Space) -> str | None:
    for n in g.nodes:
        if n.op is Op.LINEAR and skip_narrow(n.src[0]).op is Op.LINEAR:
            return f"linear {skip_narrow(n.src[0]).name} directly inside linear {n.name}"
    return None


def _distinct_binary_args(g: Graph, sp: Space) -> str | None:
    for n in g.nodes:
        if n.op is Op.PRIM and len(n.src) == 2 and \
                skip_narrow(n.src[0]) is skip_narrow(n.src[1]):
            return f"{n.name} takes two identical arguments"
    return None


#: Validity rules by name: ``fn(graph, space) -> message or None``. Add yours here.
SPACE_RULES: dict[str, RuleFn] = {
    "height": _height,
    "input-present": _has_input,
    "ops-allowed": _ops_allowed,
    "no-constants": _no_constants,
    "linears-once-in-order": _linears,
    "no-activation-in-activation": _no_nested_activation,
    "no-linear-in-linear": _no_nested_linear,
    "distinct-binary-args": _distinct_binary_args,
}


@dataclass(frozen=True)
class Space:
    """A family of MLP graphs plus per-layer stack counts and width ratios."""

    name: str
    unary: tuple[str, ...]
    binary: tuple[str, ...]
    linear_sets: tuple[tuple[str, ...], ...] = (("W1", "W2"),)  # last name applied last
    min_height: int = 3
    max_height: int = 7
    stacks: tuple[int, ...] = (1, 2, 3, 4)
    ratios: tuple[Fraction, ...] = (Fraction(1), Fraction(1, 2), Fraction(1, 3), Fraction(1, 4))
    rules: tuple[str, ...] = tuple(SPACE_RULES)
    seed_expressions: tuple[str, ...] = (STANDARD_FFN,)
    doc: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        unknown = [r for r in self.rules if r not in SPACE_RULES]
        if unknown:
            raise SpaceError(f"space {self.name!r} names unknown rules {unknown}; "
                             f"known: {sorted(SPACE_RULES)}")
        for p in (*self.unary, *self.binary):
            get_primitive(p)  # raises PrimitiveError naming close matches

    def violations(self, graph: Graph) -> list[str]:
        """Every rule this graph breaks, as ``"rule: message"`` strings."""
        out = []
        for r in self.rules:
            msg = SPACE_RULES[r](graph, self)
            if msg:
                out.append(f"{r}: {msg}")
        return out

    def contains(self, graph: Graph) -> bool:
        return not self.violations(graph)

    def check(self, graph: Graph) -> Graph:
        """Return ``graph`` if it is in the space, else raise :class:`SpaceError`."""
        v = self.violations(graph)
        if v:
            raise SpaceError(f"{graph} is outside space {self.name!r}: " + "; ".join(v))
        return graph

    def widths(self, base_width: int) -> list[int]:
        """Inner widths ``k = ratio * base_width`` for this space's ratios."""
        return [int(r * base_width) for r in self.ratios]

    def with_primitives(self, unary: tuple[str, ...] = (), binary: tuple[str, ...] = (),
                        name: str | None = None) -> Space:
        """A copy that also allows (e.g. user-registered) primitives."""
        return replace(self, name=name or self.name, unary=(*self.unary, *unary),
                       binary=(*self.binary, *binary))

    def extend(self, add: Sequence[str], name: str | None = None) -> Space:
        """A copy that also allows the registered primitives ``add`` (e.g. user primitives
        loaded with :func:`mlpgraph.load_primitives`), unary or binary by their arity;
        names already allowed are kept once. Unknown names are refused with close matches."""
        unary, binary = list(self.unary), list(self.binary)
        for n in add:
            prim = get_primitive(n)  # PrimitiveError naming close matches
            target = unary if prim.arity == 1 else binary
            if prim.name not in target:
                target.append(prim.name)
        new = [n for n in (*unary, *binary) if n not in (*self.unary, *self.binary)]
        return replace(self, name=name or "+".join((self.name, *new)), unary=tuple(unary),
                       binary=tuple(binary))

    def to_json(self) -> str:
        d = asdict(self)
        d["ratios"] = [str(r) for r in self.ratios]
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Space:
        try:
            d = json.loads(text)
            d["ratios"] = tuple(Fraction(r) for r in d["ratios"])
            for k in ("unary", "binary", "stacks", "rules", "seed_expressions"):
                d[k] = tuple(d[k])
            d["linear_sets"] = tuple(tuple(s) for s in d["linear_sets"])
            return cls(**d)
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
            if isinstance(e, SpaceError):
                raise
            raise SpaceError(f"not a space definition: {e}") from None


PAPER_SPACE = Space(
    name="paper", unary=PAPER_UNARY, binary=PAPER_BINARY,
    doc="EfficientBERT's space: 7 unary + 3 binary ops, W1 then W2 once each, height 3..7.",
)

WIDE_SPACE = Space(
    name="wide",
    unary=(*PAPER_UNARY, "squared_relu", "gelu_erf", "softplus"),
    binary=(*PAPER_BINARY, "sub", "min"),
    linear_sets=(("W1", "W2"), ("W1", "W2", "W3")),
    max_height=8,
    seed_expressions=(STANDARD_FFN, "W3(swish(W1(x)) * W2(x))", "W3(gelu(W1(x)) * W2(x))",
                      "W2(squared_relu(W1(x)))"),
    doc="The paper's space plus GLU-family MLPs (three linears), squared ReLU, exact GELU, "
        "softplus, sub and min.",
)

SPACES = {s.name: s for s in (PAPER_SPACE, WIDE_SPACE)}


def resolve_space(value: str | Mapping[str, object] | Space) -> Space:
    """A space from its pipeline form: a name (``"paper"``), ``{"base": "paper", "add":
    ["mish"]}`` (a named space extended with registered primitives), a full space record
    (the keys of :meth:`Space.to_json`), or a :class:`Space` itself."""
    if isinstance(value, Space):
        return value
    if isinstance(value, str):
        if value not in SPACES:
            close = difflib.get_close_matches(value, list(SPACES), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SpaceError(f"unknown space {value!r}{hint} (known: {', '.join(SPACES)})")
        return SPACES[value]
    if isinstance(value, Mapping):
        if "unary" in value:
            return Space.from_json(json.dumps(dict(value)))
        extra = sorted(set(value) - {"base", "add", "name"})
        if extra or "base" not in value:
            raise SpaceError(f"a space must be a name, {{'base': NAME, 'add': [PRIMITIVE, ...]}}"
                             f" or a full space record; got keys {sorted(value)}")
        add = value.get("add", [])
        if isinstance(add, str) or not isinstance(add, Sequence) or \
                not all(isinstance(a, str) for a in add):
            raise SpaceError(f"space 'add' must be a list of primitive names, got {add!r}")
        name = value.get("name")
        return resolve_space(str(value["base"])).extend(
            add, name=str(name) if name is not None else None)
    raise SpaceError(f"a space must be a name or a mapping, got {type(value).__name__}")
