"""HTTP routes of the NGSI-LD API v1 (entities, batch operations, discovery, @contexts)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from kizuna.broker import geo
from kizuna.broker.context import TermMap
from kizuna.broker.http import (
    GEO_JSON,
    JSON,
    JSON_LD,
    MERGE_PATCH,
    accepted,
    context_link,
    has_option,
    json_response,
    page_params,
    read_json,
    rendering,
    resolve_term_map,
    split_list,
    term_map_for_body,
    term_map_of_item,
    without_context,
)
from kizuna.broker.ngsild import GEOJSON_TYPES, check_name, check_uri
from kizuna.broker.service import BatchResult, Broker, Query, UpdateResult
from kizuna.problems import Problem, bad_request, invalid_request
from kizuna.routing import ModuleRouter
from kizuna.tenancy.deps import ReadScope, WriteScope

router = ModuleRouter(prefix="/ngsi-ld/v1", tags=["NGSI-LD"])


def _broker(request: Request) -> Broker:
    return request.app.state.services.broker


def _request_tm(request: Request) -> TermMap:
    """The Link header's @context (call from sync routes: may fetch a remote document)."""
    return _broker(request).contexts.term_map(context_link(request))


def _no_content(
    request: Request, status: int = 204, headers: dict[str, str] | None = None
) -> Response:
    out = dict(headers or {})
    if request.headers.get("ngsild-tenant"):
        out["NGSILD-Tenant"] = request.headers["ngsild-tenant"]
    return Response(status_code=status, headers=out)


def _update_result(request: Request, result: UpdateResult, tm: TermMap) -> Response:
    if not result.not_updated:
        return _no_content(request)
    body = {"updated": result.updated, "notUpdated": result.not_updated}
    return json_response(request, body, tm, status=207)


def _entity_path(request: Request, entity_id: str) -> str:
    return f"/ngsi-ld/v1/entities/{entity_id}"


# --- entities ------------------------------------------------------------------------


@router.post("/entities", status_code=201)
@router.post("/entities/", status_code=201, include_in_schema=False)
async def create_entity(request: Request, scope: WriteScope) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict) or not body:
        raise invalid_request("The body must be a non-empty JSON object (one entity)")
    broker = _broker(request)
    tm = await term_map_for_body(broker.contexts, request, body)
    entity_id = await broker.create.on_loop(scope, tm, body)
    return _no_content(request, 201, {"Location": _entity_path(request, entity_id)})


@router.get("/entities")
@router.get("/entities/", include_in_schema=False)
async def query_entities(request: Request, scope: ReadScope) -> Response:
    tm = await resolve_term_map(_broker(request).contexts, context_link(request))
    query = _query_from_params(request, tm)
    how = rendering(request.query_params, tm)
    return await _query_response(request, scope, tm, query, how)


@router.post("/entityOperations/query")
async def query_entities_post(request: Request, scope: ReadScope) -> Response:
    body = await read_json(request)
    broker = _broker(request)
    tm = await term_map_for_body(broker.contexts, request, body)
    if not isinstance(body, dict) or body.get("type") != "Query":
        raise bad_request('The body must be a Query object ("type": "Query")')
    query = _query_from_body(request, body)
    how = rendering(_query_body_params(request, body), tm)
    return await _query_response(request, scope, tm, query, how)


def _query_body_params(request: Request, body: dict[str, Any]) -> dict[str, str]:
    """URL parameters, overridden by the Query body's representation members."""
    params = dict(request.query_params)
    for member in ("attrs", "pick", "omit", "lang", "join", "joinLevel", "datasetId"):
        value = body.get(member)
        if value is None:
            continue
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise bad_request(f"{member} must be a list of strings")
            value = ",".join(value)
        params[member] = str(value)
    return params


