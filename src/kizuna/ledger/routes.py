"""HTTP routes of the ledger: ``/ledger/...`` for services and municipal staff.

Tenancy comes from the ``NGSILD-Tenant`` header through ``ReadScope`` / ``WriteScope``.
Ledger data is never open data: anonymous callers are refused even for reads. Moving
points needs a writing principal other than a device; currencies, accounts, merchant
terms and settlement need municipal staff (or a platform admin, or a tenant write key).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import orjson
from fastapi import Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel

from kizuna.auth.service import Role
from kizuna.ledger.apply import result_problem
from kizuna.ledger.errors import ledger_problem
from kizuna.ledger.schemas import (
    MAX_INT,
    AccountCreate,
    AccountPublic,
    CheckpointPublic,
    ConsistencyProof,
    CurrencyCreate,
    CurrencyPublic,
    ExpiryPublic,
    LotPublic,
    MerchantTerms,
    PurchaseCreate,
    PurchaseRules,
    Receipt,
    SettlementPublic,
    TransferPublic,
)
from kizuna.ledger.service import MAX_BATCH, Ledger
from kizuna.ledger.zengin import Originator
from kizuna.problems import forbidden, unauthorized
from kizuna.routing import ModuleRouter
from kizuna.tenancy.deps import ReadScope, WriteScope
from kizuna.tenancy.service import TenantScope

router = ModuleRouter(prefix="/ledger", tags=["ledger"])
_STAFF = {Role.PLATFORM_ADMIN, Role.MUNICIPAL_STAFF}


def _ledger(request: Request) -> Ledger:
    return request.app.state.services.ledger


def _reader(scope: TenantScope) -> str:
    if scope.principal.is_anonymous:
        raise unauthorized("The ledger is not open data: sign in or use an API key")
    return scope.tenant


def _mover(scope: TenantScope) -> str:
    if scope.principal.role == Role.DEVICE:
        raise forbidden("Devices cannot move points")
    return scope.tenant


def _staff(scope: TenantScope) -> str:
    p = scope.principal
    if p.role in _STAFF or (p.kind == "api_key" and p.can_write):
        return scope.tenant
    raise forbidden("Only municipal staff manage currencies, accounts and settlement")


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


# --- currencies and accounts -------------------------------------------------------------


@router.post("/currencies", status_code=201)
def create_currency(request: Request, scope: WriteScope, body: CurrencyCreate) -> CurrencyPublic:
    return _ledger(request).create_currency(_staff(scope), body)


@router.get("/currencies")
def list_currencies(request: Request, scope: ReadScope) -> list[CurrencyPublic]:
    return _ledger(request).list_currencies(_reader(scope))


@router.put("/currencies/{code}/purchase-rules")
def set_purchase_rules(
    request: Request, scope: WriteScope, code: str, body: PurchaseRules
) -> CurrencyPublic:
    """Per-wallet purchase limits of a purchased currency (yen per purchase, per year)."""
    return _ledger(request).set_purchase_rules(_staff(scope), code, body)


@router.post("/accounts", status_code=201)
def open_account(request: Request, scope: WriteScope, body: AccountCreate) -> AccountPublic:
    return _ledger(request).open_account(_staff(scope), body)


@router.get("/accounts")
def list_accounts(
    request: Request,
    scope: ReadScope,
    kind: str | None = None,
    currency: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AccountPublic]:
    return _ledger(request).list_accounts(
        _reader(scope), kind=kind, currency=currency, after=after, limit=limit
    )


@router.get("/accounts/{code:path}/lots")
def account_lots(request: Request, scope: ReadScope, code: str) -> list[LotPublic]:
    return _ledger(request).lots(_reader(scope), code)


@router.get("/accounts/{code:path}/expiring")
def account_expiring(request: Request, scope: ReadScope, code: str) -> list[ExpiryPublic]:
    """What expires when (「いつ、何ポイント失効するか」)."""
    return _ledger(request).expiring(_reader(scope), code)


@router.get("/accounts/{code:path}/transfers")
def account_transfers(
    request: Request,
    scope: ReadScope,
    code: str,
    after_seq: Annotated[int, Query(ge=-1, le=MAX_INT)] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TransferPublic]:
    return _ledger(request).list_transfers(
        _reader(scope), account=code, after_seq=after_seq, limit=limit
    )


@router.post("/accounts/{code:path}/close")
def close_account(request: Request, scope: WriteScope, code: str) -> AccountPublic:
    return _ledger(request).close_account(_staff(scope), code)


@router.get("/accounts/{code:path}")
def get_account(request: Request, scope: ReadScope, code: str) -> AccountPublic:
    return _ledger(request).get_account(_reader(scope), code)


# --- transfers ---------------------------------------------------------------------------


@router.post("/transfers")
async def post_transfers(request: Request, scope: WriteScope) -> Response:
    """One transfer (an object) or a batch (an array, at most 8190, one transaction).

    One transfer: 201 with the transfer when created, 200 with the first result when the
    same id and body were accepted before, else a ProblemDetails (409 ``id-conflict``,
    422 ``insufficient-funds``, ...). A batch: 200 with one result per transfer.
    """
    tenant = _mover(scope)
    ledger = _ledger(request)
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ledger_problem("invalid-request", f"the body is not JSON: {exc}") from None
    if isinstance(body, list):
        if len(body) > MAX_BATCH:
            raise ledger_problem("invalid-request", f"at most {MAX_BATCH} transfers per batch")
        if not all(isinstance(item, dict) for item in body):
            raise ledger_problem("invalid-request", "a batch is an array of transfer objects")
        results = await run_in_threadpool(ledger.post_transfers, tenant, body)
        return _json([r.model_dump(mode="json", exclude_none=True) for r in results])
    if not isinstance(body, dict):
        raise ledger_problem("invalid-request", "send a transfer object or an array of them")
    # The group commit runs on the ledger's writer thread; the event loop just waits.
    result = await ledger.post_transfer_async(tenant, body)
    if result.status == "failed":
        raise result_problem(result)
    assert result.transfer is not None
    return _json(
        result.transfer.model_dump(mode="json"), 201 if result.status == "created" else 200
    )


@router.get("/transfers")
def list_transfers(
    request: Request,
    scope: ReadScope,
    after_seq: Annotated[int, Query(ge=-1, le=MAX_INT)] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TransferPublic]:
    return _ledger(request).list_transfers(_reader(scope), after_seq=after_seq, limit=limit)


@router.get("/transfers/{transfer_id}")
def get_transfer(request: Request, scope: ReadScope, transfer_id: str) -> TransferPublic:
    return _ledger(request).get_transfer(_reader(scope), transfer_id)


@router.get("/transfers/{transfer_id}/receipt")
def receipt(request: Request, scope: ReadScope, transfer_id: str) -> Receipt:
    """The transfer with its Merkle inclusion proof under a signed checkpoint."""
    return _ledger(request).receipt(_reader(scope), transfer_id)


@router.post("/purchases")
def purchase(request: Request, scope: WriteScope, body: PurchaseCreate) -> Response:
    """Record yen paid at a counter: 201 with the purchase (yen + premium points credited),
    200 with the first result when the same id and body were sent before."""
    done = _ledger(request).purchase(_staff(scope), body)
    return _json(done.model_dump(mode="json"), 201 if done.created else 200)


# --- audit -------------------------------------------------------------------------------


@router.get("/checkpoints")
def list_checkpoints(
    request: Request, scope: ReadScope, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[CheckpointPublic]:
    return _ledger(request).checkpoints(_reader(scope), limit=limit)


@router.post("/checkpoints")
def sign_checkpoint(request: Request, scope: WriteScope) -> Response:
    """Publish a checkpoint of the log now (they are also published on an interval)."""
    cp = _ledger(request).checkpoint(_staff(scope))
    return _json(cp.model_dump(mode="json") if cp else None)


@router.get("/consistency")
def consistency(
    request: Request,
    scope: ReadScope,
    old: Annotated[int, Query(ge=1, le=MAX_INT)],
    new: Annotated[int, Query(ge=1, le=MAX_INT)],
) -> ConsistencyProof:
    """RFC 9162 consistency proof between two checkpoint sizes."""
    return _ledger(request).consistency_proof(_reader(scope), old, new)


@router.get("/keys")
def public_key(request: Request, scope: ReadScope) -> dict[str, str]:
    """The tenant's Ed25519 checkpoint key (auditors pin this)."""
    from kizuna.ledger.keys import key_id

    pub = _ledger(request).public_key(_reader(scope))
    return {"algorithm": "Ed25519", "key_id": key_id(pub), "public_key": pub.hex()}


