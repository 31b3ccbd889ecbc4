"""Alembic environment: always runs on the connection handed in by upgrade_to_head."""

from alembic import context

from kizuna.storage.metadata import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
context.run_migrations()
