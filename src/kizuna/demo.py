"""The 東播磨 demo region: four towns as tenants with realistic sample data.

Seeding is idempotent (upserts, create-if-missing), so ``kizuna demo`` can run again on
the same database. Positions are generated around each town's real centre; names
follow each town's real districts; readings are plausible but synthetic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from sqlalchemy import select

from kizuna.auth.models import users
from kizuna.auth.service import SYSTEM, Role, create_api_key, create_user
from kizuna.energy import demo as energy_demo
from kizuna.points import demo as points_demo
from kizuna.storage import writer
from kizuna.watch import demo as watch_demo

REGION = ("higashi-harima", "東播磨", "Higashi-Harima")
DEMO_PASSWORD = "kizuna-demo"


@dataclass(frozen=True)
class Town:
    id: str
    name_ja: str
    name_en: str
    lg_code: str
    lat: float
    lon: float
    districts: tuple[str, ...]


TOWNS = (
    Town(
        "takasago",
        "高砂市",
        "Takasago",
        "282162",
        34.7658,
        134.7906,
        ("荒井町", "伊保", "曽根町", "阿弥陀町", "米田町", "中筋", "梅井", "高砂町"),
    ),
    Town(
        "kakogawa",
        "加古川市",
        "Kakogawa",
        "282103",
        34.7568,
        134.8414,
        ("加古川町", "尾上町", "平岡町", "野口町", "別府町", "神野町", "志方町", "八幡町"),
    ),
    Town(
        "inami",
        "稲美町",
        "Inami",
        "283819",
        34.7486,
        134.9137,
        ("国岡", "加古", "母里", "天満", "岡", "印南"),
    ),
    Town(
        "harima",
        "播磨町",
        "Harima",
        "283827",
        34.7157,
        134.8680,
        ("東本荘", "古宮", "二子", "本荘", "野添", "南大中"),
    ),
)

# Published as open data: anyone may read these without credentials.
OPEN_TYPES = (
    "EvacuationShelter",
    "AED",
    "BusStop",
    "OffStreetParking",
    "WeatherObserved",
    "AirQualityObserved",
)


def _point(rng: random.Random, town: Town, spread: float = 0.03) -> dict[str, Any]:
    return {
        "type": "Point",
        "coordinates": [
            round(town.lon + rng.uniform(-spread, spread), 6),
            round(town.lat + rng.uniform(-spread * 0.8, spread * 0.8), 6),
        ],
    }


def _prop(value: Any, **meta: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **meta}


def _names(ja: str, en: str) -> dict[str, Any]:
    return {"type": "LanguageProperty", "languageMap": {"ja": ja, "en": en}}


def town_entities(town: Town, rng: random.Random) -> list[dict[str, Any]]:
    """Sample open-data and sensor entities for one town (about 70)."""
    out: list[dict[str, Any]] = []
    observed = "2026-11-22T09:00:00Z"
    for n, district in enumerate(town.districts * 2, start=1):
        kind = ("公民館", "小学校", "中学校", "体育館")[n % 4]
        out.append(
            {
                "id": f"urn:ngsi-ld:EvacuationShelter:{town.id}:{n:03d}",
                "type": "EvacuationShelter",
                "name": _names(
                    f"{district}{kind}",
                    f"{district} {('Community Hall', 'Elementary School', 'Junior High School', 'Gymnasium')[n % 4]}",
                ),
                "address": _prop(
                    {
                        "addressRegion": "兵庫県",
                        "addressLocality": town.name_ja,
                        "streetAddress": district,
                    }
                ),
                "capacity": _prop(rng.choice((120, 200, 350, 500, 800)), unitCode="IE"),
                "floodSafe": _prop(n % 3 != 0),
                "location": {"type": "GeoProperty", "value": _point(rng, town)},
            }
        )
    for n in range(1, 16):
        district = town.districts[n % len(town.districts)]
        out.append(
            {
                "id": f"urn:ngsi-ld:AED:{town.id}:{n:03d}",
                "type": "AED",
                "name": _names(f"{district} AED {n}", f"AED {n}, {district}"),
                "availableHours": _prop(rng.choice(("24時間", "8:30-17:15", "9:00-21:00"))),
                "location": {"type": "GeoProperty", "value": _point(rng, town)},
            }
        )
    for n in range(1, 21):
        district = town.districts[n % len(town.districts)]
        out.append(
            {
                "id": f"urn:ngsi-ld:BusStop:{town.id}:{n:03d}",
                "type": "BusStop",
                "name": _names(f"{district}{n}丁目", f"{district} {n}-chome"),
                "routes": _prop(
                    [f"{town.name_en[0]}{rng.randint(1, 9)}" for _ in range(rng.randint(1, 3))]
                ),
                "location": {"type": "GeoProperty", "value": _point(rng, town)},
            }
        )
    for n in range(1, 6):
        total = rng.choice((40, 80, 120, 200))
        out.append(
            {
                "id": f"urn:ngsi-ld:OffStreetParking:{town.id}:{n:03d}",
                "type": "OffStreetParking",
                "name": _names(
                    f"{town.name_ja}営駐車場{n}", f"{town.name_en} municipal car park {n}"
                ),
                "totalSpotNumber": _prop(total),
                "availableSpotNumber": _prop(rng.randint(0, total), observedAt=observed),
                "location": {"type": "GeoProperty", "value": _point(rng, town)},
            }
        )
    for n in range(1, 4):
        out.append(
            {
                "id": f"urn:ngsi-ld:WeatherObserved:{town.id}:{n:03d}",
                "type": "WeatherObserved",
                "temperature": _prop(
                    round(rng.uniform(8, 16), 1), unitCode="CEL", observedAt=observed
                ),
                "relativeHumidity": _prop(
                    round(rng.uniform(0.4, 0.8), 2), unitCode="P1", observedAt=observed
                ),
                "windSpeed": _prop(
                    round(rng.uniform(0, 8), 1), unitCode="MTS", observedAt=observed
                ),
                "precipitation": _prop(
                    round(rng.choice((0, 0, 0.5, 2.0)), 1), unitCode="MMT", observedAt=observed
                ),
                "location": {"type": "GeoProperty", "value": _point(rng, town)},
            }
        )
    for n in range(1, 3):
        out.append(
            {
                "id": f"urn:ngsi-ld:AirQualityObserved:{town.id}:{n:03d}",
                "type": "AirQualityObserved",
                "pm25": _prop(round(rng.uniform(4, 25), 1), unitCode="GQ", observedAt=observed),
                "no2": _prop(
                    round(rng.uniform(0.002, 0.02), 3), unitCode="59", observedAt=observed
                ),
                "location": {"type": "GeoProperty", "value": _point(rng, town)},
            }
        )
    for n in range(1, 11):
        out.append(
            {
                "id": f"urn:ngsi-ld:Streetlight:{town.id}:{n:03d}",
                "type": "Streetlight",
                "powerState": _prop(rng.choice(("on", "off"))),
                "lampWattage": _prop(rng.choice((20, 40, 60)), unitCode="WTT"),
                "refStreetlightGroup": {
                    "type": "Relationship",
                    "object": f"urn:ngsi-ld:StreetlightGroup:{town.id}:{n % 3 + 1}",
                },
                "location": {"type": "GeoProperty", "value": _point(rng, town)},
            }
        )
    return out


def seed(services: Any, console: Console) -> str:
    tenants = services.tenants
    tenants.create_region(*REGION)
    core = services.broker.contexts.core
    rng = random.Random(20261122)
    entity_count = 0
    for town in TOWNS:
        tenants.create_tenant(town.id, town.name_ja, town.name_en, REGION[0], town.lg_code)
        tenants.set_open_types(town.id, [core.expand(t) for t in OPEN_TYPES])
        scope = tenants.scope(SYSTEM, town.id, write=True)
        batch = town_entities(town, rng)
        result = services.broker.batch_upsert(scope, lambda _item: core, batch, replace=True)
        entity_count += len(result.success)
    keys = _demo_accounts(services)
    lines = [
        f"東播磨 demo: {len(TOWNS)} tenants, {entity_count} entities",
        energy_demo.seed(services, REGION[0]),
        # Points first: mimamori volunteers are paid into their points wallets.
        points_demo.seed(services),
        watch_demo.seed(services, TOWNS),
        f"platform admin: admin / {DEMO_PASSWORD}",
        *(f"staff of {t.id}: {t.id}-staff / {DEMO_PASSWORD}" for t in TOWNS),
        *(f"API key ({t}): {k}" for t, k in keys.items()),
    ]
    return "\n".join(lines)


def _demo_accounts(services: Any) -> dict[str, str]:
    """Demo users (created once) and a fresh read/write API key per town."""
    keys: dict[str, str] = {}
    with writer(services.engine).begin() as conn:
        existing = set(conn.execute(select(users.c.username)).scalars())
        if "admin" not in existing:
            create_user(
                conn, "admin", "プラットフォーム管理者", Role.PLATFORM_ADMIN, DEMO_PASSWORD, []
            )
        for town in TOWNS:
            name = f"{town.id}-staff"
            if name not in existing:
                create_user(
                    conn,
                    name,
                    f"{town.name_ja} DX推進課",
                    Role.MUNICIPAL_STAFF,
                    DEMO_PASSWORD,
                    [town.id],
                )
            keys[town.id] = create_api_key(conn, town.id, True, "demo sensor gateway")
    return keys
