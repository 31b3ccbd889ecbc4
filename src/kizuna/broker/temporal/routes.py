"""HTTP routes of the NGSI-LD temporal API (/ngsi-ld/v1/temporal/...)."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from kizuna.broker.context import TermMap
from kizuna.broker.http import (
    context_link,
    json_response,
    read_json,
    resolve_term_map,
    term_map_for_body,
    without_context,
)
from kizuna.broker.ngsild import check_uri
from kizuna.broker.routes import (
    _page_links,
    _query_body_params,
    _query_from_body,
    _query_from_params,
)
from kizuna.broker.temporal.params import temporal_query, temporal_rendering
from kizuna.broker.temporal.service import TemporalResult, TemporalService
from kizuna.problems import Problem, bad_request
from kizuna.routing import ModuleRouter
from kizuna.tenancy.deps import ReadScope, WriteScope

router = ModuleRouter(prefix="/ngsi-ld/v1/temporal", tags=["NGSI-LD temporal"])


def _temporal(request: Request) -> TemporalService:
    return request.app.state.services.temporal


def _tenant_headers(request: Request, headers: dict[str, str] | None = None) -> dict[str, str]:
    out = dict(headers or {})
    if request.headers.get("ngsild-tenant"):
        out["NGSILD-Tenant"] = request.headers["ngsild-tenant"]
    return out


def _no_content(request: Request, status: int = 204, headers: dict[str, str] | None = None):
    return Response(status_code=status, headers=_tenant_headers(request, headers))


async def _link_tm(request: Request) -> TermMap:
    return await resolve_term_map(_temporal(request).broker.contexts, context_link(request))


def _respond(request: Request, result: TemporalResult, body: Any, tm: TermMap, **extra: str):
    headers = dict(extra)
    status = 200
    if result.content_range is not None:
        headers["Content-Range"] = result.content_range
        status = 206
    return json_response(request, body, tm, status=status, headers=headers)


# --- temporal entities ------------------------------------------------------------------


@router.post("/entities")
@router.post("/entities/", include_in_schema=False)
async def create_temporal_entity(request: Request, scope: WriteScope) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict) or not body:
        raise Problem(400, "InvalidRequest", "Invalid request", "The body must be an entity")
    temporal = _temporal(request)
    tm = await term_map_for_body(temporal.broker.contexts, request, body)
    created = await run_in_threadpool(temporal.create_or_update, scope, tm, without_context(body))
    if created:
        location = f"/ngsi-ld/v1/temporal/entities/{body['id']}"
        return _no_content(request, 201, {"Location": location})
    return _no_content(request)


@router.get("/entities")
@router.get("/entities/", include_in_schema=False)
async def query_temporal_entities(request: Request, scope: ReadScope) -> Response:
    tm = await _link_tm(request)
    params = request.query_params
    query = _query_from_params(request, tm)
    tq = temporal_query(params)
    how = temporal_rendering(params, tm)
    return await _query_response(request, scope, tm, query, tq, how)


@router.post("/entityOperations/query")
async def query_temporal_entities_post(request: Request, scope: ReadScope) -> Response:
    body = await read_json(request)
    temporal = _temporal(request)
    tm = await term_map_for_body(temporal.broker.contexts, request, body)
    if not isinstance(body, dict) or body.get("type") != "Query":
        raise bad_request('The body must be a Query object ("type": "Query")')
    query = _query_from_body(request, body)
    temporal_q = body.get("temporalQ") or {}
    if not isinstance(temporal_q, dict):
        raise bad_request("temporalQ must be an object")
    tq = temporal_query(temporal_q)
    how = temporal_rendering(_query_body_params(request, body), tm)
    return await _query_response(request, scope, tm, query, tq, how)


async def _query_response(
    request: Request, scope: Any, tm: TermMap, query: Any, tq: Any, how: Any
) -> Response:
    result = await run_in_threadpool(_temporal(request).query, scope, tm, query, tq, how)
    headers: dict[str, str] = {}
    if result.count is not None:
        headers["NGSILD-Results-Count"] = str(result.count)
    links = _page_links(request, query, len(result.entities), result.count)
    if links:
        headers["Link"] = links
    return _respond(request, result, result.entities, tm, **headers)


@router.get("/entities/{entity_id}")
async def retrieve_temporal_entity(request: Request, scope: ReadScope, entity_id: str) -> Response:
    check_uri(entity_id, "Entity id")
    tm = await _link_tm(request)
    params = request.query_params
    tq = temporal_query(params)
    how = temporal_rendering(params, tm)
    result = await run_in_threadpool(_temporal(request).retrieve, scope, tm, entity_id, tq, how)
    return _respond(request, result, result.entities[0], tm)


@router.delete("/entities/{entity_id}", status_code=204)
def delete_temporal_entity(request: Request, scope: WriteScope, entity_id: str) -> Response:
    check_uri(entity_id, "Entity id")
    _temporal(request).delete_entity(scope, entity_id)
    return _no_content(request)


@router.post("/entities/{entity_id}/attrs", status_code=204)
async def append_temporal_attributes(
    request: Request, scope: WriteScope, entity_id: str
) -> Response:
    check_uri(entity_id, "Entity id")
    body = await read_json(request)
    temporal = _temporal(request)
    tm = await term_map_for_body(temporal.broker.contexts, request, body)
    await run_in_threadpool(temporal.append, scope, tm, entity_id, without_context(body))
    return _no_content(request)


@router.delete("/entities/{entity_id}/attrs/{attr}", status_code=204)
async def delete_temporal_attribute(
    request: Request, scope: WriteScope, entity_id: str, attr: str
) -> Response:
    check_uri(entity_id, "Entity id")
    params = request.query_params
    dataset_id = params.get("datasetId") or None
    if dataset_id is not None:
        check_uri(dataset_id, "datasetId")
    tm = await _link_tm(request)
    await run_in_threadpool(
        _temporal(request).delete_attribute,
        scope,
        tm,
        entity_id,
        attr,
        dataset_id=dataset_id,
        delete_all=(params.get("deleteAll") or "false").lower() == "true",
    )
    return _no_content(request)


@router.patch("/entities/{entity_id}/attrs/{attr}/{instance_id}", status_code=204)
async def modify_temporal_instance(
    request: Request, scope: WriteScope, entity_id: str, attr: str, instance_id: str
) -> Response:
    check_uri(entity_id, "Entity id")
    body = await read_json(request)
    temporal = _temporal(request)
    tm = await term_map_for_body(temporal.broker.contexts, request, body)
    await run_in_threadpool(
        temporal.modify_instance, scope, tm, entity_id, attr, instance_id, without_context(body)
    )
    return _no_content(request)


@router.delete("/entities/{entity_id}/attrs/{attr}/{instance_id}", status_code=204)
async def delete_temporal_instance(
    request: Request, scope: WriteScope, entity_id: str, attr: str, instance_id: str
) -> Response:
    check_uri(entity_id, "Entity id")
    tm = await _link_tm(request)
    await run_in_threadpool(
        _temporal(request).delete_instance, scope, tm, entity_id, attr, instance_id
    )
    return _no_content(request)


# --- malformed paths (empty segments): the spec's 400 / 405 instead of a bare 404 ----------


def _not_allowed() -> Problem:
    return Problem(405, "urn:kizuna:errors:MethodNotAllowed", "Method not allowed")


@router.api_route(
    "/entities/{rest:path}", methods=["GET", "POST", "PATCH", "DELETE"], include_in_schema=False
)
def malformed_temporal_path(request: Request, rest: str) -> Response:
    segments = rest.split("/")
    if request.method == "DELETE" and rest == "":
        raise _not_allowed()
    if request.method == "PATCH" and segments[0]:
        raise _not_allowed()  # an attribute name or instanceId is missing
    if not segments[0]:
        raise bad_request("The entity id is missing from the URL")
    raise bad_request(f"Malformed temporal entity path {rest!r}")
