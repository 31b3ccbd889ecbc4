"""Subscriptions' front door: CRUD, the write-path listener that fills the outbox, periodic work.

:class:`Subscriptions` registers :meth:`Subscriptions.on_changes` as a broker change
listener. For every entity write it runs inside the writing transaction: it checks the
tenant's subscription version (one key lookup), reuses the compiled matchers cached for
that version (or reloads them), picks the candidates by entity type, applies triggers,
watched attributes, q and geoQ in Python, and inserts one outbox row per (subscription,
trigger) with the changed entities. The row commits or rolls back with the change.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from kizuna.auth.service import SYSTEM
from kizuna.broker.changes import EntityChange, defer
from kizuna.broker.context import ContextStore, TermMap
from kizuna.broker.ngsild import Entity, to_iso
from kizuna.broker.service import Broker, Query
from kizuna.broker.subscriptions import document
from kizuna.broker.subscriptions.matching import (
    Matcher,
    TenantMatchers,
    compile_matcher,
    diff,
)
from kizuna.broker.subscriptions.models import outbox, subscription_versions, subscriptions
from kizuna.problems import already_exists, bad_request, not_found
from kizuna.settings import Settings
from kizuna.storage import writer
from kizuna.tenancy.service import TenantScope

log = logging.getLogger("kizuna.subscriptions")


@dataclass
class Page:
    items: list[dict[str, Any]]
    count: int


class Subscriptions:
    def __init__(
        self, engine: Engine, contexts: ContextStore, broker: Broker, settings: Settings
    ) -> None:
        self.engine = engine
        self.contexts = contexts
        self.broker = broker
        self.settings = settings
        self._writer = writer(engine)
        self._cache: dict[str, TenantMatchers] = {}
        self._lock = threading.Lock()
        # Called (from the writing thread) after a transaction that wrote outbox rows commits.
        self.on_enqueued: Any = None
        # Outcomes this process delivered but has not written yet (pk -> counters), so a
        # GET right after a notification already counts it.
        self._unflushed: dict[int, dict[str, Any]] = {}
        broker.add_change_listener(self.on_changes)

    def note_sent(self, sub_pk: int, at: datetime) -> None:
        """A notification's request is out: timesSent and lastNotification count it."""
        with self._lock:
            s = self._unflushed_of(sub_pk)
            s["sent"] += 1
            s["last"] = _later(s["last"], at)

    def note_outcome(self, sub_pk: int, ok: bool, at: datetime, sent_noted: bool = False) -> None:
        with self._lock:
            s = self._unflushed_of(sub_pk)
            if not sent_noted:
                s["sent"] += 1
                s["last"] = _later(s["last"], at)
            if ok:
                s["ok"] = _later(s["ok"], at)
            else:
                s["failed"] += 1
                s["bad"] = _later(s["bad"], at)

    def _unflushed_of(self, sub_pk: int) -> dict[str, Any]:
        return self._unflushed.setdefault(
            sub_pk, {"sent": 0, "failed": 0, "last": None, "ok": None, "bad": None}
        )

    def outcomes_written(self, stats: dict[int, dict[str, Any]]) -> None:
        with self._lock:
            for pk, written in stats.items():
                s = self._unflushed.get(pk)
                if s is None:
                    continue
                s["sent"] -= written["sent"]
                s["failed"] -= written["failed"]
                if s["sent"] <= 0:
                    del self._unflushed[pk]

    def _status(self, row: Any) -> dict[str, Any]:
        status = dict(row._mapping)
        s = self._unflushed.get(row.pk)
        if s is not None:
            status["times_sent"] += s["sent"]
            status["times_failed"] += s["failed"]
            for column, key in (
                ("last_notification", "last"),
                ("last_success", "ok"),
                ("last_failure", "bad"),
            ):
                status[column] = _later(status[column], s[key])
        return status

    # --- CRUD -------------------------------------------------------------------------

    def create(self, scope: TenantScope, tm: TermMap, body: Any) -> str:
        now = _now()
        doc = document.parse(body, tm, now)
        self._check_context(doc)
        row = _row_values(doc, now)
        try:
            with self._writer.begin() as conn:
                exists = conn.execute(
                    select(subscriptions.c.pk).where(
                        subscriptions.c.tenant == scope.tenant, subscriptions.c.id == doc["id"]
                    )
                ).first()
                if exists is not None:
                    raise already_exists(f"Subscription {doc['id']} already exists")
                conn.execute(
                    insert(subscriptions).values(
                        tenant=scope.tenant, created_at=now, times_sent=0, times_failed=0, **row
                    )
                )
                self._bump(conn, scope.tenant)
        except IntegrityError:
            raise already_exists(f"Subscription {doc['id']} already exists") from None
        return doc["id"]

    def retrieve(
        self, scope: TenantScope, tm: TermMap, sub_id: str, *, sys_attrs: bool = False
    ) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = self._load(conn, scope, sub_id)
        return document.render(row.doc, tm, self._status(row), _now(), sys_attrs=sys_attrs)

    def list(
        self, scope: TenantScope, tm: TermMap, limit: int, offset: int, *, sys_attrs: bool = False
    ) -> Page:
        with self.engine.connect() as conn:
            where = subscriptions.c.tenant == scope.tenant
            count = conn.execute(
                select(func.count()).select_from(subscriptions).where(where)
            ).scalar_one()
            rows = conn.execute(
                select(subscriptions)
                .where(where)
                .order_by(subscriptions.c.created_at, subscriptions.c.pk)
                .limit(limit)
                .offset(offset)
            ).all()
        now = _now()
        items = [
            document.render(r.doc, tm, self._status(r), now, sys_attrs=sys_attrs) for r in rows
        ]
        return Page(items, count)

    def update(self, scope: TenantScope, tm: TermMap, sub_id: str, fragment: Any) -> None:
        now = _now()
        with self._writer.begin() as conn:
            row = self._load(conn, scope, sub_id, lock=True)
            merged = document.merge(document.compact_body(row.doc, tm), fragment)
            # Members not in the fragment keep the context they were made with; new ones
            # are read with this request's.
            doc = document.parse(merged, tm, now, check_expiry=False)
            if "expiresAt" in fragment and fragment["expiresAt"] is not None:
                document.parse({**merged, "expiresAt": fragment["expiresAt"]}, tm, now)
            self._check_context(doc)
            doc["context"] = row.doc.get("context", []) if not tm.source else tm.source
            values = _row_values(doc, now)
            if row.time_interval == values["time_interval"] and row.next_periodic_at:
                values["next_periodic_at"] = row.next_periodic_at
            conn.execute(update(subscriptions).where(subscriptions.c.pk == row.pk).values(**values))
            self._bump(conn, scope.tenant)

    def delete(self, scope: TenantScope, sub_id: str) -> None:
        with self._writer.begin() as conn:
            row = self._load(conn, scope, sub_id, lock=True)
            conn.execute(delete(subscriptions).where(subscriptions.c.pk == row.pk))
            conn.execute(delete(outbox).where(outbox.c.subscription_pk == row.pk))
            self._bump(conn, scope.tenant)

    def _load(self, conn: Connection, scope: TenantScope, sub_id: str, lock: bool = False) -> Any:
        stmt = select(subscriptions).where(
            subscriptions.c.tenant == scope.tenant, subscriptions.c.id == sub_id
        )
        if lock:
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        if row is None:
            raise not_found(f"Subscription {sub_id} not found")
        return row

    def _check_context(self, doc: dict[str, Any]) -> None:
        if doc.get("jsonldContext"):
            # Unavailable: 503 LdContextNotAvailable; not a @context: 400.
            self.contexts.term_map(doc["jsonldContext"])

    def _bump(self, conn: Connection, tenant: str) -> None:
        done = conn.execute(
            update(subscription_versions)
            .where(subscription_versions.c.tenant == tenant)
            .values(version=subscription_versions.c.version + 1)
        ).rowcount
        if not done:
            conn.execute(insert(subscription_versions).values(tenant=tenant, version=1))
        with self._lock:
            self._cache.pop(tenant, None)

    # --- the write path ---------------------------------------------------------------

    def on_changes(self, conn: Connection, changes: Sequence[EntityChange]) -> None:
        # In a group commit: one subscription lookup and one outbox insert for the group.
        if not defer(conn, "subscriptions.outbox", list(changes), self._enqueue):
            self._enqueue(conn, [list(changes)])

    def _enqueue(self, conn: Connection, writes: list[list[EntityChange]]) -> None:
        """Outbox rows for each write's changes (a write's changes share notifications)."""
        matchers_of: dict[str, TenantMatchers | None] = {}
        rows: list[dict[str, Any]] = []
        for changes in writes:
            for tenant in {c.tenant for c in changes}:
                if tenant not in matchers_of:
                    matchers_of[tenant] = self._matchers(conn, tenant)
                matchers = matchers_of[tenant]
                if matchers is None:
                    continue
                rows += self._match(matchers, [c for c in changes if c.tenant == tenant])
        if rows:
            conn.execute(insert(outbox), rows)
            hook = self.on_enqueued
            if hook is not None:
                conn.info["kizuna_outbox"] = hook

    def _matchers(self, conn: Connection, tenant: str) -> TenantMatchers | None:
        version = conn.execute(
            select(subscription_versions.c.version).where(subscription_versions.c.tenant == tenant)
        ).scalar()
        if not version:
            return None
        cached = self._cache.get(tenant)
        if cached is not None and cached.version == version:
            return None if cached.empty else cached
        compiled: list[Matcher] = []
        for row in conn.execute(
            select(subscriptions.c.pk, subscriptions.c.doc).where(
                subscriptions.c.tenant == tenant, subscriptions.c.time_interval.is_(None)
            )
        ):
            try:
                tm = self.contexts.term_map(row.doc.get("context") or None)
                compiled.append(compile_matcher(row.pk, tenant, row.doc, tm.expand))
            except Exception:  # noqa: BLE001 - one broken subscription must not fail writes
                log.exception("subscription %s cannot be compiled; skipped", row.doc.get("id"))
        fresh = TenantMatchers.build(version, compiled)
        with self._lock:
            self._cache[tenant] = fresh
        return fresh if compiled else None

    def _match(self, matchers: TenantMatchers, changes: list[EntityChange]) -> list[dict[str, Any]]:
        now = changes[0].at
        grouped: dict[tuple[int, str], tuple[Matcher, list[dict[str, Any]]]] = {}
        for change in changes:
            subject = change.after if change.after is not None else change.before
            candidates = matchers.candidates(
                change.entity_id,
                change.types,
                subject.attrs,  # type: ignore[union-attr]
            )
            if not candidates:
                continue
            change_diff = None
            for m in candidates:
                if not m.live(now) or not m.selects(change.entity_id, change.types):
                    continue
                if change_diff is None:
                    change_diff = diff(change.before, change.after)
                trigger = m.trigger_for(change_diff)
                if trigger is None:
                    continue
                if not m.filters(subject.attrs):  # type: ignore[union-attr]
                    continue
                key = (m.pk, trigger)
                if key not in grouped:
                    grouped[key] = (m, [])
                with_before = (
                    m.show_changes or bool(change_diff.deleted) or subject is change.before
                )
                grouped[key][1].append(_snapshot(change, change_diff.kind, with_before))
        rows = []
        for (pk, trigger), (m, items) in grouped.items():
            rows.append(
                {
                    "id": f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
                    "tenant": m.tenant,
                    "subscription_pk": pk,
                    "endpoint": m.endpoint,
                    "trigger": trigger,
                    "payload": {"entities": items},
                    "created_at": now,
                    "due_at": now,
                    "attempts": 0,
                    "dead": False,
                }
            )
        return rows

    # --- periodic notifications (timeInterval) --------------------------------------------

    def run_periodic(self, now: datetime | None = None) -> int:
        """Enqueue the periodic notifications that are due; returns how many."""
        now = now or _now()
        with self.engine.connect() as conn:
            due = conn.execute(
                select(subscriptions).where(
                    subscriptions.c.next_periodic_at.is_not(None),
                    subscriptions.c.next_periodic_at <= now,
                )
            ).all()
        made = 0
        for row in due:
            doc = row.doc
            next_at = now + timedelta(seconds=row.time_interval)
            with self._writer.begin() as conn:
                # Claim this period: only the process that moves next_periodic_at sends it.
                claimed = conn.execute(
                    update(subscriptions)
                    .where(
                        subscriptions.c.pk == row.pk,
                        subscriptions.c.next_periodic_at == row.next_periodic_at,
                    )
                    .values(next_periodic_at=next_at)
                ).rowcount
                if not claimed or document.state(doc, now) != "active":
                    continue
                entities = self._periodic_entities(row.tenant, doc)
                if not entities:
                    continue
                conn.execute(
                    insert(outbox).values(
                        id=f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
                        tenant=row.tenant,
                        subscription_pk=row.pk,
                        endpoint=doc["notification"]["endpoint"]["uri"],
                        trigger="timeInterval",
                        payload={"entities": entities},
                        created_at=now,
                        due_at=now,
                        attempts=0,
                        dead=False,
                    )
                )
                made += 1
        if made and self.on_enqueued is not None:
            self.on_enqueued()
        return made

    def _periodic_entities(self, tenant: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
        scope = TenantScope(tenant, SYSTEM, False)
        tm = self.contexts.term_map(doc.get("context") or None)
        selectors = doc.get("entities") or []
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for selector in selectors or [{}]:
            query = Query(
                ids=[selector["id"]] if selector.get("id") else None,
                id_pattern=selector.get("idPattern"),
                type_expression=selector.get("type"),
                attrs=None,
                q=doc.get("q"),
                scope_q=doc.get("scopeQ"),
                limit=self.settings.max_page_limit,
            )
            for row in self.broker.matching_rows(scope, tm, query):
                if row.id in seen:
                    continue
                seen.add(row.id)
                at = to_iso(row.modified_at)
                out.append(
                    {
                        "after": _stored(
                            Entity(row.id, row.types, row.scopes, row.attrs),
                            to_iso(row.created_at),
                            at,
                        ),
                        "at": at,
                    }
                )
        return out


# --- helpers -------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(_aware(a), _aware(b))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _row_values(doc: dict[str, Any], now: datetime) -> dict[str, Any]:
    interval = doc.get("timeInterval")
    return {
        "id": doc["id"],
        "doc": doc,
        "is_active": doc.get("isActive", True),
        "expires_at": document.expires_at(doc),
        "time_interval": float(interval) if interval is not None else None,
        "next_periodic_at": now + timedelta(seconds=interval) if interval is not None else None,
        "modified_at": now,
    }


def _stored(entity: Entity, created_at: str, modified_at: str) -> dict[str, Any]:
    return {
        "id": entity.id,
        "types": entity.types,
        "scopes": entity.scopes,
        "attrs": entity.attrs,
        "createdAt": created_at,
        "modifiedAt": modified_at,
    }


def _snapshot(change: EntityChange, kind: str, with_before: bool) -> dict[str, Any]:
    at = to_iso(change.at)
    item: dict[str, Any] = {"at": at}
    if change.after is not None:
        created = at if kind == "created" else _earliest(change.before or change.after, at)
        item["after"] = _stored(change.after, created, at)
    if change.before is not None and with_before:
        item["before"] = _stored(change.before, _earliest(change.before, at), at)
    return item


def _earliest(entity: Entity, default: str) -> str:
    """An entity's createdAt, as the earliest createdAt of its attribute instances."""
    stamps = [i["createdAt"] for insts in entity.attrs.values() for i in insts if "createdAt" in i]
    return min(stamps) if stamps else default


__all__ = ["Subscriptions", "Page", "bad_request"]
