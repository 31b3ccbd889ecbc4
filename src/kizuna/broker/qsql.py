"""Compile a q-language AST into a SQL condition over ``broker_entities.attrs``.

One compiler, with a thin per-dialect layer (:class:`_Json`) for JSON access: SQLite's
``json_extract`` / ``json_type`` and PostgreSQL's ``#>`` / ``jsonb_typeof``. Values are
always bound parameters. Comparisons are type-aware: a number only matches JSON numbers,
a string / dateTime / URI only JSON strings, a boolean only booleans; a mismatch is
simply no match. The compared value of an attribute is its default instance's
value / object / valueList / vocab / json (or the @value of a typed value object), or
any language's text of a LanguageProperty; an array matches ``==`` when an element does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Numeric,
    and_,
    case,
    cast,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB, array

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

_SOURCES: tuple[tuple[str, ...], ...] = (
    ("value", "@value"),
    ("value",),
    ("object",),
    ("valueList",),
    ("vocab",),
    ("json",),
)
_NUMBER_TYPES = {"sqlite": ("integer", "real"), "postgresql": ("number",)}
_STRING_TYPE = {"sqlite": "text", "postgresql": "string"}


def compile_q(
    expr: QExpr, attrs_col: Any, dialect_name: str, expand: Callable[[str], str]
) -> ColumnElement[bool]:
    return _Compiler(_Json(attrs_col, dialect_name), expand).compile(expr)


class _Json:
    """Dialect-specific access to a JSON path inside the attrs column."""

    def __init__(self, column: Any, dialect: str) -> None:
        self.column = column
        self.dialect = dialect

    def type_of(self, keys: Sequence[str | int]) -> Any:
        if self.dialect == "postgresql":
            return func.jsonb_typeof(self.column.op("#>")(_pg_path(keys)))
        return func.json_type(self.column, _sqlite_path(keys))

    def scalar(self, keys: Sequence[str | int]) -> Any:
        """The value as SQL text or number (only meaningful after a type check)."""
        if self.dialect == "postgresql":
            return self.column.op("#>>")(_pg_path(keys))
        return func.json_extract(self.column, _sqlite_path(keys))

    def exists(self, keys: Sequence[str | int]) -> ColumnElement[bool]:
        return self.type_of(keys).is_not(None)

    def array_contains(self, keys: Sequence[str | int], value: Any) -> ColumnElement[bool]:
        if self.dialect == "postgresql":
            return self.column.op("#>")(_pg_path(keys)).op("@>")(
                cast(orjson.dumps([value]).decode(), JSONB)
            )
        elements = func.json_each(self.column, _sqlite_path(keys)).table_valued("value").alias()
        return select(elements.c.value).where(elements.c.value == value).exists()

    def any_language(self, keys: Sequence[str | int], test: Callable[[Any], Any]) -> Any:
        if self.dialect == "postgresql":
            texts = (
                func.jsonb_each_text(self.column.op("#>")(_pg_path(keys)))
                .table_valued("key", "value")
                .alias()
            )
        else:
            texts = func.json_each(self.column, _sqlite_path(keys)).table_valued("value").alias()
        return select(texts.c.value).where(test(texts.c.value)).exists()


def _pg_path(keys: Sequence[str | int]) -> Any:
    return array([str(k) for k in keys])


def _sqlite_path(keys: Sequence[str | int]) -> str:
    out = "$"
    for key in keys:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += '."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return out


class _Compiler:
    def __init__(self, json: _Json, expand: Callable[[str], str]) -> None:
        self.json = json
        self.expand = expand

    def compile(self, expr: QExpr) -> ColumnElement[bool]:
        if isinstance(expr, And):
            return and_(*(self.compile(i) for i in expr.items))
        if isinstance(expr, Or):
            return or_(*(self.compile(i) for i in expr.items))
        if isinstance(expr, Exists):
            return self.json.exists(self._instance(expr.path) + self._tail(expr.path, None))
        return self._comparison(expr)

    def _instance(self, path: AttrPath) -> list[str | int]:
        return [self.expand(path.attr), 0]

    def _tail(self, path: AttrPath, source: tuple[str, ...] | None) -> list[str | int]:
        """Keys after the default instance: sub-attributes, metadata, value keys."""
        keys: list[str | int] = []
        for part in path.sub:
            if part in INSTANCE_META:
                keys.append(part)
                return keys  # metadata is the compared value itself
            keys.append(self.expand(part))
        if source is not None:
            keys.extend(source)
        keys.extend(path.keys)
        return keys

    def _targets(self, path: AttrPath) -> list[list[str | int]]:
        base = self._instance(path)
        if path.sub and path.sub[-1] in INSTANCE_META:
            return [base + self._tail(path, None)]
        sources = _SOURCES if not path.keys else (("value",),)
        return [base + self._tail(path, source) for source in sources]

    def _comparison(self, expr: Comparison) -> ColumnElement[bool]:
        value = expr.value
        if isinstance(value, ValueList):
            parts = [self._comparison(Comparison(expr.path, "==", item)) for item in value.items]
            return or_(*parts) if expr.op == "==" else not_(or_(*parts)) & self._present(expr.path)
        if isinstance(value, Range):
            inside = and_(
                self._comparison(Comparison(expr.path, ">=", value.low)),
                self._comparison(Comparison(expr.path, "<=", value.high)),
            )
            return inside if expr.op == "==" else not_(inside) & self._present(expr.path)
        conditions = [self._compare(keys, expr.op, value) for keys in self._targets(expr.path)]
        if expr.op in ("==", "~=") and not expr.path.sub and not expr.path.keys:
            conditions.append(self._language(expr.path, expr.op, value))
        return or_(*conditions)

    def _present(self, path: AttrPath) -> ColumnElement[bool]:
        return or_(*(self.json.exists(keys) for keys in self._targets(path)))

    def _compare(self, keys: list[str | int], op: str, value: Literal) -> ColumnElement[bool]:
        json, dialect = self.json, self.json.dialect
        kind = json.type_of(keys)
        if value.kind == "boolean":
            if dialect == "sqlite":
                is_value = kind == ("true" if value.value else "false")
                other = kind == ("false" if value.value else "true")
            else:
                text_value = json.scalar(keys)
                is_value = and_(
                    kind == "boolean", text_value == ("true" if value.value else "false")
                )
                other = and_(kind == "boolean", text_value != ("true" if value.value else "false"))
            if op == "==":
                return or_(is_value, self._in_array(keys, value.value))
            if op == "!=":
                return other
            return false()
        if value.kind == "number":
            typed = kind.in_(_NUMBER_TYPES[dialect])
            number = json.scalar(keys)
            if dialect == "postgresql":
                # CASE guarantees the cast only runs on JSON numbers.
                number = case((typed, cast(number, Numeric)))
            compared = _apply(op, number, value.value)
        else:
            typed = kind == _STRING_TYPE[dialect]
            text_value = json.scalar(keys)
            if op in ("~=", "!~="):
                matched = text_value.regexp_match(str(value.value))
                return and_(typed, matched if op == "~=" else not_(matched))
            compared = _apply(op, text_value, str(value.value))
        condition = and_(typed, compared)
        if op == "==":
            return or_(condition, self._in_array(keys, value.value))
        return condition

    def _in_array(self, keys: list[str | int], value: Any) -> ColumnElement[bool]:
        kind = self.json.type_of(keys)
        return and_(kind == "array", self.json.array_contains(keys, value))

    def _language(self, path: AttrPath, op: str, value: Any) -> ColumnElement[bool]:
        keys = self._instance(path) + ["languageMap"]
        if value.kind not in ("string", "uri", "datetime"):
            return false()
        text_value = str(value.value)
        if op == "~=":
            return self.json.any_language(keys, lambda v: v.regexp_match(text_value))
        return self.json.any_language(keys, lambda v: v == text_value)


def _apply(op: str, left: Any, right: Any) -> ColumnElement[bool]:
    return {
        "==": lambda: left == right,
        "!=": lambda: left != right,
        ">": lambda: left > right,
        ">=": lambda: left >= right,
        "<": lambda: left < right,
        "<=": lambda: left <= right,
    }.get(op, lambda: true())()
