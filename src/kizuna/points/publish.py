"""Monthly aggregates of a points programme as NGSI-LD entities in the broker.

One ``PointsProgrammeMonthly`` per municipality and month (id fixed by both, so publishing
again replaces it): points issued / spent / expired, local spending, CO2 saved by category
and the number of active residents — never anything about a person. Counts under
``MIN_COUNT`` are withheld (null), so a small town's figure cannot point at a household.
The type is published as the tenant's open data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kizuna.auth.service import Principal

ENTITY_TYPE = "PointsProgrammeMonthly"
MIN_COUNT = 5


def monthly_entities(services: Any, tenant: str, months: int = 6) -> list[dict[str, Any]]:
    points = services.points
    board = points.dashboard(tenant, months=months)
    programme = points.programme(tenant)
    observed = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    out = []
    for month in board.months:
        f = board.flows[month]
        co2 = board.co2_by_month[month]
        active = board.active[month]

        def prop(value: Any, unit: str | None = None) -> dict[str, Any]:
            p: dict[str, Any] = {"type": "Property", "value": value}
            if unit:
                p["unitCode"] = unit
            return p

        out.append(
            {
                "id": f"urn:ngsi-ld:{ENTITY_TYPE}:{tenant}:{month}",
                "type": ENTITY_TYPE,
                "municipality": prop(tenant),
                "programme": prop(programme.name_ja),
                "month": prop(month),
                "pointsIssued": prop(f["issued"]),
                "pointsSpentAtShops": prop(f["spent"] + f["coupon"] - f["refunded"]),
                "couponDiscount": prop(f["coupon"]),
                "pointsExpired": prop(f["expired"]),
                "thanksSent": prop(f["thanks"]),
                "co2SavedKg": prop(round(sum(co2.values()), 3), "KGM"),
                "co2SavedKgByCategory": prop({k: round(v, 3) for k, v in co2.items()}),
                "activeResidents": prop(active if active >= MIN_COUNT else None),
                "dateObserved": prop(observed),
            }
        )
    return out


def publish_months(services: Any, tenant: str, principal: Principal) -> int:
    """Upsert the tenant's monthly aggregates (as ``principal``); returns how many."""
    entities = monthly_entities(services, tenant)
    core = services.broker.contexts.core
    expanded = core.expand(ENTITY_TYPE)
    info = next((t for t in services.tenants.list_tenants() if t["id"] == tenant), None)
    if info is not None and expanded not in info["open_types"]:
        services.tenants.set_open_types(tenant, [*info["open_types"], expanded])
    scope = services.tenants.scope(principal, tenant, write=True)
    # null values are not NGSI-LD property values: withheld counts are left out instead.
    for e in entities:
        for key in [k for k, v in e.items() if isinstance(v, dict) and v.get("value") is None]:
            del e[key]
    result = services.broker.batch_upsert(scope, lambda _item: core, entities, replace=True)
    if result.errors:
        raise RuntimeError(f"publishing points aggregates failed: {result.errors[:3]}")
    return len(result.success)
