"""Tables of the ledger module (created by migration ``ledger_0001``).

Amounts are integer points; times are integer microseconds since the Unix epoch (UTC),
so the hashed form of a transfer is exact and the same on both dialects.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from kizuna.storage.metadata import KeyInteger, metadata

PK = KeyInteger

# 行政ポイント / 地域ポイント ... one row per currency (a TigerBeetle "ledger") per tenant.
currencies = Table(
    "ledger_currencies",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("code", String(32), primary_key=True),
    Column("name_ja", String(200), nullable=False),
    Column("name_en", String(200), nullable=False),
    Column("kind", String(16), nullable=False),  # administrative | purchased
    Column("expiry_days", Integer, nullable=True),  # None: points never expire
    Column("premium_bp", Integer, nullable=False, default=0),  # 1000 = +10 % on purchase
    Column("created_us", BigInteger, nullable=False),
    # Purchase limits per wallet (migration ledger_0003); None: no limit.
    Column("max_yen_per_purchase", BigInteger, nullable=True),
    Column("max_yen_per_year", BigInteger, nullable=True),  # JST fiscal year (April–March)
)

accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("code", String(128), nullable=False),
    Column("currency", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False, default=""),
    Column("allow_negative", Boolean, nullable=False, default=False),
    Column("max_credits", BigInteger, nullable=True),  # budget cap on everything credited
    Column("max_debits", BigInteger, nullable=True),  # cap on everything debited
    Column("daily_send_limit", BigInteger, nullable=True),  # resident → resident per JST day
    Column("day_key", Integer, nullable=False, default=0),  # JST yyyymmdd of day_sent
    Column("day_sent", BigInteger, nullable=False, default=0),
    Column("debits_posted", BigInteger, nullable=False, default=0),
    Column("credits_posted", BigInteger, nullable=False, default=0),
    Column("debits_pending", BigInteger, nullable=False, default=0),
    Column("credits_pending", BigInteger, nullable=False, default=0),
    Column("closed", Boolean, nullable=False, default=False),
    Column("created_us", BigInteger, nullable=False),
    UniqueConstraint("tenant_id", "code", name="uq_ledger_accounts_tenant_code"),
)

# Every transfer ever accepted, in log order; rows are never updated or deleted.
transfers = Table(
    "ledger_transfers",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True),  # index of the leaf in the tenant's Merkle log
    Column("id", String(36), nullable=False),  # client-chosen, canonical UUID form
    Column("currency", String(32), nullable=False),
    Column("debit_id", PK, ForeignKey("ledger_accounts.id"), nullable=False),
    Column("credit_id", PK, ForeignKey("ledger_accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("kind", String(8), nullable=False),  # posted | pending | post | void
    Column("pending_id", String(36), nullable=True),  # post / void: the pending transfer
    Column("timeout_s", Integer, nullable=True),  # pending: seconds until it may be voided
    Column("linked", Boolean, nullable=False, default=False),
    Column("code", String(32), nullable=False),  # purpose: issue, payment, thanks, refund, ...
    Column("ref", String(128), nullable=True),
    Column("memo", String(200), nullable=True),
    Column("expires_us", BigInteger, nullable=True),  # lot expiry asked for by the client
    Column("ts_us", BigInteger, nullable=False),
    Column("body_hash", String(64), nullable=False),  # what the client sent, for idempotency
    Column("leaf_hash", LargeBinary(32), nullable=False),
    UniqueConstraint("tenant_id", "id", name="uq_ledger_transfers_tenant_id"),
    # At most one post or void per pending transfer (NULLs do not collide).
    UniqueConstraint("tenant_id", "pending_id", name="uq_ledger_transfers_tenant_pending"),
)
Index("ix_ledger_transfers_debit", transfers.c.debit_id, transfers.c.ts_us)
Index("ix_ledger_transfers_credit", transfers.c.credit_id, transfers.c.ts_us)

# The head of each tenant's Merkle log: locked first by every write batch.
logs = Table(
    "ledger_logs",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("frontier", LargeBinary, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
)

checkpoints = Table(
    "ledger_checkpoints",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("size", BigInteger, primary_key=True),
    Column("root", LargeBinary(32), nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("note", Text, nullable=False),  # the signed text: origin, size, base64 root
    Column("signature", LargeBinary(64), nullable=False),
)

# Public halves of the signing keys (the private halves live in files, see keys.py).
signing_keys = Table(
    "ledger_signing_keys",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("key_id", String(16), primary_key=True),
    Column("public_key", LargeBinary(32), nullable=False),
    Column("created_us", BigInteger, nullable=False),
)

# Expiring points: one lot per credit into a resident wallet, spent earliest-expiry first.
lots = Table(
    "ledger_lots",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("account_id", PK, ForeignKey("ledger_accounts.id"), nullable=False),
    Column("source_seq", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=True),  # None: never expires
    Column("amount", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
)
Index("ix_ledger_lots_account", lots.c.account_id, lots.c.expires_us)

# Which lots each transfer drew on (negative amounts give points back on post / void).
lot_spends = Table(
    "ledger_lot_spends",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("lot_id", PK, primary_key=True),
    Column("amount", BigInteger, nullable=False),
)
Index("ix_ledger_lot_spends_lot", lot_spends.c.lot_id)

# Merchant settlement terms and bank account (for the 全銀 file).
merchants = Table(
    "ledger_merchants",
    metadata,
    Column("account_id", PK, ForeignKey("ledger_accounts.id"), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("fee_bp", Integer, nullable=False, default=0),  # 150 = 1.5 %
    Column("cycle", String(16), nullable=False, default="monthly"),  # monthly | weekly | daily
    Column("bank_code", String(4), nullable=True),
    Column("branch_code", String(3), nullable=True),
    Column("account_type", String(1), nullable=True),  # 1 普通, 2 当座, 4 貯蓄
    Column("account_number", String(7), nullable=True),
    Column("holder_kana", String(30), nullable=True),  # half-width katakana as on the passbook
)

# One row per paid period: the settlement transfer's id is derived from (merchant, period).
settlements = Table(
    "ledger_settlements",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("account_id", PK, primary_key=True),
    Column("period_start_us", BigInteger, primary_key=True),
    Column("period_end_us", BigInteger, nullable=False),
    Column("received", BigInteger, nullable=False),
    Column("refunded", BigInteger, nullable=False),
    Column("net", BigInteger, nullable=False),
    Column("fee_bp", Integer, nullable=False),
    Column("fee_yen", BigInteger, nullable=False),
    Column("payable_yen", BigInteger, nullable=False),
    Column("transfer_id", String(36), nullable=False),
    Column("ts_us", BigInteger, nullable=False),
)
