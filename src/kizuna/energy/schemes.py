"""Costs of the four supply schemes, seen from the towns as one group (組合 + 構成市町).

Money that only moves inside the group (the towns' company selling to their own facilities,
the plant's sale to a retailer that sells it straight back) cancels out; what remains is what
the group pays to, or receives from, outside parties. Each cost item is computed exactly, in
units of 1e-7 yen (Wh × 1/10,000 yen/kWh), for each facility and month, then rounded half up
(half away from zero for income) to whole yen. Totals are sums of those rounded figures, as on
a bill. docs/energy.md gives each scheme's items as formulas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kizuna.energy.allocation import Allocation
from kizuna.energy.config import PRICE_SCALE, Config

UNITS_PER_YEN = 1000 * PRICE_SCALE  # Wh × (1/10,000 yen per kWh) = 1e-7 yen

SCHEMES: dict[str, tuple[str, str, str | None]] = {
    # key: (Japanese, English, eligibility flag the user must confirm)
    "status_quo": ("現状", "Status quo", None),
    "company": ("地域新電力", "Regional power company", "company_licensed"),
    "self_wheeling": ("自己託送", "Self-wheeling", "self_wheeling_closely_related"),
    "retailer": ("小売電気事業者経由", "Via a retailer", "retailer_offer"),
}
ITEMS: dict[str, tuple[str, str]] = {
    "retail_energy": ("電力量料金", "Retail energy"),
    "market_purchase": ("市場調達", "Market purchase"),
    "network": ("託送料金", "Network charge"),
    "surcharge": ("再エネ賦課金", "Renewable surcharge"),
    "retailer_margin": ("小売マージン", "Retailer margin"),
    "operating": ("事業運営費", "Operating cost"),
    "imbalance": ("インバランス", "Imbalance"),
    "basic": ("基本料金", "Basic charge"),
    "plant_sales": ("売電収入", "Plant sales"),
}


def round_half_up(units: np.ndarray | int, per: int = UNITS_PER_YEN) -> np.ndarray:
    """Exact integer division by ``per``, halves rounded away from zero."""
    units = np.asarray(units, dtype=np.int64)
    return np.sign(units) * ((np.abs(units) + per // 2) // per)


@dataclass(frozen=True)
class Monthly:
    """Per facility-month (12, N) and plant-month (12,) energy in Wh."""

    demand: np.ndarray
    supplied: np.ndarray
    shortfall: np.ndarray
    imbalance: np.ndarray  # each facility's own miss, before netting
    generation: np.ndarray
    surplus: np.ndarray
    group_imbalance: np.ndarray  # netted in the balancing group: what is settled

    @classmethod
    def of(cls, a: Allocation, month_starts: np.ndarray) -> Monthly:
        def by_month(x: np.ndarray) -> np.ndarray:
            return np.add.reduceat(x, month_starts, axis=0)

        return cls(
            by_month(a.demand),
            by_month(a.supplied),
            by_month(a.shortfall),
            by_month(a.imbalance),
            by_month(a.generation),
            by_month(a.surplus),
            by_month(a.group_imbalance),
        )


@dataclass(frozen=True)
class SchemeResult:
    key: str
    items: dict[str, np.ndarray]  # yen per facility-month (12, N)
    plant_items: dict[str, np.ndarray]  # yen per month (12,), not tied to one facility
    co2_kg: np.ndarray  # kg-CO2 avoided per facility-month (12, N)
    confirmed: bool | None  # None: the scheme has no condition to confirm

    @property
    def label(self) -> str:
        ja, en, _ = SCHEMES[self.key]
        return f"{ja} / {en}"

    @property
    def facility_total(self) -> np.ndarray:
        return sum(self.items.values(), np.zeros_like(self.co2_kg))

    @property
    def plant_total(self) -> np.ndarray:
        return sum(self.plant_items.values(), np.zeros(self.co2_kg.shape[0], np.int64))

    @property
    def annual_yen(self) -> int:
        return int(self.facility_total.sum() + self.plant_total.sum())


def compare(
    a: Allocation,
    monthly: Monthly,
    month_starts: np.ndarray,
    voltages: list[str],
    cfg: Config,
    price: np.ndarray | None,
) -> dict[str, SchemeResult]:
    """All four schemes for one allocation. ``price``: market price units per slot, or None."""
    months = len(month_starts)
    market = price if price is not None else np.full(len(a.generation), cfg.market_price, np.int64)
    sale = np.full_like(market, cfg.plant_sale_price) if cfg.plant_sale_price else market

    def per_voltage(table: dict[str, int]) -> np.ndarray:
        return np.array([table[v] for v in voltages], dtype=np.int64)[None, :]

    def by_month(x: np.ndarray) -> np.ndarray:
        return np.add.reduceat(x, month_starts, axis=0)

    # Contract kW: the year's highest 30-minute demand as kW, rounded up (実量制-like).
    contract_kw = -(-a.demand.max(axis=0) // 500)[None, :] if len(a.demand) else 0
    basic_retail = contract_kw * per_voltage(cfg.retail_basic) * 1000
    basic_network = contract_kw * per_voltage(cfg.network_basic) * 1000
    basic_capacity = contract_kw * per_voltage(cfg.company_capacity) * 1000
    basic_retail = np.repeat(basic_retail, months, axis=0)
    basic_network = np.repeat(basic_network, months, axis=0)
    basic_capacity = np.repeat(basic_capacity, months, axis=0)

    d, s, f = monthly.demand, monthly.supplied, monthly.shortfall
    network = d * per_voltage(cfg.network)
    surcharge_all = d * cfg.surcharge
    imbalance = monthly.group_imbalance * cfg.imbalance_cost
    sell_all = -by_month(a.generation * sale)
    sell_surplus = -by_month(a.surplus * sale)
    market_shortfall = by_month(a.shortfall * (market + cfg.company_adder)[:, None])
    co2 = round_half_up(
        s * cfg.emission.t_co2_per_kwh.numerator, cfg.emission.t_co2_per_kwh.denominator
    )
    fixed = np.full(months, 1, np.int64) * UNITS_PER_YEN

    unit_items: dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {
        "status_quo": (
            {
                "retail_energy": d * per_voltage(cfg.retail_energy),
                "network": network,
                "surcharge": surcharge_all,
                "basic": basic_retail,
            },
            {"plant_sales": sell_all},
        ),
        "company": (
            {
                "market_purchase": market_shortfall,
                "network": network,
                "surcharge": surcharge_all,
                "operating": d * cfg.company_operating,
                "basic": basic_network + basic_capacity,
            },
            {
                "plant_sales": sell_surplus,
                "imbalance": imbalance,
                "operating": fixed * cfg.company_fixed_yen_month,
            },
        ),
        "self_wheeling": (
            {
                "retail_energy": f * per_voltage(cfg.retail_energy),
                "network": network,
                "surcharge": f * cfg.surcharge,  # self-wheeled kWh bear no surcharge
                "basic": basic_retail + basic_network,  # backup contract + wheeling contract
            },
            {
                "plant_sales": sell_surplus,
                "imbalance": imbalance,
                "operating": fixed * cfg.self_wheeling_fixed_yen_month,
            },
        ),
        "retailer": (
            {
                "retail_energy": f * per_voltage(cfg.retail_energy),
                "retailer_margin": s * cfg.retailer_margin,
                "network": network,
                "surcharge": surcharge_all,
                "basic": basic_retail,
            },
            {"plant_sales": sell_surplus},
        ),
    }
    results = {}
    for key, (fac_units, plant_units) in unit_items.items():
        flag = SCHEMES[key][2]
        results[key] = SchemeResult(
            key,
            {k: round_half_up(v) for k, v in fac_units.items()},
            {k: round_half_up(v) for k, v in plant_units.items()},
            np.zeros_like(co2) if key == "status_quo" else co2,
            None if flag is None else bool(cfg.eligibility.get(flag, False)),
        )
    return results
