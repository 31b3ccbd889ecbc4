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
