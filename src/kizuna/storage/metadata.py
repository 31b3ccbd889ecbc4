"""The one MetaData all modules declare their tables on, with stable constraint names."""

from sqlalchemy import JSON, BigInteger, Integer, MetaData
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# JSON on SQLite, JSONB on PostgreSQL (indexable, compact, compared by value).
JSONDoc = JSON().with_variant(JSONB(), "postgresql")
# Surrogate keys: 64-bit on PostgreSQL; INTEGER on SQLite, where only that aliases the rowid.
KeyInteger = BigInteger().with_variant(Integer(), "sqlite")
