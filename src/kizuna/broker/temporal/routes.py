"""HTTP routes of the NGSI-LD temporal API (/ngsi-ld/v1/temporal/entities)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from kizuna.broker.context import TermMap
from kizuna.broker.http import (
    context_link,
    json_response,
    read_json,
    resolve_term_map,
    split_list,
    term_map_for_body,
    without_context,
)
from kizuna.broker.ngsild import check_name, check_uri
from kizuna.broker.temporal.service import Temporal, TemporalQuery, make_query
from kizuna.problems import Problem, bad_request
from kizuna.tenancy.deps import ReadScope, WriteScope

router = APIRouter(prefix="/ngsi-ld/v1/temporal", tags=["NGSI-LD temporal"])
_OPTIONS = {"temporalValues", "aggregatedValues", "sysAttrs", "normalized"}


def _temporal(request: Request) -> Temporal:
    return request.app.state.services.temporal


def _contexts(request: Request) -> Any:
    return request.app.state.services.broker.contexts


def _no_content(
    request: Request, status: int = 204, headers: dict[str, str] | None = None
) -> Response:
    out = dict(headers or {})
    if request.headers.get("ngsild-tenant"):
        out["NGSILD-Tenant"] = request.headers["ngsild-tenant"]
    return Response(status_code=status, headers=out)


def _query(request: Request, tm: TermMap) -> TemporalQuery:
    params = request.query_params
    options = set(split_list(params.get("options"), "options") or [])
    fmt = params.get("format")
    if fmt:
        options.add(fmt)
    unknown = options - _OPTIONS
    if unknown:
        raise bad_request(f"Unknown options: {', '.join(sorted(unknown))}")
    aggregated = "aggregatedValues" in options
    if aggregated and "temporalValues" in options:
        raise bad_request("temporalValues and aggregatedValues cannot be combined")
    query = make_query(
        timerel=params.get("timerel"),
        time_at=params.get("timeAt"),
        end_time_at=params.get("endTimeAt"),
        timeproperty=params.get("timeproperty"),
        last_n=params.get("lastN"),
        aggr_methods=params.get("aggrMethods"),
        aggr_period=params.get("aggrPeriodDuration"),
        aggregated=aggregated,
    )
    query.temporal_values = "temporalValues" in options
    query.sys_attrs = "sysAttrs" in options
    attrs = split_list(params.get("attrs"), "attrs")
    if attrs:
        query.attrs = [tm.expand(check_name(a)) for a in attrs]
    datasets = split_list(params.get("datasetId"), "datasetId")
    if datasets:
        query.dataset_ids = datasets
    return query


def _paging(request: Request, query: TemporalQuery) -> None:
    settings = request.app.state.services.settings
    params = request.query_params
    for name, default in (("limit", settings.default_page_limit), ("offset", 0)):
        raw = params.get(name)
        if raw is not None and not raw.isdigit():
            raise bad_request(f"{name} must be a whole number")
        setattr(query, name, int(raw) if raw is not None else default)
    if query.limit > settings.max_page_limit:
        raise Problem(
            403,
            "TooManyResults",
            "Too many results",
            f"limit must be at most {settings.max_page_limit}",
        )
    query.count = (params.get("count") or "false").lower() == "true"


@router.get("/entities/{entity_id}")
async def retrieve_temporal(request: Request, entity_id: str, scope: ReadScope) -> Response:
    check_uri(entity_id, "Entity id")
    tm = await resolve_term_map(_contexts(request), context_link(request))
    query = _query(request, tm)
    body = await run_in_threadpool(_temporal(request).retrieve, scope, tm, entity_id, query)
    return json_response(request, body, tm)


@router.get("/entities")
@router.get("/entities/", include_in_schema=False)
async def query_temporal(request: Request, scope: ReadScope) -> Response:
    tm = await resolve_term_map(_contexts(request), context_link(request))
    params = request.query_params
    query = _query(request, tm)
    _paging(request, query)
    ids = split_list(params.get("id"), "id")
    if ids:
        query.ids = [check_uri(i, "Entity id") for i in ids]
    query.id_pattern = params.get("idPattern")
    types = split_list(params.get("type"), "type")
    if types:
        query.types = [tm.expand(t) for t in types]
    if not (query.ids or query.id_pattern or query.types or query.attrs):
        raise bad_request("A temporal query needs type, id, idPattern or attrs")
    if params.get("q") is not None or params.get("georel") is not None:
        raise Problem(
            501,
            "OperationNotSupported",
            "Not supported",
            "q and geo-queries are not supported on the temporal API yet",
        )
    entities, count = await run_in_threadpool(_temporal(request).query, scope, tm, query)
    headers = {"NGSILD-Results-Count": str(count)} if count is not None else None
    return json_response(request, entities, tm, headers=headers)


@router.post("/entities", status_code=201)
@router.post("/entities/", status_code=201, include_in_schema=False)
async def create_temporal(request: Request, scope: WriteScope) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict) or not body:
        raise bad_request("The body must be a JSON object (one temporal entity)")
    tm = await term_map_for_body(_contexts(request), request, body)
    created = await run_in_threadpool(
        _temporal(request).create_or_add, scope, tm, without_context(body)
    )
    if created:
        location = f"/ngsi-ld/v1/temporal/entities/{body.get('id')}"
        return _no_content(request, 201, {"Location": location})
    return _no_content(request)


@router.post("/entities/{entity_id}/attrs")
@router.post("/entities/{entity_id}/attrs/", include_in_schema=False)
async def append_temporal(request: Request, entity_id: str, scope: WriteScope) -> Response:
    check_uri(entity_id, "Entity id")
    body = await read_json(request)
    tm = await term_map_for_body(_contexts(request), request, body)
    await run_in_threadpool(_temporal(request).append, scope, tm, entity_id, without_context(body))
    return _no_content(request)


@router.delete("/entities/{entity_id}")
async def delete_temporal(request: Request, entity_id: str, scope: WriteScope) -> Response:
    check_uri(entity_id, "Entity id")
    await run_in_threadpool(_temporal(request).delete_entity, scope, entity_id)
    return _no_content(request)


@router.delete("/entities/{entity_id}/attrs/{attr}")
async def delete_temporal_attr(
    request: Request, entity_id: str, attr: str, scope: WriteScope
) -> Response:
    check_uri(entity_id, "Entity id")
    tm = await resolve_term_map(_contexts(request), context_link(request))
    params = request.query_params
    delete_all = (params.get("deleteAll") or "false").lower() == "true"
    dataset = params.get("datasetId")
    iri = tm.expand(check_name(attr))
    await run_in_threadpool(
        _temporal(request).delete_attribute, scope, entity_id, iri, dataset, delete_all
    )
    return _no_content(request)


@router.patch("/entities/{entity_id}/attrs/{attr}/{instance_id}")
async def modify_instance(
    request: Request, entity_id: str, attr: str, instance_id: str, scope: WriteScope
) -> Response:
    check_uri(entity_id, "Entity id")
    body = await read_json(request)
    tm = await term_map_for_body(_contexts(request), request, body)
    iri = tm.expand(check_name(attr))
    await run_in_threadpool(
        _temporal(request).modify_instance,
        scope,
        tm,
        entity_id,
        iri,
        instance_id,
        without_context(body),
    )
    return _no_content(request)


@router.delete("/entities/{entity_id}/attrs/{attr}/{instance_id}")
async def delete_instance(
    request: Request, entity_id: str, attr: str, instance_id: str, scope: WriteScope
) -> Response:
    check_uri(entity_id, "Entity id")
    tm = await resolve_term_map(_contexts(request), context_link(request))
    iri = tm.expand(check_name(attr))
    await run_in_threadpool(_temporal(request).delete_instance, scope, entity_id, iri, instance_id)
    return _no_content(request)
