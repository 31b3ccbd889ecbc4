"""Guardians' places (home, school, …) and the arrival/departure notifications that new
detections raise, decided inside the transaction that stores them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cachetools import TTLCache
from sqlalchemy import Connection, delete, func, insert, select, update

from kizuna.auth.service import Principal
from kizuna.problems import invalid_request, not_found
from kizuna.watch import geo, schemas
from kizuna.watch.base import JST, WatchBase, aware
from kizuna.watch.models import places, tags
from kizuna.watch.notifications import notify
from kizuna.watch.privacy import need_guardian

PLACE_KIND_JA = {
    "home": "自宅",
    "school": "学校",
    "daycare": "保育園・デイサービス",
    "other": "場所",
}
# A departure needs this much more than the place's radius (no flapping at the edge).
_DEPARTURE_FACTOR = 1.3


class Places(WatchBase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per tenant, the tags that have places (read on every stored batch); a new place
        # is seen within 5 s, and at once by this process.
        self._placed: TTLCache[str, frozenset[str]] = TTLCache(1_000, ttl=5)

    def add_place(
        self, principal: Principal, tenant: str, tag_id: str, body: schemas.PlaceCreate
    ) -> schemas.PlacePublic:
        with self._writer.begin() as conn:
            username = need_guardian(conn, principal, tenant, tag_id)
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
            need_guardian(conn, principal, tenant, tag_id)
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
            need_guardian(conn, principal, tenant, tag_id)
            gone = conn.execute(
                delete(places).where(
                    places.c.id == place_id, places.c.tenant_id == tenant, places.c.tag_id == tag_id
                )
            ).rowcount
        if not gone:
            raise not_found(f"No place {place_id}")
        with self._lock:
            self._placed.pop(tenant, None)

    def _arrivals_and_departures(
        self, conn: Connection, tenant: str, rows: list[dict[str, Any]]
    ) -> None:
        """Move places in or out, and notify, for a tenant's newly stored detections."""
        with self._lock:
            placed = self._placed.get(tenant)
        if placed is None:
            placed = frozenset(
                conn.execute(
                    select(places.c.tag_id).where(places.c.tenant_id == tenant).distinct()
                ).scalars()
            )
            with self._lock:
                self._placed[tenant] = placed
        watched = [r for r in rows if r["tag_id"] in placed]
        if watched:
            _check_places(conn, tenant, watched)


def _check_places(conn: Connection, tenant: str, rows: list[dict[str, Any]]) -> None:
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
            notify(
                conn, tenant, place.tag_id, kind, at, ja, en, place_id=place.id, place=place.name
            )
