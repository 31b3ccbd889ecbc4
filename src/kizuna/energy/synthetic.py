"""A synthetic but plausible fiscal year for the demo, tests and benchmarks — SYNTHETIC DATA.

Nothing here is measured: facility names are marked 【合成】, the folder written gets a
SYNTHETIC.txt marker and the report a banner. Shapes follow the kinds of facility (offices on
working days, schools with their holidays, pools, hospitals round the clock, street lights at
night); the plant sends out about 54,000 MWh a year with day/night and seasonal variation and
maintenance outages. A seed makes every run identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from kizuna.energy.config import PRICE_SCALE
from kizuna.energy.fiscal import SLOTS_PER_DAY, FiscalYear
from kizuna.energy.io import SYNTHETIC_MARKER, Facility, Inputs

PLANT_ANNUAL_KWH = 54_000_000
PLANT_MAX_KW = 12_000
HOURS = (np.arange(SLOTS_PER_DAY) + 0.5) / 2  # slot mid-points, hours


@dataclass(frozen=True)
class Kind:
    key: str
    ja: str
    peak_kw: tuple[float, float]
    priority: int


KINDS = {
    k.key: k
    for k in (
        Kind("office", "庁舎", (100, 450), 3),
        Kind("school", "小中学校", (60, 170), 4),
        Kind("pool", "温水プール", (200, 350), 6),
        Kind("hospital", "市民病院", (600, 2200), 1),
        Kind("streetlight", "街路灯", (30, 120), 6),
        Kind("community", "公民館", (20, 80), 5),
        Kind("water", "浄水場・下水処理場", (80, 300), 2),
        Kind("library", "図書館", (60, 150), 6),
        Kind("sports", "体育館", (80, 200), 5),
        Kind("nursery", "保育所", (15, 40), 6),
    )
}
# Facilities per town and kind (161 in all), roughly by population.
TOWNS: dict[str, tuple[str, dict[str, int]]] = {
    "加古川市": (
        "KKG",
        dict(
            office=4,
            school=40,
            pool=1,
            hospital=1,
            streetlight=6,
            community=12,
            water=5,
            library=2,
            sports=3,
            nursery=8,
        ),
    ),
    "高砂市": (
        "TKS",
        dict(
            office=3,
            school=15,
            pool=1,
            hospital=1,
            streetlight=4,
            community=6,
            water=3,
            library=1,
            sports=2,
            nursery=5,
        ),
    ),
    "稲美町": (
        "INM",
        dict(
            office=2,
            school=7,
            pool=1,
            streetlight=2,
            community=3,
            water=2,
            library=1,
            sports=1,
            nursery=2,
        ),
    ),
    "播磨町": (
        "HRM",
        dict(
            office=2, school=6, streetlight=2, community=2, water=1, library=1, sports=1, nursery=2
        ),
    ),
}


def _equinox(year: int, spring: bool) -> int:
    # Standard approximation of the equinox day, valid 1980–2099.
    base = 20.8431 if spring else 23.2488
    return int(base + 0.242194 * (year - 1980) - (year - 1980) // 4)


def _nth_monday(year: int, month: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(7 - first.weekday()) % 7 + 7 * (n - 1))


def national_holidays(year: int) -> set[date]:
    """Japan's national holidays of a calendar year, with substitute holidays (振替休日)."""
    days = {
        date(year, 1, 1),
        date(year, 2, 11),
        date(year, 2, 23),
        date(year, 4, 29),
        date(year, 5, 3),
        date(year, 5, 4),
        date(year, 5, 5),
        date(year, 8, 11),
        date(year, 11, 3),
        date(year, 11, 23),
        date(year, 3, _equinox(year, True)),
        date(year, 9, _equinox(year, False)),
        _nth_monday(year, 1, 2),
        _nth_monday(year, 7, 3),
        _nth_monday(year, 9, 3),
        _nth_monday(year, 10, 2),
    }
    for d in sorted(days):
        if d.weekday() == 6:
            sub = d + timedelta(days=1)
            while sub in days:
                sub += timedelta(days=1)
            days.add(sub)
    return days


