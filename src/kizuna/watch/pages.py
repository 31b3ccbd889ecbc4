"""Web pages of the watch module (Japanese first, phone first).

* ``/watch`` — a guardian's tags, last seen, notifications; registering a tag.
* ``/watch/tags/{id}`` — the map of today's trail with places, notifications, settings,
  and what staff looked at (access log, missing-person cases).
* ``/watch/flood`` — public: river levels with thresholds and flooded spots.
* ``/watch/staff`` — municipal staff: missing-person mode (with a reason), devices, ingest.

Every read goes through ``WatchService`` and so through the same privacy rules as the API.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from kizuna.auth.service import Role
from kizuna.problems import Problem
from kizuna.routing import ModuleRouter
from kizuna.tenancy.service import DEFAULT_TENANT
from kizuna.watch import maps, schemas
from kizuna.watch.base import jst_day
from kizuna.watch.flood import LEVEL_NAMES, LEVEL_NAMES_EN, SPOT_LEVEL_NAMES
from kizuna.watch.places import PLACE_KIND_JA
from kizuna.watch.privacy import is_staff
from kizuna.watch.service import WatchService
from kizuna.web.session import FormUser, OptionalPageUser, PageUser, WebUser
from kizuna.web.templating import NavItem, render

router = ModuleRouter(include_in_schema=False)
STAFF = frozenset({Role.MUNICIPAL_STAFF})
NAV = [
    NavItem("/watch/flood", "河川・冠水", "Flood watch"),
    NavItem("/watch/staff", "見守り管理", "Mimamori admin", STAFF),
    NavItem("/watch", "見守り", "Mimamori", frozenset({Role.RESIDENT})),
]

KIND_JA = {
    "fixed": "固定検知器",
    "vehicle": "公用車",
    "facility": "施設",
    "phone": "見守り協力スマホ",
    "gauge": "水位計",
}
KIND_EN = {
    "fixed": "fixed receiver",
    "vehicle": "city vehicle",
    "facility": "facility",
    "phone": "volunteer phone",
    "gauge": "gauge",
}
NOTE_ICON = {
    "arrival": "到",
    "departure": "発",
    "not_seen": "!",
    "missing_opened": "捜",
    "missing_closed": "終",
}
ACTION_JA = {
    "view_identity": "本人情報の閲覧",
    "view_trail": "位置履歴の閲覧",
    "open_case": "捜索モード開始",
    "close_case": "捜索モード終了",
}


def _watch(request: Request) -> WatchService:
    return request.app.state.services.watch


def _tenant(request: Request, user: WebUser | None) -> str:
    town = request.query_params.get("town")
    if user is not None and user.home_tenant:
        return user.home_tenant
    if town:
        return town
    if user is not None and user.principal.tenants:
        return sorted(user.principal.tenants)[0]
    return "kakogawa"


def _message(problem: Problem, lang: str) -> str:
    ja = {
        "ClaimRefused": "このタグは登録できません。タグ番号とカードの登録コードを確かめてください。",
        "ReasonRequired": "理由を8文字以上で入力してください（保護者に表示されます）。",
        "AlreadyExists": "すでに登録されています。",
        "ResourceNotFound": "見つかりません。",
        "Forbidden": "この操作の権限がありません。",
    }
    key = problem.type.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    if lang == "en":
        return problem.detail or problem.title
    return ja.get(key, f"操作できませんでした（{problem.detail or problem.title}）")


def _back(url: str, flash: str | None = None, kind: str = "ok") -> Response:
    if flash:
        sep = "&" if "?" in url else "?"
        url = f"{url}{sep}flash={quote(flash)}&kind={kind}"
    return RedirectResponse(url, status_code=303)


def _flash(request: Request) -> dict[str, str] | None:
    text = request.query_params.get("flash")
    if not text:
        return None
    kind = request.query_params.get("kind", "ok")
    return {"text": text, "kind": kind if kind in ("ok", "error") else "ok"}


# --- guardian ---------------------------------------------------------------------------


@router.get("/watch", response_class=HTMLResponse)
def home(request: Request, user: PageUser) -> Response:
    watch = _watch(request)
    tenant = _tenant(request, user)
    principal = user.principal
    tags = watch.my_tags(principal, tenant)
    lang = request.query_params.get("lang") or request.cookies.get("kizuna_lang") or "ja"
    notes = watch.notifications(principal, tenant, "en" if lang == "en" else "ja", limit=10)
    labels = {t.id: t.label for t in tags}
    volunteer = watch.volunteer_summary(user.username, tenant)
    context = {
        "tags": tags,
        "notes": notes,
        "labels": labels,
        "icons": NOTE_ICON,
        "kind_ja": KIND_JA,
        "kind_en": KIND_EN,
        "volunteer": volunteer if volunteer.month_points or volunteer.today_detections else None,
        "is_staff": is_staff(principal, tenant),
        "flash": _flash(request),
        "today": jst_day(datetime.now().astimezone()),
    }
    return render(request, "watch/home.html.j2", context, user=user)


@router.post("/watch/claim")
def claim(
    request: Request,
    user: FormUser,
    tag_id: Annotated[str, Form()],
    claim_code: Annotated[str, Form()],
    label: Annotated[str, Form()],
    person_kind: Annotated[str, Form()],
    relation: Annotated[str, Form()],
    agreed: Annotated[str, Form()] = "",
) -> Response:
    tenant = _tenant(request, user)
    lang = request.cookies.get("kizuna_lang", "ja")
    if agreed != "yes":
        return _back("/watch", "利用規約と位置情報の取り扱いへの同意が必要です。", "error")
    try:
        body = schemas.TagClaim(
            tag_id=tag_id.strip(),
            claim_code=claim_code.strip(),
            label=label.strip(),
            person_kind=person_kind,  # type: ignore[arg-type]
            consent=schemas.Consent(
                agreed=True, given_by=user.display_name, relation=relation.strip() or "保護者"
            ),
        )
        _watch(request).claim_tag(user.principal, tenant, body)
    except ValidationError:
        return _back(
            "/watch", "入力内容を確かめてください（タグ番号・登録コード・お名前）。", "error"
        )
    except Problem as problem:
        return _back("/watch", _message(problem, lang), "error")
    return _back(f"/watch/tags/{quote(body.tag_id)}", "見守りタグを登録しました。")


def _tag_page_context(
    request: Request, user: WebUser, tenant: str, tag_id: str, day: date
) -> dict[str, Any]:
    watch = _watch(request)
    principal = user.principal
    try:
        tag = watch.tag(principal, tenant, tag_id)
        trail = watch.trail(principal, tenant, tag_id, day)
        places = watch.places(principal, tenant, tag_id)
    except Problem as problem:
        raise HTTPException(problem.status, problem.detail or problem.title) from None
    lang = "en" if request.cookies.get("kizuna_lang") == "en" else "ja"
    if request.query_params.get("lang") in ("ja", "en"):
        lang = request.query_params["lang"]
    notes = [
        n for n in watch.notifications(principal, tenant, lang, limit=50) if n.tag_id == tag_id
    ]
    return {
        "tag": tag,
        "trail": trail,
        "places": places,
        "map": maps.trail_map(trail, places, lang),
        "notes": notes[:8],
        "icons": NOTE_ICON,
        "log": watch.access_log(principal, tenant, tag_id),
        "cases": watch.missing_cases(principal, tenant, tag_id),
        "day": day,
        "is_today": day == jst_day(datetime.now().astimezone()),
        "kind_ja": KIND_JA,
        "kind_en": KIND_EN,
        "place_kinds": PLACE_KIND_JA,
        "actions": ACTION_JA,
        "flash": _flash(request),
    }


@router.get("/watch/tags/{tag_id}", response_class=HTMLResponse)
def tag_page(request: Request, user: PageUser, tag_id: str, day: str | None = None) -> Response:
    tenant = _tenant(request, user)
    try:
        chosen = date.fromisoformat(day) if day else jst_day(datetime.now().astimezone())
    except ValueError:
        chosen = jst_day(datetime.now().astimezone())
    context = _tag_page_context(request, user, tenant, tag_id, chosen)
    return render(request, "watch/tag.html.j2", context, user=user)


@router.post("/watch/tags/{tag_id}/places")
def add_place(
    request: Request,
    user: FormUser,
    tag_id: str,
    name: Annotated[str, Form()],
    kind: Annotated[str, Form()],
    lat: Annotated[float, Form()],
    lon: Annotated[float, Form()],
    radius_m: Annotated[float, Form()] = 150,
) -> Response:
    tenant = _tenant(request, user)
    target = f"/watch/tags/{quote(tag_id)}"
    try:
        body = schemas.PlaceCreate(
            name=name.strip(), kind=kind, lat=lat, lon=lon, radius_m=radius_m
        )  # type: ignore[arg-type]
        _watch(request).add_place(user.principal, tenant, tag_id, body)
    except ValidationError:
        return _back(
            target, "場所の名前・緯度経度・半径（20〜2000 m）を確かめてください。", "error"
        )
    except Problem as problem:
        return _back(target, _message(problem, "ja"), "error")
    return _back(target, f"「{body.name}」を登録しました。到着・出発をお知らせします。")


@router.post("/watch/tags/{tag_id}/places/{place_id}/delete")
def delete_place(request: Request, user: FormUser, tag_id: str, place_id: int) -> Response:
    tenant = _tenant(request, user)
    target = f"/watch/tags/{quote(tag_id)}"
    try:
        _watch(request).delete_place(user.principal, tenant, tag_id, place_id)
    except Problem as problem:
        return _back(target, _message(problem, "ja"), "error")
    return _back(target, "場所を削除しました。")


@router.post("/watch/tags/{tag_id}/settings")
def tag_settings(
    request: Request,
    user: FormUser,
    tag_id: str,
    not_seen_hours: Annotated[str, Form()] = "",
    webhook_url: Annotated[str, Form()] = "",
) -> Response:
    tenant = _tenant(request, user)
    target = f"/watch/tags/{quote(tag_id)}"
    try:
        body = schemas.TagSettings(
            not_seen_hours=float(not_seen_hours) if not_seen_hours.strip() else None,
            webhook_url=webhook_url.strip() or None,
        )
        _watch(request).update_settings(user.principal, tenant, tag_id, body)
    except (ValidationError, ValueError):
        return _back(target, "時間（0〜336）と通知先URL（http/https）を確かめてください。", "error")
    except Problem as problem:
        return _back(target, _message(problem, "ja"), "error")
    return _back(target, "通知の設定を保存しました。")


# --- public flood dashboard -----------------------------------------------------------------


@router.get("/watch/flood", response_class=HTMLResponse)
def flood_page(request: Request, user: OptionalPageUser) -> Response:
    services = request.app.state.services
    towns = [t for t in services.tenants.list_tenants() if t["id"] != DEFAULT_TENANT]
    tenant = request.query_params.get("town") or (user.home_tenant if user else None)
    if tenant is None or tenant not in {t["id"] for t in towns}:
        tenant = (
            "kakogawa"
            if any(t["id"] == "kakogawa" for t in towns)
            else (towns[0]["id"] if towns else DEFAULT_TENANT)
        )
    lang = (
        "en"
        if (request.query_params.get("lang") or request.cookies.get("kizuna_lang")) == "en"
        else "ja"
    )
    try:
        data = services.watch.flood.dashboard(tenant)
    except Problem:
        data = {"gauges": [], "spots": [], "alerts": []}
    names = LEVEL_NAMES if lang == "ja" else LEVEL_NAMES_EN
    for gauge in data["gauges"]:
        gauge["chart"] = maps.gauge_chart(gauge["series"], gauge["thresholds"], tuple(names))
    markers = [
        {
            "lat": g["lat"],
            "lon": g["lon"],
            "label": g["name_ja"] if lang == "ja" else g["name_en"],
            "level": g["level"],
            "kind": "gauge",
        }
        for g in data["gauges"]
    ] + [
        {
            "lat": s["lat"],
            "lon": s["lon"],
            "label": s["name_ja"] if lang == "ja" else s["name_en"],
            "level": s["level"],
            "kind": "spot",
        }
        for s in data["spots"]
    ]
    context = {
        "towns": towns,
        "tenant": tenant,
        "gauges": data["gauges"],
        "spots": data["spots"],
        "flooded": [s for s in data["spots"] if s["level"] > 0],
        "alerts": data["alerts"],
        "map": maps.overview_map(markers, lang),
        "colours": maps.LEVEL_COLOURS,
        "spot_names": SPOT_LEVEL_NAMES,
        "worst": max([g["level"] for g in data["gauges"]] or [0]),
    }
    return render(request, "watch/flood.html.j2", context, user=user)


# --- staff ------------------------------------------------------------------------------------


def _staff_tenant(request: Request, user: WebUser) -> str:
    tenant = _tenant(request, user)
    if not is_staff(user.principal, tenant):
        raise HTTPException(403, "見守り管理は自治体職員のみ利用できます")
    return tenant


@router.get("/watch/staff", response_class=HTMLResponse)
def staff_page(request: Request, user: PageUser) -> Response:
    tenant = _staff_tenant(request, user)
    watch = _watch(request)
    runtime = getattr(request.app.state, "watch_runtime", None)
    ingestor = runtime.ingestor if runtime else None
    context = {
        "tenant": tenant,
        "cases": watch.missing_cases(user.principal, tenant),
        "tags": watch.staff_tags(user.principal, tenant),
        "devices": watch.list_devices(user.principal, tenant),
        "ingest": ingestor.stats.snapshot() if ingestor else None,
        "connected": bool(ingestor and ingestor.connected.is_set()),
        "kind_ja": KIND_JA,
        "kind_en": KIND_EN,
        "flash": _flash(request),
    }
    return render(request, "watch/staff.html.j2", context, user=user)


@router.post("/watch/staff/cases")
def open_case(
    request: Request,
    user: FormUser,
    tag_id: Annotated[str, Form()],
    reason: Annotated[str, Form()],
) -> Response:
    tenant = _staff_tenant(request, user)
    try:
        body = schemas.MissingOpen(tag_id=tag_id.strip(), reason=reason.strip())
        case = _watch(request).open_missing_case(user.principal, tenant, body)
    except ValidationError:
        return _back("/watch/staff", "タグ番号と理由（8文字以上）を入力してください。", "error")
    except Problem as problem:
        return _back("/watch/staff", _message(problem, "ja"), "error")
    return _back(
        f"/watch/staff/cases/{case.id}", "捜索モードを開始しました。保護者に通知しました。"
    )


@router.post("/watch/staff/cases/{case_id}/close")
def close_case(request: Request, user: FormUser, case_id: int) -> Response:
    tenant = _staff_tenant(request, user)
    try:
        _watch(request).close_missing_case(user.principal, tenant, case_id)
    except Problem as problem:
        return _back("/watch/staff", _message(problem, "ja"), "error")
    return _back("/watch/staff", "捜索モードを終了しました。")


@router.get("/watch/staff/cases/{case_id}", response_class=HTMLResponse)
def case_page(request: Request, user: PageUser, case_id: int) -> Response:
    tenant = _staff_tenant(request, user)
    watch = _watch(request)
    case = next((c for c in watch.missing_cases(user.principal, tenant) if c.id == case_id), None)
    if case is None:
        raise HTTPException(404, "この捜索記録はありません")
    trail: list[Any] = []
    tag = None
    if case.closed_at is None:
        # Each view is written to the access log (with the case's reason) by the service.
        trail = watch.trail(user.principal, tenant, case.tag_id)
        tag = watch.tag(user.principal, tenant, case.tag_id, case.reason)
    lang = "en" if request.cookies.get("kizuna_lang") == "en" else "ja"
    context = {
        "case": case,
        "tag": tag,
        "trail": trail,
        "map": maps.trail_map(trail, [], lang),
        "kind_ja": KIND_JA,
        "kind_en": KIND_EN,
        "flash": _flash(request),
    }
    return render(request, "watch/case.html.j2", context, user=user)
