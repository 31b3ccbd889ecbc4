"""Temporal query parameters: timerel / timeAt / endTimeAt / timeproperty / lastN, the
temporal representation options, aggrMethods and ISO 8601 durations."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kizuna.broker.context import TermMap
from kizuna.broker.http import split_list, whole_number
from kizuna.broker.ngsild import check_name, parse_datetime
from kizuna.broker.projection import Projection, parse_projection
from kizuna.problems import bad_request, invalid_request

TIMERELS = ("before", "after", "between")
TIME_PROPERTIES = ("observedAt", "createdAt", "modifiedAt", "deletedAt")
AGGR_METHODS = ("totalCount", "distinctCount", "sum", "avg", "min", "max", "stddev", "sumsq")
FORMATS = ("normalized", "temporalValues", "aggregatedValues")
_FORMAT_ALIASES = {"simplified": "temporalValues", "keyValues": "temporalValues"}
_OPTIONS = {"sysAttrs", "normalized", "temporalValues", "aggregatedValues", "simplified"}
_DURATION = re.compile(
    r"^P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?"
    r"(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)


@dataclass(frozen=True)
class TemporalQuery:
    timerel: str | None = None
    time_at: datetime | None = None
    end_time_at: datetime | None = None
    timeproperty: str = "observedAt"
    explicit_property: bool = False
    last_n: int | None = None


@dataclass(frozen=True)
class Duration:
    """An ISO 8601 duration: calendar months plus a fixed part."""

    months: int
    fixed: timedelta

    @property
    def empty(self) -> bool:
        return self.months == 0 and not self.fixed


@dataclass(frozen=True)
class TemporalRendering:
    format: str = "normalized"
    sys_attrs: bool = False
    attrs: frozenset[str] | None = None  # expanded names
    dataset_ids: frozenset[str] | None = None  # "@none": the default instance
    pick: Projection | None = None
    omit: Projection | None = None
    aggr_methods: tuple[str, ...] = ()
    aggr_period: Duration | None = None


def parse_duration(raw: str) -> Duration:
    match = _DURATION.match(raw or "")
    if match is None:
        raise bad_request(f"aggrPeriodDuration {raw!r} is not an ISO 8601 duration")
    years, months, weeks, days, hours, minutes, seconds = match.groups()
    total_months = int(years or 0) * 12 + int(months or 0)
    try:
        fixed = timedelta(
            weeks=int(weeks or 0),
            days=int(days or 0),
            hours=int(hours or 0),
            minutes=int(minutes or 0),
            seconds=float(seconds or 0),
        )
    except OverflowError:
        fixed = None
    # Periods longer than the calendar (year 9999) cannot bucket anything.
    if fixed is None or total_months > _MAX_PERIOD_MONTHS or fixed > _MAX_PERIOD:
        raise bad_request(f"aggrPeriodDuration {raw!r} is longer than 10,000 years")
    return Duration(months=total_months, fixed=fixed)


_MAX_PERIOD_MONTHS = 12 * 10_000
_MAX_PERIOD = timedelta(days=366 * 10_000)


def temporal_query(params: Mapping[str, Any], *, required: bool = False) -> TemporalQuery:
    """timerel and friends from URL parameters or a temporalQ object."""
    timerel = params.get("timerel") or None
    raw_at = params.get("timeAt") or None
    raw_end = params.get("endTimeAt") or None
    prop = params.get("timeproperty") or None
    if prop is not None and prop not in TIME_PROPERTIES:
        raise bad_request(f"timeproperty must be one of {', '.join(TIME_PROPERTIES)}")
    if timerel is None:
        if required:
            raise bad_request("A temporal query needs timerel and timeAt")
        if raw_at is not None or raw_end is not None:
            raise bad_request("timeAt and endTimeAt need timerel")
        time_at = end_time_at = None
    else:
        if timerel not in TIMERELS:
            raise bad_request(f"timerel must be before, after or between, got {timerel!r}")
        if raw_at is None:
            raise bad_request(f"timerel={timerel} needs timeAt")
        time_at = parse_datetime(raw_at, "timeAt")
        end_time_at = None
        if timerel == "between":
            if raw_end is None:
                raise bad_request("timerel=between needs endTimeAt")
            end_time_at = parse_datetime(raw_end, "endTimeAt")
            if end_time_at <= time_at:
                raise bad_request("endTimeAt must be after timeAt")
        elif raw_end is not None:
            raise bad_request("endTimeAt is only for timerel=between")
    raw_last_n = params.get("lastN")
    last_n = (
        None
        if raw_last_n is None or raw_last_n == ""
        else whole_number(str(raw_last_n), "lastN", 0, positive=True)
    )
    return TemporalQuery(
        timerel=timerel,
        time_at=time_at,
        end_time_at=end_time_at,
        timeproperty=prop or "observedAt",
        explicit_property=prop is not None,
        last_n=last_n,
    )


def temporal_rendering(params: Mapping[str, str], tm: TermMap) -> TemporalRendering:
    options = set(split_list(params.get("options"), "options") or [])
    unknown = options - _OPTIONS
    if unknown:
        raise invalid_request(f"Unknown options: {', '.join(sorted(unknown))}")
    raw_format = params.get("format")
    if raw_format:
        chosen = _FORMAT_ALIASES.get(raw_format, raw_format)
        if chosen not in FORMATS:
            raise invalid_request(f"Unknown format {raw_format!r}")
    else:
        named = {_FORMAT_ALIASES.get(o, o) for o in options} & set(FORMATS)
        named.discard("normalized")
        if len(named) > 1:
            raise bad_request("Conflicting representation options: " + ", ".join(sorted(named)))
        chosen = named.pop() if named else "normalized"
    attrs = split_list(params.get("attrs"), "attrs")
    pick_raw, omit_raw = params.get("pick"), params.get("omit")
    if attrs is not None and (pick_raw is not None or omit_raw is not None):
        raise bad_request("attrs cannot be combined with pick or omit")
    for name in attrs or []:
        check_name(name)
    pick = parse_projection(pick_raw, "pick") if pick_raw is not None else None
    omit = parse_projection(omit_raw, "omit") if omit_raw is not None else None
    if pick is not None and omit is not None and set(pick.members) & set(omit.members):
        raise bad_request("The same member is in pick and omit")
    methods: tuple[str, ...] = ()
    period = None
    if chosen == "aggregatedValues":
        raw_methods = split_list(params.get("aggrMethods"), "aggrMethods")
        if not raw_methods:
            raise bad_request("The aggregated representation needs aggrMethods")
        for method in raw_methods:
            if method not in AGGR_METHODS:
                raise bad_request(f"Unknown aggrMethod {method!r}; use {', '.join(AGGR_METHODS)}")
        methods = tuple(dict.fromkeys(raw_methods))
        raw_period = params.get("aggrPeriodDuration")
        period = parse_duration(raw_period) if raw_period else Duration(0, timedelta())
        if period.months and period.fixed:
            raise bad_request(
                "aggrPeriodDuration mixing years/months with weeks/days/time is not supported"
            )
    else:
        # Checked even when unused, so a typo never passes silently.
        for method in split_list(params.get("aggrMethods"), "aggrMethods") or []:
            if method not in AGGR_METHODS:
                raise bad_request(f"Unknown aggrMethod {method!r}")
        if params.get("aggrPeriodDuration"):
            parse_duration(params["aggrPeriodDuration"])
    datasets = split_list(params.get("datasetId"), "datasetId")
    return TemporalRendering(
        format=chosen,
        sys_attrs="sysAttrs" in options,
        attrs=frozenset(tm.expand(a) for a in attrs) if attrs is not None else None,
        dataset_ids=frozenset(datasets) if datasets is not None else None,
        pick=pick,
        omit=omit,
        aggr_methods=methods,
        aggr_period=period,
    )
