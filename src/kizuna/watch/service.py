"""The watch module's front door: devices, tags and guardians, detections, alerts, privacy.

Other modules (and the routes, pages, MQTT consumer and jobs) call :class:`WatchService`;
nobody else touches the ``watch_*`` tables. Reads about a tag go through the rules in
:mod:`kizuna.watch.privacy`; every staff look at a person is written to the access log.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cachetools import TTLCache
from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from kizuna.auth.service import SYSTEM, Principal
from kizuna.problems import Problem, already_exists, invalid_request
from kizuna.settings import Settings
from kizuna.storage import writer
from kizuna.watch import geo, schemas
from kizuna.watch.models import (
    access_log,
    detections,
    devices,
    guardians,
    missing_cases,
    notifications,
    outbox,
    places,
    tags,
    volunteer_days,
)
from kizuna.watch.privacy import (
    is_staff,
    need_person,
    need_reason,
    need_staff,
    tag_not_found,
    username_of,
)

log = logging.getLogger("kizuna.watch")
JST = ZoneInfo("Asia/Tokyo")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$")
_MOBILE_KINDS = frozenset({"phone", "vehicle"})
# Positions outside this box are refused (a coarse "somewhere in Japan" check).
_JAPAN = (20.0, 46.0, 122.0, 154.0)
# A detection may be this far in the future (device clocks drift) …
_CLOCK_SKEW = timedelta(minutes=5)
# … and a place's departure needs this much more than its radius (no flapping at the edge).
_DEPARTURE_FACTOR = 1.3

PLACE_KIND_JA = {
    "home": "自宅",
    "school": "学校",
    "daycare": "保育園・デイサービス",
    "other": "場所",
}


def _now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def jst_day(moment: datetime) -> date:
    return moment.astimezone(JST).date()


class Rejected(Exception):
    """A message or item refused by ingestion, with a short machine-readable reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Device:
    tenant: str
    id: str
    kind: str
    lat: float | None
    lon: float | None
    secret_sha256: str
    owner: str | None
    active: bool
    entity_id: str | None


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


def parse_time(value: Any, now: datetime, oldest: datetime) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise Rejected("bad_time", "'at' must be an ISO 8601 time string with a time zone")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected("bad_time", f"unreadable time {value!r}") from None
    if moment.tzinfo is None:
        raise Rejected("bad_time", "'at' needs a time zone (e.g. Z or +09:00)")
    moment = moment.astimezone(UTC)
    if moment > now + _CLOCK_SKEW:
        raise Rejected("future_time", f"{value} is in the future")
    if moment < oldest:
        raise Rejected("too_old", f"{value} is older than the retention period")
    return moment


