"""REST routes of the points programme (``/points/api/...``) for apps and shop registers.

Tenancy and credentials come from below the routes (``tenancy.deps``): a resident acts with
their own bearer token (or an OIDC token) in their municipality; who the wallet belongs to
is the signed-in user, never a parameter. Errors are ProblemDetails whose ``detail`` is the
Japanese message (``ja`` / ``en`` carry both); nothing is moved when one is returned.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.concurrency import run_in_threadpool

from kizuna.auth.service import Role
from kizuna.points.publish import monthly_entities
from kizuna.points.schemas import EcoLog, EcoLogIn, Payment, PaymentIn, Resident, ThanksIn
from kizuna.points.service import Points, PointsError, error, ledger_error
from kizuna.problems import forbidden
from kizuna.routing import ModuleRouter
from kizuna.tenancy.deps import ReadScope
from kizuna.tenancy.service import TenantScope

router = ModuleRouter(prefix="/points/api", tags=["points"])


def _points(request: Request) -> Points:
    return request.app.state.services.points


def _me(request: Request, scope: TenantScope) -> Resident:
    principal = scope.principal
    if principal.role != Role.RESIDENT or principal.kind not in ("user", "oidc"):
        raise forbidden("Only residents have a wallet")
    username = principal.subject.split(":", 1)[1]
    resident = _points(request).resident_for_user(scope.tenant, username)
    if resident is None:
        raise error(
            "not-registered",
            "ポイントの利用登録がまだです。",
            "Register for the points programme first.",
            404,
        )
    return resident


@router.post("/payments", response_model=Payment)
async def authorize(request: Request, scope: ReadScope, body: PaymentIn) -> Payment:
    """Hold the points for a payment at a shop (two-phase); confirm within 5 minutes.

    The checks run in a worker thread; the wait for the ledger's group commit does not
    hold a thread, so every waiting payment joins the same commit."""
    points = _points(request)
    resident, plan = await run_in_threadpool(
        lambda: _with_me(request, scope, lambda me: points.plan_authorize(scope.tenant, me, body))
    )
    if isinstance(plan, Payment):
        return plan
    first = await _post(points, scope.tenant, plan.items)
    if isinstance(first, PointsError):
        raise await run_in_threadpool(points.refused, scope.tenant, resident, plan, first)
    if first.status == "exists":
        return await run_in_threadpool(points.authorized, scope.tenant, resident, plan, first)
    return points.authorized(scope.tenant, resident, plan, first)


@router.post("/payments/{payment_id}/confirm", response_model=Payment)
async def confirm(request: Request, scope: ReadScope, payment_id: str) -> Payment:
    points = _points(request)
    resident, plan = await run_in_threadpool(
        lambda: _with_me(
            request, scope, lambda me: points.plan_confirm(scope.tenant, me, payment_id)
        )
    )
    if isinstance(plan, Payment):
        return plan
    first = await _post(points, scope.tenant, plan.items)
    if isinstance(first, PointsError):
        raise await run_in_threadpool(points.confirm_refused, scope.tenant, payment_id, first)
    if plan.discount or first.status == "exists":  # a database write or read follows
        return await run_in_threadpool(points.confirmed, scope.tenant, resident, plan, first)
    return points.confirmed(scope.tenant, resident, plan, first)  # cached shop name only


def _with_me(request: Request, scope: TenantScope, then: Any) -> tuple[Resident, Any]:
    me = _me(request, scope)
    return me, then(me)


async def _post(points: Points, tenant: str, items: list[Any]) -> Any:
    """A single transfer awaits the ledger's group commit without a thread; a linked chain
    (a payment with a coupon) is one ledger transaction in a worker thread."""
    if len(items) == 1:
        result = await points.ledger.post_transfer_async(tenant, items[0])
        return result if result.ok else ledger_error(result)
    try:
        return (await run_in_threadpool(points.post_chain, tenant, items))[0]
    except PointsError as exc:
        return exc


@router.post("/payments/{payment_id}/cancel", response_model=Payment)
async def cancel(request: Request, scope: ReadScope, payment_id: str) -> Payment:
    points = _points(request)
    resident = await run_in_threadpool(_me, request, scope)
    return await run_in_threadpool(points.cancel, scope.tenant, resident, payment_id)


@router.get("/payments/{payment_id}", response_model=Payment)
def get_payment(request: Request, scope: ReadScope, payment_id: str) -> Payment:
    resident = _me(request, scope)
    payment = _points(request).payment(scope.tenant, payment_id)
    if payment is None or payment.member_code != resident.member_code:
        raise error("payment-not-found", "お支払いが見つかりません。", "No such payment.", 404)
    return payment


@router.get("/wallet")
def wallet(request: Request, scope: ReadScope) -> dict[str, Any]:
    resident = _me(request, scope)
    w = _points(request).wallet(scope.tenant, resident)
    return {
        "member_code": resident.member_code,
        "verified": resident.verified,
        "balance": w.balance,
        "available": w.available,
        "expiring": [{"expires_at": t, "amount": n} for t, n in w.expiring],
        "purchased": None
        if w.purchased is None
        else {
            "currency": w.purchased.currency,
            "balance": w.purchased.balance,
            "available": w.purchased.available,
            "expiring": [{"expires_at": t, "amount": n} for t, n in w.purchased.expiring],
        },
        "history": w.history,
    }


@router.post("/eco", response_model=EcoLog)
def log_eco(request: Request, scope: ReadScope, body: EcoLogIn) -> EcoLog:
    return _points(request).log_action(scope.tenant, _me(request, scope), body)


@router.post("/thanks")
def thanks(request: Request, scope: ReadScope, body: ThanksIn) -> dict[str, Any]:
    result = _points(request).thank(scope.tenant, _me(request, scope), body)
    return {"transfer_id": result["transfer"].id, "replay": result["replay"]}


@router.get("/aggregates")
def aggregates(request: Request, scope: ReadScope) -> list[dict[str, Any]]:
    """The monthly aggregates as NGSI-LD entities (what publishing puts in the broker)."""
    if scope.principal.role not in (Role.MUNICIPAL_STAFF, Role.PLATFORM_ADMIN):
        raise forbidden("Municipal staff only")
    return monthly_entities(request.app.state.services, scope.tenant)


@router.post("/residents/me/verify-oidc", response_model=None)
def verify_oidc(
    request: Request,
    scope: ReadScope,
    authorization: Annotated[str, Header()] = "",
) -> dict[str, Any]:
    """実名 verification by the configured OIDC provider's identity claim: the token was
    checked (signature, issuer, audience) by the authenticator; the claim named by
    ``KIZUNA_POINTS_OIDC_VERIFIED_CLAIM`` must be present and truthy."""
    settings = request.app.state.services.settings
    claim = settings.points_oidc_verified_claim
    if scope.principal.kind != "oidc" or not claim:
        raise error(
            "oidc-not-configured",
            "OIDCによる本人確認は設定されていません。窓口で確認してください。",
            "OIDC identity verification is not configured.",
            400,
        )
    resident = _me(request, scope)
    # PyJWT (with cryptography, ~10 MB) is loaded only where OIDC is configured.
    import jwt

    token = authorization.partition(" ")[2]
    claims = jwt.decode(token, options={"verify_signature": False})  # verified above
    value: Any = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not value:
        raise PointsError(
            403,
            "oidc-not-verified",
            "本人確認の情報がトークンにありません。",
            "The token carries no identity verification.",
        )
    done = _points(request).verify_resident(
        scope.tenant, resident.id, f"oidc:{settings.oidc_issuer or 'provider'}"
    )
    return {"verified": done.verified, "verified_by": done.verified_by}
