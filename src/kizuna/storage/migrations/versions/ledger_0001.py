"""Ledger: currencies, accounts, transfers, Merkle log and checkpoints, lots, settlement.

Revision ID: ledger_0001
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "ledger_0001"
down_revision = "0001"
branch_labels = ("ledger",)
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
BIG = sa.BigInteger


def upgrade() -> None:
    op.create_table(
        "ledger_currencies",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("name_ja", sa.String(200), nullable=False),
        sa.Column("name_en", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("expiry_days", sa.Integer, nullable=True),
        sa.Column("premium_bp", sa.Integer, nullable=False),
        sa.Column("created_us", BIG, nullable=False),
    )
    op.create_table(
        "ledger_accounts",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("code", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("allow_negative", sa.Boolean, nullable=False),
        sa.Column("max_credits", BIG, nullable=True),
        sa.Column("max_debits", BIG, nullable=True),
        sa.Column("daily_send_limit", BIG, nullable=True),
        sa.Column("day_key", sa.Integer, nullable=False),
        sa.Column("day_sent", BIG, nullable=False),
        sa.Column("debits_posted", BIG, nullable=False),
        sa.Column("credits_posted", BIG, nullable=False),
        sa.Column("debits_pending", BIG, nullable=False),
        sa.Column("credits_pending", BIG, nullable=False),
        sa.Column("closed", sa.Boolean, nullable=False),
        sa.Column("created_us", BIG, nullable=False),
        sa.UniqueConstraint("tenant_id", "code", name="uq_ledger_accounts_tenant_code"),
    )
    op.create_table(
        "ledger_transfers",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("seq", BIG, primary_key=True),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("currency", sa.String(32), nullable=False),
        sa.Column("debit_id", PK, sa.ForeignKey("ledger_accounts.id"), nullable=False),
        sa.Column("credit_id", PK, sa.ForeignKey("ledger_accounts.id"), nullable=False),
        sa.Column("amount", BIG, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("pending_id", sa.String(36), nullable=True),
        sa.Column("timeout_s", sa.Integer, nullable=True),
        sa.Column("linked", sa.Boolean, nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("ref", sa.String(128), nullable=True),
        sa.Column("memo", sa.String(200), nullable=True),
        sa.Column("expires_us", BIG, nullable=True),
        sa.Column("ts_us", BIG, nullable=False),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.UniqueConstraint("tenant_id", "id", name="uq_ledger_transfers_tenant_id"),
        sa.UniqueConstraint("tenant_id", "pending_id", name="uq_ledger_transfers_tenant_pending"),
    )
    op.create_index("ix_ledger_transfers_debit", "ledger_transfers", ["debit_id", "ts_us"])
    op.create_index("ix_ledger_transfers_credit", "ledger_transfers", ["credit_id", "ts_us"])
    op.create_table(
        "ledger_logs",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("size", BIG, nullable=False),
        sa.Column("frontier", sa.LargeBinary, nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("size", BIG, primary_key=True),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("ts_us", BIG, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
    )
    op.create_table(
        "ledger_signing_keys",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("created_us", BIG, nullable=False),
    )
    op.create_table(
        "ledger_lots",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("account_id", PK, sa.ForeignKey("ledger_accounts.id"), nullable=False),
        sa.Column("source_seq", BIG, nullable=False),
        sa.Column("expires_us", BIG, nullable=True),
        sa.Column("amount", BIG, nullable=False),
        sa.Column("remaining", BIG, nullable=False),
    )
    op.create_index("ix_ledger_lots_account", "ledger_lots", ["account_id", "expires_us"])
    op.create_table(
        "ledger_lot_spends",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("seq", BIG, primary_key=True),
        sa.Column("lot_id", PK, primary_key=True),
        sa.Column("amount", BIG, nullable=False),
    )
    op.create_index("ix_ledger_lot_spends_lot", "ledger_lot_spends", ["lot_id"])
    op.create_table(
        "ledger_merchants",
        sa.Column("account_id", PK, sa.ForeignKey("ledger_accounts.id"), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("fee_bp", sa.Integer, nullable=False),
        sa.Column("cycle", sa.String(16), nullable=False),
        sa.Column("bank_code", sa.String(4), nullable=True),
        sa.Column("branch_code", sa.String(3), nullable=True),
        sa.Column("account_type", sa.String(1), nullable=True),
        sa.Column("account_number", sa.String(7), nullable=True),
        sa.Column("holder_kana", sa.String(30), nullable=True),
    )
    op.create_table(
        "ledger_settlements",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("account_id", PK, primary_key=True),
        sa.Column("period_start_us", BIG, primary_key=True),
        sa.Column("period_end_us", BIG, nullable=False),
        sa.Column("received", BIG, nullable=False),
        sa.Column("refunded", BIG, nullable=False),
        sa.Column("net", BIG, nullable=False),
        sa.Column("fee_bp", sa.Integer, nullable=False),
        sa.Column("fee_yen", BIG, nullable=False),
        sa.Column("payable_yen", BIG, nullable=False),
        sa.Column("transfer_id", sa.String(36), nullable=False),
        sa.Column("ts_us", BIG, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "ledger_settlements",
        "ledger_merchants",
        "ledger_lot_spends",
        "ledger_lots",
        "ledger_signing_keys",
        "ledger_checkpoints",
        "ledger_logs",
        "ledger_transfers",
        "ledger_accounts",
        "ledger_currencies",
    ):
        op.drop_table(table)
