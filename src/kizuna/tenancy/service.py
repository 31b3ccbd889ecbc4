"""The tenancy module's front door: tenants, regions, and the TenantScope every query runs in.

A :class:`TenantScope` is the only way into tenant data: it is built by
:meth:`TenantDirectory.scope` after checking that the tenant exists and that the
principal may read or write there, and every store function takes one. Anonymous
callers get a scope restricted to the entity types the tenant publishes as open data.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache
from sqlalchemy import Connection, Engine, delete, insert, select

from kizuna.auth.service import Principal
from kizuna.problems import (
    bad_request,
    forbidden,
    invalid_request,
    nonexistent_tenant,
    unauthorized,
)
from kizuna.storage import writer
from kizuna.tenancy.models import enabled_services, open_types, regions, tenants

DEFAULT_TENANT = "default"
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class TenantScope:
    tenant: str
    principal: Principal
    can_write: bool
    # None: every entity type is visible. Otherwise only these (expanded) types are.
    visible_types: frozenset[str] | None = None


class TenantDirectory:
    """Knows which tenants exist and what they publish; cached briefly per process."""

    def __init__(self, engine: Engine, cache_seconds: float = 10) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._known: TTLCache[str, bool] = TTLCache(maxsize=10_000, ttl=cache_seconds)
        self._open: TTLCache[str, frozenset[str]] = TTLCache(maxsize=10_000, ttl=cache_seconds)

    def scope(self, principal: Principal, tenant_header: str | None, *, write: bool) -> TenantScope:
        tenant = tenant_header.strip() if tenant_header else DEFAULT_TENANT
        if not TENANT_NAME.match(tenant):
            raise bad_request(f"Invalid tenant name {tenant!r}")
        if principal.is_anonymous:
            if write:
                raise unauthorized("Writing requires an API key or a bearer token")
            self.require(tenant)
            return TenantScope(tenant, principal, False, self._open_types(tenant))
        if not principal.acts_in(tenant):
            raise forbidden(f"Not allowed in tenant {tenant!r}")
        if write and not principal.can_write:
            raise forbidden("These credentials may only read")
        if not self._exists(tenant):
            # NGSI-LD creates a tenant implicitly on its first write; Kizuna lets only
            # platform admins do that, so a typo in a header cannot spawn a municipality.
            if write and principal.is_platform_admin:
                self.create_tenant(tenant, tenant, tenant)
            else:
                raise nonexistent_tenant(tenant)
        return TenantScope(tenant, principal, write)

    def require(self, tenant: str) -> None:
        """Refuse a tenant name that is malformed (400) or names no tenant (404)."""
        if not TENANT_NAME.match(tenant):
            raise bad_request(f"Invalid tenant name {tenant!r}")
        if not self._exists(tenant):
            raise nonexistent_tenant(tenant)

    def _exists(self, tenant: str) -> bool:
        with self._lock:
            if self._known.get(tenant):
                return True
        with self._engine.connect() as conn:
            found = conn.execute(select(tenants.c.id).where(tenants.c.id == tenant)).first()
        if found:
            with self._lock:
                self._known[tenant] = True
        return found is not None

    def _open_types(self, tenant: str) -> frozenset[str]:
        with self._lock:
            hit = self._open.get(tenant)
        if hit is not None:
            return hit
        with self._engine.connect() as conn:
            found = frozenset(
                conn.execute(
                    select(open_types.c.entity_type).where(open_types.c.tenant_id == tenant)
                ).scalars()
            )
        with self._lock:
            self._open[tenant] = found
        return found

    # --- administration -------------------------------------------------------------

    def create_region(self, region_id: str, name_ja: str, name_en: str) -> None:
        with writer(self._engine).begin() as conn:
            if not conn.execute(select(regions.c.id).where(regions.c.id == region_id)).first():
                conn.execute(insert(regions).values(id=region_id, name_ja=name_ja, name_en=name_en))

    def create_tenant(
        self,
        tenant_id: str,
        name_ja: str,
        name_en: str,
        region_id: str | None = None,
        lg_code: str | None = None,
    ) -> None:
        """Create a tenant; creating one that exists with the same id changes nothing."""
        if not TENANT_NAME.match(tenant_id):
            raise invalid_request(f"Invalid tenant id {tenant_id!r}")
        with writer(self._engine).begin() as conn:
            if (
                region_id is not None
                and not conn.execute(select(regions.c.id).where(regions.c.id == region_id)).first()
            ):
                raise invalid_request(f"No region {region_id!r}")
            if not conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id)).first():
                conn.execute(
                    insert(tenants).values(
                        id=tenant_id,
                        name_ja=name_ja,
                        name_en=name_en,
                        region_id=region_id,
                        lg_code=lg_code,
                    )
                )
        with self._lock:
            self._known[tenant_id] = True

    def set_open_types(self, tenant_id: str, expanded_types: list[str]) -> None:
        self.require(tenant_id)
        with writer(self._engine).begin() as conn:
            conn.execute(delete(open_types).where(open_types.c.tenant_id == tenant_id))
            for entity_type in sorted(set(expanded_types)):
                conn.execute(
                    insert(open_types).values(tenant_id=tenant_id, entity_type=entity_type)
                )
        with self._lock:
            self._open.pop(tenant_id, None)

    def enable_service(self, tenant_id: str, service: str) -> None:
        self.require(tenant_id)
        with writer(self._engine).begin() as conn:
            exists = conn.execute(
                select(enabled_services.c.service).where(
                    enabled_services.c.tenant_id == tenant_id, enabled_services.c.service == service
                )
            ).first()
            if not exists:
                conn.execute(insert(enabled_services).values(tenant_id=tenant_id, service=service))

    def list_tenants(self) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(tenants).order_by(tenants.c.id)).all()
            opened = conn.execute(select(open_types)).all()
            services = conn.execute(select(enabled_services)).all()
        result = []
        for row in rows:
            item = dict(row._mapping)
            item["open_types"] = sorted(o.entity_type for o in opened if o.tenant_id == row.id)
            item["services"] = sorted(s.service for s in services if s.tenant_id == row.id)
            result.append(item)
        return result

    def list_regions(self) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(regions).order_by(regions.c.id)).all()
            members = conn.execute(select(tenants.c.id, tenants.c.region_id)).all()
        return [
            {**dict(r._mapping), "tenants": sorted(m.id for m in members if m.region_id == r.id)}
            for r in rows
        ]


def ensure_default_tenant(conn: Connection) -> None:
    if not conn.execute(select(tenants.c.id).where(tenants.c.id == DEFAULT_TENANT)).first():
        conn.execute(insert(tenants).values(id=DEFAULT_TENANT, name_ja="既定", name_en="Default"))
