"""Notification bodies (NGSI-LD 1.8 §5.3.1) from outbox rows.

An outbox row keeps the changed entities in stored form (expanded, normalized, with the
state before the change where the notification needs it), so rendering happens when the
notification is delivered, off the write path, with the subscription's @context:
format, attributes / pick / omit, sysAttrs, datasetId, lang, join, and with
``showChanges`` the previous value of each changed attribute. A deleted attribute
(instance) is shown with the value ``urn:ngsi-ld:null``; a deleted entity as id, type
and deletedAt.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from kizuna.broker.context import CORE_CONTEXT_URL, TermMap
from kizuna.broker.http import rendering
from kizuna.broker.ngsild import NGSI_LD_NULL, Rendering, to_iso
from kizuna.broker.service import _render_linked
from kizuna.broker.store import Row
from kizuna.tenancy.service import TenantScope

# Where each attribute type keeps its value, and the member that carries the previous one.
_VALUE_MEMBER = {
    "Property": ("value", "previousValue"),
    "GeoProperty": ("value", "previousValue"),
    "Relationship": ("object", "previousObject"),
    "ListRelationship": ("objectList", "previousObjectList"),
    "LanguageProperty": ("languageMap", "previousLanguageMap"),
    "ListProperty": ("valueList", "previousValueList"),
    "VocabProperty": ("vocab", "previousVocab"),
    "JsonProperty": ("json", "previousJson"),
}


def how_of(doc: dict[str, Any], tm: TermMap) -> Rendering:
    """The Rendering a subscription's notification members ask for."""
    n = doc["notification"]
    params: dict[str, str] = {}
    if "format" in n:
        params["format"] = n["format"]
    if n.get("sysAttrs"):
        params["options"] = "sysAttrs"
    for key in ("pick", "omit"):
        if key in n:
            params[key] = ",".join(n[key]) if isinstance(n[key], list) else n[key]
    if n.get("join") and n["join"] != "@none":
        params["join"] = n["join"]
        params["joinLevel"] = str(n.get("joinLevel", 1))
    if doc.get("lang"):
        params["lang"] = doc["lang"]
    if doc.get("datasetId"):
        params["datasetId"] = ",".join(doc["datasetId"])
    how = rendering(params, tm)
    if "attributes" in n:
        how = Rendering(**{**how.__dict__, "attrs": frozenset(n["attributes"])})
    return how


def entity_data(
    conn: Connection | None,
    scope: TenantScope,
    doc: dict[str, Any],
    tm: TermMap,
    how: Rendering,
    item: dict[str, Any],
) -> list[dict[str, Any]]:
    """The rendered entities of one changed entity (more than one with join=flat)."""
    before, after, at = item.get("before"), item.get("after"), item["at"]
    show_changes = bool(doc["notification"].get("showChanges"))
    explicit = doc["notification"].get("attributes")
    if after is None:
        return [_deleted_entity(before, at, tm, how, show_changes, explicit)]
    attrs = copy.deepcopy(after["attrs"])
    previous: dict[tuple[str, str | None], Any] = {}
    if before is not None:
        for iri, old_instances in before["attrs"].items():
            new_instances = attrs.get(iri, [])
            for old in old_instances:
                dataset = old.get("datasetId")
                match = next((i for i in new_instances if i.get("datasetId") == dataset), None)
                if match is None:
                    attrs.setdefault(iri, []).append(_null_marker(old, at))
                    if show_changes:
                        previous[(iri, dataset)] = old
                elif show_changes and match != old:
                    previous[(iri, dataset)] = old
    row = Row(
        0,
        after["id"],
        after["types"],
        after.get("scopes"),
        attrs,
        _parse(after.get("createdAt") or at),
        _parse(after.get("modifiedAt") or at),
    )
    if conn is not None and how.join is not None:
        rendered = _render_linked(conn, scope, tm, [row], how)
    else:
        rendered = _render_linked(None, scope, tm, [row], how)  # type: ignore[arg-type]
    if previous and how.format != "keyValues" and rendered:
        _add_previous(rendered[0], previous, tm)
    return rendered


