"""What every area of the points module shares: errors, ids, account names, row
conversions, and the base class holding the engine, the ledger and the caches."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from cachetools import TTLCache
from sqlalchemy import Engine

from kizuna.ledger.schemas import MerchantTerms, TransferCreate, TransferPublic, TransferResult
from kizuna.ledger.service import Ledger, derived_id
from kizuna.points.schemas import Programme, Resident, Shop, ShopCreate
from kizuna.problems import Problem

PREFIX = "urn:kizuna:errors:points:"
CACHE_SECONDS = 5
HOLD_SECONDS = 300  # a payment's hold lasts 5 minutes (then the ledger's job voids it)

LEDGER_MESSAGES: dict[str, tuple[str, str]] = {
    "insufficient-funds": (
        "ポイント残高が足りません。",
        "Not enough points in the wallet.",
    ),
    "daily-limit-exceeded": (
        "きょう贈れるポイントの上限を超えます。",
        "This is over today's limit for thanks.",
    ),
    "credit-cap-exceeded": ("予算の上限に達しました。", "The budget cap is reached."),
    "debit-cap-exceeded": ("予算の上限に達しました。", "The budget cap is reached."),
    "pending-expired": (
        "お支払いの有効期限（5分）が切れました。もう一度QRコードを読み取ってください。",
        "The payment expired (5 minutes). Scan the QR code again.",
    ),
    "pending-already-resolved": (
        "このお支払いはすでに確定または取消されています。",
        "This payment was already completed or cancelled.",
    ),
    "account-closed": ("このアカウントは停止されています。", "The account is closed."),
}


class PointsError(Problem):
    """A refusal with a message for people (Japanese first); nothing was moved."""

    def __init__(self, status: int, code: str, ja: str, en: str) -> None:
        super().__init__(status, PREFIX + code, en, ja, ja=ja, en=en)
        self.code = code
        self.ja = ja
        self.en = en


def error(code: str, ja: str, en: str, status: int = 422) -> PointsError:
    return PointsError(status, code, ja, en)


def ledger_error(result: TransferResult) -> PointsError:
    """A failed ledger result as a PointsError with words for people."""
    assert result.error is not None
    code = result.error.type.rsplit(":", 1)[-1]
    ja, en = LEDGER_MESSAGES.get(
        code, ("処理できませんでした。時間をおいてもう一度お試しください。", "Could not do that.")
    )
    return PointsError(result.error.status, code, ja, en)


def _tid(tenant: str, *parts: object) -> str:
    return derived_id("points", tenant, *parts)


def _memo(**values: Any) -> str:
    return ";".join(f"{k}={v}" for k, v in values.items() if v is not None)


def _parse_memo(memo: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (memo or "").split(";"):
        key, _, value = part.partition("=")
        if key:
            out[key] = value
    return out


def purchased_wallet(resident: Resident, currency: str) -> str:
    return f"{resident.wallet}:{currency}"


def purchased_shop_account(shop: Shop, currency: str) -> str:
    return f"{shop.account}:{currency}"


def shop_code_of(account: str) -> str:
    """``shop:<code>`` or ``shop:<code>:<purchased currency>`` → ``<code>``."""
    return account.removeprefix("shop:").split(":", 1)[0]


def _terms(shop: Shop) -> MerchantTerms:
    return MerchantTerms(
        fee_bp=shop.fee_bp,
        bank_code=shop.bank_code,
        branch_code=shop.branch_code,
        account_type=shop.account_type,
        account_number=shop.account_number,
        holder_kana=shop.holder_kana,
    )


def _unverified() -> PointsError:
    return error(
        "not-verified",
        "実名の確認がまだ済んでいません。市役所の窓口で本人確認をお願いします。",
        "Your real name is not verified yet. Please visit the city office.",
        403,
    )


def _resident(row: Any) -> Resident:
    return Resident(
        id=row.id,
        tenant=row.tenant_id,
        username=row.username,
        member_code=row.member_code,
        real_name=row.real_name,
        kana=row.kana,
        town=row.town,
        verified_at=row.verified_at,
        verified_by=row.verified_by,
    )


def _shop(row: Any) -> Shop:
    m = row._mapping
    return Shop(
        id=m["id"],
        tenant=m["tenant_id"],
        active=bool(m["active"]),
        **{k: m[k] for k in ShopCreate.model_fields},
    )


class PointsBase:
    """The state every area of :class:`~kizuna.points.service.Points` shares, and its calls
    to the ledger."""

    def __init__(self, engine: Engine, ledger: Ledger, data_dir: Path, qr_secret: str = "") -> None:
        self.engine = engine
        self.ledger = ledger
        self.data_dir = data_dir
        self._secret = qr_secret.encode() if qr_secret else b""
        self._secret_lock = threading.Lock()
        self._programmes: dict[str, Programme] = {}
        # Hot lookups of the pay path, briefly cached: another server's change (a shop
        # closed, a resident verified) is seen within CACHE_SECONDS; this one's at once.
        self._cache: TTLCache[tuple, Any] = TTLCache(maxsize=50_000, ttl=CACHE_SECONDS)
        self._cache_lock = threading.Lock()

    def _post(self, tenant: str, item: TransferCreate) -> TransferPublic:
        """One transfer through the ledger's group commit; failures become PointsError."""
        result = self._submit(tenant, item)
        assert result.transfer is not None
        return result.transfer

    def _submit(self, tenant: str, item: TransferCreate) -> TransferResult:
        result = self.ledger.submit_transfer(tenant, item).result()
        if not result.ok:
            raise ledger_error(result)
        return result

    def post_chain(self, tenant: str, items: list[TransferCreate]) -> list[TransferResult]:
        """A linked chain in one ledger transaction: all of it or none."""
        results = self.ledger.post_transfers(tenant, items)
        for result in results:
            if (
                not result.ok
                and result.error
                and not result.error.type.endswith("linked-event-failed")
            ):
                raise ledger_error(result)
        return results

    def _transfer(self, tenant: str, transfer_id: str) -> TransferPublic | None:
        try:
            return self.ledger.get_transfer(tenant, transfer_id)
        except Problem as exc:
            if exc.status == 404:
                return None
            raise
