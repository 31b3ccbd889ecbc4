"""Tables of the points module (created by migration ``points_0001``).

Money never lives here: balances, holds and every movement are in the ledger, reached only
through ``kizuna.ledger.service``. These tables hold what the ledger does not know: who a
wallet belongs to (実名), shops and their towns, the eco-action catalogue with versioned
emission factors, what each logged action saved, coupons and their use, and ``points_moves``,
a read model of the programme's ledger transfers (fed from ``Ledger.list_transfers`` by a
cursor) that pages and the dashboard query.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

from kizuna.storage.metadata import JSONDoc, KeyInteger, metadata

PK = KeyInteger
TS = DateTime(timezone=True)

# One points programme per municipality (tenant): its ledger currency and its rules.
programmes = Table(
    "points_programmes",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("currency", String(32), nullable=False),
    Column("name_ja", String(200), nullable=False),
    Column("name_en", String(200), nullable=False),
    # Address towns (町名) whose shops take the points; empty list: every town.
    Column("eligible_towns", JSONDoc, nullable=False),
    Column("thanks_daily_limit", Integer, nullable=False),
    Column("volunteer_year_cap", Integer, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    # The city's account (依頼人) last used for the 全銀協 file (migration points_0002).
    Column("zengin_originator", JSONDoc, nullable=True),
    # The purchased currency (地域ポイント) sold at the counter, if any (migration points_0003).
    Column("purchase_currency", String(32), nullable=True),
)

# 実名制: the real person behind a resident user, verified by staff or an OIDC claim.
residents = Table(
    "points_residents",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("username", String(120), nullable=False),  # the auth user
    Column("member_code", String(16), nullable=False),  # shown on the thanks QR
    Column("real_name", String(120), nullable=False),
    Column("kana", String(120), nullable=False),
    Column("town", String(64), nullable=False),  # 住所の町名
    Column("verified_at", TS, nullable=True),
    Column("verified_by", String(160), nullable=True),  # "staff:<user>" | "oidc:<issuer>"
    Column("created_at", TS, nullable=False, server_default=func.now()),
    UniqueConstraint("tenant_id", "username", name="uq_points_residents_user"),
    UniqueConstraint("member_code", name="uq_points_residents_member"),
)

shops = Table(
    "points_shops",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("code", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("category", String(64), nullable=False, server_default=""),
    Column("town", String(64), nullable=False),
    Column("address", String(300), nullable=False),
    Column("username", String(120), nullable=True),  # the merchant user who runs it
    Column("fee_bp", Integer, nullable=False),
    Column("bank_code", String(4), nullable=True),
    Column("branch_code", String(3), nullable=True),
    Column("account_type", String(1), nullable=True),
    Column("account_number", String(7), nullable=True),
    Column("holder_kana", String(30), nullable=True),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    UniqueConstraint("tenant_id", "code", name="uq_points_shops_code"),
)

# Staff roles per municipality: admin (catalogue, coupons, settlement), clerk (verify
# residents, record volunteering, approve actions), viewer (dashboard only).
staff = Table(
    "points_staff",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("username", String(120), primary_key=True),
    Column("role", String(16), nullable=False),
)

# Emission factors as versioned data: one row per factor and fiscal year, never edited.
factors = Table(
    "points_emission_factors",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("code", String(32), nullable=False),  # electricity | gasoline | city_gas
    Column("fiscal_year", Integer, nullable=False),
    Column("kg_per_unit", Float, nullable=False),  # kg-CO2 per kWh / L / Nm3
    Column("unit", String(16), nullable=False),
    Column("source", String(300), nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    UniqueConstraint("tenant_id", "code", "fiscal_year", name="uq_points_factors"),
)

actions = Table(
    "points_actions",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("code", String(32), nullable=False),
    Column("name_ja", String(200), nullable=False),
    Column("name_en", String(200), nullable=False),
    Column("category", String(32), nullable=False),  # energy | transport | waste | other
    Column("per", String(8), nullable=False),  # times | km | day
    Column("saving", Float, nullable=False),  # per occurrence or per km
    Column("saving_unit", String(8), nullable=False),  # kWh | L | Nm3 | kgCO2
    Column("factor_code", String(32), nullable=True),  # None for kgCO2 savings
    Column("basis", String(300), nullable=False, server_default=""),  # where the saving comes from
    Column("points", Integer, nullable=False),  # per occurrence or per km
    Column("cap_per_day", Integer, nullable=False),  # occurrences per resident per day
    Column("cap_points_month", Integer, nullable=False),  # points per resident per month
    Column("approval", String(8), nullable=False),  # auto | staff
    Column("evidence", String(8), nullable=False),  # none | photo | meter
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("updated_at", TS, nullable=False, server_default=func.now()),
    UniqueConstraint("tenant_id", "code", name="uq_points_actions_code"),
)

# One logged action. ``id`` is chosen by the client (the form), so a double submit is
# the same log; (resident, action, day, slot) makes the per-day cap a unique key.
eco_logs = Table(
    "points_eco_logs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("resident_id", PK, nullable=False),
    Column("action_id", PK, nullable=False),
    Column("action_date", Date, nullable=False),
    Column("slot", Integer, nullable=False),
    Column("quantity", Float, nullable=False),
    Column("co2_g", Integer, nullable=False),  # grams, with the factor below
    Column("factor_id", PK, nullable=True),
    Column("points", Integer, nullable=False),
    Column("status", String(10), nullable=False),  # approved | pending | rejected
    Column("meter_reading", Float, nullable=True),
    Column("photo", String(80), nullable=True),  # file name under data_dir/points/photos
    Column("town", String(64), nullable=False),  # the resident's town (for the dashboard)
    Column("transfer_id", String(36), nullable=True),  # set once the points are credited
    Column("decided_by", String(120), nullable=True),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    UniqueConstraint(
        "tenant_id", "resident_id", "action_id", "action_date", "slot", name="uq_points_eco_slot"
    ),
    Index("ix_points_eco_logs_tenant_date", "tenant_id", "action_date"),
    Index("ix_points_eco_logs_resident", "resident_id", "action_date"),
)

volunteering = Table(
    "points_volunteering",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("resident_id", PK, nullable=False),
    Column("activity", String(200), nullable=False),
    Column("activity_date", Date, nullable=False),
    Column("hours", Float, nullable=False),
    Column("points", Integer, nullable=False),
    Column("recorded_by", String(120), nullable=False),
    Column("transfer_id", String(36), nullable=True),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Index("ix_points_volunteering_resident", "resident_id", "activity_date"),
)

coupons = Table(
    "points_coupons",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("code", String(32), nullable=False),
    Column("title_ja", String(200), nullable=False),
    Column("title_en", String(200), nullable=False),
    Column("kind", String(8), nullable=False),  # amount | percent
    Column("value", Integer, nullable=False),  # yen off, or percent off
    Column("max_discount", Integer, nullable=True),  # cap for percent coupons
    Column("min_purchase", Integer, nullable=False, server_default="0"),
    Column("valid_from", Date, nullable=False),
    Column("valid_until", Date, nullable=False),  # inclusive
    Column("shops", JSONDoc, nullable=False),  # shop codes; empty: every shop
    Column("quota_per_resident", Integer, nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    UniqueConstraint("tenant_id", "code", name="uq_points_coupons_code"),
)

# The n-th use of a coupon by a resident: the quota is a unique key, so two concurrent
# payments cannot both take the last use. Released when the hold is voided or refunded.
coupon_uses = Table(
    "points_coupon_uses",
    metadata,
    Column("coupon_id", PK, primary_key=True),
    Column("resident_id", PK, primary_key=True),
    Column("n", Integer, primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("payment_id", String(36), nullable=False, unique=True),
    Column("discount", Integer, nullable=False),
    Column("state", String(10), nullable=False),  # held | used | released
    Column("created_at", TS, nullable=False, server_default=func.now()),
)

# Read model of the programme's ledger transfers (all of the tenant's log, in order).
moves = Table(
    "points_moves",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("transfer_id", String(36), nullable=False),
    Column("kind", String(8), nullable=False),  # posted | pending | post | void
    Column("code", String(32), nullable=False),
    Column("debit", String(128), nullable=False),
    Column("credit", String(128), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("ref", String(128), nullable=True),
    Column("memo", String(200), nullable=True),
    Column("month", String(7), nullable=False),  # JST yyyy-mm
    Column("at", TS, nullable=False),
    Index("ix_points_moves_debit", "tenant_id", "debit", "seq"),
    Index("ix_points_moves_credit", "tenant_id", "credit", "seq"),
    Index("ix_points_moves_month", "tenant_id", "month", "code"),
)

cursors = Table(
    "points_cursors",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)

# Free text kept out of the ledger's hashed log: thanks messages (the ledger memo holds
# only the message's id, so a message can be removed without breaking the audit log).
messages = Table(
    "points_messages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
)
