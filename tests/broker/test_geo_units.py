"""Unit tests of geo-query parsing, validation and the exact test (no database)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kizuna.broker import geo
from kizuna.problems import Problem

TAKASAGO_HALL = [134.7906, 34.7658]  # 高砂市役所 (approx.)
KAKOGAWA_STATION = [134.8414, 34.7568]


def point(coordinates):
    return {"type": "Point", "coordinates": coordinates}


def test_haversine_matches_known_distance():
    # Takasago city hall to Kakogawa station: about 4.77 km on the WGS 84 mean sphere.
    metres = geo.haversine(*TAKASAGO_HALL, *KAKOGAWA_STATION)
    assert 4_700 < metres < 4_850


def test_near_with_max_and_min_distance():
    near = geo.parse_geo_query("near;maxDistance==5000", "Point", str(TAKASAGO_HALL), None)
    assert geo.matches(near, [point(KAKOGAWA_STATION)])
    assert not geo.matches(
        geo.parse_geo_query("near;maxDistance==4000", "Point", str(TAKASAGO_HALL), None),
        [point(KAKOGAWA_STATION)],
    )
    assert geo.matches(
        geo.parse_geo_query("near;minDistance==4000", "Point", str(TAKASAGO_HALL), None),
        [point(KAKOGAWA_STATION)],
    )


def test_relations_between_shapes():
    square = [[[134.7, 34.7], [134.9, 34.7], [134.9, 34.8], [134.7, 34.8], [134.7, 34.7]]]
    within = geo.parse_geo_query("within", "Polygon", str(square), None)
    assert geo.matches(within, [point(TAKASAGO_HALL)])
    contains = geo.parse_geo_query("contains", "Point", str(TAKASAGO_HALL), None)
    assert geo.matches(contains, [{"type": "Polygon", "coordinates": square}])
    disjoint = geo.parse_geo_query("disjoint", "Point", "[135.5,34.7]", None)
    assert geo.matches(disjoint, [{"type": "Polygon", "coordinates": square}])
    line = {"type": "LineString", "coordinates": [[134.6, 34.75], [135.0, 34.75]]}
    assert geo.matches(geo.parse_geo_query("intersects", "Polygon", str(square), None), [line])


@pytest.mark.parametrize(
    ("georel", "geometry", "coordinates"),
    [
        ("near", "Point", "[134.8,34.7]"),  # no distance
        ("near;maxDistance==x", "Point", "[134.8,34.7]"),
        ("nearby", "Point", "[134.8,34.7]"),
        ("within", "Polygon", "[[[0,0],[1,0],[1,1],[0,0.5]]]"),  # ring not closed
        ("within", "Point", "[200,0]"),
        ("within", "Blob", "[1,2]"),
        ("within", "Point", "not json"),
        (None, "Point", "[1,2]"),
    ],
)
def test_bad_geo_queries_are_bad_request(georel, geometry, coordinates):
    with pytest.raises(Problem) as caught:
        geo.parse_geo_query(georel, geometry, coordinates, None)
    assert caught.value.status == 400


@given(
    st.floats(-179, 179),
    st.floats(-80, 80),
    st.floats(1, 50_000),
    st.floats(0, 359.9),
    st.floats(0, 1),
)
def test_near_box_contains_every_point_within_the_distance(lon, lat, metres, bearing, fraction):
    import math

    distance = metres * fraction
    # Walk `distance` metres from (lon, lat) on the sphere and check the box holds the end.
    phi1, lmb1, theta = math.radians(lat), math.radians(lon), math.radians(bearing)
    delta = distance / geo.EARTH_RADIUS_M
    phi2 = math.asin(
        math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    )
    lmb2 = lmb1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * math.sin(phi2),
    )
    end_lon, end_lat = math.degrees(lmb2), math.degrees(phi2)
    if not -180 <= end_lon <= 180:
        return  # crossing the antimeridian: the box is clamped there by design
    min_lon, min_lat, max_lon, max_lat = geo.near_box(lon, lat, metres)
    assert min_lon <= end_lon <= max_lon and min_lat <= end_lat <= max_lat


@given(
    st.floats(134.0, 135.5),
    st.floats(34.0, 35.5),
    st.floats(-0.01, 0.01),
    st.floats(-0.01, 0.01),
    st.sampled_from([None, 1.0, 250.0, 800.0]),
)
def test_near_on_stored_points_agrees_with_the_general_geometry_path(lon, lat, dx, dy, low):
    """Stored Points skip shapely; the answer must be the one a one-point line would get."""
    stored = [lon + dx, lat + dy]
    query = geo.parse_geo_query(
        "near;maxDistance==900" + (f";minDistance=={low}" if low else ""),
        "Point",
        f"[{lon},{lat}]",
        None,
    )
    # A degenerate LineString is not a Point, so it takes the shapely route.
    line = {"type": "LineString", "coordinates": [stored, stored]}
    assert geo.matches(query, [point(stored)]) == geo.matches(query, [line])


@given(
    lon=st.one_of(st.integers(-180, 180), st.floats(-180, 180)),
    lat=st.one_of(st.integers(-90, 90), st.floats(-90, 90)),
    altitude=st.lists(st.floats(-100, 4000), max_size=1),
)
def test_a_points_box_is_shapelys(lon, lat, altitude):
    from shapely.geometry import shape

    geometry = point([lon, lat, *altitude])
    assert geo.bbox(geometry) == shape(geometry).bounds
