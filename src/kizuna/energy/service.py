"""The energy module's front door: what other modules (CLI, web, demo, broker publishing) call.

result = simulate(Path("data/fy2025"), load_config(Path("my.toml")))
entities = monthly_town_summaries(result)      # NGSI-LD, normalized, no @context
html = report_fragment(result)                 # embeddable in a web page
write_outputs(result, Path("out"))             # report.html/.pdf, charts, CSV for Excel
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from kizuna.energy.allocation import Allocation, allocate
from kizuna.energy.config import Config, ConfigError, load_config
from kizuna.energy.io import Facility, InputError, Inputs, Problem, read_inputs
from kizuna.energy.schemes import SCHEMES, Monthly, SchemeResult, compare, round_half_up
from kizuna.energy.synthetic import synthesize, write_inputs

__all__ = [
    "ConfigError",
    "InputError",
    "Inputs",
    "Problem",
    "Result",
    "SensitivityRow",
    "load_config",
    "monthly_town_summaries",
    "read_inputs",
    "report_fragment",
    "report_html",
    "simulate",
    "simulate_inputs",
    "synthesize",
    "write_inputs",
    "write_outputs",
]

ENTITY_TYPE = "EnergyLocalConsumptionMonthly"
TOWN_IDS = {"高砂市": "Takasago", "加古川市": "Kakogawa", "稲美町": "Inami", "播磨町": "Harima"}
Progress = Callable[[str], None]


@dataclass(frozen=True)
class SensitivityRow:
    key: str  # "base", "price-20", "price+20", "surplus-20", "surplus+20"
    label: str
    annual_yen: dict[str, int]  # by scheme
    supplied_wh: int
    surplus_wh: int


@dataclass
class Result:
    inputs: Inputs
    config: Config
    allocation: Allocation
    monthly: Monthly
    schemes: dict[str, SchemeResult]
    sensitivity: list[SensitivityRow]
    towns: list[str]
    town_of: np.ndarray  # town index of each facility

    @property
    def facilities(self) -> list[Facility]:
        return self.inputs.facilities

    def by_town(self, per_facility: np.ndarray) -> np.ndarray:
        """Sum the facility axis (last) into towns: (..., N) → (..., towns)."""
        onehot = np.zeros((len(self.town_of), len(self.towns)), dtype=np.int64)
        onehot[np.arange(len(self.town_of)), self.town_of] = 1
        return per_facility @ onehot

    @property
    def surplus_by_town(self) -> np.ndarray:
        """Monthly surplus Wh attributed to towns by their plant shares (12, towns)."""
        weights = np.array([self.config.town_shares.get(t, 0) for t in self.towns], np.int64)
        return np.stack([_apportion(int(s), weights) for s in self.monthly.surplus])

    @property
    def co2_kg_by_town(self) -> np.ndarray:
        return self.by_town(self.schemes["company"].co2_kg)


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Split an integer total by weights, largest remainder first (ties: first listed)."""
    if weights.sum() == 0:
        return np.zeros_like(weights)
    share, rem = np.divmod(total * weights, weights.sum())
    left = total - int(share.sum())
    share[np.argsort(-rem, kind="stable")[:left]] += 1
    return share


def _priority_order(facilities: list[Facility]) -> np.ndarray:
    keyed = sorted(
        range(len(facilities)),
        key=lambda i: (facilities[i].priority is None, facilities[i].priority or 0, i),
    )
    return np.array(keyed, dtype=np.int64)


def _allocate(inputs: Inputs, cfg: Config, generation: np.ndarray) -> tuple[Allocation, Monthly]:
    order = _priority_order(inputs.facilities)
    a = allocate(inputs.demand, generation, cfg.method, cfg.cap_share, order)
    return a, Monthly.of(a, inputs.fy.month_starts)


def _compare(
    inputs: Inputs, cfg: Config, a: Allocation, monthly: Monthly, price: np.ndarray | None
) -> dict[str, SchemeResult]:
    voltages = [f.voltage for f in inputs.facilities]
    return compare(a, monthly, inputs.fy.month_starts, voltages, cfg, price)


def _scaled(x: np.ndarray | None, factor: Fraction) -> np.ndarray | None:
    return None if x is None else round_half_up(x * factor.numerator, factor.denominator)


def _row(key: str, label: str, schemes: dict[str, SchemeResult], a: Allocation) -> SensitivityRow:
    yen = {k: s.annual_yen for k, s in schemes.items()}
    return SensitivityRow(key, label, yen, int(a.supplied.sum()), int(a.surplus.sum()))


