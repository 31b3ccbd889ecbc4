"""Tables of the energy module: one row per simulation run; its files live in the data folder.

A run's results (report, charts, CSV exports, the page's figures and the NGSI-LD summaries)
are written to ``KIZUNA_DATA_DIR/energy/runs/<folder>/`` before the row is inserted, so a row
always points at a complete folder.
"""

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    func,
)

from kizuna.storage.metadata import JSONDoc, KeyInteger, metadata

runs = Table(
    "energy_runs",
    metadata,
    Column("id", KeyInteger, primary_key=True),
    # The wide-area region the run belongs to (or a tenant id for a town in no region).
    Column("region_id", String(64), nullable=False),
    Column("title", String(200), nullable=False),
    Column("fiscal_year", Integer, nullable=False),
    Column("synthetic", Boolean, nullable=False),
    Column("facilities", Integer, nullable=False),
    Column("folder", String(64), nullable=False, unique=True),
    # Headline figures for lists: rate, supplied/surplus/shortfall Wh, CO2 kg, yen by scheme.
    Column("summary", JSONDoc, nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # When its monthly per-town results were last upserted into the towns' tenants.
    Column("published_at", DateTime(timezone=True), nullable=True),
    Index("ix_energy_runs_region_created", "region_id", "created_at"),
)
