"""The in-Python q evaluator used on the write path agrees with the SQL compiler, and
the index of q's that require ``attr==number`` never leaves out a subscription q admits.

Every q case of ``test_qsql.py`` is evaluated in Python over the same entities and must
give the same ids; generated queries (attribute, operator, value drawn from what the
entities hold) are run through both evaluators on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from kizuna.broker.qlang import parse_q
from kizuna.broker.subscriptions.matching import (
    Matcher,
    TenantMatchers,
    compile_matcher,
    compile_q_python,
    number_equality,
    numbers_of,
)
from kizuna.problems import Problem
from tests.broker.test_qsql import CASES, ENTITIES, _attrs, _load, _match, expand

_ATTRS = {f"urn:ngsi-ld:Thing:{key}": _attrs(spec) for key, spec in ENTITIES.items()}


def _python(q: str) -> set[str]:
    predicate = compile_q_python(parse_q(q), expand)
    return {entity_id.rsplit(":", 1)[1] for entity_id, attrs in _ATTRS.items() if predicate(attrs)}


@pytest.mark.parametrize(("q", "expected"), CASES, ids=[c[0] for c in CASES])
def test_python_evaluator_matches_the_sql_cases(q: str, expected: set[str]) -> None:
    assert _python(q) == expected


_NAMES = sorted({term for spec in ENTITIES.values() for term in spec})
_VALUES = st.one_of(
    st.integers(-5, 30).map(str),
    st.sampled_from(['"ok"', '"alert"', '"red"', "true", "false", '"水位計"', "2024-01-01"]),
    st.sampled_from(["urn:ngsi-ld:Building:001", "1..10", '"a","ok"']),
)
_TERMS = st.one_of(
    st.sampled_from(_NAMES),
    st.builds(
        lambda name, op, value: f"{name}{op}{value}",
        st.sampled_from(_NAMES),
        st.sampled_from(["==", "!=", ">", "<", ">=", "<="]),
        _VALUES,
    ),
    st.builds(
        lambda name, pattern: f'{name}~="{pattern}"',
        st.sampled_from(_NAMES),
        st.sampled_from(["^T", "o", "[0-9]", "Bus"]),
    ),
)
_QUERIES = st.builds(
    lambda terms, joins: "".join(t + j for t, j in zip(terms, joins, strict=False)) + terms[-1],
    st.lists(_TERMS, min_size=1, max_size=3),
    st.lists(st.sampled_from([";", "|"]), min_size=2, max_size=2),
)


@pytest.fixture
def loaded(engine: Engine) -> tuple[Engine, str]:
    return engine, _load(engine)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(q=_QUERIES)
def test_generated_queries_agree_with_sql(loaded: tuple[Engine, str], q: str) -> None:
    engine, tenant = loaded
    try:
        in_sql = _match(engine, tenant, q)
    except Problem:
        with pytest.raises(Problem):
            _python(q)
        return
    assert _python(q) == in_sql


# --- the index of q's that require attr==number ------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    q=st.one_of(_QUERIES, st.sampled_from(["count==9", "readings==40", "readings==40;count==5"]))
)
def test_a_q_holds_only_where_its_required_number_is_among_the_values(q: str) -> None:
    try:
        expr = parse_q(q)
        predicate = compile_q_python(expr, expand)
    except Problem:
        return
    required = number_equality(expr, expand)
    if required is None:
        return
    iri, number = required
    for attrs in _ATTRS.values():
        if predicate(attrs):
            assert number in numbers_of(attrs.get(iri, ()))


def _sub(pk: int, q: str | None, entity: dict[str, str]) -> Matcher:
    doc = {
        "id": f"urn:ngsi-ld:Subscription:{pk}",
        "entities": [entity],
        "notification": {"endpoint": {"uri": f"http://127.0.0.1:9/{pk}"}},
    }
    if q:
        doc["q"] = q
    return compile_matcher(pk, "t", doc, lambda name: name)


def test_the_index_gives_every_subscription_a_change_can_match_and_not_the_others() -> None:
    gauge = {"type": "RiverGauge"}
    subs = [_sub(j, f"level=={j}", gauge) for j in range(10)]
    subs += [
        _sub(20, 'level==3;name=="x"', gauge),
        _sub(21, "level==3|level==4", gauge),  # not one required number: by type
        _sub(22, None, {"type": "RiverGauge", "id": "urn:g:1"}),
    ]
    index = TenantMatchers.build(1, subs)
    cases = [
        ({"level": [{"type": "Property", "value": 3.0}], "name": [{"value": "x"}]}, {3, 20, 21}),
        ({"level": [{"type": "Property", "value": "3"}]}, {21}),
        ({"level": [{"type": "ListProperty", "valueList": [3, 7]}]}, {3, 7, 20, 21}),
        ({"level": [{"value": 1}, {"value": 2, "datasetId": "urn:ds:b"}]}, {1, 2, 21}),
        ({"level": [{"value": True}]}, {21}),
        ({}, {21}),
    ]
    for attrs, expected in cases:
        found = {m.pk for m in index.candidates("urn:g:2", ["RiverGauge"], attrs)}
        assert found == expected, attrs
        assert {
            m.pk for m in subs if m.selects("urn:g:2", ["RiverGauge"]) and m.filters(attrs)
        } <= found
    named = index.candidates("urn:g:1", ["RiverGauge"], {"level": [{"value": 4}]})
    assert {m.pk for m in named} == {4, 21, 22}
    assert index.candidates("urn:g:2", ["Other"], {"level": [{"value": 4}]}) == []
