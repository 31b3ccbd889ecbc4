"""Devices (receivers, volunteers' phones, gauges): registration, keys, authentication.

Also what every device message is checked against: :class:`Rejected` with a short reason,
and :func:`parse_time` for the times devices send.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select

from kizuna.auth.service import SYSTEM, Principal
from kizuna.problems import Problem, already_exists, invalid_request
from kizuna.watch import schemas
from kizuna.watch.base import WatchBase, aware, sha256
from kizuna.watch.models import devices
from kizuna.watch.privacy import need_staff

# Device, detection and tag ids.
VALID_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$")
# A device's time may be this far in the future (device clocks drift).
_CLOCK_SKEW = timedelta(minutes=5)


class Rejected(Exception):
    """A message or item refused by ingestion, with a short machine-readable reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


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


class Devices(WatchBase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read on every message: (expires at, device); a revoked device is seen within 30 s.
        self._devices: dict[tuple[str, str], tuple[float, Device | None]] = {}
        self._secrets: dict[tuple[str, str], str] = {}  # secrets already checked

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
                    secret_sha256=sha256(secret),
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
        if not isinstance(device_id, str) or not VALID_ID.match(device_id):
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
        if not secrets.compare_digest(found.secret_sha256, sha256(secret)):
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
