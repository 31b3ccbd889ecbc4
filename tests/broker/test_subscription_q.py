"""The in-Python q evaluator used on the write path agrees with the SQL compiler.

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
from kizuna.broker.subscriptions.matching import compile_q_python
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
