"""Points: residents (実名), shops, staff roles, eco-action catalogue with versioned emission
factors, eco logs, volunteering, coupons and their uses, the ledger read model.

No foreign keys to the ledger's tables: the points module moves money only through
``kizuna.ledger.service`` (so ``depends_on`` is None).

Revision ID: points_0001
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "points_0001"
down_revision = "0001"
branch_labels = ("points",)
depends_on = None

TABLES = (
    "points_actions",
    "points_coupon_uses",
    "points_coupons",
    "points_cursors",
    "points_eco_logs",
    "points_emission_factors",
    "points_messages",
    "points_moves",
    "points_programmes",
    "points_residents",
    "points_shops",
    "points_staff",
    "points_volunteering",
)


def upgrade() -> None:
    op.create_table(
        "points_actions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name_ja", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("per", sa.String(length=8), nullable=False),
        sa.Column("saving", sa.Float(), nullable=False),
        sa.Column("saving_unit", sa.String(length=8), nullable=False),
        sa.Column("factor_code", sa.String(length=32), nullable=True),
        sa.Column("basis", sa.String(length=300), server_default="", nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("cap_per_day", sa.Integer(), nullable=False),
        sa.Column("cap_points_month", sa.Integer(), nullable=False),
        sa.Column("approval", sa.String(length=8), nullable=False),
        sa.Column("evidence", sa.String(length=8), nullable=False),
        sa.Column("active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_actions")),
        sa.UniqueConstraint("tenant_id", "code", name="uq_points_actions_code"),
    )
    op.create_table(
        "points_coupon_uses",
        sa.Column(
            "coupon_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "resident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.String(length=36), nullable=False),
        sa.Column("discount", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint(
            "coupon_id", "resident_id", "n", name=op.f("pk_points_coupon_uses")
        ),
        sa.UniqueConstraint("payment_id"),
    )
    op.create_table(
        "points_coupons",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("title_ja", sa.String(length=200), nullable=False),
        sa.Column("title_en", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("max_discount", sa.Integer(), nullable=True),
        sa.Column("min_purchase", sa.Integer(), server_default="0", nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=False),
        sa.Column(
            "shops",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("quota_per_resident", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_coupons")),
        sa.UniqueConstraint("tenant_id", "code", name="uq_points_coupons_code"),
    )
    op.create_table(
        "points_cursors",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_points_cursors")),
    )
    op.create_table(
        "points_eco_logs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column(
            "resident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "action_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("action_date", sa.Date(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Float(), nullable=False),
        sa.Column("co2_g", sa.Integer(), nullable=False),
        sa.Column("factor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("meter_reading", sa.Float(), nullable=True),
        sa.Column("photo", sa.String(length=80), nullable=True),
        sa.Column("town", sa.String(length=64), nullable=False),
        sa.Column("transfer_id", sa.String(length=36), nullable=True),
        sa.Column("decided_by", sa.String(length=120), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_eco_logs")),
        sa.UniqueConstraint(
            "tenant_id",
            "resident_id",
            "action_id",
            "action_date",
            "slot",
            name="uq_points_eco_slot",
        ),
    )
    op.create_index(
        "ix_points_eco_logs_resident",
        "points_eco_logs",
        ["resident_id", "action_date"],
        unique=False,
    )
    op.create_index(
        "ix_points_eco_logs_tenant_date",
        "points_eco_logs",
        ["tenant_id", "action_date"],
        unique=False,
    )
    op.create_table(
        "points_emission_factors",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("fiscal_year", sa.Integer(), nullable=False),
        sa.Column("kg_per_unit", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=300), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_emission_factors")),
        sa.UniqueConstraint("tenant_id", "code", "fiscal_year", name="uq_points_factors"),
    )
    op.create_table(
        "points_messages",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_messages")),
    )
    op.create_table(
        "points_moves",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("transfer_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("debit", sa.String(length=128), nullable=False),
        sa.Column("credit", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("ref", sa.String(length=128), nullable=True),
        sa.Column("memo", sa.String(length=200), nullable=True),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "seq", name=op.f("pk_points_moves")),
    )
    op.create_index(
        "ix_points_moves_credit", "points_moves", ["tenant_id", "credit", "seq"], unique=False
    )
    op.create_index(
        "ix_points_moves_debit", "points_moves", ["tenant_id", "debit", "seq"], unique=False
    )
    op.create_index(
        "ix_points_moves_month", "points_moves", ["tenant_id", "month", "code"], unique=False
    )
    op.create_table(
        "points_programmes",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=32), nullable=False),
        sa.Column("name_ja", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=False),
        sa.Column(
            "eligible_towns",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("thanks_daily_limit", sa.Integer(), nullable=False),
        sa.Column("volunteer_year_cap", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_points_programmes")),
    )
    op.create_table(
        "points_residents",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=120), nullable=False),
        sa.Column("member_code", sa.String(length=16), nullable=False),
        sa.Column("real_name", sa.String(length=120), nullable=False),
        sa.Column("kana", sa.String(length=120), nullable=False),
        sa.Column("town", sa.String(length=64), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_by", sa.String(length=160), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_residents")),
        sa.UniqueConstraint("member_code", name="uq_points_residents_member"),
        sa.UniqueConstraint("tenant_id", "username", name="uq_points_residents_user"),
    )
    op.create_table(
        "points_shops",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=64), server_default="", nullable=False),
        sa.Column("town", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("username", sa.String(length=120), nullable=True),
        sa.Column("fee_bp", sa.Integer(), nullable=False),
        sa.Column("bank_code", sa.String(length=4), nullable=True),
        sa.Column("branch_code", sa.String(length=3), nullable=True),
        sa.Column("account_type", sa.String(length=1), nullable=True),
        sa.Column("account_number", sa.String(length=7), nullable=True),
        sa.Column("holder_kana", sa.String(length=30), nullable=True),
        sa.Column("active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_shops")),
        sa.UniqueConstraint("tenant_id", "code", name="uq_points_shops_code"),
    )
    op.create_table(
        "points_staff",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=120), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "username", name=op.f("pk_points_staff")),
    )
    op.create_table(
        "points_volunteering",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column(
            "resident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("activity", sa.String(length=200), nullable=False),
        sa.Column("activity_date", sa.Date(), nullable=False),
        sa.Column("hours", sa.Float(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("recorded_by", sa.String(length=120), nullable=False),
        sa.Column("transfer_id", sa.String(length=36), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_volunteering")),
    )
    op.create_index(
        "ix_points_volunteering_resident",
        "points_volunteering",
        ["resident_id", "activity_date"],
        unique=False,
    )


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
