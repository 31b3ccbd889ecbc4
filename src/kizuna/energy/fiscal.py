"""The fiscal year as 30-minute slots: April 1 00:00 JST to March 31 24:00 JST.

Japan has no daylight saving time, so every day has exactly 48 slots: a fiscal year has
17,520 slots, or 17,568 when it contains February 29 (e.g. FY2023, April 2023 – March 2024).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import cached_property

import numpy as np

JST = timezone(timedelta(hours=9), "JST")
SLOTS_PER_DAY = 48


@dataclass(frozen=True)
class FiscalYear:
    year: int  # FY2025 runs from 2025-04-01 to 2026-03-31

    @property
    def start(self) -> date:
        return date(self.year, 4, 1)

    @property
    def days(self) -> int:
        return (date(self.year + 1, 4, 1) - self.start).days

    @property
    def slots(self) -> int:
        return self.days * SLOTS_PER_DAY

    @cached_property
    def month_starts(self) -> np.ndarray:
        """First slot of each of the 12 months, April first."""
        firsts = [date(self.year + (m < 4), m, 1) for m in (*range(4, 13), 1, 2, 3)]
        return np.array([(d - self.start).days * SLOTS_PER_DAY for d in firsts], dtype=np.int64)

    @cached_property
    def month_labels(self) -> list[str]:
        return [f"{self.year + (m < 4)}-{m:02d}" for m in (*range(4, 13), 1, 2, 3)]

    def slot_start(self, slot: int) -> datetime:
        start = datetime(self.year, 4, 1, tzinfo=JST)
        return start + timedelta(minutes=30 * slot)

    def slot_label(self, slot: int) -> str:
        begin = self.slot_start(slot)
        return f"{begin:%Y-%m-%d %H:%M}–{begin + timedelta(minutes=30):%H:%M}"

    @classmethod
    def containing(cls, day: date) -> FiscalYear:
        return cls(day.year if day.month >= 4 else day.year - 1)
