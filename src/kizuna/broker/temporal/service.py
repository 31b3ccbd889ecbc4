"""The temporal API's front door: temporal entity writes, retrieval, query, retention.

The temporal representation and the current entity are one entity seen two ways: the
current entity (``broker_entities``) holds the latest instance of each attribute, the
history (``temporal_series`` / ``temporal_instances``) every instance over time.

* Ordinary entity writes record history through the broker's change listener
  (:class:`~kizuna.broker.temporal.history.HistoryRecorder`).
* ``POST /temporal/entities`` and ``.../attrs`` write the given instances to the history
  and make the latest of each attribute (by observedAt) the current value, creating the
  entity when it does not exist. An instance with the same observedAt as a stored one of
  the same attribute and datasetId replaces it, so re-sending a reading is idempotent.
* Deleting the entity (either API) deletes its history; deleting an attribute through the
  temporal API deletes its history and current value; deleting it through the entity API
  leaves a ``deletedAt`` marker in the history.
* Modifying or deleting one instance (by instanceId) changes the history only.

Type, id, idPattern, q, geo and scope filters of a temporal query select entities by their
current state, through the broker's own query machinery.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, or_, select, union_all, update

from kizuna.broker import store
from kizuna.broker.context import TermMap
from kizuna.broker.models import entities
from kizuna.broker.ngsild import (
    ENTITY_RESERVED,
    Entity,
    _render_instance,
    _scopes,
    check_name,
    check_uri,
    expand_attributes,
    expand_types,
    render_entity,
    to_iso,
)
from kizuna.broker.ngsild import Rendering as EntityRendering
from kizuna.broker.projection import apply_omit, apply_pick
from kizuna.broker.service import Broker, Query
from kizuna.broker.temporal import history
from kizuna.broker.temporal.aggregation import Bucket, aggregate, rollup_window
from kizuna.broker.temporal.models import instance_id, instance_pk, instances, series
from kizuna.broker.temporal.params import TemporalQuery, TemporalRendering
from kizuna.problems import bad_request, not_found
from kizuna.storage import writer
from kizuna.storage.bulk import bulk_insert
from kizuna.tenancy.service import TenantScope

log = logging.getLogger("kizuna.temporal")
Instances = list[dict[str, Any]]
_UNION_CHUNK = 200
_SIMPLIFIED_KEYS = {
    "Property": ("values", "value"),
    "GeoProperty": ("values", "value"),
    "Relationship": ("objects", "object"),
    "LanguageProperty": ("languageMaps", "languageMap"),
    "VocabProperty": ("vocabs", "vocab"),
    "JsonProperty": ("jsons", "json"),
    "ListProperty": ("valueLists", "valueList"),
    "ListRelationship": ("objectLists", "objectList"),
}


@lru_cache(maxsize=8192)
def fmt_time(moment: datetime) -> str:
    """ISO 8601 in UTC, without a fraction when there is none (2020-08-01T12:03:00Z)."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SeriesInfo:
    pk: int
    entity_id: str
    attr: str
    dataset_id: str


@dataclass
class Fetched:
    """Instance rows per series after the time filter and the instance limit."""

    rows: dict[int, list[Any]]
    # Content-Range when the instance limit cut the result: (start, end, size).
    range: tuple[datetime, datetime, str] | None = None
    had_rows: set[int] = field(default_factory=set)


@dataclass
class TemporalResult:
    entities: list[dict[str, Any]]
    count: int | None = None
    content_range: str | None = None


