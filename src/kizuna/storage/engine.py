"""Engine construction for the two supported dialects and migration on start."""

from __future__ import annotations

import re
import time
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DisconnectionError

if TYPE_CHECKING:
    from alembic.config import Config

# Arbitrary constant: serialises concurrent migrations of several workers on PostgreSQL.
_MIGRATION_LOCK_KEY = 0x6B697A756E61
_PING_AFTER_IDLE_S = 1.0


def json_text(value: object) -> str:
    """JSON as the engine writes it (orjson)."""
    return orjson.dumps(value).decode()


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _sqlite_regexp(pattern: str | None, value: object) -> bool | None:
    if pattern is None or value is None:
        return None
    return _compiled(pattern).search(str(value)) is not None


def create_engine_for(url: str, *, pool_size: int = 32) -> Engine:
    """An engine for ``url`` with the pragmas and pool Kizuna relies on.

    The pool keeps ``pool_size`` connections and opens up to half as many again for a
    burst (48 in all by default: a server's 40 request threads and its writer threads),
    and lends the most recently returned connection first, so that a few warm connections
    serve a light load while the rest stay idle. With 20 kept, 200 concurrent payers made
    the pool open and close connections (a PostgreSQL backend start each): 5 % of the
    server's profile samples.

    SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` for writes (see :func:`writer`),
    so concurrent writers queue on the busy timeout instead of failing to upgrade
    a read lock into a write lock.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            json_serializer=json_text,
            json_deserializer=orjson.loads,
            connect_args={"check_same_thread": False, "timeout": 30},
            **_pool_options(pool_size),
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # noqa: ANN001
            # Let SQLAlchemy's "begin" event below emit BEGIN itself.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            dbapi_conn.create_function("regexp", 2, _sqlite_regexp, deterministic=True)

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine

    # The driver (~9 MB a process) is imported only where the database is PostgreSQL.
    import psycopg
    from psycopg.types.json import set_json_dumps

    engine = create_engine(
        url,
        json_serializer=json_text,
        json_deserializer=orjson.loads,
        **_pool_options(pool_size),
    )

    @event.listens_for(engine, "connect")
    def _on_pg_connect(dbapi_conn, _record):  # noqa: ANN001
        # JSON the driver itself dumps (binary COPY of dicts, storage.bulk_insert): orjson.
        # Set per connection: per cursor it copied the adapter map on every COPY.
        set_json_dumps(orjson.dumps, context=dbapi_conn)
        # JIT compilation costs tens of milliseconds and never pays off on short queries.
        with dbapi_conn.cursor() as cur:
            cur.execute("SET jit = off")
        dbapi_conn.commit()

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn, record):  # noqa: ANN001
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn, record, _proxy):  # noqa: ANN001
        # A connection idle for a while may have been closed by the server (a restart):
        # ping it, and let the pool replace it if it is gone. One in steady use is not
        # pinged (pool_pre_ping would add a round trip to every transaction).
        if time.monotonic() - record.info.get("idle_since", 0.0) < _PING_AFTER_IDLE_S:
            return
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()
        except psycopg.Error as exc:
            raise DisconnectionError("connection lost while idle") from exc

    return engine


def _pool_options(pool_size: int) -> dict[str, Any]:
    return {"pool_size": pool_size, "max_overflow": pool_size // 2, "pool_use_lifo": True}


def writer(engine: Engine) -> Engine:
    """The same engine, with write transactions that take SQLite's write lock up front."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


def is_postgres(bind: Connection | Engine) -> bool:
    return bind.dialect.name == "postgresql"


def alembic_config() -> Config:
    # Imported here: a server process that did not run the migrations itself (see
    # Settings.migrate_on_start) never loads Alembic (~10 MB of memory per process).
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("kizuna.storage") / "migrations"))
    return cfg


def upgrade_to_head(engine: Engine) -> None:
    """Apply every pending migration of every module; safe from several processes at once.

    Each module keeps its own migration branch (``branch_labels=("<module>",)``, based on
    the foundation revision ``0001``), so the script directory has one head per module.
    """
    from alembic import command

    cfg = alembic_config()
    with writer(engine).begin() as conn:
        if is_postgres(conn):
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")
