"""Pydantic shapes of the ledger's inputs and outputs (Python API and REST alike)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_INT = (1 << 63) - 1  # BIGINT on both dialects
CODE = r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$"
SHORT = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"


class CurrencyKind(StrEnum):
    ADMINISTRATIVE = "administrative"  # 行政ポイント: free, issued from a programme budget
    PURCHASED = "purchased"  # 地域ポイント: bought in yen, optionally with a premium


class AccountKind(StrEnum):
    RESIDENT = "resident"  # wallet; its credits are lots that expire
    MERCHANT = "merchant"
    BUDGET = "budget"  # programme budget
    ISSUANCE = "issuance"  # where points come from (may go negative)
    SETTLEMENT = "settlement"  # where merchants' points go when paid out in yen
    EXPIRY = "expiry"  # expiry sink


class CurrencyCreate(BaseModel):
    code: str = Field(pattern=SHORT)
    name_ja: str = Field(min_length=1, max_length=200)
    name_en: str = Field(default="", max_length=200)
    kind: CurrencyKind
    expiry_days: int | None = Field(default=None, ge=1, le=36500)
    premium_bp: int = Field(default=0, ge=0, le=10000)


class PurchaseRules(BaseModel):
    """Per-wallet limits on buying a purchased currency (None: no limit)."""

    max_yen_per_purchase: int | None = Field(default=None, ge=1, le=MAX_INT)
    max_yen_per_year: int | None = Field(default=None, ge=1, le=MAX_INT)  # JST fiscal year


class CurrencyPublic(CurrencyCreate):
    purchase_rules: PurchaseRules = Field(default_factory=PurchaseRules)


class AccountCreate(BaseModel):
    code: str = Field(pattern=CODE)
    currency: str = Field(pattern=SHORT)
    kind: AccountKind
    name: str = Field(default="", max_length=200)
    max_credits: int | None = Field(default=None, ge=0, le=MAX_INT)
    max_debits: int | None = Field(default=None, ge=0, le=MAX_INT)
    daily_send_limit: int | None = Field(default=None, ge=0, le=MAX_INT)


class AccountPublic(BaseModel):
    code: str
    currency: str
    kind: AccountKind
    name: str
    allow_negative: bool
    max_credits: int | None
    max_debits: int | None
    daily_send_limit: int | None
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    balance: int  # credits_posted - debits_posted
    available: int  # balance - debits_pending
    closed: bool


def transfer_id(value: Any) -> str:
    """A client transfer id (UUID string or 128-bit integer) in canonical UUID form."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bool):
        raise ValueError("a transfer id is a UUID or a 128-bit integer")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        n = int(value)
        if not 0 < n < 1 << 128:
            raise ValueError("an integer transfer id must be in 1 .. 2**128-1")
        return str(uuid.UUID(int=n))
    if isinstance(value, str):
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            raise ValueError("a transfer id is a UUID or a 128-bit integer") from None
        if parsed.int == 0:
            raise ValueError("the nil UUID is not a transfer id")
        return str(parsed)
    raise ValueError("a transfer id is a UUID or a 128-bit integer")