@dataclass(frozen=True)
class Calendar:
    """Per-day features of a fiscal year."""

    fy: FiscalYear
    dates: list[date]
    weekday: np.ndarray
    off: np.ndarray  # weekend, national holiday or new-year closure (12/29–1/3)
    school_break: np.ndarray
    season: np.ndarray  # +1 mid-summer … −1 mid-winter

    @classmethod
    def of(cls, fy: FiscalYear) -> Calendar:
        dates = [fy.start + timedelta(days=i) for i in range(fy.days)]
        holidays = national_holidays(fy.year) | national_holidays(fy.year + 1)
        weekday = np.array([d.weekday() for d in dates])
        new_year = np.array(
            [(d.month, d.day) >= (12, 29) or (d.month == 1 and d.day <= 3) for d in dates]
        )
        off = (weekday >= 5) | np.array([d in holidays for d in dates]) | new_year
        school_break = np.array(
            [
                (d.month == 4 and d.day <= 6)
                or (d.month == 7 and d.day >= 21)
                or d.month == 8
                or (d.month == 12 and d.day >= 25)
                or (d.month == 1 and d.day <= 7)
                or (d.month == 3 and d.day >= 25)
                for d in dates
            ]
        )
        doy = np.array([d.timetuple().tm_yday for d in dates])
        season = np.cos(2 * np.pi * (doy - 215) / 365.25)  # peak in early August
        return cls(fy, dates, weekday, off, school_break, season)


def _window(start: float, end: float, ramp: float = 0.75) -> np.ndarray:
    """0..1 over the day's 48 slots: on between start and end hours, with soft edges."""
    up = np.clip((HOURS - start) / ramp + 0.5, 0, 1)
    down = np.clip((end - HOURS) / ramp + 0.5, 0, 1)
    return up * down


def _shape(kind: str, cal: Calendar) -> np.ndarray:
    """Relative load (days, 48), peak near 1."""
    days = len(cal.dates)
    work = ~cal.off
    cool = np.clip(cal.season, 0, None)[:, None]
    heat = np.clip(-cal.season, 0, None)[:, None]
    hvac = 1 + 0.35 * cool + 0.2 * heat
    if kind == "office":
        day = 0.25 + 0.75 * _window(8.5, 17.5) * hvac / 1.35
        return np.where(work[:, None], day, 0.22 + 0.05 * _window(9, 17))
    if kind == "school":
        in_class = work & ~cal.school_break
        day = 0.12 + 0.88 * _window(8, 16.5) * hvac / 1.35
        return np.where(
            in_class[:, None], day, np.where(work[:, None], 0.12 + 0.25 * _window(8.5, 17), 0.1)
        )
    if kind == "pool":
        open_ = (cal.weekday != 0)[:, None] & np.ones((1, SLOTS_PER_DAY), bool)
        base = 0.45 + 0.15 * heat  # water heating and filtration run round the clock
        return base + np.where(open_, 0.4 * _window(9, 21), 0)
    if kind == "hospital":
        return 0.62 + 0.1 * cool + 0.28 * _window(8, 18) * np.where(work, 1, 0.45)[:, None]
    if kind == "streetlight":
        sunset = 18.2 + 1.05 * np.cos(2 * np.pi * (np.arange(days) - 81) / 365.25)[:, None]
        sunrise = 5.9 - 0.95 * np.cos(2 * np.pi * (np.arange(days) - 81) / 365.25)[:, None]
        dark = np.clip((HOURS - sunset) * 2 + 0.5, 0, 1) + np.clip(
            (sunrise - HOURS) * 2 + 0.5, 0, 1
        )
        return 0.02 + 0.98 * np.clip(dark, 0, 1)
    if kind == "community":
        return 0.1 + 0.9 * (0.6 * _window(9, 17) + 0.4 * _window(18, 21.5)) * hvac / 1.35
    if kind == "water":
        return 0.78 + 0.12 * (_window(6, 9) + _window(18, 22)) + 0.04 * cool
    if kind == "library":
        open_ = (cal.weekday != 0) & ~np.array(
            [(d.month, d.day) >= (12, 29) or (d.month == 1 and d.day <= 3) for d in cal.dates]
        )
        return 0.15 + np.where(open_[:, None], 0.85 * _window(9.5, 19) * hvac / 1.35, 0)
    if kind == "sports":
        return 0.1 + 0.9 * _window(9, 21) * hvac / 1.35
    if kind == "nursery":
        open_ = cal.weekday <= 5
        return 0.15 + np.where(open_[:, None], 0.85 * _window(7, 19) * hvac / 1.35, 0)
    raise ValueError(kind)