def simulate_inputs(
    inputs: Inputs, config: Config | None = None, progress: Progress | None = None
) -> Result:
    """Allocate every slot, cost the four schemes, and run the ±20% sensitivities."""
    cfg = config or load_config()
    step = progress or (lambda _: None)
    step("allocate")
    a, monthly = _allocate(inputs, cfg, inputs.generation)
    schemes = _compare(inputs, cfg, a, monthly, inputs.price)
    rows = [_row("base", "基準 / Base", schemes, a)]
    for pct in (-20, 20):
        factor = Fraction(100 + pct, 100)
        step(f"sensitivity price {pct:+d}%")
        # Prices do not change who gets what: only the costs are recomputed.
        priced = _compare(
            inputs, cfg.scaled_prices(factor), a, monthly, _scaled(inputs.price, factor)
        )
        rows.append(
            _row(f"price{pct:+d}", f"電力価格 {pct:+d}% / Energy prices {pct:+d}%", priced, a)
        )
    for pct in (-20, 20):
        factor = Fraction(100 + pct, 100)
        step(f"sensitivity surplus {pct:+d}%")
        gen = _scaled(inputs.generation, factor)
        assert gen is not None
        a2, monthly2 = _allocate(inputs, cfg, gen)
        varied = _compare(inputs, cfg, a2, monthly2, inputs.price)
        rows.append(
            _row(f"surplus{pct:+d}", f"余剰電力 {pct:+d}% / Plant surplus {pct:+d}%", varied, a2)
        )
    towns = list(cfg.town_shares)
    towns += sorted({f.municipality for f in inputs.facilities} - set(towns))
    town_of = np.array([towns.index(f.municipality) for f in inputs.facilities], dtype=np.int64)
    return Result(inputs, cfg, a, monthly, schemes, rows, towns, town_of)


def simulate(
    inputs_dir: Path, config: Config | None = None, progress: Progress | None = None
) -> Result:
    """Read and validate the CSV folder, then simulate. Raises InputError listing every problem."""
    cfg = config or load_config()
    (progress or (lambda _: None))("read")
    return simulate_inputs(read_inputs(Path(inputs_dir), cfg.fiscal_year), cfg, progress)


def _kwh(wh: int) -> float:
    return round(wh / 1000, 3)


def _prop(value: Any, unit: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "Property", "value": value}
    if unit:
        out["unitCode"] = unit
    return out


def monthly_town_summaries(result: Result) -> list[dict[str, Any]]:
    """One NGSI-LD entity per town and month (normalized form, no @context).

    Units are UN/CEFACT codes: KWH kilowatt hour, P1 percent, TNE tonne.
    """
    m = result.monthly
    demand, supplied = result.by_town(m.demand), result.by_town(m.supplied)
    shortfall, imbalance = result.by_town(m.shortfall), result.by_town(m.imbalance)
    surplus, co2 = result.surplus_by_town, result.co2_kg_by_town
    ef = result.config.emission
    entities = []
    for mi, month in enumerate(result.inputs.fy.month_labels):
        for ti, town in enumerate(result.towns):
            town_id = TOWN_IDS.get(town, quote(town, safe=""))
            d, s = int(demand[mi, ti]), int(supplied[mi, ti])
            entities.append(
                {
                    "id": f"urn:ngsi-ld:{ENTITY_TYPE}:{town_id}:{month}",
                    "type": ENTITY_TYPE,
                    "municipality": _prop(town),
                    "month": _prop(month),
                    "demand": _prop(_kwh(d), "KWH"),
                    "suppliedFromPlant": _prop(_kwh(s), "KWH"),
                    "shortfall": _prop(_kwh(int(shortfall[mi, ti])), "KWH"),
                    "surplus": _prop(_kwh(int(surplus[mi, ti])), "KWH"),
                    "imbalance": _prop(_kwh(int(imbalance[mi, ti])), "KWH"),
                    "selfSufficiency": _prop(round(100 * s / d, 2) if d else 0.0, "P1"),
                    "co2Avoided": _prop(round(int(co2[mi, ti]) / 1000, 3), "TNE"),
                    "emissionFactor": {
                        **_prop(float(ef.t_co2_per_kwh)),
                        "fiscalYear": _prop(ef.fiscal_year),
                    },
                    "allocationMethod": _prop(result.config.method),
                    "synthetic": _prop(result.inputs.synthetic),
                }
            )
    return entities


def scheme_labels() -> dict[str, str]:
    return {k: f"{ja} / {en}" for k, (ja, en, _) in SCHEMES.items()}


def report_html(result: Result) -> str:
    """The full report as a standalone HTML document (charts embedded as PNG)."""
    from kizuna.energy.report import render_document

    return render_document(result)


def report_fragment(result: Result) -> str:
    """The report body, for embedding in a page of the web UI."""
    from kizuna.energy.report import render_fragment

    return render_fragment(result)


def write_outputs(result: Result, out_dir: Path, pdf: bool = True, svg: bool = False) -> list[Path]:
    """report.html, report.pdf, chart PNGs (and SVGs) and Excel-ready CSVs into ``out_dir``."""
    from kizuna.energy.exports import write_csvs
    from kizuna.energy.report import write_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_report(result, out_dir, pdf=pdf, svg=svg) + write_csvs(result, out_dir)
