"""The write side of the temporal history: series keys and instance rows.

Every entity write hands its before/after to :func:`HistoryRecorder.__call__` inside the
writing transaction (``Broker.add_change_listener``), so history commits or rolls back with
the change. An instance that is new or differs from the one it replaces (a new
``modifiedAt`` is a difference: each update is an observation) becomes one row; an
instance that disappears becomes a deletion marker (``deletedAt``, value
``urn:ngsi-ld:null``); a deleted entity takes its history with it (the temporal
representation belongs to the entity: ``delete_temporal_on_core_delete``).

The entity's scope is recorded the same way, as a series named ``ngsi-ld:scope``: an
instance per change, and a deletion marker with an empty list as value.

Cost on the write path, per batch: the series of created entities written with keys
taken up front (one COPY on PostgreSQL, executemany on SQLite; no look-up), one indexed
SELECT for the series of updated entities and an INSERT … ON CONFLICT for any of theirs
that are new, and the instance rows in one COPY (executemany on SQLite); on PostgreSQL
the COPY's statement trigger adds the rows' day totals to ``temporal_daily`` (one
INSERT … ON CONFLICT per statement, migration temporal_0002; its pages are half empty,
so a day's row is updated in place: temporal_0003).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from kizuna.broker.changes import EntityChange, defer
from kizuna.broker.context import NGSI_LD
from kizuna.broker.ngsild import NGSI_LD_NULL
from kizuna.broker.temporal.models import instances, series
from kizuna.storage.bulk import (
    SPLIT_PARAM,
    allocate_keys,
    bulk_insert_values,
    joined_text,
    split_text,
)
from kizuna.storage.driver import fetch

# conn.info key: (tenant, entity id) pairs whose history the temporal API writes itself
# during the current write, so the listener leaves them alone.
SKIP_KEY = "kizuna.temporal.skip"
_TIME_KEYS = ("observedAt", "createdAt", "modifiedAt", "deletedAt", "instanceId")
_CHUNK = 1000
SeriesKey = tuple[str, str, str]  # entity id, attribute IRI, datasetId ('' default)
# The entity's scope has a history of its own, kept as a series of this name.
SCOPE_IRI = f"{NGSI_LD}scope"


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def numeric(inst: dict[str, Any]) -> float | None:
    value = inst.get("value")
    if inst.get("type") == "Property" and isinstance(value, int | float):
        return None if isinstance(value, bool) else float(value)
    return None


INSTANCE_COLUMNS = (
    "series_pk",
    "observed_at",
    "created_at",
    "modified_at",
    "deleted_at",
    "num_value",
    "instance",
)


def instance_row(
    series_pk: int,
    inst: dict[str, Any],
    now: datetime,
    *,
    deleted_at: datetime | None = None,
) -> dict[str, Any]:
    """One temporal_instances row for a stored-form attribute instance."""
    values = instance_values(series_pk, inst, now, deleted_at, parse_time)
    return dict(zip(INSTANCE_COLUMNS, values, strict=True))


def instance_values(
    series_pk: int,
    inst: dict[str, Any],
    now: datetime,
    deleted_at: datetime | None,
    moment: Callable[[Any], datetime | None],
) -> tuple[Any, ...]:
    """:func:`instance_row` as values in INSTANCE_COLUMNS order, its times read by
    ``moment`` (:func:`parse_time`, or a :func:`time_reader`'s)."""
    return (
        series_pk,
        moment(inst.get("observedAt")),
        moment(inst.get("createdAt")) or now,
        moment(inst.get("modifiedAt")) or now,
        deleted_at,
        numeric(inst),
        _without_times(inst),
    )


def _without_times(inst: dict[str, Any]) -> dict[str, Any]:
    # A copy with pops: half the cost of a comprehension testing every member.
    out = inst.copy()
    for key in _TIME_KEYS:
        out.pop(key, None)
    return out


_UNREAD = object()


def time_reader() -> Callable[[Any], datetime | None]:
    """:func:`parse_time` that parses each distinct string once: a write's instances share
    their createdAt and modifiedAt (the write's time) and mostly their observedAt."""
    read: dict[str, datetime | None] = {}

    def moment(value: Any) -> datetime | None:
        if not isinstance(value, str):
            return None
        found = read.get(value, _UNREAD)
        if found is _UNREAD:
            found = read[value] = parse_time(value)
        return found  # type: ignore[return-value]

    return moment


def deletion_marker(inst: dict[str, Any]) -> dict[str, Any]:
    """What a deleted instance looks like in the history (NGSI-LD's null per kind)."""
    kind = inst.get("type", "Property")
    marker: dict[str, Any] = {"type": kind}
    if kind == "Relationship":
        marker["object"] = NGSI_LD_NULL
    elif kind == "LanguageProperty":
        marker["languageMap"] = {"@none": NGSI_LD_NULL}
    elif kind == "VocabProperty":
        marker["vocab"] = NGSI_LD_NULL
    elif kind == "JsonProperty":
        marker["json"] = NGSI_LD_NULL
    elif kind == "ListProperty":
        marker["valueList"] = [NGSI_LD_NULL]
    elif kind == "ListRelationship":
        marker["objectList"] = [{"object": NGSI_LD_NULL}]
    else:
        marker["value"] = NGSI_LD_NULL
    if "datasetId" in inst:
        marker["datasetId"] = inst["datasetId"]
    if "createdAt" in inst:
        marker["createdAt"] = inst["createdAt"]
    return marker


def scope_instance(
    before: list[str] | None, after: list[str] | None
) -> tuple[dict[str, Any], bool] | None:
    """The history entry of a scope change, with True when the scope was deleted (its
    deletion marker has an empty list as value), or None when the scope did not change."""
    if (before or None) == (after or None):
        return None
    if after:
        return {"type": "Property", "value": list(after)}, False
    return {"type": "Property", "value": []}, True


def series_pks(
    conn: Connection,
    tenant: str,
    keys: Iterable[SeriesKey],
    *,
    create: bool = True,
    new: Iterable[SeriesKey] = (),
) -> dict[SeriesKey, int]:
    """Primary keys of the series, creating the missing ones (when ``create``).

    ``new`` are keys expected not to exist yet (a created entity's attributes): they are
    written with keys taken up front, without a look-up (see :func:`_insert_new_series`).
    """
    wanted = set(keys)
    # In the order given (a write's entities and their attributes): the keys taken for
    # them ascend along the instance rows, so those rows' index entries go to the right
    # edge of the indexes. No other order is needed against deadlocks: another writer
    # of these series would have to insert their entity first, and waits on that row.
    fresh = list(dict.fromkeys(key for key in new if key in wanted)) if create else []
    found = _insert_new_series(conn, tenant, fresh)
    found.update(_read_series(conn, tenant, wanted - found.keys()))
    missing = sorted(wanted - found.keys())
    if missing and create:
        found.update(_create_series(conn, tenant, missing))
        # Read back what the insert did not return: created by a concurrent writer first.
        found.update(_read_series(conn, tenant, wanted - found.keys()))
    return found


_SERIES_COLUMNS = ("pk", "tenant", "entity_id", "attr", "dataset_id")


def _insert_new_series(
    conn: Connection, tenant: str, keys: list[SeriesKey]
) -> dict[SeriesKey, int]:
    """Write series expected to be new in one plain bulk insert, with their keys taken up
    front: on PostgreSQL half the cost of INSERT … ON CONFLICT … RETURNING (16 against 33
    µs of server time for an entity's 6 series), with nothing to read back. If one
    exists after all (the history of an entity that was created again while the temporal
    API kept it), nothing is written and the caller takes the general path."""
    if not keys:
        return {}
    pks = allocate_keys(conn, series, len(keys))
    rows = [(pk, tenant, *key) for pk, key in zip(pks, keys, strict=True)]
    try:
        with conn.begin_nested():
            bulk_insert_values(conn, series, _SERIES_COLUMNS, rows)
    except IntegrityError:
        return {}
    return dict(zip(keys, pks, strict=True))


def _create_series(conn: Connection, tenant: str, keys: list[SeriesKey]) -> dict[SeriesKey, int]:
    """Insert the series that do not exist yet; returns those this statement created."""
    if not keys:
        return {}
    if conn.dialect.name == "postgresql":
        # One statement for the whole batch (a row-by-row executemany and a read-back
        # were over 40 % of a 1,000-entity batch's history cost).
        return _by_key(conn.execute(_PG_CREATE_SERIES, _key_lists(tenant, keys)))
    conn.execute(
        sqlite_insert(series).on_conflict_do_nothing(),
        [{"tenant": tenant, "entity_id": e, "attr": a, "dataset_id": d} for e, a, d in keys],
    )
    return {}  # nothing returned on SQLite: the caller reads the keys back


def _by_key(result: Any) -> dict[SeriesKey, int]:
    # fetchall and tuple unpacking: fetching thousands of rows one by one and reading
    # them by attribute name was half of the series lookup's time.
    return {(entity_id, attr, dataset): pk for pk, entity_id, attr, dataset in result.all()}


def _key_lists(tenant: str, keys: Iterable[SeriesKey]) -> dict[str, Any]:
    entity_ids, attrs, datasets = (joined_text(column) for column in zip(*keys, strict=True))
    return {"tenant": tenant, "entity_ids": entity_ids, "attrs": attrs, "datasets": datasets}


_KEYS = (
    f" unnest({split_text('entity_ids')}, {split_text('attrs')}, {split_text('datasets')})"
    " AS k(entity_id, attr, dataset_id)"
)
_PG_CREATE_SERIES = text(
    "INSERT INTO temporal_series (tenant, entity_id, attr, dataset_id)"
    f" SELECT :tenant, k.entity_id, k.attr, k.dataset_id FROM {_KEYS}"
    " ON CONFLICT DO NOTHING RETURNING pk, entity_id, attr, dataset_id"
)


# One index probe per entity, whatever the table's statistics say. With `entity_id IN
# (...)`, and again with a plain join of the keys, PostgreSQL planned a hash of the tenant's
# whole series list when its statistics lagged behind the table (autovacuum off or behind
# a bulk load): ~100 ms per 1,000-entity batch at 120,000 series, growing with the history.
# A LATERAL subquery behind OFFSET 0 cannot be flattened into a join, so each entity is one
# range scan of the unique index, which returns all of its series at once (a probe per
# (entity, attribute) key cost three times as much: 19 → 6 µs an entity of a report).
_PG_SERIES_OF_ENTITIES = (
    "SELECT s.pk, s.entity_id, s.attr, s.dataset_id"
    f" FROM unnest({SPLIT_PARAM}) AS k(entity_id) CROSS JOIN LATERAL"
    " (SELECT pk, entity_id, attr, dataset_id FROM temporal_series"
    " WHERE tenant = ? AND entity_id = k.entity_id OFFSET 0) s"
)


def _read_series(conn: Connection, tenant: str, wanted: set[SeriesKey]) -> dict[SeriesKey, int]:
    if not wanted:
        return {}
    if conn.dialect.name == "postgresql":
        # On the driver (here and on SQLite): a report's 6,000 series as SQLAlchemy rows
        # cost 3 ms.
        ids = joined_text(sorted({key[0] for key in wanted}))
        rows = fetch(conn, _PG_SERIES_OF_ENTITIES, (ids, tenant))
        return {key: pk for pk, e, a, d in rows if (key := (e, a, d)) in wanted}
    found: dict[SeriesKey, int] = {}
    ordered = sorted({key[0] for key in wanted})
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = fetch(conn, _SQLITE_SERIES_OF_ENTITIES.format(marks=marks), (tenant, *chunk))
        found.update((key, pk) for pk, e, a, d in rows if (key := (e, a, d)) in wanted)
    return found


_SQLITE_SERIES_OF_ENTITIES = (
    "SELECT pk, entity_id, attr, dataset_id FROM temporal_series"
    " WHERE tenant = ? AND entity_id IN ({marks})"
)


def delete_entities(conn: Connection, tenant: str, entity_ids: Sequence[str]) -> int:
    """Drop the whole history of these entities; returns the number of series dropped."""
    dropped = 0
    for start in range(0, len(entity_ids), _CHUNK):
        chunk = list(entity_ids[start : start + _CHUNK])
        keys = select(series.c.pk).where(series.c.tenant == tenant, series.c.entity_id.in_(chunk))
        conn.execute(delete(instances).where(instances.c.series_pk.in_(keys)))
        dropped += conn.execute(
            delete(series).where(series.c.tenant == tenant, series.c.entity_id.in_(chunk))
        ).rowcount
    return dropped


def delete_series(conn: Connection, pks: Sequence[int]) -> None:
    if pks:
        conn.execute(delete(instances).where(instances.c.series_pk.in_(list(pks))))
        conn.execute(delete(series).where(series.c.pk.in_(list(pks))))


class HistoryRecorder:
    """The change listener that keeps the temporal history."""

    def __call__(self, conn: Connection, changes: Sequence[EntityChange]) -> None:
        skip = conn.info.get(SKIP_KEY) or ()
        kept = [c for c in changes if (c.tenant, c.entity_id) not in skip]
        # In a group commit, one history write for all of the group's changes.
        if kept and not defer(conn, "temporal.history", kept, self._record_all):
            self._record_all(conn, [kept])

    def _record_all(self, conn: Connection, batches: list[list[EntityChange]]) -> None:
        by_tenant: dict[str, list[EntityChange]] = {}
        for change in (c for batch in batches for c in batch):
            by_tenant.setdefault(change.tenant, []).append(change)
        for tenant, items in by_tenant.items():
            # _record removes deleted entities' history first, so a deletion starts a new
            # run: a change before it (same group) must not be recorded after it.
            run: list[EntityChange] = []
            for change in items:
                if change.after is None and run:
                    self._record(conn, tenant, run)
                    run = []
                run.append(change)
            self._record(conn, tenant, run)

    def _record(self, conn: Connection, tenant: str, changes: list[EntityChange]) -> None:
        gone = [c.entity_id for c in changes if c.after is None]
        if gone:
            delete_entities(conn, tenant, gone)
        # (series, instance, deleted at, written at): a group's changes have their own times.
        pending: list[tuple[SeriesKey, dict[str, Any], datetime | None, datetime]] = []
        for change in changes:
            if change.after is None:
                continue
            entity_id, at = change.entity_id, change.at
            after = change.after.attrs
            if change.before is None:  # created: every instance is new
                pending += [
                    ((entity_id, iri, inst.get("datasetId", "")), inst, None, at)
                    for iri, new_instances in after.items()
                    for inst in new_instances
                ]
            else:
                before = change.before.attrs
                for iri, new_instances in after.items():
                    old = {i.get("datasetId", ""): i for i in before.get(iri, ())}
                    for inst in new_instances:
                        dataset = inst.get("datasetId", "")
                        if old.get(dataset) != inst:
                            pending.append(((entity_id, iri, dataset), inst, None, at))
                for iri, old_instances in before.items():
                    kept = {i.get("datasetId", "") for i in after.get(iri, ())}
                    for inst in old_instances:
                        dataset = inst.get("datasetId", "")
                        if dataset not in kept:
                            pending.append(
                                ((entity_id, iri, dataset), deletion_marker(inst), at, at)
                            )
            before_scopes = change.before.scopes if change.before is not None else None
            scoped = scope_instance(before_scopes, change.after.scopes)
            if scoped is not None:
                inst, deleted = scoped
                key = (entity_id, SCOPE_IRI, "")
                pending.append((key, inst, at if deleted else None, at))
        if not pending:
            return
        created = {c.entity_id for c in changes if c.before is None}
        pks = series_pks(
            conn,
            tenant,
            (item[0] for item in pending),
            new=(item[0] for item in pending if item[0][0] in created),
        )
        moment = time_reader()
        bulk_insert_values(
            conn,
            instances,
            INSTANCE_COLUMNS,
            [
                instance_values(pks[key], inst, written, deleted, moment)
                for key, inst, deleted, written in pending
            ],
        )
