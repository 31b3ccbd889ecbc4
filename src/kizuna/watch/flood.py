"""Flood watch: river gauges and street flooding beacons as NGSI-LD entities in the broker.

* ``WaterLevelGauge``: ``waterLevel`` in metres relative to the bank top (so usually
  negative), read every 10 minutes; per-gauge ``thresholds`` for 待機 / 注意 / 警戒 / 危険;
  ``alertLevel`` 0–4 is written **only when a threshold is crossed**, so a broker
  subscription watching ``alertLevel`` notifies exactly once per crossing.
* ``FloodSpot``: a pole with BLE beacons at 10 / 20 / 30 cm that receivers hear; a beacon
  unheard for ``KIZUNA_WATCH_BEACON_SILENCE_MINUTES`` is under water. ``floodDepth`` is the
  height of the highest silent beacon with every lower one silent too; ``alertLevel`` 0–3.

Gauges' raw readings are also kept in ``watch_gauge_readings`` (the device log the
dashboard charts); the entity holds the current value for everyone else.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, or_, select, update

from kizuna.auth.service import SYSTEM
from kizuna.broker.ngsild import Rendering
from kizuna.broker.service import Query
from kizuna.problems import Problem, invalid_request, not_found
from kizuna.watch import schemas
from kizuna.watch.base import aware, sha256
from kizuna.watch.devices import Device, Rejected, parse_time
from kizuna.watch.models import alert_keys, beacons, flood_alerts, gauge_readings

if TYPE_CHECKING:
    from kizuna.watch.service import WatchService

log = logging.getLogger("kizuna.watch.flood")

GAUGE_TYPE = "WaterLevelGauge"
SPOT_TYPE = "FloodSpot"
LEVEL_NAMES = ("平常", "待機", "注意", "警戒", "危険")
LEVEL_NAMES_EN = ("normal", "standby", "caution", "warning", "danger")
SPOT_LEVEL_NAMES = ("冠水なし", "冠水 10cm", "冠水 20cm", "冠水 30cm 以上")
THRESHOLD_KEYS = ("standby", "caution", "warning", "danger")
BEACON_HEIGHTS = (0.1, 0.2, 0.3)
# A level is left only when the water is this far below its threshold: sensor noise
# around a threshold does not make a stream of alerts.
HYSTERESIS_M = 0.05


@dataclass(frozen=True)
class Thresholds:
    standby: float
    caution: float
    warning: float
    danger: float

    def __post_init__(self) -> None:
        values = [self.standby, self.caution, self.warning, self.danger]
        if values != sorted(values) or len(set(values)) != 4:
            raise invalid_request("Thresholds must rise: 待機 < 注意 < 警戒 < 危険")

    def as_list(self) -> list[float]:
        return [self.standby, self.caution, self.warning, self.danger]


def level_for(value: float, thresholds: Thresholds, current: int = 0) -> int:
    """The alert level (0–4) of a reading, leaving the current level only past hysteresis."""
    limits = thresholds.as_list()
    raw = sum(1 for limit in limits if value >= limit)
    if raw >= current:
        return raw
    # Falling: stay at a level until the water is HYSTERESIS_M below its threshold.
    level = current
    while level > 0 and value < limits[level - 1] - HYSTERESIS_M:
        level -= 1
    return max(level, raw)


def spot_depth(heard: dict[float, datetime | None], now: datetime, silence: timedelta) -> float:
    """Water depth over a spot: the highest silent beacon with every lower one silent."""
    depth = 0.0
    for height in sorted(heard):
        last = heard[height]
        if last is not None and now - last >= silence:
            depth = height
        else:
            break
    return depth


def gauge_entity_id(tenant: str, gauge_id: str) -> str:
    return f"urn:ngsi-ld:{GAUGE_TYPE}:{tenant}:{gauge_id}"


def spot_entity_id(tenant: str, spot_id: str) -> str:
    return f"urn:ngsi-ld:{SPOT_TYPE}:{tenant}:{spot_id}"


def _prop(value: Any, **meta: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **meta}


class FloodWatch:
    def __init__(self, watch: WatchService) -> None:
        self.watch = watch
        self.broker = watch.broker
        self.settings = watch.settings
        self._insert = watch._insert
        self._locks: dict[str, threading.Lock] = {}
        # Read on every detection message: per tenant (expires at, beacon tags).
        self._beacons: dict[str, tuple[float, dict[str, tuple[str, float]]]] = {}
        self._guard = threading.Lock()  # for the two dicts above

    def _scope(self, tenant: str, write: bool = True) -> Any:
        return self.watch.tenants.scope(SYSTEM, tenant, write=write)

    def _lock(self, entity_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(entity_id, threading.Lock())

    # --- set-up --------------------------------------------------------------------

    def create_gauge(
        self,
        tenant: str,
        gauge_id: str,
        name_ja: str,
        name_en: str,
        river: str,
        lat: float,
        lon: float,
        thresholds: Thresholds,
    ) -> schemas.DeviceCreated:
        """The gauge's entity (alertLevel 0) and its device credential."""
        entity_id = gauge_entity_id(tenant, gauge_id)
        entity = {
            "id": entity_id,
            "type": GAUGE_TYPE,
            "name": {"type": "LanguageProperty", "languageMap": {"ja": name_ja, "en": name_en}},
            "river": _prop(river),
            "location": {
                "type": "GeoProperty",
                "value": {"type": "Point", "coordinates": [lon, lat]},
            },
            "thresholds": _prop(
                dict(zip(THRESHOLD_KEYS, thresholds.as_list(), strict=True)), unitCode="MTR"
            ),
            "alertLevel": _prop(0),
            "alertLevelName": _prop(LEVEL_NAMES[0]),
            "previousAlertLevel": _prop(0),
        }
        core = self.broker.contexts.core
        self.broker.batch_upsert(self._scope(tenant), lambda _i: core, [entity], replace=True)
        self.ensure_alert_subscription(tenant)
        body = schemas.DeviceCreate(id=gauge_id, kind="gauge", name=name_ja, lat=lat, lon=lon)
        existing = self.watch.device(tenant, gauge_id)
        if existing is not None:
            return schemas.DeviceCreated(
                id=gauge_id, kind="gauge", credential="(unchanged)", mqtt_topic=""
            )
        return self.watch.register_device(SYSTEM, tenant, body, entity_id=entity_id)

    def create_spot(
        self,
        tenant: str,
        spot_id: str,
        name_ja: str,
        name_en: str,
        lat: float,
        lon: float,
        beacon_tags: dict[float, str],
    ) -> str:
        """A flooding spot with its beacons (tag ids at 0.1 / 0.2 / 0.3 m)."""
        if sorted(beacon_tags) != list(BEACON_HEIGHTS):
            raise invalid_request("A flood spot has beacons at 0.1, 0.2 and 0.3 m")
        entity_id = spot_entity_id(tenant, spot_id)
        entity = {
            "id": entity_id,
            "type": SPOT_TYPE,
            "name": {"type": "LanguageProperty", "languageMap": {"ja": name_ja, "en": name_en}},
            "location": {
                "type": "GeoProperty",
                "value": {"type": "Point", "coordinates": [lon, lat]},
            },
            "beaconHeights": _prop(list(BEACON_HEIGHTS), unitCode="MTR"),
            "floodDepth": _prop(0.0, unitCode="MTR"),
            "alertLevel": _prop(0),
            "alertLevelName": _prop(SPOT_LEVEL_NAMES[0]),
            "previousAlertLevel": _prop(0),
        }
        core = self.broker.contexts.core
        self.broker.batch_upsert(self._scope(tenant), lambda _i: core, [entity], replace=True)
        with self.watch._writer.begin() as conn:
            for height, tag in beacon_tags.items():
                conn.execute(
                    self._insert(beacons)
                    .values(tenant_id=tenant, tag_id=tag, spot_entity_id=entity_id, height_m=height)
                    .on_conflict_do_nothing(index_elements=["tenant_id", "tag_id"])
                )
        with self._guard:
            self._beacons.pop(tenant, None)
        self.ensure_alert_subscription(tenant)
        return entity_id

    # --- alerts through the broker's subscriptions ----------------------------------

    def alert_endpoint(self) -> str:
        s = self.settings
        base = s.public_base_url.rstrip("/") or f"http://{s.host}:{s.port}"
        return f"{base}/watch/v1/flood/alerts"

    def ensure_alert_subscription(self, tenant: str) -> str | None:
        """The tenant's subscription on alertLevel of gauges and spots (made once).

        The broker notifies ``/watch/v1/flood/alerts`` on every change of ``alertLevel``,
        which flood.py writes only on a crossing: one notification per crossing. The
        notification carries a key (receiverInfo) whose hash is kept here.
        """
        subs = self.watch.subscriptions
        if subs is None:
            return None
        sub_id = f"urn:ngsi-ld:Subscription:kizuna-watch-flood:{tenant}"
        endpoint = self.alert_endpoint()
        with self.watch.engine.connect() as conn:
            known = conn.execute(select(alert_keys).where(alert_keys.c.tenant_id == tenant)).first()
        if known is not None and known.endpoint == endpoint:
            return sub_id
        key = secrets.token_urlsafe(24)
        notification = {
            "attributes": ["alertLevel", "previousAlertLevel", "alertLevelName"],
            "format": "normalized",
            "endpoint": {
                "uri": endpoint,
                "accept": "application/json",
                "receiverInfo": [{"key": "X-Kizuna-Watch-Key", "value": key}],
            },
        }
        body = {
            "id": sub_id,
            "type": "Subscription",
            "subscriptionName": "kizuna watch: flood alert levels",
            "entities": [{"type": GAUGE_TYPE}, {"type": SPOT_TYPE}],
            "watchedAttributes": ["alertLevel"],
            "notification": notification,
        }
        scope = self._scope(tenant)
        core = self.broker.contexts.core
        try:
            subs.create(scope, core, body)
        except Problem as problem:
            if problem.status != 409:
                raise
            subs.update(scope, core, sub_id, {"notification": notification})
        with self.watch._writer.begin() as conn:
            conn.execute(alert_keys.delete().where(alert_keys.c.tenant_id == tenant))
            conn.execute(
                alert_keys.insert().values(
                    tenant_id=tenant, key_sha256=sha256(key), endpoint=endpoint
                )
            )
        return sub_id

    def receive_alerts(self, tenant: str, key: str | None, notification: Any) -> int:
        """Record the crossings a broker notification reports; a repeat records nothing."""
        with self.watch.engine.connect() as conn:
            known = conn.execute(
                select(alert_keys.c.key_sha256).where(alert_keys.c.tenant_id == tenant)
            ).scalar_one_or_none()
        if known is None or not secrets.compare_digest(known, sha256(key or "")):
            raise Problem(401, "urn:kizuna:errors:Unauthorized", "Unknown notifier", "Bad key")
        data = notification.get("data") if isinstance(notification, dict) else None
        if not isinstance(data, list):
            raise invalid_request("An NGSI-LD notification has a 'data' list")
        recorded = 0
        with self.watch._writer.begin() as conn:
            for entity in data:
                if not isinstance(entity, dict) or not isinstance(entity.get("id"), str):
                    continue
                level = entity.get("alertLevel") or {}
                previous = (entity.get("previousAlertLevel") or {}).get("value")
                at = level.get("observedAt")
                if not isinstance(level.get("value"), int) or not isinstance(at, str):
                    continue
                if previous == level["value"]:
                    continue  # the entity was made: no crossing
                try:
                    moment = datetime.fromisoformat(at).astimezone(UTC)
                except ValueError:
                    continue
                inserted = conn.execute(
                    self._insert(flood_alerts)
                    .values(
                        tenant_id=tenant,
                        entity_id=entity["id"],
                        level=level["value"],
                        previous_level=int(previous or 0),
                        at=moment,
                        # One row per crossing: the entity and the time alertLevel changed.
                        notification_id=f"{entity['id']}@{moment.isoformat()}"[-120:],
                    )
                    .on_conflict_do_nothing(index_elements=["tenant_id", "notification_id"])
                    .returning(flood_alerts.c.id)
                ).first()
                if inserted is not None:
                    recorded += 1
                    log.warning(
                        "flood alert %s: %s → %s at %s", entity["id"], previous, level["value"], at
                    )
        return recorded

    def alerts(self, tenant: str, since: datetime) -> list[dict[str, Any]]:
        with self.watch.engine.connect() as conn:
            rows = conn.execute(
                select(flood_alerts)
                .where(flood_alerts.c.tenant_id == tenant, flood_alerts.c.at >= since)
                .order_by(flood_alerts.c.at.desc(), flood_alerts.c.id.desc())
            ).all()
        return [
            {
                "entity_id": r.entity_id,
                "level": r.level,
                "previous_level": r.previous_level,
                "at": aware(r.at),
                "rising": r.level > r.previous_level,
            }
            for r in rows
        ]

    # --- beacons heard by receivers --------------------------------------------------

    def beacon_tags(self, tenant: str) -> dict[str, tuple[str, float]]:
        """Flood beacons of the tenant: tag id → (spot entity id, height in metres)."""
        hit = self._beacons.get(tenant)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        with self.watch.engine.connect() as conn:
            rows = conn.execute(
                select(beacons.c.tag_id, beacons.c.spot_entity_id, beacons.c.height_m).where(
                    beacons.c.tenant_id == tenant
                )
            ).all()
        found = {r.tag_id: (r.spot_entity_id, r.height_m) for r in rows}
        with self._guard:
            self._beacons[tenant] = (time.monotonic() + 30, found)
        return found

    def beacons_heard(self, conn: Connection, tenant: str, heard: dict[str, datetime]) -> None:
        """Inside the detections' transaction: when each beacon was last heard."""
        for tag_id, at in heard.items():
            conn.execute(
                update(beacons)
                .where(
                    beacons.c.tenant_id == tenant,
                    beacons.c.tag_id == tag_id,
                    or_(beacons.c.last_heard_at.is_(None), beacons.c.last_heard_at < at),
                )
                .values(last_heard_at=at)
            )

    # --- readings ------------------------------------------------------------------

    def record_reading(self, device: Device, payload: Any, now: datetime | None = None) -> bool:
        """Store a gauge reading; update the entity (and alertLevel on a crossing).

        Returns False for a duplicate (the same gauge and time again).
        """
        now = now or datetime.now(UTC)
        if device.kind != "gauge" or not device.entity_id:
            raise Rejected("not_a_gauge", f"device {device.id!r} is no gauge")
        if not isinstance(payload, dict):
            raise Rejected("bad_item", "a reading is a JSON object")
        level = payload.get("level")
        if isinstance(level, bool) or not isinstance(level, int | float) or not -50 <= level <= 50:
            raise Rejected("bad_level", "'level' must be metres relative to the bank top")
        oldest = now - timedelta(days=self.settings.watch_retention_days)
        at = parse_time(payload.get("at"), now, oldest)
        with self.watch._writer.begin() as conn:
            inserted = conn.execute(
                self._insert(gauge_readings)
                .values(
                    tenant_id=device.tenant,
                    device_id=device.id,
                    observed_at=at,
                    level_m=float(level),
                )
                .on_conflict_do_nothing(index_elements=["tenant_id", "device_id", "observed_at"])
                .returning(gauge_readings.c.pk)
            ).first()
        if inserted is None:
            return False
        self._apply_reading(device.tenant, device.entity_id, float(level), at)
        return True

    def _apply_reading(self, tenant: str, entity_id: str, level: float, at: datetime) -> None:
        core = self.broker.contexts.core
        with self._lock(entity_id):
            current = self.broker.retrieve(
                self._scope(tenant, write=False), core, entity_id, Rendering()
            )
            observed = current.get("waterLevel", {}).get("observedAt")
            if observed and datetime.fromisoformat(observed) >= at:
                return  # an older reading arriving late: kept in the log, not as "current"
            thresholds = Thresholds(**current["thresholds"]["value"])
            old_level = int(current["alertLevel"]["value"])
            new_level = level_for(level, thresholds, old_level)
            stamp = at.isoformat().replace("+00:00", "Z")
            fragment: dict[str, Any] = {
                "waterLevel": _prop(round(level, 3), unitCode="MTR", observedAt=stamp)
            }
            if new_level != old_level:
                fragment["alertLevel"] = _prop(new_level, observedAt=stamp)
                fragment["alertLevelName"] = _prop(LEVEL_NAMES[new_level])
                fragment["previousAlertLevel"] = _prop(old_level)
                log.info("%s crossed %s → %s at %.2f m", entity_id, old_level, new_level, level)
            self.broker.merge(self._scope(tenant), core, entity_id, fragment)

    def check_spots(self, now: datetime | None = None) -> int:
        """Re-evaluate every flood spot from its beacons; returns how many changed level."""
        now = now or datetime.now(UTC)
        silence = timedelta(minutes=self.settings.watch_beacon_silence_minutes)
        with self.watch.engine.connect() as conn:
            rows = conn.execute(select(beacons)).all()
        spots: dict[tuple[str, str], dict[float, datetime | None]] = {}
        for r in rows:
            spots.setdefault((r.tenant_id, r.spot_entity_id), {})[r.height_m] = aware(
                r.last_heard_at
            )
        changed = 0
        core = self.broker.contexts.core
        for (tenant, entity_id), heard in sorted(spots.items()):
            depth = spot_depth(heard, now, silence)
            new_level = sum(1 for h in BEACON_HEIGHTS if depth >= h)
            with self._lock(entity_id):
                try:
                    current = self.broker.retrieve(
                        self._scope(tenant, write=False), core, entity_id, Rendering()
                    )
                except Exception:  # noqa: BLE001 - a deleted spot entity: nothing to do
                    continue
                old_level = int(current["alertLevel"]["value"])
                if new_level == old_level:
                    continue
                stamp = now.isoformat().replace("+00:00", "Z")
                self.broker.update_attributes(
                    self._scope(tenant),
                    core,
                    entity_id,
                    {
                        "floodDepth": _prop(depth, unitCode="MTR", observedAt=stamp),
                        "alertLevel": _prop(new_level, observedAt=stamp),
                        "alertLevelName": _prop(SPOT_LEVEL_NAMES[new_level]),
                        "previousAlertLevel": _prop(old_level),
                    },
                )
                changed += 1
        return changed

    # --- reading back --------------------------------------------------------------

    def _entities(self, tenant: str, entity_type: str) -> list[dict[str, Any]]:
        core = self.broker.contexts.core
        result = self.broker.query(
            self._scope(tenant, write=False),
            core,
            Query(type_expression=entity_type, limit=1000),
            Rendering(),
        )
        return result.entities

    def dashboard(self, tenant: str, hours: int = 24) -> dict[str, Any]:
        """Gauges with their recent readings and flood spots, for the public page."""
        gauges = []
        with self.watch.engine.connect() as conn:
            for entity in self._entities(tenant, GAUGE_TYPE):
                gauge_id = entity["id"].rsplit(":", 1)[-1]
                latest = conn.execute(
                    select(gauge_readings.c.observed_at)
                    .where(
                        gauge_readings.c.tenant_id == tenant, gauge_readings.c.device_id == gauge_id
                    )
                    .order_by(gauge_readings.c.observed_at.desc())
                    .limit(1)
                ).scalar_one_or_none()
                series: list[tuple[datetime, float]] = []
                if latest is not None:
                    since = aware(latest) - timedelta(hours=hours)
                    series = [
                        (aware(r.observed_at), r.level_m)
                        for r in conn.execute(
                            select(gauge_readings.c.observed_at, gauge_readings.c.level_m)
                            .where(
                                gauge_readings.c.tenant_id == tenant,
                                gauge_readings.c.device_id == gauge_id,
                                gauge_readings.c.observed_at > since,
                            )
                            .order_by(gauge_readings.c.observed_at)
                        )
                    ]
                gauges.append(_gauge_view(entity, series))
        spots = [_spot_view(e) for e in self._entities(tenant, SPOT_TYPE)]
        names = {g["entity_id"]: (g["name_ja"], g["name_en"]) for g in gauges}
        names.update({s["entity_id"]: (s["name_ja"], s["name_en"]) for s in spots})
        alerts = []
        for alert in self.alerts(tenant, datetime.now(UTC) - timedelta(hours=hours)):
            spot = ":FloodSpot:" in alert["entity_id"]
            level_names = SPOT_LEVEL_NAMES if spot else LEVEL_NAMES
            ja, en = names.get(alert["entity_id"], (alert["entity_id"], alert["entity_id"]))
            alerts.append(
                {
                    **alert,
                    "name_ja": ja,
                    "name_en": en,
                    "level_ja": level_names[alert["level"]],
                    "previous_ja": level_names[alert["previous_level"]],
                }
            )
        return {"gauges": gauges, "spots": spots, "alerts": alerts}

    def gauge(self, tenant: str, gauge_id: str) -> dict[str, Any]:
        for g in self.dashboard(tenant)["gauges"]:
            if g["id"] == gauge_id:
                return g
        raise not_found(f"No gauge {gauge_id}")


