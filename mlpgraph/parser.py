"""Text syntax -> :class:`~mlpgraph.graph.Graph`. A hand-written recursive-descent parser (no eval).

Grammar (``x`` is the input; ``W...`` names a linear layer; other names are primitives)::

    expr    := term (('+' | '-') term)*
    term    := factor ('*' factor)*
    factor  := '-' factor | atom
    atom    := NUMBER | 'x' | '(' expr ')'
             | PRIM '(' expr (',' expr)* ')'
             | LINEAR ['[' ('d' | 'k') ']'] ('(' expr ')' | atom)    # W1(x) or W1 x
             | 'narrow' '(' expr ')'
             | 'fill' '[' ('d' | 'k' | 'm') ']' '(' NUMBER ')'

``+``, ``-``, ``*`` and unary ``-`` mean the primitives add, sub, mul and neg.
Operands of a binary op with widths d and k are cut to ``min(d, k)`` by visible
``narrow`` nodes unless ``coerce=False``.
"""

from __future__ import annotations

import difflib
import re
import string

from . import ir
from .errors import GraphTypeError, ParseError, PrimitiveError
from .graph import Graph
from .ir import Node, Width
from .primitives import REGISTRY

_TOKEN = re.compile(
    r"\s*((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[A-Za-z_][A-Za-z0-9_]*|[()\[\],+\-*]|\S)"
)
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
MAX_DEPTH = 100
MAX_LENGTH = 100_000
END = "<end>"
_BAD = "<bad>"
_BINARY = {"+": ("add", 1), "-": ("sub", 1), "*": ("mul", 2)}
# a token's kind from its first character (operators are their own kind); other first
# characters ('.', non-ASCII digits, anything else) are decided by _kind
_KIND = {**dict.fromkeys("0123456789", "num"),
         **dict.fromkeys(string.ascii_letters + "_", "name"), **{c: c for c in "()[],+-*"}}


class TextTypeError(ParseError, GraphTypeError):
    """A width error found while parsing: both a ParseError (with position) and a GraphTypeError."""


def _kind(token: str) -> str:
    return "num" if _NUMBER.fullmatch(token) else _BAD


def tokenize(text: str) -> tuple[list[str], list[str]]:
    """Split text into parallel lists (kinds, texts). An operator's kind is its own
    character; other kinds are "num" and "name"; the list ends with kind ``END``."""
    if len(text) > MAX_LENGTH:
        raise ParseError(f"expression is {len(text)} characters long; the limit is "
                         f"{MAX_LENGTH}", text, MAX_LENGTH)
    texts = _TOKEN.findall(text)
    get = _KIND.get
    kinds = [get(t[0]) or _kind(t) for t in texts]
    if _BAD in kinds:
        at = kinds.index(_BAD)
        raise ParseError(f"unexpected character {texts[at]!r}", text, token_positions(text)[at])
    kinds.append(END)
    texts.append("")
    return kinds, texts


def token_positions(text: str) -> list[int]:
    """Start offsets of the tokens of ``text`` (computed only when an error is reported)."""
    out = [m.start(1) for m in _TOKEN.finditer(text)]
    out.append(len(text))
    return out


