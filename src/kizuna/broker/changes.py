"""What a write changed, handed to listeners inside the writing transaction.

Subscriptions (outbox rows) and the temporal history need to see every entity change
and must commit or roll back together with it, so the broker calls each registered
listener with the transaction's connection after the rows are written. A listener that
raises fails the write; one that is slow slows the write, so listeners only insert rows
and leave delivery to workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from kizuna.broker.ngsild import Entity


@dataclass(frozen=True, slots=True)
class EntityChange:
    """One entity as it was before a write (None: created) and after it (None: deleted).

    ``attrs`` of both are expanded IRIs → normalized instances, as stored.
    """

    tenant: str
    entity_id: str
    before: Entity | None
    after: Entity | None
    at: datetime

    @property
    def types(self) -> list[str]:
        return (self.after or self.before).types  # type: ignore[union-attr]


ChangeListener = Callable[[Connection, Sequence[EntityChange]], None]


# --- write groups: listener work once per group commit -----------------------------
#
# The group commit runs many single-entity writes in one transaction. A listener called
# once per write would make its statements once per write; inside a group it may queue
# its (already decided) work with :func:`defer` instead, and the group runs each queue
# once, with every write's items, before its COMMIT.

_GROUP_KEY = "kizuna.write_group"
Flush = Callable[[Connection, list], None]


def open_group(conn: Connection) -> None:
    conn.info[_GROUP_KEY] = {}


def defer(conn: Connection, key: str, item: object, flush: Flush) -> bool:
    """Queue ``item`` for ``flush`` at the end of the connection's write group; False
    when the connection is not in one (the caller then does the work at once)."""
    group = conn.info.get(_GROUP_KEY)
    if group is None:
        return False
    group.setdefault(key, (flush, []))[1].append(item)
    return True


def close_group(conn: Connection, *, flush: bool) -> None:
    """Run the queued work (``flush``) or drop it (the transaction is being abandoned)."""
    group = conn.info.pop(_GROUP_KEY, None)
    if flush and group:
        for run, items in group.values():
            run(conn, items)


def flush_now(conn: Connection, key: str) -> None:
    """Run the work queued under ``key`` now (what comes after depends on it)."""
    group = conn.info.get(_GROUP_KEY)
    if group and key in group:
        run, items = group.pop(key)
        run(conn, items)