# --- settlement --------------------------------------------------------------------------


@router.put("/merchants/{code:path}")
def set_terms(request: Request, scope: WriteScope, code: str, body: MerchantTerms) -> MerchantTerms:
    return _ledger(request).set_merchant_terms(_staff(scope), code, body)


class SettleRequest(BaseModel):
    merchant: str
    day: date  # any day of the period to settle


@router.get("/statements/{code:path}")
def statement(request: Request, scope: ReadScope, code: str, day: date) -> SettlementPublic:
    return _ledger(request).statement(_reader(scope), code, day)


@router.post("/settlements")
def settle(request: Request, scope: WriteScope, body: SettleRequest) -> Response:
    """Settle a finished period: 201 when paid now, 200 with the first result if already paid."""
    s = _ledger(request).settle(_staff(scope), body.merchant, body.day)
    return _json(s.model_dump(mode="json"), 201 if s.created else 200)


@router.get("/settlements")
def list_settlements(
    request: Request, scope: ReadScope, since: date | None = None, until: date | None = None
) -> list[SettlementPublic]:
    return _ledger(request).settlements(_reader(scope), since, until)


@router.get("/settlements.csv")
def settlements_csv(
    request: Request, scope: ReadScope, since: date | None = None, until: date | None = None
) -> Response:
    data = _ledger(request).settlements_csv(_staff(scope), since, until)
    return Response(
        data,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="settlements.csv"'},
    )


class ZenginRequest(BaseModel):
    originator: dict[str, str]  # code, name, bank_code, bank_name, branch_code, ...
    transfer_date: date
    since: date | None = None
    until: date | None = None


@router.post("/settlements/zengin")
def settlements_zengin(request: Request, scope: WriteScope, body: ZenginRequest) -> Response:
    """The 全銀協 総合振込 file of the settlements (Shift_JIS, 120-byte records)."""
    try:
        origin = Originator(**body.originator)
        data = _ledger(request).settlements_zengin(
            _staff(scope), origin, body.transfer_date, body.since, body.until
        )
    except (TypeError, ValueError) as exc:
        raise ledger_problem("invalid-request", str(exc)) from None
    return Response(
        data,
        media_type="text/plain; charset=Shift_JIS",
        headers={"Content-Disposition": 'attachment; filename="sogo_furikomi.txt"'},
    )