class TemporalService:
    def __init__(self, broker: Broker, instance_limit: int = 100) -> None:
        self.broker = broker
        self.engine = broker.engine
        self.instance_limit = instance_limit
        # False: every aggregation reads the instances (what the rollups are checked against).
        self.use_rollups = True
        broker.add_change_listener(history.HistoryRecorder())

    # --- writes ----------------------------------------------------------------------

    def create_or_update(self, scope: TenantScope, tm: TermMap, body: Any) -> bool:
        """POST /temporal/entities; True when the entity was created."""
        now = datetime.now(UTC)
        if not isinstance(body, dict):
            raise bad_request("A temporal entity must be a JSON object")
        entity_id = check_uri(body.get("id"), "Entity id")
        types = expand_types(body.get("type"), tm)
        scopes = _scopes(body.get("scope")) if "scope" in body else None
        attrs = _temporal_attributes(
            {k: v for k, v in body.items() if k not in ENTITY_RESERVED}, tm, to_iso(now)
        )

        def work(conn: Connection) -> bool:
            old = self.broker.load_for_update(conn, scope, entity_id)
            if old is None:
                current = Entity(entity_id, types, scopes, _latest({}, attrs))
            else:
                current = Entity(
                    entity_id,
                    old.types + [t for t in types if t not in old.types],
                    scopes if scopes is not None else old.scopes,
                    _latest(old.attrs, attrs),
                )
            self._put_current(conn, scope, old, current, now)
            self._write_instances(conn, scope.tenant, entity_id, attrs, now)
            scoped = history.scope_instance(old.scopes if old else None, current.scopes)
            if scoped is not None and not scoped[1]:
                history_of_scope = {history.SCOPE_IRI: [scoped[0]]}
                self._write_instances(conn, scope.tenant, entity_id, history_of_scope, now)
            return old is None

        return self.broker.write_one(scope, entity_id, work)

    def append(self, scope: TenantScope, tm: TermMap, entity_id: str, fragment: Any) -> None:
        """POST /temporal/entities/{id}/attrs."""
        now = datetime.now(UTC)
        if not isinstance(fragment, dict):
            raise bad_request("The body must be a JSON object of attributes")
        members = {k: v for k, v in fragment.items() if k not in ENTITY_RESERVED}
        if not members:
            raise bad_request("No attributes given")
        attrs = _temporal_attributes(members, tm, to_iso(now))

        def work(conn: Connection) -> None:
            old = self.broker.load_for_update(conn, scope, entity_id)
            if old is None:
                raise not_found(f"Entity {entity_id} not found")
            current = Entity(entity_id, old.types, old.scopes, _latest(old.attrs, attrs))
            self._put_current(conn, scope, old, current, now)
            self._write_instances(conn, scope.tenant, entity_id, attrs, now)

        self.broker.write_one(scope, entity_id, work)

    def delete_entity(self, scope: TenantScope, entity_id: str) -> None:
        now = datetime.now(UTC)

        def work(conn: Connection) -> None:
            old = self.broker.load_for_update(conn, scope, entity_id)
            if old is not None:
                # The change listener drops the history with the entity.
                self.broker.put(conn, scope, old, None, now)
            elif not history.delete_entities(conn, scope.tenant, [entity_id]):
                raise not_found(f"Entity {entity_id} not found")

        self.broker.write_one(scope, entity_id, work)

    def delete_attribute(
        self,
        scope: TenantScope,
        tm: TermMap,
        entity_id: str,
        attr: str,
        *,
        dataset_id: str | None,
        delete_all: bool,
    ) -> None:
        iri = tm.expand(check_name(attr))
        now = datetime.now(UTC)

        def work(conn: Connection) -> None:
            old = self.broker.load_for_update(conn, scope, entity_id)
            found = self._series(conn, scope.tenant, [entity_id], frozenset({iri}), None)
            if old is None and not found:
                raise not_found(f"Entity {entity_id} not found")
            if delete_all:
                targets = found
            else:
                wanted = dataset_id or ""
                targets = [s for s in found if s.dataset_id == wanted]
            current = old.attrs.get(iri, []) if old is not None else []
            kept = (
                []
                if delete_all
                else [i for i in current if i.get("datasetId", "") != (dataset_id or "")]
            )
            if not targets and len(kept) == len(current):
                raise not_found(f"Entity {entity_id} has no attribute {attr} to delete")
            history.delete_series(conn, [s.pk for s in targets])
            if old is not None and len(kept) != len(current):
                attrs = dict(old.attrs)
                if kept:
                    attrs[iri] = kept
                else:
                    attrs.pop(iri, None)
                new = Entity(old.id, old.types, old.scopes, attrs)
                self._put_current(conn, scope, old, new, now)

        self.broker.write_one(scope, entity_id, work)

    def modify_instance(
        self,
        scope: TenantScope,
        tm: TermMap,
        entity_id: str,
        attr: str,
        instance: str,
        fragment: Any,
    ) -> None:
        iri = tm.expand(check_name(attr))
        check_uri(instance, "instanceId")
        if not isinstance(fragment, dict) or not fragment:
            raise bad_request("The body must be a non-empty JSON object (an attribute instance)")
        now = datetime.now(UTC)
        body = {k: v for k, v in fragment.items() if k not in ("@context", "instanceId")}
        [new] = expand_attributes({attr: body}, tm, to_iso(now))[iri]

        def work(conn: Connection) -> None:
            target = self._find_instance(conn, scope, entity_id, iri, instance)
            stored = dict(new)
            dataset = target.dataset_id
            if dataset:
                stored["datasetId"] = dataset
            else:
                stored.pop("datasetId", None)
            row = history.instance_row(target.series_pk, stored, now)
            conn.execute(
                update(instances)
                .where(instances.c.pk == target.pk)
                .values(
                    observed_at=row["observed_at"],
                    modified_at=now,
                    num_value=row["num_value"],
                    instance=row["instance"],
                )
            )

        self.broker.write_one(scope, entity_id, work)

    def delete_instance(
        self, scope: TenantScope, tm: TermMap, entity_id: str, attr: str, instance: str
    ) -> None:
        iri = tm.expand(check_name(attr))
        check_uri(instance, "instanceId")

        def work(conn: Connection) -> None:
            target = self._find_instance(conn, scope, entity_id, iri, instance)
            conn.execute(delete(instances).where(instances.c.pk == target.pk))

        self.broker.write_one(scope, entity_id, work)

    def _find_instance(
        self, conn: Connection, scope: TenantScope, entity_id: str, iri: str, instance: str
    ) -> Any:
        found = self._series(conn, scope.tenant, [entity_id], None, None)
        if not found and store.load(conn, scope, entity_id) is None:
            raise not_found(f"Entity {entity_id} not found")
        of_attr = [s for s in found if s.attr == iri]
        if not of_attr:
            raise not_found(f"Entity {entity_id} has no attribute {iri}")
        pk = instance_pk(instance)
        row = None
        if pk is not None:
            row = conn.execute(
                select(instances.c.pk, instances.c.series_pk).where(
                    instances.c.pk == pk,
                    instances.c.series_pk.in_([s.pk for s in of_attr]),
                )
            ).first()
        if row is None:
            raise not_found(f"No instance {instance} of attribute {iri}")
        dataset = next(s.dataset_id for s in of_attr if s.pk == row.series_pk)
        return _Target(row.pk, row.series_pk, dataset)

    def _put_current(
        self,
        conn: Connection,
        scope: TenantScope,
        old: store.Row | None,
        new: Entity,
        now: datetime,
    ) -> None:
        """Write the current entity without the listener recording it: the temporal API
        writes the history itself."""
        skip = conn.info.setdefault(history.SKIP_KEY, set())
        skip.add((scope.tenant, new.id))
        try:
            self.broker.put(conn, scope, old, new, now)
        finally:
            skip.discard((scope.tenant, new.id))

    def _write_instances(
        self,
        conn: Connection,
        tenant: str,
        entity_id: str,
        attrs: dict[str, Instances],
        now: datetime,
    ) -> None:
        keys = {
            (entity_id, iri, inst.get("datasetId", "")): None
            for iri, items in attrs.items()
            for inst in items
        }
        pks = history.series_pks(conn, tenant, keys)
        rows = [
            history.instance_row(pks[(entity_id, iri, inst.get("datasetId", ""))], inst, now)
            for iri, items in attrs.items()
            for inst in items
        ]
        # Same attribute, datasetId and observedAt: the new instance replaces the stored one.
        replaced: dict[int, list[datetime]] = {}
        for row in rows:
            if row["observed_at"] is not None:
                replaced.setdefault(row["series_pk"], []).append(row["observed_at"])
        for series_pk, times in replaced.items():
            # Look for clashes in the index over the new instances' time span (usually
            # none: a bulk load appends), and delete only those.
            stored = conn.execute(
                select(instances.c.observed_at).where(
                    instances.c.series_pk == series_pk,
                    instances.c.observed_at >= min(times),
                    instances.c.observed_at <= max(times),
                )
            ).scalars()
            clashes = set(times).intersection(stored)
            if clashes:
                conn.execute(
                    delete(instances).where(
                        instances.c.series_pk == series_pk,
                        instances.c.observed_at.in_(sorted(clashes)),
                    )
                )
        bulk_insert(conn, instances, rows)

    # --- reads -----------------------------------------------------------------------

    def retrieve(
        self,
        scope: TenantScope,
        tm: TermMap,
        entity_id: str,
        tq: TemporalQuery,
        how: TemporalRendering,
    ) -> TemporalResult:
        with self.engine.connect() as conn:
            row = store.load(conn, scope, entity_id)
            found = self._series(conn, scope.tenant, [entity_id], how.attrs, how.dataset_ids)
            if row is None:
                raise not_found(f"Entity {entity_id} not found")
            if how.attrs is not None and not found:
                raise not_found(f"Entity {entity_id} has none of the requested attributes")
            result = self._represent(conn, tm, [row], found, tq, how)
        if not result.entities or not result.entities[0]:
            raise not_found(f"Nothing of entity {entity_id} is left after pick / omit")
        return result

    def query(
        self,
        scope: TenantScope,
        tm: TermMap,
        query: Query,
        tq: TemporalQuery,
        how: TemporalRendering,
    ) -> TemporalResult:
        # Only entities with at least one instance in the temporal query (of the requested
        # attributes and datasets), decided in SQL so pages and counts stay right.
        condition = [
            series.c.tenant == entities.c.tenant,
            series.c.entity_id == entities.c.id,
            instances.c.series_pk == series.c.pk,
            *_conditions(tq, _time_column(tq.timeproperty)),
        ]
        if how.attrs is not None:
            condition.append(series.c.attr.in_(sorted(how.attrs)))
        if how.dataset_ids is not None:
            condition.append(series.c.dataset_id.in_(_dataset_keys(how.dataset_ids)))
        # LIMIT 1 keeps it a per-entity probe of the index: without it PostgreSQL turns the
        # EXISTS into a semi-join over every instance in the time range.
        extra = [exists(select(instances.c.series_pk).where(*condition).limit(1))]
        with self.engine.connect() as conn:
            rows, total = self.broker.select_rows(conn, scope, tm, query, extra)
            # End the entity page's read: its SET LOCAL planner settings (no sort, no
            # parallel workers) would slow the aggregation over many series.
            conn.rollback()
            found = self._series(
                conn, scope.tenant, [r.id for r in rows], how.attrs, how.dataset_ids
            )
            result = self._represent(conn, tm, rows, found, tq, how)
        result.entities = [e for e in result.entities if e]
        result.count = total
        return result

    def _series(
        self,
        conn: Connection,
        tenant: str,
        entity_ids: Sequence[str],
        attrs: frozenset[str] | None,
        dataset_ids: frozenset[str] | None,
    ) -> list[SeriesInfo]:
        if not entity_ids:
            return []
        stmt = select(series.c.pk, series.c.entity_id, series.c.attr, series.c.dataset_id).where(
            series.c.tenant == tenant, series.c.entity_id.in_(list(entity_ids))
        )
        if attrs is not None:
            stmt = stmt.where(series.c.attr.in_(sorted(attrs)))
        if dataset_ids is not None:
            stmt = stmt.where(series.c.dataset_id.in_(_dataset_keys(dataset_ids)))
        stmt = stmt.order_by(series.c.entity_id, series.c.attr, series.c.dataset_id)
        return [SeriesInfo(r.pk, r.entity_id, r.attr, r.dataset_id) for r in conn.execute(stmt)]

    def _represent(
        self,
        conn: Connection,
        tm: TermMap,
        rows: Sequence[store.Row],
        found: Sequence[SeriesInfo],
        tq: TemporalQuery,
        how: TemporalRendering,
    ) -> TemporalResult:
        by_entity: dict[str, list[SeriesInfo]] = {}
        for info in found:
            by_entity.setdefault(info.entity_id, []).append(info)
        time_col = _time_column(tq.timeproperty)
        conditions = _conditions(tq, time_col)
        content_range = None
        buckets: dict[int, list[Bucket]] = {}
        fetched = Fetched({})
        if how.format == "aggregatedValues":
            buckets = self._aggregate(conn, found, tq, how, time_col, conditions)
        else:
            fetched = self._fetch(conn, found, tq, time_col, conditions)
            if fetched.range is not None:
                start, end, size = fetched.range
                content_range = f"date-time {fmt_time(start)}-{fmt_time(end)}/{size}"
        out = []
        for row in rows:
            entity = _entity_head(row, tm)
            for info in by_entity.get(row.id, []):
                name = tm.compact(info.attr)
                if info.attr == history.SCOPE_IRI:
                    # The scope's history in the window stands in for the current scope.
                    if how.format == "aggregatedValues" or info.pk not in fetched.had_rows:
                        continue
                    name = "scope"
                    entity.pop(name, None)
                if how.format == "aggregatedValues":
                    _put_aggregated(entity, name, info, buckets.get(info.pk), how, tq)
                else:
                    _put_instances(entity, name, info, fetched, tq, how, tm)
            if how.pick is not None:
                entity = apply_pick(entity, how.pick)
            if how.omit is not None:
                entity = apply_omit(entity, how.omit)
            out.append(entity)
        return TemporalResult(out, content_range=content_range)

    def _fetch(
        self,
        conn: Connection,
        found: Sequence[SeriesInfo],
        tq: TemporalQuery,
        time_col: Any,
        conditions: list[Any],
    ) -> Fetched:
        cap = self.instance_limit
        n = min(tq.last_n, cap) if tq.last_n else cap
        backward = tq.last_n is not None
        order = (time_col.desc(), instances.c.pk.desc()) if backward else (time_col, instances.c.pk)
        columns = (
            instances.c.pk,
            instances.c.series_pk,
            instances.c.observed_at,
            instances.c.created_at,
            instances.c.modified_at,
            instances.c.deleted_at,
            instances.c.instance,
            time_col.label("at"),
        )
        rows: dict[int, list[Any]] = {}
        pks = [s.pk for s in found]
        for start in range(0, len(pks), _UNION_CHUNK):
            parts = [
                select(*columns)
                .where(instances.c.series_pk == pk, *conditions)
                .order_by(*order)
                .limit(n)
                .subquery()
                .select()
                for pk in pks[start : start + _UNION_CHUNK]
            ]
            stmt = parts[0] if len(parts) == 1 else union_all(*parts)
            for r in conn.execute(stmt):
                rows.setdefault(r.series_pk, []).append(r)
        result = Fetched(rows, had_rows={pk for pk, items in rows.items() if items})

        def moment(r: Any) -> datetime:
            return r.at or r.modified_at

        hit = [items for items in rows.values() if len(items) >= cap and n == cap]
        if hit:
            if backward:
                cut = max(min(moment(r) for r in items) for items in hit)
                for pk, items in rows.items():
                    rows[pk] = [r for r in items if moment(r) >= cut]
            else:
                cut = min(max(moment(r) for r in items) for items in hit)
                for pk, items in rows.items():
                    rows[pk] = [r for r in items if moment(r) <= cut]
            times = [moment(r) for items in rows.values() for r in items]
            if backward:
                if tq.timerel == "between":
                    start_at = tq.end_time_at
                elif tq.timerel == "before":
                    start_at = tq.time_at
                else:
                    start_at = max(times) if times else cut
            elif tq.timerel in ("after", "between"):
                start_at = tq.time_at
            else:
                start_at = min(times) if times else cut
            size = str(tq.last_n) if tq.last_n else "*"
            result.range = (start_at or cut, cut, size)
        for items in rows.values():
            items.sort(key=lambda r: (moment(r), r.pk))
        return result

    def _aggregate(
        self,
        conn: Connection,
        found: Sequence[SeriesInfo],
        tq: TemporalQuery,
        how: TemporalRendering,
        time_col: Any,
        conditions: list[Any],
    ) -> dict[int, list[Bucket]]:
        if not found:
            return {}
        assert how.aggr_period is not None
        if tq.timerel in ("after", "between") and tq.time_at is not None:
            origins = {s.pk: tq.time_at for s in found}
        else:
            origins = self._first_times(conn, [s.pk for s in found], time_col, conditions)
        end = tq.end_time_at if tq.timerel == "between" else None
        if tq.timerel == "before":
            end = tq.time_at
        window = None
        if self.use_rollups and tq.timerel in ("after", "between"):
            window = rollup_window(
                conn.dialect.name,
                tq.timeproperty,
                how.aggr_period,
                how.aggr_methods,
                tq.time_at,
                end,
            )
        buckets = aggregate(
            conn, origins, time_col, conditions, how.aggr_period, how.aggr_methods, end, window
        )
        if tq.last_n:
            buckets = {pk: items[-tq.last_n :] for pk, items in buckets.items()}
        return buckets

    def _first_times(
        self, conn: Connection, pks: Sequence[int], time_col: Any, conditions: list[Any]
    ) -> dict[int, datetime]:
        out: dict[int, datetime] = {}
        for start in range(0, len(pks), _UNION_CHUNK):
            parts = [
                select(instances.c.series_pk, time_col.label("at"))
                .where(instances.c.series_pk == pk, time_col.is_not(None), *conditions)
                .order_by(time_col)
                .limit(1)
                .subquery()
                .select()
                for pk in pks[start : start + _UNION_CHUNK]
            ]
            stmt = parts[0] if len(parts) == 1 else union_all(*parts)
            for r in conn.execute(stmt):
                out[r.series_pk] = r.at
        return out

    # --- retention -------------------------------------------------------------------

    def purge(
        self,
        default_days: int,
        by_tenant: dict[str, int] | None = None,
        now: datetime | None = None,
    ) -> int:
        """Delete instances older than the retention period; returns how many.

        ``default_days`` applies to every tenant without an entry in ``by_tenant``;
        0 keeps history forever. Age is observedAt, or when it was recorded.
        """
        now = now or datetime.now(UTC)
        by_tenant = by_tenant or {}
        removed = 0
        with self.broker.engine.connect() as conn:
            tenants = list(conn.execute(select(series.c.tenant).distinct()).scalars())
        for tenant in tenants:
            days = by_tenant.get(tenant, default_days)
            if days <= 0:
                continue
            cutoff = now - timedelta(days=days)
            keys = select(series.c.pk).where(series.c.tenant == tenant)
            stale = or_(
                instances.c.observed_at < cutoff,
                and_(instances.c.observed_at.is_(None), instances.c.modified_at < cutoff),
            )
            with writer(self.engine).begin() as conn:
                removed += conn.execute(
                    delete(instances).where(instances.c.series_pk.in_(keys), stale)
                ).rowcount
        if removed:
            log.info("temporal retention removed %d instances", removed)
        return removed


