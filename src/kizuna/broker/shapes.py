"""The exact side of geo-queries, on shapely geometries.

Apart from :mod:`kizuna.broker.geo` because shapely loads numpy, ~20 MB of every process:
geo imports this module with the first geo-query or non-point geometry, not at start-up.
"""

from __future__ import annotations

from typing import Any

from shapely.geometry import Point, shape
from shapely.ops import nearest_points

__all__ = ["bounds", "nearest_point", "relates", "shape"]


def bounds(geojson: dict[str, Any]) -> tuple[float, float, float, float]:
    min_lon, min_lat, max_lon, max_lat = shape(geojson).bounds
    return min_lon, min_lat, max_lon, max_lat


def relates(georel: str, stored: dict[str, Any], target: Any) -> bool:
    """Does the stored geometry stand in ``georel`` (within, contains, ...) to ``target``?"""
    candidate = shape(stored)
    if georel == "equals":
        return candidate.equals(target)
    return bool(getattr(candidate, georel)(target))


def nearest_point(point: Point, geojson: dict[str, Any]) -> Point | None:
    """The point of the geometry nearest to ``point``; None when the geometry contains it."""
    geometry = shape(geojson)
    if geometry.contains(point):
        return None
    return nearest_points(point, geometry)[1]
