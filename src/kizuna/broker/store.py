"""SQL access to entity rows. Every statement is bound to a TenantScope.

This is the one place tenant isolation is applied to broker data: each function takes
the scope and adds its tenant (and, for anonymous readers, its open-data types) to the
statement, so no caller can forget it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import array

from kizuna.broker import geo
from kizuna.broker.changes import defer, flush_now
from kizuna.broker.models import entities, entity_types, geo_index
from kizuna.broker.ngsild import Entity
from kizuna.storage.bulk import SPLIT_PARAM, allocate_keys, bulk_insert, joined_text
from kizuna.storage.driver import execute, fetch
from kizuna.storage.engine import json_text
from kizuna.tenancy.service import TenantScope


@dataclass
class Row:
    pk: int
    id: str
    types: list[str]
    scopes: list[str] | None
    attrs: dict[str, list[dict[str, Any]]]
    created_at: datetime
    modified_at: datetime


_COLUMNS = (
    entities.c.pk,
    entities.c.id,
    entities.c.types,
    entities.c.scopes,
    entities.c.attrs,
    entities.c.created_at,
    entities.c.modified_at,
)


def to_row(r: Any) -> Row:
    return Row(r.pk, r.id, r.types, r.scopes, r.attrs, r.created_at, r.modified_at)


def visible(scope: TenantScope) -> ColumnElement[bool]:
    """The tenant condition (and open-data restriction) every query carries."""
    condition = entities.c.tenant == scope.tenant
    if scope.visible_types is not None:
        condition = and_(condition, type_in(scope, sorted(scope.visible_types)))
    return condition


def type_in(
    scope: TenantScope, types: Sequence[str], conn: Connection | None = None
) -> ColumnElement[bool]:
    """Entities having any of ``types`` (multi-typed entities through broker_entity_types).

    Given a connection, the multi-typed side is left out when no such entity exists, so
    the plain condition lets the (tenant, type, id) index serve pages in order.
    """
    if not types:
        return false()
    if conn is not None and not _any_multi_typed(conn, scope, types):
        return entities.c.type.in_(types)
    return or_(
        entities.c.type.in_(types),
        entities.c.pk.in_(
            select(entity_types.c.entity_pk).where(
                entity_types.c.tenant == scope.tenant, entity_types.c.type.in_(types)
            )
        ),
    )


def _any_multi_typed(conn: Connection, scope: TenantScope, types: Sequence[str]) -> bool:
    found = conn.execute(
        select(entity_types.c.entity_pk)
        .where(entity_types.c.tenant == scope.tenant, entity_types.c.type.in_(types))
        .limit(1)
    ).first()
    return found is not None


def base_select(scope: TenantScope) -> Select:
    return select(*_COLUMNS).where(visible(scope))


def load(conn: Connection, scope: TenantScope, entity_id: str, *, lock: bool = False) -> Row | None:
    held = conn.info.get(_HELD)
    if held is not None and scope.visible_types is None and (scope.tenant, entity_id) in held:
        return held[(scope.tenant, entity_id)]
    stmt = base_select(scope).where(entities.c.id == entity_id)
    if lock:
        stmt = stmt.with_for_update()
    found = conn.execute(stmt).first()
    return to_row(found) if found else None


def load_many(
    conn: Connection, scope: TenantScope, ids: Iterable[str], *, lock: bool = False
) -> dict[str, Row]:
    found = _load_many(conn, scope.tenant, ids, lock=lock)
    if scope.visible_types is None:
        return found
    # Anonymous readers see the open-data types only: the condition of visible(scope),
    # applied to the rows' own types (a multi-typed entity is shown for any of them).
    shown = scope.visible_types
    return {i: row for i, row in found.items() if not shown.isdisjoint(row.types)}


# One probe of the (tenant, id) index per id, whatever the statistics say: `id IN (...)`
# and a plain join with the id list were both planned as a scan or hash of the tenant's
# entities when statistics lagged behind a growing table (30 ms instead of 0.7 ms for 167
# ids of 20,000), making each write batch cost the whole table. A LATERAL subquery with
# LIMIT 1 (and its own FOR UPDATE) cannot be flattened. Known gap: for an unlocked lookup
# with stale statistics PostgreSQL 15 may still pick the (tenant, type, id) index, which
# scans the tenant's entries for each id; the locked lookups of the write paths are planned
# on the unique index (a test checks). On the driver: this runs for every group commit,
# and building the statement with SQLAlchemy cost more than running it.
_PG_LOAD_MANY = (
    "SELECT f.pk, f.id, f.types, f.scopes, f.attrs, f.created_at, f.modified_at"
    f" FROM unnest({SPLIT_PARAM}) AS batch(id) CROSS JOIN LATERAL ("
    "SELECT * FROM broker_entities e WHERE e.tenant = ? AND e.id = batch.id LIMIT 1{lock}"
    ") f ORDER BY f.id"
)
PG_LOAD_MANY = {
    lock: _PG_LOAD_MANY.format(lock=" FOR UPDATE" if lock else "") for lock in (False, True)
}


def _load_many(conn: Connection, tenant: str, ids: Iterable[str], *, lock: bool) -> dict[str, Row]:
    """The tenant's entities of ``ids`` that exist; with ``lock``, locked in id order."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    if conn.dialect.name == "postgresql":
        found = fetch(conn, PG_LOAD_MANY[lock], (joined_text(wanted), tenant))
        return {r[1]: Row(*r) for r in found}
    # SQLite has no row locks: the write transaction itself is exclusive.
    stmt = select(*_COLUMNS).where(entities.c.tenant == tenant, entities.c.id.in_(wanted))
    return {r.id: to_row(r) for r in conn.execute(stmt.order_by(entities.c.id))}


