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
from kizuna.broker.ngsild import NGSI_LD_NULL, Rendering, _key_value, to_iso
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
    trigger: str,
) -> list[dict[str, Any]]:
    """The rendered entities of one changed entity (more than one with join=flat)."""
    before, after, at = item.get("before"), item.get("after"), item["at"]
    show_changes = bool(doc["notification"].get("showChanges"))
    if after is None:
        if trigger == "attributeDeleted":
            shown = doc.get("watchedAttributes") or list(before["attrs"])
        elif show_changes or doc["notification"].get("attributes"):
            shown = list(before["attrs"])
        else:
            shown = []
        return [_deleted_entity(before, at, tm, how, show_changes, shown)]
    attrs = copy.deepcopy(after["attrs"])
    previous: dict[tuple[str, str | None], Any] = {}
    if before is not None:
        for iri, old_instances in before["attrs"].items():
            new_instances = attrs.get(iri)
            if not new_instances:
                # The whole attribute is gone: one marker, as its default instance.
                old = _find(old_instances, None) or old_instances[0]
                marker = _null_marker(old, at)
                marker.pop("datasetId", None)
                attrs[iri] = [marker]
                if show_changes:
                    previous[(iri, None)] = old
                continue
            for old in old_instances:
                dataset = old.get("datasetId")
                match = _find(new_instances, dataset)
                if match is None:
                    new_instances.append(_null_marker(old, at))
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
    rendered = _render_linked(conn, scope, tm, [row], how)  # type: ignore[arg-type]
    if not rendered:
        return rendered
    first = rendered[0]
    if how.format == "keyValues":
        _key_values_datasets(first, attrs, tm, how)
        if how.sys_attrs:
            first["createdAt"] = after.get("createdAt") or at
            first["modifiedAt"] = after.get("modifiedAt") or at
    elif previous:
        _add_previous(first, previous, tm)
    return rendered


def _find(instances: list[dict[str, Any]], dataset: str | None) -> dict[str, Any] | None:
    return next((i for i in instances if i.get("datasetId") == dataset), None)


def _key_values_datasets(
    entity: dict[str, Any], attrs: dict[str, list[dict[str, Any]]], tm: TermMap, how: Rendering
) -> None:
    """keyValues of a multi-instance attribute: {"dataset": {datasetId | "@none": value}}."""
    for iri, instances in attrs.items():
        name = tm.compact(iri)
        if len(instances) < 2 or name not in entity:
            continue
        if how.dataset_ids is not None:
            instances = [i for i in instances if i.get("datasetId", "@none") in how.dataset_ids]
            if len(instances) < 2:
                continue
        entity[name] = {
            "dataset": {i.get("datasetId", "@none"): _key_value(i, tm, how) for i in instances}
        }


def _deleted_entity(
    before: dict[str, Any],
    at: str,
    tm: TermMap,
    how: Rendering,
    show_changes: bool,
    shown: list[str],
) -> dict[str, Any]:
    types = [tm.compact(t) for t in before["types"]]
    out: dict[str, Any] = {"id": before["id"], "type": types[0] if len(types) == 1 else types}
    if how.sys_attrs:
        out["createdAt"] = before.get("createdAt") or at
        out["modifiedAt"] = before.get("modifiedAt") or at
    out["deletedAt"] = at
    for iri in shown:
        instances = before["attrs"].get(iri)
        if not instances or (how.attrs is not None and iri not in how.attrs):
            continue
        rendered = []
        for old in instances:
            marker = _null_marker(old, at, entity_deleted=True)
            if how.format == "keyValues":
                rendered.append(NGSI_LD_NULL)
                continue
            item = {k: v for k, v in marker.items() if how.sys_attrs or k not in _SYSTEM}
            if show_changes:
                _, previous_key = _members(old)
                item[previous_key] = _previous_value(old, tm)
            rendered.append(item)
        out[tm.compact(iri)] = rendered[0] if len(rendered) == 1 else rendered
    return out


def _members(inst: dict[str, Any]) -> tuple[str, str]:
    return _VALUE_MEMBER.get(inst.get("type", "Property"), _VALUE_MEMBER["Property"])


_SYSTEM = ("createdAt", "modifiedAt", "deletedAt")


def _null_marker(old: dict[str, Any], at: str, *, entity_deleted: bool = False) -> dict[str, Any]:
    """A deleted attribute (instance). The suite expects a LanguageProperty's languageMap as
    {"@none": null} when the attribute is deleted, and a bare null when its entity is."""
    kind = old.get("type", "Property")
    member, _ = _members(old)
    language = kind == "LanguageProperty" and not entity_deleted
    null: Any = {"@none": NGSI_LD_NULL} if language else NGSI_LD_NULL
    marker: dict[str, Any] = {"type": kind, member: null}
    if "datasetId" in old:
        marker["datasetId"] = old["datasetId"]
    if "createdAt" in old:
        marker["createdAt"] = old["createdAt"]
        marker["modifiedAt"] = old.get("modifiedAt", old["createdAt"])
    marker["deletedAt"] = at
    return marker


def _previous_value(old: dict[str, Any], tm: TermMap) -> Any:
    kind = old.get("type", "Property")
    member, _ = _members(old)
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