def facility_list(n: int = 161) -> list[Facility]:
    """The synthetic facilities; beyond 161, the list repeats with new ids (e.g. for benches)."""
    base: list[Facility] = []
    for town, (code, kinds) in TOWNS.items():
        for key, count in kinds.items():
            for i in range(1, count + 1):
                k = KINDS[key]
                name = f"【合成】{town} {k.ja} {i:02d}"
                base.append(
                    Facility(
                        f"{code}-{key[:4].upper()}-{i:02d}", name, town, "high", key, k.priority
                    )
                )
    out = []
    for i in range(n):
        f = base[i % len(base)]
        if i >= len(base):
            rep = i // len(base) + 1
            f = Facility(
                f"{f.id}-{rep}", f"{f.name} ({rep})", f.municipality, f.voltage, f.kind, f.priority
            )
        out.append(f)
    return out


def _voltage(peak_kw: float) -> str:
    return "low" if peak_kw < 50 else "high" if peak_kw < 2000 else "extra_high"


def _plant(cal: Calendar, rng: np.random.Generator) -> np.ndarray:
    """Send-out kWh per slot: two furnaces, each ~half the output, with outages."""
    days = len(cal.dates)
    furnaces = np.full((days, 2), 1.0)
    first = cal.fy.start
    furnaces[(date(first.year, 6, 2) - first).days : (date(first.year, 7, 1) - first).days, 0] = 0
    furnaces[(date(first.year, 10, 6) - first).days : (date(first.year, 11, 3) - first).days, 1] = 0
    furnaces[(date(first.year, 9, 8) - first).days : (date(first.year, 9, 13) - first).days, :] = 0
    for day in rng.choice(days - 3, size=3, replace=False):  # unplanned trips
        furnaces[day : day + 2, rng.integers(0, 2)] = 0
    running = furnaces.sum(axis=1)[:, None] / 2
    # Turbines do better with cold cooling water; the plant uses more itself on working days.
    gross = 9_000 * running * (1 - 0.06 * cal.season[:, None])
    own_use = 1_400 * running + 600 * _window(8, 17) * (~cal.off)[:, None] * (running > 0)
    noise = rng.normal(0, 350, size=(days, SLOTS_PER_DAY)).cumsum(axis=1) * 0.3
    kw = np.clip(gross - own_use + noise * (running > 0), 0, PLANT_MAX_KW)
    kwh = kw.ravel() / 2
    kwh *= PLANT_ANNUAL_KWH / kwh.sum()
    return np.clip(np.rint(kwh * 10) * 100, 0, PLANT_MAX_KW / 2 * 1000).astype(np.int64)