async def _query_response(
    request: Request, scope: Any, tm: TermMap, query: Query, how: Any
) -> Response:
    result = await run_in_threadpool(_broker(request).query, scope, tm, query, how)
    headers: dict[str, str] = {}
    if result.count is not None:
        headers["NGSILD-Results-Count"] = str(result.count)
    links = _page_links(request, query, len(result.entities), result.count)
    if links:
        headers["Link"] = links
    body: Any = result.entities
    if accepted(request) == GEO_JSON:
        body = _feature_collection(
            result.entities, query.geo.geoproperty if query.geo else "location"
        )
    return json_response(request, body, tm, headers=headers)


def _page_links(request: Request, query: Query, returned: int, total: int | None) -> str:
    links = []
    url = request.url
    if query.offset > 0:
        prev_offset = max(0, query.offset - query.limit)
        links.append(
            f'<{url.include_query_params(offset=prev_offset, limit=query.limit)}>; rel="prev"'
        )
    has_more = query.limit > 0 and (
        total > query.offset + returned if total is not None else returned == query.limit
    )
    if has_more:
        links.append(
            f'<{url.include_query_params(offset=query.offset + query.limit, limit=query.limit)}>; rel="next"'
        )
    return ", ".join(links)


def _geometry_property(request: Request) -> str:
    return request.query_params.get("geometryProperty") or "location"


def _feature(item: dict[str, Any], geometry_property: str) -> dict[str, Any]:
    """An entity as a GeoJSON Feature (NGSI-LD 1.8 §4.5.16)."""
    geometry = item.get(geometry_property)
    if isinstance(geometry, list):
        geometry = geometry[0]
    if isinstance(geometry, dict) and "value" in geometry:
        geometry = geometry["value"]
    if not (isinstance(geometry, dict) and geometry.get("type") in GEOJSON_TYPES):
        geometry = None
    properties = {k: v for k, v in item.items() if k not in ("id", "@context")}
    return {"id": item["id"], "type": "Feature", "geometry": geometry, "properties": properties}


def _feature_collection(items: list[dict[str, Any]], geometry_property: str) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "features": [_feature(i, geometry_property) for i in items],
    }


def _query_from_params(request: Request, tm: TermMap) -> Query:
    params = request.query_params
    limit, offset, count = page_params(request)
    ids = split_list(params.get("id"), "id")
    for entity_id in ids or []:
        check_uri(entity_id, "Entity id")
    geo_query = geo.parse_geo_query(
        params.get("georel"),
        params.get("geometry"),
        params.get("coordinates"),
        params.get("geoproperty"),
    )
    query = Query(
        ids=ids,
        id_pattern=_pattern(params.get("idPattern")),
        type_expression=params.get("type"),
        attrs=split_list(params.get("attrs"), "attrs"),
        q=params.get("q"),
        geo=geo_query,
        scope_q=params.get("scopeQ"),
        limit=limit,
        offset=offset,
        count=count,
        order_by=params.get("orderBy"),
    )
    local = (params.get("local") or "").lower() == "true"
    if not local and not any(
        (query.type_expression, query.attrs, query.q, query.geo, query.scope_q)
    ):
        raise bad_request("Give at least one of type, attrs, q, a geo-query or scopeQ")
    return query


def _query_from_body(request: Request, body: dict[str, Any]) -> Query:
    limit, offset, count = page_params(request)
    ids: list[str] = []
    types: list[str] = []
    pattern = None
    for selector in body.get("entities") or []:
        if not isinstance(selector, dict):
            raise bad_request("entities must be an array of EntitySelector objects")
        if "id" in selector:
            ids.append(check_uri(selector["id"], "Entity id"))
        if "idPattern" in selector:
            pattern = _pattern(selector["idPattern"])
        if "type" in selector:
            types.append(str(selector["type"]))
    geo_q = body.get("geoQ")
    geo_query = None
    if geo_q is not None:
        if not isinstance(geo_q, dict):
            raise bad_request("geoQ must be an object")
        geo_query = geo.parse_geo_query(
            geo_q.get("georel"),
            geo_q.get("geometry"),
            geo_q.get("coordinates"),
            geo_q.get("geoproperty"),
        )
    attrs = body.get("attrs")
    query = Query(
        ids=ids or None,
        id_pattern=pattern,
        type_expression="|".join(f"({t})" for t in types) if types else None,
        attrs=attrs if isinstance(attrs, list) else None,
        q=body.get("q"),
        geo=geo_query,
        scope_q=body.get("scopeQ"),
        limit=limit,
        offset=offset,
        count=count,
    )
    if not any(
        (query.ids, query.id_pattern, query.type_expression, query.attrs, query.q, query.geo)
    ):
        raise bad_request("The Query needs entities, attrs, q or geoQ")
    return query