@dataclass
class _Target:
    pk: int
    series_pk: int
    dataset_id: str


# --- helpers -------------------------------------------------------------------------


def _temporal_attributes(members: dict[str, Any], tm: TermMap, now: str) -> dict[str, Instances]:
    """Attributes of a temporal body: each a list of instances, any number per datasetId."""
    out: dict[str, Instances] = {}
    for name, raw in members.items():
        check_name(name)
        items = (
            raw
            if isinstance(raw, list) and raw and all(isinstance(i, dict) for i in raw)
            else [raw]
        )
        for item in items:
            expanded = expand_attributes({name: item}, tm, now)
            for iri, insts in expanded.items():
                out.setdefault(iri, []).extend(insts)
    return out


def _latest(current: dict[str, Instances], new: dict[str, Instances]) -> dict[str, Instances]:
    """The current attributes with each (attribute, datasetId) at its latest instance."""
    attrs = {iri: list(items) for iri, items in current.items()}
    for iri, items in new.items():
        slot = attrs.setdefault(iri, [])
        for inst in items:
            dataset = inst.get("datasetId")
            existing = next((i for i in slot if i.get("datasetId") == dataset), None)
            if existing is None:
                slot.append(inst)
                continue
            old_time = history.parse_time(existing.get("observedAt"))
            new_time = history.parse_time(inst.get("observedAt"))
            if old_time is not None and (new_time is None or new_time < old_time):
                continue
            replacement = dict(inst)
            if "createdAt" in existing:
                replacement["createdAt"] = existing["createdAt"]
            slot[slot.index(existing)] = replacement
        slot.sort(key=lambda i: "datasetId" in i)
    return attrs


