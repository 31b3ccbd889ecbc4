"""Slow, obviously correct reference: one slot, one facility, one month at a time, in Python ints.

It implements the rules stated in kizuna.energy.allocation and kizuna.energy.schemes
independently of numpy, and the vectorised engine must agree with it exactly.
"""

from __future__ import annotations

from kizuna.energy.config import Config

UNITS_PER_YEN = 10_000_000


def round_half_up(units: int, per: int = UNITS_PER_YEN) -> int:
    sign = -1 if units < 0 else 1
    return sign * ((abs(units) + per // 2) // per)


def allocate_slot(
    demand: list[int], g: int, method: str, cap: tuple[int, int], order: list[int]
) -> list[int]:
    n = len(demand)
    eligible = [d * cap[0] // cap[1] for d in demand] if method == "capped" else list(demand)
    if method == "priority":
        supplied = [0] * n
        remaining = g
        for i in order:
            give = min(eligible[i], remaining)
            supplied[i] = give
            remaining -= give
        return supplied
    total = sum(eligible)
    if g >= total:
        return eligible
    supplied = [g * e // total for e in eligible]
    left = g - sum(supplied)
    ranked = sorted(range(n), key=lambda i: (-((g * eligible[i]) % total), i))
    for i in ranked[:left]:
        supplied[i] += 1
    return supplied


def allocate(
    demand: list[list[int]],
    generation: list[int],
    method: str,
    cap: tuple[int, int],
    order: list[int],
) -> list[list[int]]:
    return [
        allocate_slot(demand[t], generation[t], method, cap, order) for t in range(len(generation))
    ]


def costs(
    demand: list[list[int]],
    generation: list[int],
    supplied: list[list[int]],
    month_starts: list[int],
    voltages: list[str],
    cfg: Config,
    price: list[int] | None,
) -> dict[str, dict[str, list[list[int]] | list[int]]]:
    """Yen per scheme and item: facility items as [month][facility], "plant:" items as [month]."""
    T, N = len(generation), len(voltages)
    bounds = list(month_starts) + [T]
    market = price if price is not None else [cfg.market_price] * T
    sale = [cfg.plant_sale_price] * T if cfg.plant_sale_price else market
    contract_kw = [-(-max(demand[t][i] for t in range(T)) // 500) for i in range(N)]
    total_sup = [sum(supplied[t]) for t in range(T)]
    surplus = [generation[t] - total_sup[t] for t in range(T)]
    group_imb = [abs(total_sup[t] - total_sup[t - 48]) if t >= 48 else 0 for t in range(T)]
    out: dict[str, dict] = {k: {} for k in ("status_quo", "company", "self_wheeling", "retailer")}

    def fac_item(scheme: str, item: str, units_of) -> None:
        out[scheme][item] = [
            [round_half_up(units_of(m, i)) for i in range(N)] for m in range(len(month_starts))
        ]

    def plant_item(scheme: str, item: str, units_of) -> None:
        out[scheme][f"plant:{item}"] = [
            round_half_up(units_of(m)) for m in range(len(month_starts))
        ]

    def slots(m: int) -> range:
        return range(bounds[m], bounds[m + 1])

    def d(m, i):
        return sum(demand[t][i] for t in slots(m))

    def s(m, i):
        return sum(supplied[t][i] for t in slots(m))

    def f(m, i):
        return d(m, i) - s(m, i)

    v = voltages
    fac_item("status_quo", "retail_energy", lambda m, i: d(m, i) * cfg.retail_energy[v[i]])
    fac_item("status_quo", "network", lambda m, i: d(m, i) * cfg.network[v[i]])
    fac_item("status_quo", "surcharge", lambda m, i: d(m, i) * cfg.surcharge)
    fac_item("status_quo", "basic", lambda m, i: contract_kw[i] * cfg.retail_basic[v[i]] * 1000)
    plant_item(
        "status_quo", "plant_sales", lambda m: -sum(generation[t] * sale[t] for t in slots(m))
    )

    fac_item(
        "company",
        "market_purchase",
        lambda m, i: sum(
            (demand[t][i] - supplied[t][i]) * (market[t] + cfg.company_adder) for t in slots(m)
        ),
    )
    fac_item("company", "network", lambda m, i: d(m, i) * cfg.network[v[i]])
    fac_item("company", "surcharge", lambda m, i: d(m, i) * cfg.surcharge)
    fac_item("company", "operating", lambda m, i: d(m, i) * cfg.company_operating)
    fac_item(
        "company",
        "basic",
        lambda m, i: contract_kw[i] * (cfg.network_basic[v[i]] + cfg.company_capacity[v[i]]) * 1000,
    )
    plant_item("company", "plant_sales", lambda m: -sum(surplus[t] * sale[t] for t in slots(m)))
    plant_item(
        "company", "imbalance", lambda m: sum(group_imb[t] for t in slots(m)) * cfg.imbalance_cost
    )
    plant_item("company", "operating", lambda m: cfg.company_fixed_yen_month * UNITS_PER_YEN)

    fac_item("self_wheeling", "retail_energy", lambda m, i: f(m, i) * cfg.retail_energy[v[i]])
    fac_item("self_wheeling", "network", lambda m, i: d(m, i) * cfg.network[v[i]])
    fac_item("self_wheeling", "surcharge", lambda m, i: f(m, i) * cfg.surcharge)
    fac_item(
        "self_wheeling",
        "basic",
        lambda m, i: contract_kw[i] * (cfg.retail_basic[v[i]] + cfg.network_basic[v[i]]) * 1000,
    )
    plant_item(
        "self_wheeling", "plant_sales", lambda m: -sum(surplus[t] * sale[t] for t in slots(m))
    )
    plant_item(
        "self_wheeling",
        "imbalance",
        lambda m: sum(group_imb[t] for t in slots(m)) * cfg.imbalance_cost,
    )
    plant_item(
        "self_wheeling", "operating", lambda m: cfg.self_wheeling_fixed_yen_month * UNITS_PER_YEN
    )

    fac_item("retailer", "retail_energy", lambda m, i: f(m, i) * cfg.retail_energy[v[i]])
    fac_item("retailer", "retailer_margin", lambda m, i: s(m, i) * cfg.retailer_margin)
    fac_item("retailer", "network", lambda m, i: d(m, i) * cfg.network[v[i]])
    fac_item("retailer", "surcharge", lambda m, i: d(m, i) * cfg.surcharge)
    fac_item("retailer", "basic", lambda m, i: contract_kw[i] * cfg.retail_basic[v[i]] * 1000)
    plant_item("retailer", "plant_sales", lambda m: -sum(surplus[t] * sale[t] for t in slots(m)))
    return out
