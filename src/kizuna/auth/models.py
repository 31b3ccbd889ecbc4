"""Tables of the auth module. Secrets are stored only as hashes."""

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Integer, String, Table, func

from kizuna.storage.metadata import metadata

users = Table(
    "auth_users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(120), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("role", String(32), nullable=False),
    Column("password_hash", String(200), nullable=True),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Which tenants a user acts in (platform admins act in all of them).
user_tenants = Table(
    "auth_user_tenants",
    metadata,
    Column("user_id", Integer, ForeignKey("auth_users.id", ondelete="CASCADE"), primary_key=True),
    Column("tenant_id", String(64), primary_key=True),
)

api_keys = Table(
    "auth_api_keys",
    metadata,
    Column("id", String(16), primary_key=True),  # public part of the key
    Column("secret_sha256", String(64), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("can_write", Boolean, nullable=False),
    Column("label", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

tokens = Table(
    "auth_tokens",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("auth_users.id", ondelete="CASCADE"), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
