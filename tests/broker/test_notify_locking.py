"""Lock order of the delivery worker's bookkeeping against a subscription's DELETE.

Deleting a subscription locks its row, then deletes its outbox rows. The worker's flush
must take the same order (subscription, then outbox rows): the other way round, a flush
that had deleted a delivered row and then waited for the subscription's counters
deadlocked with the DELETE, which failed with 500 and left the subscription in place.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, delete, insert, select, text

from kizuna.app import build_services
from kizuna.broker.subscriptions.delivery import DeliveryWorker, Job, Outcome
from kizuna.broker.subscriptions.models import outbox, subscriptions
from kizuna.settings import Settings

pytestmark = pytest.mark.postgres


def test_a_flush_waiting_for_a_subscription_does_not_deadlock_its_delete(
    pg_engine: Engine, settings: Settings
) -> None:
    services = build_services(settings, pg_engine)
    worker = DeliveryWorker(pg_engine, services.subscriptions, services.broker.contexts, settings)
    now = datetime.now(UTC)
    tenant = f"t{uuid.uuid4().hex[:12]}"
    with pg_engine.begin() as conn:
        sub_pk = conn.execute(
            insert(subscriptions)
            .values(
                tenant=tenant,
                id="urn:ngsi-ld:Subscription:lock",
                doc={},
                is_active=True,
                created_at=now,
                modified_at=now,
                times_sent=0,
                times_failed=0,
            )
            .returning(subscriptions.c.pk)
        ).scalar_one()
        row_pk = conn.execute(
            insert(outbox)
            .values(
                id=f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
                tenant=tenant,
                subscription_pk=sub_pk,
                endpoint="http://127.0.0.1:9/n",
                trigger="entityUpdated",
                payload={"entities": []},
                created_at=now,
                due_at=now,
                attempts=1,
                dead=False,
            )
            .returning(outbox.c.pk)
        ).scalar_one()
    job = Job(row_pk, "n", sub_pk, "http://127.0.0.1:9/n", 1, now)
    worker._outcomes = [Outcome(job, True, now)]
    errors: list[BaseException] = []

    def flush() -> None:
        try:
            worker._flush()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    with pg_engine.connect() as holder:
        holder.execute(text("SET deadlock_timeout = '100ms'"))
        holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
        # What Subscriptions.delete does first: lock the subscription's row.
        holder.execute(
            select(subscriptions.c.pk).where(subscriptions.c.pk == sub_pk).with_for_update()
        )
        flusher = threading.Thread(target=flush)
        flusher.start()
        # Wait (no fixed sleep) until the flush is blocked by that lock; asked on another
        # connection, as pg_stat_activity is a snapshot within a transaction.
        blocked = 0
        with pg_engine.connect() as watcher:
            while not blocked and flusher.is_alive():
                blocked = watcher.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE :pid = ANY(pg_blocking_pids(pid))"
                    ),
                    {"pid": holder_pid},
                ).scalar_one()
                watcher.rollback()
        # ... then what it does next: delete the subscription's outbox rows.
        holder.execute(delete(outbox).where(outbox.c.subscription_pk == sub_pk))
        holder.execute(delete(subscriptions).where(subscriptions.c.pk == sub_pk))
        holder.commit()
    flusher.join()
    assert blocked
    assert errors == []
    with pg_engine.connect() as conn:
        assert conn.execute(select(outbox.c.pk).where(outbox.c.pk == row_pk)).first() is None