def _pattern(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        re.compile(raw)
    except re.error as exc:
        raise bad_request(f"idPattern is not a valid regular expression: {exc}") from None
    return raw


@router.get("/entities/{entity_id}")
def retrieve_entity(request: Request, scope: ReadScope, entity_id: str) -> Response:
    check_uri(entity_id, "Entity id")
    tm = _request_tm(request)
    how = rendering(request.query_params, tm)
    entity = _broker(request).retrieve(scope, tm, entity_id, how)
    if accepted(request) == GEO_JSON and isinstance(entity, dict):
        entity = _feature(entity, _geometry_property(request))
    return json_response(request, entity, tm)


@router.put("/entities/", include_in_schema=False)
@router.patch("/entities/", include_in_schema=False)
def entity_id_missing() -> None:
    raise bad_request("The entity id is missing from the URL")


@router.put("/entities/{entity_id}", status_code=204)
async def replace_entity(request: Request, scope: WriteScope, entity_id: str) -> Response:
    check_uri(entity_id, "Entity id")
    body = await read_json(request)
    broker = _broker(request)
    tm = await term_map_for_body(broker.contexts, request, body)
    await broker.replace.on_loop(scope, tm, entity_id, without_context(body))
    return _no_content(request)


@router.patch("/entities/{entity_id}", status_code=204)
async def merge_entity(request: Request, scope: WriteScope, entity_id: str) -> Response:
    check_uri(entity_id, "Entity id")
    body = await read_json(request, (JSON, JSON_LD, MERGE_PATCH))
    broker = _broker(request)
    tm = await term_map_for_body(broker.contexts, request, body)
    await broker.merge.on_loop(scope, tm, entity_id, without_context(body))
    return _no_content(request)


@router.delete("/entities/{entity_id}", status_code=204)
async def delete_entity(request: Request, scope: WriteScope, entity_id: str) -> Response:
    check_uri(entity_id, "Entity id")
    await _broker(request).delete.on_loop(scope, entity_id)
    return _no_content(request)


@router.post("/entities/{entity_id}/attrs")
async def append_attributes(request: Request, scope: WriteScope, entity_id: str) -> Response:
    check_uri(entity_id, "Entity id")
    body = await read_json(request)
    broker = _broker(request)
    tm = await term_map_for_body(broker.contexts, request, body)
    overwrite = not has_option(request, "noOverwrite")
    result = await broker.append_attributes.on_loop(scope, tm, entity_id, body, overwrite=overwrite)
    return _update_result(request, result, tm)


@router.patch("/entities/{entity_id}/attrs")
async def update_attributes(request: Request, scope: WriteScope, entity_id: str) -> Response:
    check_uri(entity_id, "Entity id")
    body = await read_json(request)
    broker = _broker(request)
    tm = await term_map_for_body(broker.contexts, request, body)
    result = await broker.update_attributes.on_loop(scope, tm, entity_id, body)
    return _update_result(request, result, tm)


@router.patch("/entities/{entity_id}/attrs/{attr}", status_code=204)
async def partial_update_attribute(
    request: Request, scope: WriteScope, entity_id: str, attr: str
) -> Response:
    check_uri(entity_id, "Entity id")
    body = await read_json(request)
    broker = _broker(request)
    tm = await term_map_for_body(broker.contexts, request, body)
    fragment = without_context(body)
    await broker.partial_update_attribute.on_loop(scope, tm, entity_id, attr, fragment)
    return _no_content(request)


@router.put("/entities/{entity_id}/attrs/{attr}", status_code=204)
async def replace_attribute(
    request: Request, scope: WriteScope, entity_id: str, attr: str
) -> Response:
    check_uri(entity_id, "Entity id")
    body = await read_json(request)
    broker = _broker(request)
    tm = await term_map_for_body(broker.contexts, request, body)
    await broker.replace_attribute.on_loop(scope, tm, entity_id, attr, body)
    return _no_content(request)


@router.delete("/entities/{entity_id}/attrs/{attr}", status_code=204)
async def delete_attribute(
    request: Request, scope: WriteScope, entity_id: str, attr: str
) -> Response:
    check_uri(entity_id, "Entity id")
    params = request.query_params
    dataset_id = params.get("datasetId")
    if dataset_id is not None:
        check_uri(dataset_id, "datasetId")
    broker = _broker(request)
    await broker.delete_attribute.on_loop(
        scope,
        await resolve_term_map(broker.contexts, context_link(request)),
        entity_id,
        attr,
        dataset_id=dataset_id,
        delete_all=(params.get("deleteAll") or "false").lower() == "true",
    )
    return _no_content(request)


# --- batch operations ----------------------------------------------------------------


def _batch_response(request: Request, result: BatchResult, *, created_status: bool) -> Response:
    if result.errors:
        body = {"success": result.success, "errors": result.errors}
        return Response(orjson.dumps(body), status_code=207, media_type=JSON)
    if created_status and result.created:
        return Response(orjson.dumps(result.created), status_code=201, media_type=JSON)
    return _no_content(request)


async def _batch(
    request: Request, scope: Any, operation: str, *, created_status: bool, **options: Any
) -> Response:
    body = await read_json(request)
    broker = _broker(request)
    result = await run_in_threadpool(
        getattr(broker, operation),
        scope,
        await term_map_of_item(broker.contexts, request),
        body,
        **options,
    )
    return _batch_response(request, result, created_status=created_status)


@router.post("/entityOperations/create")
async def batch_create(request: Request, scope: WriteScope) -> Response:
    return await _batch(request, scope, "batch_create", created_status=True)


@router.post("/entityOperations/upsert")
async def batch_upsert(request: Request, scope: WriteScope) -> Response:
    update_mode = has_option(request, "update")
    if update_mode and has_option(request, "replace"):
        raise bad_request("options=replace and options=update exclude each other")
    return await _batch(
        request, scope, "batch_upsert", created_status=True, replace=not update_mode
    )


@router.post("/entityOperations/update")
async def batch_update(request: Request, scope: WriteScope) -> Response:
    overwrite = not has_option(request, "noOverwrite")
    return await _batch(request, scope, "batch_update", created_status=False, overwrite=overwrite)


@router.post("/entityOperations/merge")
async def batch_merge(request: Request, scope: WriteScope) -> Response:
    return await _batch(request, scope, "batch_merge", created_status=False)


@router.post("/entityOperations/delete")
async def batch_delete(request: Request, scope: WriteScope) -> Response:
    body = await read_json(request)
    result = await run_in_threadpool(_broker(request).batch_delete, scope, body)
    return _batch_response(request, result, created_status=False)


# --- discovery -----------------------------------------------------------------------


def _details(request: Request) -> bool:
    return (request.query_params.get("details") or "false").lower() == "true"


@router.get("/types")
def list_types(request: Request, scope: ReadScope) -> Response:
    tm = _request_tm(request)
    broker = _broker(request)
    if _details(request):
        body: Any = [
            {
                "id": info["type"],
                "type": "EntityType",
                "typeName": tm.compact(info["type"]),
                "attributeNames": sorted(tm.compact(a) for a in info["attrs"]),
            }
            for info in broker.type_details(scope)
        ]
    else:
        body = {
            "id": f"urn:ngsi-ld:EntityTypeList:{uuid.uuid4()}",
            "type": "EntityTypeList",
            "typeList": [tm.compact(t) for t in broker.type_names(scope)],
        }
    return json_response(request, body, tm)


@router.get("/types/{type_name}")
def type_info(request: Request, scope: ReadScope, type_name: str) -> Response:
    tm = _request_tm(request)
    iri = tm.expand(check_name(type_name, "Entity type"))
    for info in _broker(request).type_details(scope):
        if info["type"] == iri:
            body = {
                "id": iri,
                "type": "EntityTypeInfo",
                "typeName": tm.compact(iri),
                "entityCount": info["count"],
                "attributeDetails": [
                    {
                        "id": attr,
                        "type": "Attribute",
                        "attributeName": tm.compact(attr),
                        "attributeTypes": sorted(kinds),
                    }
                    for attr, kinds in sorted(info["attrs"].items())
                ],
            }
            return json_response(request, body, tm)
    raise Problem(404, "ResourceNotFound", "Resource not found", f"No entities of type {type_name}")


@router.get("/attributes")
def list_attributes(request: Request, scope: ReadScope) -> Response:
    tm = _request_tm(request)
    details = _broker(request).attribute_details(scope)
    if _details(request):
        body: Any = [_attribute_body(tm, info) for info in details]
    else:
        body = {
            "id": f"urn:ngsi-ld:AttributeList:{uuid.uuid4()}",
            "type": "AttributeList",
            "attributeList": [tm.compact(info["attr"]) for info in details],
        }
    return json_response(request, body, tm)


@router.get("/attributes/{attr}")
def attribute_info(request: Request, scope: ReadScope, attr: str) -> Response:
    tm = _request_tm(request)
    iri = tm.expand(check_name(attr))
    for info in _broker(request).attribute_details(scope):
        if info["attr"] == iri:
            return json_response(request, _attribute_body(tm, info), tm)
    raise Problem(404, "ResourceNotFound", "Resource not found", f"No attribute {attr}")


def _attribute_body(tm: TermMap, info: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": info["attr"],
        "type": "Attribute",
        "attributeName": tm.compact(info["attr"]),
        "attributeCount": info["count"],
        "attributeTypes": sorted(info["kinds"]),
        "typeNames": sorted(tm.compact(t) for t in info["types"]),
    }


# --- @contexts -----------------------------------------------------------------------


@router.post("/jsonldContexts", status_code=201)
async def add_context(request: Request, _scope: WriteScope) -> Response:
    body = await read_json(request)
    url = await run_in_threadpool(_broker(request).contexts.host, body)
    return Response(status_code=201, headers={"Location": f"/ngsi-ld/v1/jsonldContexts/{url}"})


@router.get("/jsonldContexts")
def list_contexts(request: Request, _scope: ReadScope) -> Response:
    items = _broker(request).contexts.listing(request.query_params.get("kind"))
    if _details(request):
        body: Any = [
            {**i, "createdAt": i["createdAt"].isoformat() if i["createdAt"] else None}
            for i in items
        ]
    else:
        body = [i["url"] for i in items]
    return Response(orjson.dumps(body), media_type=JSON)


@router.get("/jsonldContexts/{context_id:path}")
def get_context(request: Request, _scope: ReadScope, context_id: str) -> Response:
    return Response(orjson.dumps(_broker(request).contexts.stored(context_id)), media_type=JSON_LD)


@router.delete("/jsonldContexts/{context_id:path}", status_code=204)
def delete_context(request: Request, _scope: WriteScope, context_id: str) -> Response:
    _broker(request).contexts.remove(context_id)
    return Response(status_code=204)
