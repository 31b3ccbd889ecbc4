"""Vectorised slot-by-slot sharing of the plant's output among the facilities, in integer Wh.

Rules (the test oracle implements the same rules one slot and one facility at a time):

* Each facility's *eligible* demand is its demand, or for ``capped`` ⌊demand × cap_share⌋.
* When the plant's output G covers the eligible total E, every facility gets its eligible demand
  and the rest is surplus.
* Otherwise, ``pro_rata`` (and ``capped``) gives each facility ⌊G × eᵢ / E⌋ and hands the
  remaining Wh (fewer than the number of facilities) one each to the largest remainders, ties
  to the facility listed first — Hamilton's method, so the whole of G is used and no facility
  gets more than it asked for; ``priority`` fills facilities in priority order.

Supplied + surplus = generation and supplied + shortfall = demand hold exactly in every slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from kizuna.energy.fiscal import SLOTS_PER_DAY


def eligible_demand(demand: np.ndarray, method: str, cap_share: Fraction) -> np.ndarray:
    if method != "capped":
        return demand
    return demand * cap_share.numerator // cap_share.denominator


def _pro_rata(eligible: np.ndarray, generation: np.ndarray) -> np.ndarray:
    total = eligible.sum(axis=1)
    supplied = eligible.copy()
    short = np.flatnonzero(generation < total)  # slots where the plant cannot cover everyone
    if len(short):
        e, g, tot = eligible[short], generation[short, None], total[short, None]
        share, remainder = np.divmod(g * e, tot)
        left = (g[:, 0] - share.sum(axis=1))[:, None]
        # Stable sort on −remainder: equal remainders keep facility order.
        order = np.argsort(-remainder, axis=1, kind="stable")
        bonus = np.zeros_like(share)
        ranks = np.arange(e.shape[1])[None, :]
        np.put_along_axis(bonus, order, (ranks < left).astype(share.dtype), axis=1)
        supplied[short] = share + bonus
    return supplied


def _priority(eligible: np.ndarray, generation: np.ndarray, order: np.ndarray) -> np.ndarray:
    ranked = eligible[:, order]
    before = np.cumsum(ranked, axis=1) - ranked  # what higher-priority facilities took
    granted = np.clip(generation[:, None] - before, 0, ranked)
    supplied = np.empty_like(granted)
    supplied[:, order] = granted
    return supplied


@dataclass(frozen=True)
class Allocation:
    demand: np.ndarray  # int64 Wh (slots, facilities)
    generation: np.ndarray  # int64 Wh (slots,)
    supplied: np.ndarray  # int64 Wh (slots, facilities)
    surplus: np.ndarray = field(init=False)  # int64 Wh (slots,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "surplus", self.generation - self.supplied.sum(axis=1))

    @property
    def shortfall(self) -> np.ndarray:
        return self.demand - self.supplied

    @property
    def imbalance(self) -> np.ndarray:
        """|supplied − plan| per slot and facility, the plan being the same slot a day before.

        The first day has no earlier day to plan from and counts as planned exactly.
        """
        return _day_ahead_miss(self.supplied)

    @property
    def group_imbalance(self) -> np.ndarray:
        """The same for the group's total, as the balancing group settles it (netted), (slots,)."""
        return _day_ahead_miss(self.supplied.sum(axis=1))


def _day_ahead_miss(x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    out[SLOTS_PER_DAY:] = np.abs(x[SLOTS_PER_DAY:] - x[:-SLOTS_PER_DAY])
    return out


def allocate(
    demand: np.ndarray,
    generation: np.ndarray,
    method: str = "pro_rata",
    cap_share: Fraction = Fraction(1),
    order: np.ndarray | None = None,
) -> Allocation:
    """Share ``generation`` (Wh per slot) among the columns of ``demand`` (Wh per slot).

    ``order`` lists facility indices from first to last priority (``priority`` method only).
    """
    demand = np.asarray(demand, dtype=np.int64)
    generation = np.asarray(generation, dtype=np.int64)
    if demand.ndim != 2 or generation.shape != demand.shape[:1]:
        raise ValueError("demand must be (slots, facilities) and generation (slots,)")
    if (demand < 0).any() or (generation < 0).any():
        raise ValueError("energy values must not be negative")
    eligible = eligible_demand(demand, method, cap_share)
    # G × eᵢ must fit in int64: true for anything below ~3 TWh per slot.
    if demand.size and int(generation.max(initial=0)) * int(eligible.max()) >= 2**63:
        raise ValueError("values too large for exact integer allocation")
    if method == "priority":
        order = np.arange(demand.shape[1]) if order is None else np.asarray(order)
        supplied = _priority(eligible, generation, order)
    elif method in ("pro_rata", "capped"):
        supplied = _pro_rata(eligible, generation)
    else:
        raise ValueError(f"unknown allocation method {method!r}")
    return Allocation(demand, generation, supplied)
