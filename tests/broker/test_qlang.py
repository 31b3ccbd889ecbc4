"""The q-language parser: examples, errors, and properties (round trip, garbage in)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kizuna.broker.models import entities
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
    format_attr_path,
    format_q,
    parse_attr_path,
    parse_q,
)
from kizuna.broker.qsql import compile_q
from kizuna.problems import Problem


def cmp(attr: str, op: str, value, sub=(), keys=()) -> Comparison:  # noqa: ANN001
    return Comparison(AttrPath(attr, tuple(sub), tuple(keys)), op, value)


def num(n: float) -> Literal:
    return Literal("number", n)


def s(text: str) -> Literal:
    return Literal("string", text)


EXAMPLES: list[tuple[str, QExpr]] = [
    ("temperature", Exists(AttrPath("temperature"))),
    ("temperature>20", cmp("temperature", ">", num(20))),
    ("temperature>=20.5", cmp("temperature", ">=", num(20.5))),
    ("temperature<-1.5e2", cmp("temperature", "<", num(-150.0))),
    ("temperature<=1E3", cmp("temperature", "<=", num(1000.0))),
    ("n!=0", cmp("n", "!=", num(0))),
    ('name=="a;b|c(d)"', cmp("name", "==", s("a;b|c(d)"))),
    ('name=="say \\"hi\\" \\\\ \\d"', cmp("name", "==", s('say "hi" \\ \\d'))),
    ("name==plain", cmp("name", "==", s("plain"))),
    ("flag==true", cmp("flag", "==", Literal("boolean", True))),
    ("flag!=false", cmp("flag", "!=", Literal("boolean", False))),
    ("d>2018-12-04T12:00:00Z", cmp("d", ">", Literal("datetime", "2018-12-04T12:00:00Z"))),
    (
        "d>2018-12-04T12:00:00.25+09:00",
        cmp("d", ">", Literal("datetime", "2018-12-04T12:00:00.25+09:00")),
    ),
    ("d<2018-12-04", cmp("d", "<", Literal("datetime", "2018-12-04"))),
    ("t>=12:00:00Z", cmp("t", ">=", Literal("datetime", "12:00:00Z"))),
    (
        "refBuilding==urn:ngsi-ld:Building:001",
        cmp("refBuilding", "==", Literal("uri", "urn:ngsi-ld:Building:001")),
    ),
    (
        "link==https://example.org/a/b?c=d",
        cmp("link", "==", Literal("uri", "https://example.org/a/b?c=d")),
    ),
    ('c=="a","b",3', cmp("c", "==", ValueList((s("a"), s("b"), num(3))))),
    ('c != "a" , "b"', cmp("c", "!=", ValueList((s("a"), s("b"))))),
    ("r==1..5", cmp("r", "==", Range(num(1), num(5)))),
    ("r==-1.5..2e1", cmp("r", "==", Range(num(-1.5), num(20.0)))),
    (
        "d==2018-01-01..2018-12-31",
        cmp("d", "==", Range(Literal("datetime", "2018-01-01"), Literal("datetime", "2018-12-31"))),
    ),
    ('s=="a".."b"', cmp("s", "==", Range(s("a"), s("b")))),
    ("name~=(?i)ab(c|d).*", cmp("name", "~=", s("(?i)ab(c|d).*"))),
    ('name!~="^x\\d+;"', cmp("name", "!~=", s("^x\\d+;"))),
    ("name~=a[)(]b;x", And((cmp("name", "~=", s("a[)(]b")), Exists(AttrPath("x"))))),
    ("(name~=a|b)", Or((cmp("name", "~=", s("a")), Exists(AttrPath("b"))))),
    (
        "temperature.observedAt>=2020-01-01T00:00:00Z",
        cmp("temperature", ">=", Literal("datetime", "2020-01-01T00:00:00Z"), sub=("observedAt",)),
    ),
    (
        "temperature.reliability.unitCode",
        Exists(AttrPath("temperature", ("reliability", "unitCode"))),
    ),
    ('address[street]=="x"', cmp("address", "==", s("x"), keys=("street",))),
    ("address[postal.code]", Exists(AttrPath("address", (), ("postal", "code")))),
    ("address[a][b]==1", cmp("address", "==", num(1), keys=("a", "b"))),
    ("address.sub[a]==1", cmp("address", "==", num(1), sub=("sub",), keys=("a",))),
    ("ex:temp>1", cmp("ex:temp", ">", num(1))),
    ("ex:temp.observedAt", Exists(AttrPath("ex:temp", ("observedAt",)))),
    ("https://example.org/ns/temp==1", cmp("https://example.org/ns/temp", "==", num(1))),
    (
        "https://example.org/v1.2/temp.unitCode",
        Exists(AttrPath("https://example.org/v1.2/temp", ("unitCode",))),
    ),
    ("http://ex.org/ns#temp.sub>1", cmp("http://ex.org/ns#temp", ">", num(1), sub=("sub",))),
    ("a;b|c", Or((And((Exists(AttrPath("a")), Exists(AttrPath("b")))), Exists(AttrPath("c"))))),
    ("a|b;c", Or((Exists(AttrPath("a")), And((Exists(AttrPath("b")), Exists(AttrPath("c"))))))),
    ("(a|b);c", And((Or((Exists(AttrPath("a")), Exists(AttrPath("b")))), Exists(AttrPath("c"))))),
    ("a;(b;c)", And((Exists(AttrPath("a")), And((Exists(AttrPath("b")), Exists(AttrPath("c"))))))),
    ("((a))", Exists(AttrPath("a"))),
    ("  a == 1 ;\tb  ", And((cmp("a", "==", num(1)), Exists(AttrPath("b"))))),
    ("big==99999999999999999999", cmp("big", "==", num(1e20))),
]


@pytest.mark.parametrize(("text", "expected"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_parse_examples(text: str, expected: QExpr) -> None:
    parsed = parse_q(text)
    assert parsed == expected
    assert parse_q(format_q(parsed)) == parsed


BAD = [
    "",
    "   ",
    "(",
    "(a",
    "a)",
    "a;",
    ";a",
    "a||b",
    "a b",
    "a==",
    "a=1",
    "a===1",
    'a=="x',
    "a>true",
    "a>1,2",
    "a<1..2",
    "a==1..true",
    'a==1.."x"',
    "a==1,",
    "a~=",
    "a~=(",
    'a~="["',
    "a[",
    "a[]",
    "a[b",
    "a[b..c]",
    "a..b",
    ".a",
    "a.",
    "a==1e999",
    "a==x==y",
    "a\x00",
    "==1",
]


@pytest.mark.parametrize("text", BAD)
def test_bad_queries_are_400_naming_the_position(text: str) -> None:
    with pytest.raises(Problem) as caught:
        parse_q(text)
    assert caught.value.status == 400
    assert caught.value.body()["type"].endswith("BadRequestData")
    assert text.strip() == "" or "position" in caught.value.detail


def test_parse_attr_path() -> None:
    assert parse_attr_path(" temperature ") == AttrPath("temperature")
    assert parse_attr_path("a.b.observedAt") == AttrPath("a", ("b", "observedAt"))
    assert parse_attr_path("a[b][c.d]") == AttrPath("a", (), ("b", "c", "d"))
    assert parse_attr_path("ex:a.b") == AttrPath("ex:a", ("b",))
    for bad in ("", "a==1", "a;b", "a[", "a b"):
        with pytest.raises(Problem):
            parse_attr_path(bad)


# --- properties ----------------------------------------------------------------------

_word = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,8}", fullmatch=True)
_name = st.one_of(
    _word,
    st.builds(lambda p, w: f"{p}:{w}", st.sampled_from(["ex", "schema"]), _word),
    st.builds(lambda w: f"https://example.org/v1.2/{w}", _word),
)
_paths = st.builds(
    AttrPath,
    _name,
    st.lists(st.one_of(_word, st.sampled_from(["observedAt", "unitCode"])), max_size=2).map(tuple),
    st.lists(_word, max_size=2).map(tuple),
)
_numbers = st.one_of(
    st.integers(-(2**63) + 1, 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
).map(lambda n: Literal("number", n))
_strings = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12
)
_datetimes = st.datetimes().map(
    lambda d: Literal("datetime", d.isoformat(timespec="seconds") + "Z")
)
_dates = st.dates().map(lambda d: Literal("datetime", d.isoformat()))
_literals = st.one_of(
    _numbers,
    _strings.map(lambda t: Literal("string", t)),
    st.booleans().map(lambda b: Literal("boolean", b)),
    _datetimes,
    _dates,
    st.builds(lambda w: Literal("uri", f"urn:ngsi-ld:{w}:{w}"), _word),
)
_regexes = st.sampled_from(["^a", "(?i)takasago", "a|b", "x\\d+$", '"q"', "[;|()]", "\\bw"])


@st.composite
def _comparisons(draw: st.DrawFn) -> QExpr:
    path = draw(_paths)
    kind = draw(st.sampled_from(["exists", "compare", "list", "range", "pattern"]))
    if kind == "exists":
        return Exists(path)
    if kind == "pattern":
        return Comparison(path, draw(st.sampled_from(["~=", "!~="])), s(draw(_regexes)))
    if kind == "list":
        items = draw(st.lists(_literals, min_size=2, max_size=4))
        return Comparison(path, draw(st.sampled_from(["==", "!="])), ValueList(tuple(items)))
    if kind == "range":
        low, high = draw(st.one_of(st.tuples(_numbers, _numbers), st.tuples(_dates, _datetimes)))
        return Comparison(path, draw(st.sampled_from(["==", "!="])), Range(low, high))
    value = draw(_literals)
    ops = ["==", "!="] if value.kind == "boolean" else ["==", "!=", ">", ">=", "<", "<="]
    return Comparison(path, draw(st.sampled_from(ops)), value)


_exprs = st.recursive(
    _comparisons(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(lambda i: And(tuple(i))),
        st.lists(inner, min_size=2, max_size=3).map(lambda i: Or(tuple(i))),
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(_exprs)
def test_printing_then_parsing_gives_the_same_ast(expr: QExpr) -> None:
    assert parse_q(format_q(expr)) == expr


@settings(max_examples=200, deadline=None)
@given(_paths)
def test_attr_paths_round_trip(path: AttrPath) -> None:
    assert parse_attr_path(format_attr_path(path)) == path


def _survives(text: str) -> None:
    try:
        expr = parse_q(text)
    except Problem as exc:
        assert exc.status == 400
        return
    # Whatever parses prints back to an equivalent query and compiles on both dialects.
    assert parse_q(format_q(expr)) == expr
    for dialect in ("sqlite", "postgresql"):
        try:
            compile_q(expr, entities.c.attrs, dialect, lambda t: "https://x.org/" + t)
        except Problem as exc:
            assert exc.status == 400


_q_chars = st.sampled_from(
    list('abAZ09_-:./#"\\;|()[]=!<>~,. \tTe+-') + ["..", "==", "!~=", "true", "urn:x"]
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(_q_chars, max_size=25).map("".join))
def test_q_like_garbage_only_ever_raises_400(text: str) -> None:
    _survives(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_only_ever_raises_400(text: str) -> None:
    _survives(text)
    try:
        parse_attr_path(text)
    except Problem as exc:
        assert exc.status == 400