def _dataset_keys(dataset_ids: frozenset[str]) -> list[str]:
    return sorted("" if d == "@none" else d for d in dataset_ids)


def _time_column(prop: str) -> Any:
    return {
        "observedAt": instances.c.observed_at,
        "createdAt": instances.c.created_at,
        "modifiedAt": instances.c.modified_at,
        "deletedAt": instances.c.deleted_at,
    }[prop]


def _conditions(tq: TemporalQuery, col: Any) -> list[Any]:
    out: list[Any] = []
    if tq.timerel is not None or tq.explicit_property:
        out.append(col.is_not(None))
    else:
        out.append(instances.c.deleted_at.is_(None))
    # Half-open intervals: before(t) and after(t) split the timeline without overlap.
    if tq.timerel == "before":
        out.append(col < tq.time_at)
    elif tq.timerel == "after":
        out.append(col >= tq.time_at)
    elif tq.timerel == "between":
        out.append(col >= tq.time_at)
        out.append(col < tq.end_time_at)
    return out


def _entity_head(row: store.Row, tm: TermMap) -> dict[str, Any]:
    return render_entity(row.id, row.types, row.scopes, {}, None, None, tm, EntityRendering())


def _instance_out(r: Any, tm: TermMap, how: TemporalRendering) -> dict[str, Any]:
    stored = dict(r.instance)
    if r.observed_at is not None:
        stored["observedAt"] = fmt_time(r.observed_at)
    if how.sys_attrs:
        stored["createdAt"] = fmt_time(r.created_at)
        stored["modifiedAt"] = fmt_time(r.modified_at)
    out = _render_instance(stored, tm, EntityRendering(sys_attrs=how.sys_attrs))
    out["instanceId"] = instance_id(r.pk)
    if r.deleted_at is not None:
        out["deletedAt"] = fmt_time(r.deleted_at)
    return out


