"""Unit tests of the q-language parser (no database)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kizuna.broker.qlang import (
    MAX_DEPTH,
    MAX_TERMS,
    And,
    AttrPath,
    Comparison,
    Exists,
    Literal,
    Or,
    Range,
    ValueList,
    parse_q,
)
from kizuna.problems import Problem


def test_precedence_and_grouping():
    assert parse_q("a==1;b==2|c==3") == Or(
        (
            And(
                (
                    Comparison(AttrPath("a"), "==", Literal("number", 1)),
                    Comparison(AttrPath("b"), "==", Literal("number", 2)),
                )
            ),
            Comparison(AttrPath("c"), "==", Literal("number", 3)),
        )
    )
    grouped = parse_q("a==1;(b==2|c==3)")
    assert isinstance(grouped, And) and isinstance(grouped.items[1], Or)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'name=="Eiffel Tower"',
            Comparison(AttrPath("name"), "==", Literal("string", "Eiffel Tower")),
        ),
        ("temperature>=-3.5", Comparison(AttrPath("temperature"), ">=", Literal("number", -3.5))),
        ("almostFull==false", Comparison(AttrPath("almostFull"), "==", Literal("boolean", False))),
        (
            "level==1..5",
            Comparison(AttrPath("level"), "==", Range(Literal("number", 1), Literal("number", 5))),
        ),
        (
            'kind=="a","b"',
            Comparison(
                AttrPath("kind"), "==", ValueList((Literal("string", "a"), Literal("string", "b")))
            ),
        ),
        (
            "locatedAt==urn:ngsi-ld:City:Paris",
            Comparison(AttrPath("locatedAt"), "==", Literal("uri", "urn:ngsi-ld:City:Paris")),
        ),
        (
            "speed.observedAt>2018-12-04T12:00:00Z",
            Comparison(
                AttrPath("speed", ("observedAt",)), ">", Literal("datetime", "2018-12-04T12:00:00Z")
            ),
        ),
        (
            'address[city]=="高砂市"',
            Comparison(AttrPath("address", (), ("city",)), "==", Literal("string", "高砂市")),
        ),
        ("name~=Eiffel.*", Comparison(AttrPath("name"), "~=", Literal("string", "Eiffel.*"))),
        ("brandName", Exists(AttrPath("brandName"))),
        ('name=="a;b|c(d)"', Comparison(AttrPath("name"), "==", Literal("string", "a;b|c(d)"))),
    ],
)
def test_terms(text, expected):
    assert parse_q(text) == expected


@pytest.mark.parametrize(
    "text", ["", "(a==1", "a==1)", "a==", '"x"==1', "a==1;;b==2", 'a=="open', "a[k==1"]
)
def test_malformed_queries_are_bad_request(text):
    with pytest.raises(Problem) as caught:
        parse_q(text)
    assert caught.value.status == 400


@given(st.text(max_size=40))
def test_any_text_parses_or_is_refused_cleanly(text):
    try:
        parse_q(text)
    except Problem as problem:
        assert problem.status == 400


def _refused(text: str) -> str:
    with pytest.raises(Problem) as caught:
        parse_q(text)
    assert caught.value.status == 400
    return caught.value.detail


def test_expressions_are_bounded_in_depth_terms_and_list_length():
    deepest = "(" * MAX_DEPTH + "a==1" + ")" * MAX_DEPTH
    assert parse_q(deepest) == parse_q("a==1")
    assert "deeper" in _refused("(" + deepest + ")")
    most = "|".join(f"a=={n}" for n in range(MAX_TERMS))
    assert len(parse_q(most).items) == MAX_TERMS
    assert "conditions" in _refused(most + ";b")
    longest = "a==" + ",".join(str(n) for n in range(MAX_TERMS))
    assert len(parse_q(longest).value.items) == MAX_TERMS
    assert "values" in _refused(longest + ",0")
