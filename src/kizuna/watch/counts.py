"""Published counts: an hour's detections per grid cell as DetectionCount entities in the
broker, withholding every cell with fewer than k distinct tags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from kizuna.auth.service import SYSTEM
from kizuna.watch import geo
from kizuna.watch.base import WatchBase
from kizuna.watch.models import detections, devices


class PublishedCounts(WatchBase):
    def hourly_counts(self, tenant: str, hour_start: datetime) -> list[dict[str, Any]]:
        """Per-cell counts of one hour, withholding cells with too few distinct tags."""
        hour_start = hour_start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        end = hour_start + timedelta(hours=1)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(detections.c.tag_id, detections.c.lat, detections.c.lon).where(
                    detections.c.tenant_id == tenant,
                    detections.c.seen_at >= hour_start,
                    detections.c.seen_at < end,
                )
            ).all()
        cells: dict[tuple[int, int], tuple[set[str], list[int]]] = {}
        for r in rows:
            cell = geo.cell_of(r.lat, r.lon)
            tags_seen, count = cells.setdefault(cell, (set(), [0]))
            tags_seen.add(r.tag_id)
            count[0] += 1
        k = self.settings.watch_min_published_count
        out = []
        for cell, (tags_seen, count) in sorted(cells.items()):
            if len(tags_seen) < k:
                continue  # too few people: publishing would let someone be followed
            out.append(
                {
                    "cell": f"{cell[0]}_{cell[1]}",
                    "polygon": geo.cell_polygon(cell),
                    "tags": len(tags_seen),
                    "detections": count[0],
                    "from": hour_start,
                    "to": end,
                }
            )
        return out

    def publish_counts(self, tenant: str, hour_start: datetime) -> list[str]:
        """Put one hour's aggregated counts into the broker as DetectionCount entities."""
        counts = self.hourly_counts(tenant, hour_start)
        if not counts:
            return []
        stamp = counts[0]["from"].strftime("%Y%m%dT%H")
        entities = [
            {
                "id": f"urn:ngsi-ld:DetectionCount:{tenant}:{stamp}:{c['cell']}",
                "type": "DetectionCount",
                "dateObservedFrom": {"type": "Property", "value": c["from"].isoformat()},
                "dateObservedTo": {"type": "Property", "value": c["to"].isoformat()},
                "distinctTags": {"type": "Property", "value": c["tags"]},
                "detectionCount": {"type": "Property", "value": c["detections"]},
                "minimumPublishedCount": {
                    "type": "Property",
                    "value": self.settings.watch_min_published_count,
                },
                "location": {"type": "GeoProperty", "value": c["polygon"]},
            }
            for c in counts
        ]
        scope = self.tenants.scope(SYSTEM, tenant, write=True)
        core = self.broker.contexts.core
        result = self.broker.batch_upsert(scope, lambda _i: core, entities, replace=True)
        return result.success

    def tenants_with_detections(self) -> list[str]:
        """The tenants with devices: those whose counts the hourly job publishes."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(devices.c.tenant_id).distinct().order_by(devices.c.tenant_id)
                ).scalars()
            )