def _deleted_entity(
    before: dict[str, Any],
    at: str,
    tm: TermMap,
    how: Rendering,
    show_changes: bool,
    explicit: list[str] | None,
) -> dict[str, Any]:
    types = [tm.compact(t) for t in before["types"]]
    out: dict[str, Any] = {"id": before["id"], "type": types[0] if len(types) == 1 else types}
    if how.sys_attrs and how.format != "keyValues":
        out["createdAt"] = before.get("createdAt") or at
        out["modifiedAt"] = before.get("modifiedAt") or at
    out["deletedAt"] = at
    if not show_changes and not explicit:
        return out
    for iri, instances in before["attrs"].items():
        if how.attrs is not None and iri not in how.attrs:
            continue
        rendered = []
        for old in instances:
            marker = _null_marker(old, at)
            if how.format == "keyValues":
                rendered.append(NGSI_LD_NULL)
                continue
            shown = {k: v for k, v in marker.items() if how.sys_attrs or k not in _SYSTEM}
            if show_changes:
                _, previous_key = _VALUE_MEMBER.get(
                    old.get("type", "Property"), _VALUE_MEMBER["Property"]
                )
                shown[previous_key] = _previous_value(old, tm)
            rendered.append(shown)
        out[tm.compact(iri)] = rendered[0] if len(rendered) == 1 else rendered
    return out


_SYSTEM = ("createdAt", "modifiedAt", "deletedAt")


def _null_marker(old: dict[str, Any], at: str) -> dict[str, Any]:
    kind = old.get("type", "Property")
    member, _ = _VALUE_MEMBER.get(kind, _VALUE_MEMBER["Property"])
    marker: dict[str, Any] = {"type": kind, member: NGSI_LD_NULL}
    if "datasetId" in old:
        marker["datasetId"] = old["datasetId"]
    if "createdAt" in old:
        marker["createdAt"] = old["createdAt"]
        marker["modifiedAt"] = old.get("modifiedAt", old["createdAt"])
    marker["deletedAt"] = at
    return marker


def _previous_value(old: dict[str, Any], tm: TermMap) -> Any:
    kind = old.get("type", "Property")
    member, _ = _VALUE_MEMBER.get(kind, _VALUE_MEMBER["Property"])
    value = old.get(member)
    if kind == "VocabProperty":
        return [tm.compact(v) for v in value] if isinstance(value, list) else tm.compact(value)
    return value


def _add_previous(
    entity: dict[str, Any], previous: dict[tuple[str, str | None], Any], tm: TermMap
) -> None:
    for (iri, dataset), old in previous.items():
        name = tm.compact(iri)
        if name not in entity:
            continue
        shown = entity[name]
        instances = shown if isinstance(shown, list) else [shown]
        for index, inst in enumerate(instances):
            if not isinstance(inst, dict):
                inst = {"value": inst}
            if inst.get("datasetId") != dataset:
                continue
            _, previous_key = _VALUE_MEMBER.get(
                old.get("type", "Property"), _VALUE_MEMBER["Property"]
            )
            inst[previous_key] = _previous_value(old, tm)
            if isinstance(shown, list):
                shown[index] = inst
            else:
                entity[name] = inst


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def notification_context(doc: dict[str, Any]) -> Any:
    """The @context notifications carry: jsonldContext, else the subscription's own."""
    if doc.get("jsonldContext"):
        return doc["jsonldContext"]
    source = doc.get("context") or []
    if not source:
        return CORE_CONTEXT_URL
    return source[0] if len(source) == 1 else source


def link_url(context: Any) -> str:
    if isinstance(context, str):
        return context
    if isinstance(context, list):
        for item in context:
            if isinstance(item, str):
                return item
    return CORE_CONTEXT_URL


def envelope(
    notification_id: str,
    sub_id: str,
    trigger: str,
    data: list[dict[str, Any]],
    notified_at: datetime,
) -> dict[str, Any]:
    return {
        "id": notification_id,
        "type": "Notification",
        "subscriptionId": sub_id,
        "notifiedAt": to_iso(notified_at),
        "data": data,
        "triggerReason": trigger,
    }
