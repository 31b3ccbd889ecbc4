"""Energy: one fiscal year × 200 facilities × 4 schemes, from CSV to results.

Prints the time of the real path (read + validate the CSVs, allocate all 17,520 slots, cost
the four schemes) and its ratio to the per-slot Python oracle of tests/energy/oracle.py run in
the same process. The oracle is run on a subset of slots and extrapolated linearly (its cost is
per slot), which the output says. Also prints the full simulate() with the ±20% sensitivities.

    .venv/bin/python bench/energy_bench.py [--facilities 200] [--oracle-days 7]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.energy.oracle

from tests.energy import oracle  # noqa: E402

from kizuna.energy import service  # noqa: E402
from kizuna.energy.allocation import allocate  # noqa: E402
from kizuna.energy.config import load_config  # noqa: E402
from kizuna.energy.io import read_inputs  # noqa: E402
from kizuna.energy.schemes import Monthly, compare  # noqa: E402


def best_of(n: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(n):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--facilities", type=int, default=200)
    parser.add_argument("--oracle-days", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cfg = load_config()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        service.write_inputs(service.synthesize(n_facilities=args.facilities), folder)
        size = sum(p.stat().st_size for p in folder.glob("*.csv")) / 1e6

        def engine():
            inputs = read_inputs(folder)
            a = allocate(inputs.demand, inputs.generation, cfg.method, cfg.cap_share)
            starts = inputs.fy.month_starts
            voltages = [f.voltage for f in inputs.facilities]
            return inputs, compare(a, Monthly.of(a, starts), starts, voltages, cfg, inputs.price)

        t_engine, (inputs, _) = best_of(args.repeat, engine)
        t_read, _ = best_of(args.repeat, lambda: read_inputs(folder))
        t_full, _ = best_of(args.repeat, lambda: service.simulate(folder, cfg))

    def compute():
        a = allocate(inputs.demand, inputs.generation, cfg.method, cfg.cap_share)
        starts = inputs.fy.month_starts
        voltages = [f.voltage for f in inputs.facilities]
        return compare(a, Monthly.of(a, starts), starts, voltages, cfg, inputs.price)

    t_compute, _ = best_of(args.repeat, compute)

    slots = inputs.fy.slots
    n = args.oracle_days * 48
    demand = inputs.demand[:n].tolist()
    generation = inputs.generation[:n].tolist()
    voltages = [f.voltage for f in inputs.facilities]
    start = time.perf_counter()
    supplied = oracle.allocate(demand, generation, cfg.method, (1, 1), list(range(len(voltages))))
    oracle.costs(demand, generation, supplied, [0], voltages, cfg, inputs.price[:n].tolist())
    t_oracle = (time.perf_counter() - start) * slots / n
    assert np.array_equal(
        np.array(supplied), allocate(inputs.demand[:n], inputs.generation[:n]).supplied
    )

    print(f"energy: {args.facilities} facilities × {slots:,} slots × 4 schemes, CSV {size:.1f} MB")
    print(
        f"  CSV → results (read, validate, allocate, 4 schemes): {t_engine:.3f} s  (goal < 2 s; best of {args.repeat})"
    )
    print(f"    of which reading + validating the CSVs:             {t_read:.3f} s")
    print(f"  full simulate() incl. 4 sensitivity cases:           {t_full:.3f} s")
    print(
        f"  per-slot Python oracle, {args.oracle_days} days timed, extrapolated to the year: {t_oracle:.1f} s"
    )
    print(
        f"  ratio oracle / engine, same work (allocate + 4 schemes, no CSV): {t_oracle / t_compute:.0f}×  (engine {t_compute:.3f} s)"
    )
    print(
        f"  ratio oracle / engine incl. reading the CSVs:                  {t_oracle / t_engine:.0f}×"
    )


if __name__ == "__main__":
    main()
