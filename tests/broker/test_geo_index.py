"""Geo-queries narrow candidates with the spatial index, and the index really serves them."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select, text

from kizuna.app import create_app
from kizuna.auth.service import SYSTEM
from kizuna.broker import geo
from kizuna.broker.models import entities
from kizuna.settings import Settings

LOCATION = "https://uri.etsi.org/ngsi-ld/location"
# A 40 × 40 grid of points around Takasago (0.01° apart), plus a few polygons.
GRID = [(134.70 + i * 0.01, 34.60 + j * 0.01) for i in range(40) for j in range(40)]


@pytest.fixture
def seeded(engine, tmp_path):  # noqa: ANN201
    app = create_app(Settings(data_dir=tmp_path, context_fetch_enabled=False), engine)
    services = app.state.services
    services.tenants.create_tenant("geo", "ジオ", "Geo")
    scope = services.tenants.scope(SYSTEM, "geo", write=True)
    core = services.broker.contexts.term_map(None)
    points = [
        {
            "id": f"urn:ngsi-ld:Point:{n}",
            "type": "Spot",
            "location": {
                "type": "GeoProperty",
                "value": {"type": "Point", "coordinates": [lon, lat]},
            },
        }
        for n, (lon, lat) in enumerate(GRID)
    ]
    rng = random.Random(3)
    squares = []
    for n in range(50):
        lon, lat = rng.uniform(134.70, 135.10), rng.uniform(34.60, 35.00)
        ring = [
            [lon, lat],
            [lon + 0.03, lat],
            [lon + 0.03, lat + 0.02],
            [lon, lat + 0.02],
            [lon, lat],
        ]
        squares.append(
            {
                "id": f"urn:ngsi-ld:Area:{n}",
                "type": "Area",
                "location": {
                    "type": "GeoProperty",
                    "value": {"type": "Polygon", "coordinates": [ring]},
                },
            }
        )
    services.broker.batch_upsert(scope, lambda _item: core, points + squares, replace=False)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE broker_geo"))
    return engine, points + squares


def _boxes_overlapping(entities, min_lon, min_lat, max_lon, max_lat) -> set[str]:
    hits = set()
    for entity in entities:
        value = entity["location"]["value"]
        coords = [value["coordinates"]] if value["type"] == "Point" else value["coordinates"][0]
        lons, lats = [c[0] for c in coords], [c[1] for c in coords]
        if (
            max(lons) >= min_lon
            and min(lons) <= max_lon
            and max(lats) >= min_lat
            and min(lats) <= max_lat
        ):
            hits.add(entity["id"])
    return hits


def _candidate_ids(conn, query: geo.GeoQuery) -> set[str]:
    keys = geo.candidates(query, LOCATION, "geo", conn.dialect.name).subquery()
    stmt = select(entities.c.id).where(entities.c.pk.in_(select(keys.c.entity_pk)))
    return set(conn.execute(stmt).scalars())


def test_index_candidates_are_exactly_the_overlapping_bounding_boxes(seeded):
    engine, entities = seeded
    window = [
        [134.905, 34.705],
        [134.955, 34.705],
        [134.955, 34.745],
        [134.905, 34.745],
        [134.905, 34.705],
    ]
    query = geo.parse_geo_query("intersects", "Polygon", [window], None)
    with engine.connect() as conn:
        found = _candidate_ids(conn, query)
    assert found == _boxes_overlapping(entities, 134.905, 34.705, 134.955, 34.745)
    assert 0 < len(found) < len(entities) // 10


def test_the_spatial_index_can_serve_the_candidate_query(seeded):
    engine, _ = seeded
    query = geo.parse_geo_query(
        "within", "Polygon", [[[134.9, 34.7], [135.0, 34.7], [135.0, 34.8], [134.9, 34.7]]], None
    )
    stmt = geo.candidates(query, LOCATION, "geo", engine.dialect.name)
    compiled = stmt.compile(engine)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Forbid the alternatives: if the query's expression did not match the index's,
            # PostgreSQL would have to fall back to a scan and the plan would show it.
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            rows = conn.exec_driver_sql(f"EXPLAIN {compiled.string}", compiled.params)
            plan = "\n".join(r[0] for r in rows)
            assert "ix_broker_geo_bbox" in plan, plan
        else:
            params = tuple(compiled.params[name] for name in compiled.positiontup)
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled.string}", params)
            plan = "\n".join(str(r[-1]) for r in rows)
            assert "broker_geo_rtree VIRTUAL TABLE INDEX" in plan, plan


def test_postgresql_finds_candidates_from_the_index_alone(pg_engine, tmp_path):
    """Every column the candidate search reads is in the GiST index: no heap visits."""
    app = create_app(Settings(data_dir=tmp_path, context_fetch_enabled=False), pg_engine)
    services = app.state.services
    services.tenants.create_tenant("geo", "ジオ", "Geo")
    scope = services.tenants.scope(SYSTEM, "geo", write=True)
    spots = [
        {
            "id": f"urn:ngsi-ld:Point:{n}",
            "type": "Spot",
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [x, y]}},
        }
        for n, (x, y) in enumerate(GRID)
    ]
    core = services.broker.contexts.term_map(None)
    services.broker.batch_upsert(scope, lambda _item: core, spots, replace=False)
    with pg_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE broker_geo"))
    query = geo.parse_geo_query("near;maxDistance==800", "Point", "[134.9, 34.8]", None)
    compiled = geo.candidates(query, LOCATION, "geo", "postgresql").compile(pg_engine)
    with pg_engine.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off"))
        rows = conn.exec_driver_sql(f"EXPLAIN {compiled.string}", compiled.params)
        plan = "\n".join(r[0] for r in rows)
    assert "Index Only Scan using ix_broker_geo_bbox" in plan, plan


def test_near_decides_point_candidates_from_their_box():
    query = geo.parse_geo_query("near;maxDistance==500;minDistance==100", "Point", "[135,35]", None)
    rows = [
        (1, 135.0, 35.0, 135.0, 35.0),  # the same point: closer than minDistance
        (2, 135.003, 35.0, 135.003, 35.0),  # ~273 m east: in range
        (3, 135.01, 35.0, 135.01, 35.0),  # ~911 m: too far
        (4, 135.009, 34.99, 135.02, 35.01),  # a polygon's box: decided later, on the geometry
    ]
    # The polygon's box leaves the answer to the exact test.
    assert geo.candidate_keys(query, rows) == ([2, 4], False)
    # Points only: the keys are the answer.
    assert geo.candidate_keys(query, rows[:3]) == ([2], True)
    within = geo.parse_geo_query(
        "within", "Polygon", [[[134, 34], [136, 34], [136, 36], [134, 34]]], None
    )
    assert geo.candidate_keys(within, rows) == ([1, 2, 3, 4], False)
