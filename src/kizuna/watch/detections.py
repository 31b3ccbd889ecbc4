"""Detections: validation of what devices send, storage, and retention.

:meth:`Detections.prepare` checks one device message; :meth:`Detections.store` writes
several in one transaction (dedupe by tenant + detector + detection id; COPY + ON CONFLICT
on PostgreSQL) together with what follows from them: places' arrivals and departures,
volunteers' counts, flood beacons heard and devices' last contact.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, select, update

from kizuna.watch.base import jst_day, utc_now
from kizuna.watch.devices import VALID_ID, Device, Rejected, parse_time
from kizuna.watch.models import detections, devices, notifications
from kizuna.watch.places import Places
from kizuna.watch.volunteers import count_volunteer

if TYPE_CHECKING:
    from kizuna.watch.flood import FloodWatch

log = logging.getLogger("kizuna.watch")
_MOBILE_KINDS = frozenset({"phone", "vehicle"})
# Positions outside this box are refused (a coarse "somewhere in Japan" check).
_JAPAN = (20.0, 46.0, 122.0, 154.0)
_COLUMNS = (
    "tenant_id",
    "detection_id",
    "tag_id",
    "detector_id",
    "detector_kind",
    "seen_at",
    "lat",
    "lon",
    "rssi",
    "received_at",
)


@dataclass
class Prepared:
    """One device message after authentication and validation, ready to store."""

    device: Device
    rows: list[dict[str, Any]]
    errors: list[dict[str, Any]] = field(default_factory=list)
    beacon_heard: dict[str, datetime] = field(default_factory=dict)


@dataclass
class Stored:
    accepted: int
    duplicates: int


class Detections(Places):
    """Builds on Places (stored detections move tags in and out of their places) and on
    the service's flood watch (beacons are heard, not stored as detections)."""

    flood: FloodWatch

    def prepare(
        self, tenant: str, device: Device, items: Sequence[Any], now: datetime | None = None
    ) -> Prepared:
        """Validate a device's detections; bad items are reported, good ones kept."""
        now = now or utc_now()
        oldest = now - timedelta(days=self.settings.watch_retention_days)
        beacon_tags = self.flood.beacon_tags(tenant)
        out = Prepared(device, [])
        for index, item in enumerate(items):
            try:
                row = _detection(device, item, now, oldest)
            except Rejected as exc:
                out.errors.append({"index": index, "reason": exc.reason, "detail": exc.detail})
                continue
            if row["tag_id"] in beacon_tags:
                heard = out.beacon_heard.get(row["tag_id"])
                if heard is None or row["seen_at"] > heard:
                    out.beacon_heard[row["tag_id"]] = row["seen_at"]
                continue
            out.rows.append(row)
        return out

    def store(self, prepared: Sequence[Prepared]) -> list[Stored]:
        """Store several devices' detections in one transaction; duplicates are dropped.

        Also, in the same transaction: places' arrival/departure notifications (and their
        webhooks), volunteers' contribution counts, beacons heard and devices' last contact.
        """
        # The same detection twice in one batch (a redelivery): the first one counts.
        unique: dict[tuple[str, str, str], dict[str, Any]] = {}
        for p in prepared:
            for row in p.rows:
                unique.setdefault((row["tenant_id"], row["detector_id"], row["detection_id"]), row)
        rows = list(unique.values())
        now = utc_now()
        with self._writer.begin() as conn:
            fresh: set[tuple[str, str, str]] = set()
            if rows and conn.dialect.name == "postgresql":
                fresh = _copy_new_detections(conn, rows)
            elif rows:
                stmt = (
                    self._insert(detections)
                    .on_conflict_do_nothing(
                        index_elements=["tenant_id", "detector_id", "detection_id"]
                    )
                    .returning(
                        detections.c.tenant_id, detections.c.detector_id, detections.c.detection_id
                    )
                )
                for chunk in _chunks(rows, 2_000):
                    fresh.update((r[0], r[1], r[2]) for r in conn.execute(stmt, chunk))
            new_rows = [
                r for r in rows if (r["tenant_id"], r["detector_id"], r["detection_id"]) in fresh
            ]
            self._after_store(conn, new_rows, prepared, now)
        out = []
        for p in prepared:
            accepted = 0
            for r in p.rows:
                key = (r["tenant_id"], r["detector_id"], r["detection_id"])
                if key in fresh and unique[key] is r:
                    accepted += 1
            out.append(Stored(accepted, len(p.rows) - accepted))
        return out

    def _after_store(
        self,
        conn: Connection,
        new_rows: list[dict[str, Any]],
        prepared: Sequence[Prepared],
        now: datetime,
    ) -> None:
        by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in new_rows:
            by_tenant[row["tenant_id"]].append(row)
        for tenant, rows in by_tenant.items():
            self._arrivals_and_departures(conn, tenant, rows)
        # Volunteers: count what each phone contributed (new detections only).
        contributed: dict[tuple[str, str, date], int] = defaultdict(int)
        for row in new_rows:
            if row["detector_kind"] == "phone":
                device = next(
                    p.device for p in prepared if p.device.id == row["detector_id"]
                )  # few phones per batch
                if device.owner:
                    contributed[(row["tenant_id"], device.owner, jst_day(now))] += 1
        for (tenant, owner, day), count in contributed.items():
            count_volunteer(conn, self.settings, tenant, owner, day, count)
        for p in prepared:
            if p.beacon_heard:
                self.flood.beacons_heard(conn, p.device.tenant, p.beacon_heard)
        # Devices' last contact, one statement per tenant.
        seen_devices: dict[str, set[str]] = defaultdict(set)
        for p in prepared:
            seen_devices[p.device.tenant].add(p.device.id)
        for tenant, device_ids in sorted(seen_devices.items()):
            conn.execute(
                update(devices)
                .where(devices.c.tenant_id == tenant, devices.c.id.in_(sorted(device_ids)))
                .values(last_seen_at=now)
            )

    def apply_retention(self, now: datetime | None = None, chunk: int = 20_000) -> int:
        """Delete detections (and the notifications that tell positions) past retention."""
        now = now or utc_now()
        cutoff = now - timedelta(days=self.settings.watch_retention_days)
        deleted = 0
        while True:
            with self._writer.begin() as conn:
                keys = select(detections.c.pk).where(detections.c.seen_at < cutoff).limit(chunk)
                gone = conn.execute(
                    delete(detections).where(detections.c.pk.in_(keys.scalar_subquery()))
                ).rowcount
            deleted += gone
            if gone < chunk:
                break
        with self._writer.begin() as conn:
            conn.execute(delete(notifications).where(notifications.c.at < cutoff))
        if deleted:
            log.info("retention: deleted %d detections older than %s", deleted, cutoff.isoformat())
        return deleted


