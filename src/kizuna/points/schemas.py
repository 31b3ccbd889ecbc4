"""Pydantic shapes of the points module's inputs and outputs (Python API and REST alike)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

CODE = r"^[a-z0-9][a-z0-9_-]{0,31}$"
ID = r"^[0-9a-fA-F-]{32,36}$"  # a client-chosen UUID


class ProgrammeCreate(BaseModel):
    name_ja: str = Field(min_length=1, max_length=200)
    name_en: str = Field(default="", max_length=200)
    currency: str = Field(default="pt", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
    expiry_days: int | None = Field(default=365, ge=1, le=3650)
    eligible_towns: list[str] = Field(default_factory=list)  # empty: every town
    thanks_daily_limit: int = Field(default=300, ge=0, le=1_000_000)
    volunteer_year_cap: int = Field(default=5000, ge=0, le=1_000_000)
    budgets: dict[str, int] = Field(
        default_factory=lambda: {"eco": 1_000_000, "volunteer": 500_000, "coupon": 500_000}
    )


class Programme(BaseModel):
    tenant: str
    currency: str
    name_ja: str
    name_en: str
    eligible_towns: list[str]
    thanks_daily_limit: int
    volunteer_year_cap: int
    purchase_currency: str | None = None  # 地域ポイント sold at the counter, if any


class PurchaseProgrammeCreate(BaseModel):
    """地域ポイント: bought in yen at the city's counter, with a premium paid by the city."""

    currency: str = Field(default="rp", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
    name_ja: str = Field(default="地域ポイント", min_length=1, max_length=200)
    name_en: str = Field(default="Regional points", max_length=200)
    premium_bp: int = Field(default=1000, ge=0, le=10000)  # 1000: ¥10,000 → 11,000 pt
    expiry_days: int | None = Field(default=180, ge=1, le=3650)
    max_yen_per_purchase: int | None = Field(default=50_000, ge=1, le=100_000_000)
    max_yen_per_year: int | None = Field(default=100_000, ge=1, le=1_000_000_000)
    premium_budget: int = Field(default=1_000_000, ge=0, le=10_000_000_000)


class SaleIn(BaseModel):
    """A counter sale (窓口販売): the receipt number is the idempotency key."""

    receipt: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
    member_code: str = Field(min_length=1, max_length=16)
    yen: int = Field(gt=0, le=100_000_000)

    @field_validator("receipt")
    @classmethod
    def _one_spelling(cls, value: str) -> str:
        return value.upper()  # "r-0001" typed again as "R-0001" is the same sale


class ResidentCreate(BaseModel):
    real_name: str = Field(min_length=1, max_length=120)
    kana: str = Field(min_length=1, max_length=120)
    town: str = Field(min_length=1, max_length=64)


class Resident(BaseModel):
    id: int
    tenant: str
    username: str
    member_code: str
    real_name: str
    kana: str
    town: str
    verified_at: datetime | None
    verified_by: str | None

    @property
    def wallet(self) -> str:
        return f"resident:{self.member_code}"

    @property
    def verified(self) -> bool:
        return self.verified_at is not None


class ShopCreate(BaseModel):
    code: str = Field(pattern=CODE)
    name: str = Field(min_length=1, max_length=200)
    category: str = Field(default="", max_length=64)
    town: str = Field(min_length=1, max_length=64)
    address: str = Field(min_length=1, max_length=300)
    username: str | None = Field(default=None, max_length=120)
    fee_bp: int = Field(default=150, ge=0, le=10000)  # 150 = 1.5 %
    bank_code: str | None = Field(default=None, pattern=r"^\d{4}$")
    branch_code: str | None = Field(default=None, pattern=r"^\d{3}$")
    account_type: Literal["1", "2", "4"] | None = None
    account_number: str | None = Field(default=None, pattern=r"^\d{1,7}$")
    holder_kana: str | None = Field(default=None, max_length=30)


class Shop(ShopCreate):
    id: int
    tenant: str
    active: bool

    @property
    def account(self) -> str:
        return f"shop:{self.code}"


class FactorCreate(BaseModel):
    code: Literal["electricity", "gasoline", "city_gas"]
    fiscal_year: int = Field(ge=2000, le=2100)
    kg_per_unit: float = Field(gt=0, le=100)
    unit: Literal["kWh", "L", "Nm3"]
    source: str = Field(min_length=1, max_length=300)


class Factor(FactorCreate):
    id: int


class ActionIn(BaseModel):
    code: str = Field(pattern=CODE)
    name_ja: str = Field(min_length=1, max_length=200)
    name_en: str = Field(default="", max_length=200)
    category: Literal["energy", "transport", "waste", "other"]
    per: Literal["times", "km", "day"]
    saving: float = Field(gt=0, le=100_000)
    saving_unit: Literal["kWh", "L", "Nm3", "kgCO2"]
    basis: str = Field(default="", max_length=300)
    points: int = Field(ge=0, le=100_000)
    cap_per_day: int = Field(default=1, ge=1, le=100)
    cap_points_month: int = Field(default=300, ge=0, le=1_000_000)
    approval: Literal["auto", "staff"] = "auto"
    evidence: Literal["none", "photo", "meter"] = "none"
    active: bool = True


class Action(ActionIn):
    id: int
    factor_code: str | None


class EcoLogIn(BaseModel):
    id: str = Field(pattern=ID)
    action: str = Field(pattern=CODE)
    action_date: date | None = None  # today (JST) when left out
    quantity: float = Field(default=1, gt=0, le=200)
    meter_reading: float | None = Field(default=None, ge=0, le=1e9)


class EcoLog(BaseModel):
    id: str
    action: str
    action_name: str
    action_date: date
    quantity: float
    co2_g: int
    points: int
    status: Literal["approved", "pending", "rejected"]
    transfer_id: str | None
    replay: bool = False  # the same id was logged before: nothing new happened


class VolunteerIn(BaseModel):
    id: str = Field(pattern=ID)
    member_code: str = Field(min_length=1, max_length=16)
    activity: str = Field(min_length=1, max_length=200)
    activity_date: date
    hours: float = Field(gt=0, le=24)
    points: int = Field(gt=0, le=100_000)


class CouponCreate(BaseModel):
    code: str = Field(pattern=CODE)
    title_ja: str = Field(min_length=1, max_length=200)
    title_en: str = Field(default="", max_length=200)
    kind: Literal["amount", "percent"]
    value: int = Field(gt=0, le=1_000_000)
    max_discount: int | None = Field(default=None, gt=0, le=1_000_000)
    min_purchase: int = Field(default=0, ge=0, le=10_000_000)
    valid_from: date
    valid_until: date
    shops: list[str] = Field(default_factory=list)  # empty: every shop
    quota_per_resident: int = Field(default=1, ge=1, le=100)


class Coupon(CouponCreate):
    id: int
    tenant: str


class PaymentIn(BaseModel):
    id: str = Field(pattern=ID)
    shop: str = Field(pattern=CODE)
    amount: int = Field(gt=0, le=10_000_000)  # the bill in yen; points pay what a coupon does not
    coupon: str | None = Field(default=None, pattern=CODE)


class Payment(BaseModel):
    id: str
    shop: str
    shop_name: str
    member_code: str
    amount: int  # the bill
    discount: int  # paid by the coupon budget
    points: int  # paid from the wallets (administrative first, then purchased)
    purchased: int = 0  # of which from the 地域ポイント wallet
    coupon: str | None
    status: Literal["authorized", "completed", "cancelled", "expired", "refunded"]
    created_at: datetime
    expires_at: datetime | None
    replay: bool = False  # the same id was sent before: this is the first answer again


class ThanksIn(BaseModel):
    id: str = Field(pattern=ID)
    to: str = Field(min_length=1, max_length=16)  # member code
    amount: int = Field(gt=0, le=1_000_000)
    message: str = Field(default="", max_length=200)
