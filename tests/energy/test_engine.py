"""The vectorised engine against the oracle, energy balance, and hand-computed cases."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kizuna.energy.allocation import allocate
from kizuna.energy.config import load_config
from kizuna.energy.schemes import Monthly, compare

from . import oracle

METHODS = ("pro_rata", "priority", "capped")
VOLTAGES = ("low", "high", "extra_high")


@st.composite
def cases(draw):
    n = draw(st.integers(1, 6))
    slots = 48 * draw(st.integers(1, 3))
    # Small value sets make ties and exact fits (G == E) common.
    value = st.one_of(st.integers(0, 4000), st.sampled_from([0, 1, 2, 3, 100, 999]))
    demand = draw(st.lists(st.lists(value, min_size=n, max_size=n), min_size=slots, max_size=slots))
    generation = draw(
        st.lists(st.integers(0, 12000) | st.sampled_from([0, 1, 7]), min_size=slots, max_size=slots)
    )
    method = draw(st.sampled_from(METHODS))
    cap = draw(st.sampled_from([Fraction(7, 10), Fraction(1, 3), Fraction(1)]))
    order = draw(st.permutations(range(n)))
    voltages = draw(st.lists(st.sampled_from(VOLTAGES), min_size=n, max_size=n))
    price = draw(st.none() | st.lists(st.integers(1, 400_000), min_size=slots, max_size=slots))
    months = sorted(draw(st.sets(st.integers(1, slots - 1), max_size=3)) | {0})
    return demand, generation, method, cap, list(order), voltages, price, months


@settings(max_examples=300, deadline=None)
@given(cases())
def test_engine_matches_oracle_exactly(case):
    demand, generation, method, cap, order, voltages, price, months = case
    cfg = load_config(overrides={"allocation": {"method": method}})
    a = allocate(np.array(demand), np.array(generation), method, cap, np.array(order))
    expected = oracle.allocate(demand, generation, method, (cap.numerator, cap.denominator), order)
    assert a.supplied.tolist() == expected

    # Balance in every slot.
    assert (a.supplied.sum(axis=1) + a.surplus == a.generation).all()
    assert (a.supplied + a.shortfall == a.demand).all()
    assert (a.surplus >= 0).all() and (a.shortfall >= 0).all()

    starts = np.array(months)
    got = compare(
        a, Monthly.of(a, starts), starts, voltages, cfg, None if price is None else np.array(price)
    )
    want = oracle.costs(demand, generation, expected, months, voltages, cfg, price)
    for key, result in got.items():
        produced = {k: v.tolist() for k, v in result.items.items()}
        produced |= {f"plant:{k}": v.tolist() for k, v in result.plant_items.items()}
        assert produced == want[key], key


def test_pro_rata_hand_case():
    # 10 Wh for demands 1, 2, 3 and 6 (total 12): shares 10/12 × d = 0.83, 1.67, 2.5, 5;
    # floors 0, 1, 2, 5 (8 Wh); 2 Wh left go to the largest remainders 0.83 and 0.67.
    a = allocate(np.array([[1, 2, 3, 6]]), np.array([10]))
    assert a.supplied.tolist() == [[1, 2, 2, 5]]
    assert a.surplus.tolist() == [0]


def test_priority_and_capped_hand_cases():
    a = allocate(np.array([[5, 5, 5]]), np.array([8]), "priority", order=np.array([2, 0, 1]))
    assert a.supplied.tolist() == [[3, 0, 5]]
    capped = allocate(np.array([[10, 20]]), np.array([100]), "capped", Fraction(7, 10))
    assert capped.supplied.tolist() == [[7, 14]] and capped.surplus.tolist() == [79]
