"""The NGSI-LD query language (ETSI GS CIM 009 v1.8 §4.9): a parser into a small AST.

``;`` is AND, ``|`` is OR (AND binds tighter), parentheses group. A term is an attribute
path alone (existence) or ``path op value``; paths are ``attr``, ``attr.sub.sub2`` (sub-
attributes or instance metadata such as observedAt) and ``attr[key][key2]`` (inside the
value). Values are numbers, quoted strings, true/false, dateTimes, URIs, lists
``a,b,c`` and ranges ``low..high``. Names are kept as written; the compiler expands them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

from kizuna.problems import bad_request

OPERATORS = ("==", "!=", ">=", "<=", ">", "<", "~=", "!~=")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2}(\.\d+)?)?Z?$")
_NAME_STOP = set(';|()=!<>~[]"')


@dataclass(frozen=True)
class AttrPath:
    attr: str
    sub: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Literal:
    kind: str  # number | string | boolean | datetime | uri
    value: Any


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
    value: Literal | ValueList | Range


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


def parse_q(text: str) -> QExpr:
    parser = _Parser(text.strip())
    if not parser.text:
        raise bad_request("q is empty")
    expr = parser.disjunction()
    if parser.pos != len(parser.text):
        parser.fail("unexpected character")
    return expr


def parse_attr_path(text: str) -> AttrPath:
    parser = _Parser(text.strip())
    path = parser.path()
    if parser.pos != len(parser.text):
        parser.fail("unexpected character in attribute path")
    return path


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> None:
        raise bad_request(f"Invalid q at position {self.pos}: {why} in {self.text!r}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def disjunction(self) -> QExpr:
        items = [self.conjunction()]
        while self.peek() == "|":
            self.pos += 1
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self) -> QExpr:
        items = [self.term()]
        while self.peek() == ";":
            self.pos += 1
            items.append(self.term())
        return items[0] if len(items) == 1 else And(tuple(items))

    def term(self) -> QExpr:
        if self.peek() == "(":
            self.pos += 1
            inner = self.disjunction()
            if self.peek() != ")":
                self.fail("missing ')'")
            self.pos += 1
            return inner
        path = self.path()
        op = next(
            (
                o
                for o in sorted(OPERATORS, key=len, reverse=True)
                if self.text.startswith(o, self.pos)
            ),
            None,
        )
        if op is None:
            return Exists(path)
        self.pos += len(op)
        raw = self.raw_value()
        if op in ("~=", "!~="):
            return Comparison(
                path, op, Literal("string", _unquote(raw) if raw.startswith('"') else raw)
            )
        return Comparison(path, op, self.value(raw, op))

    def name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _NAME_STOP:
            if self.text[self.pos] == "." and "://" not in self.text[start : self.pos + 3]:
                break
            self.pos += 1
        name = self.text[start : self.pos].strip()
        if not name:
            self.fail("attribute name expected")
        return name

    def path(self) -> AttrPath:
        parts = [self.name()]
        while self.peek() == ".":
            self.pos += 1
            parts.append(self.name())
        keys: list[str] = []
        while self.peek() == "[":
            self.pos += 1
            end = self.text.find("]", self.pos)
            if end < 0:
                self.fail("missing ']'")
            inner = self.text[self.pos : end].strip()
            if not inner:
                self.fail("empty []")
            keys.extend(k.strip() for k in inner.split("."))
            self.pos = end + 1
        return AttrPath(parts[0], tuple(parts[1:]), tuple(keys))

    def raw_value(self) -> str:
        start = self.pos
        depth_quote = False
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == '"' and (self.pos == start or self.text[self.pos - 1] != "\\"):
                depth_quote = not depth_quote
            elif not depth_quote and char in ";|)":
                break
            self.pos += 1
        if depth_quote:
            self.fail("unterminated string")
        raw = self.text[start : self.pos].strip()
        if not raw:
            self.fail("value expected")
        return raw

    def value(self, raw: str, op: str) -> Literal | ValueList | Range:
        items = _split_outside_quotes(raw, ",")
        if len(items) > 1:
            if op not in ("==", "!="):
                self.fail("a list of values only goes with == or !=")
            return ValueList(tuple(self.literal(i) for i in items))
        bounds = _split_outside_quotes(raw, "..")
        if len(bounds) == 2 and not raw.startswith('"'):
            if op not in ("==", "!="):
                self.fail("a range only goes with == or !=")
            return Range(self.literal(bounds[0]), self.literal(bounds[1]))
        return self.literal(raw)

    def literal(self, raw: str) -> Literal:
        raw = raw.strip()
        if not raw:
            self.fail("empty value")
        if raw.startswith('"'):
            if len(raw) < 2 or not raw.endswith('"'):
                self.fail("unterminated string")
            return Literal("string", _unquote(raw))
        if raw in ("true", "false"):
            return Literal("boolean", raw == "true")
        if _NUMBER.match(raw):
            number = float(raw)
            return Literal(
                "number",
                int(number)
                if number.is_integer() and "." not in raw and "e" not in raw.lower()
                else number,
            )
        if _DATETIME.match(raw) or _TIME.match(raw):
            return Literal("datetime", raw)
        if ":" in raw:
            return Literal("uri", raw)
        # Unquoted words are accepted as strings, as most brokers do.
        if any(c in raw for c in '"()'):
            self.fail(f"invalid value {raw!r}")
        return Literal("string", raw)


def _unquote(raw: str) -> str:
    return raw[1:-1].replace('\\"', '"')


def _split_outside_quotes(raw: str, separator: str) -> list[str]:
    parts, current, quoted, i = [], [], False, 0
    while i < len(raw):
        if raw[i] == '"':
            quoted = not quoted
        if not quoted and raw.startswith(separator, i):
            parts.append("".join(current))
            current = []
            i += len(separator)
            continue
        current.append(raw[i])
        i += 1
    parts.append("".join(current))
    return parts
