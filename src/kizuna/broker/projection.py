"""``pick`` / ``omit`` projections (NGSI-LD 1.8 §4.21), nested for linked entities.

``id,name,locatedAt{id,name}`` keeps id, name and locatedAt, and shapes the entity that
locatedAt links to (with ``join``) as ``id,name``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kizuna.problems import bad_request

_RESERVED = frozenset("{},")


@dataclass(frozen=True)
class Projection:
    # member name -> projection of the entity it links to (None: not nested)
    members: dict[str, Projection | None]

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def nested(self, name: str) -> Projection | None:
        return self.members.get(name)


def parse_projection(text: str, what: str) -> Projection:
    position = 0

    def members() -> dict[str, Projection | None]:
        nonlocal position
        out: dict[str, Projection | None] = {}
        while True:
            start = position
            while position < len(text) and text[position] not in _RESERVED:
                position += 1
            name = text[start:position].strip()
            if not name:
                raise bad_request(f"Empty member name in {what} at position {start}")
            nested = None
            if position < len(text) and text[position] == "{":
                position += 1
                nested = Projection(members())
                if position >= len(text) or text[position] != "}":
                    raise bad_request(f"Unclosed brace in {what}")
                position += 1
            out[name] = nested
            if position < len(text) and text[position] == ",":
                position += 1
                continue
            return out

    result = Projection(members())
    if position != len(text):
        raise bad_request(f"Unexpected {text[position]!r} in {what} at position {position}")
    return result


def apply_pick(entity: dict[str, Any], pick: Projection) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if k in pick}


def apply_omit(entity: dict[str, Any], omit: Projection) -> dict[str, Any]:
    # A member with a nested projection shapes the linked entity; it is not omitted itself.
    return {k: v for k, v in entity.items() if k not in omit or omit.nested(k) is not None}