# --- rows held by a group commit ------------------------------------------------------
#
# The group commit knows which entities its requests write before running them: it locks
# and reads them all in one statement per tenant (in (tenant, id) order, the order every
# writer locks in), and :func:`load` answers from here for the rest of the group, kept in
# step with the group's own writes. Updates are queued and written once for the group.

_HELD = "kizuna.store.held"
Key = tuple[str, str]  # tenant, entity id


def hold(conn: Connection, keys: Iterable[Key]) -> None:
    """Lock and read the entities of ``keys`` for the current write group."""
    by_tenant: dict[str, set[str]] = {}
    for tenant, entity_id in keys:
        by_tenant.setdefault(tenant, set()).add(entity_id)
    held: dict[Key, Row | None] = {}
    for tenant in sorted(by_tenant):
        found = _load_many(conn, tenant, by_tenant[tenant], lock=True)
        held.update({(tenant, i): found.get(i) for i in by_tenant[tenant]})
    conn.info[_HELD] = held


def release(conn: Connection) -> None:
    conn.info.pop(_HELD, None)


def _remember(conn: Connection, tenant: str, rows: Iterable[Row]) -> None:
    held = conn.info.get(_HELD)
    if held is not None:
        held.update({(tenant, row.id): row for row in rows})


def insert_many(
    conn: Connection, scope: TenantScope, new: Sequence[Entity], now: datetime
) -> dict[str, int]:
    """Insert entities; returns their primary keys by id."""
    if not new:
        return {}
    allocated = allocate_keys(conn, entities, len(new))
    rows = [
        {
            "pk": pk,
            "tenant": scope.tenant,
            "id": e.id,
            "type": e.types[0],
            "types": e.types,
            "scopes": e.scopes,
            "attrs": e.attrs,
            "created_at": now,
            "modified_at": now,
        }
        for pk, e in zip(allocated, new, strict=True)
    ]
    bulk_insert(conn, entities, rows)
    pks = {e.id: pk for pk, e in zip(allocated, new, strict=True)}
    _write_types(conn, [(scope.tenant, pks[e.id], e.types) for e in new if len(e.types) > 1])
    _write_geo(conn, [(scope.tenant, pks[e.id], e.attrs) for e in new])
    _remember(
        conn,
        scope.tenant,
        (Row(pks[e.id], e.id, e.types, e.scopes, e.attrs, now, now) for e in new),
    )
    return pks


