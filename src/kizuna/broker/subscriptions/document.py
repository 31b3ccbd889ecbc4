"""The Subscription document (NGSI-LD 1.8 §5.2.12): validation on the way in, rendering out.

A request body is checked member by member and turned into the stored form: the same
members, with entity types, attribute names and the geoproperty expanded to IRIs (so a
subscription reads the same under any @context), plus the @context it was made with
(``context``) for its q and for compacting notifications. Anything invalid is a 400
ProblemDetails and nothing is stored.
"""

from __future__ import annotations

import copy
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from kizuna.broker import geo
from kizuna.broker.context import TermMap
from kizuna.broker.ngsild import check_name, is_uri, parse_datetime, to_iso
from kizuna.broker.projection import parse_projection
from kizuna.broker.qlang import parse_q
from kizuna.broker.subscriptions.matching import compile_q_python, decoded_q
from kizuna.broker.typeexpr import parse_type_expression
from kizuna.problems import bad_request

TRIGGERS = (
    "entityCreated",
    "entityUpdated",
    "entityDeleted",
    "attributeCreated",
    "attributeUpdated",
    "attributeDeleted",
)
DEFAULT_TRIGGERS = ["attributeCreated", "attributeUpdated"]
FORMATS = ("normalized", "concise", "keyValues")
ACCEPTS = ("application/json", "application/ld+json", "application/geo+json")
SCHEMES = ("http", "https", "mqtt", "mqtts")
# Members a PATCH may not remove (set to null).
MANDATORY = ("notification",)
# Beyond this a throttling or a timeInterval means nothing (and its next time overflows).
_CENTURY = 100 * 365.25 * 86_400


def new_id() -> str:
    return f"urn:ngsi-ld:Subscription:{uuid.uuid4()}"


