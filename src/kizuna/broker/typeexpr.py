"""NGSI-LD entity type expressions: ``A,B`` or ``A|B`` (any), ``A;B`` (all), parentheses."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import and_, or_

from kizuna.broker.ngsild import check_name
from kizuna.broker.qlang import MAX_DEPTH
from kizuna.problems import bad_request

_TOKEN = re.compile(r"\s*(?:([(),;|])|([^(),;|\s]+))")


def compile_type_expression(
    text: str,
    expand: Callable[[str], str],
    any_of: Callable[[Sequence[str]], Any],
    all_of: Callable[[Sequence[str]], Any],
) -> Any:
    """A SQL condition for ``text``; ``any_of``/``all_of`` build the per-type conditions."""
    return _to_sql(parse_type_expression(text, expand), any_of, all_of)


def parse_type_expression(text: str, expand: Callable[[str], str]) -> Any:
    """The expression as a tree: an expanded type, or ("or" | "and", [subtrees])."""
    tokens = _tokenize(text)
    position = 0
    depth = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def disjunction() -> Any:
        items = [conjunction()]
        while peek() in (",", "|"):
            take()
            items.append(conjunction())
        return items[0] if len(items) == 1 else ("or", items)

    def conjunction() -> Any:
        items = [atom()]
        while peek() == ";":
            take()
            items.append(atom())
        return items[0] if len(items) == 1 else ("and", items)

    def atom() -> Any:
        nonlocal depth
        token = peek()
        if token == "(":
            depth += 1
            if depth > MAX_DEPTH:
                raise bad_request(f"Type expression nested deeper than {MAX_DEPTH} parentheses")
            take()
            inner = disjunction()
            if peek() != ")":
                raise bad_request(f"Unbalanced parentheses in type expression {text!r}")
            take()
            depth -= 1
            return inner
        if token is None or token in "),;|":
            raise bad_request(f"Invalid type expression {text!r}")
        return expand(check_name(take(), "Entity type"))

    tree = disjunction()
    if position != len(tokens):
        raise bad_request(f"Invalid type expression {text!r}")
    return tree


def type_expression_matches(tree: Any, types: Sequence[str]) -> bool:
    """Whether an entity with ``types`` satisfies a parsed type expression."""
    if isinstance(tree, str):
        return tree in types
    op, items = tree
    if op == "or":
        return any(type_expression_matches(i, types) for i in items)
    return all(type_expression_matches(i, types) for i in items)


def type_expression_names(tree: Any) -> set[str]:
    if isinstance(tree, str):
        return {tree}
    return set().union(*(type_expression_names(i) for i in tree[1]))


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise bad_request(f"Invalid type expression {text!r}")
        tokens.append(match.group(1) or match.group(2))
        position = match.end()
    if not tokens:
        raise bad_request("Empty type expression")
    return tokens


def _to_sql(
    tree: Any, any_of: Callable[[Sequence[str]], Any], all_of: Callable[[Sequence[str]], Any]
) -> Any:
    if isinstance(tree, str):
        return any_of([tree])
    op, items = tree
    if op == "or" and all(isinstance(i, str) for i in items):
        return any_of(items)  # one IN (...) instead of many ORs
    if op == "and" and all(isinstance(i, str) for i in items):
        return all_of(items)
    parts = [_to_sql(i, any_of, all_of) for i in items]
    return or_(*parts) if op == "or" else and_(*parts)
