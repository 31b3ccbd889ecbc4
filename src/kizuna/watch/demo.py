"""Demo data for mimamori and flood watch, called from ``kizuna.demo.seed``.

Per town: fixed BLE receivers along a grid of streets, a city car, a volunteer with a phone,
a family with a child and a grandparent (tags, places, today's movement so far and the two
days before), other tagged children around the schools (so published per-area counts have
enough people in them), river gauges with a rainy day that crossed 注意 / 警戒, and flood
spots whose beacons went silent in the worst street. All synthetic; idempotent (ids are
stable, repeats are dropped as duplicates).
"""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from kizuna.auth.models import users
from kizuna.auth.service import SYSTEM, Principal, Role, create_user
from kizuna.problems import Problem
from kizuna.storage import writer
from kizuna.watch import schemas
from kizuna.watch.base import JST
from kizuna.watch.flood import Thresholds
from kizuna.watch.service import WatchService

PASSWORD = "kizuna-demo"
# (gauge id, name ja, name en, river, dlat, dlon from the town centre, thresholds)
GAUGES = {
    "kakogawa": [
        (
            "kunikane",
            "加古川 国包",
            "Kakogawa at Kunikane",
            "加古川",
            0.030,
            -0.006,
            (-4.2, -3.4, -2.5, -1.6),
        ),
        (
            "kakogawa-bashi",
            "加古川 加古川橋",
            "Kakogawa Bridge",
            "加古川",
            -0.002,
            -0.009,
            (-4.0, -3.2, -2.4, -1.5),
        ),
    ],
    "takasago": [
        (
            "hokke",
            "法華山谷川 曽根",
            "Hokkesandani at Sone",
            "法華山谷川",
            0.006,
            0.010,
            (-2.6, -2.0, -1.4, -0.8),
        )
    ],
    "inami": [
        (
            "kise-kami",
            "喜瀬川 国岡",
            "Kise at Kunioka",
            "喜瀬川",
            0.004,
            -0.008,
            (-2.4, -1.8, -1.2, -0.7),
        )
    ],
    "harima": [
        (
            "kise-shimo",
            "喜瀬川 古宮",
            "Kise at Furumiya",
            "喜瀬川",
            0.002,
            0.006,
            (-2.2, -1.7, -1.1, -0.6),
        )
    ],
}


def _user(services: Any, username: str, display: str, tenant: str) -> Principal:
    with writer(services.engine).begin() as conn:
        if not conn.execute(select(users.c.id).where(users.c.username == username)).first():
            create_user(conn, username, display, Role.RESIDENT, PASSWORD, [tenant])
    return Principal("user", f"user:{username}", Role.RESIDENT, frozenset({tenant}), False)


def _device(watch: WatchService, tenant: str, body: schemas.DeviceCreate) -> None:
    with contextlib.suppress(Problem):  # already there
        watch.register_device(SYSTEM, tenant, body)


