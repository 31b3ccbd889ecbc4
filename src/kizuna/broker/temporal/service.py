"""The temporal API's front door: history recording (a change listener) and queries.

History: :meth:`Temporal.record` is registered with ``Broker.add_change_listener`` and
runs inside every entity write's transaction. It stores one ``temporal_instances`` row per
attribute instance that is new or whose content (anything but createdAt/modifiedAt)
changed, with one executemany per write, so history commits or rolls back with the write.
Deleting an entity or attribute keeps its history (temporal DELETE removes it).

Temporal writes (``POST /temporal/entities`` and friends) add history only: they never
create or change the current entity, as NGSI-LD §5.6.11 keeps the two apart.

Queries filter in SQL (tenant, entity, attribute, time) and aggregation runs in SQL too:
one GROUP BY (entity, attribute, datasetId, period) per request, with the period number
computed from epoch seconds on both dialects.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Text,
    and_,
    cast,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from kizuna.broker.changes import EntityChange
from kizuna.broker.context import TermMap
from kizuna.broker.ngsild import (
    SYSTEM_KEYS,
    Entity,
    Rendering,
    _render_instance,
    expand_attributes,
    expand_entity,
    to_iso,
)
from kizuna.broker.temporal.models import temporal_entities as te
from kizuna.broker.temporal.models import temporal_instances as ti
from kizuna.problems import bad_request, not_found
from kizuna.storage import writer
from kizuna.storage.bulk import bulk_insert
from kizuna.tenancy.service import TenantScope

AGGR_METHODS = ("totalCount", "distinctCount", "sum", "avg", "min", "max", "stddev", "sumsq")
TIME_PROPERTIES = {
    "observedAt": "observed_at",
    "modifiedAt": "modified_at",
    "createdAt": "created_at",
}
_DURATION = re.compile(
    r"^P(?:(?P<y>\d+(?:\.\d+)?)Y)?(?:(?P<mo>\d+(?:\.\d+)?)M)?(?:(?P<w>\d+(?:\.\d+)?)W)?"
    r"(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<mi>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_duration(text: str) -> float:
    """Seconds of an ISO 8601 duration (a year counts 365 days, a month 30)."""
    match = _DURATION.match(text or "")
    if not match or text in ("P", "PT") or text.endswith("T"):
        raise bad_request(f"aggrPeriodDuration {text!r} is not an ISO 8601 duration")
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    return (
        parts.get("y", 0) * 365 * 86400
        + parts.get("mo", 0) * 30 * 86400
        + parts.get("w", 0) * 7 * 86400
        + parts.get("d", 0) * 86400
        + parts.get("h", 0) * 3600
        + parts.get("mi", 0) * 60
        + parts.get("s", 0)
    )


def parse_time(value: str | None, what: str) -> datetime:
    if not value:
        raise bad_request(f"{what} is required")
    text = value.strip().replace(" ", "+")  # a '+' in a query string arrives as a space
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(f"{what} must be an ISO 8601 DateTime, got {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass
class TemporalQuery:
    ids: list[str] | None = None
    id_pattern: str | None = None
    types: list[str] | None = None  # expanded
    attrs: list[str] | None = None  # expanded
    timerel: str | None = None
    time_at: datetime | None = None
    end_time_at: datetime | None = None
    timeproperty: str = "observedAt"
    last_n: int | None = None
    limit: int = 20
    offset: int = 0
    count: bool = False
    dataset_ids: list[str] | None = None
    # output
    temporal_values: bool = False
    sys_attrs: bool = False
    aggr_methods: list[str] | None = None
    aggr_period: float | None = None  # seconds; None or 0: the whole range


def make_query(
    *,
    timerel: str | None,
    time_at: str | None,
    end_time_at: str | None,
    timeproperty: str | None,
    last_n: str | None,
    aggr_methods: str | None,
    aggr_period: str | None,
    aggregated: bool,
) -> TemporalQuery:
    """Validate the temporal parameters shared by retrieve and query (400 on bad input)."""
    query = TemporalQuery()
    if timerel is not None:
        if timerel not in ("before", "after", "between"):
            raise bad_request("timerel must be before, after or between")
        query.timerel = timerel
        query.time_at = parse_time(time_at, "timeAt")
        if timerel == "between":
            query.end_time_at = parse_time(end_time_at, "endTimeAt")
            if query.end_time_at <= query.time_at:
                raise bad_request("endTimeAt must be after timeAt")
    elif time_at is not None:
        raise bad_request("timeAt needs timerel")
    if timeproperty is not None:
        if timeproperty not in TIME_PROPERTIES:
            raise bad_request("timeproperty must be observedAt, createdAt or modifiedAt")
        query.timeproperty = timeproperty
    if last_n is not None:
        if not last_n.isdigit() or int(last_n) < 1:
            raise bad_request("lastN must be a positive whole number")
        query.last_n = int(last_n)
    if aggregated:
        if not aggr_methods:
            raise bad_request("aggregatedValues needs aggrMethods")
        methods = [m.strip() for m in aggr_methods.split(",")]
        unknown = [m for m in methods if m not in AGGR_METHODS]
        if unknown:
            raise bad_request(f"Unknown aggrMethods: {', '.join(unknown)}")
        query.aggr_methods = methods
        if aggr_period is not None:
            query.aggr_period = parse_duration(aggr_period) or None
    return query


class Temporal:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = writer(engine)
        self._dialect = engine.dialect.name

    # --- history recording (the change listener) -------------------------------------

    def record(self, conn: Connection, changes: Sequence[EntityChange]) -> None:
        rows: list[dict[str, Any]] = []
        entities: dict[tuple[str, str], tuple[list[str], datetime]] = {}
        for change in changes:
            if change.after is None:
                continue
            at = _utc(change.at)
            before = change.before.attrs if change.before is not None else {}
            new = _changed_instances(before, change.after.attrs)
            if not new:
                continue
            entities[(change.tenant, change.entity_id)] = (change.after.types, at)
            for iri, inst in new:
                rows.append(
                    _row(change.tenant, change.entity_id, change.after.types, iri, inst, at)
                )
        if not rows:
            return
        self._upsert_entities(conn, entities)
        bulk_insert(conn, ti, rows)

    def _upsert_entities(
        self, conn: Connection, entities: dict[tuple[str, str], tuple[list[str], datetime]]
    ) -> None:
        values = [
            {
                "tenant": tenant,
                "entity_id": entity_id,
                "type": types[0],
                "types": types,
                "created_at": at,
                "modified_at": at,
            }
            for (tenant, entity_id), (types, at) in sorted(entities.items())
        ]
        dialect = postgresql if self._dialect == "postgresql" else sqlite
        stmt = dialect.insert(te)
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant", "entity_id"],
            set_={
                "type": stmt.excluded.type,
                "types": stmt.excluded.types,
                "modified_at": stmt.excluded.modified_at,
            },
        )
        conn.execute(stmt, values)

    # --- temporal writes ---------------------------------------------------------------

    def create_or_add(self, scope: TenantScope, tm: TermMap, body: Any) -> bool:
        """Add the body's instances to the entity's history; True if the entity was new."""
        now = datetime.now(UTC)
        if not isinstance(body, dict):
            raise bad_request("A temporal entity must be a JSON object")
        head = {k: body[k] for k in ("id", "type", "scope") if k in body}
        entity = expand_entity(head, tm, to_iso(now), require_type=False)
        fragment = {k: v for k, v in body.items() if k not in ("id", "type", "scope", "@context")}
        entity.attrs = _expand_history(fragment, tm, to_iso(now))
        with self._writer.begin() as conn:
            known = self._entity_row(conn, scope, entity.id) is not None
            self._add(conn, scope.tenant, entity, now)
        return not known

    def append(self, scope: TenantScope, tm: TermMap, entity_id: str, body: Any) -> None:
        if not isinstance(body, dict) or not body:
            raise bad_request("The body must be a JSON object of attributes")
        now = datetime.now(UTC)
        fragment = {k: v for k, v in body.items() if k not in ("id", "type", "@context")}
        attrs = _expand_history(fragment, tm, to_iso(now))
        with self._writer.begin() as conn:
            row = self._entity_row(conn, scope, entity_id)
            if row is None:
                raise not_found(f"Temporal entity {entity_id} not found")
            self._add(conn, scope.tenant, Entity(entity_id, row.types, None, attrs), now)

    def _add(self, conn: Connection, tenant: str, entity: Entity, at: datetime) -> None:
        rows = [
            _row(tenant, entity.id, entity.types, iri, inst, at)
            for iri, instances in entity.attrs.items()
            for inst in instances
        ]
        known = self._entity_row_conn(conn, tenant, entity.id)
        types = entity.types or (known.types if known else [])
        if not types:
            raise bad_request("A new temporal entity needs a type")
        self._upsert_entities(conn, {(tenant, entity.id): (types, _utc(at))})
        if rows:
            bulk_insert(conn, ti, rows)

    def delete_entity(self, scope: TenantScope, entity_id: str) -> None:
        with self._writer.begin() as conn:
            gone = conn.execute(
                delete(te).where(te.c.tenant == scope.tenant, te.c.entity_id == entity_id)
            ).rowcount
            if not gone:
                raise not_found(f"Temporal entity {entity_id} not found")
            conn.execute(delete(ti).where(ti.c.tenant == scope.tenant, ti.c.entity_id == entity_id))

    def delete_attribute(
        self,
        scope: TenantScope,
        entity_id: str,
        iri: str,
        dataset_id: str | None,
        delete_all: bool,
    ) -> None:
        with self._writer.begin() as conn:
            if self._entity_row(conn, scope, entity_id) is None:
                raise not_found(f"Temporal entity {entity_id} not found")
            stmt = delete(ti).where(
                ti.c.tenant == scope.tenant, ti.c.entity_id == entity_id, ti.c.attr == iri
            )
            if not delete_all:
                stmt = stmt.where(
                    ti.c.dataset_id == dataset_id if dataset_id else ti.c.dataset_id.is_(None)
                )
            if not conn.execute(stmt).rowcount:
                raise not_found(f"Entity {entity_id} has no history of {iri}")

    def modify_instance(
        self, scope: TenantScope, tm: TermMap, entity_id: str, iri: str, instance_id: str, body: Any
    ) -> None:
        if not isinstance(body, dict) or not body:
            raise bad_request("The body must be a JSON object with the attribute")
        now = datetime.now(UTC)
        name = tm.compact(iri)
        raw = body.get(name, body) if len(body) == 1 and name in body else body
        if isinstance(raw, list):
            if len(raw) != 1:
                raise bad_request("Give exactly one instance")
            raw = raw[0]
        inst = expand_attributes({name: raw}, tm, to_iso(now))[iri][0]
        with self._writer.begin() as conn:
            old = conn.execute(
                select(ti.c.pk, ti.c.created_at, ti.c.dataset_id).where(
                    ti.c.tenant == scope.tenant,
                    ti.c.entity_id == entity_id,
                    ti.c.attr == iri,
                    ti.c.instance_id == instance_id,
                )
            ).first()
            if old is None:
                raise not_found(f"Instance {instance_id} of {iri} not found")
            clean = _clean(inst)
            conn.execute(
                update(ti)
                .where(ti.c.pk == old.pk)
                .values(
                    instance=clean,
                    observed_at=_observed(clean),
                    value_num=_number(clean),
                    dataset_id=clean.get("datasetId"),
                    modified_at=now,
                )
            )

    def delete_instance(
        self, scope: TenantScope, entity_id: str, iri: str, instance_id: str
    ) -> None:
        with self._writer.begin() as conn:
            gone = conn.execute(
                delete(ti).where(
                    ti.c.tenant == scope.tenant,
                    ti.c.entity_id == entity_id,
                    ti.c.attr == iri,
                    ti.c.instance_id == instance_id,
                )
            ).rowcount
            if not gone:
                raise not_found(f"Instance {instance_id} of {iri} not found")

    def prune(self, older_than: datetime, tenant: str | None = None) -> int:
        """Delete instances recorded before ``older_than``; the number deleted."""
        with self._writer.begin() as conn:
            stmt = delete(ti).where(ti.c.modified_at < _utc(older_than))
            if tenant is not None:
                stmt = stmt.where(ti.c.tenant == tenant)
            removed = conn.execute(stmt).rowcount
            orphan = ~exists().where(ti.c.tenant == te.c.tenant, ti.c.entity_id == te.c.entity_id)
            orphans = delete(te).where(orphan)
            if tenant is not None:
                orphans = orphans.where(te.c.tenant == tenant)
            conn.execute(orphans)
        return removed

    # --- reads -----------------------------------------------------------------------

    def _entity_row(self, conn: Connection, scope: TenantScope, entity_id: str) -> Any:
        return self._entity_row_conn(conn, scope.tenant, entity_id)

    @staticmethod
    def _entity_row_conn(conn: Connection, tenant: str, entity_id: str) -> Any:
        return conn.execute(
            select(te.c.entity_id, te.c.types).where(
                te.c.tenant == tenant, te.c.entity_id == entity_id
            )
        ).first()

    def retrieve(
        self, scope: TenantScope, tm: TermMap, entity_id: str, query: TemporalQuery
    ) -> dict[str, Any]:
        query.ids = [entity_id]
        query.id_pattern = None
        query.types = None
        query.limit, query.offset, query.count = 1, 0, False
        with self.engine.connect() as conn:
            if self._entity_row(conn, scope, entity_id) is None:
                raise not_found(f"Temporal entity {entity_id} not found")
            entities, _ = self._run(conn, scope, tm, query, require_instances=False)
        return entities[0]

    def query(
        self, scope: TenantScope, tm: TermMap, query: TemporalQuery
    ) -> tuple[list[dict[str, Any]], int | None]:
        with self.engine.connect() as conn:
            return self._run(conn, scope, tm, query, require_instances=True)

    def _run(
        self,
        conn: Connection,
        scope: TenantScope,
        tm: TermMap,
        query: TemporalQuery,
        *,
        require_instances: bool,
    ) -> tuple[list[dict[str, Any]], int | None]:
        conds = [te.c.tenant == scope.tenant]
        if query.ids:
            conds.append(te.c.entity_id.in_(query.ids))
        if query.id_pattern:
            conds.append(self._regexp(te.c.entity_id, query.id_pattern))
        if query.types:
            conds.append(te.c.type.in_(query.types))
        if scope.visible_types is not None:
            conds.append(te.c.type.in_(sorted(scope.visible_types)))
        if require_instances and (query.attrs or query.timerel):
            inst = [ti.c.tenant == te.c.tenant, ti.c.entity_id == te.c.entity_id]
            inst += self._instance_filters(query)
            conds.append(exists().where(*inst))
        count = None
        if query.count:
            count = conn.execute(select(func.count()).select_from(te).where(*conds)).scalar_one()
        rows = conn.execute(
            select(te.c.entity_id, te.c.types)
            .where(*conds)
            .order_by(te.c.entity_id)
            .limit(query.limit)
            .offset(query.offset)
        ).all()
        if not rows:
            return [], count
        ids = [r.entity_id for r in rows]
        if query.aggr_methods:
            attrs = self._aggregate(conn, scope, tm, query, ids)
        else:
            attrs = self._instances(conn, scope, tm, query, ids)
        out = []
        for r in rows:
            types = [tm.compact(t) for t in r.types]
            entity: dict[str, Any] = {
                "id": r.entity_id,
                "type": types[0] if len(types) == 1 else types,
            }
            entity.update(attrs.get(r.entity_id, {}))
            out.append(entity)
        return out, count

    def _regexp(self, column: Any, pattern: str) -> Any:
        try:
            re.compile(pattern)
        except re.error:
            raise bad_request(f"idPattern {pattern!r} is not a valid regular expression") from None
        if self._dialect == "postgresql":
            return column.op("~")(pattern)
        return column.op("REGEXP")(pattern)

    def _time_column(self, query: TemporalQuery) -> Any:
        return ti.c[TIME_PROPERTIES[query.timeproperty]]

    def _instance_filters(self, query: TemporalQuery) -> list[Any]:
        conds: list[Any] = []
        if query.attrs:
            conds.append(ti.c.attr.in_(query.attrs))
        if query.dataset_ids is not None:
            named = [d for d in query.dataset_ids if d != "@none"]
            parts = [ti.c.dataset_id.in_(named)] if named else []
            if "@none" in query.dataset_ids:
                parts.append(ti.c.dataset_id.is_(None))
            conds.append(or_(*parts))
        col = self._time_column(query)
        if query.timerel == "before":
            conds.append(col < query.time_at)
        elif query.timerel == "after":
            conds.append(col > query.time_at)
        elif query.timerel == "between":
            conds.append(and_(col >= query.time_at, col < query.end_time_at))
        return conds

    def _instances(
        self,
        conn: Connection,
        scope: TenantScope,
        tm: TermMap,
        query: TemporalQuery,
        ids: list[str],
    ) -> dict[str, dict[str, Any]]:
        col = self._time_column(query)
        conds = [
            ti.c.tenant == scope.tenant,
            ti.c.entity_id.in_(ids),
            *self._instance_filters(query),
        ]
        cols = [
            ti.c.pk,
            ti.c.entity_id,
            ti.c.attr,
            ti.c.instance_id,
            ti.c.instance,
            ti.c.created_at,
            ti.c.modified_at,
            col.label("moment"),
        ]
        if query.last_n:
            rank = (
                func.row_number()
                .over(
                    partition_by=(ti.c.entity_id, ti.c.attr),
                    order_by=(col.desc(), ti.c.pk.desc()),
                )
                .label("rank")
            )
            inner = select(*cols, rank).where(*conds).subquery()
            stmt = (
                select(*[inner.c[c.name] for c in cols])
                .where(inner.c.rank <= query.last_n)
                .order_by(inner.c.entity_id, inner.c.attr, inner.c.moment, inner.c.pk)
            )
        else:
            stmt = select(*cols).where(*conds).order_by(ti.c.entity_id, ti.c.attr, col, ti.c.pk)
        how = Rendering(sys_attrs=query.sys_attrs)
        out: dict[str, dict[str, Any]] = {}
        for r in conn.execute(stmt):
            inst = dict(r.instance)
            inst["instanceId"] = r.instance_id
            if query.sys_attrs:
                inst["createdAt"] = to_iso(_utc(r.created_at))
                inst["modifiedAt"] = to_iso(_utc(r.modified_at))
            rendered = _render_instance(inst, tm, how)
            out.setdefault(r.entity_id, {}).setdefault(tm.compact(r.attr), []).append(
                (rendered, r.instance, r.moment)
            )
        result: dict[str, dict[str, Any]] = {}
        for entity_id, attrs in out.items():
            result[entity_id] = {
                name: (
                    _simplified(items, query.timeproperty)
                    if query.temporal_values
                    else [item[0] for item in items]
                )
                for name, items in attrs.items()
            }
        return result

    def _epoch(self, column: Any) -> Any:
        if self._dialect == "postgresql":
            return func.floor(func.extract("epoch", column))
        return cast(func.strftime("%s", column), Integer)

    def _value_text(self) -> Any:
        if self._dialect == "postgresql":
            return cast(func.coalesce(ti.c.instance["value"], ti.c.instance["object"]), Text)
        return func.coalesce(
            func.json_extract(ti.c.instance, "$.value"),
            func.json_extract(ti.c.instance, "$.object"),
        )

    def _aggregate(
        self,
        conn: Connection,
        scope: TenantScope,
        tm: TermMap,
        query: TemporalQuery,
        ids: list[str],
    ) -> dict[str, dict[str, Any]]:
        col = self._time_column(query)
        conds = [
            ti.c.tenant == scope.tenant,
            ti.c.entity_id.in_(ids),
            col.is_not(None),
            *self._instance_filters(query),
        ]
        if query.timerel in ("after", "between"):
            start = math.floor((query.time_at - _EPOCH).total_seconds())
        else:
            first = conn.execute(select(func.min(col)).where(*conds)).scalar()
            if first is None:
                return {}
            start = math.floor((_utc(first) - _EPOCH).total_seconds())
        period = query.aggr_period
        if period:
            step = max(1, int(period))
            bucket = cast((self._epoch(col) - start) / step, Integer)
            if self._dialect == "postgresql":
                bucket = cast(func.floor((self._epoch(col) - start) / step), Integer)
        else:
            bucket = literal(0)
        num = ti.c.value_num
        bucket = bucket.label("bucket")
        stmt = (
            select(
                ti.c.entity_id,
                ti.c.attr,
                ti.c.dataset_id,
                bucket,
                func.min(ti.c.instance["type"].as_string()).label("kind"),
                func.count().label("n"),
                func.count(func.distinct(self._value_text())).label("distinct"),
                func.count(num).label("n_num"),
                func.sum(num).label("sum"),
                func.sum(num * num).label("sumsq"),
                func.min(num).label("min"),
                func.max(num).label("max"),
                func.min(col).label("first"),
                func.max(col).label("last"),
            )
            .where(*conds)
            .group_by(ti.c.entity_id, ti.c.attr, ti.c.dataset_id, bucket)
            .order_by(ti.c.entity_id, ti.c.attr, ti.c.dataset_id, bucket)
        )
        out: dict[str, dict[str, dict[str | None, dict[str, Any]]]] = {}
        for r in conn.execute(stmt):
            if period:
                begin = datetime.fromtimestamp(start + r.bucket * int(period), UTC)
                end = begin + timedelta(seconds=int(period))
            elif query.timerel == "between":
                begin, end = query.time_at, query.end_time_at
            else:
                begin, end = _utc(r.first), _utc(r.last)
            span = [_iso(begin), _iso(end)]
            attr = out.setdefault(r.entity_id, {}).setdefault(tm.compact(r.attr), {})
            body = attr.setdefault(r.dataset_id, {"type": r.kind or "Property"})
            if r.dataset_id:
                body["datasetId"] = r.dataset_id
            for method in query.aggr_methods or ():
                body.setdefault(method, []).append([_aggregate_value(method, r), *span])
        return {
            entity_id: {
                name: bodies[None] if list(bodies) == [None] else list(bodies.values())
                for name, bodies in attrs.items()
            }
            for entity_id, attrs in out.items()
        }


def _aggregate_value(method: str, r: Any) -> Any:
    n = r.n_num
    if method == "totalCount":
        return r.n
    if method == "distinctCount":
        return r.distinct
    if n == 0:
        return None
    if method == "sum":
        return r.sum
    if method == "sumsq":
        return r.sumsq
    if method == "avg":
        return r.sum / n
    if method == "min":
        return r.min
    if method == "max":
        return r.max
    # stddev: the sample standard deviation (0 for a single value), like PostgreSQL's stddev.
    if n < 2:
        return 0.0
    mean = r.sum / n
    variance = max(0.0, (r.sumsq - n * mean * mean) / (n - 1))
    return math.sqrt(variance)


def _simplified(items: list[tuple[Any, dict[str, Any], Any]], timeproperty: str) -> Any:
    """temporalValues: per attribute {type, values: [[value, time], ...]} (per datasetId)."""
    groups: dict[str | None, dict[str, Any]] = {}
    for _rendered, inst, moment in items:
        dataset = inst.get("datasetId")
        kind = inst.get("type", "Property")
        body = groups.setdefault(dataset, {"type": kind})
        if dataset:
            body["datasetId"] = dataset
        if kind == "Relationship":
            key, value = "objects", inst.get("object")
        elif kind == "LanguageProperty":
            key, value = "languageMaps", inst.get("languageMap")
        elif kind == "VocabProperty":
            key, value = "vocabs", inst.get("vocab")
        elif kind == "JsonProperty":
            key, value = "jsons", inst.get("json")
        elif kind == "ListProperty":
            key, value = "valueLists", inst.get("valueList")
        else:
            key, value = "values", inst.get("value")
        when = _iso(moment) if moment is not None else None
        body.setdefault(key, []).append([value, when])
    return groups[None] if list(groups) == [None] else list(groups.values())


def _iso(moment: datetime) -> str:
    """UTC ISO 8601, without fractional seconds when there are none (2020-08-01T12:03:00Z)."""
    moment = _utc(moment)
    if moment.microsecond:
        return to_iso(moment)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _clean(inst: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in inst.items() if k not in SYSTEM_KEYS and k != "instanceId"}


def _observed(inst: dict[str, Any]) -> datetime | None:
    raw = inst.get("observedAt")
    if not isinstance(raw, str):
        return None
    try:
        return parse_time(raw, "observedAt")
    except Exception:  # noqa: BLE001 - validated on the way in; never fail the write here
        return None


def _number(inst: dict[str, Any]) -> float | None:
    value = inst.get("value")
    if (
        inst.get("type") == "Property"
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _row(
    tenant: str, entity_id: str, types: list[str], iri: str, inst: dict[str, Any], at: datetime
) -> dict[str, Any]:
    clean = _clean(inst)
    return {
        "tenant": tenant,
        "entity_id": entity_id,
        "entity_type": types[0] if types else "",
        "attr": iri,
        "dataset_id": clean.get("datasetId"),
        "instance_id": f"urn:ngsi-ld:attribute:instance:{uuid.uuid4()}",
        "observed_at": _observed(clean),
        "created_at": at,
        "modified_at": at,
        "value_num": _number(clean),
        "instance": clean,
    }


def _changed_instances(
    before: dict[str, list[dict[str, Any]]], after: dict[str, list[dict[str, Any]]]
) -> list[tuple[str, dict[str, Any]]]:
    """Instances of ``after`` that are new or whose content differs from ``before``."""
    out = []
    for iri, instances in after.items():
        old = {i.get("datasetId"): _clean(i) for i in before.get(iri, ())}
        for inst in instances:
            if old.get(inst.get("datasetId")) != _clean(inst):
                out.append((iri, inst))
    return out


def _expand_history(
    fragment: dict[str, Any], tm: TermMap, now: str
) -> dict[str, list[dict[str, Any]]]:
    """Attributes of a temporal body: each an array of instances, validated one by one.

    Instances of one attribute share a datasetId in a temporal body (they are points in
    time), which the entity validator would refuse as a whole.
    """
    attrs: dict[str, list[dict[str, Any]]] = {}
    for name, raw in fragment.items():
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise bad_request(f"Attribute {name!r} has no instances")
        for item in items:
            for iri, instances in expand_attributes({name: item}, tm, now).items():
                attrs.setdefault(iri, []).extend(instances)
    return attrs
