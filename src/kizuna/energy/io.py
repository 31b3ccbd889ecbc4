"""Reading the input folder: facilities, 30-minute demand, plant send-out, optional prices.

Files come as utilities hand them out — UTF-8 (with or without BOM) or Shift_JIS (cp932, as
Excel writes it), Japanese or English headers, optional preamble lines above the header, either
one row per slot ("long") or one row per day with 48 slot columns ("wide"). docs/energy.md
lists the accepted columns. Every problem found is reported with its file and line number (as
a text editor or Excel counts them: the first line of the file is 1), and nothing is loaded
unless the whole folder is clean.

Energy is held as integer Wh: kWh values are rounded to the nearest Wh once, on reading, so
every later sum is exact.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

from kizuna.energy.config import PRICE_SCALE, VOLTAGES
from kizuna.energy.fiscal import SLOTS_PER_DAY, FiscalYear

SYNTHETIC_MARKER = "SYNTHETIC.txt"
SYNTHETIC_PREFIX = "【合成】"  # synthesize() starts every facility name with it
MAX_PROBLEMS = 200

ALIASES: dict[str, tuple[str, ...]] = {
    "facility_id": (
        "facility_id",
        "facility",
        "id",
        "施設id",
        "施設コード",
        "施設番号",
        "供給地点特定番号",
    ),
    "name": ("name", "facility_name", "施設名", "施設名称", "名称"),
    "municipality": (
        "municipality",
        "town",
        "city",
        "市町",
        "市町名",
        "自治体",
        "自治体名",
        "市町村",
    ),
    "voltage": ("voltage", "voltage_class", "電圧", "契約電圧", "電圧区分"),
    "kind": ("kind", "type", "種別", "施設種別", "用途"),
    "priority": ("priority", "優先順位", "優先度"),
    "datetime": ("datetime", "timestamp", "日時", "計量日時"),
    "date": ("date", "日付", "年月日", "計量日"),
    "time": ("time", "時刻", "時間", "時間帯", "計量時刻"),
    "slot": ("slot", "時限", "コマ"),
    "value": (
        "kwh",
        "value",
        "energy",
        "電力量",
        "使用電力量",
        "使用量",
        "送電量",
        "送電電力量",
        "発電量",
        "逆潮流量",
        "price",
        "yen_per_kwh",
        "価格",
        "単価",
        "約定価格",
        "システムプライス",
        "エリアプライス",
        "エリアプライス関西",
    ),
}
VOLTAGE_WORDS = {
    "low": "low",
    "lv": "low",
    "低圧": "low",
    "high": "high",
    "hv": "high",
    "高圧": "high",
    "extra_high": "extra_high",
    "extra-high": "extra_high",
    "ehv": "extra_high",
    "特別高圧": "extra_high",
    "特高": "extra_high",
}
_UNIT_SUFFIX = re.compile(r"[\(\[（【].*?[\)\]）】]$")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::00)?(?:\s*[-~〜～].*)?$")


@dataclass(frozen=True)
class Facility:
    id: str
    name: str
    municipality: str
    voltage: str  # one of config.VOLTAGES
    kind: str = ""
    priority: int | None = None


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    message: str
    message_ja: str = ""  # the same in Japanese, for the web page

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"

    def japanese(self) -> str:
        """「facilities.csv 3行目: …」 as the web page shows it."""
        where = f"{self.file} {self.line}行目" if self.line else self.file
        return f"{where}: {self.message_ja or self.message}"


class InputError(ValueError):
    """The input folder has problems; ``problems`` lists them with file and line."""

    def __init__(self, problems: list[Problem], total: int | None = None) -> None:
        self.problems = problems
        self.total = total if total is not None else len(problems)
        shown = "\n".join(f"  {p}" for p in problems[:30])
        more = self.total - min(len(problems), 30)
        tail = f"\n  … and {more} more" if more > 0 else ""
        super().__init__(f"{self.total} input problem(s):\n{shown}{tail}")


@dataclass
class Inputs:
    fy: FiscalYear
    facilities: list[Facility]
    demand: np.ndarray  # int64 Wh, shape (slots, facilities)
    generation: np.ndarray  # int64 Wh, shape (slots,)
    price: np.ndarray | None  # int64 units of 1/10,000 yen/kWh per slot, or None
    synthetic: bool = False


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.total = 0

    def add(self, file: str, line: int | None, message: str, ja: str = "") -> None:
        self.total += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(file, line, message, ja))

    def raise_if_any(self) -> None:
        if self.total:
            raise InputError(self.problems, self.total)


def decode(raw: bytes) -> str:
    """UTF-8 with BOM, UTF-8, else Shift_JIS (cp932, Microsoft's superset that Excel writes)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp932")


def _norm(header: str) -> str:
    h = unicodedata.normalize("NFKC", str(header)).strip().lower().replace(" ", "")
    return _UNIT_SUFFIX.sub("", h)


def _role(header: str) -> str | None:
    h = _norm(header)
    for role, names in ALIASES.items():
        if h in names:
            return role
    return None


def _slot_of_header(header: str) -> tuple[str, int] | None:
    """A wide-format slot column: ('time', minutes) for "0:30"/"00:00-00:30", ('n', 1..48)."""
    h = _norm(header)
    if m := _TIME.match(h):
        return "time", int(m[1]) * 60 + int(m[2])
    if h.isdigit() and 1 <= int(h) <= SLOTS_PER_DAY:
        return "n", int(h)
    return None


def _parse_date(text: str) -> int | None:
    """Date → proleptic ordinal; accepts 2024-04-01, 2024/4/1, 20240401."""
    t = unicodedata.normalize("NFKC", text).strip().replace("/", "-").replace(".", "-")
    try:
        if "-" in t:
            y, m, d = (int(x) for x in t.split("-"))
        elif len(t) == 8 and t.isdigit():
            y, m, d = int(t[:4]), int(t[4:6]), int(t[6:])
        else:
            return None
        return date(y, m, d).toordinal()
    except ValueError:
        return None


def _parse_time(text: str) -> int | None:
    m = _TIME.match(unicodedata.normalize("NFKC", text).strip())
    if not m or int(m[2]) >= 60 or int(m[1]) * 60 + int(m[2]) > 1440:
        return None
    return int(m[1]) * 60 + int(m[2])


def _parse_datetime(text: str) -> tuple[int, int] | None:
    parts = unicodedata.normalize("NFKC", text).strip().replace("T", " ").split()
    if len(parts) != 2:
        return None
    day, minute = _parse_date(parts[0]), _parse_time(parts[1])
    return None if day is None or minute is None else (day, minute)


def _by_unique(series: pd.Series, parse) -> tuple[np.ndarray, list]:
    """Parse each distinct string once (a year has 365 dates and 48 times)."""
    codes, uniques = pd.factorize(series.fillna(""), sort=False)
    return codes, [parse(u) for u in uniques]


class _Table:
    """One CSV file: its header located, columns given roles, rows numbered as file lines."""

    def __init__(self, path: Path, key_roles: tuple[str, ...]) -> None:
        self.name = path.name
        text = decode(path.read_bytes())
        lines = text.splitlines()
        header_at = next(
            (
                i
                for i, line in enumerate(lines[:50])
                if any(_role(c) in key_roles for c in next(csv.reader([line]), []))
            ),
            None,
        )
        if header_at is None:
            raise InputError(
                [
                    Problem(
                        self.name,
                        None,
                        f"no header row with a column for {' / '.join(key_roles)}",
                        f"見出し行（{' / '.join(ALIASES[r][-1] for r in key_roles)} の列）が見つかりません",
                    )
                ]
            )
        headers = next(csv.reader([lines[header_at]]))
        self.roles: dict[str, str] = {}
        self.slot_columns: dict[str, tuple[str, int]] = {}
        for h in headers:
            role = _role(h)
            if role and role not in self.roles:
                self.roles[role] = h
            elif (sc := _slot_of_header(h)) is not None:
                self.slot_columns[h] = sc
        text_cols = [self.roles[r] for r in self.roles if r != "value"]
        frame = pd.read_csv(
            StringIO(text),
            skiprows=header_at,
            dtype=dict.fromkeys(text_cols, str),
            skip_blank_lines=False,
            thousands=",",
            keep_default_na=False,
            na_values=[""],
        )
        self.first_line = header_at + 2  # 1-based line of the first data row
        blank = frame.isna().all(axis=1).to_numpy()
        self.frame = frame[~blank].reset_index(drop=True)
        self.lines = np.flatnonzero(~blank) + self.first_line

    def column(self, role: str) -> pd.Series | None:
        header = self.roles.get(role)
        return None if header is None else self.frame[header]

    def numbers(self, header: str, out: _Collector) -> np.ndarray:
        """A value column as float; blanks stay NaN, anything non-numeric is reported."""
        col = self.frame[header]
        if pd.api.types.is_numeric_dtype(col):
            return col.to_numpy(dtype=np.float64)
        values = pd.to_numeric(col.str.replace(",", ""), errors="coerce").to_numpy(np.float64)
        for i in np.flatnonzero(np.isnan(values) & col.notna().to_numpy())[:MAX_PROBLEMS]:
            out.add(
                self.name,
                int(self.lines[i]),
                f"{header}: not a number: {col.iloc[i]!r}",
                f"{header}: 数値ではありません: {col.iloc[i]!r}",
            )
        return values


@dataclass
class _Cells:
    """Values of one file, one per (series, slot): where they go and where they came from."""

    file: str
    series: np.ndarray  # facility index (0 for plant / prices)
    day: np.ndarray  # proleptic ordinal
    slot_in_day: np.ndarray  # 0..47, may be -1 for an end-labelled "0:00"
    value: np.ndarray  # float as read
    line: np.ndarray
    column: list[str] | None  # wide files: header of each of the 48 value columns


def _read_series_file(
    path: Path, ids: dict[str, int] | None, out: _Collector, default_id: str | None = None
) -> _Cells | None:
    """A demand (ids given) or plant/price (ids None) file in long or wide shape."""
    key_roles = ("date", "datetime")
    try:
        table = _Table(path, key_roles)
    except InputError as exc:
        for p in exc.problems:
            out.add(p.file, p.line, p.message, p.message_ja)
        return None
    name, rows = table.name, len(table.frame)
    ok = np.ones(rows, dtype=bool)

    series = np.zeros(rows, dtype=np.int64)
    if ids is not None:
        fac = table.column("facility_id")
        if fac is None and default_id is None:
            out.add(
                name,
                table.first_line - 1,
                "no facility_id column (施設ID)",
                "施設IDの列がありません（施設ごとのファイルなら demand_施設ID.csv という名前にしてください）",
            )
            return None
        fac = fac if fac is not None else pd.Series([default_id] * rows)
        codes, uniques = pd.factorize(fac.fillna("").str.strip())
        lookup = np.array([ids.get(u, -1) for u in uniques], dtype=np.int64)
        series = lookup[codes] if len(uniques) else series
        for i in np.flatnonzero(series < 0)[:MAX_PROBLEMS]:
            out.add(
                name,
                int(table.lines[i]),
                f"unknown facility {fac.iloc[i]!r} (not in facilities.csv)",
                f"施設 {fac.iloc[i]!r} は facilities.csv にありません",
            )
        ok &= series >= 0

    # Day and, for long files, time of each row.
    minute = None
    if (dt := table.column("datetime")) is not None:
        codes, parsed = _by_unique(dt, _parse_datetime)
        good = np.array([p is not None for p in parsed] or [True])[codes]
        day = np.array([p[0] if p else 0 for p in parsed] or [0], dtype=np.int64)[codes]
        minute = np.array([p[1] if p else 0 for p in parsed] or [0], dtype=np.int64)[codes]
        bad_col = dt
    else:
        bad_col = table.column("date")
        codes, parsed = _by_unique(bad_col, _parse_date)
        good = np.array([p is not None for p in parsed] or [True])[codes]
        day = np.array([p or 0 for p in parsed] or [0], dtype=np.int64)[codes]
    for i in np.flatnonzero(~good)[:MAX_PROBLEMS]:
        out.add(
            name,
            int(table.lines[i]),
            f"unreadable date: {bad_col.iloc[i]!r}",
            f"日付を読めません: {bad_col.iloc[i]!r}",
        )
    ok &= good

    value_header = table.roles.get("value")
    if value_header is not None:  # long: one slot per row
        if minute is None and (tcol := table.column("time")) is not None:
            codes, parsed = _by_unique(tcol, _parse_time)
            good = np.array([p is not None for p in parsed] or [True])[codes]
            minute = np.array([p or 0 for p in parsed] or [0], dtype=np.int64)[codes]
            for i in np.flatnonzero(~good)[:MAX_PROBLEMS]:
                out.add(
                    name,
                    int(table.lines[i]),
                    f"unreadable time: {tcol.iloc[i]!r}",
                    f"時刻を読めません: {tcol.iloc[i]!r}",
                )
            ok &= good
        if minute is not None:
            off = minute % 30 != 0
            for i in np.flatnonzero(off & ok)[:MAX_PROBLEMS]:
                out.add(
                    name,
                    int(table.lines[i]),
                    "time is not on a 30-minute boundary",
                    "時刻が30分単位ではありません",
                )
            ok &= ~off
            # "24:00" in a file means times label the end of each slot (utility style).
            end_labelled = bool((minute == 1440).any())
            slot_in_day = minute // 30 - (1 if end_labelled else 0)
        elif (scol := table.column("slot")) is not None:
            n = pd.to_numeric(scol, errors="coerce").to_numpy(np.float64)
            good = (n >= 1) & (n <= SLOTS_PER_DAY) & (n == np.floor(n))
            for i in np.flatnonzero(~good)[:MAX_PROBLEMS]:
                out.add(
                    name,
                    int(table.lines[i]),
                    f"slot number must be 1–48: {scol.iloc[i]!r}",
                    f"時限は1〜48で指定してください: {scol.iloc[i]!r}",
                )
            ok &= good
            slot_in_day = np.where(good, n, 1).astype(np.int64) - 1
        else:
            out.add(
                name,
                table.first_line - 1,
                "long format needs a time (時刻) or slot (時限) column",
                "縦持ち形式には時刻または時限の列が必要です",
            )
            return None
        value = table.numbers(value_header, out)
        keep = np.flatnonzero(ok)
        return _Cells(
            name, series[keep], day[keep], slot_in_day[keep], value[keep], table.lines[keep], None
        )

    # Wide: one row per day, 48 slot columns.
    if len(table.slot_columns) != SLOTS_PER_DAY:
        out.add(
            name,
            table.first_line - 1,
            f"no value column (kWh / 電力量) and {len(table.slot_columns)} slot columns instead of 48",
            f"値の列（kWh・電力量）がなく、時間帯の列が48ではなく{len(table.slot_columns)}列です",
        )
        return None
    marks = list(table.slot_columns.values())
    if all(kind == "n" for kind, _ in marks):
        offsets = [n - 1 for _, n in marks]
    else:
        minutes = [m for _, m in marks]
        offsets = [m // 30 - (1 if 1440 in minutes else 0) for m in minutes]
    if sorted(offsets) != list(range(SLOTS_PER_DAY)):
        out.add(
            name,
            table.first_line - 1,
            "the 48 slot columns do not cover 0:00–24:00 once each",
            "48の時間帯の列が0:00〜24:00をちょうど1回ずつ覆っていません",
        )
        return None
    headers = list(table.slot_columns)
    value = np.column_stack([table.numbers(h, out) for h in headers])
    keep = np.flatnonzero(ok)
    k = len(keep)
    return _Cells(
        name,
        np.repeat(series[keep], SLOTS_PER_DAY),
        np.repeat(day[keep], SLOTS_PER_DAY),
        np.tile(np.array(offsets, dtype=np.int64), k),
        value[keep].ravel(),
        np.repeat(table.lines[keep], SLOTS_PER_DAY),
        headers,
    )


def _where(cells: _Cells, i: int) -> str:
    return f"{cells.column[i % SLOTS_PER_DAY]}: " if cells.column else ""


def _assemble(
    parts: list[_Cells],
    fy: FiscalYear,
    n_series: int,
    scale: int,
    labels: list[str],
    out: _Collector,
) -> np.ndarray | None:
    """Place cells into a (slots, series) int64 matrix, reporting range, sign, duplicate, gap."""
    T = fy.slots
    start = fy.start.toordinal()
    keys, values, origin = [], [], []
    for p_idx, cells in enumerate(parts):
        slot = (cells.day - start) * SLOTS_PER_DAY + cells.slot_in_day
        bad = np.isnan(cells.value)
        for i in np.flatnonzero(bad)[:MAX_PROBLEMS]:
            out.add(
                cells.file,
                int(cells.line[i]),
                f"{_where(cells, i)}missing value (gap)",
                f"{_where(cells, i)}値が空欄です（欠測）",
            )
        neg = ~bad & (cells.value < 0)
        for i in np.flatnonzero(neg)[:MAX_PROBLEMS]:
            out.add(
                cells.file,
                int(cells.line[i]),
                f"{_where(cells, i)}negative value {cells.value[i]:g}",
                f"{_where(cells, i)}負の値です: {cells.value[i]:g}",
            )
        outside = (slot < 0) | (slot >= T)
        for i in np.flatnonzero(outside)[:MAX_PROBLEMS]:
            when = date.fromordinal(int(cells.day[i]))
            out.add(
                cells.file,
                int(cells.line[i]),
                f"{when} is outside fiscal year FY{fy.year} ({fy.start} – {date(fy.year + 1, 3, 31)})",
                f"{when} は{fy.year}年度（{fy.start}〜{date(fy.year + 1, 3, 31)}）の範囲外です",
            )
        keep = np.flatnonzero(~(bad | neg | outside))
        clean = len(keep) == len(slot)
        keys.append(
            slot * n_series + cells.series if clean else slot[keep] * n_series + cells.series[keep]
        )
        values.append(cells.value if clean else cells.value[keep])
        origin.append((p_idx, keep))
    key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    counts = np.bincount(key, minlength=T * n_series)
    if out.total == 0 and counts.max(initial=0) <= 1 and counts.min(initial=1) >= 1:
        matrix = np.empty(T * n_series, dtype=np.int64)
        matrix[key] = np.rint(np.concatenate(values) * scale)
        return matrix.reshape(T, n_series)
    # Error path: where each kept value came from, as (file index, line).
    where = (
        np.concatenate(
            [np.stack([np.full(len(k), i), parts[i].line[k]], axis=1) for i, k in origin]
        )
        if origin
        else np.zeros((0, 2), np.int64)
    )

    def at(i: int) -> str:
        return f"{parts[where[i, 0]].file}:{where[i, 1]}"

    repeated = np.flatnonzero(counts[key] > 1)
    repeated = repeated[np.argsort(key[repeated], kind="stable")]
    groups = np.split(repeated, np.flatnonzero(np.diff(key[repeated])) + 1) if len(repeated) else []
    for hits in groups[:MAX_PROBLEMS]:
        slot, series = divmod(int(key[hits[0]]), n_series)
        first = parts[where[hits[0], 0]]
        out.add(
            first.file,
            int(where[hits[0], 1]),
            f"{labels[series]}: slot {fy.slot_label(slot)} given {len(hits)} times "
            f"(also at {', '.join(at(h) for h in hits[1:])})",
            f"{labels[series]}: {fy.slot_label(slot)} のコマが{len(hits)}回あります"
            f"（ほかに {', '.join(at(h) for h in hits[1:])}）",
        )
    if not out.total:
        line_of = np.zeros(T * n_series, dtype=np.int64)
        file_of = np.zeros(T * n_series, dtype=np.int64)
        line_of[key], file_of[key] = where[:, 1], where[:, 0]
        missing = (counts == 0).reshape(T, n_series)
        for s in np.flatnonzero(missing.any(axis=0))[:MAX_PROBLEMS]:
            slots = np.flatnonzero(missing[:, s])
            run_end = slots[0]
            while run_end + 1 < T and missing[run_end + 1, s]:
                run_end += 1
            prev = slots[0] - 1
            after = (
                f" (after {parts[file_of[prev * n_series + s]].file}:{line_of[prev * n_series + s]})"
                if prev >= 0
                else ""
            )
            out.add(
                parts[0].file if parts else "",
                None,
                f"{labels[s]}: no value from {fy.slot_label(int(slots[0]))[:16]} to "
                f"{fy.slot_label(int(run_end))[-5:]} of {fy.slot_start(int(run_end)):%Y-%m-%d}{after}; "
                f"{len(slots)} of {T} slots missing in all",
                f"{labels[s]}: {fy.slot_label(int(slots[0]))[:16]} から "
                f"{fy.slot_start(int(run_end)):%Y-%m-%d} {fy.slot_label(int(run_end))[-5:]} まで値がありません"
                f"{after.replace(' (after ', '（直前は ').replace(')', '）') if after else ''}。"
                f"欠けているコマは全{T:,}コマ中{len(slots):,}コマです",
            )
    return None


def read_facilities(path: Path) -> list[Facility]:
    out = _Collector()
    table = _Table(path, ("facility_id",))
    for role in ("facility_id", "name", "municipality", "voltage"):
        if role not in table.roles:
            out.add(
                table.name,
                table.first_line - 1,
                f"missing column {role} ({ALIASES[role][-1]})",
                f"{ALIASES[role][-1]}（{role}）の列がありません",
            )
    out.raise_if_any()
    facilities: list[Facility] = []
    seen: dict[str, int] = {}
    kinds = table.column("kind")
    prio = table.column("priority")
    for i in range(len(table.frame)):
        line = int(table.lines[i])
        fid, name, town, volt = (
            str(table.column(r).iloc[i] if pd.notna(table.column(r).iloc[i]) else "").strip()
            for r in ("facility_id", "name", "municipality", "voltage")
        )
        if not fid or not name or not town:
            out.add(
                table.name,
                line,
                "facility_id, name and municipality are required",
                "施設ID・施設名・市町は必須です",
            )
            continue
        if fid in seen:
            out.add(
                table.name,
                line,
                f"facility {fid!r} already listed at line {seen[fid]}",
                f"施設 {fid!r} は{seen[fid]}行目にもあります（重複）",
            )
            continue
        seen[fid] = line
        voltage = VOLTAGE_WORDS.get(unicodedata.normalize("NFKC", volt).strip().lower())
        if voltage not in VOLTAGES:
            out.add(
                table.name,
                line,
                f"voltage must be 低圧/高圧/特別高圧 (low/high/extra_high): {volt!r}",
                f"契約電圧は 低圧・高圧・特別高圧 のいずれかです: {volt!r}",
            )
            continue
        priority = None
        if prio is not None and pd.notna(prio.iloc[i]) and str(prio.iloc[i]).strip():
            try:
                priority = int(str(prio.iloc[i]).strip())
            except ValueError:
                out.add(
                    table.name,
                    line,
                    f"priority must be a whole number: {prio.iloc[i]!r}",
                    f"優先順位は整数で指定してください: {prio.iloc[i]!r}",
                )
                continue
        kind = str(kinds.iloc[i]).strip() if kinds is not None and pd.notna(kinds.iloc[i]) else ""
        facilities.append(Facility(fid, name, town, voltage, kind, priority))
    if not facilities and not out.total:
        out.add(table.name, None, "no facilities listed", "施設が1件もありません")
    out.raise_if_any()
    return facilities


def read_inputs(folder: Path, fiscal_year: int = 0) -> Inputs:
    """Read and validate ``folder``: facilities.csv, demand*.csv, plant.csv, [prices.csv]."""
    folder = Path(folder)
    out = _Collector()
    for required in ("facilities.csv", "plant.csv"):
        if not (folder / required).is_file():
            out.add(required, None, f"missing file in {folder}", "ファイルがありません")
    demand_files = sorted(folder.glob("demand*.csv"))
    if not demand_files:
        out.add(
            "demand*.csv", None, f"no demand file in {folder}", "需要データのファイルがありません"
        )
    out.raise_if_any()

    facilities = read_facilities(folder / "facilities.csv")
    ids = {f.id: i for i, f in enumerate(facilities)}
    plant = _read_series_file(folder / "plant.csv", None, out)
    demand_parts = []
    for path in demand_files:
        default_id = path.stem.removeprefix("demand").lstrip("_-") or None
        demand_parts.append(_read_series_file(path, ids, out, default_id))
    prices_path = folder / "prices.csv"
    price_part = _read_series_file(prices_path, None, out) if prices_path.is_file() else None
    out.raise_if_any()
    assert plant is not None

    if fiscal_year:
        fy = FiscalYear(fiscal_year)
    elif len(plant.day):
        fy = FiscalYear.containing(date.fromordinal(int(plant.day.min())))
    else:
        raise InputError([Problem("plant.csv", None, "no data rows", "データ行がありません")])

    labels = [f.id for f in facilities]
    demand = _assemble([p for p in demand_parts if p], fy, len(facilities), 1000, labels, out)
    generation = _assemble([plant], fy, 1, 1000, ["plant"], out)
    price = _assemble([price_part], fy, 1, PRICE_SCALE, ["price"], out) if price_part else None
    out.raise_if_any()
    assert demand is not None and generation is not None
    return Inputs(
        fy,
        facilities,
        demand,
        generation[:, 0],
        price[:, 0] if price is not None else None,
        # The marker file, or every facility named as synthesize() names them (an upload
        # of a synthetic folder without its marker is still labelled).
        (folder / SYNTHETIC_MARKER).is_file()
        or all(f.name.startswith(SYNTHETIC_PREFIX) for f in facilities),
    )