def _walk(
    a: tuple[float, float],
    b: tuple[float, float],
    start: datetime,
    minutes: int,
    rng: random.Random,
):  # noqa: ANN202
    steps = max(2, minutes // 3)
    for n in range(steps + 1):
        f = n / steps
        yield (
            start + timedelta(minutes=minutes * f),
            a[0] + (b[0] - a[0]) * f + rng.uniform(-0.0006, 0.0006),
            a[1] + (b[1] - a[1]) * f + rng.uniform(-0.0006, 0.0006),
        )


def seed(services: Any, towns: Any) -> str:
    watch: WatchService = services.watch
    flood = watch.flood
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    total = 0
    gauges = spots = 0
    for town in towns:
        rng = random.Random(f"watch-{town.id}")
        tenant = town.id
        _add_open_types(services, tenant)
        # Fixed receivers on a 7 × 7 grid of crossings (~500 m apart), a car, a phone.
        receivers: list[tuple[str, float, float]] = []
        for i in range(7):
            for j in range(7):
                lat = town.lat + (i - 3) * 0.0045
                lon = town.lon + (j - 3) * 0.0055
                rid = f"rx-{town.id}-{i}{j}"
                receivers.append((rid, lat, lon))
                name = f"{town.districts[(i + j) % len(town.districts)]} 交差点 {i}{j}"
                _device(
                    watch,
                    tenant,
                    schemas.DeviceCreate(id=rid, kind="fixed", name=name, lat=lat, lon=lon),
                )
        _device(
            watch,
            tenant,
            schemas.DeviceCreate(id=f"car-{town.id}-1", kind="vehicle", name="公用車 1号"),
        )
        volunteer = f"{town.id}-volunteer"
        _user(services, volunteer, f"{town.name_ja} 見守り協力者", tenant)
        _enrol_in_points(services, tenant, volunteer, town.name_ja)
        _device(
            watch,
            tenant,
            schemas.DeviceCreate(
                id=f"phone-{town.id}-1", kind="phone", name="協力者スマホ", owner_username=volunteer
            ),
        )
        family = f"{town.id}-family"
        guardian = _user(services, family, f"{town.name_ja} 見守り家族", tenant)
        home = (town.lat - 0.006, town.lon + 0.004)
        school = (town.lat + 0.005, town.lon - 0.006)
        daycare = (town.lat - 0.002, town.lon - 0.009)
        child, elder = f"tag-{town.id}-c01", f"tag-{town.id}-e01"
        issued = {
            t.id: t
            for t in watch.issue_tags(SYSTEM, tenant, schemas.TagIssue(count=2), ids=[child, elder])
        }
        for tag, label, kind in ((child, "はると", "child"), (elder, "祖母 ふみ", "elder")):
            if tag in issued:
                watch.claim_tag(
                    guardian,
                    tenant,
                    schemas.TagClaim(
                        tag_id=tag,
                        claim_code=issued[tag].claim_code,
                        label=label,
                        person_kind=kind,  # type: ignore[arg-type]
                        consent=schemas.Consent(
                            agreed=True,
                            given_by=f"{town.name_ja} 見守り家族",
                            relation="母" if kind == "child" else "子",
                        ),
                    ),
                )
                places = [("自宅", "home", home)]
                places.append(
                    ("小学校", "school", school)
                    if kind == "child"
                    else ("デイサービス", "daycare", daycare)
                )
                for name, pkind, (lat, lon) in places:
                    watch.add_place(
                        guardian,
                        tenant,
                        tag,
                        schemas.PlaceCreate(
                            name=f"{town.districts[0]}{name}" if pkind != "home" else name,
                            kind=pkind,
                            lat=lat,
                            lon=lon,
                            radius_m=180,
                        ),  # type: ignore[arg-type]
                    )
                watch.update_settings(guardian, tenant, tag, schemas.TagSettings(not_seen_hours=6))
        # Movement: the two days before and today up to now (JST school and day-care hours).
        route: list[tuple[str, datetime, float, float]] = []
        today = now.astimezone(JST).replace(hour=0, minute=0, second=0, microsecond=0)
        for days_ago in (2, 1, 0):
            day = today - timedelta(days=days_ago)
            for who, a, b, leave, back in (
                (child, home, school, (7, 40), (15, 10)),
                (elder, home, daycare, (9, 0), (16, 0)),
            ):
                out_at = day + timedelta(hours=leave[0], minutes=leave[1])
                back_at = day + timedelta(hours=back[0], minutes=back[1])
                route += [(who, *p) for p in _walk(a, b, out_at, 25, rng)]
                stay = out_at + timedelta(minutes=45)
                while stay < back_at:
                    route.append(
                        (
                            who,
                            stay,
                            b[0] + rng.uniform(-3e-4, 3e-4),
                            b[1] + rng.uniform(-3e-4, 3e-4),
                        )
                    )
                    stay += timedelta(minutes=25)
                route += [(who, *p) for p in _walk(b, a, back_at, 30, rng)]
            # Other tagged children gather at the school in the morning (published counts).
            for k in range(12):
                other = f"tag-{town.id}-x{k:02d}"
                start = home[0] + rng.uniform(-0.006, 0.006), home[1] + rng.uniform(-0.008, 0.008)
                leave_at = day + timedelta(hours=7, minutes=30 + rng.randint(0, 20))
                route += [(other, *p) for p in _walk(start, school, leave_at, 20, rng)]
        route = [r for r in route if r[1] <= now]
        total += _store_route(watch, tenant, town.id, receivers, route, rng)
        # Flood watch: gauges through a rainy day, spots with beacons.
        for gid, name_ja, name_en, river, dlat, dlon, limits in GAUGES.get(town.id, []):
            flood.create_gauge(
                tenant,
                gid,
                name_ja,
                name_en,
                river,
                town.lat + dlat,
                town.lon + dlon,
                Thresholds(*limits),
            )
            device = watch.device(tenant, gid)
            assert device is not None
            peak = limits[2] + 0.35 if gid in ("kunikane", "hokke") else limits[1] + 0.2
            base = limits[0] - 1.1
            for n in range(144, -1, -1):
                at = now - timedelta(minutes=10 * n)
                hours_from_peak = (n * 10 / 60) - 5
                level = (
                    base
                    + (peak - base) * max(0.0, 1 - (hours_from_peak / 9) ** 2)
                    + rng.uniform(-0.03, 0.03)
                )
                flood.record_reading(device, {"level": round(level, 2), "at": at.isoformat()})
            gauges += 1
        spots += _seed_spots(watch, tenant, town, receivers, now)
        flood.check_spots(now)
        for hours in range(1, 49):
            watch.publish_counts(tenant, now - timedelta(hours=hours))
    paid = watch.award_volunteer_points()
    return (
        f"mimamori: {total} detections, families {', '.join(f'{t.id}-family' for t in towns)} / {PASSWORD}; "
        f"flood: {gauges} gauges, {spots} spots; volunteer points paid: {paid}"
    )


def _store_route(
    watch: WatchService, tenant: str, town_id: str, receivers: list, route: list, rng: random.Random
) -> int:
    by_device: dict[str, list[dict[str, Any]]] = {}
    for n, (tag, at, lat, lon) in enumerate(sorted(route, key=lambda r: r[1])):
        nearest = min(receivers, key=lambda r: (r[1] - lat) ** 2 + (r[2] - lon) ** 2)
        close = abs(nearest[1] - lat) < 0.0012 and abs(nearest[2] - lon) < 0.0015
        item = {
            "id": f"demo-{tag}-{at:%Y%m%d%H%M}-{n}",
            "tag": tag,
            "at": at.isoformat(),
            "rssi": rng.randint(-92, -55),
        }
        if close:
            device = nearest[0]
        else:
            device = f"phone-{town_id}-1" if n % 3 else f"car-{town_id}-1"
            item.update(lat=round(lat, 6), lon=round(lon, 6))
        by_device.setdefault(device, []).append(item)
    prepared = []
    for device_id, items in by_device.items():
        device = watch.device(tenant, device_id)
        assert device is not None
        prepared.append(watch.prepare(tenant, device, items))
    return sum(s.accepted for s in watch.store(prepared))


def _seed_spots(watch: WatchService, tenant: str, town: Any, receivers: list, now: datetime) -> int:
    flood = watch.flood
    count = 0
    for k, (dlat, dlon, name) in enumerate(
        ((-0.004, 0.002, "アンダーパス"), (0.003, 0.008, "市道交差点"))
    ):
        spot_id = f"spot-{k + 1}"
        tags = {h: f"beacon-{town.id}-{k + 1}-{int(h * 100)}" for h in (0.1, 0.2, 0.3)}
        flood.create_spot(
            tenant,
            spot_id,
            f"{town.districts[k + 1]} {name}",
            f"{town.districts[k + 1]} {name} (flood sensor)",
            town.lat + dlat,
            town.lon + dlon,
            tags,
        )
        # The underpass of Kakogawa is under 20 cm of water for the last 40 minutes.
        flooded = town.id == "kakogawa" and k == 0
        rid = receivers[k][0]
        device = watch.device(tenant, rid)
        assert device is not None
        items = []
        for h, tag in tags.items():
            silent_since = 40 if flooded and h <= 0.2 else 0
            for m in range(silent_since, 120, 5):
                items.append(
                    {
                        "id": f"b-{tag}-{(now - timedelta(minutes=m)):%Y%m%d%H%M}",
                        "tag": tag,
                        "at": (now - timedelta(minutes=m)).isoformat(),
                    }
                )
        watch.store([watch.prepare(tenant, device, items)])
        count += 1
    return count


def _enrol_in_points(services: Any, tenant: str, username: str, town_name: str) -> None:
    """The volunteer as a verified resident of the town's points programme, if it has one,
    so their 見守り協力 points land in a wallet they can see (else they stay pending)."""
    from kizuna.points.schemas import ResidentCreate
    from kizuna.points.service import PointsError

    points = services.points
    try:
        resident = points.register_resident(
            tenant,
            username,
            ResidentCreate(
                real_name="見守り 協力者", kana="ミマモリ キョウリョクシャ", town=town_name
            ),
        )
    except PointsError:
        return  # no points programme in this town
    if not resident.verified:
        points.verify_resident(tenant, resident.id, by="demo")


def _add_open_types(services: Any, tenant: str) -> None:
    core = services.broker.contexts.core
    current = next(
        (t["open_types"] for t in services.tenants.list_tenants() if t["id"] == tenant), []
    )
    wanted = {core.expand(t) for t in ("WaterLevelGauge", "FloodSpot", "DetectionCount")}
    if not wanted <= set(current):
        services.tenants.set_open_types(tenant, sorted(set(current) | wanted))
