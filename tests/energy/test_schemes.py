"""Hand-computed cases: one high-voltage facility, one day, 1 kWh demand and 0.6 kWh from the
plant in every slot, so 48 kWh demand, 28.8 kWh supplied, 19.2 kWh bought, no surplus."""

from __future__ import annotations

import numpy as np
import pytest

from kizuna.energy.allocation import allocate
from kizuna.energy.config import ConfigError, load_config
from kizuna.energy.schemes import Monthly, compare, round_half_up

ROUND = {
    "tariff": {"retail_energy_yen_per_kwh": {"low": 17, "high": 14, "extra_high": 13}},
    "market": {"price_yen_per_kwh": 10.0},
    "schemes": {
        "company": {"operating_fixed_yen_per_month": 1000},
        "self_wheeling": {"operating_fixed_yen_per_month": 500},
    },
}


def run(demand, generation, overrides=ROUND):
    cfg = load_config(overrides=overrides)
    a = allocate(np.array(demand), np.array(generation))
    starts = np.array([0])
    return compare(a, Monthly.of(a, starts), starts, ["high"], cfg, None)


@pytest.fixture(scope="module")
def day():
    return run([[1000]] * 48, [600] * 48)


def totals(result):
    out: dict[str, int] = {}
    for part in (result.items, result.plant_items):
        for k, v in part.items():
            out[k] = out.get(k, 0) + int(v.sum())
    return out


def test_status_quo(day):
    # 48 kWh × 14 = 672; × 4.05 = 194.4; × 3.98 = 191.04; 2 kW × 1,800; plant sells 28.8 kWh × 10.
    assert totals(day["status_quo"]) == {
        "retail_energy": 672,
        "network": 194,
        "surcharge": 191,
        "basic": 3600,
        "plant_sales": -288,
    }
    assert day["status_quo"].annual_yen == 4369
    assert int(day["status_quo"].co2_kg.sum()) == 0


def test_company(day):
    # 19.2 kWh × (10 + 0.5) = 201.6; 48 × 0.3 = 14.4; 2 kW × (630 + 550); fixed 1,000.
    assert totals(day["company"]) == {
        "market_purchase": 202,
        "network": 194,
        "surcharge": 191,
        "operating": 1014,
        "basic": 2360,
        "plant_sales": 0,
        "imbalance": 0,
    }
    assert day["company"].annual_yen == 3961
    assert day["company"].confirmed is False  # never assumed
    # 28.8 kWh × 0.000423 t = 12.1824 kg → 12 kg.
    assert int(day["company"].co2_kg.sum()) == 12


def test_self_wheeling_avoids_the_surcharge(day):
    # 19.2 × 14 = 268.8; surcharge only on 19.2 kWh bought: 76.416; 2 kW × (1,800 + 630); 500.
    assert totals(day["self_wheeling"]) == {
        "retail_energy": 269,
        "network": 194,
        "surcharge": 76,
        "basic": 4860,
        "plant_sales": 0,
        "imbalance": 0,
        "operating": 500,
    }
    assert day["self_wheeling"].annual_yen == 5899


def test_retailer(day):
    # 19.2 × 14 = 268.8; margin 28.8 × 2 = 57.6.
    assert totals(day["retailer"]) == {
        "retail_energy": 269,
        "retailer_margin": 58,
        "network": 194,
        "surcharge": 191,
        "basic": 3600,
        "plant_sales": 0,
    }
    assert day["retailer"].annual_yen == 4312


def test_surplus_and_imbalance_priced():
    # Two days: the plant covers 1 kWh of 1 kWh on day 1, gives 3 kWh (2 surplus) on day 2
    # in slot 0 only. The day-ahead plan misses by 0 kWh; slot 0 of day 2 supplies 1 as planned.
    demand = [[1000]] * 96
    generation = [1000] * 48 + [3000] + [0] * 47
    result = run(demand, generation)
    # Surplus 2 kWh × 10 yen; group imbalance: day 2 slots 1..47 miss 1 kWh each = 47 kWh × 4.
    assert totals(result["company"])["plant_sales"] == -20
    assert totals(result["company"])["imbalance"] == 188


def test_eligibility_confirmed_by_the_user():
    cfg = {**ROUND, "eligibility": {"self_wheeling_closely_related": True}}
    result = run([[1000]] * 48, [600] * 48, cfg)
    assert result["self_wheeling"].confirmed is True
    assert result["retailer"].confirmed is False
    assert result["status_quo"].confirmed is None


def test_round_half_up():
    assert round_half_up(np.array([5, 15, -5, -15, 4, -4]), 10).tolist() == [1, 2, -1, -2, 0, 0]


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="allocation.method"):
        load_config(overrides={"allocation": {"method": "random"}})
    with pytest.raises(ConfigError, match="four decimals"):
        load_config(overrides={"tariff": {"renewable_surcharge_yen_per_kwh": 3.98001}})
    with pytest.raises(ConfigError, match="cap_share"):
        load_config(overrides={"allocation": {"cap_share": 1.5}})
