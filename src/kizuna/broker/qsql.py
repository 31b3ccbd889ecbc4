"""Compile a q-language AST into a SQL condition over ``broker_entities.attrs``.

One compiler with a thin per-dialect layer (:class:`_SQLite`: ``json_each`` /
``json_tree`` / ``json_extract``; :class:`_Postgres`: ``jsonb_path_query`` / ``#>`` /
``jsonb_typeof``). User values are always bound parameters; only constant JSON paths of
our own are written into the SQL text.

Semantics:

* A term matches when ANY instance of the attribute (any datasetId) matches.
* The compared value of an instance (or of its sub-attribute) is its ``value`` (or the
  ``@value`` of a typed value such as ``{"@type": "DateTime", "@value": ...}``),
  ``object``, each ``objectList`` object, each ``languageMap`` text, ``valueList``,
  ``vocab`` (also compared with the expanded query value) or ``json``. With
  ``attr[k1][k2]`` it is ``value.k1.k2`` (or ``json.k1.k2``, or ``languageMap.k1``);
  with ``attr.observedAt`` (any instance metadata) the metadata itself.
* When that value is an array, a term matches when an element does.
* Comparisons are type-aware: a number only meets JSON numbers (numerically), a string,
  dateTime or URI only JSON strings (by code point, so ISO 8601 texts in one format
  order in time), a boolean only booleans; a mismatch is no match, never an error.
* ``!=`` and ``!~=`` are the complement of ``==`` / ``~=`` over instances that have the
  compared value: ``a!=5`` matches an instance whose value is present and not 5 (nor an
  array holding 5). A value of another type is unequal, as §4.9 says; a missing
  attribute never matches. A list after ``!=`` means NOT IN, a range NOT BETWEEN.
* Ranges are inclusive and met by one element (``a==1..5`` on ``[0, 9]`` is no match).
* Patterns are Python regular expressions (SQLite's ``regexp`` function); on PostgreSQL
  they are translated where the dialects differ (``\\b`` is ``\\y`` there) and refused
  when PostgreSQL has no equivalent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Text,
    and_,
    column,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from kizuna.broker.qlang import (
    And,
    AttrPath,
    Comparison,
    Exists,
    Literal,
    Or,
    QExpr,
    Range,
    ValueList,
)
from kizuna.broker.store import INSTANCE_META
from kizuna.problems import bad_request

META = INSTANCE_META | {"deletedAt"}

Test = Callable[["_Node", bool], ColumnElement[bool]]


@dataclass(frozen=True)
class _Node:
    """One JSON value inside SQL: the value itself and the name of its JSON type."""

    json: Any  # PostgreSQL: a jsonb expression; SQLite: the SQL value of the JSON value
    type: Any


@dataclass(frozen=True)
class _Source:
    """Where an instance keeps a value to compare."""

    keys: tuple[str, ...]
    how: str  # at: the value there | items: it, or each element if an array | leaves
    strings_only: bool = False  # only ever holds strings (skipped for numbers, booleans)
    vocab: bool = False  # holds expanded IRIs


_VALUE_SOURCES = (
    _Source(("value",), "items"),
    _Source(("value", "@value"), "at", strings_only=True),
    _Source(("object",), "items", strings_only=True),
    _Source(("objectList",), "leaves", strings_only=True),
    _Source(("languageMap",), "leaves", strings_only=True),
    _Source(("valueList",), "items"),
    _Source(("vocab",), "items", strings_only=True, vocab=True),
    _Source(("json",), "items"),
)


def compile_q(
    expr: QExpr, attrs_col: Any, dialect_name: str, expand: Callable[[str], str]
) -> ColumnElement[bool]:
    dialects = {"sqlite": _SQLite, "postgresql": _Postgres}
    if dialect_name not in dialects:
        raise ValueError(f"q is not supported on {dialect_name!r}")
    return _Compiler(attrs_col, dialects[dialect_name](), expand).compile(expr)


# --- the compiler ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    sources: tuple[_Source, ...]
    present: tuple[str, ...] | None  # keys whose presence means "has a value"; None: always
    keyed: bool  # keys inside the value: any source counts as presence


class _Compiler:
    def __init__(self, attrs: Any, dialect: _Dialect, expand: Callable[[str], str]) -> None:
        self.attrs = attrs
        self.d = dialect
        self.expand = expand

    def compile(self, expr: QExpr) -> ColumnElement[bool]:
        if isinstance(expr, And):
            return and_(*(self.compile(i) for i in expr.items))
        if isinstance(expr, Or):
            return or_(*(self.compile(i) for i in expr.items))
        iri = self.expand(expr.path.attr)
        has = self.d.has_attr(self.attrs, iri)
        target = self._target(expr.path)
        if isinstance(expr, Exists):
            if not expr.path.sub and not expr.path.keys:
                return has
            return and_(has, self._any_instance(iri, lambda doc: self._present(doc, target)))
        return and_(has, self._any_instance(iri, self._instance_test(expr, target)))

    def _target(self, path: AttrPath) -> _Target:
        prefix: list[str] = []
        for i, part in enumerate(path.sub):
            if part in META:
                if i != len(path.sub) - 1 or path.keys:
                    raise bad_request(f"Invalid q: {part} must end the attribute path")
                keys = (*prefix, part)
                return _Target((_Source(keys, "at"),), keys, keyed=False)
            prefix.append(self.expand(part))
        base = tuple(prefix)
        if path.keys:
            sources = [_Source((*base, "value", *path.keys), "items")]
            sources.append(_Source((*base, "json", *path.keys), "items"))
            if len(path.keys) == 1:
                sources.append(_Source((*base, "languageMap", *path.keys), "items"))
            return _Target(tuple(sources), None, keyed=True)
        sources = tuple(
            _Source((*base, *s.keys), s.how, s.strings_only, s.vocab) for s in _VALUE_SOURCES
        )
        return _Target(sources, base or None, keyed=False)

    def _present(self, doc: Any, target: _Target) -> ColumnElement[bool]:
        if target.keyed:
            return or_(*(self.d.present(doc, s.keys) for s in target.sources))
        return true() if target.present is None else self.d.present(doc, target.present)

    def _instance_test(self, expr: Comparison, target: _Target) -> Callable[[Any], Any]:
        negated = expr.op in ("!=", "!~=")
        op = {"!=": "==", "!~=": "~="}.get(expr.op, expr.op)
        test = self._test(op, expr.value)
        strings = op == "~=" or any(
            lit.kind not in ("number", "boolean") for lit in _literals(expr.value)
        )
        sources = [s for s in target.sources if strings or not s.strings_only]

        def matches(doc: Any) -> ColumnElement[bool]:
            return or_(false(), *(self._some(doc, s, test) for s in sources))

        if negated:
            return lambda doc: and_(self._present(doc, target), not_(matches(doc)))
        return matches

    def _any_instance(self, iri: str, test: Callable[[Any], Any]) -> ColumnElement[bool]:
        table, node, where = self.d.each(self.attrs, (iri,), leaves=False)
        return select(_ONE).select_from(table).where(where, test(node.json)).exists()

    def _some(self, doc: Any, source: _Source, test: Test) -> ColumnElement[bool]:
        if source.how == "at":
            # The presence test keeps the result TRUE or FALSE, never NULL, for NOT.
            node = self.d.at(doc, source.keys)
            return and_(self.d.present(doc, source.keys), test(node, source.vocab))
        table, node, where = self.d.each(doc, source.keys, leaves=source.how == "leaves")
        return select(_ONE).select_from(table).where(where, test(node, source.vocab)).exists()

    # --- tests on one JSON value ---------------------------------------------------------

    def _test(self, op: str, value: Literal | ValueList | Range) -> Test:
        if isinstance(value, ValueList):
            tests = [self._literal_test("==", item) for item in value.items]
            return lambda node, vocab: or_(*(t(node, vocab) for t in tests))
        if isinstance(value, Range):
            low, high = self._literal_test(">=", value.low), self._literal_test("<=", value.high)
            return lambda node, vocab: and_(low(node, vocab), high(node, vocab))
        return self._literal_test(op, value)

    def _literal_test(self, op: str, lit: Literal) -> Test:
        d = self.d
        if op == "~=":
            pattern = d.pattern(str(lit.value))
            return lambda node, _v: and_(d.is_string(node), d.text(node).regexp_match(pattern))
        if lit.kind == "boolean":
            return lambda node, _vocab: d.is_bool(node, bool(lit.value))
        if lit.kind == "number":
            return lambda node, _vocab: and_(d.is_number(node), d.number_cmp(node, op, lit.value))
        text = str(lit.value)

        def string_test(node: _Node, vocab: bool) -> ColumnElement[bool]:
            wanted = sorted({text, self.expand(text)}) if vocab and op == "==" else [text]
            compared = d.ordered(d.text(node))
            return and_(d.is_string(node), or_(*(_compare(op, compared, w) for w in wanted)))

        return string_test


def _literals(value: Literal | ValueList | Range) -> tuple[Literal, ...]:
    if isinstance(value, ValueList):
        return value.items
    if isinstance(value, Range):
        return (value.low, value.high)
    return (value,)


def _compare(op: str, left: Any, right: Any) -> ColumnElement[bool]:
    if op == "==":
        return left == right
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    raise AssertionError(op)


# --- the dialects --------------------------------------------------------------------

_ONE = literal_column("1")
_SQL_OPS = {"==": "=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


class _Dialect:
    def has_attr(self, attrs: Any, iri: str) -> ColumnElement[bool]: ...
    def present(self, doc: Any, keys: Sequence[str]) -> ColumnElement[bool]: ...
    def at(self, doc: Any, keys: Sequence[str]) -> _Node: ...
    def each(self, doc: Any, keys: Sequence[str], leaves: bool) -> tuple[Any, _Node, Any]:
        """A FROM item yielding the value at ``keys`` or, if an array, each element
        (``leaves``: every scalar inside), with the condition that goes with it."""
        ...

    def is_string(self, node: _Node) -> ColumnElement[bool]: ...
    def is_number(self, node: _Node) -> ColumnElement[bool]: ...
    def is_bool(self, node: _Node, value: bool) -> ColumnElement[bool]: ...
    def text(self, node: _Node) -> Any: ...
    def number_cmp(self, node: _Node, op: str, value: float) -> ColumnElement[bool]: ...
    def pattern(self, pattern: str) -> str:
        return pattern

    def ordered(self, text: Any) -> Any:
        return text


class _SQLite(_Dialect):
    def has_attr(self, attrs: Any, iri: str) -> ColumnElement[bool]:
        return func.json_type(attrs, _sqlite_path((iri,))).is_not(None)

    def present(self, doc: Any, keys: Sequence[str]) -> ColumnElement[bool]:
        return func.json_type(doc, _sqlite_path(keys)).is_not(None)

    def at(self, doc: Any, keys: Sequence[str]) -> _Node:
        path = _sqlite_path(keys)
        return _Node(func.json_extract(doc, path), func.json_type(doc, path))

    def each(self, doc: Any, keys: Sequence[str], leaves: bool) -> tuple[Any, _Node, Any]:
        fn = func.json_tree if leaves else func.json_each
        table = fn(doc, _sqlite_path(keys)).table_valued("key", "value", "type")
        node = _Node(table.c.value, table.c.type)
        if leaves:
            return table, node, table.c.type.not_in(("object", "array"))
        # json_each walks an object's members too: not elements of an array.
        return table, node, func.typeof(table.c.key) != "text"

    def is_string(self, node: _Node) -> ColumnElement[bool]:
        return node.type == "text"

    def is_number(self, node: _Node) -> ColumnElement[bool]:
        return node.type.in_(("integer", "real"))

    def is_bool(self, node: _Node, value: bool) -> ColumnElement[bool]:
        return node.type == ("true" if value else "false")

    def text(self, node: _Node) -> Any:
        return node.json

    def number_cmp(self, node: _Node, op: str, value: float) -> ColumnElement[bool]:
        return _compare(op, node.json, value)


class _Postgres(_Dialect):
    def has_attr(self, attrs: Any, iri: str) -> ColumnElement[bool]:
        return attrs.op("?")(iri)

    def present(self, doc: Any, keys: Sequence[str]) -> ColumnElement[bool]:
        return _pg_at(doc, keys).is_not(None)

    def at(self, doc: Any, keys: Sequence[str]) -> _Node:
        value = _pg_at(doc, keys)
        return _Node(value, func.jsonb_typeof(value))

    def each(self, doc: Any, keys: Sequence[str], leaves: bool) -> tuple[Any, _Node, Any]:
        # Lax $[*] yields an array's elements, or the value itself; never an error.
        path = literal_column("'strict $.**'::jsonpath" if leaves else "'$[*]'::jsonpath")
        table = (
            func.jsonb_path_query(_pg_at(doc, keys), path)
            .table_valued(column("value", JSONB))
            .render_derived()
        )
        return table, _Node(table.c.value, func.jsonb_typeof(table.c.value)), true()

    def is_string(self, node: _Node) -> ColumnElement[bool]:
        return node.type == "string"

    def is_number(self, node: _Node) -> ColumnElement[bool]:
        return node.type == "number"

    def is_bool(self, node: _Node, value: bool) -> ColumnElement[bool]:
        return node.json.op("=")(literal_column("'true'::jsonb" if value else "'false'::jsonb"))

    def text(self, node: _Node) -> Any:
        return node.json.op("#>>", return_type=Text)(literal_column("'{}'::text[]"))

    def number_cmp(self, node: _Node, op: str, value: float) -> ColumnElement[bool]:
        # jsonb compares numbers numerically (1 = 1.0); the type test is done beside.
        return node.json.op(_SQL_OPS[op])(literal(value, JSONB))

    def pattern(self, pattern: str) -> str:
        return _pg_regex(pattern)

    def ordered(self, text: Any) -> Any:
        # By code point, as on SQLite, whatever the database's collation.
        return text.collate("C")


def _pg_at(doc: Any, keys: Sequence[str]) -> Any:
    return doc.op("#>")(literal(list(keys), ARRAY(Text)))


def _sqlite_path(keys: Sequence[str]) -> str:
    for key in keys:
        if '"' in key:
            raise bad_request(f"Invalid q: '\"' cannot be part of a name ({key!r})")
    return "$" + "".join(f'."{key}"' for key in keys)


def _pg_regex(pattern: str) -> str:
    """A Python pattern in PostgreSQL's ARE dialect, or 400 where there is no equivalent."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if not in_class and nxt in "bB":
                out.append("\\y" if nxt == "b" else "\\Y")
            else:
                out.append(char + nxt)
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":  # a leading ']' (after an optional '^') is a member
            j = i + 1 + pattern.startswith("^", i + 1)
            j += pattern.startswith("]", j)
            out.append(pattern[i:j])
            i, in_class = j, True
            continue
        elif char == "(" and pattern.startswith("?", i + 1):
            if pattern.startswith("?P<", i + 1):
                out.append("(")
                i = pattern.index(">", i) + 1
                continue
            rest = pattern[i + 2 :]
            flags = len(rest) - len(rest.lstrip("imsx"))
            leading_flags = i == 0 and flags and rest[flags : flags + 1] == ")"
            if not (leading_flags or rest[:1] in (":", "=", "!") or rest[:2] in ("<=", "<!")):
                raise bad_request(
                    f"Invalid q: the pattern {pattern!r} uses '(?{rest[:2]}', "
                    "which this broker cannot evaluate on PostgreSQL"
                )
        elif char in "*+?}" and pattern.startswith("+", i + 1):
            raise bad_request(f"Invalid q: possessive quantifiers are not supported ({pattern!r})")
        out.append(char)
        i += 1
    return "".join(out)
