"""SVG view models for the pages: a trail map and gauge charts, drawn without tile servers.

Everything is computed here in Python (coordinates in SVG units); the templates only
place the numbers. The map background is the bundled simplified town outlines and river.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kizuna.watch import geo
from kizuna.watch.base import JST

REGION_CENTRE = (134.845, 34.765)  # (lon, lat)
MIN_SPAN_M = 1_400  # a single point still shows its neighbourhood


@dataclass
class MapView:
    width: float
    height: float
    towns: list[dict[str, Any]] = field(default_factory=list)
    corner: str = ""  # the town the map shows, when none of the labels fits
    river: str = ""
    places: list[dict[str, Any]] = field(default_factory=list)
    trail: str = ""
    points: list[dict[str, Any]] = field(default_factory=list)
    markers: list[dict[str, Any]] = field(default_factory=list)
    scale: dict[str, Any] = field(default_factory=dict)


def _frame(
    points: list[tuple[float, float]], width: float, pad_m: float = 350, max_aspect: float = 1.0
) -> geo.Frame:
    """A frame around the points, at least MIN_SPAN_M wide, no taller than max_aspect × wide."""
    if not points:
        points = [REGION_CENTRE]
    frame = geo.Frame.around(points, pad_m=pad_m)
    # Enforce a minimum span around the middle.
    mid_lon, mid_lat = (frame.west + frame.east) / 2, (frame.south + frame.north) / 2
    half_lat = max((frame.north - frame.south) / 2, MIN_SPAN_M / 2 / 111_320)
    kx = geo.Frame(0, mid_lat - 0.01, 1, mid_lat + 0.01)._kx
    half_lon = max((frame.east - frame.west) / 2, MIN_SPAN_M / 2 / (111_320 * kx))
    half_lon = max(half_lon, half_lat / kx / max_aspect)
    return geo.Frame(
        mid_lon - half_lon, mid_lat - half_lat, mid_lon + half_lon, mid_lat + half_lat, width
    )


def base_map(frame: geo.Frame, lang: str) -> MapView:
    view = MapView(frame.width, frame.height)
    for town in geo.TOWN_OUTLINES:
        x, y = frame.xy(*town.label_at)
        inside = 0 <= x <= frame.width and 0 <= y <= frame.height
        view.towns.append(
            {
                "path": frame.path(town.ring) + " Z",
                "name": town.name_ja if lang == "ja" else town.name_en,
                "x": x,
                "y": y,
                "label": inside,
            }
        )
    view.river = frame.path(geo.KAKOGAWA_RIVER)
    if not any(t["label"] for t in view.towns):
        centre = ((frame.west + frame.east) / 2, (frame.south + frame.north) / 2)
        for town in geo.TOWN_OUTLINES:
            if _contains(town.ring, centre):
                view.corner = town.name_ja if lang == "ja" else town.name_en
    for metres in (100, 200, 500, 1000, 2000, 5000):
        px = frame.metres_to_px(metres)
        if px >= frame.width / 6:
            view.scale = {
                "px": px,
                "label": f"{metres} m" if metres < 1000 else f"{metres // 1000} km",
            }
            break
    return view


def _contains(ring: tuple[tuple[float, float], ...], point: tuple[float, float]) -> bool:
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:], strict=False):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def trail_map(trail: list[Any], places: list[Any], lang: str = "ja", width: float = 360) -> MapView:
    """Today's trail (points in time order), the guardian's places, the last position."""
    coords = [(p.lon, p.lat) for p in trail] + [(p.lon, p.lat) for p in places]
    frame = _frame(coords, width, max_aspect=1.1)
    view = base_map(frame, lang)
    for place in places:
        x, y = frame.xy(place.lon, place.lat)
        view.places.append(
            {
                "x": x,
                "y": y,
                "r": max(6.0, frame.metres_to_px(place.radius_m)),
                "name": place.name,
                "kind": place.kind,
                "inside": place.inside,
            }
        )
    xy = [frame.xy(p.lon, p.lat) for p in trail]
    view.trail = " ".join(f"{x},{y}" for x, y in xy)
    for n, (point, (x, y)) in enumerate(zip(trail, xy, strict=True)):
        view.points.append(
            {
                "x": x,
                "y": y,
                "time": point.at.astimezone(JST).strftime("%H:%M"),
                "last": n == len(trail) - 1,
                "first": n == 0,
            }
        )
    return view


def overview_map(items: list[dict[str, Any]], lang: str = "ja", width: float = 360) -> MapView:
    """Markers (gauges, flood spots) over the towns; each item has lat, lon, label, level."""
    coords = [(i["lon"], i["lat"]) for i in items] or [REGION_CENTRE]
    frame = _frame(coords, width, pad_m=900, max_aspect=0.8)
    view = base_map(frame, lang)
    for item in items:
        x, y = frame.xy(item["lon"], item["lat"])
        view.markers.append({**item, "x": x, "y": y})
    return view


# --- gauge chart ----------------------------------------------------------------------

LEVEL_COLOURS = ("#2e7d4f", "#d6b600", "#e0821e", "#c62828", "#6a1b9a")


@dataclass
class Chart:
    width: float
    height: float
    line: str
    bands: list[dict[str, Any]]
    ticks_x: list[dict[str, Any]]
    ticks_y: list[dict[str, Any]]
    bank_y: float
    last: dict[str, Any] | None
    left: float
    right: float
    top: float
    bottom: float


def gauge_chart(
    series: list[tuple[datetime, float]],
    thresholds: dict[str, float],
    names: tuple[str, ...],
    hours: int = 24,
    width: float = 360,
    height: float = 200,
) -> Chart:
    left, right, top, bottom = 44.0, width - 8, 10.0, height - 24
    limits = [thresholds[k] for k in ("standby", "caution", "warning", "danger")]
    values = [v for _, v in series]
    lo = min([*values, limits[0]]) - 0.4
    hi = max([*values, 0.0]) + 0.3
    end = series[-1][0] if series else datetime.now(JST)
    start = end - timedelta(hours=hours)

    def y_of(v: float) -> float:
        return round(bottom - (v - lo) / (hi - lo) * (bottom - top), 1)

    def x_of(t: datetime) -> float:
        return round(left + (t - start).total_seconds() / (hours * 3600) * (right - left), 1)

    bands = []
    edges = [*limits, hi]
    for n in range(4):
        y1, y2 = y_of(min(edges[n + 1], hi)), y_of(edges[n])
        bands.append(
            {
                "y": y1,
                "h": round(max(0.0, y2 - y1), 1),
                "colour": LEVEL_COLOURS[n + 1],
                "name": names[n + 1],
                "label_y": round(y2 - 3, 1),
            }
        )
    line = " ".join(f"{x_of(t)},{y_of(v)}" for t, v in series if t >= start)
    ticks_x = []
    tick = start.astimezone(JST).replace(minute=0, second=0, microsecond=0)
    while tick <= end:
        if tick >= start and tick.hour % 6 == 0:
            ticks_x.append({"x": x_of(tick), "label": tick.strftime("%H:%M")})
        tick += timedelta(hours=1)
    step = 0.5 if hi - lo <= 4 else 1.0
    ticks_y = []
    v = round(lo / step) * step
    while v <= hi:
        if v >= lo:
            ticks_y.append({"y": y_of(v), "label": f"{v:+.1f}"})
        v += step
    last = None
    if series:
        t, v = series[-1]
        last = {"x": x_of(t), "y": y_of(v)}
    return Chart(
        width, height, line, bands, ticks_x, ticks_y, y_of(0.0), last, left, right, top, bottom
    )