def _name(entity: dict[str, Any]) -> tuple[str, str]:
    names = entity.get("name", {}).get("languageMap", {})
    return names.get("ja", entity["id"]), names.get("en", entity["id"])


def _coords(entity: dict[str, Any]) -> tuple[float, float]:
    lon, lat = entity["location"]["value"]["coordinates"][:2]
    return lat, lon


def _observed_at(attribute: dict[str, Any]) -> datetime | None:
    stamp = attribute.get("observedAt")
    return datetime.fromisoformat(stamp) if stamp else None


def _gauge_view(entity: dict[str, Any], series: list[tuple[datetime, float]]) -> dict[str, Any]:
    name_ja, name_en = _name(entity)
    lat, lon = _coords(entity)
    level = int(entity["alertLevel"]["value"])
    water = entity.get("waterLevel", {})
    return {
        "id": entity["id"].rsplit(":", 1)[-1],
        "entity_id": entity["id"],
        "name_ja": name_ja,
        "name_en": name_en,
        "river": entity.get("river", {}).get("value", ""),
        "lat": lat,
        "lon": lon,
        "thresholds": entity["thresholds"]["value"],
        "level": level,
        "level_ja": LEVEL_NAMES[level],
        "level_en": LEVEL_NAMES_EN[level],
        "value": water.get("value") if water.get("observedAt") else None,
        "observed_at": _observed_at(water),
        "series": series,
    }


def _spot_view(entity: dict[str, Any]) -> dict[str, Any]:
    name_ja, name_en = _name(entity)
    lat, lon = _coords(entity)
    level = int(entity["alertLevel"]["value"])
    depth = entity.get("floodDepth", {})
    return {
        "id": entity["id"].rsplit(":", 1)[-1],
        "entity_id": entity["id"],
        "name_ja": name_ja,
        "name_en": name_en,
        "lat": lat,
        "lon": lon,
        "level": level,
        "level_ja": SPOT_LEVEL_NAMES[level],
        "depth_cm": round(float(depth.get("value") or 0) * 100),
        "observed_at": _observed_at(depth),
    }
