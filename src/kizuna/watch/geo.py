"""Small geometry for mimamori: distances, grid cells and a bundled outline of the towns.

The outlines are **simplified** polygons drawn by hand from the towns' approximate extents
(a few dozen points each, about ±300 m): enough to orient a trail on a phone, not a survey.
Coordinates are [lon, lat] (WGS 84).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_000.0
# Published counts use cells of 0.01° × 0.01° (about 0.9 km × 1.1 km here).
CELL_DEGREES = 0.01


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def cell_of(lat: float, lon: float) -> tuple[int, int]:
    return math.floor(lat / CELL_DEGREES), math.floor(lon / CELL_DEGREES)


def cell_polygon(cell: tuple[int, int]) -> dict:
    south, west = cell[0] * CELL_DEGREES, cell[1] * CELL_DEGREES
    north, east = south + CELL_DEGREES, west + CELL_DEGREES
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [[[round(x, 6), round(y, 6)] for x, y in ring]]}


@dataclass(frozen=True)
class Outline:
    name_ja: str
    name_en: str
    ring: tuple[tuple[float, float], ...]  # (lon, lat)
    label_at: tuple[float, float]


# Simplified, hand-drawn outlines (see the module docstring).
TOWN_OUTLINES: tuple[Outline, ...] = (
    Outline(
        "高砂市",
        "Takasago",
        (
            (134.742, 34.737),
            (134.770, 34.728),
            (134.800, 34.735),
            (134.823, 34.748),
            (134.826, 34.765),
            (134.812, 34.783),
            (134.800, 34.800),
            (134.772, 34.806),
            (134.748, 34.796),
            (134.738, 34.772),
            (134.742, 34.737),
        ),
        (134.778, 34.768),
    ),
    Outline(
        "加古川市",
        "Kakogawa",
        (
            (134.823, 34.748),
            (134.846, 34.724),
            (134.872, 34.730),
            (134.884, 34.752),
            (134.893, 34.775),
            (134.885, 34.805),
            (134.860, 34.830),
            (134.820, 34.845),
            (134.790, 34.835),
            (134.800, 34.800),
            (134.812, 34.783),
            (134.826, 34.765),
            (134.823, 34.748),
        ),
        (134.848, 34.790),
    ),
    Outline(
        "稲美町",
        "Inami",
        (
            (134.884, 34.752),
            (134.905, 34.735),
            (134.935, 34.738),
            (134.950, 34.758),
            (134.945, 34.782),
            (134.920, 34.795),
            (134.893, 34.775),
            (134.884, 34.752),
        ),
        (134.917, 34.762),
    ),
    Outline(
        "播磨町",
        "Harima",
        (
            (134.846, 34.724),
            (134.852, 34.703),
            (134.875, 34.700),
            (134.888, 34.712),
            (134.885, 34.732),
            (134.872, 34.730),
            (134.846, 34.724),
        ),
        (134.867, 34.716),
    ),
)

# The Kakogawa river, simplified, north to the sea.
KAKOGAWA_RIVER: tuple[tuple[float, float], ...] = (
    (134.845, 34.845),
    (134.838, 34.815),
    (134.835, 34.790),
    (134.832, 34.770),
    (134.826, 34.752),
    (134.822, 34.735),
    (134.818, 34.722),
)


@dataclass(frozen=True)
class Frame:
    """Projects lon/lat into an SVG box (equirectangular, corrected for latitude)."""

    west: float
    south: float
    east: float
    north: float
    width: float = 360.0

    @classmethod
    def around(cls, points: list[tuple[float, float]], pad_m: float = 400.0) -> Frame:
        lons = [p[0] for p in points]
        lats = [p[1] for p in points]
        mid = (min(lats) + max(lats)) / 2
        pad_lat = pad_m / 111_320
        pad_lon = pad_m / (111_320 * math.cos(math.radians(mid)))
        return cls(
            min(lons) - pad_lon, min(lats) - pad_lat, max(lons) + pad_lon, max(lats) + pad_lat
        )

    @property
    def _kx(self) -> float:
        return math.cos(math.radians((self.south + self.north) / 2))

    @property
    def height(self) -> float:
        span_x = (self.east - self.west) * self._kx
        span_y = self.north - self.south
        return round(self.width * span_y / span_x, 1) if span_x else self.width

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        x = (lon - self.west) / (self.east - self.west) * self.width
        y = (self.north - lat) / (self.north - self.south) * self.height
        return round(x, 1), round(y, 1)

    def path(self, ring: tuple[tuple[float, float], ...] | list[tuple[float, float]]) -> str:
        return " ".join(
            f"{'M' if i == 0 else 'L'}{x},{y}" for i, (x, y) in enumerate(self.xy(*p) for p in ring)
        )

    def metres_to_px(self, metres: float) -> float:
        return round(metres / (111_320 * self._kx) / (self.east - self.west) * self.width, 1)