def _prices(cal: Calendar, rng: np.random.Generator) -> np.ndarray:
    """JEPX-like Kansai area price, yen/kWh per slot, in price units (0.01 yen steps)."""
    spring_autumn = np.clip(-np.cos(4 * np.pi * (np.arange(len(cal.dates)) + 20) / 365.25), 0, 1)[
        :, None
    ]
    solar_dip = (2.5 + 2.5 * spring_autumn * (1 + cal.off[:, None])) * _window(9, 15.5, 2)
    evening = 4.0 * _window(16.5, 20.5, 1.5)
    morning = 1.5 * _window(7, 10, 1)
    level = 10 + 2.5 * np.abs(cal.season)[:, None] + morning + evening - solar_dip
    yen = np.clip(level * rng.lognormal(0, 0.12, size=level.shape), 0.01, None)
    return (np.rint(yen.ravel() * 100) * (PRICE_SCALE // 100)).astype(np.int64)


def synthesize(fiscal_year: int = 2025, n_facilities: int = 161, seed: int = 20250401) -> Inputs:
    """A synthetic fiscal year; the same arguments always give the same data."""
    rng = np.random.default_rng(seed)
    fy = FiscalYear(fiscal_year)
    cal = Calendar.of(fy)
    shapes = {key: _shape(key, cal) for key in KINDS}
    facilities = []
    demand = np.empty((fy.slots, n_facilities), dtype=np.int64)
    for i, f in enumerate(facility_list(n_facilities)):
        lo, hi = KINDS[f.kind].peak_kw
        if f.kind == "hospital":  # one large (Kakogawa) and one mid-sized hospital
            peak = hi if f.municipality == "加古川市" else lo
        else:
            peak = float(rng.uniform(lo, hi))
        kw = peak * shapes[f.kind] * rng.lognormal(0, 0.06, size=shapes[f.kind].shape)
        demand[:, i] = np.rint(kw.ravel() * 5) * 100  # kWh to 0.1 kWh, as meters report it
        facilities.append(
            Facility(f.id, f.name, f.municipality, _voltage(peak), f.kind, f.priority)
        )
    return Inputs(fy, facilities, demand, _plant(cal, rng), _prices(cal, rng), synthetic=True)


def _wide(
    ids: list[str] | None, fy: FiscalYear, values: np.ndarray, scale: int, decimals: int
) -> pd.DataFrame:
    """Utility style: one row per (series, day), columns 0:30 … 24:00 labelling slot ends."""
    days = [(fy.start + timedelta(days=d)).strftime("%Y/%m/%d") for d in range(fy.days)]
    ends = [f"{(k + 1) // 2}:{30 * ((k + 1) % 2):02d}" for k in range(SLOTS_PER_DAY)]
    series = (
        values.reshape(fy.days, SLOTS_PER_DAY, -1).transpose(2, 0, 1).reshape(-1, SLOTS_PER_DAY)
    )
    frame = pd.DataFrame(series / scale, columns=ends).round(decimals)
    frame.insert(0, "日付", days * (series.shape[0] // fy.days))
    if ids is not None:
        frame.insert(0, "施設ID", np.repeat(ids, fy.days))
    return frame


def write_inputs(inputs: Inputs, folder: Path) -> None:
    """Write an Inputs as the CSV files read_inputs accepts (UTF-8 with BOM, for Excel)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fy = inputs.fy
    pd.DataFrame(
        {
            "施設ID": [f.id for f in inputs.facilities],
            "施設名": [f.name for f in inputs.facilities],
            "市町": [f.municipality for f in inputs.facilities],
            "契約電圧": [
                {"low": "低圧", "high": "高圧", "extra_high": "特別高圧"}[f.voltage]
                for f in inputs.facilities
            ],
            "種別": [f.kind for f in inputs.facilities],
            "優先順位": [f.priority for f in inputs.facilities],
        }
    ).to_csv(folder / "facilities.csv", index=False, encoding="utf-8-sig")
    ids = [f.id for f in inputs.facilities]
    _wide(ids, fy, inputs.demand, 1000, 3).to_csv(
        folder / "demand.csv", index=False, encoding="utf-8-sig"
    )
    _wide(None, fy, inputs.generation[:, None], 1000, 3).to_csv(
        folder / "plant.csv", index=False, encoding="utf-8-sig"
    )
    if inputs.price is not None:
        _wide(None, fy, inputs.price[:, None], PRICE_SCALE, 4).to_csv(
            folder / "prices.csv", index=False, encoding="utf-8-sig"
        )
    (folder / SYNTHETIC_MARKER).write_text(
        "合成データです。実測値ではありません。\nSYNTHETIC DATA generated by kizuna.energy.synthetic — not measurements.\n",
        encoding="utf-8",
    )
