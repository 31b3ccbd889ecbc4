"""Statements straight on the driver, inside a SQLAlchemy connection's transaction.

For the hottest write paths (the ledger's group commit, the broker's held rows):
SQLAlchemy's statement compilation and Row objects cost more there than the database's
own work. Statements use ``?`` placeholders on both databases.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection

from kizuna.storage.engine import is_postgres


def fetch(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Rows as plain tuples straight from the driver (no SQLAlchemy statement or row work:
    on a batch of one transfer that was a third of the writer's CPU); ``?`` placeholders."""
    with _executed(conn, sql, params) as cur:
        return cur.fetchall()


def execute(conn: Connection, sql: str, params: tuple[Any, ...]) -> None:
    """One driver statement without rows (``?`` placeholders)."""
    with _executed(conn, sql, params):
        pass


@contextmanager
def _executed(conn: Connection, sql: str, params: tuple[Any, ...]) -> Iterator[Any]:
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.execute(sql.replace("?", "%s") if is_postgres(conn) else sql, params)
        yield cur
    finally:
        cur.close()


def executemany(conn: Connection, sql: str, params: list[tuple[Any, ...]]) -> None:
    """Run one statement (``?`` placeholders) for many parameter tuples on the driver
    itself, inside the connection's transaction (SQLAlchemy's per-row work is the cost)."""
    if not params:
        return
    raw = conn.connection.driver_connection
    if is_postgres(conn):
        sql = sql.replace("?", "%s")
    cur = raw.cursor()
    try:
        cur.executemany(sql, params)
    finally:
        cur.close()
