"""NGSI-LD entity representations: validation and expansion on the way in, rendering out.

Stored form (see models.py): attribute names and types expanded to IRIs, each attribute
a list of instances (default instance first), core keys of an instance kept short.
Input may be normalized or concise; output is normalized, concise or keyValues.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from kizuna.broker import geo
from kizuna.broker.context import TermMap
from kizuna.broker.projection import Projection, apply_omit, apply_pick
from kizuna.problems import Problem, bad_request

# Members of an attribute instance that carry its type and value.
VALUE_KEYS = frozenset(
    {"type", "value", "object", "objectList", "languageMap", "valueList", "vocab", "json"}
)
# Keys of an attribute instance that are NGSI-LD core members, not sub-attributes.
INSTANCE_KEYS = VALUE_KEYS | {
    "observedAt",
    "unitCode",
    "datasetId",
    "createdAt",
    "modifiedAt",
    "deletedAt",
    "objectType",
    "instanceId",
    "lang",
}
SYSTEM_KEYS = ("createdAt", "modifiedAt", "deletedAt")
ENTITY_RESERVED = frozenset(
    {"id", "type", "@context", "scope", "createdAt", "modifiedAt", "deletedAt"}
)
GEO_ATTRIBUTES = frozenset(
    {
        "https://uri.etsi.org/ngsi-ld/location",
        "https://uri.etsi.org/ngsi-ld/observationSpace",
        "https://uri.etsi.org/ngsi-ld/operationSpace",
    }
)
ATTRIBUTE_TYPES = frozenset(
    {
        "Property",
        "Relationship",
        "GeoProperty",
        "LanguageProperty",
        "ListProperty",
        "ListRelationship",
        "VocabProperty",
        "JsonProperty",
    }
)
GEOJSON_TYPES = frozenset(
    {
        "Point",
        "MultiPoint",
        "LineString",
        "MultiLineString",
        "Polygon",
        "MultiPolygon",
        "GeometryCollection",
    }
)
# Marks an attribute for deletion in merge-patch (NGSI-LD's "urn:ngsi-ld:null").
NGSI_LD_NULL = "urn:ngsi-ld:null"
# The type of a merge-patch instance that deletes the stored instance of its datasetId.
DELETED = "urn:kizuna:deleted"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+$")
_FORBIDDEN_NAME_CHARS = re.compile(r"[<>\"'=;()\s]")


def now_iso() -> str:
    return to_iso(datetime.now(UTC))


def to_iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def is_uri(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 1024 and _URI.match(value) is not None


def check_uri(value: Any, what: str) -> str:
    if not is_uri(value):
        raise bad_request(f"{what} must be a URI, got {value!r}")
    return value


def check_name(name: Any, what: str = "Attribute name") -> str:
    if not isinstance(name, str) or not name or _FORBIDDEN_NAME_CHARS.search(name):
        raise bad_request(f"{what} {name!r} is not a valid NGSI-LD name")
    return name


def parse_datetime(value: Any, what: str) -> datetime:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    raise bad_request(f"{what} must be an ISO 8601 DateTime, got {value!r}")


@dataclass
class Entity:
    id: str
    types: list[str]
    scopes: list[str] | None
    attrs: dict[str, list[dict[str, Any]]]


# --- in ----------------------------------------------------------------------------


def expand_entity(body: Any, tm: TermMap, now: str, *, require_type: bool = True) -> Entity:
    if not isinstance(body, dict):
        raise bad_request("An entity must be a JSON object")
    entity_id = check_uri(body.get("id"), "Entity id")
    raw_types = body.get("type")
    if raw_types is None and not require_type:
        types: list[str] = []
    else:
        types = expand_types(raw_types, tm)
    scopes = _scopes(body.get("scope")) if "scope" in body else None
    attrs = expand_attributes({k: v for k, v in body.items() if k not in ENTITY_RESERVED}, tm, now)
    return Entity(entity_id, types, scopes, attrs)


def expand_types(raw: Any, tm: TermMap) -> list[str]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise bad_request("Entity type must not be empty")
    out: list[str] = []
    for item in items:
        check_name(item, "Entity type")
        if item in tm.keywords:
            raise bad_request(f"Entity type {item!r} is a JSON-LD keyword alias")
        iri = expand_name(tm, item, "Entity type")
        if iri not in out:
            out.append(iri)
    return out


# The database columns that hold expanded entity types and attribute names.
MAX_EXPANDED_NAME = 1024


def expand_name(tm: TermMap, name: str, what: str) -> str:
    iri = tm.expand(name)
    if len(iri) > MAX_EXPANDED_NAME:
        raise bad_request(f"{what} {name[:40]!r}... is over {MAX_EXPANDED_NAME} characters")
    return iri


def _scopes(raw: Any) -> list[str]:
    items = raw if isinstance(raw, list) else [raw]
    for item in items:
        if not isinstance(item, str) or not re.fullmatch(r"/?[\w\-]+(/[\w\-]+)*|/#|/", item):
            raise bad_request(f"Invalid scope {item!r}")
    return items


def expand_attributes(
    fragment: dict[str, Any], tm: TermMap, now: str, *, allow_null: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """Attributes of a request body, keyed by expanded name.

    With ``allow_null`` (merge-patch), an instance whose value is null or
    urn:ngsi-ld:null comes back as a DELETED marker for its datasetId.
    """
    attrs: dict[str, list[dict[str, Any]]] = {}
    for name, raw in fragment.items():
        if name.startswith("@"):
            raise bad_request(f"Unexpected member {name!r}")
        check_name(name)
        iri = expand_name(tm, name, "Attribute name")
        if allow_null:
            items = (
                raw if isinstance(raw, list) and all(isinstance(i, dict) for i in raw) else [raw]
            )
            deleted = [i for i in items if _is_null(i)]
            if deleted:
                # Each null removes the instance of its datasetId (the default one if none).
                attrs[iri] = [{"type": DELETED, **_dataset_of(i)} for i in deleted]
                kept = [i for i in items if not _is_null(i)]
                if kept:
                    attrs[iri] += _instances(iri, kept, tm, now, allow_null)
                continue
        attrs[iri] = _instances(iri, raw, tm, now, allow_null)
    return attrs


def _dataset_of(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict) and "datasetId" in raw:
        return {"datasetId": raw["datasetId"]}
    return {}


def _is_null(raw: Any) -> bool:
    """Whether a merge-patch attribute (instance) asks for deletion."""
    if raw is None or raw == NGSI_LD_NULL:
        return True
    if not isinstance(raw, dict):
        return False
    return (
        raw.get("value") == NGSI_LD_NULL
        or raw.get("object") == NGSI_LD_NULL
        or raw.get("vocab") == NGSI_LD_NULL
        or raw.get("json") == NGSI_LD_NULL
        or raw.get("languageMap") == {"@none": NGSI_LD_NULL}
        or raw.get("valueList") == [NGSI_LD_NULL]
        or raw.get("objectList") == [NGSI_LD_NULL]
    )


def _instances(iri: str, raw: Any, tm: TermMap, now: str, allow_null: bool) -> list[dict[str, Any]]:
    if (
        isinstance(raw, list)
        and raw
        and all(isinstance(i, dict) and _looks_like_instance(i) for i in raw)
    ):
        instances = [_instance(iri, item, tm, now, allow_null) for item in raw]
    else:  # one instance: no datasetIds to compare, nothing to order
        return [_instance(iri, raw, tm, now, allow_null)]
    seen: set[str | None] = set()
    for inst in instances:
        dataset = inst.get("datasetId")
        if dataset in seen:
            raise bad_request(f"Attribute {iri} has two instances with datasetId {dataset!r}")
        seen.add(dataset)
    instances.sort(key=lambda i: "datasetId" in i)  # default instance first
    return instances


def _looks_like_instance(item: dict[str, Any]) -> bool:
    return any(
        k in item
        for k in (
            "type",
            "value",
            "object",
            "languageMap",
            "valueList",
            "objectList",
            "vocab",
            "json",
        )
    )


def _instance(iri: str, raw: Any, tm: TermMap, now: str, allow_null: bool) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raw = {"type": "Property", "value": raw}
    kind = raw.get("type")
    if kind in GEOJSON_TYPES and "coordinates" in raw or kind == "GeometryCollection":
        raw = {"type": "GeoProperty", "value": raw}
        kind = "GeoProperty"
    if kind is None:
        kind = _infer_kind(raw)
        if kind is None:
            raw = {"type": "Property", "value": raw}
            kind = "Property"
    if kind not in ATTRIBUTE_TYPES:
        raise bad_request(f"Attribute {iri}: unknown attribute type {kind!r}")
    if iri in GEO_ATTRIBUTES and kind != "GeoProperty":
        if kind == "Property" and _is_geojson(raw.get("value")):
            kind = "GeoProperty"
        else:
            raise bad_request(f"Attribute {iri} must be a GeoProperty")
    out: dict[str, Any] = {"type": kind}
    _core_value(iri, kind, raw, out, tm)
    for key, item in raw.items():
        if key in _NOT_COPIED:
            continue
        if key == "observedAt":
            if not (isinstance(item, str) and _is_datetime(item)):
                raise bad_request(f"{iri} observedAt must be an ISO 8601 DateTime, got {item!r}")
            out[key] = item
        elif key == "unitCode":
            if not isinstance(item, str):
                raise bad_request(f"{iri} unitCode must be a string")
            out[key] = item
        elif key == "datasetId":
            out[key] = check_uri(item, f"{iri} datasetId")
        elif key == "objectType":
            out[key] = tm.expand(check_name(item, "objectType"))
        elif key == "lang" or key.startswith("@"):
            raise bad_request(f"{iri}: unexpected member {key!r}")
        else:
            check_name(key)
            sub_iri = tm.expand(key)
            sub = _instances(sub_iri, item, tm, now, allow_null)
            if len(sub) != 1:
                raise bad_request(f"Sub-attribute {key!r} of {iri} must have one instance")
            out[sub_iri] = sub[0]
    out["createdAt"] = now
    out["modifiedAt"] = now
    return out


# Members of an instance not copied as they come: its type and value (taken by
# _core_value), and the system-generated ones clients cannot set.
_NOT_COPIED = VALUE_KEYS | set(SYSTEM_KEYS) | {"instanceId"}


@lru_cache(maxsize=1024)
def _is_datetime(value: str) -> bool:
    """Whether ``value`` is an ISO 8601 DateTime (as :func:`parse_datetime` reads it); a
    batch's instances mostly share their observedAt, so each distinct one is parsed once."""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _infer_kind(raw: dict[str, Any]) -> str | None:
    for key, kind in (
        ("value", "Property"),
        ("object", "Relationship"),
        ("languageMap", "LanguageProperty"),
        ("valueList", "ListProperty"),
        ("objectList", "ListRelationship"),
        ("vocab", "VocabProperty"),
        ("json", "JsonProperty"),
    ):
        if key in raw:
            return kind
    return None