def _coordinate(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Rejected("bad_position", f"{name} must be a number")
    return float(value)


def _detection(device: Device, item: Any, now: datetime, oldest: datetime) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise Rejected("bad_item", "each detection is a JSON object")
    detection_id = item.get("id")
    if not isinstance(detection_id, str) or not VALID_ID.match(detection_id):
        raise Rejected("bad_id", "'id' must be 1-80 letters, digits or _.:-")
    tag_id = item.get("tag")
    if not isinstance(tag_id, str) or not VALID_ID.match(tag_id) or len(tag_id) > 64:
        raise Rejected("bad_tag", "'tag' must be 1-64 letters, digits or _.:-")
    seen_at = parse_time(item.get("at"), now, oldest)
    if "lat" in item or "lon" in item:
        lat = _coordinate(item.get("lat"), "lat")
        lon = _coordinate(item.get("lon"), "lon")
    elif device.kind in _MOBILE_KINDS or device.lat is None or device.lon is None:
        raise Rejected("bad_position", "a moving detector must send lat and lon")
    else:
        lat, lon = device.lat, device.lon
    if not (_JAPAN[0] <= lat <= _JAPAN[1] and _JAPAN[2] <= lon <= _JAPAN[3]):
        raise Rejected("bad_position", "position outside the service area")
    rssi = item.get("rssi")
    if rssi is not None and (
        isinstance(rssi, bool) or not isinstance(rssi, int) or not -127 <= rssi <= 20
    ):
        raise Rejected("bad_rssi", "'rssi' must be an integer dBm between -127 and 20")
    return {
        "tenant_id": device.tenant,
        "detection_id": detection_id,
        "tag_id": tag_id,
        "detector_id": device.id,
        "detector_kind": device.kind,
        "seen_at": seen_at,
        "lat": lat,
        "lon": lon,
        "rssi": rssi,
        "received_at": now,
    }


def _copy_new_detections(conn: Connection, rows: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """PostgreSQL: COPY the batch into a temporary table, then insert what is new.

    One COPY and one INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING per batch: the
    server does the dedupe; Python neither builds nor the driver parses a huge VALUES list.
    """
    cursor = conn.connection.dbapi_connection.cursor()
    with cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS watch_incoming "
            "(LIKE watch_detections INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        columns = ", ".join(_COLUMNS)
        with cursor.copy(f"COPY watch_incoming ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in _COLUMNS])
        cursor.execute(
            f"INSERT INTO watch_detections ({columns}) SELECT {columns} FROM watch_incoming "
            "ON CONFLICT (tenant_id, detector_id, detection_id) DO NOTHING "
            "RETURNING tenant_id, detector_id, detection_id"
        )
        return {(r[0], r[1], r[2]) for r in cursor.fetchall()}


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
