"""Web pages of the points programme: the resident's wallet, the shop's counter and the
city's office. Japanese first, phone first; every form carries a client-chosen id, so a
double tap or a reload of a form post changes nothing twice.

Who sees what: residents (role ``resident``) their own wallet; shops (``merchant``) their
own shop; municipal staff (``municipal_staff`` with a points role in ``points_staff``:
admin / clerk / viewer) their municipality's programme; platform admins everything.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import uuid
from datetime import date, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from cachetools import LRUCache
from fastapi import Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kizuna.auth.service import SYSTEM, Role
from kizuna.points import charts
from kizuna.points.publish import publish_months
from kizuna.points.schemas import (
    ActionIn,
    CouponCreate,
    EcoLogIn,
    FactorCreate,
    PaymentIn,
    ResidentCreate,
    SaleIn,
    ShopCreate,
    ThanksIn,
    VolunteerIn,
)
from kizuna.points.service import (
    JST,
    Originator,
    Points,
    PointsError,
    Resident,
    Shop,
    hold_expiry_label,
    today,
)
from kizuna.routing import ModuleRouter
from kizuna.tenancy.service import DEFAULT_TENANT
from kizuna.web.i18n import request_lang
from kizuna.web.session import FormUser, OptionalPageUser, PageUser, WebUser
from kizuna.web.templating import NavItem, render

router = ModuleRouter(include_in_schema=False)

RESIDENT = frozenset({Role.RESIDENT})
MERCHANT = frozenset({Role.MERCHANT})
STAFF = frozenset({Role.MUNICIPAL_STAFF})
NAV = [
    NavItem("/points/wallet", "ウォレット", "Wallet", RESIDENT),
    NavItem("/points/eco", "エコ活動", "Eco actions", RESIDENT),
    NavItem("/points/thanks", "ありがとう", "Thanks", RESIDENT),
    NavItem("/points/coupons", "クーポン", "Coupons", RESIDENT),
    NavItem("/points/shop", "お店", "My shop", MERCHANT),
    NavItem("/points/staff", "ポイント事業", "Points programme", STAFF),
]
STAFF_TABS = (
    ("/points/staff", "ダッシュボード", "Dashboard", "viewer"),
    ("/points/staff/residents", "住民", "Residents", "clerk"),
    ("/points/staff/approvals", "承認", "Approvals", "clerk"),
    ("/points/staff/volunteer", "ボランティア", "Volunteering", "clerk"),
    ("/points/staff/sales", "窓口販売", "Counter sales", "clerk"),
    ("/points/staff/shops", "加盟店", "Shops", "admin"),
    ("/points/staff/actions", "エコ活動", "Eco actions", "admin"),
    ("/points/staff/coupons", "クーポン", "Coupons", "admin"),
    ("/points/staff/settlement", "精算", "Settlement", "admin"),
)
RANK = {"viewer": 0, "clerk": 1, "admin": 2}
_charts: LRUCache[tuple, bytes] = LRUCache(maxsize=64)


def _points(request: Request) -> Points:
    return request.app.state.services.points


def _new_id() -> str:
    return str(uuid.uuid4())


def _flash(request: Request, ja: str, en: str, kind: str = "ok") -> dict[str, str]:
    return {"kind": kind, "text": ja if request_lang(request) == "ja" else en}


def _err(request: Request, exc: PointsError) -> dict[str, str]:
    return _flash(request, exc.ja, exc.en, "error")


def _forbidden(ja: str, en: str) -> HTTPException:
    return HTTPException(403, f"{ja} / {en}")


# --- who is asking ------------------------------------------------------------------------


def _home_tenant(request: Request, user: WebUser) -> str:
    tenant = user.home_tenant
    if tenant is None or not _points(request).has_programme(tenant):
        raise _forbidden(
            "お住まいの自治体ではポイント事業が始まっていません。",
            "Your municipality runs no points programme.",
        )
    return tenant


def _resident(request: Request, user: WebUser) -> tuple[str, Resident | None]:
    if user.role != Role.RESIDENT:
        raise _forbidden("住民の方向けの画面です。", "This page is for residents.")
    tenant = _home_tenant(request, user)
    return tenant, _points(request).resident_for_user(tenant, user.username)


class _NotRegistered(Exception):
    """A resident without a real-name record yet: the page sends them to /points/register."""


def _registered(request: Request, user: WebUser) -> tuple[str, Resident]:
    tenant, resident = _resident(request, user)
    if resident is None:
        raise _NotRegistered
    return tenant, resident


def _resident_page(handler):  # noqa: ANN001, ANN202
    """Resident pages: before registering, every one of them leads to the register form."""
    import functools
    import inspect

    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Response:
            try:
                return await handler(*args, **kwargs)
            except _NotRegistered:
                return RedirectResponse("/points/register", status_code=303)

        return async_wrapper

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return handler(*args, **kwargs)
        except _NotRegistered:
            return RedirectResponse("/points/register", status_code=303)

    return wrapper


def _shop(request: Request, user: WebUser) -> tuple[str, Shop]:
    if user.role != Role.MERCHANT:
        raise _forbidden("加盟店の方向けの画面です。", "This page is for shops.")
    tenant = _home_tenant(request, user)
    shop = _points(request).shop_for_user(tenant, user.username)
    if shop is None:
        raise _forbidden(
            "このアカウントに登録された店舗がありません。市役所にお問い合わせください。",
            "No shop is registered for this account.",
        )
    return tenant, shop


def _staff(request: Request, user: WebUser, need: str = "viewer") -> tuple[str, str, list[dict]]:
    """(tenant, role, tenants the user may switch to) for municipal staff."""
    points = _points(request)
    if user.role not in (Role.MUNICIPAL_STAFF, Role.PLATFORM_ADMIN):
        raise _forbidden("自治体職員向けの画面です。", "This page is for municipal staff.")
    tenants = [
        t
        for t in request.app.state.services.tenants.list_tenants()
        if t["id"] != DEFAULT_TENANT
        and user.principal.acts_in(t["id"])
        and points.has_programme(t["id"])
    ]
    if not tenants:
        raise _forbidden("ポイント事業を行っている自治体がありません。", "No points programme.")
    wanted = request.query_params.get("tenant")
    tenant = next((t for t in tenants if t["id"] == wanted), tenants[0])
    role = (
        "admin"
        if user.role == Role.PLATFORM_ADMIN
        else points.staff_role(tenant["id"], user.username) or "viewer"
    )
    if RANK[role] < RANK[need]:
        raise _forbidden(
            "この操作の権限がありません（ポイント事業の担当者に依頼してください）。",
            "Your points role does not allow this.",
        )
    return tenant["id"], role, tenants


def _staff_page(
    request: Request,
    user: WebUser,
    template: str,
    tenant: str,
    role: str,
    tenants: list[dict],
    context: dict[str, Any],
    status_code: int = 200,
) -> Response:
    points = _points(request)
    tabs = [t for t in STAFF_TABS if RANK[role] >= RANK[t[3]]]
    base = {
        "tenant": tenant,
        "tenant_name": next(t for t in tenants if t["id"] == tenant),
        "tenants": tenants,
        "role": role,
        "tabs": tabs,
        "programme": points.programme(tenant),
        "q": f"?tenant={tenant}",
    }
    return render(request, f"points/{template}", base | context, status_code=status_code, user=user)


def _base_url(request: Request) -> str:
    configured = request.app.state.services.settings.public_base_url
    return (configured or str(request.base_url)).rstrip("/")


# --- resident -----------------------------------------------------------------------------


@router.get("/points", response_class=HTMLResponse)
def points_home(request: Request, user: PageUser) -> Response:
    target = {
        Role.RESIDENT: "/points/wallet",
        Role.MERCHANT: "/points/shop",
    }.get(user.role, "/points/staff")
    return RedirectResponse(target, status_code=303)


@router.get("/points/register", response_class=HTMLResponse)
def register_form(request: Request, user: PageUser) -> Response:
    tenant, resident = _resident(request, user)
    if resident is not None:
        return RedirectResponse("/points/wallet", status_code=303)
    return render(
        request,
        "points/register.html.j2",
        {"programme": _points(request).programme(tenant), "form": {}},
        user=user,
    )


@router.post("/points/register", response_class=HTMLResponse)
def register(
    request: Request,
    user: FormUser,
    real_name: Annotated[str, Form()] = "",
    kana: Annotated[str, Form()] = "",
    town: Annotated[str, Form()] = "",
) -> Response:
    tenant, _ = _resident(request, user)
    form = {"real_name": real_name, "kana": kana, "town": town}
    if not (real_name.strip() and kana.strip() and town.strip()):
        flash = _flash(request, "すべての項目を入力してください。", "Fill in every field.", "error")
        return render(
            request,
            "points/register.html.j2",
            {"programme": _points(request).programme(tenant), "form": form, "flash": flash},
            status_code=422,
            user=user,
        )
    _points(request).register_resident(
        tenant, user.username, ResidentCreate(real_name=real_name, kana=kana, town=town)
    )
    return RedirectResponse("/points/wallet?registered=1", status_code=303)


@router.get("/points/wallet", response_class=HTMLResponse)
@_resident_page
def wallet_page(request: Request, user: PageUser) -> Response:
    tenant, resident = _registered(request, user)
    points = _points(request)
    flash = None
    if request.query_params.get("registered"):
        flash = _flash(
            request,
            "登録しました。市役所で本人確認が済むと、ポイントを受け取れます。",
            "Registered. Once the city verifies your name, you can receive points.",
        )
    context = {
        "resident": resident,
        "programme": points.programme(tenant),
        "wallet": points.wallet(tenant, resident, history=15),
        "co2": points.co2_for(tenant, resident),
        "actions": {a.code: a for a in points.actions(tenant)},
        "flash": flash,
    }
    return render(request, "points/wallet.html.j2", context, user=user)


def _eco_context(request: Request, tenant: str, resident: Resident) -> dict[str, Any]:
    points = _points(request)
    return {
        "resident": resident,
        "actions": points.actions(tenant, active_only=True),
        "history": points.eco_history(tenant, resident),
        "co2": points.co2_for(tenant, resident),
        "form_id": _new_id(),
        "today": today(),
        "min_day": today() - timedelta(days=31),
    }


@router.get("/points/eco", response_class=HTMLResponse)
@_resident_page
def eco_page(request: Request, user: PageUser) -> Response:
    tenant, resident = _registered(request, user)
    return render(request, "points/eco.html.j2", _eco_context(request, tenant, resident), user=user)


@router.post("/points/eco", response_class=HTMLResponse)
@_resident_page
async def eco_log(request: Request, user: FormUser) -> Response:
    form = await request.form()
    tenant, resident = _registered(request, user)
    points = _points(request)
    photo_name = None
    upload = form.get("photo")
    try:
        spec = EcoLogIn(
            id=str(form.get("id", "")),
            action=str(form.get("action", "")),
            action_date=str(form.get("action_date") or "") or None,
            quantity=float(str(form.get("quantity") or 1)),
            meter_reading=float(str(form["meter_reading"])) if form.get("meter_reading") else None,
        )
    except ValueError:
        context = _eco_context(request, tenant, resident) | {
            "flash": _flash(request, "入力を確認してください。", "Check your input.", "error")
        }
        return render(request, "points/eco.html.j2", context, status_code=422, user=user)
    if isinstance(upload, UploadFile) and upload.filename:
        data = await upload.read()
        if data:
            photo_name = f"{spec.id}.jpg"
            folder = request.app.state.services.settings.data_dir / "points" / "photos"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / photo_name).write_bytes(data[: 8 * 1024 * 1024])
    try:
        log = await run_in_threadpool(points.log_action, tenant, resident, spec, photo=photo_name)
    except PointsError as exc:
        context = _eco_context(request, tenant, resident) | {"flash": _err(request, exc)}
        return render(request, "points/eco.html.j2", context, status_code=exc.status, user=user)
    if log.status == "pending":
        flash = _flash(
            request,
            f"「{log.action_name}」を記録しました。職員の確認後に {log.points} pt が届きます。",
            f"Logged. {log.points} pt arrive after the city checks it.",
        )
    else:
        flash = _flash(
            request,
            f"「{log.action_name}」で {log.points} pt を受け取りました（CO2 {log.co2_g / 1000:.2f} kg 削減）。"
            + ("（記録済みです）" if log.replay else ""),
            f"You received {log.points} pt (CO2 saved {log.co2_g / 1000:.2f} kg).",
        )
    context = _eco_context(request, tenant, resident) | {"flash": flash, "last": log}
    return render(request, "points/eco.html.j2", context, user=user)


def _thanks_context(request: Request, tenant: str, resident: Resident, to: str = "") -> dict:
    points = _points(request)
    link = f"{_base_url(request)}/points/thanks/to/{resident.member_code}"
    return {
        "resident": resident,
        "programme": points.programme(tenant),
        "wallet": points.wallet(tenant, resident, history=0),
        "form_id": _new_id(),
        "to": to,
        "recipient": points.resident_by_code(tenant, to) if to else None,
        "my_qr": charts.qr_svg(link, scale=5),
        "form": {},
    }


@router.get("/points/thanks", response_class=HTMLResponse)
@_resident_page
def thanks_page(request: Request, user: PageUser) -> Response:
    tenant, resident = _registered(request, user)
    return render(
        request, "points/thanks.html.j2", _thanks_context(request, tenant, resident), user=user
    )


@router.get("/points/thanks/to/{member_code}", response_class=HTMLResponse)
@_resident_page
def thanks_to(request: Request, user: PageUser, member_code: str) -> Response:
    tenant, resident = _registered(request, user)
    context = _thanks_context(request, tenant, resident, member_code)
    return render(request, "points/thanks.html.j2", context, user=user)


@router.post("/points/thanks", response_class=HTMLResponse)
@_resident_page
def thanks_send(
    request: Request,
    user: FormUser,
    id: Annotated[str, Form()],  # noqa: A002 - the form's field
    to: Annotated[str, Form()] = "",
    amount: Annotated[str, Form()] = "",
    message: Annotated[str, Form()] = "",
) -> Response:
    tenant, resident = _registered(request, user)
    points = _points(request)
    form = {"amount": amount, "message": message}
    try:
        if not amount.strip().isdigit() or int(amount) <= 0:
            raise PointsError(
                422,
                "bad-amount",
                "ポイント数を1以上の数字で入力してください。",
                "Enter a whole number of points.",
            )
        result = points.thank(
            tenant,
            resident,
            ThanksIn(id=id, to=to.strip(), amount=int(amount), message=message[:200]),
        )
    except PointsError as exc:
        context = _thanks_context(request, tenant, resident, to) | {
            "flash": _err(request, exc),
            "form": form,
            "form_id": id,
        }
        return render(request, "points/thanks.html.j2", context, status_code=exc.status, user=user)
    receiver = result["to"]
    flash = _flash(
        request,
        f"{receiver.real_name} さんに {int(amount):,} pt の「ありがとう」を贈りました。"
        + ("（送信済みです）" if result["replay"] else ""),
        f"You sent {int(amount):,} pt of thanks to {receiver.real_name}.",
    )
    context = _thanks_context(request, tenant, resident) | {"flash": flash, "sent": result}
    return render(request, "points/thanks.html.j2", context, user=user)


@router.get("/points/coupons", response_class=HTMLResponse)
@_resident_page
def coupons_page(request: Request, user: PageUser) -> Response:
    tenant, resident = _registered(request, user)
    points = _points(request)
    shops = {s.code: s.name for s in points.list_shops(tenant)}
    context = {"held": points.coupons_for(tenant, resident), "shops": shops}
    return render(request, "points/coupons.html.j2", context, user=user)


# --- paying at a shop -----------------------------------------------------------------------


def _pay_context(request: Request, tenant: str, resident: Resident, link: Any) -> dict:
    points = _points(request)
    coupons = [
        c
        for c in points.coupons_for(tenant, resident)
        if c["state"] == "usable" and (not c["coupon"].shops or link.shop.code in c["coupon"].shops)
    ]
    return {
        "link": link,
        "shop": link.shop,
        "resident": resident,
        "wallet": points.wallet(tenant, resident, history=0),
        "coupons": coupons,
        "payment_id": link.payment_id or _new_id(),
        "query": request.url.query,
        "programme": points.programme(tenant),
    }


def _check_link(request: Request, tenant: str, shop: str) -> Any:
    q = request.query_params
    return _points(request).check_link(
        tenant, shop, q.get("s", ""), q.get("a"), q.get("e"), q.get("n")
    )


@router.get("/points/pay/{tenant}/{shop}", response_class=HTMLResponse)
@_resident_page
def pay_page(request: Request, user: PageUser, tenant: str, shop: str) -> Response:
    home, resident = _registered(request, user)
    try:
        if home != tenant:
            raise PointsError(
                403,
                "other-town",
                "このお店はお住まいの自治体のポイントの対象ではありません。",
                "This shop takes another municipality's points.",
            )
        link = _check_link(request, tenant, shop)
    except PointsError as exc:
        return render(
            request,
            "points/pay_error.html.j2",
            {"flash": _err(request, exc), "error": exc},
            status_code=exc.status,
            user=user,
        )
    if link.payment_id:  # a one-off QR already paid: show its receipt
        done = _points(request).payment(tenant, link.payment_id)
        if done is not None:
            return RedirectResponse(f"/points/payments/{done.id}", status_code=303)
    context = _pay_context(request, tenant, resident, link)
    return render(request, "points/pay.html.j2", context, user=user)


@router.post("/points/pay/{tenant}/{shop}", response_class=HTMLResponse)
@_resident_page
def pay_authorize(
    request: Request,
    user: FormUser,
    tenant: str,
    shop: str,
    id: Annotated[str, Form()],  # noqa: A002
    amount: Annotated[str, Form()] = "",
    coupon: Annotated[str, Form()] = "",
) -> Response:
    home, resident = _registered(request, user)
    points = _points(request)
    try:
        if home != tenant:
            raise PointsError(
                403, "other-town", "このお店では使えません。", "This shop takes other points."
            )
        link = _check_link(request, tenant, shop)
        if link.amount is not None:
            amount, id = str(link.amount), link.payment_id  # noqa: A001 - the bill fixes both
        if not amount.strip().isdigit() or int(amount) <= 0:
            raise PointsError(
                422, "bad-amount", "お支払い金額を1円以上で入力してください。", "Enter the amount."
            )
        payment = points.authorize(
            tenant,
            resident,
            PaymentIn(id=id, shop=shop, amount=int(amount), coupon=coupon or None),
        )
    except PointsError as exc:
        if exc.code in ("qr-forged", "qr-expired", "shop-closed", "other-town"):
            return render(
                request,
                "points/pay_error.html.j2",
                {"flash": _err(request, exc), "error": exc},
                status_code=exc.status,
                user=user,
            )
        context = _pay_context(request, tenant, resident, link) | {
            "flash": _err(request, exc),
            "amount": amount,
            "payment_id": _new_id() if link.payment_id is None else link.payment_id,
        }
        return render(request, "points/pay.html.j2", context, status_code=exc.status, user=user)
    return RedirectResponse(f"/points/payments/{payment.id}", status_code=303)


def _payment_page(
    request: Request, user: WebUser, payment_id: str, flash: dict | None = None, status: int = 200
) -> Response:
    tenant, resident = _registered(request, user)
    points = _points(request)
    payment = points.payment(tenant, payment_id)
    if payment is None or payment.member_code != resident.member_code:
        raise HTTPException(404, "お支払いが見つかりません / No such payment")
    context = {
        "payment": payment,
        "wallet": points.wallet(tenant, resident, history=0),
        "left": hold_expiry_label(payment.expires_at),
        "flash": flash,
    }
    return render(request, "points/payment.html.j2", context, status_code=status, user=user)


@router.get("/points/payments/{payment_id}", response_class=HTMLResponse)
@_resident_page
def payment_page(request: Request, user: PageUser, payment_id: str) -> Response:
    return _payment_page(request, user, payment_id)


@router.post("/points/payments/{payment_id}/confirm", response_class=HTMLResponse)
@_resident_page
def payment_confirm(request: Request, user: FormUser, payment_id: str) -> Response:
    tenant, resident = _registered(request, user)
    points = _points(request)
    try:
        done = points.confirm(tenant, resident, payment_id)
    except PointsError as exc:
        return _payment_page(request, user, payment_id, _err(request, exc), exc.status)
    if done.replay:
        flash = _flash(
            request,
            "このお支払いはすでに完了しています（二重に支払われてはいません）。",
            "This payment was already completed (nothing was paid twice).",
        )
        return _payment_page(request, user, payment_id, flash)
    return RedirectResponse(f"/points/payments/{payment_id}?done=1", status_code=303)


@router.post("/points/payments/{payment_id}/cancel", response_class=HTMLResponse)
@_resident_page
def payment_cancel(request: Request, user: FormUser, payment_id: str) -> Response:
    tenant, resident = _registered(request, user)
    try:
        _points(request).cancel(tenant, resident, payment_id)
    except PointsError as exc:
        return _payment_page(request, user, payment_id, _err(request, exc), exc.status)
    flash = _flash(request, "お支払いを取り消しました。", "The payment was cancelled.")
    return _payment_page(request, user, payment_id, flash)


# --- the shop -----------------------------------------------------------------------------


def _shop_context(request: Request, tenant: str, shop: Shop) -> dict[str, Any]:
    points = _points(request)
    url = _base_url(request) + points.pay_path(tenant, shop.code)
    return {
        "shop": shop,
        "programme": points.programme(tenant),
        "sales": points.shop_sales(tenant, shop),
        "pay_url": url,
        "qr": charts.qr_svg(url, scale=4),
        "bill": None,
    }


@router.get("/points/shop", response_class=HTMLResponse)
def shop_page(request: Request, user: PageUser) -> Response:
    tenant, shop = _shop(request, user)
    return render(request, "points/shop.html.j2", _shop_context(request, tenant, shop), user=user)


@router.post("/points/shop/bill", response_class=HTMLResponse)
def shop_bill(request: Request, user: FormUser, amount: Annotated[str, Form()] = "") -> Response:
    tenant, shop = _shop(request, user)
    context = _shop_context(request, tenant, shop)
    if not amount.strip().isdigit() or not 0 < int(amount) <= 10_000_000:
        context["flash"] = _flash(
            request, "金額を1円以上で入力してください。", "Enter an amount.", "error"
        )
        return render(request, "points/shop.html.j2", context, status_code=422, user=user)
    url = _base_url(request) + _points(request).one_off_path(tenant, shop.code, int(amount))
    context["bill"] = {"amount": int(amount), "url": url, "qr": charts.qr_svg(url, scale=6)}
    return render(request, "points/shop.html.j2", context, user=user)


@router.post("/points/shop/refund", response_class=HTMLResponse)
def shop_refund(request: Request, user: FormUser, payment: Annotated[str, Form()]) -> Response:
    tenant, shop = _shop(request, user)
    try:
        done = _points(request).refund(tenant, shop, payment)
        flash = _flash(
            request,
            f"{done.amount:,}円分を返金しました。",
            f"Refunded ¥{done.amount:,}.",
        )
        status = 200
    except PointsError as exc:
        flash, status = _err(request, exc), exc.status
    context = _shop_context(request, tenant, shop) | {"flash": flash}
    return render(request, "points/shop.html.j2", context, status_code=status, user=user)


@router.get("/points/shop/poster.pdf")
async def shop_poster(request: Request, user: PageUser) -> Response:
    tenant, shop = _shop(request, user)
    points = _points(request)
    url = _base_url(request) + points.pay_path(tenant, shop.code)
    pdf = await run_in_threadpool(
        charts.poster_pdf, points.programme(tenant).name_ja, shop.name, shop.town, url
    )
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f"inline; filename*=UTF-8''{quote(shop.code)}-qr.pdf"},
    )


@router.get("/points/shop/qr.png")
def shop_qr_png(request: Request, user: PageUser) -> Response:
    tenant, shop = _shop(request, user)
    url = _base_url(request) + _points(request).pay_path(tenant, shop.code)
    return Response(charts.qr_png(url), media_type="image/png")


@router.get("/points/shop/statements", response_class=HTMLResponse)
def shop_statements(request: Request, user: PageUser) -> Response:
    tenant, shop = _shop(request, user)
    context = {"shop": shop, "statements": _points(request).statements(tenant, shop)}
    return render(request, "points/statements.html.j2", context, user=user)


@router.get("/points/shop/statements.csv")
def shop_statements_csv(request: Request, user: PageUser) -> Response:
    tenant, shop = _shop(request, user)
    points = _points(request)
    rows = points.statements(tenant, shop, months=12)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(
        [
            "期間開始",
            "期間終了",
            "受取ポイント",
            "返金ポイント",
            "精算ポイント",
            "手数料(円)",
            "振込額(円)",
            "状態",
        ]
    )
    for s in rows:
        w.writerow(
            [
                s.period_start.astimezone(JST).date().isoformat(),
                (s.period_end.astimezone(JST) - timedelta(days=1)).date().isoformat(),
                s.received,
                s.refunded,
                s.net,
                s.fee_yen,
                s.payable_yen,
                "精算済" if s.settled else "未精算",
            ]
        )
    return _csv(buf.getvalue(), f"{shop.code}-statements.csv")


def _csv(text: str, filename: str) -> Response:
    return Response(
        "\ufeff".encode() + text.encode(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"},
    )


# --- the city's office ----------------------------------------------------------------------


@router.get("/points/staff", response_class=HTMLResponse)
def staff_dashboard(request: Request, user: PageUser) -> Response:
    tenant, role, tenants = _staff(request, user)
    points = _points(request)
    board = points.dashboard(tenant)
    total, verified = points.count_residents(tenant)
    flash = None
    if (n := request.query_params.get("published")) is not None:
        flash = _flash(
            request,
            f"月別の集計 {n} 件をブローカーに公開しました（個人情報は含みません）。",
            f"Published {n} monthly aggregates to the broker (no personal data).",
        )
    context = {
        "board": board,
        "budgets": points.budgets(tenant),
        "residents_total": total,
        "residents_verified": verified,
        "shops": len(points.list_shops(tenant)),
        "version": "{}-{}".format(*points.fingerprint(tenant)),
        "flash": flash,
    }
    return _staff_page(request, user, "staff_dashboard.html.j2", tenant, role, tenants, context)


@router.get("/points/staff/charts/{name}.svg")
async def staff_chart(request: Request, user: PageUser, name: str) -> Response:
    tenant, _, _ = _staff(request, user)
    points = _points(request)
    lang = request_lang(request)
    key = (tenant, name, lang, points.fingerprint(tenant), today())
    svg = _charts.get(key)
    if svg is None:
        board = await run_in_threadpool(points.dashboard, tenant)
        ja = lang == "ja"
        if name == "co2-month":
            make = lambda: charts.co2_by_month(board.months, board.co2_by_month, ja)  # noqa: E731
        elif name == "points-month":
            make = lambda: charts.points_by_month(board.months, board.flows, ja)  # noqa: E731
        elif name == "co2-town":
            make = lambda: charts.horizontal(  # noqa: E731
                board.co2_by_town, "町別のCO2削減量" if ja else "CO2 saved by town", "kg", "#2e7d4f"
            )
        elif name == "co2-action":
            make = lambda: charts.horizontal(  # noqa: E731
                board.co2_by_action,
                "行動別のCO2削減量" if ja else "CO2 saved by action",
                "kg",
                "#d9822b",
            )
        elif name == "spent-town":
            make = lambda: charts.horizontal(  # noqa: E731
                board.spent_by_town,
                "お店の地域別の利用額" if ja else "Spending by shop town",
                "円" if ja else "yen",
                "#1f4e8c",
            )
        else:
            raise HTTPException(404, "No such chart")
        svg = await run_in_threadpool(make)
        _charts[key] = svg
    return Response(
        svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=60"}
    )


@router.get("/points/staff/dashboard.csv")
def staff_dashboard_csv(request: Request, user: PageUser) -> Response:
    tenant, _, _ = _staff(request, user)
    board = _points(request).dashboard(tenant, months=12)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(
        [
            "月",
            "付与ポイント",
            "お店での利用ポイント",
            "クーポン利用額",
            "返金ポイント",
            "失効ポイント",
            "ありがとうポイント",
            "CO2削減量(kg)",
            "活動した住民数",
            "地域ポイント販売額(円)",
            "プレミアム(pt)",
        ]
    )
    for m in board.months:
        f = board.flows[m]
        w.writerow(
            [
                m,
                f["issued"],
                f["spent"],
                f["coupon"],
                f["refunded"],
                f["expired"],
                f["thanks"],
                f"{sum(board.co2_by_month[m].values()):.3f}",
                board.active[m],
                f["sold_yen"],
                f["premium"],
            ]
        )
    return _csv(buf.getvalue(), f"points-{tenant}-monthly.csv")


@router.post("/points/staff/publish")
def staff_publish(request: Request, user: FormUser) -> Response:
    tenant, _, _ = _staff(request, user, "admin")
    services = request.app.state.services
    n = publish_months(services, tenant, SYSTEM)
    return RedirectResponse(f"/points/staff?tenant={tenant}&published={n}", status_code=303)


@router.get("/points/staff/residents", response_class=HTMLResponse)
def staff_residents(request: Request, user: PageUser) -> Response:
    return _staff_residents(request, user)


def _staff_residents(request: Request, user: PageUser, flash: dict | None = None) -> Response:
    tenant, role, tenants = _staff(request, user, "clerk")
    points = _points(request)
    context = {
        "unverified": points.list_residents(tenant, unverified=True),
        "residents": points.list_residents(tenant, limit=50),
        "flash": flash,
    }
    return _staff_page(request, user, "staff_residents.html.j2", tenant, role, tenants, context)


@router.post("/points/staff/residents/verify", response_class=HTMLResponse)
def staff_verify(request: Request, user: FormUser, resident: Annotated[int, Form()]) -> Response:
    tenant, _, _ = _staff(request, user, "clerk")
    done = _points(request).verify_resident(tenant, resident, f"staff:{user.username}")
    flash = _flash(
        request, f"{done.real_name} さんの実名を確認しました。", f"Verified {done.real_name}."
    )
    return _staff_residents(request, user, flash)


@router.get("/points/staff/approvals", response_class=HTMLResponse)
def staff_approvals(request: Request, user: PageUser) -> Response:
    return _staff_approvals(request, user)


def _staff_approvals(request: Request, user: PageUser, flash: dict | None = None) -> Response:
    tenant, role, tenants = _staff(request, user, "clerk")
    context = {"pending": _points(request).pending_logs(tenant), "flash": flash}
    return _staff_page(request, user, "staff_approvals.html.j2", tenant, role, tenants, context)


@router.post("/points/staff/approvals", response_class=HTMLResponse)
def staff_decide(
    request: Request,
    user: FormUser,
    log: Annotated[str, Form()],
    decision: Annotated[str, Form()],
) -> Response:
    tenant, _, _ = _staff(request, user, "clerk")
    try:
        done = _points(request).decide_log(tenant, log, decision == "approve", user.username)
        flash = (
            _flash(
                request,
                f"承認し、{done.points} pt を付与しました。",
                f"Approved: {done.points} pt.",
            )
            if done.status == "approved"
            else _flash(request, "却下しました。", "Rejected.")
        )
    except PointsError as exc:
        flash = _err(request, exc)
    return _staff_approvals(request, user, flash)


@router.get("/points/staff/volunteer", response_class=HTMLResponse)
def staff_volunteer(request: Request, user: PageUser) -> Response:
    return _staff_volunteer(request, user)


def _staff_volunteer(
    request: Request, user: PageUser, flash: dict | None = None, form: dict | None = None
) -> Response:
    tenant, role, tenants = _staff(request, user, "clerk")
    context = {
        "recent": _points(request).volunteering_list(tenant),
        "form_id": _new_id(),
        "form": form or {"activity_date": today().isoformat(), "hours": "2", "points": "200"},
        "flash": flash,
    }
    return _staff_page(request, user, "staff_volunteer.html.j2", tenant, role, tenants, context)


@router.post("/points/staff/volunteer", response_class=HTMLResponse)
def staff_volunteer_record(
    request: Request,
    user: FormUser,
    id: Annotated[str, Form()],  # noqa: A002
    member_code: Annotated[str, Form()] = "",
    activity: Annotated[str, Form()] = "",
    activity_date: Annotated[str, Form()] = "",
    hours: Annotated[str, Form()] = "",
    points: Annotated[str, Form()] = "",
) -> Response:
    tenant, _, _ = _staff(request, user, "clerk")
    form = {
        "member_code": member_code,
        "activity": activity,
        "activity_date": activity_date,
        "hours": hours,
        "points": points,
    }
    try:
        spec = VolunteerIn(
            id=id,
            member_code=member_code,
            activity=activity,
            activity_date=date.fromisoformat(activity_date),
            hours=float(hours),
            points=int(points),
        )
    except ValueError:
        flash = _flash(request, "入力を確認してください。", "Check the input.", "error")
        return _staff_volunteer(request, user, flash, form)
    try:
        done = _points(request).record_volunteering(tenant, spec, user.username)
    except PointsError as exc:
        return _staff_volunteer(request, user, _err(request, exc), form)
    flash = _flash(
        request,
        f"{done.get('real_name', '')} さんに {done['points']:,} pt を付与しました。",
        f"Credited {done['points']:,} pt.",
    )
    return _staff_volunteer(request, user, flash)


@router.get("/points/staff/sales", response_class=HTMLResponse)
def staff_sales(request: Request, user: PageUser) -> Response:
    return _staff_sales(request, user)


def _staff_sales(
    request: Request,
    user: PageUser,
    flash: dict | None = None,
    form: dict | None = None,
    sale: Any = None,
) -> Response:
    tenant, role, tenants = _staff(request, user, "clerk")
    points = _points(request)
    context = {
        "terms": points.purchase_terms(tenant),
        "recent": points.recent_sales(tenant),
        "form": form or {},
        "sale": sale,
        "bought": points.purchased_this_year(tenant, sale.resident) if sale else 0,
        "flash": flash,
    }
    return _staff_page(request, user, "staff_sales.html.j2", tenant, role, tenants, context)


@router.post("/points/staff/sales", response_class=HTMLResponse)
def staff_sell(
    request: Request,
    user: FormUser,
    member_code: Annotated[str, Form()] = "",
    yen: Annotated[str, Form()] = "",
    receipt: Annotated[str, Form()] = "",
) -> Response:
    """窓口販売: the cash was taken at the counter; this records it and credits the points.
    The receipt number is the idempotency key, so a double submit sells once."""
    tenant, _, _ = _staff(request, user, "clerk")
    form = {"member_code": member_code, "yen": yen, "receipt": receipt}
    amount = yen.strip().replace(",", "").replace("円", "").replace("¥", "")
    if not amount.isdigit() or int(amount) <= 0:
        flash = _flash(
            request,
            "購入金額は1円以上の整数（円）で入力してください（販売していません）。",
            "Enter the amount as a whole number of yen, 1 or more (nothing was sold).",
            "error",
        )
        return _staff_sales(request, user, flash, form)
    try:
        spec = SaleIn(receipt=receipt.strip(), member_code=member_code.strip(), yen=int(amount))
    except ValueError:
        flash = _flash(
            request,
            "会員番号と受付番号（半角英数字とハイフン、32文字まで）を確認してください（販売していません）。",
            "Check the member code and the receipt number (nothing was sold).",
            "error",
        )
        return _staff_sales(request, user, flash, form)
    try:
        sale = _points(request).sell(tenant, spec)
    except PointsError as exc:
        return _staff_sales(request, user, _err(request, exc), form)
    done = sale.purchase
    if sale.replay:
        flash = _flash(
            request,
            f"受付番号 {sale.receipt} はすでに販売済みです（二重送信のため、もう一度は販売していません）。",
            f"Receipt {sale.receipt} was already sold (not sold twice).",
            "warn",
        )
    else:
        flash = _flash(
            request,
            f"{sale.resident.real_name} さんに {done.points:,} pt（{done.yen:,}円＋プレミアム {done.premium:,} pt）を販売しました。",
            f"Sold {done.points:,} pt (¥{done.yen:,} + {done.premium:,} pt premium).",
        )
    return _staff_sales(request, user, flash, sale=sale)


@router.get("/points/staff/shops", response_class=HTMLResponse)
def staff_shops(request: Request, user: PageUser) -> Response:
    return _staff_shops(request, user)


def _staff_shops(
    request: Request, user: PageUser, flash: dict | None = None, form: dict | None = None
) -> Response:
    tenant, role, tenants = _staff(request, user, "admin")
    context = {"shops": _points(request).list_shops(tenant), "flash": flash, "form": form or {}}
    return _staff_page(request, user, "staff_shops.html.j2", tenant, role, tenants, context)


@router.post("/points/staff/shops", response_class=HTMLResponse)
async def staff_shop_register(request: Request, user: FormUser) -> Response:
    tenant, _, _ = _staff(request, user, "admin")
    form = {k: str(v) for k, v in (await request.form()).items() if k != "csrf_token"}
    try:
        fee = round(float(form.get("fee_percent") or 0) * 100)
        spec = ShopCreate.model_validate(
            {k: v or None for k, v in form.items() if k in ShopCreate.model_fields}
            | {"fee_bp": fee, "category": form.get("category", "")}
        )
    except ValueError:
        flash = _flash(
            request,
            "入力を確認してください（店舗コードは半角英小文字・数字・ハイフン、口座番号は7桁まで）。",
            "Check the input.",
            "error",
        )
        return _staff_shops(request, user, flash, form)
    shop = await run_in_threadpool(_points(request).register_shop, tenant, spec)
    flash = _flash(request, f"{shop.name} を登録しました。", f"Registered {shop.name}.")
    return _staff_shops(request, user, flash)


@router.get("/points/staff/actions", response_class=HTMLResponse)
def staff_actions(request: Request, user: PageUser) -> Response:
    return _staff_actions(request, user)


def _staff_actions(request: Request, user: PageUser, flash: dict | None = None) -> Response:
    tenant, role, tenants = _staff(request, user, "admin")
    points = _points(request)
    context = {
        "actions": points.actions(tenant),
        "factors": points.factors(tenant),
        "flash": flash,
        "fy": today().year if today().month >= 4 else today().year - 1,
    }
    return _staff_page(request, user, "staff_actions.html.j2", tenant, role, tenants, context)


@router.post("/points/staff/actions", response_class=HTMLResponse)
async def staff_action_save(request: Request, user: FormUser) -> Response:
    tenant, _, _ = _staff(request, user, "admin")
    form = {k: str(v) for k, v in (await request.form()).items() if k != "csrf_token"}
    try:
        spec = ActionIn.model_validate(form | {"active": form.get("active") == "on"})
    except ValueError:
        flash = _flash(request, "入力を確認してください。", "Check the input.", "error")
        return _staff_actions(request, user, flash)
    action = _points(request).upsert_action(tenant, spec)
    flash = _flash(request, f"「{action.name_ja}」を保存しました。", f"Saved {action.name_en}.")
    return _staff_actions(request, user, flash)


@router.post("/points/staff/factors", response_class=HTMLResponse)
async def staff_factor_add(request: Request, user: FormUser) -> Response:
    tenant, _, _ = _staff(request, user, "admin")
    form = {k: str(v) for k, v in (await request.form()).items() if k != "csrf_token"}
    units = {"electricity": "kWh", "gasoline": "L", "city_gas": "Nm3"}
    try:
        spec = FactorCreate.model_validate(form | {"unit": units.get(form.get("code", ""), "")})
        factor = _points(request).add_factor(tenant, spec)
        flash = _flash(
            request,
            f"{factor.fiscal_year}年度の係数を登録しました。",
            f"Added the FY{factor.fiscal_year} factor.",
        )
    except PointsError as exc:
        flash = _err(request, exc)
    except ValueError:
        flash = _flash(request, "入力を確認してください。", "Check the input.", "error")
    return _staff_actions(request, user, flash)


@router.get("/points/staff/coupons", response_class=HTMLResponse)
def staff_coupons(request: Request, user: PageUser) -> Response:
    return _staff_coupons(request, user)


def _staff_coupons(
    request: Request, user: PageUser, flash: dict | None = None, form: dict | None = None
) -> Response:
    tenant, role, tenants = _staff(request, user, "admin")
    points = _points(request)
    context = {
        "coupons": points.list_coupons(tenant),
        "shops": points.list_shops(tenant),
        "flash": flash,
        "form": form
        or {
            "valid_from": today().isoformat(),
            "valid_until": (today() + timedelta(days=30)).isoformat(),
            "quota_per_resident": "1",
        },
    }
    return _staff_page(request, user, "staff_coupons.html.j2", tenant, role, tenants, context)


@router.post("/points/staff/coupons", response_class=HTMLResponse)
async def staff_coupon_create(request: Request, user: FormUser) -> Response:
    tenant, _, _ = _staff(request, user, "admin")
    raw = await request.form()
    form = {k: str(v) for k, v in raw.items() if k not in ("csrf_token", "shops")}
    try:
        spec = CouponCreate.model_validate(
            {k: v or None for k, v in form.items()}
            | {"shops": [str(s) for s in raw.getlist("shops")]}
        )
        coupon = _points(request).create_coupon(tenant, spec, user.username)
    except PointsError as exc:
        return _staff_coupons(request, user, _err(request, exc), form)
    except ValueError:
        flash = _flash(request, "入力を確認してください。", "Check the input.", "error")
        return _staff_coupons(request, user, flash, form)
    flash = _flash(request, f"「{coupon.title_ja}」を発行しました。", f"Issued {coupon.title_en}.")
    return _staff_coupons(request, user, flash)


def _month_param(request: Request) -> date:
    raw = request.query_params.get("month")
    if raw:
        try:
            return date.fromisoformat(raw + "-01")
        except ValueError:
            pass
    return (today().replace(day=1) - timedelta(days=1)).replace(day=1)  # last month


@router.get("/points/staff/settlement", response_class=HTMLResponse)
def staff_settlement(request: Request, user: PageUser) -> Response:
    return _staff_settlement(request, user)


def _staff_settlement(
    request: Request,
    user: PageUser,
    flash: dict | None = None,
    month: date | None = None,
    zengin: dict[str, str] | None = None,
) -> Response:
    tenant, role, tenants = _staff(request, user, "admin")
    points = _points(request)
    month = month or _month_param(request)
    options = []
    day = today().replace(day=1)
    for _ in range(12):
        options.append(day)
        day = (day - timedelta(days=1)).replace(day=1)
    rows = points.month_statements(tenant, month)
    # A shop has a row per merchant account (行政ポイント, 地域ポイント): it counts as
    # settled once one of them is and none is left open.
    open_shops = {shop.id for shop, s in rows if s.net > 0 and not s.settled}
    context = {
        "month": month,
        "options": options,
        "rows": rows,
        "settled": {s.merchant for _, s in rows if s.settled},
        "shops": len({shop.id for shop, _ in rows}),
        "shops_settled": len({shop.id for shop, s in rows if s.settled} - open_shops),
        "flash": flash,
        "zengin": zengin
        or {**points.zengin_originator(tenant), "transfer_date": _next_weekday(3).isoformat()},
        "total": {
            "net": sum(s.net for _, s in rows),
            "fee": sum(s.fee_yen for _, s in rows),
            "payable": sum(s.payable_yen for _, s in rows),
        },
    }
    return _staff_page(request, user, "staff_settlement.html.j2", tenant, role, tenants, context)


@router.post("/points/staff/settlement", response_class=HTMLResponse)
def staff_settle(request: Request, user: FormUser, month: Annotated[str, Form()]) -> Response:
    tenant, _, _ = _staff(request, user, "admin")
    try:
        start = date.fromisoformat(month + "-01")
    except ValueError:
        raise HTTPException(400, "month: YYYY-MM") from None
    try:
        done = _points(request).settle_month(tenant, start)
        paid = [s for _, s in done if s is not None]
        shops = len({shop.code for shop, s in done if s is not None})
        flash = _flash(
            request,
            f"{start:%Y年%m月}分を精算しました（{shops}店舗、振込額 合計 {sum(s.payable_yen for s in paid):,}円）。",
            f"Settled {start:%Y-%m}: {shops} shops, ¥{sum(s.payable_yen for s in paid):,} payable.",
        )
    except PointsError as exc:
        flash = _err(request, exc)
    return _staff_settlement(request, user, flash, start)


@router.get("/points/staff/settlement.csv")
def staff_settlement_csv(request: Request, user: PageUser) -> Response:
    tenant, _, _ = _staff(request, user, "admin")
    month = _month_param(request)
    data = _points(request).settlements_csv(tenant, month)
    return Response(
        data,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''settlement-{tenant}-{month:%Y-%m}.csv"
        },
    )


@router.post("/points/staff/settlement.zengin", response_model=None)
def staff_settlement_zengin(
    request: Request,
    user: FormUser,
    month: Annotated[str, Form()],
    transfer_date: Annotated[str, Form()] = "",
    code: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    bank_code: Annotated[str, Form()] = "",
    bank_name: Annotated[str, Form()] = "",
    branch_code: Annotated[str, Form()] = "",
    branch_name: Annotated[str, Form()] = "",
    account_type: Annotated[str, Form()] = "1",
    account_number: Annotated[str, Form()] = "",
) -> Response:
    """The month's 全銀協 総合振込 file (Shift_JIS, 120-byte records) for the city's bank."""
    tenant, _, _ = _staff(request, user, "admin")
    try:
        start = date.fromisoformat(month + "-01")
    except ValueError:
        raise HTTPException(400, "month: YYYY-MM") from None
    origin = Originator(
        code=code.strip(),
        name=name.strip(),
        bank_code=bank_code.strip(),
        bank_name=bank_name.strip(),
        branch_code=branch_code.strip(),
        branch_name=branch_name.strip(),
        account_type=account_type.strip(),
        account_number=account_number.strip(),
    )
    typed = {**dataclasses.asdict(origin), "transfer_date": transfer_date}
    try:
        day = date.fromisoformat(transfer_date)
    except ValueError:
        flash = _flash(
            request, "振込指定日を正しく入力してください。", "Enter a valid transfer date.", "error"
        )
        return _staff_settlement(request, user, flash, start, typed)
    try:
        data = _points(request).settlements_zengin(tenant, start, origin, day)
    except PointsError as exc:
        return _staff_settlement(request, user, _err(request, exc), start, typed)
    return Response(
        data,
        media_type="text/plain; charset=Shift_JIS",
        headers={
            "Content-Disposition": f'attachment; filename="sogo-furikomi-{tenant}-{start:%Y-%m}.txt"'
        },
    )


def _next_weekday(days_ahead: int) -> date:
    day = today() + timedelta(days=days_ahead)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


@router.get("/points/help", response_class=HTMLResponse)
def help_page(request: Request, user: OptionalPageUser) -> Response:
    return render(request, "points/help.html.j2", {}, user=user)
