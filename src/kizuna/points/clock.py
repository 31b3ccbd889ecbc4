"""The points module's clock. Everything in it asks ``clock.now()`` at call time, so a
test can move the clock (to the next month, past a hold's expiry) in one place."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

JST = timezone(timedelta(hours=9))


def now() -> datetime:
    """The clock of the module (tests move it to the next month to settle this one)."""
    return datetime.now(UTC)


def today() -> date:
    return now().astimezone(JST).date()


def month_of(moment: datetime) -> str:
    return moment.astimezone(JST).strftime("%Y-%m")


def fiscal_year(day: date) -> int:
    return day.year if day.month >= 4 else day.year - 1
