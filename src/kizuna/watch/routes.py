"""REST API of the watch module: /watch/v1/...

People authenticate as everywhere (bearer token, OIDC); the tenant is the
``NGSILD-Tenant`` header. Devices (phones uploading a batch, gauges) authenticate with
``Authorization: Device <device id>:<secret>``. Who may see what is decided in
``service.py`` / ``privacy.py``, not here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import Body, Query, Request, Response

from kizuna.problems import Problem, bad_request
from kizuna.routing import ModuleRouter
from kizuna.tenancy.deps import ReadScope
from kizuna.tenancy.service import DEFAULT_TENANT
from kizuna.watch import schemas
from kizuna.watch.devices import Rejected
from kizuna.watch.privacy import need_person, need_staff
from kizuna.watch.service import WatchService

router = ModuleRouter(prefix="/watch/v1", tags=["watch (mimamori, flood)"])


def _watch(request: Request) -> WatchService:
    return request.app.state.services.watch


def _tenant(request: Request) -> str:
    tenant = (request.headers.get("ngsild-tenant") or DEFAULT_TENANT).strip()
    return tenant


# --- devices ------------------------------------------------------------------------


@router.post("/devices", status_code=201, response_model=schemas.DeviceCreated)
def register_device(request: Request, scope: ReadScope, body: schemas.DeviceCreate) -> Any:
    """Staff register a device; its credential is shown once."""
    return _watch(request).register_device(scope.principal, scope.tenant, body)


@router.get("/devices", response_model=list[schemas.DevicePublic])
def list_devices(request: Request, scope: ReadScope) -> Any:
    return _watch(request).list_devices(scope.principal, scope.tenant)


@router.post("/detections", response_model=schemas.IngestResult)
def upload_detections(request: Request, body: Annotated[dict[str, Any] | list[Any], Body()]) -> Any:
    """A phone's (or any device's) batch upload: ``{"detections": [...]}``.

    The answer holds counts only; nothing about whose tags were seen.
    """
    watch = _watch(request)
    tenant = _tenant(request)
    device = watch.device_from_header(tenant, request.headers.get("authorization"))
    if device.kind == "gauge":
        raise bad_request("Gauges post readings to /watch/v1/gauges/{id}/readings")
    items = body.get("detections") if isinstance(body, dict) else body
    if not isinstance(items, list) or not items:
        raise bad_request("Send {'detections': [...]} with at least one detection")
    if len(items) > 1000:
        raise Problem(413, "urn:kizuna:errors:PayloadTooLarge", "Too many detections", "≤ 1000")
    prepared = watch.prepare(tenant, device, items)
    stored = watch.store([prepared])[0]
    return schemas.IngestResult(
        accepted=stored.accepted,
        duplicates=stored.duplicates,
        rejected=len(prepared.errors),
        errors=prepared.errors[:50],
    )


@router.post("/gauges/{gauge_id}/readings", status_code=201)
def post_reading(
    request: Request, gauge_id: str, body: Annotated[dict[str, Any], Body()]
) -> Response:
    watch = _watch(request)
    tenant = _tenant(request)
    device = watch.device_from_header(tenant, request.headers.get("authorization"))
    if device.id != gauge_id:
        raise Problem(403, "urn:kizuna:errors:Forbidden", "Not allowed", "Not this gauge's key")
    try:
        stored = watch.flood.record_reading(device, body)
    except Rejected as exc:
        raise bad_request(f"{exc.reason}: {exc.detail}") from None
    return Response(status_code=201 if stored else 200)


@router.get("/ingest/status")
def ingest_status(request: Request, scope: ReadScope) -> dict[str, Any]:
    need_staff(scope.principal, scope.tenant)
    runtime = getattr(request.app.state, "watch_runtime", None)
    ingestor = runtime.ingestor if runtime else None
    if ingestor is None:
        return {"mqtt": "not running in this process"}
    return {
        "mqtt": "connected" if ingestor.connected.is_set() else "reconnecting",
        **ingestor.stats.snapshot(),
    }


# --- tags and guardians ---------------------------------------------------------------


@router.post("/tags/issue", status_code=201, response_model=list[schemas.IssuedTag])
def issue_tags(request: Request, scope: ReadScope, body: schemas.TagIssue) -> Any:
    return _watch(request).issue_tags(scope.principal, scope.tenant, body)


@router.get("/staff/tags", response_model=list[schemas.StaffTagRow])
def staff_tags(request: Request, scope: ReadScope) -> Any:
    """Staff: tag ids and status, never the person."""
    return _watch(request).staff_tags(scope.principal, scope.tenant)


@router.post("/tags/claim", status_code=201, response_model=schemas.TagPublic)
def claim_tag(request: Request, scope: ReadScope, body: schemas.TagClaim) -> Any:
    return _watch(request).claim_tag(scope.principal, scope.tenant, body)


@router.get("/tags", response_model=list[schemas.TagPublic])
def my_tags(request: Request, scope: ReadScope) -> Any:
    """The caller's own tags (as a guardian)."""
    need_person(scope.principal)
    return _watch(request).my_tags(scope.principal, scope.tenant)


@router.get("/tags/{tag_id}", response_model=schemas.TagPublic)
def get_tag(request: Request, scope: ReadScope, tag_id: str, reason: str | None = None) -> Any:
    """Guardians; staff only with ``?reason=`` (recorded and shown to the guardians)."""
    return _watch(request).tag(scope.principal, scope.tenant, tag_id, reason)