def update_many(
    conn: Connection, scope: TenantScope, changed: Sequence[tuple[Row, Entity]], now: datetime
) -> None:
    """Write new types/scopes/attrs over existing rows, keeping their indexes in step.

    In a write group the rows are written once, at the end of the group."""
    if not changed:
        return
    _remember(
        conn,
        scope.tenant,
        (Row(o.pk, o.id, n.types, n.scopes, n.attrs, o.created_at, now) for o, n in changed),
    )
    items = [(scope.tenant, old, new, now) for old, new in changed]
    if not defer(conn, _UPDATES, items, _write_updates):
        _write_updates(conn, [items])


_UPDATES = "store.updates"
_Update = tuple[str, Row, Entity, datetime]  # tenant, row as read, new content, time


def _write_updates(conn: Connection, writes: list[list[_Update]]) -> None:
    # Several writes of one entity in a group: the row gets the last, its indexes are
    # compared with the row as it was read.
    final: dict[int, _Update] = {}
    for tenant, old, new, now in (item for items in writes for item in items):
        first = final.get(old.pk)
        final[old.pk] = (tenant, first[1] if first else old, new, now)
    if conn.dialect.name == "postgresql":
        _pg_write_updates(conn, list(final.values()))
    else:
        _sqlite_write_updates(conn, list(final.values()))
    retyped = [
        (t, old.pk, new.types) for t, old, new, _ in final.values() if old.types != new.types
    ]
    if retyped:
        conn.execute(
            delete(entity_types).where(entity_types.c.entity_pk.in_([p for _, p, _ in retyped]))
        )
        _write_types(conn, [item for item in retyped if len(item[2]) > 1])
    regeo = [
        (tenant, old.pk, new.attrs)
        for tenant, old, new, _ in final.values()
        if _geo_part(old.attrs) != _geo_part(new.attrs)
    ]
    if regeo:
        conn.execute(delete(geo_index).where(geo_index.c.entity_pk.in_([p for _, p, _ in regeo])))
        _write_geo(conn, regeo)


# One statement for all of a batch's rows: as an executemany of row UPDATEs (pipelined) it
# cost 28 µs an entity of PostgreSQL's time in a 1,000-entity upsert, and SQLAlchemy's
# per-row parameter work as much again in Python. JSON crosses as text lists split in SQL
# (an empty string is a NULL scope); the keys as an array literal.
_PG_UPDATE = (
    "UPDATE broker_entities AS e SET type = u.type, types = u.types::jsonb,"
    " scopes = NULLIF(u.scopes, '')::jsonb, attrs = u.attrs::jsonb,"
    " modified_at = u.modified_at::timestamptz"
    " FROM unnest(?::bigint[], {texts}) AS u(pk, type, types, scopes, attrs, modified_at)"
    " WHERE e.pk = u.pk"
).format(texts=", ".join([SPLIT_PARAM] * 5))


def _pg_write_updates(conn: Connection, final: list[_Update]) -> None:
    execute(
        conn,
        _PG_UPDATE,
        (
            "{" + ",".join(str(old.pk) for _, old, _, _ in final) + "}",
            joined_text(new.types[0] for _, _, new, _ in final),
            joined_text(json_text(new.types) for _, _, new, _ in final),
            joined_text(
                "" if new.scopes is None else json_text(new.scopes) for _, _, new, _ in final
            ),
            joined_text(json_text(new.attrs) for _, _, new, _ in final),
            joined_text(now.isoformat() for _, _, _, now in final),
        ),
    )


