"""Aggregated temporal representation: buckets of ``aggrPeriodDuration`` computed in SQL.

One GROUP BY (series, bucket) statement per distinct bucket origin returns count,
distinct count, sum, min, max and the sum of squares per bucket; avg, stddev (sample, n-1)
and sumsq come from those, so no instance row ever reaches Python.

On PostgreSQL, buckets that are whole UTC days of observedAt (timeAt at a UTC midnight,
a period of whole days) are summed from the daily rollups (``temporal_daily``, kept by
triggers) instead: a year of a sensor is 365 rows instead of 52,560. A last bucket cut
short by endTimeAt still comes from the instances. Sums are exact (NUMERIC) on both
paths, so a bucket has the same value whichever path computed it.

Bucket index of an instance at time t, origin o, step s:

* fixed durations (weeks, days, time): PostgreSQL ``date_bin(s, t, o)``; SQLite (times are
  integer microseconds) ``(t - o) / s`` in integer arithmetic;
* calendar durations (years, months): whole months between o and t, less one when t's
  day-and-time of month is before o's, divided by the step in months.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    Numeric,
    Text,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    type_coerce,
)

from kizuna.broker.temporal.models import daily, instances, to_micros
from kizuna.broker.temporal.params import Duration


@dataclass
class Bucket:
    start: datetime
    end: datetime
    values: dict[str, Any]


def add_months(moment: datetime, months: int) -> datetime:
    month0 = moment.month - 1 + months
    year = moment.year + month0 // 12
    month = month0 % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _bucket_index(column: Any, origin: datetime, period: Duration, dialect: str) -> Any:
    if period.months:
        return _month_index(column, origin, period.months, dialect)
    step = period.fixed
    if dialect == "postgresql":
        # The bucket's start; aggregate() turns it into the bucket number.
        return func.date_bin(literal(step), column, literal(origin))
    micros = step // timedelta(microseconds=1)
    # Integer division of integers: SQLite truncates, and t >= origin here.
    raw = type_coerce(column, BigInteger)
    return cast((raw - literal(to_micros(origin))) / literal(micros), BigInteger)


def _month_index(column: Any, origin: datetime, months: int, dialect: str) -> Any:
    origin_months = origin.year * 12 + origin.month - 1
    origin_rest = origin.strftime("%d%H%M%S") + f"{origin.microsecond:06d}"
    if dialect == "postgresql":
        utc = func.timezone("UTC", column)
        whole = (
            cast(func.extract("year", utc), Integer) * 12
            + cast(func.extract("month", utc), Integer)
            - 1
        )
        rest = func.to_char(utc, "DDHH24MISSUS")
    else:
        column = type_coerce(column, BigInteger)
        seconds = column / 1_000_000
        whole = (
            cast(func.strftime("%Y", seconds, "unixepoch"), Integer) * 12
            + cast(func.strftime("%m", seconds, "unixepoch"), Integer)
            - 1
        )
        rest = func.strftime("%d%H%M%S", seconds, "unixepoch").concat(
            func.printf("%06d", column % 1_000_000)
        )
    elapsed = whole - origin_months - case((rest < origin_rest, 1), else_=0)
    return func.floor(elapsed / literal(float(months)))


# Every method but distinctCount comes from day totals (distinct values are not additive).
ROLLUP_METHODS = frozenset({"totalCount", "sum", "avg", "min", "max", "stddev", "sumsq"})
_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Window:
    """What the daily rollups may answer: instances observed in [start, split), or from
    start on when split is None; the rest of the time window comes from the instances."""

    start: datetime
    split: datetime | None


def rollup_window(
    dialect: str,
    time_property: str,
    period: Duration,
    methods: Sequence[str],
    start: datetime | None,
    stop: datetime | None,
) -> Window | None:
    """The whole buckets of the query that are whole UTC days of observedAt, or None.

    Buckets start at ``start`` (timeAt), so they are unions of rollup days exactly when
    timeAt is a UTC midnight and the period a whole number of days; a last bucket cut
    short by endTimeAt is left to the instances.
    """
    if dialect != "postgresql" or time_property != "observedAt" or start is None:
        return None
    if (
        period.months
        or not period.fixed
        or period.fixed % _DAY
        or to_micros(start) % 86_400_000_000
    ):
        return None
    if not set(methods) <= ROLLUP_METHODS:
        return None
    if stop is None:
        return Window(start, None)
    whole = (stop - start) // period.fixed
    return Window(start, start + whole * period.fixed) if whole else None


def aggregate(
    conn: Connection,
    origins: dict[int, datetime],
    time_col: Any,
    conditions: Sequence[ColumnElement[bool]],
    period: Duration,
    methods: Sequence[str],
    end_of_range: datetime | None,
    window: Window | None = None,
) -> dict[int, list[Bucket]]:
    """Buckets per series; ``origins`` gives each series' first bucket start.

    With a ``window`` (all origins are then its start), the whole-day part comes from the
    daily rollups and only the remainder from the instances; both give the same numbers.
    """
    dialect = conn.dialect.name
    by_origin: dict[datetime, list[int]] = {}
    for pk, origin in origins.items():
        by_origin.setdefault(origin, []).append(pk)
    out: dict[int, list[Bucket]] = {}
    for origin, pks in by_origin.items():
        statements = []
        raw_conditions = list(conditions)
        if window is not None:
            statements.append(_rollup_statement(pks, origin, period, methods, window))
            if window.split is None or (end_of_range is not None and window.split >= end_of_range):
                raw_conditions = []
            else:
                raw_conditions.append(time_col >= window.split)
        if raw_conditions:
            statements.append(
                _raw_statement(
                    pks, origin, time_col, raw_conditions, period, methods, end_of_range, dialect
                )
            )
        for stmt in statements:
            result = conn.execute(stmt)
            keys = list(result.keys())
            read = _reader(keys, methods)
            i_pk, i_bucket = keys.index("series_pk"), keys.index("bucket")
            i_last = keys.index("last_time") if "last_time" in keys else None
            # A year of daily buckets over 100 series shares 366 bounds: work them out once.
            spans: dict[Any, tuple[datetime, datetime]] = {}
            for row in result.all():
                index = row[i_bucket]
                span = spans.get(index)
                if span is None:
                    last = row[i_last] if i_last is not None else None
                    span = _span(index, origin, period, end_of_range or last)
                    if not period.empty:
                        spans[index] = span
                out.setdefault(row[i_pk], []).append(Bucket(span[0], span[1], read(row)))
    return out


def _span(
    index: Any, origin: datetime, period: Duration, end_of_range: datetime | None
) -> tuple[datetime, datetime]:
    """A bucket's start and end from its index (a bucket start on PostgreSQL's date_bin)."""
    if period.empty:
        return origin, end_of_range or origin
    if isinstance(index, datetime):
        number = round((index - origin) / period.fixed)
    else:
        number = int(index or 0)
    # A bucket that would end after the last moment datetime can hold ends there.
    if period.months:
        start = add_months(origin, number * period.months)
        try:
            return start, add_months(origin, (number + 1) * period.months)
        except ValueError:
            return start, _END_OF_TIME
    start = origin + number * period.fixed
    try:
        return start, start + period.fixed
    except OverflowError:
        return start, _END_OF_TIME


_END_OF_TIME = datetime.max.replace(tzinfo=UTC)


def _raw_statement(
    pks: list[int],
    origin: datetime,
    time_col: Any,
    conditions: Sequence[ColumnElement[bool]],
    period: Duration,
    methods: Sequence[str],
    end_of_range: datetime | None,
    dialect: str,
) -> Any:
    whole_range = period.empty
    index = literal_column("0") if whole_range else _bucket_index(time_col, origin, period, dialect)
    bucket = index.label("bucket")
    group = [instances.c.series_pk] if whole_range else [instances.c.series_pk, bucket]
    value = instances.c.num_value
    # PostgreSQL sums exactly in NUMERIC, as the daily rollups do, so the order rows are
    # added in never shows in a result.
    exact = cast(value, Numeric) if dialect == "postgresql" else value
    # Only what the methods need: avg/min/max/sum stay index-only scans.
    wanted = set(methods)
    columns = [instances.c.series_pk, bucket]
    if "totalCount" in wanted:
        columns.append(func.count().label("n"))
    if wanted & {"avg", "stddev"}:
        columns.append(func.count(value).label("n_num"))
    if "distinctCount" in wanted:
        distinct = func.count(func.distinct(cast(instances.c.instance, Text)))
        columns.append(distinct.label("n_distinct"))
    if wanted & {"sum", "avg", "stddev"}:
        columns.append(func.sum(exact).label("total"))
    if "min" in wanted:
        columns.append(func.min(value).label("low"))
    if "max" in wanted:
        columns.append(func.max(value).label("high"))
    if wanted & {"sumsq", "stddev"}:
        columns.append(func.sum(exact * exact).label("squares"))
    if whole_range and end_of_range is None:
        columns.append(func.max(time_col).label("last_time"))
    return (
        select(*columns)
        .where(instances.c.series_pk.in_(pks), *conditions)
        .group_by(*group)
        .order_by(*group)
    )


def _rollup_statement(
    pks: list[int], origin: datetime, period: Duration, methods: Sequence[str], window: Window
) -> Any:
    bucket = func.date_bin(literal(period.fixed), daily.c.day, literal(origin)).label("bucket")
    wanted = set(methods)
    columns = [daily.c.series_pk, bucket]
    if "totalCount" in wanted:
        columns.append(func.sum(daily.c.n).label("n"))
    if wanted & {"avg", "stddev"}:
        columns.append(func.sum(daily.c.n_num).label("n_num"))
    if wanted & {"sum", "avg", "stddev"}:
        columns.append(func.sum(daily.c.total).label("total"))
    if "min" in wanted:
        columns.append(func.min(daily.c.low).label("low"))
    if "max" in wanted:
        columns.append(func.max(daily.c.high).label("high"))
    if wanted & {"sumsq", "stddev"}:
        columns.append(func.sum(daily.c.squares).label("squares"))
    conditions = [daily.c.series_pk.in_(pks), daily.c.day >= window.start]
    if window.split is not None:
        conditions.append(daily.c.day < window.split)
    group = [daily.c.series_pk, bucket]
    return select(*columns).where(*conditions).group_by(*group).order_by(*group)


def _reader(keys: list[str], methods: Sequence[str]) -> Callable[[Any], dict[str, Any]]:
    """Turns a result row (by position: ~100,000 rows for 100 series over a year) into the
    methods' values."""
    at = {key: i for i, key in enumerate(keys)}
    i_n, i_num, i_distinct, i_total, i_low, i_high, i_squares = (
        at.get(k) for k in ("n", "n_num", "n_distinct", "total", "low", "high", "squares")
    )

    def number(row: Any, i: int | None) -> float | None:
        value = row[i] if i is not None else None
        return float(value) if value is not None else None

    def read(row: Any) -> dict[str, Any]:
        n_num = int(row[i_num] or 0) if i_num is not None else 0
        total = number(row, i_total)
        squares = number(row, i_squares)
        out: dict[str, Any] = {}
        for method in methods:
            if method == "totalCount":
                out[method] = int(row[i_n])
            elif method == "distinctCount":
                out[method] = int(row[i_distinct])
            elif method == "sum":
                out[method] = total
            elif method == "avg":
                out[method] = total / n_num if n_num and total is not None else None
            elif method == "min":
                out[method] = number(row, i_low)
            elif method == "max":
                out[method] = number(row, i_high)
            elif method == "sumsq":
                out[method] = squares
            elif method == "stddev":
                if n_num >= 2 and total is not None and squares is not None:
                    variance = (squares - total * total / n_num) / (n_num - 1)
                    out[method] = math.sqrt(max(variance, 0.0))
                else:
                    out[method] = None
        return out

    return read