class _Parser:
    def __init__(self, text: str, coerce: bool) -> None:
        self.text = text
        self.kinds, self.texts = tokenize(text)
        self.i = 0
        self.depth = 0
        self.at = 0  # token index of the node being built (for type-error positions)
        self.coerce = coerce

    # -- helpers
    def error(self, msg: str, at: int | None = None) -> ParseError:
        return ParseError(msg, self.text, self.pos(self.i if at is None else at))

    def pos(self, at: int) -> int:
        return token_positions(self.text)[at]

    def found(self) -> str:
        return "end of input" if self.kinds[self.i] == END else repr(self.texts[self.i])

    def expect(self, s: str) -> None:
        if self.kinds[self.i] != s:
            raise self.error(f"expected {s!r}, found {self.found()}")
        self.i += 1

    def accept(self, s: str) -> bool:
        if self.kinds[self.i] == s:
            self.i += 1
            return True
        return False

    def deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"expression nested deeper than {MAX_DEPTH} levels")

    # -- grammar (precedence climbing; node builders raise type errors, reported at self.at)
    def whole(self) -> Node:
        """The whole text as one expression node."""
        if self.kinds[0] == END:
            raise self.error("empty expression; write e.g. W2(gelu(W1(x)))")
        try:
            node = self.expr(1)
        except (GraphTypeError, PrimitiveError) as e:
            if isinstance(e, ParseError):
                raise
            raise TextTypeError(str(e), self.text, self.pos(self.at)) from None
        if self.kinds[self.i] != END:
            raise self.error(f"unexpected {self.texts[self.i]!r} after a complete expression")
        return node

    def parse(self) -> Graph:
        node = self.whole()
        try:
            return Graph(node)
        except GraphTypeError as e:
            raise TextTypeError(str(e), self.text, 0) from None

    def expr(self, min_prec: int) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"expression nested deeper than {MAX_DEPTH} levels")
        kinds = self.kinds
        # prefix: a name (the common case), unary minus or another atom
        at = self.i
        kind = kinds[at]
        if kind == "name":
            self.i = at + 1
            node = self.named(at, self.texts[at])
        elif kind == "-":
            self.i += 1
            if kinds[self.i] == "num":
                self.i += 1
                self.at = at
                node = ir.const(-float(self.texts[self.i - 1]))
            else:
                operand = self.expr(3)
                self.at = at
                node = ir.apply("neg", operand)
        else:
            node = self.atom()
        op = _BINARY.get(kinds[self.i])
        while op is not None and op[1] >= min_prec:
            at = self.i
            self.i += 1
            rhs = self.expr(op[1] + 1)
            self.at = at
            node = ir.apply(op[0], node, rhs, coerce=self.coerce)
            op = _BINARY.get(kinds[self.i])
        self.depth -= 1
        return node

    def atom(self) -> Node:
        at = self.i
        kind = self.kinds[at]
        self.i += 1
        if kind == "name":
            return self.named(at, self.texts[at])
        if kind == "num":
            self.at = at
            return ir.const(float(self.texts[at]))
        if kind == "(":
            node = self.expr(1)
            self.expect(")")
            return node
        self.i -= 1
        raise self.error(f"expected an expression (x, a number, a call or '('), found "
                         f"{self.found()}")

    def named(self, at: int, name: str) -> Node:
        kinds = self.kinds
        if name == "x":
            if kinds[self.i] == "(":
                raise self.error("x is the input, not a function; write e.g. tanh(x)")
            return ir.input_node()
        if name[0] == "W":
            out = self.width_annotation(("d", "k")) if kinds[self.i] == "[" else None
            if kinds[self.i] == "(":
                arg = self.call_args(at, 1)[0]
            else:  # juxtaposition, as in the paper's "W1 x"
                self.deeper()
                arg = self.atom()
                self.depth -= 1
            self.at = at
            return ir.linear(name, arg, out)
        prim = REGISTRY.lookup(name)  # (never x or W...: the registry refuses those names)
        if prim is not None:
            if kinds[self.i] == "(" and prim.arity == 1:  # the call_args of one argument
                self.i += 1
                arg = self.expr(1)
                if kinds[self.i] == ")":
                    self.i += 1
                    self.at = at
                    return ir.apply(prim, arg, coerce=self.coerce)
                self.i = at + 1  # not one argument and ')': call_args reports it
            args = self.call_args(at, prim.arity)
            self.at = at
            return ir.apply(prim, *args, coerce=self.coerce)
        if name == "narrow":
            arg = self.call_args(at, 1)[0]
            self.at = at
            return ir.narrow(arg)
        if name == "fill":
            width = self.width_annotation(("d", "k", "m"))
            self.expect("(")
            neg = self.accept("-")
            if kinds[self.i] != "num":
                raise self.error("fill[...] takes a number, e.g. fill[k](0.0)")
            value = float(self.texts[self.i])
            self.i += 1
            self.expect(")")
            self.at = at
            return ir.const(-value if neg else value, width)
        close = difflib.get_close_matches(name, [*REGISTRY.names(), "x", "narrow"], n=4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise self.error(f"unknown name {name!r}{hint} (linear layers are written W1, W2, "
                         "...; register new primitives with @mlpgraph.primitive)", at)

    def width_annotation(self, allowed: tuple[str, ...]) -> Width:
        self.expect("[")
        if self.kinds[self.i] != "name" or self.texts[self.i] not in allowed:
            raise self.error(f"width annotation must be one of {', '.join(allowed)}")
        w = Width(self.texts[self.i])
        self.i += 1
        self.expect("]")
        return w

    def call_args(self, at: int, arity: int) -> list[Node]:
        if self.kinds[self.i] != "(":
            name = self.texts[at]
            raise self.error(f"{name} must be called, e.g. {name}(x)")
        self.i += 1
        args = [self.expr(1)]
        while self.kinds[self.i] == ",":
            self.i += 1
            args.append(self.expr(1))
        if len(args) != arity:
            raise self.error(f"{self.texts[at]} takes {arity} argument(s), got {len(args)}", at)
        self.expect(")")
        return args


def parse(text: str, *, coerce: bool = True) -> Graph:
    """Parse an MLP expression such as ``W2(relu(W1(x) * x))`` into a :class:`Graph`.

    Raises :class:`ParseError` (a ``ValueError``) with line, column and a caret line.
    With ``coerce=False`` a width mismatch is an error instead of a ``narrow`` node.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse() takes a str, got {type(text).__name__}")
    return _Parser(text, coerce).parse()