def _is_geojson(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") in GEOJSON_TYPES


def _core_value(iri: str, kind: str, raw: dict[str, Any], out: dict[str, Any], tm: TermMap) -> None:
    if kind == "Property":
        value = raw.get("value")
        if value is None:
            raise bad_request(f"Property {iri} needs a non-null value")
        out["value"] = value
    elif kind == "GeoProperty":
        value = raw.get("value")
        if not isinstance(value, dict):
            raise bad_request(f"GeoProperty {iri} needs a GeoJSON geometry value")
        geo.validate_geometry(value)
        out["value"] = value
    elif kind == "Relationship":
        target = raw.get("object")
        targets = target if isinstance(target, list) else [target]
        if not targets:
            raise bad_request(f"Relationship {iri} needs an object")
        for item in targets:
            check_uri(item, f"Relationship {iri} object")
        out["object"] = target
    elif kind == "ListRelationship":
        items = raw.get("objectList")
        if not isinstance(items, list):
            raise bad_request(f"ListRelationship {iri} needs an objectList array")
        normal = []
        for item in items:
            target = item.get("object") if isinstance(item, dict) else item
            normal.append({"object": check_uri(target, f"{iri} objectList item")})
        out["objectList"] = normal
    elif kind == "LanguageProperty":
        lang_map = raw.get("languageMap")
        if not isinstance(lang_map, dict) or not lang_map:
            raise bad_request(f"LanguageProperty {iri} needs a languageMap object")
        for lang, text in lang_map.items():
            texts = text if isinstance(text, list) else [text]
            if not isinstance(lang, str) or not all(isinstance(t, str) for t in texts):
                raise bad_request(f"LanguageProperty {iri}: languageMap maps tags to strings")
        out["languageMap"] = lang_map
    elif kind == "ListProperty":
        if not isinstance(raw.get("valueList"), list):
            raise bad_request(f"ListProperty {iri} needs a valueList array")
        out["valueList"] = raw["valueList"]
    elif kind == "VocabProperty":
        vocab = raw.get("vocab")
        items = vocab if isinstance(vocab, list) else [vocab]
        expanded = [tm.expand(check_name(v, "vocab value")) for v in items]
        out["vocab"] = expanded if isinstance(vocab, list) else expanded[0]
    elif kind == "JsonProperty":
        if "json" not in raw:
            raise bad_request(f"JsonProperty {iri} needs a json member")
        out["json"] = raw["json"]


# --- out ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendering:
    format: str = "normalized"  # normalized | concise | keyValues
    sys_attrs: bool = False
    attrs: frozenset[str] | None = None  # expanded names to keep
    pick: Projection | None = None  # compact member names (id, type, attributes)
    omit: Projection | None = None
    lang: str | None = None
    # Only instances with these datasetIds ("@none": the default instance).
    dataset_ids: frozenset[str] | None = None
    join: str | None = None  # inline | flat: also retrieve the entities linked to
    join_level: int = 1


def render_entity(
    entity_id: str,
    types: list[str],
    scopes: list[str] | None,
    attrs: dict[str, list[dict[str, Any]]],
    created_at: str | None,
    modified_at: str | None,
    tm: TermMap,
    how: Rendering,
) -> dict[str, Any]:
    out: dict[str, Any] = {"id": entity_id}
    compact_types = [tm.compact(t) for t in types]
    out["type"] = compact_types[0] if len(compact_types) == 1 else compact_types
    if scopes:
        out["scope"] = scopes[0] if len(scopes) == 1 else scopes
    if how.sys_attrs and how.format != "keyValues":
        out["createdAt"] = created_at
        out["modifiedAt"] = modified_at
    for iri, instances in attrs.items():
        if how.attrs is not None and iri not in how.attrs:
            continue
        if how.dataset_ids is not None:
            instances = [i for i in instances if i.get("datasetId", "@none") in how.dataset_ids]
            if not instances:
                continue
        name = tm.compact(iri)
        rendered = [_render_instance(i, tm, how) for i in instances]
        if how.format == "keyValues":
            out[name] = rendered[0]
        else:
            out[name] = rendered[0] if len(rendered) == 1 else rendered
    if how.pick is not None:
        out = apply_pick(out, how.pick)
    if how.omit is not None:
        out = apply_omit(out, how.omit)
    return out


def _render_instance(inst: dict[str, Any], tm: TermMap, how: Rendering) -> Any:
    kind = inst.get("type")
    if how.format == "keyValues":
        return _key_value(inst, tm, how)
    out: dict[str, Any] = {}
    for key, item in inst.items():
        if key in SYSTEM_KEYS and not how.sys_attrs:
            continue
        if key in INSTANCE_KEYS:
            if key == "vocab":
                item = [tm.compact(v) for v in item] if isinstance(item, list) else tm.compact(item)
            elif key == "objectType":
                item = tm.compact(item)
            out[key] = item
        else:
            out[tm.compact(key)] = _render_instance(item, tm, how)
    if kind == "LanguageProperty" and how.lang is not None:
        lang, text = _pick_language(inst["languageMap"], how.lang)
        out.pop("languageMap", None)
        out["type"] = "Property"
        out["value"] = text
        out["lang"] = lang
    if how.format == "concise":
        out.pop("type", None)
        if set(out) == {"value"} and not isinstance(out["value"], dict | list):
            return out["value"]
        if set(out) == {"value"} and _is_geojson(out["value"]):
            return out["value"]
    return out


def _key_value(inst: dict[str, Any], tm: TermMap, how: Rendering) -> Any:
    kind = inst.get("type")
    if kind == "Relationship":
        return inst["object"]
    if kind == "ListRelationship":
        return [i["object"] for i in inst["objectList"]]
    if kind == "LanguageProperty":
        if how.lang is not None:
            return _pick_language(inst["languageMap"], how.lang)[1]
        return {"languageMap": inst["languageMap"]}
    if kind == "ListProperty":
        return inst["valueList"]
    if kind == "VocabProperty":
        vocab = inst["vocab"]
        return [tm.compact(v) for v in vocab] if isinstance(vocab, list) else tm.compact(vocab)
    if kind == "JsonProperty":
        return {"json": inst["json"]}
    return inst.get("value")


def _pick_language(lang_map: dict[str, Any], wanted: str) -> tuple[str, Any]:
    """The best match for a ``lang`` parameter: exact tags in order, '*' any, else 'en'."""
    for tag in (t.split(";")[0].strip() for t in wanted.split(",")):
        if tag == "*" and lang_map:
            first = next(iter(lang_map))
            return first, lang_map[first]
        if tag in lang_map:
            return tag, lang_map[tag]
    for fallback in ("@none", "en"):
        if fallback in lang_map:
            return fallback, lang_map[fallback]
    first = next(iter(lang_map))
    return first, lang_map[first]


def problem_for_entity(entity_id: Any, problem: Problem) -> dict[str, Any]:
    """A batch operation's per-entity error, as the spec's BatchEntityError."""
    return {"entityId": entity_id, "error": {"status": problem.status, **problem.body()}}