def _coordinate(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Rejected("bad_position", f"{name} must be a number")
    return float(value)


class WatchService:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        broker: Any,
        tenants: Any,
        points: Any = None,
        subscriptions: Any = None,
    ) -> None:
        self.engine = engine
        self.points = points  # kizuna.points.service.Points: pays volunteers
        self.subscriptions = subscriptions
        self.settings = settings
        self.broker = broker
        self.tenants = tenants
        self._writer = writer(engine)
        self._lock = threading.Lock()
        # Small caches read on every message: plain dicts of (expires at, value); a revoked
        # device or a new place is seen within their lifetime (30 s / 5 s).
        self._devices: dict[tuple[str, str], tuple[float, Device | None]] = {}
        self._placed: TTLCache[str, frozenset[str]] = TTLCache(1_000, ttl=5)
        self._beacons: dict[str, tuple[float, dict[str, tuple[str, float]]]] = {}
        self._secrets: dict[tuple[str, str], str] = {}  # secrets already checked
        dialect = engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        from kizuna.watch.flood import FloodWatch  # flood builds on this service

        self.flood = FloodWatch(self)

    # --- devices -----------------------------------------------------------------------

    def register_device(
        self,
        principal: Principal,
        tenant: str,
        body: schemas.DeviceCreate,
        entity_id: str | None = None,
    ) -> schemas.DeviceCreated:
        if principal is not SYSTEM:
            need_staff(principal, tenant)
        if body.kind in ("fixed", "facility", "gauge") and (body.lat is None or body.lon is None):
            raise invalid_request("Fixed receivers, facilities and gauges need their position")
        if body.kind == "phone" and not body.owner_username:
            raise invalid_request("A volunteer phone needs its owner's user name")
        secret = secrets.token_urlsafe(24)
        with self._writer.begin() as conn:
            if conn.execute(
                select(devices.c.id).where(devices.c.tenant_id == tenant, devices.c.id == body.id)
            ).first():
                raise already_exists(f"Device {body.id} already exists")
            conn.execute(
                insert(devices).values(
                    tenant_id=tenant,
                    id=body.id,
                    kind=body.kind,
                    name=body.name,
                    lat=body.lat,
                    lon=body.lon,
                    secret_sha256=_sha256(secret),
                    owner_username=body.owner_username,
                    entity_id=entity_id,
                    active=True,
                )
            )
        with self._lock:
            self._devices.pop((tenant, body.id), None)
            self._secrets.pop((tenant, body.id), None)
        kind = "reading" if body.kind == "gauge" else "detections"
        return schemas.DeviceCreated(
            id=body.id,
            kind=body.kind,
            credential=f"{body.id}:{secret}",
            mqtt_topic=f"{self.settings.watch_mqtt_topic_prefix}/{tenant}/{body.id}/{kind}",
        )

    def list_devices(self, principal: Principal, tenant: str) -> list[schemas.DevicePublic]:
        need_staff(principal, tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(devices).where(devices.c.tenant_id == tenant).order_by(devices.c.id)
            ).all()
        return [
            schemas.DevicePublic(
                id=r.id,
                kind=r.kind,
                name=r.name,
                lat=r.lat,
                lon=r.lon,
                active=r.active,
                last_seen_at=aware(r.last_seen_at),
            )
            for r in rows
        ]

    def device(self, tenant: str, device_id: str) -> Device | None:
        key = (tenant, device_id)
        hit = self._devices.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        with self.engine.connect() as conn:
            r = conn.execute(
                select(devices).where(devices.c.tenant_id == tenant, devices.c.id == device_id)
            ).first()
        found = (
            Device(
                tenant,
                r.id,
                r.kind,
                r.lat,
                r.lon,
                r.secret_sha256,
                r.owner_username,
                r.active,
                r.entity_id,
            )
            if r
            else None
        )
        with self._lock:
            if len(self._devices) > 200_000:
                self._devices.clear()
                self._secrets.clear()
            self._devices[key] = (time.monotonic() + 30, found)
        return found

    def authenticate_device(self, tenant: str, device_id: str, secret: str | None) -> Device:
        """The device, if ``secret`` is its own (or the topic is trusted and secret is None)."""
        if not isinstance(device_id, str) or not _ID.match(device_id):
            raise Rejected("unknown_device", "malformed device id")
        found = self.device(tenant, device_id)
        if found is None or not found.active:
            raise Rejected("unknown_device", f"no active device {device_id!r} in {tenant!r}")
        if secret is None and self.settings.watch_mqtt_trust_topic:
            return found
        if not isinstance(secret, str):
            raise Rejected("bad_credential", f"missing key for device {device_id!r}")
        known = self._secrets.get((tenant, device_id))
        if known is not None and secrets.compare_digest(known, secret):
            return found
        if not secrets.compare_digest(found.secret_sha256, _sha256(secret)):
            raise Rejected("bad_credential", f"wrong key for device {device_id!r}")
        self._secrets[(tenant, device_id)] = secret
        return found

    def device_from_header(self, tenant: str, authorization: str | None) -> Device:
        """``Authorization: Device <device id>:<secret>`` (phones' HTTP uploads)."""
        scheme, _, credential = (authorization or "").partition(" ")
        device_id, _, secret = credential.strip().partition(":")
        if scheme.lower() != "device" or not device_id or not secret:
            raise Problem(
                401,
                "urn:kizuna:errors:Unauthorized",
                "Device credential required",
                "Send 'Authorization: Device <device id>:<secret>'",
            )
        try:
            return self.authenticate_device(tenant, device_id, secret)
        except Rejected as exc:
            raise Problem(
                401, "urn:kizuna:errors:Unauthorized", "Unknown device or wrong key", exc.detail
            ) from None

    # --- ingestion ---------------------------------------------------------------------

    def beacon_tags(self, tenant: str) -> dict[str, tuple[str, float]]:
        """Flood beacons of the tenant: tag id → (spot entity id, height in metres)."""
        from kizuna.watch.models import beacons

        hit = self._beacons.get(tenant)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(beacons.c.tag_id, beacons.c.spot_entity_id, beacons.c.height_m).where(
                    beacons.c.tenant_id == tenant
                )
            ).all()
        found = {r.tag_id: (r.spot_entity_id, r.height_m) for r in rows}
        with self._lock:
            self._beacons[tenant] = (time.monotonic() + 30, found)
        return found

    def forget_beacons(self, tenant: str) -> None:
        with self._lock:
            self._beacons.pop(tenant, None)

    def prepare(
        self, tenant: str, device: Device, items: Sequence[Any], now: datetime | None = None
    ) -> Prepared:
        """Validate a device's detections; bad items are reported, good ones kept."""
        now = now or _now()
        oldest = now - timedelta(days=self.settings.watch_retention_days)
        beacon_tags = self.beacon_tags(tenant)
        out = Prepared(device, [])
        for index, item in enumerate(items):
            try:
                row = self._detection(device, item, now, oldest)
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

    def _detection(
        self, device: Device, item: Any, now: datetime, oldest: datetime
    ) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise Rejected("bad_item", "each detection is a JSON object")
        detection_id = item.get("id")
        if not isinstance(detection_id, str) or not _ID.match(detection_id):
            raise Rejected("bad_id", "'id' must be 1-80 letters, digits or _.:-")
        tag_id = item.get("tag")
        if not isinstance(tag_id, str) or not _ID.match(tag_id) or len(tag_id) > 64:
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
        now = _now()
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
        from kizuna.watch.models import beacons

        by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in new_rows:
            by_tenant[row["tenant_id"]].append(row)
        for tenant, rows in by_tenant.items():
            placed = self._tags_with_places(conn, tenant)
            watched = [r for r in rows if r["tag_id"] in placed]
            if watched:
                self._check_places(conn, tenant, watched)
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
            self._count_volunteer(conn, tenant, owner, day, count)
        # Beacons heard (one statement per beacon) and devices' last contact (per tenant).
        for p in prepared:
            for tag_id, heard in p.beacon_heard.items():
                conn.execute(
                    update(beacons)
                    .where(
                        beacons.c.tenant_id == p.device.tenant,
                        beacons.c.tag_id == tag_id,
                        or_(beacons.c.last_heard_at.is_(None), beacons.c.last_heard_at < heard),
                    )
                    .values(last_heard_at=heard)
                )
        seen_devices: dict[str, set[str]] = defaultdict(set)
        for p in prepared:
            seen_devices[p.device.tenant].add(p.device.id)
        for tenant, device_ids in sorted(seen_devices.items()):
            conn.execute(
                update(devices)
                .where(devices.c.tenant_id == tenant, devices.c.id.in_(sorted(device_ids)))
                .values(last_seen_at=now)
            )

    def _tags_with_places(self, conn: Connection, tenant: str) -> frozenset[str]:
        with self._lock:
            hit = self._placed.get(tenant)
        if hit is not None:
            return hit
        found = frozenset(
            conn.execute(
                select(places.c.tag_id).where(places.c.tenant_id == tenant).distinct()
            ).scalars()
        )
        with self._lock:
            self._placed[tenant] = found
        return found

    def _check_places(self, conn: Connection, tenant: str, rows: list[dict[str, Any]]) -> None:
        tag_ids = sorted({r["tag_id"] for r in rows})
        all_places = conn.execute(
            select(places)
            .where(places.c.tenant_id == tenant, places.c.tag_id.in_(tag_ids))
            .order_by(places.c.id)
        ).all()
        labels = dict(
            conn.execute(
                select(tags.c.id, tags.c.label).where(
                    tags.c.tenant_id == tenant, tags.c.id.in_(tag_ids)
                )
            ).all()
        )
        for place in all_places:
            inside = place.inside
            changed_at = aware(place.changed_at)
            events: list[tuple[str, datetime]] = []
            for row in sorted(
                (r for r in rows if r["tag_id"] == place.tag_id), key=lambda r: r["seen_at"]
            ):
                if changed_at is not None and row["seen_at"] <= changed_at:
                    continue  # late arrivals never rewrite what was already announced
                d = geo.distance_m(place.lat, place.lon, row["lat"], row["lon"])
                if d <= place.radius_m and inside is not True:
                    inside, changed_at = True, row["seen_at"]
                    events.append(("arrival", row["seen_at"]))
                elif d > place.radius_m * _DEPARTURE_FACTOR and inside is not False:
                    if inside is True:
                        events.append(("departure", row["seen_at"]))
                    inside, changed_at = False, row["seen_at"]
            if inside != place.inside or aware(place.changed_at) != changed_at:
                conn.execute(
                    update(places)
                    .where(places.c.id == place.id)
                    .values(inside=inside, changed_at=changed_at)
                )
            label = labels.get(place.tag_id) or place.tag_id
            for kind, at in events:
                hhmm = at.astimezone(JST).strftime("%H:%M")
                if kind == "arrival":
                    ja = f"{label}さんが{place.name}に到着しました（{hhmm}）"
                    en = f"{label} arrived at {place.name} ({hhmm})"
                else:
                    ja = f"{label}さんが{place.name}を出発しました（{hhmm}）"
                    en = f"{label} left {place.name} ({hhmm})"
                self._notify(
                    conn,
                    tenant,
                    place.tag_id,
                    kind,
                    at,
                    ja,
                    en,
                    place_id=place.id,
                    place=place.name,
                )

    def _notify(
        self,
        conn: Connection,
        tenant: str,
        tag_id: str,
        kind: str,
        at: datetime,
        text_ja: str,
        text_en: str,
        *,
        place_id: int | None = None,
        place: str | None = None,
    ) -> None:
        """An in-app notification for the tag's guardians, and a webhook for each who set one."""
        conn.execute(
            insert(notifications).values(
                tenant_id=tenant,
                tag_id=tag_id,
                kind=kind,
                place_id=place_id,
                at=at,
                text_ja=text_ja,
                text_en=text_en,
                read_by=[],
            )
        )
        hooks = conn.execute(
            select(guardians.c.webhook_url).where(
                guardians.c.tenant_id == tenant,
                guardians.c.tag_id == tag_id,
                guardians.c.webhook_url.is_not(None),
            )
        ).scalars()
        # The webhook says what happened, not who: the person's name stays in the app.
        payload = {"event": kind, "tenant": tenant, "tag": tag_id, "at": at.isoformat()}
        if place is not None:
            payload["place"] = place
        for url in sorted(set(hooks)):
            conn.execute(
                insert(outbox).values(url=url, payload=payload, attempts=0, next_attempt_at=_now())
            )

    def _count_volunteer(
        self, conn: Connection, tenant: str, username: str, day: date, count: int
    ) -> None:
        s = self.settings
        key = (
            volunteer_days.c.tenant_id == tenant,
            volunteer_days.c.username == username,
            volunteer_days.c.day == day,
        )
        row = conn.execute(select(volunteer_days).where(*key)).first()
        total = (row.detections if row else 0) + count
        month_start = day.replace(day=1)
        other_days = conn.execute(
            select(func.coalesce(func.sum(volunteer_days.c.points_earned), 0)).where(
                volunteer_days.c.tenant_id == tenant,
                volunteer_days.c.username == username,
                volunteer_days.c.day >= month_start,
                volunteer_days.c.day != day,
            )
        ).scalar_one()
        earned = min(
            total // max(1, s.watch_volunteer_detections_per_point),
            s.watch_volunteer_daily_point_cap,
            max(0, s.watch_volunteer_monthly_point_cap - int(other_days)),
        )
        if row is None:
            conn.execute(
                insert(volunteer_days).values(
                    tenant_id=tenant,
                    username=username,
                    day=day,
                    detections=total,
                    points_earned=earned,
                    points_awarded=0,
                )
            )
        else:
            conn.execute(
                update(volunteer_days)
                .where(*key)
                .values(detections=total, points_earned=max(earned, row.points_earned))
            )

    # --- tags and guardians ------------------------------------------------------------

    def issue_tags(
        self,
        principal: Principal,
        tenant: str,
        body: schemas.TagIssue,
        ids: list[str] | None = None,
    ) -> list[schemas.IssuedTag]:
        """Staff issue tags with one-time claim codes (printed on the tag's card).

        ``ids`` (the manufacturer's tag ids) are issued if new; existing ones are skipped.
        """
        if principal is not SYSTEM:
            need_staff(principal, tenant)
        out = []
        wanted = ids or [f"{body.prefix}-{secrets.token_hex(4)}" for _ in range(body.count)]
        with self._writer.begin() as conn:
            for tag_id in wanted:
                if self._exists(conn, tenant, tag_id):
                    continue
                code = f"{secrets.randbelow(10**8):08d}"
                conn.execute(
                    insert(tags).values(tenant_id=tenant, id=tag_id, claim_sha256=_sha256(code))
                )
                out.append(schemas.IssuedTag(id=tag_id, claim_code=code))
        return out

    def claim_tag(
        self, principal: Principal, tenant: str, body: schemas.TagClaim
    ) -> schemas.TagPublic:
        """A guardian links an issued tag to a person, recording consent (a consent receipt)."""
        username = need_person(principal)
        if not principal.acts_in(tenant):
            raise tag_not_found(body.tag_id)
        now = _now()
        with self._writer.begin() as conn:
            row = conn.execute(
                select(tags).where(tags.c.tenant_id == tenant, tags.c.id == body.tag_id)
            ).first()
            if (
                row is None
                or row.claimed_at is not None
                or not secrets.compare_digest(row.claim_sha256, _sha256(body.claim_code))
            ):
                # One answer for "no such tag", "already claimed" and "wrong code".
                raise Problem(
                    400,
                    "urn:kizuna:errors:ClaimRefused",
                    "This tag cannot be registered",
                    "Check the tag number and the registration code on its card",
                )
            receipt = {
                **body.consent.model_dump(),
                "recorded_at": now.isoformat(),
                "recorded_for": username,
                "receipt_id": secrets.token_hex(8),
            }
            conn.execute(
                update(tags)
                .where(tags.c.tenant_id == tenant, tags.c.id == body.tag_id)
                .values(
                    label=body.label,
                    person_kind=body.person_kind,
                    consent=receipt,
                    claimed_at=now,
                )
            )
            conn.execute(
                insert(guardians).values(
                    tenant_id=tenant,
                    tag_id=body.tag_id,
                    username=username,
                    relation=body.consent.relation,
                )
            )
        return self.tag(principal, tenant, body.tag_id)

    def _guarded(self, conn: Connection, tenant: str, tag_id: str, username: str | None) -> bool:
        if username is None:
            return False
        return (
            conn.execute(
                select(guardians.c.username).where(
                    guardians.c.tenant_id == tenant,
                    guardians.c.tag_id == tag_id,
                    guardians.c.username == username,
                )
            ).first()
            is not None
        )

    def is_guardian(self, principal: Principal, tenant: str, tag_id: str) -> bool:
        with self.engine.connect() as conn:
            return self._guarded(conn, tenant, tag_id, username_of(principal))

    def _require_guardian(
        self, conn: Connection, principal: Principal, tenant: str, tag_id: str
    ) -> str:
        username = username_of(principal)
        if not principal.acts_in(tenant) or not self._guarded(conn, tenant, tag_id, username):
            raise tag_not_found(tag_id)
        assert username is not None
        return username

    def add_guardian(
        self, principal: Principal, tenant: str, tag_id: str, body: schemas.GuardianAdd
    ) -> None:
        with self._writer.begin() as conn:
            self._require_guardian(conn, principal, tenant, tag_id)
            if self._guarded(conn, tenant, tag_id, body.username):
                return
            conn.execute(
                insert(guardians).values(
                    tenant_id=tenant, tag_id=tag_id, username=body.username, relation=body.relation
                )
            )

    def my_tags(self, principal: Principal, tenant: str) -> list[schemas.TagPublic]:
        username = username_of(principal)
        if username is None or not principal.acts_in(tenant):
            return []
        with self.engine.connect() as conn:
            ids = (
                conn.execute(
                    select(guardians.c.tag_id)
                    .where(guardians.c.tenant_id == tenant, guardians.c.username == username)
                    .order_by(guardians.c.tag_id)
                )
                .scalars()
                .all()
            )
            return [self._tag_public(conn, tenant, t) for t in ids]

    def tag(
        self, principal: Principal, tenant: str, tag_id: str, reason: str | None = None
    ) -> schemas.TagPublic:
        """A tag with its person: guardians; staff only with a reason, which is logged."""
        with self._writer.begin() as conn:
            if principal.acts_in(tenant) and self._guarded(
                conn, tenant, tag_id, username_of(principal)
            ):
                return self._tag_public(conn, tenant, tag_id)
            if not is_staff(principal, tenant) or not self._exists(conn, tenant, tag_id):
                raise tag_not_found(tag_id)
            text = need_reason(reason)
            self._log_access(conn, tenant, tag_id, principal, "view_identity", text, None)
            return self._tag_public(conn, tenant, tag_id)

    def _exists(self, conn: Connection, tenant: str, tag_id: str) -> bool:
        return (
            conn.execute(
                select(tags.c.id).where(tags.c.tenant_id == tenant, tags.c.id == tag_id)
            ).first()
            is not None
        )

    def _tag_public(self, conn: Connection, tenant: str, tag_id: str) -> schemas.TagPublic:
        row = conn.execute(
            select(tags).where(tags.c.tenant_id == tenant, tags.c.id == tag_id)
        ).one()
        names = (
            conn.execute(
                select(guardians.c.username)
                .where(guardians.c.tenant_id == tenant, guardians.c.tag_id == tag_id)
                .order_by(guardians.c.username)
            )
            .scalars()
            .all()
        )
        last = self._last_seen(conn, tenant, tag_id)
        return schemas.TagPublic(
            id=row.id,
            label=row.label,
            person_kind=row.person_kind,
            consent=row.consent,
            guardians=list(names),
            not_seen_hours=row.not_seen_hours,
            last_seen=last,
            missing_case_open=self._open_case(conn, tenant, tag_id) is not None,
        )

    def _last_seen(self, conn: Connection, tenant: str, tag_id: str) -> schemas.LastSeen | None:
        r = conn.execute(
            select(
                detections.c.seen_at, detections.c.lat, detections.c.lon, detections.c.detector_kind
            )
            .where(detections.c.tenant_id == tenant, detections.c.tag_id == tag_id)
            .order_by(detections.c.seen_at.desc())
            .limit(1)
        ).first()
        if r is None:
            return None
        return schemas.LastSeen(
            at=aware(r.seen_at), lat=r.lat, lon=r.lon, detector_kind=r.detector_kind
        )

    def staff_tags(self, principal: Principal, tenant: str) -> list[schemas.StaffTagRow]:
        need_staff(principal, tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(tags.c.id, tags.c.claimed_at)
                .where(tags.c.tenant_id == tenant)
                .order_by(tags.c.id)
            ).all()
            open_ids = set(
                conn.execute(
                    select(missing_cases.c.tag_id).where(
                        missing_cases.c.tenant_id == tenant, missing_cases.c.closed_at.is_(None)
                    )
                ).scalars()
            )
        return [
            schemas.StaffTagRow(
                id=r.id, claimed=r.claimed_at is not None, missing_case_open=r.id in open_ids
            )
            for r in rows
        ]

    def update_settings(
        self, principal: Principal, tenant: str, tag_id: str, body: schemas.TagSettings
    ) -> schemas.TagPublic:
        with self._writer.begin() as conn:
            username = self._require_guardian(conn, principal, tenant, tag_id)
            fields = body.model_fields_set
            if "not_seen_hours" in fields:
                conn.execute(
                    update(tags)
                    .where(tags.c.tenant_id == tenant, tags.c.id == tag_id)
                    .values(not_seen_hours=body.not_seen_hours, not_seen_alerted_at=None)
                )
            if "webhook_url" in fields:
                url = body.webhook_url
                if url is not None and (
                    url.scheme != "https" and not self.settings.watch_webhook_allow_http
                ):
                    raise invalid_request("A webhook must be an https:// address")
                if url is not None and (url.username or url.password):
                    raise invalid_request("A webhook address must not carry a user or password")
                conn.execute(
                    update(guardians)
                    .where(
                        guardians.c.tenant_id == tenant,
                        guardians.c.tag_id == tag_id,
                        guardians.c.username == username,
                    )
                    .values(webhook_url=str(body.webhook_url) if body.webhook_url else None)
                )
            return self._tag_public(conn, tenant, tag_id)

    # --- trail -------------------------------------------------------------------------

    def trail(
        self,
        principal: Principal,
        tenant: str,
        tag_id: str,
        day: date | None = None,
    ) -> list[schemas.TrailPoint]:
        """A day's detections (JST): the guardians; staff only under an open missing case."""
        day = day or jst_day(_now())
        start = datetime(day.year, day.month, day.day, tzinfo=JST).astimezone(UTC)
        end = start + timedelta(days=1)
        with self._writer.begin() as conn:
            if not (
                principal.acts_in(tenant)
                and self._guarded(conn, tenant, tag_id, username_of(principal))
            ):
                if not is_staff(principal, tenant) or not self._exists(conn, tenant, tag_id):
                    raise tag_not_found(tag_id)
                case = self._open_case(conn, tenant, tag_id)
                if case is None:
                    raise Problem(
                        403,
                        "urn:kizuna:errors:Forbidden",
                        "Not allowed",
                        "Staff see a tag's positions only in missing-person mode",
                    )
                self._log_access(
                    conn, tenant, tag_id, principal, "view_trail", case.reason, case.id
                )
            rows = conn.execute(
                select(
                    detections.c.seen_at,
                    detections.c.lat,
                    detections.c.lon,
                    detections.c.detector_kind,
                    detections.c.rssi,
                )
                .where(
                    detections.c.tenant_id == tenant,
                    detections.c.tag_id == tag_id,
                    detections.c.seen_at >= start,
                    detections.c.seen_at < end,
                )
                .order_by(detections.c.seen_at)
            ).all()
        return [
            schemas.TrailPoint(
                at=aware(r.seen_at),
                lat=r.lat,
                lon=r.lon,
                detector_kind=r.detector_kind,
                rssi=r.rssi,
            )
            for r in rows
        ]

    # --- places ------------------------------------------------------------------------

    def add_place(
        self, principal: Principal, tenant: str, tag_id: str, body: schemas.PlaceCreate
    ) -> schemas.PlacePublic:
        with self._writer.begin() as conn:
            username = self._require_guardian(conn, principal, tenant, tag_id)
            count = conn.execute(
                select(func.count()).where(places.c.tenant_id == tenant, places.c.tag_id == tag_id)
            ).scalar_one()
            if count >= 20:
                raise invalid_request("At most 20 places per tag")
            place_id = conn.execute(
                insert(places)
                .values(
                    tenant_id=tenant,
                    tag_id=tag_id,
                    name=body.name,
                    kind=body.kind,
                    lat=body.lat,
                    lon=body.lon,
                    radius_m=body.radius_m,
                    created_by=username,
                )
                .returning(places.c.id)
            ).scalar_one()
        with self._lock:
            self._placed.pop(tenant, None)
        return next(p for p in self.places(principal, tenant, tag_id) if p.id == place_id)

    def places(self, principal: Principal, tenant: str, tag_id: str) -> list[schemas.PlacePublic]:
        with self.engine.connect() as conn:
            self._require_guardian(conn, principal, tenant, tag_id)
            rows = conn.execute(
                select(places)
                .where(places.c.tenant_id == tenant, places.c.tag_id == tag_id)
                .order_by(places.c.id)
            ).all()
        return [
            schemas.PlacePublic(
                id=r.id,
                name=r.name,
                kind=r.kind,
                lat=r.lat,
                lon=r.lon,
                radius_m=r.radius_m,
                inside=r.inside,
                changed_at=aware(r.changed_at),
            )
            for r in rows
        ]

    def delete_place(self, principal: Principal, tenant: str, tag_id: str, place_id: int) -> None:
        with self._writer.begin() as conn:
            self._require_guardian(conn, principal, tenant, tag_id)
            gone = conn.execute(
                delete(places).where(
                    places.c.id == place_id, places.c.tenant_id == tenant, places.c.tag_id == tag_id
                )
            ).rowcount
        if not gone:
            raise Problem(404, "ResourceNotFound", "Resource not found", f"No place {place_id}")
        with self._lock:
            self._placed.pop(tenant, None)

    # --- notifications -----------------------------------------------------------------

    def notifications(
        self, principal: Principal, tenant: str, lang: str = "ja", limit: int = 50
    ) -> list[schemas.NotificationPublic]:
        username = username_of(principal)
        if username is None or not principal.acts_in(tenant):
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(notifications)
                .join(
                    guardians,
                    and_(
                        guardians.c.tenant_id == notifications.c.tenant_id,
                        guardians.c.tag_id == notifications.c.tag_id,
                    ),
                )
                .where(notifications.c.tenant_id == tenant, guardians.c.username == username)
                .order_by(notifications.c.at.desc(), notifications.c.id.desc())
                .limit(limit)
            ).all()
        return [
            schemas.NotificationPublic(
                id=r.id,
                tag_id=r.tag_id,
                kind=r.kind,
                at=aware(r.at),
                text=r.text_ja if lang == "ja" else r.text_en,
                read=username in (r.read_by or []),
            )
            for r in rows
        ]

    def mark_read(self, principal: Principal, tenant: str, notification_id: int) -> None:
        username = need_person(principal)
        with self._writer.begin() as conn:
            row = conn.execute(
                select(notifications).where(
                    notifications.c.id == notification_id, notifications.c.tenant_id == tenant
                )
            ).first()
            if row is None or not self._guarded(conn, tenant, row.tag_id, username):
                raise Problem(404, "ResourceNotFound", "Resource not found", "No such notification")
            if username not in (row.read_by or []):
                conn.execute(
                    update(notifications)
                    .where(notifications.c.id == notification_id)
                    .values(read_by=[*(row.read_by or []), username])
                )

    # --- missing-person mode and the access log ---------------------------------------

    def _open_case(self, conn: Connection, tenant: str, tag_id: str) -> Any:
        return conn.execute(
            select(missing_cases).where(
                missing_cases.c.tenant_id == tenant,
                missing_cases.c.tag_id == tag_id,
                missing_cases.c.closed_at.is_(None),
            )
        ).first()

    def _log_access(
        self,
        conn: Connection,
        tenant: str,
        tag_id: str,
        principal: Principal,
        action: str,
        reason: str,
        case_id: int | None,
    ) -> None:
        conn.execute(
            insert(access_log).values(
                tenant_id=tenant,
                tag_id=tag_id,
                actor=principal.subject,
                action=action,
                reason=reason,
                case_id=case_id,
                at=_now(),
            )
        )

    def open_missing_case(
        self, principal: Principal, tenant: str, body: schemas.MissingOpen
    ) -> schemas.MissingCasePublic:
        need_staff(principal, tenant)
        reason = need_reason(body.reason)
        now = _now()
        with self._writer.begin() as conn:
            if not self._exists(conn, tenant, body.tag_id):
                raise tag_not_found(body.tag_id)
            if self._open_case(conn, tenant, body.tag_id) is not None:
                raise already_exists("A missing-person case is already open for this tag")
            case_id = conn.execute(
                insert(missing_cases)
                .values(
                    tenant_id=tenant,
                    tag_id=body.tag_id,
                    reason=reason,
                    opened_by=principal.subject,
                    opened_at=now,
                )
                .returning(missing_cases.c.id)
            ).scalar_one()
            self._log_access(conn, tenant, body.tag_id, principal, "open_case", reason, case_id)
            self._notify(
                conn,
                tenant,
                body.tag_id,
                "missing_opened",
                now,
                f"市の職員が行方不明者捜索モードを開始しました。理由: {reason}",
                f"City staff opened missing-person mode. Reason: {reason}",
            )
        return self._case(tenant, case_id)

    def close_missing_case(
        self, principal: Principal, tenant: str, case_id: int
    ) -> schemas.MissingCasePublic:
        need_staff(principal, tenant)
        now = _now()
        with self._writer.begin() as conn:
            case = conn.execute(
                select(missing_cases).where(
                    missing_cases.c.id == case_id, missing_cases.c.tenant_id == tenant
                )
            ).first()
            if case is None:
                raise Problem(404, "ResourceNotFound", "Resource not found", f"No case {case_id}")
            if case.closed_at is None:
                conn.execute(
                    update(missing_cases)
                    .where(missing_cases.c.id == case_id)
                    .values(closed_at=now, closed_by=principal.subject)
                )
                self._log_access(
                    conn, tenant, case.tag_id, principal, "close_case", case.reason, case_id
                )
                self._notify(
                    conn,
                    tenant,
                    case.tag_id,
                    "missing_closed",
                    now,
                    "行方不明者捜索モードが終了しました。職員による位置の閲覧は記録から確認できます。",
                    "Missing-person mode has ended. Staff views of positions are in the access log.",
                )
        return self._case(tenant, case_id)

    def _case(self, tenant: str, case_id: int) -> schemas.MissingCasePublic:
        with self.engine.connect() as conn:
            r = conn.execute(
                select(missing_cases).where(
                    missing_cases.c.id == case_id, missing_cases.c.tenant_id == tenant
                )
            ).one()
        return _case_public(r)

    def missing_cases(
        self, principal: Principal, tenant: str, tag_id: str | None = None
    ) -> list[schemas.MissingCasePublic]:
        """Staff: every case of the tenant. Guardians: the cases of their tag (tag_id given)."""
        with self.engine.connect() as conn:
            query = select(missing_cases).where(missing_cases.c.tenant_id == tenant)
            if tag_id is not None:
                if not is_staff(principal, tenant):
                    self._require_guardian(conn, principal, tenant, tag_id)
                query = query.where(missing_cases.c.tag_id == tag_id)
            else:
                need_staff(principal, tenant)
            rows = conn.execute(query.order_by(missing_cases.c.opened_at.desc())).all()
        return [_case_public(r) for r in rows]

    def access_log(
        self, principal: Principal, tenant: str, tag_id: str
    ) -> list[schemas.AccessLogEntry]:
        with self.engine.connect() as conn:
            self._require_guardian(conn, principal, tenant, tag_id)
            rows = conn.execute(
                select(access_log)
                .where(access_log.c.tenant_id == tenant, access_log.c.tag_id == tag_id)
                .order_by(access_log.c.at.desc())
            ).all()
        return [
            schemas.AccessLogEntry(
                at=aware(r.at), actor=r.actor, action=r.action, reason=r.reason, case_id=r.case_id
            )
            for r in rows
        ]

    # --- volunteers --------------------------------------------------------------------

    def volunteer_summary(self, username: str, tenant: str) -> schemas.VolunteerSummary:
        today = jst_day(_now())
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(volunteer_days).where(
                    volunteer_days.c.tenant_id == tenant,
                    volunteer_days.c.username == username,
                    volunteer_days.c.day >= today.replace(day=1),
                )
            ).all()
        today_row = next((r for r in rows if r.day == today), None)
        s = self.settings
        earned = sum(r.points_earned for r in rows)
        awarded = sum(r.points_awarded for r in rows)
        return schemas.VolunteerSummary(
            today_detections=today_row.detections if today_row else 0,
            today_points=today_row.points_earned if today_row else 0,
            month_points=earned,
            daily_cap=s.watch_volunteer_daily_point_cap,
            monthly_cap=s.watch_volunteer_monthly_point_cap,
            points_awarded=awarded,
            points_pending=earned - awarded,
        )

    def award_volunteer_points(self) -> int:
        """Pay volunteers the points they earned (within the caps) into their points wallet.

        Paid through the points programme as volunteering (so its yearly cap, budget and
        the resident's own wallet apply), one award per (volunteer, day, new total) with an
        id derived from those: a retry after a crash is a replay, never a second payment.
        Returns the points paid. Points stay pending, and are paid by a later run, while
        the town has no programme, the volunteer has no verified resident record there
        yet, or the budget is short; a volunteer over the yearly cap is logged and skipped.
        """
        if self.points is None:
            return 0
        from kizuna.ledger.service import derived_id

        with self.engine.connect() as conn:
            due = conn.execute(
                select(volunteer_days)
                .where(volunteer_days.c.points_earned > volunteer_days.c.points_awarded)
                .order_by(
                    volunteer_days.c.tenant_id, volunteer_days.c.username, volunteer_days.c.day
                )
            ).all()
        paid = 0
        for row in due:
            amount = row.points_earned - row.points_awarded
            try:
                self.points.award_volunteering_to_user(
                    row.tenant_id,
                    row.username,
                    derived_id(
                        "watch-volunteer", row.tenant_id, row.username, row.day, row.points_earned
                    ),
                    "見守り協力（スマホでのタグ検知）",
                    row.day,
                    amount,
                )
            except Problem as problem:
                log.info(
                    "volunteer points for %s in %s left pending: %s",
                    row.username,
                    row.tenant_id,
                    problem.detail,
                )
                continue
            with self._writer.begin() as conn:
                conn.execute(
                    update(volunteer_days)
                    .where(
                        volunteer_days.c.tenant_id == row.tenant_id,
                        volunteer_days.c.username == row.username,
                        volunteer_days.c.day == row.day,
                        volunteer_days.c.points_awarded == row.points_awarded,
                    )
                    .values(points_awarded=row.points_earned)
                )
            paid += amount
        return paid

    # --- jobs --------------------------------------------------------------------------

    def check_not_seen(self, now: datetime | None = None) -> int:
        """Notify guardians of tags unseen for their N hours (once until seen again)."""
        now = now or _now()
        sent = 0
        with self._writer.begin() as conn:
            watched = conn.execute(
                select(tags).where(
                    tags.c.not_seen_hours.is_not(None), tags.c.claimed_at.is_not(None)
                )
            ).all()
            for tag in watched:
                last = self._last_seen(conn, tag.tenant_id, tag.id)
                since = last.at if last else aware(tag.claimed_at)
                alerted = aware(tag.not_seen_alerted_at)
                if now - since < timedelta(hours=tag.not_seen_hours):
                    continue
                if alerted is not None and alerted >= since:
                    continue
                hours = tag.not_seen_hours
                label = tag.label or tag.id
                self._notify(
                    conn,
                    tag.tenant_id,
                    tag.id,
                    "not_seen",
                    now,
                    f"{label}さんが{hours:g}時間以上検知されていません",
                    f"{label} has not been detected for over {hours:g} hours",
                )
                conn.execute(
                    update(tags)
                    .where(tags.c.tenant_id == tag.tenant_id, tags.c.id == tag.id)
                    .values(not_seen_alerted_at=now)
                )
                sent += 1
        return sent

    def deliver_webhooks(self, client: Any, now: datetime | None = None, limit: int = 100) -> int:
        """POST due webhook payloads; failures are retried with backoff (up to 12 times)."""
        now = now or _now()
        with self.engine.connect() as conn:
            due = conn.execute(
                select(outbox)
                .where(
                    outbox.c.delivered_at.is_(None),
                    outbox.c.next_attempt_at <= now,
                    outbox.c.attempts < 12,
                )
                .order_by(outbox.c.id)
                .limit(limit)
            ).all()
        delivered = 0
        for item in due:
            error = None
            try:
                response = client.post(item.url, json=item.payload, timeout=5)
                if response.status_code >= 300:
                    error = f"HTTP {response.status_code}"
            except Exception as exc:  # noqa: BLE001 - any failure is retried later
                error = f"{type(exc).__name__}: {exc}"[:500]
            with self._writer.begin() as conn:
                if error is None:
                    conn.execute(
                        update(outbox).where(outbox.c.id == item.id).values(delivered_at=_now())
                    )
                    delivered += 1
                else:
                    backoff = timedelta(seconds=min(3600, 15 * 2**item.attempts))
                    conn.execute(
                        update(outbox)
                        .where(outbox.c.id == item.id)
                        .values(
                            attempts=item.attempts + 1,
                            next_attempt_at=now + backoff,
                            last_error=error,
                        )
                    )
                    log.warning("webhook to %s failed (%s); retrying", item.url, error)
        return delivered

    def apply_retention(self, now: datetime | None = None, chunk: int = 20_000) -> int:
        """Delete detections (and the notifications that tell positions) past retention."""
        now = now or _now()
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
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(devices.c.tenant_id).distinct().order_by(devices.c.tenant_id)
                ).scalars()
            )


def _case_public(r: Any) -> schemas.MissingCasePublic:
    return schemas.MissingCasePublic(
        id=r.id,
        tag_id=r.tag_id,
        reason=r.reason,
        opened_by=r.opened_by,
        opened_at=aware(r.opened_at),
        closed_by=r.closed_by,
        closed_at=aware(r.closed_at),
    )


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
