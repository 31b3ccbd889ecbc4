"""Tables of the tenancy module."""

from sqlalchemy import Column, DateTime, ForeignKey, String, Table, func

from kizuna.storage.metadata import metadata

regions = Table(
    "tenancy_regions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name_ja", String(200), nullable=False),
    Column("name_en", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

tenants = Table(
    "tenancy_tenants",
    metadata,
    # The value of the NGSILD-Tenant header; "default" when the header is absent.
    Column("id", String(64), primary_key=True),
    Column("name_ja", String(200), nullable=False),
    Column("name_en", String(200), nullable=False),
    Column("region_id", String(64), ForeignKey("tenancy_regions.id"), nullable=True),
    Column("lg_code", String(6), nullable=True),  # 全国地方公共団体コード
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Entity types (expanded IRIs) a tenant publishes as open data: readable anonymously.
open_types = Table(
    "tenancy_open_types",
    metadata,
    Column("tenant_id", String(64), ForeignKey("tenancy_tenants.id"), primary_key=True),
    Column("entity_type", String(512), primary_key=True),
)

# Services (e.g. "points", "watch", "energy") a tenant has switched on.
enabled_services = Table(
    "tenancy_enabled_services",
    metadata,
    Column("tenant_id", String(64), ForeignKey("tenancy_tenants.id"), primary_key=True),
    Column("service", String(64), primary_key=True),
)
