"""NGSI-LD HTTP conventions: content types, the @context Link header, options, responses."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from kizuna.broker.context import CORE_CONTEXT_URL, ContextStore, TermMap
from kizuna.broker.ngsild import Rendering, check_name
from kizuna.broker.projection import Projection, parse_projection
from kizuna.problems import Problem, bad_request, invalid_request

JSON = "application/json"
JSON_LD = "application/ld+json"
GEO_JSON = "application/geo+json"
MERGE_PATCH = "application/merge-patch+json"
CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"
_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")
_FORMATS = ("normalized", "concise", "keyValues")
_FORMAT_ALIASES = {"simplified": "keyValues"}


def media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def context_link(request: Request) -> str | None:
    """The @context URL of a Link header with the JSON-LD context relation, if any."""
    header = request.headers.get("link")
    if not header:
        return None
    for match in _LINK.finditer(header):
        params = match.group(2).replace(" ", "")
        if f'rel="{CONTEXT_REL}"' in params or f"rel={CONTEXT_REL}" in params:
            return match.group(1)
    raise bad_request("The Link header has no JSON-LD @context relation")


async def read_json(request: Request, allowed: tuple[str, ...] = (JSON, JSON_LD)) -> Any:
    ctype = media_type(request.headers.get("content-type"))
    if ctype not in allowed:
        raise Problem(
            415,
            "urn:kizuna:errors:UnsupportedMediaType",
            "Unsupported media type",
            f"Content-Type must be one of {', '.join(allowed)}",
        )
    raw = await request.body()
    if not raw.strip():
        raise invalid_request("The request body is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"The request body is not valid JSON: {exc}") from None


def body_context(request: Request, body: Any) -> Any:
    """The @context that applies to a request body, by its content type.

    application/ld+json carries it in the body (required); application/json gets it
    from the Link header and must not carry one in the body.
    """
    items = body if isinstance(body, list) else [body]
    if _is_json_ld(request):
        for item in items:
            _own_context(item)
        return items[0]["@context"] if items else None
    for item in items:
        _no_inline_context(item)
    return context_link(request)


def without_context(body: Any) -> Any:
    """A JSON object body without its @context member (anything else unchanged)."""
    if isinstance(body, dict):
        return {k: v for k, v in body.items() if k != "@context"}
    return body


def _is_json_ld(request: Request) -> bool:
    if media_type(request.headers.get("content-type")) != JSON_LD:
        return False
    if request.headers.get("link"):
        raise bad_request("application/ld+json carries its @context in the body, not a Link header")
    return True


def _own_context(item: Any) -> Any:
    if not isinstance(item, dict) or "@context" not in item:
        raise bad_request("An application/ld+json body must carry its @context")
    return item["@context"]


def _no_inline_context(item: Any) -> None:
    if isinstance(item, dict) and "@context" in item:
        raise bad_request("@context in an application/json body; use the Link header instead")


async def resolve_term_map(contexts: ContextStore, context: Any) -> TermMap:
    """A TermMap without blocking the event loop when a document must be fetched."""
    return contexts.cached(context) or await run_in_threadpool(contexts.term_map, context)


async def term_map_for_body(contexts: ContextStore, request: Request, body: Any) -> TermMap:
    return await resolve_term_map(contexts, body_context(request, body))


async def term_map_of_item(contexts: ContextStore, request: Request) -> Callable[[Any], TermMap]:
    """For batches: each application/ld+json entity carries its own @context."""
    if _is_json_ld(request):
        return lambda item: contexts.term_map(_own_context(item))
    shared = await resolve_term_map(contexts, context_link(request))

    def same(item: Any) -> TermMap:
        _no_inline_context(item)
        return shared

    return same


def accepted(request: Request) -> str:
    """The response media type from the Accept header (406 when none is offered)."""
    header = request.headers.get("accept") or "*/*"
    best, best_q = None, -1.0
    for part in header.split(","):
        pieces = [p.strip() for p in part.split(";")]
        kind, q = pieces[0].lower(), 1.0
        for param in pieces[1:]:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        choice = {
            JSON: JSON,
            JSON_LD: JSON_LD,
            GEO_JSON: GEO_JSON,
            "*/*": JSON,
            "application/*": JSON,
        }.get(kind)
        if choice and q > best_q:
            best, best_q = choice, q
    if best is None:
        raise Problem(
            406,
            "urn:kizuna:errors:NotAcceptable",
            "Not acceptable",
            "Accept application/json, application/ld+json or application/geo+json",
        )
    return best


def split_list(value: str | None, what: str) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",")]
    if not all(items):
        raise bad_request(f"Empty item in {what}")
    return items


def rendering(params: Mapping[str, str], tm: TermMap) -> Rendering:
    """How to represent entities, from options / format / attrs / pick / omit / join."""
    options = {
        _FORMAT_ALIASES.get(o, o) for o in split_list(params.get("options"), "options") or []
    }
    unknown = options - {*_FORMATS, "sysAttrs", "noOverwrite", "replace", "update"}
    if unknown:
        raise invalid_request(f"Unknown options: {', '.join(sorted(unknown))}")
    if params.get("format"):
        # format, when given, takes precedence over the format options.
        chosen = _FORMAT_ALIASES.get(params["format"], params["format"])
        if chosen not in _FORMATS:
            raise invalid_request(f"Unknown format {params['format']!r}")
    else:
        formats = [f for f in _FORMATS if f in options]
        if len(formats) > 1:
            raise bad_request("Conflicting representation options: " + ", ".join(formats))
        chosen = formats[0] if formats else "normalized"
    attrs = split_list(params.get("attrs"), "attrs")
    if attrs is not None and (params.get("pick") is not None or params.get("omit") is not None):
        raise bad_request("attrs cannot be combined with pick or omit")
    for name in attrs or []:
        if name in ("id", "type", "@context", "scope"):
            raise bad_request(f"{name!r} is not an attribute name")
        check_name(name)
    pick = parse_projection(params["pick"], "pick") if params.get("pick") is not None else None
    omit = parse_projection(params["omit"], "omit") if params.get("omit") is not None else None
    for projection in (pick, omit):
        for name in _member_names(projection):
            check_name(name, "Member name")
    if pick is not None and omit is not None and set(pick.members) & set(omit.members):
        raise bad_request("The same member is in pick and omit")
    join = params.get("join")
    if join is not None and join not in ("inline", "flat", "@none"):
        raise bad_request("join must be inline, flat or @none")
    dataset_ids = split_list(params.get("datasetId"), "datasetId")
    return Rendering(
        format=chosen,
        sys_attrs="sysAttrs" in options,
        attrs=frozenset(tm.expand(a) for a in attrs) if attrs is not None else None,
        pick=pick,
        omit=omit,
        lang=params.get("lang"),
        dataset_ids=frozenset(dataset_ids) if dataset_ids is not None else None,
        join=None if join in (None, "@none") else join,
        join_level=whole_number(params.get("joinLevel"), "joinLevel", 1, positive=True),
    )


def _member_names(projection: Projection | None) -> list[str]:
    if projection is None:
        return []
    names = list(projection.members)
    for nested in projection.members.values():
        names += _member_names(nested)
    return names


def whole_number(raw: str | None, name: str, default: int, *, positive: bool = False) -> int:
    """A whole-number URL parameter: ASCII digits only (``str.isdigit`` also takes "²",
    which ``int`` refuses)."""
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or (positive and int(raw) < 1):
        kind = "positive" if positive else "non-negative"
        raise bad_request(f"{name} must be a {kind} whole number")
    return int(raw)


# An offset past every row asks for the same empty page as this one, which keeps offset +
# limit within the 64-bit integers of SQLite and PostgreSQL (a larger one made SQLite fail).
MAX_OFFSET = 2**62


def page_params(request: Request) -> tuple[int, int, bool]:
    """limit, offset and count of a query operation (NGSI-LD pagination)."""
    params = request.query_params
    settings = request.app.state.services.settings
    limit = whole_number(params.get("limit"), "limit", settings.default_page_limit)
    offset = min(whole_number(params.get("offset"), "offset", 0), MAX_OFFSET)
    count = (params.get("count") or "false").lower() == "true"
    if limit > settings.max_page_limit:
        raise Problem(
            403,
            "TooManyResults",
            "Too many results",
            f"limit must be at most {settings.max_page_limit}",
        )
    if limit == 0 and not count:
        raise bad_request("limit=0 is only allowed together with count=true")
    return limit, offset, count


def has_option(request: Request, option: str) -> bool:
    return option in (split_list(request.query_params.get("options"), "options") or [])


def json_response(
    request: Request,
    content: Any,
    tm: TermMap,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """Serialise a body the NGSI-LD way for the negotiated media type."""
    kind = accepted(request)
    out_headers = dict(headers or {})
    context = _response_context(tm)
    if kind == JSON_LD:
        if isinstance(content, list):
            content = [{**item, "@context": context} for item in content]
        elif isinstance(content, dict):
            content = {**content, "@context": context}
    elif kind == GEO_JSON and isinstance(content, dict):
        content = {**content, "@context": context}
    else:
        link = context if isinstance(context, str) else CORE_CONTEXT_URL
        context_header = f'<{link}>; rel="{CONTEXT_REL}"; type="{JSON_LD}"'
        # Pagination links given by the caller share the one Link header.
        others = out_headers.get("Link")
        out_headers["Link"] = f"{context_header}, {others}" if others else context_header
    tenant = request.headers.get("ngsild-tenant")
    if tenant:
        out_headers["NGSILD-Tenant"] = tenant
    return Response(
        orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type=kind if kind != GEO_JSON else GEO_JSON,
        headers=out_headers,
    )


def _response_context(tm: TermMap) -> Any:
    if not tm.source:
        return CORE_CONTEXT_URL
    if len(tm.source) == 1:
        return tm.source[0]
    return tm.source