def _put_instances(
    entity: dict[str, Any],
    name: str,
    info: SeriesInfo,
    fetched: Fetched,
    tq: TemporalQuery,
    how: TemporalRendering,
    tm: TermMap,
) -> None:
    if info.pk not in fetched.had_rows:
        return  # nothing in the time range: the attribute is left out
    rows = fetched.rows.get(info.pk, [])
    if how.format == "normalized":
        items = entity.setdefault(name, [])
        items.extend(_instance_out(r, tm, how) for r in rows)
        return
    kind = rows[-1].instance.get("type", "Property") if rows else "Property"
    key, member = _SIMPLIFIED_KEYS.get(kind, ("values", "value"))
    values = []
    for r in rows:
        stored = r.instance
        when = fmt_time(r.at or r.modified_at)
        if kind in ("Property", "GeoProperty", "Relationship", "ListProperty"):
            values.append([stored.get(member), when])
        elif kind == "ListRelationship":
            values.append([[o.get("object") for o in stored.get(member, [])], when])
        elif kind == "VocabProperty":
            vocab = stored.get(member)
            compact = [tm.compact(v) for v in vocab] if isinstance(vocab, list) else vocab
            if isinstance(vocab, str):
                compact = tm.compact(vocab)
            values.append([{member: compact}, when])
        else:
            values.append([{member: stored.get(member)}, when])
    block: dict[str, Any] = {"type": kind, key: values}
    if info.dataset_id:
        block["datasetId"] = info.dataset_id
    _add_block(entity, name, block)


def _put_aggregated(
    entity: dict[str, Any],
    name: str,
    info: SeriesInfo,
    buckets: list[Bucket] | None,
    how: TemporalRendering,
    tq: TemporalQuery,
) -> None:
    if not buckets:
        return
    block: dict[str, Any] = {"type": "Property"}
    spans = [(fmt_time(b.start), fmt_time(b.end)) for b in buckets]
    for method in how.aggr_methods:
        block[method] = [
            [b.values[method], start, end]
            for b, (start, end) in zip(buckets, spans, strict=True)
            if b.values[method] is not None
        ]
    if info.dataset_id:
        block["datasetId"] = info.dataset_id
    _add_block(entity, name, block)


def _add_block(entity: dict[str, Any], name: str, block: dict[str, Any]) -> None:
    existing = entity.get(name)
    if existing is None:
        entity[name] = block
    elif isinstance(existing, list):
        existing.append(block)
    else:
        entity[name] = [existing, block]
