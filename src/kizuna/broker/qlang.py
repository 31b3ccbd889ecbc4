"""The NGSI-LD query language (ETSI GS CIM 009 v1.8 §4.9): a parser into a small AST.

``;`` is AND, ``|`` is OR (AND binds tighter), parentheses group. A term is an attribute
path alone (existence) or ``path op value`` with op one of ``== != > >= < <= ~= !~=``.

Paths are ``attr``, ``attr.sub.sub2`` (sub-attributes, or instance metadata such as
``observedAt`` last) and ``attr[key][key2]`` / ``attr[key.key2]`` (inside the value).
Names may be compact (``ex:temp``) or full IRIs (``https://example.org/ns/temp``); in a
full IRI only the dots after its last ``/`` or ``#`` separate sub-attributes.

Values: numbers, quoted strings (``\\"`` and ``\\\\`` escape), ``true``/``false``, unquoted
dateTimes / dates / times, unquoted URIs, lists ``a,b,c`` and ranges ``low..high`` (both
only with ``==`` / ``!=``). A pattern after ``~=`` / ``!~=`` is a Python regular
expression, quoted or not (unquoted, it ends at ``;`` / ``|`` / ``)`` outside its own
parentheses). Names are kept as written; the compiler expands them.

:func:`format_q` prints an AST back as q text that parses to the same AST.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Union

from kizuna.problems import bad_request

OPERATORS = ("!~=", "==", "!=", ">=", "<=", "~=", ">", "<")  # longest first
EQUALITY_OPS = ("==", "!=")
PATTERN_OPS = ("~=", "!~=")

_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
_DATE = r"\d{4}-\d{2}-\d{2}"
_TIME = r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?"
_DATETIME = re.compile(rf"{_DATE}(T{_TIME})?|{_TIME}")
_NAME_STOP = frozenset(';|()[]"=!<>~,\\') | frozenset(" \t\r\n\f\v")
_ATOM_STOP = frozenset(';|()[],"\\') | frozenset(" \t\r\n\f\v")
_MAX_INT = 2**63 - 1


@dataclass(frozen=True)
class AttrPath:
    attr: str
    sub: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Literal:
    kind: str  # number | string | boolean | datetime | uri
    value: Any  # int | float | str | bool


@dataclass(frozen=True)
class ValueList:
    items: tuple[Literal, ...]


@dataclass(frozen=True)
class Range:
    low: Literal
    high: Literal


@dataclass(frozen=True)
class Comparison:
    path: AttrPath
    op: str
    value: Literal | ValueList | Range  # a pattern is Literal("string", regex)


@dataclass(frozen=True)
class Exists:
    path: AttrPath


@dataclass(frozen=True)
class And:
    items: tuple[QExpr, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[QExpr, ...]


QExpr = Union[And, Or, Comparison, Exists]  # noqa: UP007 - used at runtime by isinstance


# Bounds on one query's expressions (q, and the type expressions and scopeQ that share
# them): far above what a person or a service writes, and low enough that neither Python's
# recursion nor SQLite's expression depth (1,000) is ever reached.
MAX_DEPTH = 20  # nested parentheses
MAX_TERMS = 100  # conditions, or values in one list


def parse_q(text: str) -> QExpr:
    """Parse q text (already URL-decoded); a :class:`Problem` 400 names the position."""
    parser = _Parser(text)
    if not parser.text.strip():
        raise bad_request("Invalid q: the query is empty")
    expr = parser.disjunction()
    parser.skip_space()
    if parser.pos < len(parser.text):
        parser.fail("expected ';', '|' or the end" if parser.peek() != ")" else "unbalanced ')'")
    return expr


def parse_attr_path(text: str) -> AttrPath:
    """Parse an attribute path alone (``attr``, ``attr.sub``, ``attr[key]``)."""
    parser = _Parser(text, what="attribute path")
    path = parser.path()
    parser.skip_space()
    if parser.pos < len(parser.text):
        parser.fail("unexpected character after the attribute path")
    return path


class _Parser:
    def __init__(self, text: str, what: str = "q") -> None:
        self.what = what
        self.text = text.rstrip()
        self.pos = 0
        self.depth = 0
        self.terms = 0
        if "\x00" in self.text:
            self.fail("NUL character", self.text.index("\x00"))
        self.skip_space()

    # --- helpers -------------------------------------------------------------------

    def fail(self, why: str, pos: int | None = None) -> None:
        at = self.pos if pos is None else pos
        shown = self.text if len(self.text) <= 200 else self.text[:200] + "..."
        raise bad_request(f"Invalid {self.what} at position {at}: {why} (in {shown!r})")

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at(self, char: str) -> bool:
        self.skip_space()
        return self.peek() == char

    def expect(self, char: str, why: str) -> None:
        if not self.at(char):
            self.fail(why)
        self.pos += 1

    # --- expressions -----------------------------------------------------------------

    def disjunction(self) -> QExpr:
        items = [self.conjunction()]
        while self.at("|"):
            self.pos += 1
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self) -> QExpr:
        items = [self.term()]
        while self.at(";"):
            self.pos += 1
            items.append(self.term())
        return items[0] if len(items) == 1 else And(tuple(items))

    def term(self) -> QExpr:
        self.skip_space()
        if self.peek() == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                self.fail(f"parentheses nested deeper than {MAX_DEPTH}")
            self.pos += 1
            inner = self.disjunction()
            self.expect(")", "missing ')'")
            self.depth -= 1
            return inner
        self.terms += 1
        if self.terms > MAX_TERMS:
            self.fail(f"more than {MAX_TERMS} conditions")
        path = self.path()
        self.skip_space()
        op = next((o for o in OPERATORS if self.text.startswith(o, self.pos)), None)
        if op is None:
            if self.pos < len(self.text) and self.peek() not in ";|)":
                self.fail("expected an operator (== != > >= < <= ~= !~=), ';', '|' or ')'")
            return Exists(path)
        op_pos = self.pos
        self.pos += len(op)
        self.skip_space()
        if op in PATTERN_OPS:
            return Comparison(path, op, Literal("string", self.pattern()))
        value = self.value()
        if not isinstance(value, Literal) and op not in EQUALITY_OPS:
            self.fail("a list or range of values only goes with == or !=", op_pos)
        if isinstance(value, Literal) and value.kind == "boolean" and op not in EQUALITY_OPS:
            self.fail("true / false only go with == or !=", op_pos)
        return Comparison(path, op, value)

    # --- attribute paths ---------------------------------------------------------------

    def path(self) -> AttrPath:
        self.skip_space()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _NAME_STOP:
            self.pos += 1
        run = self.text[start : self.pos]
        if not run:
            self.fail("attribute name expected")
        names = _split_names(run)
        for name in names:
            if not name:
                self.fail(f"empty name in attribute path {run!r}", start)
        keys: list[str] = []
        while self.peek() == "[":
            self.pos += 1
            end = self.pos
            while end < len(self.text) and self.text[end] != "]":
                if self.text[end] in '["\\':
                    self.fail("unexpected character inside [...]", end)
                end += 1
            if end >= len(self.text):
                self.fail("missing ']'")
            inner = self.text[self.pos : end].strip()
            parts = [p.strip() for p in inner.split(".")]
            if not all(parts):
                self.fail("empty key inside [...]")
            keys.extend(parts)
            self.pos = end + 1
        return AttrPath(names[0], tuple(names[1:]), tuple(keys))

    # --- values ------------------------------------------------------------------------

    def value(self) -> Literal | ValueList | Range:
        first = self.literal()
        self.skip_space()
        if self.peek(2) == "..":
            self.pos += 2
            self.skip_space()
            high_pos = self.pos
            high = self.literal()
            if _family(first) != _family(high) or first.kind == "boolean":
                self.fail("a range needs two numbers or two strings / dates", high_pos)
            return Range(first, high)
        if self.peek() != ",":
            return first
        items = [first]
        while self.peek() == ",":
            if len(items) == MAX_TERMS:
                self.fail(f"more than {MAX_TERMS} values in a list")
            self.pos += 1
            self.skip_space()
            items.append(self.literal())
            self.skip_space()
        return ValueList(tuple(items))

    def literal(self) -> Literal:
        start = self.pos
        if self.peek() == '"':
            return Literal("string", self.quoted())
        while self.pos < len(self.text) and self.text[self.pos] not in _ATOM_STOP:
            if self.text.startswith("..", self.pos):
                break
            self.pos += 1
        raw = self.text[start : self.pos]
        if not raw:
            self.fail("value expected")
        if raw in ("true", "false"):
            return Literal("boolean", raw == "true")
        if _NUMBER.fullmatch(raw):
            return Literal("number", self.number(raw, start))
        if _DATETIME.fullmatch(raw):
            return Literal("datetime", raw)
        if any(c in raw for c in "=<>~!") and not _looks_like_uri(raw):
            self.fail(f"invalid value {raw!r} (quote strings)", start)
        # Unquoted words are taken as strings, as most brokers do.
        return Literal("uri" if ":" in raw else "string", raw)

    def number(self, raw: str, start: int) -> int | float:
        if re.fullmatch(r"-?\d+", raw):
            number: int | float = int(raw)
            if abs(number) <= _MAX_INT:
                return number
        number = float(raw)
        if not math.isfinite(number):
            self.fail(f"number {raw!r} out of range", start)
        return number

    def quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == "\\" and self.pos + 1 < len(self.text):
                nxt = self.text[self.pos + 1]
                out.append(nxt if nxt in '"\\' else char + nxt)
                self.pos += 2
                continue
            out.append(char)
            self.pos += 1
        self.fail("unterminated string", start)
        raise AssertionError  # unreachable

    def pattern(self) -> str:
        start = self.pos
        if self.peek() == '"':
            pattern = self.quoted()
        else:
            depth, in_class = 0, False
            while self.pos < len(self.text):
                char = self.text[self.pos]
                if char == "\\":
                    self.pos += 2
                    continue
                if in_class:
                    in_class = char != "]"
                elif char == "[":
                    in_class = True
                elif char == "(":
                    depth += 1
                elif char == ")":
                    if depth == 0:
                        break
                    depth -= 1
                elif char in ";|" and depth == 0:
                    break
                self.pos += 1
            self.pos = min(self.pos, len(self.text))
            pattern = self.text[start : self.pos].rstrip()
        if not pattern:
            self.fail("regular expression expected", start)
        try:
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError) as exc:
            self.fail(f"invalid regular expression {pattern!r}: {exc}", start)
        return pattern


def _split_names(run: str) -> list[str]:
    """``attr.sub.meta``; inside a full IRI, only dots after its last '/' or '#' split."""
    if "://" not in run:
        return run.split(".")
    cut = max(run.rfind("/"), run.rfind("#"))
    head, *rest = run[cut + 1 :].split(".")
    return [run[: cut + 1] + head, *rest]


def _looks_like_uri(raw: str) -> bool:
    return re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S+", raw) is not None


def _family(literal: Literal) -> str:
    return {"number": "number", "boolean": "boolean"}.get(literal.kind, "string")


# --- printing ------------------------------------------------------------------------


def format_attr_path(path: AttrPath) -> str:
    return ".".join((path.attr, *path.sub)) + "".join(f"[{k}]" for k in path.keys)


def format_q(expr: QExpr) -> str:
    """q text for ``expr``; :func:`parse_q` of it gives ``expr`` back."""
    if isinstance(expr, And | Or):
        glue = ";" if isinstance(expr, And) else "|"
        return glue.join(
            f"({format_q(i)})" if isinstance(i, And | Or) else format_q(i) for i in expr.items
        )
    if isinstance(expr, Exists):
        return format_attr_path(expr.path)
    return format_attr_path(expr.path) + expr.op + _format_value(expr.value)


def _format_value(value: Literal | ValueList | Range) -> str:
    if isinstance(value, ValueList):
        return ",".join(_format_literal(i) for i in value.items)
    if isinstance(value, Range):
        return f"{_format_literal(value.low)}..{_format_literal(value.high)}"
    return _format_literal(value)


def _format_literal(literal: Literal) -> str:
    if literal.kind == "boolean":
        return "true" if literal.value else "false"
    if literal.kind == "number":
        return repr(literal.value)
    if literal.kind in ("datetime", "uri"):
        return str(literal.value)
    return '"' + str(literal.value).replace("\\", "\\\\").replace('"', '\\"') + '"'
