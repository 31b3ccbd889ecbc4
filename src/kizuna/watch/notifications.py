"""Guardians' notifications: in the app, and as webhooks delivered from an outbox; the
not-seen alert that tells guardians a tag has been silent for their N hours."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from kizuna.auth.service import Principal
from kizuna.problems import not_found
from kizuna.watch import schemas
from kizuna.watch.base import WatchBase, aware, utc_now
from kizuna.watch.models import guardians, notifications, outbox, tags
from kizuna.watch.privacy import guards, need_person, username_of
from kizuna.watch.tags import last_seen

log = logging.getLogger("kizuna.watch")


def notify(
    conn: Connection,
    tenant: str,
    tag_id: str,
    kind: str,
    at: datetime,
    text_ja: str,
    text_en: str,
    *,
    place_id: int | None = None,
    place: str | None = None,
) -> None:
    """An in-app notification for the tag's guardians, and a webhook for each who set one."""
    conn.execute(
        insert(notifications).values(
            tenant_id=tenant,
            tag_id=tag_id,
            kind=kind,
            place_id=place_id,
            at=at,
            text_ja=text_ja,
            text_en=text_en,
            read_by=[],
        )
    )
    hooks = conn.execute(
        select(guardians.c.webhook_url).where(
            guardians.c.tenant_id == tenant,
            guardians.c.tag_id == tag_id,
            guardians.c.webhook_url.is_not(None),
        )
    ).scalars()
    # The webhook says what happened, not who: the person's name stays in the app.
    payload = {"event": kind, "tenant": tenant, "tag": tag_id, "at": at.isoformat()}
    if place is not None:
        payload["place"] = place
    for url in sorted(set(hooks)):
        conn.execute(
            insert(outbox).values(url=url, payload=payload, attempts=0, next_attempt_at=utc_now())
        )


class Notifications(WatchBase):
    def notifications(
        self, principal: Principal, tenant: str, lang: str = "ja", limit: int = 50
    ) -> list[schemas.NotificationPublic]:
        username = username_of(principal)
        if username is None or not principal.acts_in(tenant):
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(notifications)
                .join(
                    guardians,
                    and_(
                        guardians.c.tenant_id == notifications.c.tenant_id,
                        guardians.c.tag_id == notifications.c.tag_id,
                    ),
                )
                .where(notifications.c.tenant_id == tenant, guardians.c.username == username)
                .order_by(notifications.c.at.desc(), notifications.c.id.desc())
                .limit(limit)
            ).all()
        return [
            schemas.NotificationPublic(
                id=r.id,
                tag_id=r.tag_id,
                kind=r.kind,
                at=aware(r.at),
                text=r.text_ja if lang == "ja" else r.text_en,
                read=username in (r.read_by or []),
            )
            for r in rows
        ]

    def mark_read(self, principal: Principal, tenant: str, notification_id: int) -> None:
        username = need_person(principal)
        with self._writer.begin() as conn:
            row = conn.execute(
                select(notifications).where(
                    notifications.c.id == notification_id, notifications.c.tenant_id == tenant
                )
            ).first()
            if row is None or not guards(conn, tenant, row.tag_id, username):
                raise not_found("No such notification")
            if username not in (row.read_by or []):
                conn.execute(
                    update(notifications)
                    .where(notifications.c.id == notification_id)
                    .values(read_by=[*(row.read_by or []), username])
                )

    def check_not_seen(self, now: datetime | None = None) -> int:
        """Notify guardians of tags unseen for their N hours (once until seen again)."""
        now = now or utc_now()
        sent = 0
        with self._writer.begin() as conn:
            watched = conn.execute(
                select(tags).where(
                    tags.c.not_seen_hours.is_not(None), tags.c.claimed_at.is_not(None)
                )
            ).all()
            for tag in watched:
                last = last_seen(conn, tag.tenant_id, tag.id)
                since = last.at if last else aware(tag.claimed_at)
                alerted = aware(tag.not_seen_alerted_at)
                if now - since < timedelta(hours=tag.not_seen_hours):
                    continue
                if alerted is not None and alerted >= since:
                    continue
                hours = tag.not_seen_hours
                label = tag.label or tag.id
                notify(
                    conn,
                    tag.tenant_id,
                    tag.id,
                    "not_seen",
                    now,
                    f"{label}さんが{hours:g}時間以上検知されていません",
                    f"{label} has not been detected for over {hours:g} hours",
                )
                conn.execute(
                    update(tags)
                    .where(tags.c.tenant_id == tag.tenant_id, tags.c.id == tag.id)
                    .values(not_seen_alerted_at=now)
                )
                sent += 1
        return sent

    def deliver_webhooks(self, client: Any, now: datetime | None = None, limit: int = 100) -> int:
        """POST due webhook payloads; failures are retried with backoff (up to 12 times)."""
        now = now or utc_now()
        with self.engine.connect() as conn:
            due = conn.execute(
                select(outbox)
                .where(
                    outbox.c.delivered_at.is_(None),
                    outbox.c.next_attempt_at <= now,
                    outbox.c.attempts < 12,
                )
                .order_by(outbox.c.id)
                .limit(limit)
            ).all()
        delivered = 0
        for item in due:
            error = None
            try:
                response = client.post(item.url, json=item.payload, timeout=5)
                if response.status_code >= 300:
                    error = f"HTTP {response.status_code}"
            except Exception as exc:  # noqa: BLE001 - any failure is retried later
                error = f"{type(exc).__name__}: {exc}"[:500]
            with self._writer.begin() as conn:
                if error is None:
                    conn.execute(
                        update(outbox).where(outbox.c.id == item.id).values(delivered_at=utc_now())
                    )
                    delivered += 1
                else:
                    backoff = timedelta(seconds=min(3600, 15 * 2**item.attempts))
                    conn.execute(
                        update(outbox)
                        .where(outbox.c.id == item.id)
                        .values(
                            attempts=item.attempts + 1,
                            next_attempt_at=now + backoff,
                            last_error=error,
                        )
                    )
                    log.warning("webhook to %s failed (%s); retrying", item.url, error)
        return delivered
