"""Scheme parameters: the documented default TOML, overlaid by a user's file.

Prices are kept as exact integers in units of 1/10,000 yen per kWh (``PRICE_SCALE``), so that
Wh × price is an exact integer of 1e-7 yen and every yen figure is reproducible to the unit.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

PRICE_SCALE = 10_000  # price units per yen/kWh
VOLTAGES = ("low", "high", "extra_high")
METHODS = ("pro_rata", "priority", "capped")


class ConfigError(ValueError):
    """A config value is missing or out of range; the message names the key."""


def price_units(value: Any, key: str) -> int:
    """Yen (per kWh or per kW-month) → integer units of 1/10,000 yen, refusing finer values."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    # repr() of a float is its shortest exact decimal, so 7.85 stays 7.85.
    scaled = Decimal(repr(value) if isinstance(value, float) else str(value)) * PRICE_SCALE
    if scaled != scaled.to_integral_value():
        raise ConfigError(f"{key}: at most four decimals are supported, got {value!r}")
    return int(scaled)


@dataclass(frozen=True)
class EmissionFactor:
    t_co2_per_kwh: Fraction
    fiscal_year: str
    source: str


@dataclass(frozen=True)
class Config:
    fiscal_year: int  # 0 = from the data
    method: str
    cap_share: Fraction
    emission: EmissionFactor
    network: dict[str, int]  # price units by voltage
    surcharge: int
    retail_energy: dict[str, int]
    retail_basic: dict[str, int]  # units per kW-month
    network_basic: dict[str, int]
    market_price: int
    plant_sale_price: int  # 0 = market price
    imbalance_cost: int
    company_adder: int
    company_capacity: dict[str, int]  # units per kW-month
    company_operating: int
    company_fixed_yen_month: int
    self_wheeling_fixed_yen_month: int
    retailer_margin: int
    eligibility: dict[str, bool]
    town_shares: dict[str, int]

    def scaled_prices(self, factor: Fraction) -> Config:
        """The same config with every energy price (not network charges or surcharge) × factor."""

        def s(units: int) -> int:
            return round(units * factor)

        return replace(
            self,
            retail_energy={v: s(p) for v, p in self.retail_energy.items()},
            market_price=s(self.market_price),
            plant_sale_price=s(self.plant_sale_price),
        )


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _merge(base[key], value)
        else:
            out[key] = value
    return out


def default_config_text() -> str:
    return resources.files("kizuna.energy").joinpath("default_config.toml").read_text("utf-8")


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Default config, overlaid by the TOML file at ``path`` and then by ``overrides``."""
    raw = tomllib.loads(default_config_text())
    if path is not None:
        try:
            raw = _merge(raw, tomllib.loads(Path(path).read_text("utf-8")))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    if overrides:
        raw = _merge(raw, overrides)
    return parse_config(raw)


def _by_voltage(raw: dict[str, Any], key: str) -> dict[str, int]:
    table = raw.get(key)
    if not isinstance(table, dict) or set(table) != set(VOLTAGES):
        raise ConfigError(f"{key}: needs exactly the keys {', '.join(VOLTAGES)}")
    return {v: price_units(table[v], f"{key}.{v}") for v in VOLTAGES}


def _non_negative(value: int, key: str) -> int:
    if value < 0:
        raise ConfigError(f"{key}: must not be negative")
    return value


def parse_config(raw: dict[str, Any]) -> Config:
    try:
        alloc, ef, tariff = raw["allocation"], raw["grid_emission_factor"], raw["tariff"]
        market, schemes, towns = raw["market"], raw["schemes"], raw["towns"]
        method = alloc["method"]
        if method not in METHODS:
            raise ConfigError(f"allocation.method: one of {', '.join(METHODS)}, got {method!r}")
        cap = Fraction(Decimal(repr(alloc["cap_share"])))
        if not 0 < cap <= 1:
            raise ConfigError("allocation.cap_share: must be in (0, 1]")
        factor = Fraction(Decimal(repr(ef["t_co2_per_kwh"])))
        shares = {str(t): int(w) for t, w in towns["plant_share"].items()}
        if not shares or any(w < 0 for w in shares.values()) or sum(shares.values()) == 0:
            raise ConfigError("towns.plant_share: needs non-negative weights, not all zero")
        fixed = {
            "schemes.company.operating_fixed_yen_per_month": schemes["company"][
                "operating_fixed_yen_per_month"
            ],
            "schemes.self_wheeling.operating_fixed_yen_per_month": schemes["self_wheeling"][
                "operating_fixed_yen_per_month"
            ],
        }
        for key, value in fixed.items():
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{key}: a whole number of yen ≥ 0")
        units = {
            key: _non_negative(price_units(value, key), key)
            for key, value in {
                "tariff.renewable_surcharge_yen_per_kwh": tariff["renewable_surcharge_yen_per_kwh"],
                "market.price_yen_per_kwh": market["price_yen_per_kwh"],
                "market.plant_sale_price_yen_per_kwh": market["plant_sale_price_yen_per_kwh"],
                "imbalance.unit_cost_yen_per_kwh": raw["imbalance"]["unit_cost_yen_per_kwh"],
                "company.procurement_adder": schemes["company"]["procurement_adder_yen_per_kwh"],
                "company.operating": schemes["company"]["operating_yen_per_kwh"],
                "retailer.margin": schemes["retailer"]["margin_yen_per_kwh"],
            }.items()
        }
        return Config(
            fiscal_year=int(raw.get("fiscal_year", 0)),
            method=method,
            cap_share=cap,
            emission=EmissionFactor(factor, str(ef["fiscal_year"]), str(ef["source"])),
            network=_by_voltage(tariff, "network_yen_per_kwh"),
            surcharge=units["tariff.renewable_surcharge_yen_per_kwh"],
            retail_energy=_by_voltage(tariff, "retail_energy_yen_per_kwh"),
            retail_basic=_by_voltage(tariff, "retail_basic_yen_per_kw_month"),
            network_basic=_by_voltage(tariff, "network_basic_yen_per_kw_month"),
            market_price=units["market.price_yen_per_kwh"],
            plant_sale_price=units["market.plant_sale_price_yen_per_kwh"],
            imbalance_cost=units["imbalance.unit_cost_yen_per_kwh"],
            company_adder=units["company.procurement_adder"],
            company_capacity=_by_voltage(schemes["company"], "capacity_yen_per_kw_month"),
            company_operating=units["company.operating"],
            company_fixed_yen_month=fixed["schemes.company.operating_fixed_yen_per_month"],
            self_wheeling_fixed_yen_month=fixed[
                "schemes.self_wheeling.operating_fixed_yen_per_month"
            ],
            retailer_margin=units["retailer.margin"],
            eligibility={str(k): bool(v) for k, v in raw["eligibility"].items()},
            town_shares=shares,
        )
    except KeyError as exc:
        raise ConfigError(f"missing config key {exc.args[0]!r}") from exc
