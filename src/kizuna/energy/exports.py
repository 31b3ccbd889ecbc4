"""CSV exports that open correctly in Excel: UTF-8 with BOM, headers Japanese / English."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kizuna.energy.schemes import ITEMS, SCHEMES

if TYPE_CHECKING:
    from kizuna.energy.service import Result

VOLTAGE_JA = {"low": "低圧", "high": "高圧", "extra_high": "特別高圧"}


def _kwh(wh: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(wh) / 1000, 3)


def _rate(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, float), np.asarray(den, float)
    return np.round(100 * np.divide(num, den, out=np.zeros_like(num), where=den > 0), 2)


def facility_table(r: Result) -> pd.DataFrame:
    m = r.monthly
    d, s = m.demand.sum(0), m.supplied.sum(0)
    frame = pd.DataFrame(
        {
            "施設ID / id": [f.id for f in r.facilities],
            "施設名 / name": [f.name for f in r.facilities],
            "市町 / town": [f.municipality for f in r.facilities],
            "電圧 / voltage": [VOLTAGE_JA[f.voltage] for f in r.facilities],
            "需要 / demand (kWh)": _kwh(d),
            "地産供給 / supplied (kWh)": _kwh(s),
            "不足購入 / shortfall (kWh)": _kwh(m.shortfall.sum(0)),
            "自給率 / self-sufficiency (%)": _rate(s, d),
            "インバランス / imbalance (kWh)": _kwh(m.imbalance.sum(0)),
        }
    )
    for key, sr in r.schemes.items():
        frame[f"{SCHEMES[key][0]} / {SCHEMES[key][1]} (円)"] = sr.facility_total.sum(0)
    return frame


def town_monthly_table(r: Result) -> pd.DataFrame:
    m = r.monthly
    d, s = r.by_town(m.demand), r.by_town(m.supplied)
    rows = []
    for mi, month in enumerate(r.inputs.fy.month_labels):
        for ti, town in enumerate(r.towns):
            rows.append(
                {
                    "月 / month": month,
                    "市町 / town": town,
                    "需要 / demand (kWh)": d[mi, ti] / 1000,
                    "地産供給 / supplied (kWh)": s[mi, ti] / 1000,
                    "不足購入 / shortfall (kWh)": (d[mi, ti] - s[mi, ti]) / 1000,
                    "余剰(按分) / surplus attributed (kWh)": r.surplus_by_town[mi, ti] / 1000,
                    "自給率 / self-sufficiency (%)": _rate(s[mi, ti], d[mi, ti]),
                    "CO2削減 / CO2 avoided (t)": r.co2_kg_by_town[mi, ti] / 1000,
                }
            )
    return pd.DataFrame(rows)


def scheme_table(r: Result) -> pd.DataFrame:
    rows = []
    base = r.schemes["status_quo"].annual_yen
    for sr in r.schemes.values():
        row: dict[str, object] = {"方式 / scheme": sr.label}
        for item, (ja, en) in ITEMS.items():
            total = 0
            if item in sr.items:
                total += int(sr.items[item].sum())
            if item in sr.plant_items:
                total += int(sr.plant_items[item].sum())
            row[f"{ja} / {en} (円)"] = total
        row["年間正味費用 / annual net cost (円)"] = sr.annual_yen
        row["現状比 / vs status quo (円)"] = sr.annual_yen - base
        row["CO2削減 / CO2 avoided (t)"] = int(sr.co2_kg.sum()) / 1000
        row["要件確認 / eligibility"] = {
            None: "—",
            True: "確認済 confirmed",
            False: "未確認 not confirmed",
        }[sr.confirmed]
        rows.append(row)
    return pd.DataFrame(rows)


def sensitivity_table(r: Result) -> pd.DataFrame:
    rows = []
    for row in r.sensitivity:
        out: dict[str, object] = {"ケース / case": row.label}
        for key, yen in row.annual_yen.items():
            out[f"{SCHEMES[key][0]} / {SCHEMES[key][1]} (円)"] = yen
        for key, yen in row.annual_yen.items():
            if key != "status_quo":
                out[f"{SCHEMES[key][0]} 現状比 / vs status quo (円)"] = (
                    yen - row.annual_yen["status_quo"]
                )
        out["地産供給 / supplied (kWh)"] = row.supplied_wh / 1000
        rows.append(out)
    return pd.DataFrame(rows)


def slot_table(r: Result) -> pd.DataFrame:
    a, fy = r.allocation, r.inputs.fy
    starts = pd.date_range(f"{fy.start}T00:00", periods=fy.slots, freq="30min")
    return pd.DataFrame(
        {
            "開始 / slot start (JST)": starts.strftime("%Y-%m-%d %H:%M"),
            "発電 / generation (kWh)": _kwh(a.generation),
            "需要 / demand (kWh)": _kwh(a.demand.sum(1)),
            "地産供給 / supplied (kWh)": _kwh(a.supplied.sum(1)),
            "不足購入 / shortfall (kWh)": _kwh(a.shortfall.sum(1)),
            "余剰売電 / surplus (kWh)": _kwh(a.surplus),
            "インバランス / imbalance (kWh)": _kwh(a.group_imbalance),
        }
    )


def write_csvs(r: Result, out_dir: Path) -> list[Path]:
    tables = {
        "schemes.csv": scheme_table(r),
        "towns_monthly.csv": town_monthly_table(r),
        "facilities.csv": facility_table(r),
        "sensitivity.csv": sensitivity_table(r),
        "slots.csv": slot_table(r),
    }
    paths = []
    for name, frame in tables.items():
        path = Path(out_dir) / name
        frame.to_csv(path, index=False, encoding="utf-8-sig")
        paths.append(path)
    return paths
