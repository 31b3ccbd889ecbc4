"""Publishing a run's monthly per-town results to the broker, into each town's tenant.

The entities (``EnergyLocalConsumptionMonthly``, one per town and month, see docs/energy.md)
are aggregates of public facilities, not personal data, so the type is published as the
tenant's open data: anyone may read it through the NGSI-LD API, as the towns' other open data.
Entity ids are fixed by town and month, and the batch upsert replaces them whole, so
publishing again (the same run or a newer one) is idempotent and leaves one entity per month.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kizuna.auth.service import SYSTEM

ENTITY_TYPE = "EnergyLocalConsumptionMonthly"


@dataclass
class Published:
    by_tenant: dict[str, int] = field(default_factory=dict)  # tenant id → entities upserted
    skipped_towns: list[str] = field(default_factory=list)  # towns with no tenant in the region

    @property
    def total(self) -> int:
        return sum(self.by_tenant.values())


def region_tenants(services: Any, region_id: str) -> list[dict[str, Any]]:
    """The tenants (municipalities) of a region; a region id that is a tenant is that tenant."""
    return [
        t
        for t in services.tenants.list_tenants()
        if t["region_id"] == region_id or t["id"] == region_id
    ]


def publish(services: Any, region_id: str, entities: list[dict[str, Any]]) -> Published:
    """Upsert each town's entities into the tenant whose Japanese name is the town's name."""
    core = services.broker.contexts.core
    expanded = core.expand(ENTITY_TYPE)
    tenants = {t["name_ja"]: t for t in region_tenants(services, region_id)}
    by_town: dict[str, list[dict[str, Any]]] = {}
    for entity in entities:
        by_town.setdefault(entity["municipality"]["value"], []).append(entity)
    out = Published()
    for town, batch in by_town.items():
        tenant = tenants.get(town)
        if tenant is None:
            out.skipped_towns.append(town)
            continue
        if expanded not in tenant["open_types"]:
            services.tenants.set_open_types(tenant["id"], [*tenant["open_types"], expanded])
        scope = services.tenants.scope(SYSTEM, tenant["id"], write=True)
        result = services.broker.batch_upsert(scope, lambda _item: core, batch, replace=True)
        if result.errors:
            raise RuntimeError(f"publishing to {tenant['id']} failed: {result.errors[:3]}")
        out.by_tenant[tenant["id"]] = len(result.success)
    return out
