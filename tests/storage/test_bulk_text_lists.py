"""Lists of strings sent to PostgreSQL as one joined string (storage.bulk)."""

import pytest
from sqlalchemy import text

from kizuna.storage.bulk import joined_text, split_text


@pytest.mark.parametrize(
    "values",
    [
        [],
        [""],
        ["", ""],
        ["urn:ngsi-ld:A:1", "", "https://x/y#z", "名前", "a,b{c}\"d'e\\f"],
    ],
)
def test_the_list_arrives_as_sent(pg_engine, values):
    with pg_engine.connect() as conn:
        got = conn.execute(
            text(f"SELECT {split_text('items')}"), {"items": joined_text(values)}
        ).scalar_one()
    assert got == values


def test_a_value_holding_the_separator_is_refused():
    with pytest.raises(ValueError, match="separator"):
        joined_text(["ok", "bad\x1fvalue"])
