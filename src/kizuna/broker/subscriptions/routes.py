"""HTTP routes of NGSI-LD subscriptions: /ngsi-ld/v1/subscriptions (§6.10, §6.11)."""

from __future__ import annotations

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from kizuna.broker.http import (
    JSON,
    JSON_LD,
    MERGE_PATCH,
    context_link,
    has_option,
    json_response,
    page_params,
    read_json,
    resolve_term_map,
    term_map_for_body,
    without_context,
)
from kizuna.broker.ngsild import check_uri
from kizuna.broker.subscriptions.service import Subscriptions
from kizuna.routing import ModuleRouter
from kizuna.tenancy.deps import ReadScope, WriteScope

router = ModuleRouter(prefix="/ngsi-ld/v1", tags=["NGSI-LD subscriptions"])


def _subs(request: Request) -> Subscriptions:
    return request.app.state.services.subscriptions


def _tenant_headers(request: Request, headers: dict[str, str] | None = None) -> dict[str, str]:
    out = dict(headers or {})
    if request.headers.get("ngsild-tenant"):
        out["NGSILD-Tenant"] = request.headers["ngsild-tenant"]
    return out


def _check_id(sub_id: str) -> str:
    return check_uri(sub_id, "Subscription id")


@router.post("/subscriptions", status_code=201)
@router.post("/subscriptions/", status_code=201, include_in_schema=False)
async def create_subscription(request: Request, scope: WriteScope) -> Response:
    body = await read_json(request)
    subs = _subs(request)
    tm = await term_map_for_body(subs.contexts, request, body)
    sub_id = await run_in_threadpool(subs.create, scope, tm, without_context(body))
    headers = _tenant_headers(request, {"Location": f"/ngsi-ld/v1/subscriptions/{sub_id}"})
    return Response(status_code=201, headers=headers)


@router.get("/subscriptions")
@router.get("/subscriptions/", include_in_schema=False)
async def query_subscriptions(request: Request, scope: ReadScope) -> Response:
    subs = _subs(request)
    tm = await resolve_term_map(subs.contexts, context_link(request))
    limit, offset, count = page_params(request)
    page = await run_in_threadpool(
        subs.list, scope, tm, limit, offset, sys_attrs=has_option(request, "sysAttrs")
    )
    headers: dict[str, str] = {}
    if count:
        headers["NGSILD-Results-Count"] = str(page.count)
    links = []
    kind = 'type="application/ld+json"'
    if offset > 0:
        prev = f"/ngsi-ld/v1/subscriptions?limit={limit}&offset={max(0, offset - limit)}"
        links.append(f'<{prev}>;rel="prev";{kind}')
    if limit > 0 and offset + len(page.items) < page.count:
        nxt = f"/ngsi-ld/v1/subscriptions?limit={limit}&offset={offset + limit}"
        links.append(f'<{nxt}>;rel="next";{kind}')
    if links:
        headers["Link"] = ", ".join(links)
    return json_response(request, page.items, tm, headers=headers)


@router.get("/subscriptions/{sub_id}")
async def retrieve_subscription(request: Request, scope: ReadScope, sub_id: str) -> Response:
    _check_id(sub_id)
    subs = _subs(request)
    tm = await resolve_term_map(subs.contexts, context_link(request))
    body = await run_in_threadpool(
        subs.retrieve, scope, tm, sub_id, sys_attrs=has_option(request, "sysAttrs")
    )
    return json_response(request, body, tm)


@router.patch("/subscriptions/{sub_id}", status_code=204)
async def update_subscription(request: Request, scope: WriteScope, sub_id: str) -> Response:
    _check_id(sub_id)
    body = await read_json(request, (JSON, JSON_LD, MERGE_PATCH))
    subs = _subs(request)
    tm = await term_map_for_body(subs.contexts, request, body)
    await run_in_threadpool(subs.update, scope, tm, sub_id, without_context(body))
    return Response(status_code=204, headers=_tenant_headers(request))


@router.delete("/subscriptions/{sub_id}", status_code=204)
async def delete_subscription(request: Request, scope: WriteScope, sub_id: str) -> Response:
    _check_id(sub_id)
    await run_in_threadpool(_subs(request).delete, scope, sub_id)
    return Response(status_code=204, headers=_tenant_headers(request))
