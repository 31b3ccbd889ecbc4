"""The broker's front door: NGSI-LD entity operations other modules and the routes call.

Every operation takes a :class:`TenantScope` (who, which tenant, may they write) and a
:class:`TermMap` (the request's @context). Writes run in one transaction each; batch
operations validate every entity first and report per-entity errors as the spec says.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    and_,
    any_,
    bindparam,
    exists,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError

from kizuna.broker import geo, store
from kizuna.broker.batching import RETRIES_ON_RACE, GroupCommitter, Planned, entity_write
from kizuna.broker.changes import ChangeListener, EntityChange
from kizuna.broker.context import ContextStore, TermMap
from kizuna.broker.models import entities, entity_types
from kizuna.broker.ngsild import (
    DELETED,
    NGSI_LD_NULL,
    Entity,
    Rendering,
    check_name,
    expand_attributes,
    expand_entity,
    expand_types,
    problem_for_entity,
    render_entity,
    to_iso,
)
from kizuna.broker.qlang import MAX_TERMS, parse_q
from kizuna.broker.qsql import compile_q
from kizuna.broker.typeexpr import compile_type_expression
from kizuna.problems import Problem, already_exists, bad_request, not_found
from kizuna.storage import writer
from kizuna.tenancy.service import TenantScope

T = TypeVar("T")
Instances = list[dict[str, Any]]
# The @context of one entity in a batch (application/ld+json carries one per entity).
TermMapOf = Callable[[Any], TermMap]
# Up to this many bounding-box candidates are passed to the entity query as a key list.
_GEO_KEYS_INLINE = 20_000


@dataclass
class UpdateResult:
    updated: list[str] = field(default_factory=list)
    not_updated: list[dict[str, str]] = field(default_factory=list)


@dataclass
class BatchResult:
    success: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


@dataclass
class Query:
    ids: list[str] | None = None
    id_pattern: str | None = None
    type_expression: str | None = None
    attrs: list[str] | None = None
    q: str | None = None
    geo: geo.GeoQuery | None = None
    scope_q: str | None = None
    limit: int = 20
    offset: int = 0
    count: bool = False
    order_by: str | None = None


@dataclass
class QueryResult:
    entities: list[dict[str, Any]]
    count: int | None


class Broker:
    def __init__(self, engine: Engine, contexts: ContextStore) -> None:
        self.engine = engine
        self.contexts = contexts
        self._writer = writer(engine)
        self._committer = GroupCommitter(self._writer)
        self._dialect = engine.dialect.name
        self._listeners: list[ChangeListener] = []

    def add_change_listener(self, listener: ChangeListener) -> None:
        """Call ``listener`` with every entity change, inside the writing transaction."""
        self._listeners.append(listener)

    # --- transactions --------------------------------------------------------------

    def _write_batch(self, work: Callable[[Connection], T]) -> T:
        """A batch operation in its own transaction, retried when a concurrent insert won a race."""
        for attempt in range(RETRIES_ON_RACE):
            try:
                with self._writer.begin() as conn:
                    return work(conn)
            except IntegrityError:
                if attempt == RETRIES_ON_RACE - 1:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _now() -> datetime:
        return datetime.now(UTC)

    # --- the only places entity rows are written: each tells the listeners ------------

    def _insert(
        self, conn: Connection, scope: TenantScope, new: Sequence[Entity], now: datetime
    ) -> None:
        store.insert_many(conn, scope, new, now)
        self._announce(conn, [EntityChange(scope.tenant, e.id, None, e, now) for e in new])

    def _update(
        self,
        conn: Connection,
        scope: TenantScope,
        changed: Sequence[tuple[store.Row, Entity]],
        now: datetime,
    ) -> None:
        store.update_many(conn, scope, changed, now)
        self._announce(
            conn,
            [EntityChange(scope.tenant, old.id, _entity_of(old), new, now) for old, new in changed],
        )

    def _delete(
        self, conn: Connection, scope: TenantScope, old: Sequence[store.Row], now: datetime
    ) -> None:
        store.delete_many(conn, scope, old)
        self._announce(
            conn, [EntityChange(scope.tenant, row.id, _entity_of(row), None, now) for row in old]
        )

    def _announce(self, conn: Connection, changes: list[EntityChange]) -> None:
        if changes:
            for listener in self._listeners:
                listener(conn, changes)

    # --- single-entity writes: the ones below and those the temporal API composes ------

    def write_one(self, scope: TenantScope, entity_id: str, work: Callable[[Connection], T]) -> T:
        """Run ``work`` as a single-entity write: one transaction, group-committed with
        concurrent ones."""
        return self._committer.submit((scope.tenant, entity_id), work)

    async def write_one_async(
        self, scope: TenantScope, entity_id: str, work: Callable[[Connection], T]
    ) -> T:
        """:meth:`write_one` for callers on an event loop."""
        return await self._committer.submit_async((scope.tenant, entity_id), work)

    def load_for_update(
        self, conn: Connection, scope: TenantScope, entity_id: str
    ) -> store.Row | None:
        return store.load(conn, scope, entity_id, lock=True)

    def put(
        self,
        conn: Connection,
        scope: TenantScope,
        old: store.Row | None,
        new: Entity | None,
        now: datetime,
    ) -> None:
        """Insert (no ``old``), replace, or delete (no ``new``) one entity row inside a
        write, telling the change listeners as every other write does."""
        if old is None and new is not None:
            self._insert(conn, scope, [new], now)
        elif old is not None and new is not None:
            self._update(conn, scope, [(old, new)], now)
        elif old is not None:
            self._delete(conn, scope, [old], now)

    # --- single entity -------------------------------------------------------------

    @entity_write
    def create(self, scope: TenantScope, tm: TermMap, body: Any) -> Planned[str]:
        now = self._now()
        entity = expand_entity(body, tm, to_iso(now))

        def work(conn: Connection) -> str:
            if store.load(conn, scope, entity.id) is not None:
                raise already_exists(f"Entity {entity.id} already exists")
            self._insert(conn, scope, [entity], now)
            return entity.id

        return scope, entity.id, work

    def retrieve(
        self,
        scope: TenantScope,
        tm: TermMap,
        entity_id: str,
        how: Rendering,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """One entity; with ``join=flat`` a list: the entity, then the entities it links to."""
        with self.engine.connect() as conn:
            row = store.load(conn, scope, entity_id)
            if row is None:
                raise not_found(f"Entity {entity_id} not found")
            if how.attrs is not None and not how.attrs & row.attrs.keys():
                raise not_found(f"Entity {entity_id} has none of the requested attributes")
            rendered = _render_linked(conn, scope, tm, [row], how)
        if not rendered[0]:
            raise not_found(f"Nothing of entity {entity_id} is left after pick / omit")
        # With join=flat the linked entities follow; with none linked it stays one entity.
        return rendered if len(rendered) > 1 else rendered[0]

    @entity_write
    def replace(self, scope: TenantScope, tm: TermMap, entity_id: str, body: Any) -> Planned[None]:
        now = self._now()
        if isinstance(body, dict) and "id" in body and body["id"] != entity_id:
            raise bad_request("The id in the body differs from the one in the URL")
        entity = expand_entity(
            {**body, "id": entity_id} if isinstance(body, dict) else body, tm, to_iso(now)
        )

        def work(conn: Connection) -> None:
            old = self._existing(conn, scope, entity_id)
            self._update(conn, scope, [(old, entity)], now)

        return scope, entity_id, work

    @entity_write
    def delete(self, scope: TenantScope, entity_id: str) -> Planned[None]:
        now = self._now()

        def work(conn: Connection) -> None:
            self._delete(conn, scope, [self._existing(conn, scope, entity_id)], now)

        return scope, entity_id, work

    def _existing(self, conn: Connection, scope: TenantScope, entity_id: str) -> store.Row:
        row = store.load(conn, scope, entity_id, lock=True)
        if row is None:
            raise not_found(f"Entity {entity_id} not found")
        return row

    # --- attributes ----------------------------------------------------------------

    @entity_write
    def append_attributes(
        self, scope: TenantScope, tm: TermMap, entity_id: str, fragment: Any, *, overwrite: bool
    ) -> Planned[UpdateResult]:
        now = self._now()
        new = _fragment(fragment, tm, to_iso(now))

        def work(conn: Connection) -> UpdateResult:
            old = self._existing(conn, scope, entity_id)
            attrs, result = _append(old.attrs, new, tm, overwrite=overwrite)
            types = _with_fragment_types(old.types, fragment, tm)
            self._update(conn, scope, [(old, Entity(old.id, types, old.scopes, attrs))], now)
            return result

        return scope, entity_id, work

    @entity_write
    def update_attributes(
        self, scope: TenantScope, tm: TermMap, entity_id: str, fragment: Any
    ) -> Planned[UpdateResult]:
        now = self._now()
        # An attribute (instance) whose value is NGSI-LD Null is deleted (1.8 §5.6.2).
        new = _fragment(fragment, tm, to_iso(now), allow_null=True)

        def work(conn: Connection) -> UpdateResult:
            old = self._existing(conn, scope, entity_id)
            attrs, result = _update(old.attrs, new, tm)
            self._update(conn, scope, [(old, Entity(old.id, old.types, old.scopes, attrs))], now)
            return result

        return scope, entity_id, work

    @entity_write
    def partial_update_attribute(
        self, scope: TenantScope, tm: TermMap, entity_id: str, attr: str, fragment: Any
    ) -> Planned[None]:
        if not isinstance(fragment, dict) or not fragment:
            raise bad_request("The body must be a non-empty JSON object")
        now = self._now()
        iri = tm.expand(check_name(attr))

        def work(conn: Connection) -> None:
            old = self._existing(conn, scope, entity_id)
            dataset = fragment.get("datasetId")
            instances = old.attrs.get(iri)
            current = _find_instance(instances, dataset) if instances else None
            if current is None:
                raise not_found(f"Entity {entity_id} has no attribute {attr}")
            if _is_null_fragment(fragment):
                kept = [i for i in instances if i is not current]
                attrs = dict(old.attrs)
                if kept:
                    attrs[iri] = kept
                else:
                    del attrs[iri]
                entity = Entity(old.id, old.types, old.scopes, attrs)
                self._update(conn, scope, [(old, entity)], now)
                return
            merged = {**_strip_system(current), **fragment}
            if "type" not in fragment and "value" in fragment and current.get("type") != "Property":
                merged.pop("type", None)
            [instance] = expand_attributes({attr: merged}, tm, to_iso(now))[iri]
            instance["createdAt"] = current.get("createdAt", instance["createdAt"])
            attrs = dict(old.attrs)
            attrs[iri] = [instance if i is current else i for i in instances]
            self._update(conn, scope, [(old, Entity(old.id, old.types, old.scopes, attrs))], now)

        return scope, entity_id, work

    @entity_write
    def replace_attribute(
        self, scope: TenantScope, tm: TermMap, entity_id: str, attr: str, fragment: Any
    ) -> Planned[None]:
        now = self._now()
        check_name(attr)
        if not isinstance(fragment, dict):
            raise bad_request("The body must be a JSON object")
        body = {k: v for k, v in fragment.items() if k != "@context"}
        new = expand_attributes({attr: body}, tm, to_iso(now))

        def work(conn: Connection) -> None:
            old = self._existing(conn, scope, entity_id)
            iri = next(iter(new))
            if iri not in old.attrs:
                raise not_found(f"Entity {entity_id} has no attribute {attr}")
            attrs, _ = _update(old.attrs, new, tm)
            self._update(conn, scope, [(old, Entity(old.id, old.types, old.scopes, attrs))], now)

        return scope, entity_id, work

    @entity_write
    def delete_attribute(
        self,
        scope: TenantScope,
        tm: TermMap,
        entity_id: str,
        attr: str,
        *,
        dataset_id: str | None = None,
        delete_all: bool = False,
    ) -> Planned[None]:
        iri = tm.expand(check_name(attr))
        now = self._now()

        def work(conn: Connection) -> None:
            old = self._existing(conn, scope, entity_id)
            instances = old.attrs.get(iri)
            if attr == "scope" and not instances:
                # The entity's scope is deleted through the attribute path too (NGSI-LD 4.18).
                if not old.scopes:
                    raise not_found(f"Entity {entity_id} has no scope")
                self._update(conn, scope, [(old, Entity(old.id, old.types, None, old.attrs))], now)
                return
            if not instances:
                raise not_found(f"Entity {entity_id} has no attribute {attr}")
            if delete_all:
                kept: Instances = []
            else:
                victim = _find_instance(instances, dataset_id)
                if victim is None:
                    raise not_found(f"Attribute {attr} has no instance with datasetId {dataset_id}")
                kept = [i for i in instances if i is not victim]
            attrs = dict(old.attrs)
            if kept:
                attrs[iri] = kept
            else:
                del attrs[iri]
            self._update(conn, scope, [(old, Entity(old.id, old.types, old.scopes, attrs))], now)

        return scope, entity_id, work

    @entity_write
    def merge(self, scope: TenantScope, tm: TermMap, entity_id: str, body: Any) -> Planned[None]:
        now = self._now()
        if not isinstance(body, dict):
            raise bad_request("The body must be a JSON object")
        if "id" in body and body["id"] != entity_id:
            raise bad_request("The id in the body differs from the one in the URL")
        patch = _merge_patch(body, tm, to_iso(now))

        def work(conn: Connection) -> None:
            old = self._existing(conn, scope, entity_id)
            self._update(conn, scope, [(old, _merged(old, patch))], now)

        return scope, entity_id, work

    # --- batch ---------------------------------------------------------------------

    def batch_create(self, scope: TenantScope, tm_for: TermMapOf, body: Any) -> BatchResult:
        now = self._now()
        stamp = to_iso(now)  # once: formatting it cost 2 µs an entity
        valid, result = _validate_batch(body, lambda item: expand_entity(item, tm_for(item), stamp))

        def work(conn: Connection) -> BatchResult:
            out = BatchResult(errors=list(result.errors))
            existing = store.load_many(conn, scope, [e.id for e in valid])
            fresh: dict[str, Entity] = {}
            for entity in valid:
                if entity.id in existing or entity.id in fresh:
                    out.errors.append(
                        problem_for_entity(
                            entity.id, already_exists(f"Entity {entity.id} already exists")
                        )
                    )
                else:
                    fresh[entity.id] = entity
            self._insert(conn, scope, list(fresh.values()), now)
            out.success = list(fresh)
            out.created = list(fresh)
            return out

        return self._write_batch(work)

    def batch_upsert(
        self, scope: TenantScope, tm_for: TermMapOf, body: Any, *, replace: bool
    ) -> BatchResult:
        now = self._now()
        stamp = to_iso(now)  # once: formatting it cost 2 µs an entity
        valid, result = _validate_batch(body, lambda item: expand_entity(item, tm_for(item), stamp))

        def work(conn: Connection) -> BatchResult:
            out = BatchResult(errors=list(result.errors))
            existing = store.load_many(conn, scope, [e.id for e in valid], lock=True)
            fresh: dict[str, Entity] = {}
            changed: dict[str, tuple[store.Row, Entity]] = {}
            for entity in valid:
                if entity.id in fresh:  # the same id twice in one request: later wins
                    fresh[entity.id] = _combine(fresh[entity.id], entity, replace)
                elif entity.id in existing:
                    old, base = existing[entity.id], changed.get(entity.id, (None, None))[1]
                    current = base or Entity(old.id, old.types, old.scopes, old.attrs)
                    changed[entity.id] = (old, _combine(current, entity, replace))
                else:
                    fresh[entity.id] = entity
            self._insert(conn, scope, list(fresh.values()), now)
            self._update(conn, scope, list(changed.values()), now)
            out.success = [e.id for e in valid]
            out.success = list(dict.fromkeys(out.success))
            out.created = list(fresh)
            return out

        return self._write_batch(work)

    def batch_update(
        self, scope: TenantScope, tm_for: TermMapOf, body: Any, *, overwrite: bool
    ) -> BatchResult:
        now = self._now()
        stamp = to_iso(now)

        def parse(item: Any) -> tuple[Entity, TermMap]:
            tm = tm_for(item)
            return expand_entity(item, tm, stamp, require_type=False), tm

        valid, result = _validate_batch(body, parse)

        def work(conn: Connection) -> BatchResult:
            out = BatchResult(errors=list(result.errors))
            existing = store.load_many(conn, scope, [e.id for e, _ in valid], lock=True)
            changed: dict[str, tuple[store.Row, Entity]] = {}
            for entity, tm in valid:
                old = existing.get(entity.id)
                if old is None:
                    out.errors.append(
                        problem_for_entity(entity.id, not_found(f"Entity {entity.id} not found"))
                    )
                    continue
                current = changed.get(
                    entity.id, (old, Entity(old.id, old.types, old.scopes, old.attrs))
                )[1]
                attrs, outcome = _append(current.attrs, entity.attrs, tm, overwrite=overwrite)
                types = _union(current.types, entity.types)
                changed[entity.id] = (old, Entity(old.id, types, current.scopes, attrs))
                if outcome.not_updated:
                    kept = ", ".join(n["attributeName"] for n in outcome.not_updated)
                    problem = bad_request(f"Attributes not overwritten (noOverwrite): {kept}")
                    out.errors.append(problem_for_entity(entity.id, problem))
                else:
                    out.success.append(entity.id)
            self._update(conn, scope, list(changed.values()), now)
            return out

        return self._write_batch(work)

    def batch_merge(self, scope: TenantScope, tm_for: TermMapOf, body: Any) -> BatchResult:
        now = self._now()
        stamp = to_iso(now)

        def parse(item: Any) -> tuple[str, Entity]:
            if not isinstance(item, dict):
                raise bad_request("Each entity must be a JSON object")
            tm = tm_for(item)
            expand_entity(item, tm, stamp, require_type=False)  # validation only
            return item["id"], _merge_patch(item, tm, stamp)

        pairs, result = _validate_batch(body, parse)

        def work(conn: Connection) -> BatchResult:
            out = BatchResult(errors=list(result.errors))
            existing = store.load_many(conn, scope, [i for i, _ in pairs], lock=True)
            changed: dict[str, tuple[store.Row, Entity]] = {}
            for entity_id, patch in pairs:
                old = existing.get(entity_id)
                if old is None:
                    out.errors.append(
                        problem_for_entity(entity_id, not_found(f"Entity {entity_id} not found"))
                    )
                    continue
                base = changed[entity_id][1] if entity_id in changed else None
                target = base if base is not None else old
                changed[entity_id] = (old, _merged(target, patch))
                out.success.append(entity_id)
            self._update(conn, scope, list(changed.values()), now)
            return out

        return self._write_batch(work)

    def batch_delete(self, scope: TenantScope, body: Any) -> BatchResult:
        if not isinstance(body, list) or not body:
            raise bad_request("The body must be a non-empty JSON array of entity ids")
        out = BatchResult()
        ids: list[str] = []
        for item in body:
            if not isinstance(item, str) or ":" not in item:
                out.errors.append(
                    problem_for_entity(item, bad_request(f"Invalid entity id {item!r}"))
                )
            else:
                ids.append(item)

        def work(conn: Connection) -> BatchResult:
            result = BatchResult(errors=list(out.errors))
            existing = store.load_many(conn, scope, ids, lock=True)
            for entity_id in ids:
                if entity_id in existing and entity_id not in result.success:
                    result.success.append(entity_id)
                else:
                    result.errors.append(
                        problem_for_entity(entity_id, not_found(f"Entity {entity_id} not found"))
                    )
            self._delete(conn, scope, [existing[i] for i in result.success], self._now())
            return result

        return self._write_batch(work)

    # --- query ---------------------------------------------------------------------

    def query(self, scope: TenantScope, tm: TermMap, query: Query, how: Rendering) -> QueryResult:
        with self.engine.connect() as conn:
            found, total = self.select_rows(conn, scope, tm, query)
            rendered = _render_linked(conn, scope, tm, found, how)
        return QueryResult([e for e in rendered if e], total)

    def select_rows(
        self,
        conn: Connection,
        scope: TenantScope,
        tm: TermMap,
        query: Query,
        extra: Sequence[Any] = (),
    ) -> tuple[list[store.Row], int | None]:
        """One page of the entity rows matching ``query`` (and ``extra`` conditions on
        broker_entities), with the total when ``query.count``."""
        conditions = self._conditions(conn, scope, tm, query)
        geo_decided = True
        if query.geo is not None:
            geo_condition, geo_decided = self._geo_condition(conn, scope, tm, query.geo)
            conditions.append(geo_condition)
        stmt = store.base_select(scope).where(*conditions, *extra)
        # Ordered by id by default: the (tenant, type, id) and (tenant, id) indexes then
        # return a page without sorting every match, however many there are.
        stmt = stmt.order_by(*self._ordering(tm, query.order_by), entities.c.id)
        if self._dialect == "postgresql" and not query.order_by and query.geo is None:
            # q predicates on JSON defeat the planner's estimates; a page in id order
            # should walk the index, not sort (or fan out over) every match. LOCAL:
            # these settings end with this read's transaction.
            conn.exec_driver_sql(
                "SET LOCAL enable_sort = off; SET LOCAL max_parallel_workers_per_gather = 0"
            )
        if not geo_decided:
            return self._geo_page(conn, scope, stmt, tm, query)
        total = None
        if query.count:
            total = conn.execute(
                select(func.count()).select_from(stmt.order_by(None).subquery())
            ).scalar_one()
        rows = (
            conn.execute(stmt.limit(query.limit).offset(query.offset)).all() if query.limit else []
        )
        return [store.to_row(r) for r in rows], total

    def matching_rows(self, scope: TenantScope, tm: TermMap, query: Query) -> list[store.Row]:
        """Stored rows matching a query (no geo-query), in id order, up to ``query.limit``."""
        with self.engine.connect() as conn:
            stmt = store.base_select(scope).where(*self._conditions(conn, scope, tm, query))
            stmt = stmt.order_by(entities.c.id).limit(query.limit)
            return [store.to_row(r) for r in conn.execute(stmt)]

    def _geo_page(
        self, conn: Connection, scope: TenantScope, stmt: Any, tm: TermMap, query: Query
    ) -> tuple[list[store.Row], int | None]:
        """Walk the bbox candidates in order, keeping exact matches for the page.

        The walk reads only each candidate's key and geo-attribute; whole entities are
        loaded for the page alone, so a dense area costs small rows, not full documents.
        """
        assert query.geo is not None
        iri = tm.expand(query.geo.geoproperty)
        light = stmt.with_only_columns(entities.c.pk, entities.c.attrs[iri].label("geo"))
        page_keys: list[int] = []
        seen = 0
        # Rows are small (key + one attribute), so one fetch beats a server-side cursor.
        for pk, instances in conn.execute(light):
            geometries = [i["value"] for i in instances or [] if i.get("type") == "GeoProperty"]
            if not geo.matches(query.geo, geometries):
                continue
            if query.offset <= seen < query.offset + query.limit:
                page_keys.append(pk)
            seen += 1
            if not query.count and seen >= query.offset + query.limit:
                break
        page = store.base_select(scope).where(_key_in(page_keys, self._dialect))
        rows = {r.pk: store.to_row(r) for r in conn.execute(page)} if page_keys else {}
        return [rows[pk] for pk in page_keys if pk in rows], (seen if query.count else None)

    def _conditions(
        self, conn: Connection, scope: TenantScope, tm: TermMap, query: Query
    ) -> list[Any]:
        conditions: list[Any] = []
        if query.ids:
            conditions.append(entities.c.id.in_(query.ids))
        if query.id_pattern:
            conditions.append(entities.c.id.regexp_match(query.id_pattern))
        if query.type_expression:
            conditions.append(
                compile_type_expression(
                    query.type_expression,
                    tm.expand,
                    lambda ts: store.type_in(scope, ts, conn),
                    lambda ts: _has_all_types(scope, ts),
                )
            )
        if query.attrs:
            iris = [tm.expand(a) for a in query.attrs]
            conditions.append(store.has_any_attribute(entities.c.attrs, iris, self._dialect))
        if query.q:
            conditions.append(
                compile_q(parse_q(query.q), entities.c.attrs, self._dialect, tm.expand)
            )
        if query.scope_q:
            conditions.append(_scope_condition(query.scope_q, self._dialect))
        return conditions

    def _geo_condition(
        self, conn: Connection, scope: TenantScope, tm: TermMap, query: geo.GeoQuery
    ) -> tuple[Any, bool]:
        """The geo-query's condition on broker_entities, and whether it decides the matches
        itself (else each candidate needs the exact test of :meth:`_geo_page`)."""
        candidates = geo.candidates(
            query, tm.expand(query.geoproperty), scope.tenant, self._dialect
        )
        # Ask the spatial index first: no planner can estimate a bounding-box test, and
        # a short list of keys lets it join the right way round.
        rows = conn.execute(candidates.limit(_GEO_KEYS_INLINE + 1)).all()
        if len(rows) <= _GEO_KEYS_INLINE:
            keys, decided = geo.candidate_keys(query, rows)
            return _key_in(keys, self._dialect), decided
        keys_only = candidates.with_only_columns(candidates.selected_columns.entity_pk)
        return entities.c.pk.in_(keys_only), False

    def _ordering(self, tm: TermMap, order_by: str | None) -> list[Any]:
        """orderBy: ``member[;asc|desc]`` terms, comma-separated (NGSI-LD 1.8)."""
        columns = {
            "id": entities.c.id,
            "type": entities.c.type,
            "createdAt": entities.c.created_at,
            "modifiedAt": entities.c.modified_at,
        }
        ordering = []
        for term in (order_by or "").split(",") if order_by else []:
            path, _, direction = term.strip().partition(";")
            if direction not in ("", "asc", "desc") or not path:
                raise bad_request(f"Invalid orderBy term {term!r}")
            if path in columns:
                column = columns[path]
            else:
                first, *rest = path.split(".")
                keys: list[str | int] = [tm.expand(check_name(first)), 0]
                for part in rest:
                    keys.append(
                        part if part in store.INSTANCE_META else tm.expand(check_name(part))
                    )
                if not rest or rest[-1] not in store.INSTANCE_META:
                    keys.append("value")
                column = store.attribute_value_path(entities.c.attrs, keys, self._dialect)
            ordering.append(column.desc() if direction == "desc" else column.asc())
        return ordering

    # --- discovery -----------------------------------------------------------------

    def type_names(self, scope: TenantScope) -> list[str]:
        with self.engine.connect() as conn:
            primary = conn.execute(
                select(entities.c.type).where(store.visible(scope)).distinct()
            ).scalars()
            extra = conn.execute(
                select(entity_types.c.type)
                .join(entities, entities.c.pk == entity_types.c.entity_pk)
                .where(store.visible(scope))
                .distinct()
            ).scalars()
            return sorted(set(primary) | set(extra))

    def type_details(self, scope: TenantScope) -> list[dict[str, Any]]:
        """Per type: entity count and attribute name -> attribute types."""
        details: dict[str, dict[str, Any]] = {}
        for row in self._scan(scope):
            for entity_type in row.types:
                info = details.setdefault(entity_type, {"count": 0, "attrs": {}})
                info["count"] += 1
                for iri, instances in row.attrs.items():
                    kinds = info["attrs"].setdefault(iri, set())
                    kinds.update(i.get("type", "Property") for i in instances)
        return [{"type": t, **v} for t, v in sorted(details.items())]

    def attribute_details(self, scope: TenantScope) -> list[dict[str, Any]]:
        details: dict[str, dict[str, Any]] = {}
        for row in self._scan(scope):
            for iri, instances in row.attrs.items():
                info = details.setdefault(iri, {"count": 0, "kinds": set(), "types": set()})
                info["count"] += 1
                info["kinds"].update(i.get("type", "Property") for i in instances)
                info["types"].update(row.types)
        return [{"attr": a, **v} for a, v in sorted(details.items())]

    def _scan(self, scope: TenantScope) -> Iterator[store.Row]:
        with self.engine.connect() as conn:
            for raw in _stream(conn, store.base_select(scope).order_by(entities.c.pk)):
                yield store.to_row(raw)


# --- helpers -------------------------------------------------------------------------


def _key_in(keys: list[int], dialect: str) -> Any:
    """``pk IN keys``; on PostgreSQL as one array parameter instead of one per key."""
    if dialect == "postgresql":
        return entities.c.pk == any_(bindparam("geo_keys", keys, type_=ARRAY(BigInteger)))
    return entities.c.pk.in_(keys)


def _stream(conn: Connection, stmt: Any) -> Iterator[Any]:
    yield from conn.execution_options(yield_per=200).execute(stmt)


def _render_linked(
    conn: Connection, scope: TenantScope, tm: TermMap, rows: list[store.Row], how: Rendering
) -> list[dict[str, Any]]:
    """Render rows; with ``join``, also the entities their relationships point to.

    Level by level up to ``join_level``: ``inline`` puts each linked entity under its
    relationship ("entity", or in place of the object for keyValues); ``flat`` appends
    each linked entity once after the results. Only relationships that survive
    pick/omit are followed; a nested projection (``locatedAt{id,name}``) shapes the
    linked entity.
    """
    rendered = [_render(r, tm, how) for r in rows]
    if how.join is None:
        return rendered
    seen = {r.id for r in rows}
    extra: list[dict[str, Any]] = []
    frontier = [(row, out, how) for row, out in zip(rows, rendered, strict=True)]
    for _ in range(how.join_level):
        links = []
        for row, out, shape in frontier:
            for iri, instances in row.attrs.items():
                name = tm.compact(iri)
                if name not in out:
                    continue
                nested = dataclasses.replace(
                    shape,
                    attrs=None,
                    pick=shape.pick.nested(name) if shape.pick else None,
                    omit=shape.omit.nested(name) if shape.omit else None,
                )
                for index, inst in enumerate(instances):
                    if inst.get("type") == "Relationship" and isinstance(inst.get("object"), str):
                        links.append((out, name, index, len(instances), inst["object"], nested))
        targets = store.load_many(conn, scope, [link[4] for link in links])
        frontier = []
        for out, name, index, count, target, nested in links:
            row = targets.get(target)
            if row is None:
                continue
            linked = _render(row, tm, nested)
            frontier.append((row, linked, nested))
            if how.join == "flat":
                if row.id not in seen:
                    seen.add(row.id)
                    extra.append(linked)
            elif how.format == "keyValues":
                out[name] = linked
            else:
                holder = out[name][index] if count > 1 else out[name]
                if isinstance(holder, dict):
                    holder["entity"] = linked
        if not frontier:
            break
    return rendered + extra


def _render(row: store.Row, tm: TermMap, how: Rendering) -> dict[str, Any]:
    # The entity's times are formatted only when shown: 200 a page cost ~1 ms otherwise.
    shown = how.sys_attrs
    return render_entity(
        row.id,
        row.types,
        row.scopes,
        row.attrs,
        to_iso(row.created_at) if shown else None,
        to_iso(row.modified_at) if shown else None,
        tm,
        how,
    )


def _entity_of(row: store.Row) -> Entity:
    return Entity(row.id, row.types, row.scopes, row.attrs)


def _validate_batch(body: Any, parse: Callable[[Any], T]) -> tuple[list[T], BatchResult]:
    if not isinstance(body, list):
        raise bad_request("A batch operation takes a JSON array")
    if not body:
        raise bad_request("A batch operation needs at least one entity")
    valid: list[T] = []
    result = BatchResult()
    for item in body:
        try:
            valid.append(parse(item))
        except Problem as problem:
            entity_id = item.get("id") if isinstance(item, dict) else None
            result.errors.append(problem_for_entity(entity_id, problem))
    return valid, result


def _fragment(
    fragment: Any, tm: TermMap, now: str, *, allow_null: bool = False
) -> dict[str, Instances]:
    if not isinstance(fragment, dict):
        raise bad_request("The body must be a JSON object of attributes")
    attrs = {k: v for k, v in fragment.items() if k not in ("@context", "id", "type", "scope")}
    if not attrs and "type" not in fragment and "scope" not in fragment:
        raise bad_request("No attributes given")
    return expand_attributes(attrs, tm, now, allow_null=allow_null)


def _is_null_fragment(fragment: dict[str, Any]) -> bool:
    """A partial attribute update whose value is NGSI-LD Null: delete the instance."""
    return any(
        fragment.get(key) in (NGSI_LD_NULL, [NGSI_LD_NULL], {"@none": NGSI_LD_NULL})
        for key in ("value", "object", "languageMap", "valueList", "objectList", "vocab", "json")
    )


def _with_fragment_types(types: list[str], fragment: Any, tm: TermMap) -> list[str]:
    if isinstance(fragment, dict) and "type" in fragment:
        return _union(types, expand_types(fragment["type"], tm))
    return types


def _union(first: list[str], second: list[str]) -> list[str]:
    return first + [t for t in second if t not in first]


def _find_instance(instances: Instances | None, dataset_id: str | None) -> dict[str, Any] | None:
    for inst in instances or []:
        if inst.get("datasetId") == dataset_id:
            return inst
    return None


def _strip_system(instance: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in instance.items() if k not in ("createdAt", "modifiedAt")}


def _keep_created(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if old is not None and "createdAt" in old:
        return {**new, "createdAt": old["createdAt"]}
    return new


def _put_instances(attrs: dict[str, Instances], iri: str, new: Instances) -> None:
    """Put each new instance in place of the one with the same datasetId, or add it."""
    current = list(attrs.get(iri, []))
    for inst in new:
        old = _find_instance(current, inst.get("datasetId"))
        if old is None:
            current.append(inst)
        else:
            current[current.index(old)] = _keep_created(old, inst)
    current.sort(key=lambda i: "datasetId" in i)
    attrs[iri] = current


def _append(
    attrs: dict[str, Instances], new: dict[str, Instances], tm: TermMap, *, overwrite: bool
) -> tuple[dict[str, Instances], UpdateResult]:
    out = dict(attrs)
    result = UpdateResult()
    for iri, instances in new.items():
        if not overwrite and iri in attrs:
            clash = [i for i in instances if _find_instance(attrs[iri], i.get("datasetId"))]
            if clash:
                result.not_updated.append(
                    {
                        "attributeName": tm.compact(iri),
                        "reason": "Attribute exists and noOverwrite was set",
                    }
                )
                instances = [i for i in instances if i not in clash]
                if not instances:
                    continue
        _put_instances(out, iri, instances)
        result.updated.append(tm.compact(iri))
    return out, result


def _update(
    attrs: dict[str, Instances], new: dict[str, Instances], tm: TermMap
) -> tuple[dict[str, Instances], UpdateResult]:
    out = dict(attrs)
    result = UpdateResult()
    for iri, instances in new.items():
        if iri not in attrs:
            result.not_updated.append(
                {"attributeName": tm.compact(iri), "reason": "The entity has no such attribute"}
            )
            continue
        deleted = {i.get("datasetId") for i in instances if i["type"] == DELETED}
        if deleted:
            kept = [i for i in out[iri] if i.get("datasetId") not in deleted]
            if kept:
                out[iri] = kept
            else:
                del out[iri]
            instances = [i for i in instances if i["type"] != DELETED]
        if instances:
            _put_instances(out, iri, instances)
        result.updated.append(tm.compact(iri))
    return out, result


def _combine(current: Entity, new: Entity, replace: bool) -> Entity:
    if replace:
        return new
    attrs = dict(current.attrs)
    for iri, instances in new.attrs.items():
        _put_instances(attrs, iri, instances)
    scopes = new.scopes if new.scopes is not None else current.scopes
    return Entity(current.id, _union(current.types, new.types), scopes, attrs)


def _merge_patch(body: dict[str, Any], tm: TermMap, now: str) -> Entity:
    types = expand_types(body["type"], tm) if "type" in body else []
    attrs = expand_attributes(
        {k: v for k, v in body.items() if k not in ("@context", "id", "type", "scope")},
        tm,
        now,
        allow_null=True,
    )
    scopes = body.get("scope")
    if scopes is not None and not isinstance(scopes, list):
        scopes = [scopes]
    return Entity(str(body.get("id", "")), types, scopes, attrs)


def _merged(old: store.Row | Entity, patch: Entity) -> Entity:
    attrs = copy.deepcopy(old.attrs)
    for iri, instances in patch.attrs.items():
        current = attrs.get(iri, [])
        for inst in instances:
            previous = _find_instance(current, inst.get("datasetId"))
            if inst["type"] == DELETED:
                if previous is not None:
                    current.remove(previous)
            elif previous is None:
                current.append(inst)
            else:
                current[current.index(previous)] = _merge_instance(previous, inst)
        current.sort(key=lambda i: "datasetId" in i)
        if current:
            attrs[iri] = current
        else:
            attrs.pop(iri, None)
    scopes = patch.scopes if patch.scopes is not None else old.scopes
    return Entity(old.id, _union(old.types, patch.types), scopes, attrs)


def _merge_instance(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        if key == "createdAt":
            continue
        if isinstance(value, dict) and value.get("value") == NGSI_LD_NULL:
            merged.pop(key, None)
        elif (
            isinstance(value, dict)
            and isinstance(old.get(key), dict)
            and "type" in value
            and ":" in key
        ):
            merged[key] = _merge_instance(old[key], value)
        else:
            merged[key] = value
    return merged


def _has_all_types(scope: TenantScope, types: Sequence[str]) -> Any:
    return and_(*(store.type_in(scope, [t]) for t in types))


def _scope_condition(scope_q: str, dialect: str) -> Any:
    """scopeQ: '/a/b' exact, '/a/#' subtree, '/a/+' one level; ',' OR, ';' AND."""

    def one(term: str) -> Any:
        term = term.strip()
        if not term.startswith("/"):
            raise bad_request(f"Invalid scopeQ term {term!r}")
        if term.endswith("/#"):
            pattern = "^" + re.escape(term[:-2]) + "(/.*)?$"
        else:
            pattern = (
                "^" + "/".join("[^/]+" if p == "+" else re.escape(p) for p in term.split("/")) + "$"
            )
        return _scopes_match(pattern, dialect)

    alternatives = [alternative.split(";") for alternative in scope_q.split(",")]
    if sum(len(terms) for terms in alternatives) > MAX_TERMS:
        raise bad_request(f"scopeQ has more than {MAX_TERMS} terms")
    return or_(*(and_(*(one(t) for t in terms)) for terms in alternatives))


def _scopes_match(pattern: str, dialect: str) -> Any:
    function = func.jsonb_array_elements_text if dialect == "postgresql" else func.json_each
    scope_values = function(entities.c.scopes).table_valued("value").alias("scope_values")
    return exists(
        select(literal_column("1"))
        .select_from(scope_values)
        .where(scope_values.c.value.regexp_match(pattern))
    )
