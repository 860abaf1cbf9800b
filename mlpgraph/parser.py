"""Text syntax -> :class:`~mlpgraph.ir.Graph`. A hand-written recursive-descent parser (no eval).

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

from . import ir
from .errors import GraphTypeError, ParseError, PrimitiveError
from .ir import Graph, Node, Width
from .primitives import REGISTRY

_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>[()\[\],+\-*]))"
)
MAX_DEPTH = 100
MAX_LENGTH = 100_000
END = "<end>"


class TextTypeError(ParseError, GraphTypeError):
    """A width error found while parsing: both a ParseError (with position) and a GraphTypeError."""


def tokenize(text: str) -> tuple[list[str], list[str], list[int]]:
    """Split text into parallel lists (kinds, texts, positions). An operator's kind is its own
    character; other kinds are "num" and "name"; the list ends with kind ``END``."""
    if len(text) > MAX_LENGTH:
        raise ParseError(f"expression is {len(text)} characters long; the limit is "
                         f"{MAX_LENGTH}", text, MAX_LENGTH)
    kinds: list[str] = []
    texts: list[str] = []
    poss: list[int] = []
    pos, n, match = 0, len(text), _TOKEN.match
    while pos < n:
        m = match(text, pos)
        if m is None or m.lastgroup is None:
            if text[pos:].strip() == "":
                break
            bad = len(text[pos:]) - len(text[pos:].lstrip()) + pos
            raise ParseError(f"unexpected character {text[bad]!r}", text, bad)
        kind = m.lastgroup
        tok = m.group(kind)
        kinds.append(tok if kind == "op" else kind)
        texts.append(tok)
        poss.append(m.start(kind))
        pos = m.end()
    kinds.append(END)
    texts.append("")
    poss.append(n)
    return kinds, texts, poss


class _Parser:
    def __init__(self, text: str, coerce: bool) -> None:
        self.text = text
        self.kinds, self.texts, self.poss = tokenize(text)
        self.i = 0
        self.depth = 0
        self.coerce = coerce

    # -- helpers
    def error(self, msg: str, at: int | None = None) -> ParseError:
        return ParseError(msg, self.text, self.poss[self.i if at is None else at])

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

    def build(self, at: int, fn, *args, **kw) -> Node:
        try:
            return fn(*args, **kw)
        except (GraphTypeError, PrimitiveError) as e:
            raise TextTypeError(str(e), self.text, self.poss[at]) from None

    def deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"expression nested deeper than {MAX_DEPTH} levels")

    # -- grammar
    def parse(self) -> Graph:
        if self.kinds[0] == END:
            raise self.error("empty expression; write e.g. W2(gelu(W1(x)))")
        node = self.expr()
        if self.kinds[self.i] != END:
            raise self.error(f"unexpected {self.texts[self.i]!r} after a complete expression")
        try:
            return Graph(node)
        except GraphTypeError as e:
            raise TextTypeError(str(e), self.text, 0) from None

    def expr(self) -> Node:
        self.deeper()
        node = self.term()
        kinds = self.kinds
        while kinds[self.i] == "+" or kinds[self.i] == "-":
            at = self.i
            self.i += 1
            rhs = self.term()
            node = self.build(at, ir.apply, "add" if kinds[at] == "+" else "sub", node, rhs,
                              coerce=self.coerce)
        self.depth -= 1
        return node

    def term(self) -> Node:
        node = self.factor()
        while self.kinds[self.i] == "*":
            at = self.i
            self.i += 1
            node = self.build(at, ir.apply, "mul", node, self.factor(), coerce=self.coerce)
        return node

    def factor(self) -> Node:
        at = self.i
        if self.kinds[at] != "-":
            return self.atom()
        self.i += 1
        if self.kinds[self.i] == "num":
            self.i += 1
            return self.build(at, ir.const, -float(self.texts[self.i - 1]))
        self.deeper()
        node = self.build(at, ir.apply, "neg", self.factor())
        self.depth -= 1
        return node

    def atom(self) -> Node:
        self.deeper()
        node = self._atom()
        self.depth -= 1
        return node

    def _atom(self) -> Node:
        at = self.i
        kind = self.kinds[at]
        if kind == "name":
            self.i += 1
            return self.named(at, self.texts[at])
        if kind == "num":
            self.i += 1
            return self.build(at, ir.const, float(self.texts[at]))
        if kind == "(":
            self.i += 1
            node = self.expr()
            self.expect(")")
            return node
        raise self.error(f"expected an expression (x, a number, a call or '('), found "
                         f"{self.found()}")

    def named(self, at: int, name: str) -> Node:
        if name == "x":
            if self.kinds[self.i] == "(":
                raise self.error("x is the input, not a function; write e.g. tanh(x)")
            return ir.input_node()
        if name in REGISTRY:
            prim = REGISTRY.get(name)
            args = self.call_args(at, prim.arity)
            return self.build(at, ir.apply, name, *args, coerce=self.coerce)
        if name[0] == "W":
            out = self.width_annotation(("d", "k")) if self.kinds[self.i] == "[" else None
            if self.kinds[self.i] == "(":
                arg = self.call_args(at, 1)[0]
            else:
                arg = self.atom()  # juxtaposition, as in the paper's "W1 x"
            return self.build(at, ir.linear, name, arg, out)
        if name == "narrow":
            return self.build(at, ir.narrow, self.call_args(at, 1)[0])
        if name == "fill":
            width = self.width_annotation(("d", "k", "m"))
            self.expect("(")
            neg = self.accept("-")
            if self.kinds[self.i] != "num":
                raise self.error("fill[...] takes a number, e.g. fill[k](0.0)")
            value = float(self.texts[self.i])
            self.i += 1
            self.expect(")")
            return self.build(at, ir.const, -value if neg else value, width)
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
        args = [self.expr()]
        while self.kinds[self.i] == ",":
            self.i += 1
            args.append(self.expr())
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


def parse_node(text: str, *, coerce: bool = True) -> Node:
    """Parse a sub-expression of any width (e.g. ``W1(x)``) into a :class:`Node`."""
    p = _Parser(text, coerce)
    if p.tok.kind == "end":
        raise p.error("empty expression")
    node = p.expr()
    if p.tok.kind != "end":
        raise p.error(f"unexpected {p.tok.text!r} after a complete expression")
    return node