class TransferCreate(BaseModel):
    """One transfer as a client asks for it.

    * plain: ``debit_account``, ``credit_account``, ``amount``, ``currency``
    * two-phase: ``pending=True`` (optionally ``timeout_seconds``), later a transfer with
      ``post_pending_id`` (amount optional: at most the pending amount) or
      ``void_pending_id``; accounts and currency may then be left out
    * ``linked=True`` chains this transfer to the next one: all of the chain or none
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    debit_account: str | None = Field(default=None, max_length=128)
    credit_account: str | None = Field(default=None, max_length=128)
    amount: int | None = None
    currency: str | None = Field(default=None, max_length=32)
    code: str = Field(default="transfer", pattern=SHORT)
    pending: bool = False
    timeout_seconds: int | None = Field(default=None, ge=1, le=30 * 86400)
    post_pending_id: str | None = None
    void_pending_id: str | None = None
    linked: bool = False
    ref: str | None = Field(default=None, max_length=128)
    memo: str | None = Field(default=None, max_length=200)
    expires_at: datetime | None = None  # lot expiry for credits into a wallet

    @field_validator("id", "post_pending_id", "void_pending_id", mode="before")
    @classmethod
    def _canonical_id(cls, value: Any) -> Any:
        return None if value is None else transfer_id(value)


class TransferPublic(BaseModel):
    id: str
    seq: int  # index in the tenant's Merkle log
    kind: Literal["posted", "pending", "post", "void"]
    debit_account: str
    credit_account: str
    amount: int
    currency: str
    code: str
    pending_id: str | None = None
    timeout_seconds: int | None = None
    linked: bool = False
    ref: str | None = None
    memo: str | None = None
    expires_at: datetime | None = None
    timestamp: datetime


class TransferError(BaseModel):
    type: str
    title: str
    detail: str | None = None
    status: int


class TransferResult(BaseModel):
    """Outcome of one transfer of a batch: ``created``, ``exists`` (a replay) or ``failed``."""

    id: str | None
    status: Literal["created", "exists", "failed"]
    transfer: TransferPublic | None = None
    error: TransferError | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"


class PurchaseCreate(BaseModel):
    """Yen paid for points of a purchased currency: ``yen`` points from ``issuance`` plus
    ⌊yen × premium_bp / 10,000⌋ points from ``premium_account`` (a budget), linked.

    ``id`` is the client's (e.g. the counter's receipt number as a derived UUID): the same id
    and body again returns the first purchase; another body → ``id-conflict``."""

    model_config = ConfigDict(extra="forbid")

    id: str
    currency: str = Field(pattern=SHORT)
    account: str = Field(pattern=CODE)  # the buyer's resident wallet in that currency
    yen: int = Field(gt=0, le=MAX_INT)
    premium_account: str | None = Field(default=None, pattern=CODE)
    expires_at: datetime | None = None  # a fixed end date; else the currency's expiry_days
    ref: str | None = Field(default=None, max_length=128)
    memo: str | None = Field(default=None, max_length=200)

    @field_validator("id", mode="before")
    @classmethod
    def _canonical_id(cls, value: Any) -> Any:
        return transfer_id(value)


class PurchasePublic(BaseModel):
    id: str
    currency: str
    account: str
    yen: int
    premium: int
    points: int  # yen + premium, credited as lots of the wallet
    expires_at: datetime | None
    timestamp: datetime
    transfers: list[TransferPublic]  # the yen transfer, then the premium transfer (if any)
    created: bool = True  # False: the same purchase was made before (a retry)


class LotPublic(BaseModel):
    lot_id: int
    source_seq: int
    amount: int
    remaining: int
    expires_at: datetime | None


class ExpiryPublic(BaseModel):
    """How many points of an account expire at one moment (「いつ、何ポイント失効」)."""

    expires_at: datetime
    amount: int


class CheckpointPublic(BaseModel):
    origin: str
    size: int
    root: str  # base64
    timestamp: datetime
    key_id: str
    note: str  # the exact signed text
    signature: str  # base64 Ed25519 over note


class Receipt(BaseModel):
    """A transfer with its place in the log and the proof that the checkpoint contains it."""

    transfer: TransferPublic
    leaf: str  # the exact hashed bytes (canonical JSON), UTF-8
    leaf_hash: str  # hex
    index: int
    checkpoint: CheckpointPublic
    inclusion_proof: list[str]  # hex, bottom-up (RFC 9162)


class ConsistencyProof(BaseModel):
    old_size: int
    new_size: int
    proof: list[str]  # hex


class VerifyReport(BaseModel):
    ok: bool
    tenants: int = 0
    transfers: int = 0
    accounts: int = 0
    checkpoints: int = 0
    seconds: float = 0.0
    errors: list[str] = Field(default_factory=list)


class MerchantTerms(BaseModel):
    fee_bp: int = Field(default=0, ge=0, le=10000)
    cycle: Literal["monthly", "weekly", "daily"] = "monthly"
    bank_code: str | None = Field(default=None, pattern=r"^\d{4}$")
    branch_code: str | None = Field(default=None, pattern=r"^\d{3}$")
    account_type: Literal["1", "2", "4"] | None = None
    account_number: str | None = Field(default=None, pattern=r"^\d{1,7}$")
    holder_kana: str | None = Field(default=None, max_length=30)


class SettlementPublic(BaseModel):
    merchant: str
    period_start: datetime
    period_end: datetime
    received: int
    refunded: int
    net: int  # points moved to the settlement account
    fee_bp: int
    fee_yen: int
    payable_yen: int
    transfer_id: str
    created: bool = True
    settled: bool = False  # the period was paid out (this is the stored settlement)
