"""Many rows into one table at once, the fastest way each database offers."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import JSON, Connection, Table, insert


def bulk_insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """COPY on PostgreSQL (several times faster than INSERTs); executemany on SQLite.

    Every row has the same keys; JSON columns are serialised here for COPY.
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), rows)
        return
    columns = list(rows[0])
    json_columns = {c.name for c in table.columns if c.name in columns and isinstance(c.type, JSON)}
    cursor = conn.connection.dbapi_connection.cursor()
    with cursor, cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(
                [
                    orjson.dumps(row[c]).decode()
                    if c in json_columns and row[c] is not None
                    else row[c]
                    for c in columns
                ]
            )