def _sqlite_write_updates(conn: Connection, final: list[_Update]) -> None:
    conn.execute(
        update(entities)
        .where(entities.c.pk == _bind("b_pk"))
        .values(
            type=_bind("b_type"),
            types=_bind("b_types", entities.c.types.type),
            scopes=_bind("b_scopes", entities.c.scopes.type),
            attrs=_bind("b_attrs", entities.c.attrs.type),
            modified_at=_bind("b_now", entities.c.modified_at.type),
        ),
        [
            {
                "b_pk": old.pk,
                "b_type": new.types[0],
                "b_types": new.types,
                "b_scopes": new.scopes,
                "b_attrs": new.attrs,
                "b_now": now,
            }
            for _, old, new, now in final
        ],
    )


def delete_many(conn: Connection, scope: TenantScope, rows: Sequence[Row]) -> None:
    if not rows:
        return
    flush_now(conn, _UPDATES)  # an update queued before the delete must not come after it
    held = conn.info.get(_HELD)
    if held is not None:
        held.update({(scope.tenant, row.id): None for row in rows})
    pks = [row.pk for row in rows]
    # Children first: SQLite only cascades with foreign keys on, and PostgreSQL does
    # the same work either way.
    conn.execute(delete(entity_types).where(entity_types.c.entity_pk.in_(pks)))
    conn.execute(delete(geo_index).where(geo_index.c.entity_pk.in_(pks)))
    conn.execute(delete(entities).where(entities.c.tenant == scope.tenant, entities.c.pk.in_(pks)))


def _bind(name: str, type_: Any = None) -> Any:
    return bindparam(name, type_=type_)


def _write_types(conn: Connection, items: list[tuple[str, int, list[str]]]) -> None:
    """Rows of broker_entity_types for (tenant, entity pk, types) of multi-typed entities."""
    rows = [
        {"tenant": tenant, "type": t, "entity_pk": pk} for tenant, pk, types in items for t in types
    ]
    if rows:
        bulk_insert(conn, entity_types, rows)


def _geo_part(attrs: dict[str, list[dict[str, Any]]]) -> list[tuple[str, Any]]:
    return [
        (iri, inst["value"])
        for iri, instances in attrs.items()
        for inst in instances
        if inst.get("type") == "GeoProperty"
    ]


def _write_geo(conn: Connection, items: list[tuple[str, int, dict[str, Any]]]) -> None:
    """geo_index rows for (tenant, entity pk, attrs): one per GeoProperty instance."""
    rows = []
    for tenant, pk, attrs in items:
        for iri, geometry in _geo_part(attrs):
            min_lon, min_lat, max_lon, max_lat = geo.bbox(geometry)
            rows.append(
                {
                    "entity_pk": pk,
                    "tenant": tenant,
                    "attr": iri,
                    "min_lon": min_lon,
                    "min_lat": min_lat,
                    "max_lon": max_lon,
                    "max_lat": max_lat,
                    "geometry": geometry,
                }
            )
    if rows:
        bulk_insert(conn, geo_index, rows)


def has_any_attribute(attrs_col: Any, iris: Sequence[str], dialect: str) -> ColumnElement[bool]:
    """Entities carrying at least one of the attributes (expanded names)."""
    if not iris:
        return true()
    if dialect == "postgresql":
        return attrs_col.op("?|")(array(list(iris)))
    # One test of the object's keys, however many names: an OR per name nested as deep
    # as the list is long, past SQLite's expression depth for a long `attrs`.
    keys = func.json_each(attrs_col).table_valued("key").alias("attr_keys")
    return exists(
        select(literal_column("1")).select_from(keys).where(keys.c.key.in_(sorted(set(iris))))
    )


INSTANCE_META = frozenset({"createdAt", "modifiedAt", "observedAt", "unitCode", "datasetId"})


def attribute_value_path(attrs_col: Any, keys: Sequence[str | int], dialect: str) -> Any:
    """The JSON value at ``keys`` inside ``attrs``, comparable and sortable in SQL."""
    if dialect == "postgresql":
        return attrs_col.op("#>")(array([str(k) for k in keys]))
    path = "$" + "".join(f"[{k}]" if isinstance(k, int) else "." + _quoted(k) for k in keys)
    return func.json_extract(attrs_col, path)


def _quoted(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
