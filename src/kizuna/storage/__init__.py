"""Storage: the engine, the shared SQLAlchemy metadata and Alembic migrations.

Modules declare their own tables on :data:`metadata` in their ``models.py``; the
migration chain in ``storage/migrations`` creates them on SQLite and PostgreSQL.
"""

from kizuna.storage.engine import create_engine_for, is_postgres, upgrade_to_head, writer
from kizuna.storage.metadata import metadata

__all__ = ["create_engine_for", "is_postgres", "metadata", "upgrade_to_head", "writer"]
