"""Which subscriptions an entity change concerns, decided in Python on the write path.

:class:`Matcher` is one subscription compiled for matching: entity selectors (type,
id, idPattern), the notification triggers with watched attributes, q and geoQ.
:class:`TenantMatchers` indexes a tenant's matchers by entity id, by type, and, for a q
that requires ``attr==number``, by that number, so a change meets only the
subscriptions it may match (1,000 subscriptions ``level==j`` on one type cost one
lookup per change, not 1,000 q evaluations).
:func:`compile_q_python` evaluates the q-language with the same semantics as the SQL
compiler in ``qsql.py`` (any instance, arrays, keys, metadata, type-aware comparisons;
``tests/broker/test_subscription_q.py`` checks both agree), so a change is matched
without another query in the writing transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from kizuna.broker import geo
from kizuna.broker.ngsild import Entity, parse_datetime
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
    parse_q,
)
from kizuna.broker.store import INSTANCE_META
from kizuna.broker.typeexpr import (
    parse_type_expression,
    type_expression_matches,
    type_expression_names,
)
from kizuna.problems import bad_request

META = INSTANCE_META | {"deletedAt"}
Attrs = dict[str, list[dict[str, Any]]]
Predicate = Callable[[Attrs], bool]


def decoded_q(q: str) -> str:
    """q as written in a subscription; some clients percent-encode it as in a URL."""
    return unquote(q) if re.search(r"%[0-9A-Fa-f]{2}", q) else q


# --- q in Python -------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    keys: tuple[str, ...]
    how: str  # at | items | leaves
    strings_only: bool = False
    vocab: bool = False


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
_MISSING = object()


def compile_q_python(expr: QExpr, expand: Callable[[str], str]) -> Predicate:
    """A predicate over stored ``attrs`` equivalent to :func:`kizuna.broker.qsql.compile_q`."""
    if isinstance(expr, And):
        parts = [compile_q_python(i, expand) for i in expr.items]
        return lambda attrs: all(p(attrs) for p in parts)
    if isinstance(expr, Or):
        parts = [compile_q_python(i, expand) for i in expr.items]
        return lambda attrs: any(p(attrs) for p in parts)
    iri = expand(expr.path.attr)
    sources, present = _target(expr.path, expand)
    if isinstance(expr, Exists):
        if not expr.path.sub and not expr.path.keys:
            return lambda attrs: iri in attrs
        return lambda attrs: any(present(doc) for doc in attrs.get(iri, ()))
    negated = expr.op in ("!=", "!~=")
    op = {"!=": "==", "!~=": "~="}.get(expr.op, expr.op)
    test = _test(op, expr.value, expand)
    strings = op == "~=" or any(
        lit.kind not in ("number", "boolean") for lit in _literals(expr.value)
    )
    used = [s for s in sources if strings or not s.strings_only]

    def matches(doc: dict[str, Any]) -> bool:
        return any(_some(doc, s, test) for s in used)

    if negated:
        return lambda attrs: any(present(d) and not matches(d) for d in attrs.get(iri, ()))
    return lambda attrs: any(matches(d) for d in attrs.get(iri, ()))


def number_equality(expr: QExpr, expand: Callable[[str], str]) -> tuple[str, Any] | None:
    """An ``attr==number`` term the whole q requires (q itself or one of its conjuncts).

    Such a q can only hold for an entity with that number among the attribute's values
    (see :func:`numbers_of`), which is what lets :class:`TenantMatchers` index it.
    """
    if isinstance(expr, And):
        for item in expr.items:
            found = number_equality(item, expand)
            if found is not None:
                return found
        return None
    if (
        isinstance(expr, Comparison)
        and expr.op == "=="
        and not expr.path.sub
        and not expr.path.keys
        and isinstance(expr.value, Literal)
        and expr.value.kind == "number"
    ):
        return expand(expr.path.attr), expr.value.value
    return None


def numbers_of(instances: Iterable[dict[str, Any]]) -> set[Any]:
    """Every number an ``attr==number`` test can meet in these instances: the same
    sources and items as :func:`compile_q_python` reads for a number literal."""
    found: set[Any] = set()
    for doc in instances:
        for key in ("value", "valueList", "json"):
            value = doc.get(key, _MISSING)
            if value is _MISSING:
                continue
            for item in value if isinstance(value, list) else (value,):
                if _is_number(item):
                    found.add(item)
    return found


def _target(
    path: AttrPath, expand: Callable[[str], str]
) -> tuple[tuple[_Source, ...], Callable[[Any], bool]]:
    prefix: list[str] = []
    for i, part in enumerate(path.sub):
        if part in META:
            if i != len(path.sub) - 1 or path.keys:
                raise bad_request(f"Invalid q: {part} must end the attribute path")
            meta_keys = (*prefix, part)
            return (_Source(meta_keys, "at"),), _has(meta_keys)
        prefix.append(expand(part))
    base = tuple(prefix)
    if path.keys:
        sources = [
            _Source((*base, "value", *path.keys), "items"),
            _Source((*base, "json", *path.keys), "items"),
        ]
        if len(path.keys) == 1:
            sources.append(_Source((*base, "languageMap", *path.keys), "items"))
        frozen = tuple(sources)
        return frozen, lambda doc: any(_at(doc, s.keys) is not _MISSING for s in frozen)
    sources = tuple(
        _Source((*base, *s.keys), s.how, s.strings_only, s.vocab) for s in _VALUE_SOURCES
    )
    if not base:
        return sources, lambda _doc: True
    return sources, _has(base)


def _has(keys: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda doc: _at(doc, keys) is not _MISSING


def _at(doc: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(doc, dict) or key not in doc:
            return _MISSING
        doc = doc[key]
    return doc


def _some(doc: dict[str, Any], source: _Source, test: Callable[[Any, bool], bool]) -> bool:
    value = _at(doc, source.keys)
    if value is _MISSING:
        return False
    if source.how == "at":
        return test(value, source.vocab)
    if source.how == "leaves":
        return any(test(v, source.vocab) for v in _leaves(value))
    items = value if isinstance(value, list) else [value]
    return any(test(v, source.vocab) for v in items)


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _literals(value: Literal | ValueList | Range) -> tuple[Literal, ...]:
    if isinstance(value, ValueList):
        return value.items
    if isinstance(value, Range):
        return (value.low, value.high)
    return (value,)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_COMPARE = {
    "==": lambda a, b: a == b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _test(
    op: str, value: Literal | ValueList | Range, expand: Callable[[str], str]
) -> Callable[[Any, bool], bool]:
    if isinstance(value, ValueList):
        tests = [_literal_test("==", item, expand) for item in value.items]
        return lambda node, vocab: any(t(node, vocab) for t in tests)
    if isinstance(value, Range):
        low = _literal_test(">=", value.low, expand)
        high = _literal_test("<=", value.high, expand)
        return lambda node, vocab: low(node, vocab) and high(node, vocab)
    return _literal_test(op, value, expand)


def _literal_test(
    op: str, lit: Literal, expand: Callable[[str], str]
) -> Callable[[Any, bool], bool]:
    if op == "~=":
        pattern = _regex(str(lit.value))
        return lambda node, _v: isinstance(node, str) and pattern.search(node) is not None
    if lit.kind == "boolean":
        wanted = bool(lit.value)
        return lambda node, _v: isinstance(node, bool) and node is wanted
    compare = _COMPARE[op]
    if lit.kind == "number":
        number = lit.value
        return lambda node, _v: _is_number(node) and compare(node, number)
    text = str(lit.value)
    with_vocab = sorted({text, expand(text)}) if op == "==" else [text]

    def string_test(node: Any, vocab: bool) -> bool:
        if not isinstance(node, str):
            return False
        return any(compare(node, w) for w in (with_vocab if vocab else [text]))

    return string_test


# --- one subscription, compiled ---------------------------------------------------


@dataclass
class Matcher:
    pk: int
    id: str
    tenant: str
    types: frozenset[str] | None  # None: any type (watchedAttributes only)
    selectors: list[tuple[Any, str | None, re.Pattern[str] | None]]  # type tree, id, pattern
    watched: frozenset[str] | None
    triggers: frozenset[str]
    q: Predicate | None
    geo_query: geo.GeoQuery | None
    geo_attr: str | None
    expires_at: datetime | None
    active: bool
    periodic: bool
    endpoint: str
    show_changes: bool = False
    q_number: tuple[str, Any] | None = None  # (attribute IRI, number) q requires equal

    def live(self, now: datetime) -> bool:
        return (
            self.active and not self.periodic and (self.expires_at is None or self.expires_at > now)
        )

    def selects(self, entity_id: str, types: list[str]) -> bool:
        if not self.selectors:
            return True
        for type_, wanted_id, pattern in self.selectors:
            if type_ is not None and not type_expression_matches(type_, types):
                continue
            if wanted_id is not None and wanted_id != entity_id:
                continue
            if pattern is not None and not pattern.search(entity_id):
                continue
            return True
        return False

    def trigger_for(self, change: Diff) -> str | None:
        """The trigger reason this change fires for the subscription, if any."""
        if change.kind == "created":
            if "entityCreated" in self.triggers:
                return "entityCreated"
            if "attributeCreated" in self.triggers and self._touches(change.created):
                return "attributeCreated"
            return None
        if change.kind == "deleted":
            if "entityDeleted" in self.triggers:
                return "entityDeleted"
            if "attributeDeleted" in self.triggers and self._touches(change.deleted):
                return "attributeDeleted"
            return None
        for trigger, names in (
            ("attributeCreated", change.created),
            ("attributeUpdated", change.updated),
            ("attributeDeleted", change.deleted),
        ):
            if trigger in self.triggers and self._touches(names):
                return trigger
        if "entityUpdated" in self.triggers and self._touches(
            change.created | change.updated | change.deleted
        ):
            return "entityUpdated"
        return None

    def _touches(self, names: frozenset[str]) -> bool:
        if not names:
            return False
        return self.watched is None or not self.watched.isdisjoint(names)

    def filters(self, attrs: Attrs) -> bool:
        if self.q is not None and not self.q(attrs):
            return False
        if self.geo_query is not None:
            geometries = [
                i["value"]
                for i in attrs.get(self.geo_attr or "", ())
                if i.get("type") == "GeoProperty"
            ]
            if not geo.matches(self.geo_query, geometries):
                return False
        return True


@dataclass(frozen=True)
class Diff:
    kind: str  # created | updated | deleted
    created: frozenset[str]
    updated: frozenset[str]
    deleted: frozenset[str]


def diff(before: Entity | None, after: Entity | None) -> Diff:
    if before is None:
        return Diff("created", frozenset(after.attrs if after else ()), frozenset(), frozenset())
    if after is None:
        return Diff("deleted", frozenset(), frozenset(), frozenset(before.attrs))
    created, updated, deleted = set(), set(), set()
    for iri, instances in after.attrs.items():
        old = before.attrs.get(iri)
        if old is None:
            created.add(iri)
        elif old is not instances and old != instances:
            # A datasetId instance removed counts as a deletion of the attribute (instance).
            old_sets = {i.get("datasetId") for i in old}
            new_sets = {i.get("datasetId") for i in instances}
            if old_sets - new_sets and all(i in old for i in instances):
                deleted.add(iri)
            else:
                updated.add(iri)
    for iri in before.attrs:
        if iri not in after.attrs:
            deleted.add(iri)
    return Diff("updated", frozenset(created), frozenset(updated), frozenset(deleted))


def compile_matcher(
    pk: int,
    tenant: str,
    doc: dict[str, Any],
    expand: Callable[[str], str],
) -> Matcher:
    selectors = []
    types: set[str] | None = set()
    for selector in doc.get("entities") or []:
        pattern = selector.get("idPattern")
        tree = selector.get("type")
        if tree is not None and selector.get("typeExpression"):
            tree = parse_type_expression(tree, expand)
        selectors.append((tree, selector.get("id"), re.compile(pattern) if pattern else None))
        if types is not None:
            if tree is None:
                types = None
            else:
                types |= type_expression_names(tree)
    if not selectors:
        types = None
    geo_query = None
    geo_attr = None
    if doc.get("geoQ"):
        g = doc["geoQ"]
        geo_query = geo.parse_geo_query(g["georel"], g["geometry"], g["coordinates"], None)
        geo_attr = g.get("geoproperty") or expand("location")
    expires = doc.get("expiresAt")
    q = parse_q(decoded_q(doc["q"])) if doc.get("q") else None
    return Matcher(
        pk=pk,
        id=doc["id"],
        tenant=tenant,
        types=frozenset(types) if types is not None else None,
        selectors=selectors,
        watched=frozenset(doc["watchedAttributes"]) if doc.get("watchedAttributes") else None,
        triggers=frozenset(doc.get("notificationTrigger") or ()),
        q=compile_q_python(q, expand) if q is not None else None,
        geo_query=geo_query,
        geo_attr=geo_attr,
        expires_at=parse_datetime(expires, "expiresAt") if expires else None,
        active=doc.get("isActive", True),
        periodic=doc.get("timeInterval") is not None,
        endpoint=doc["notification"]["endpoint"]["uri"],
        show_changes=bool(doc["notification"].get("showChanges")),
        q_number=number_equality(q, expand) if q is not None else None,
    )


@dataclass
class TenantMatchers:
    """A tenant's live subscriptions, indexed by entity id (selectors that all name one),
    otherwise by entity type, and within a type by the number a q requires an attribute
    to equal, so a change meets only the subscriptions it may match."""

    version: int
    by_id: dict[str, list[Matcher]]
    by_type: dict[str, list[Matcher]]
    any_type: list[Matcher]
    # type -> attribute IRI -> number -> matchers whose q requires attribute == number
    by_number: dict[str, dict[str, dict[Any, list[Matcher]]]]

    @classmethod
    def build(cls, version: int, matchers: list[Matcher]) -> TenantMatchers:
        by_id: dict[str, list[Matcher]] = {}
        by_type: dict[str, list[Matcher]] = {}
        any_type: list[Matcher] = []
        by_number: dict[str, dict[str, dict[Any, list[Matcher]]]] = {}
        for m in matchers:
            ids = {wanted for _, wanted, _ in m.selectors}
            if m.selectors and None not in ids:
                for entity_id in ids:
                    by_id.setdefault(entity_id, []).append(m)
            elif m.types is None:
                any_type.append(m)
            elif m.q_number is not None:
                iri, number = m.q_number
                for t in m.types:
                    attrs = by_number.setdefault(t, {})
                    attrs.setdefault(iri, {}).setdefault(number, []).append(m)
            else:
                for t in m.types:
                    by_type.setdefault(t, []).append(m)
        return cls(version, by_id, by_type, any_type, by_number)

    @property
    def empty(self) -> bool:
        return not (self.by_id or self.by_type or self.any_type or self.by_number)

    def candidates(self, entity_id: str, types: list[str], attrs: Attrs) -> list[Matcher]:
        """The matchers that may match an entity (``attrs``: the state q is tested on)."""
        named = self.by_id.get(entity_id)
        valued = self._by_number(types, attrs) if self.by_number else []
        if not named and not valued and len(types) == 1 and not self.any_type:
            return self.by_type.get(types[0], [])
        seen: dict[int, Matcher] = {m.pk: m for m in named or ()}
        for m in valued:
            seen[m.pk] = m
        for t in types:
            for m in self.by_type.get(t, ()):
                seen[m.pk] = m
        for m in self.any_type:
            seen[m.pk] = m
        return list(seen.values())

    def _by_number(self, types: list[str], attrs: Attrs) -> list[Matcher]:
        found: list[Matcher] = []
        for t in types:
            for iri, table in self.by_number.get(t, {}).items():
                for number in numbers_of(attrs.get(iri, ())):
                    found += table.get(number, ())
        return found