def parse(body: Any, tm: TermMap, now: datetime, *, check_expiry: bool = True) -> dict[str, Any]:
    """A validated, stored-form subscription from a request body (without @context)."""
    if not isinstance(body, dict) or not body:
        raise bad_request("A subscription must be a non-empty JSON object")
    if body.get("type") != "Subscription":
        raise bad_request('A subscription needs "type": "Subscription"')
    doc: dict[str, Any] = {"type": "Subscription"}
    sub_id = body.get("id")
    if sub_id is None:
        sub_id = new_id()
    elif not is_uri(sub_id):
        raise bad_request(f"Subscription id must be a URI, got {sub_id!r}")
    doc["id"] = sub_id
    for key in ("subscriptionName", "description"):
        if key in body:
            if not isinstance(body[key], str):
                raise bad_request(f"{key} must be a string")
            doc[key] = body[key]
    if "entities" in body:
        doc["entities"] = _entities(body["entities"], tm)
    if "watchedAttributes" in body:
        doc["watchedAttributes"] = _names(body["watchedAttributes"], tm, "watchedAttributes")
    if "entities" not in doc and "watchedAttributes" not in doc:
        raise bad_request("A subscription needs entities or watchedAttributes")
    doc["notificationTrigger"] = _triggers(body.get("notificationTrigger"))
    if "q" in body:
        if not isinstance(body["q"], str):
            raise bad_request("q must be a string")
        compile_q_python(
            parse_q(decoded_q(body["q"])), tm.expand
        )  # 400 on anything it cannot evaluate
        doc["q"] = body["q"]
    if "geoQ" in body:
        doc["geoQ"] = _geo_q(body["geoQ"], tm)
    if "scopeQ" in body:
        if not isinstance(body["scopeQ"], str) or not body["scopeQ"].startswith("/"):
            raise bad_request("scopeQ must be a string of scope terms")
        doc["scopeQ"] = body["scopeQ"]
    if "lang" in body:
        if not isinstance(body["lang"], str):
            raise bad_request("lang must be a string")
        doc["lang"] = body["lang"]
    if "datasetId" in body:
        items = body["datasetId"] if isinstance(body["datasetId"], list) else [body["datasetId"]]
        if not items or not all(i == "@none" or is_uri(i) for i in items):
            raise bad_request("datasetId must be a URI or a list of URIs")
        doc["datasetId"] = items
    doc["notification"] = _notification(body.get("notification"), tm)
    for key in ("throttling", "timeInterval"):
        if key in body:
            value = body[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad_request(f"{key} must be a positive number of seconds")
            if not 0 < value <= _CENTURY:
                raise bad_request(f"{key} must be more than 0 and at most a century, in seconds")
            doc[key] = value
    if "timeInterval" in doc and "watchedAttributes" in doc:
        raise bad_request("timeInterval and watchedAttributes exclude each other")
    if "timeInterval" in doc and "throttling" in doc:
        raise bad_request("timeInterval and throttling exclude each other")
    if "expiresAt" in body:
        moment = parse_datetime(body["expiresAt"], "expiresAt")
        if check_expiry and moment <= now:
            raise bad_request("expiresAt must be in the future")
        doc["expiresAt"] = to_iso(moment)
    if "isActive" in body:
        if not isinstance(body["isActive"], bool):
            raise bad_request("isActive must be true or false")
        doc["isActive"] = body["isActive"]
    if "jsonldContext" in body:
        url = body["jsonldContext"]
        if not is_uri(url) or urlsplit(url).scheme not in ("http", "https", "urn"):
            raise bad_request(f"jsonldContext must be the URL of a @context, got {url!r}")
        doc["jsonldContext"] = url
    doc["context"] = tm.source
    return doc


def merge(current: dict[str, Any], fragment: Any) -> dict[str, Any]:
    """A PATCH: top-level members of the fragment replace (null removes) the current ones."""
    if not isinstance(fragment, dict) or not fragment:
        raise bad_request("A subscription fragment must be a non-empty JSON object")
    if "id" in fragment and fragment["id"] != current["id"]:
        raise bad_request("The id of a subscription cannot be changed")
    if "type" in fragment and fragment["type"] != "Subscription":
        raise bad_request('A subscription fragment may only carry "type": "Subscription"')
    out = copy.deepcopy(current)
    for key, value in fragment.items():
        if key in ("id", "type", "@context"):
            continue
        if value is None or value == "urn:ngsi-ld:null":
            if key in MANDATORY:
                raise bad_request(f"{key} is mandatory and cannot be removed")
            out.pop(key, None)
        elif key == "notification" and isinstance(value, dict) and "endpoint" not in value:
            raise bad_request("notification needs an endpoint")
        else:
            out[key] = value
    return out


def compact_body(doc: dict[str, Any], tm: TermMap) -> dict[str, Any]:
    """A stored document as request-form members, compacted with ``tm`` (for PATCH merges)."""
    out = {k: copy.deepcopy(v) for k, v in doc.items() if k != "context"}
    if "entities" in out:
        out["entities"] = [
            {
                **{k: v for k, v in e.items() if k != "typeExpression"},
                "type": e["type"] if e.get("typeExpression") else tm.compact(e["type"]),
            }
            for e in out["entities"]
        ]
    if "watchedAttributes" in out:
        out["watchedAttributes"] = [tm.compact(a) for a in out["watchedAttributes"]]
    notification = out["notification"]
    if "attributes" in notification:
        notification["attributes"] = [tm.compact(a) for a in notification["attributes"]]
    if "geoQ" in out and "geoproperty" in out["geoQ"]:
        out["geoQ"]["geoproperty"] = tm.compact(out["geoQ"]["geoproperty"])
    return out


def render(
    doc: dict[str, Any],
    tm: TermMap,
    status: dict[str, Any],
    now: datetime,
    *,
    sys_attrs: bool = False,
) -> dict[str, Any]:
    """The Subscription as GET returns it: given members, compacted, plus its status."""
    out = compact_body(doc, tm)
    out["status"] = state(doc, now)
    notification = out["notification"]
    if status.get("last_notification") is not None:
        notification["timesSent"] = status["times_sent"]
        if status.get("times_failed"):
            notification["timesFailed"] = status["times_failed"]
        notification["lastNotification"] = to_iso(status["last_notification"])
        ok = status.get("last_failure") is None or (
            status.get("last_success") is not None
            and status["last_success"] >= status["last_failure"]
        )
        notification["status"] = "ok" if ok else "failed"
        for key, column in (("lastSuccess", "last_success"), ("lastFailure", "last_failure")):
            if status.get(column) is not None:
                notification[key] = to_iso(status[column])
    if sys_attrs:
        out["createdAt"] = to_iso(status["created_at"])
        out["modifiedAt"] = to_iso(status["modified_at"])
    return out


def state(doc: dict[str, Any], now: datetime) -> str:
    """active | paused | expired (§5.2.12)."""
    expires = doc.get("expiresAt")
    if expires is not None and parse_datetime(expires, "expiresAt") <= now:
        return "expired"
    if doc.get("isActive") is False:
        return "paused"
    return "active"


def expires_at(doc: dict[str, Any]) -> datetime | None:
    raw = doc.get("expiresAt")
    return parse_datetime(raw, "expiresAt").astimezone(UTC) if raw else None


# --- members ---------------------------------------------------------------------


def _entities(raw: Any, tm: TermMap) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("entities must be a non-empty array of EntitySelectors")
    out = []
    for item in raw:
        if not isinstance(item, dict):
            raise bad_request("Each EntitySelector must be a JSON object")
        selector: dict[str, Any] = {}
        if "type" not in item or not isinstance(item["type"], str):
            raise bad_request("Each EntitySelector needs a type")
        if any(c in item["type"] for c in ",;|()"):
            parse_type_expression(item["type"], tm.expand)  # 400 if malformed
            selector["type"] = item["type"]
            selector["typeExpression"] = True
        else:
            selector["type"] = tm.expand(check_name(item["type"], "Entity type"))
        if "id" in item:
            if not is_uri(item["id"]):
                raise bad_request(f"EntitySelector id must be a URI, got {item['id']!r}")
            selector["id"] = item["id"]
        if "idPattern" in item:
            try:
                re.compile(item["idPattern"])
            except (re.error, TypeError):
                raise bad_request(f"Invalid idPattern {item['idPattern']!r}") from None
            selector["idPattern"] = item["idPattern"]
        out.append(selector)
    return out


def _names(raw: Any, tm: TermMap, what: str) -> list[str]:
    if not isinstance(raw, list) or not raw:
        raise bad_request(f"{what} must be a non-empty array of attribute names")
    out = []
    for name in raw:
        if name in ("id", "type", "@context"):
            raise bad_request(f"{name!r} is not an attribute name")
        iri = tm.expand(check_name(name))
        if iri not in out:
            out.append(iri)
    return out


def _triggers(raw: Any) -> list[str]:
    if raw is None:
        return list(DEFAULT_TRIGGERS)
    if not isinstance(raw, list) or not raw:
        raise bad_request("notificationTrigger must be a non-empty array")
    for item in raw:
        if item not in TRIGGERS:
            raise bad_request(f"Unknown notificationTrigger {item!r}")
    return list(dict.fromkeys(raw))


def _geo_q(raw: Any, tm: TermMap) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise bad_request("geoQ must be an object")
    parsed = geo.parse_geo_query(
        raw.get("georel"), raw.get("geometry"), raw.get("coordinates"), raw.get("geoproperty")
    )
    if parsed is None:
        raise bad_request("geoQ needs georel, geometry and coordinates")
    out = {
        "georel": raw["georel"],
        "geometry": raw["geometry"],
        "coordinates": raw["coordinates"],
    }
    if raw.get("geoproperty") is not None:
        out["geoproperty"] = tm.expand(check_name(raw["geoproperty"]))
    return out


def _notification(raw: Any, tm: TermMap) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise bad_request("A subscription needs a notification object")
    out: dict[str, Any] = {}
    if "attributes" in raw:
        out["attributes"] = _names(raw["attributes"], tm, "notification.attributes")
    if "format" in raw:
        chosen = {"simplified": "keyValues"}.get(raw["format"], raw["format"])
        if chosen not in FORMATS:
            raise bad_request(f"Unknown notification format {raw['format']!r}")
        out["format"] = raw["format"]
    for key in ("pick", "omit"):
        if key in raw:
            value = raw[key]
            text = ",".join(value) if isinstance(value, list) else value
            if not isinstance(text, str) or (
                isinstance(value, list) and not all(isinstance(v, str) for v in value)
            ):
                raise bad_request(f"notification.{key} must be a string or a list of strings")
            projection = parse_projection(text, key)
            for name in projection.members:
                check_name(name, "Member name")
            out[key] = value
    if "attributes" in out and ("pick" in out or "omit" in out):
        raise bad_request("notification.attributes cannot be combined with pick or omit")
    if "pick" in out and "omit" in out:
        picked = set(parse_projection(_text(out["pick"]), "pick").members)
        if picked & set(parse_projection(_text(out["omit"]), "omit").members):
            raise bad_request("The same member is in pick and omit")
    for key in ("sysAttrs", "showChanges"):
        if key in raw:
            if not isinstance(raw[key], bool):
                raise bad_request(f"notification.{key} must be true or false")
            out[key] = raw[key]
    if "join" in raw:
        if raw["join"] not in ("flat", "inline", "@none"):
            raise bad_request("notification.join must be flat, inline or @none")
        out["join"] = raw["join"]
    if "joinLevel" in raw:
        level = raw["joinLevel"]
        if isinstance(level, bool) or not isinstance(level, int) or level < 1:
            raise bad_request("notification.joinLevel must be a positive whole number")
        out["joinLevel"] = level
    out["endpoint"] = _endpoint(raw.get("endpoint"))
    return out


def _text(value: Any) -> str:
    return ",".join(value) if isinstance(value, list) else value


def _endpoint(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise bad_request("notification needs an endpoint object")
    uri = raw.get("uri")
    if not isinstance(uri, str) or not is_uri(uri):
        raise bad_request(f"endpoint.uri must be a URI, got {uri!r}")
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES:
        raise bad_request(
            f"endpoint.uri scheme {parts.scheme!r} cannot be notified; use http(s) or mqtt(s)"
        )
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise bad_request(f"endpoint.uri has an invalid port: {uri!r}") from None
    if not parts.hostname:
        raise bad_request(f"endpoint.uri needs a host: {uri!r}")
    if parts.scheme.startswith("mqtt") and not parts.path.strip("/"):
        raise bad_request(f"An MQTT endpoint needs a topic: {uri!r}")
    out: dict[str, Any] = {"uri": uri}
    if "accept" in raw:
        if raw["accept"] not in ACCEPTS:
            raise bad_request(f"endpoint.accept must be one of {', '.join(ACCEPTS)}")
        out["accept"] = raw["accept"]
    for key in ("receiverInfo", "notifierInfo"):
        if key in raw:
            items = raw[key]
            if not isinstance(items, list) or not all(
                isinstance(i, dict)
                and isinstance(i.get("key"), str)
                and isinstance(i.get("value"), str)
                and i["key"]
                for i in items
            ):
                raise bad_request(f"endpoint.{key} must be an array of {{key, value}} strings")
            out[key] = [{"key": i["key"], "value": i["value"]} for i in items]
    for item in out.get("notifierInfo", []):
        if item["key"] == "MQTT-QoS" and item["value"] not in ("0", "1", "2"):
            raise bad_request("MQTT-QoS must be 0, 1 or 2")
        if item["key"] == "MQTT-Version" and item["value"] not in ("mqtt3.1.1", "mqtt5.0"):
            raise bad_request("MQTT-Version must be mqtt3.1.1 or mqtt5.0")
    return out
