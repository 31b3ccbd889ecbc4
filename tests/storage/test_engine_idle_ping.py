"""A pooled PostgreSQL connection the server dropped while it sat idle is replaced."""

import time

from sqlalchemy import text

from kizuna.storage import engine as engine_module
from kizuna.storage.engine import create_engine_for


def test_a_connection_killed_while_idle_is_replaced_on_checkout(pg_url, monkeypatch):
    monkeypatch.setattr(engine_module, "_PING_AFTER_IDLE_S", 0.2)
    engine = create_engine_for(pg_url, pool_size=1)
    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        other = create_engine_for(pg_url, pool_size=1)
        with other.connect() as killer:
            killer.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first})
        other.dispose()
        time.sleep(0.3)
        with engine.connect() as conn:
            second = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert second != first
    finally:
        engine.dispose()