@router.patch("/tags/{tag_id}/settings", response_model=schemas.TagPublic)
def tag_settings(request: Request, scope: ReadScope, tag_id: str, body: schemas.TagSettings) -> Any:
    return _watch(request).update_settings(scope.principal, scope.tenant, tag_id, body)


@router.post("/tags/{tag_id}/guardians", status_code=204)
def add_guardian(
    request: Request, scope: ReadScope, tag_id: str, body: schemas.GuardianAdd
) -> Response:
    _watch(request).add_guardian(scope.principal, scope.tenant, tag_id, body)
    return Response(status_code=204)


@router.get("/tags/{tag_id}/trail", response_model=list[schemas.TrailPoint])
def trail(
    request: Request,
    scope: ReadScope,
    tag_id: str,
    day: Annotated[date | None, Query(alias="date")] = None,
) -> Any:
    """One day (JST) of detections: guardians; staff only in missing-person mode (logged)."""
    return _watch(request).trail(scope.principal, scope.tenant, tag_id, day)


@router.get("/tags/{tag_id}/places", response_model=list[schemas.PlacePublic])
def list_places(request: Request, scope: ReadScope, tag_id: str) -> Any:
    return _watch(request).places(scope.principal, scope.tenant, tag_id)


@router.post("/tags/{tag_id}/places", status_code=201, response_model=schemas.PlacePublic)
def add_place(request: Request, scope: ReadScope, tag_id: str, body: schemas.PlaceCreate) -> Any:
    return _watch(request).add_place(scope.principal, scope.tenant, tag_id, body)


@router.delete("/tags/{tag_id}/places/{place_id}", status_code=204)
def delete_place(request: Request, scope: ReadScope, tag_id: str, place_id: int) -> Response:
    _watch(request).delete_place(scope.principal, scope.tenant, tag_id, place_id)
    return Response(status_code=204)


@router.get("/tags/{tag_id}/access-log", response_model=list[schemas.AccessLogEntry])
def tag_access_log(request: Request, scope: ReadScope, tag_id: str) -> Any:
    """Every staff look at this tag's person or positions, for its guardians."""
    return _watch(request).access_log(scope.principal, scope.tenant, tag_id)


@router.get("/tags/{tag_id}/missing-cases", response_model=list[schemas.MissingCasePublic])
def tag_cases(request: Request, scope: ReadScope, tag_id: str) -> Any:
    return _watch(request).missing_cases(scope.principal, scope.tenant, tag_id)


# --- notifications ----------------------------------------------------------------------


@router.get("/notifications", response_model=list[schemas.NotificationPublic])
def list_notifications(request: Request, scope: ReadScope, lang: str = "ja") -> Any:
    need_person(scope.principal)
    return _watch(request).notifications(scope.principal, scope.tenant, lang)


@router.post("/notifications/{notification_id}/read", status_code=204)
def read_notification(request: Request, scope: ReadScope, notification_id: int) -> Response:
    _watch(request).mark_read(scope.principal, scope.tenant, notification_id)
    return Response(status_code=204)


# --- missing-person mode ----------------------------------------------------------------


@router.post("/missing-cases", status_code=201, response_model=schemas.MissingCasePublic)
def open_case(request: Request, scope: ReadScope, body: schemas.MissingOpen) -> Any:
    return _watch(request).open_missing_case(scope.principal, scope.tenant, body)


@router.post("/missing-cases/{case_id}/close", response_model=schemas.MissingCasePublic)
def close_case(request: Request, scope: ReadScope, case_id: int) -> Any:
    return _watch(request).close_missing_case(scope.principal, scope.tenant, case_id)


@router.get("/missing-cases", response_model=list[schemas.MissingCasePublic])
def list_cases(request: Request, scope: ReadScope) -> Any:
    return _watch(request).missing_cases(scope.principal, scope.tenant)


# --- volunteers ---------------------------------------------------------------------------


@router.get("/volunteer/me", response_model=schemas.VolunteerSummary)
def volunteer_me(request: Request, scope: ReadScope) -> Any:
    """A volunteer's own contribution: counts and points, never whose tags were seen."""
    username = need_person(scope.principal)
    return _watch(request).volunteer_summary(username, scope.tenant)


# --- public: flood and published counts ------------------------------------------------


@router.get("/flood")
def flood(request: Request, scope: ReadScope) -> dict[str, Any]:
    """Gauges (with the last 24 h of readings) and flooding spots: public."""
    data = _watch(request).flood.dashboard(scope.tenant)
    for gauge in data["gauges"]:
        gauge["series"] = [{"at": at.isoformat(), "level": v} for at, v in gauge["series"]]
    return data


@router.post("/flood/alerts", status_code=204, include_in_schema=False)
def flood_alerts(request: Request, body: Annotated[dict[str, Any], Body()]) -> Response:
    """Where the broker's flood-alert subscription delivers (with its key); records each
    threshold crossing once, however often the notification is delivered."""
    _watch(request).flood.receive_alerts(
        _tenant(request), request.headers.get("x-kizuna-watch-key"), body
    )
    return Response(status_code=204)


@router.get("/counts")
def counts(request: Request, scope: ReadScope, hour: datetime) -> list[dict[str, Any]]:
    """Detections per area (0.01° cell) in one hour; cells with too few tags are withheld."""
    if hour.tzinfo is None:
        hour = hour.replace(tzinfo=UTC)
    rows = _watch(request).hourly_counts(scope.tenant, hour)
    return [
        {
            "cell": r["cell"],
            "polygon": r["polygon"],
            "distinctTags": r["tags"],
            "detections": r["detections"],
            "from": r["from"].isoformat(),
            "to": r["to"].isoformat(),
        }
        for r in rows
    ]
