"""Reading utility-shaped CSVs, and a clear error with file and line for each kind of problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kizuna.energy.io import InputError, read_inputs
from kizuna.energy.synthetic import synthesize, write_inputs


@pytest.fixture(scope="module")
def year():
    return synthesize(fiscal_year=2025, n_facilities=3, seed=7)


@pytest.fixture
def folder(tmp_path: Path, year) -> Path:
    write_inputs(year, tmp_path)
    return tmp_path


def edit(path: Path, line: int, change) -> None:
    """Replace 1-based ``line`` of a UTF-8-with-BOM file by change(old_line) (None deletes it)."""
    lines = path.read_text("utf-8-sig").splitlines()
    new = change(lines[line - 1])
    lines[line - 1 : line] = [] if new is None else [new]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")


def cells(line: str, index: int, value: str) -> str:
    parts = line.split(",")
    parts[index] = value
    return ",".join(parts)


def problems(folder: Path) -> str:
    with pytest.raises(InputError) as info:
        read_inputs(folder)
    return str(info.value)


def test_round_trip_is_exact(folder: Path, year):
    got = read_inputs(folder)
    assert got.fy.year == 2025 and got.fy.slots == 17_520
    assert np.array_equal(got.demand, year.demand)
    assert np.array_equal(got.generation, year.generation)
    assert np.array_equal(got.price, year.price)
    assert got.synthetic and [f.id for f in got.facilities] == [f.id for f in year.facilities]


def test_shift_jis_and_plain_utf8(folder: Path, year):
    for name in ("facilities.csv", "demand.csv"):
        text = (folder / name).read_text("utf-8-sig")
        (folder / name).write_bytes(text.encode("cp932"))
    (folder / "plant.csv").write_bytes(
        (folder / "plant.csv").read_text("utf-8-sig").encode("utf-8")
    )
    got = read_inputs(folder)
    assert np.array_equal(got.demand, year.demand)
    assert got.facilities[0].municipality == year.facilities[0].municipality


def test_long_format_with_preamble_and_end_labels(tmp_path: Path, year):
    write_inputs(year, tmp_path)
    (tmp_path / "demand.csv").unlink()
    fy = year.fy
    rows = ["お客さま名,合成市役所", "", "施設ID,日時,使用電力量(kWh)"]
    for i, f in enumerate(year.facilities):
        for t in range(fy.slots):
            end = fy.slot_start(t + 1)
            stamp = (
                f"{end:%Y/%m/%d %H:%M}"
                if end.hour or end.minute
                else f"{fy.slot_start(t):%Y/%m/%d} 24:00"
            )
            rows.append(f"{f.id},{stamp},{year.demand[t, i] / 1000}")
    (tmp_path / "demand_long.csv").write_text("\n".join(rows) + "\n", encoding="cp932")
    got = read_inputs(tmp_path)
    assert np.array_equal(got.demand, year.demand)


def test_leap_fiscal_year_has_17568_slots(tmp_path: Path):
    write_inputs(synthesize(fiscal_year=2023, n_facilities=2, seed=1), tmp_path)
    assert read_inputs(tmp_path).fy.slots == 17_568


def test_missing_value(folder: Path):
    edit(folder / "demand.csv", 5, lambda line: cells(line, 10, ""))
    assert "demand.csv:5: 4:30: missing value (gap)" in problems(folder)


def test_missing_row_is_a_gap_with_context(folder: Path):
    edit(folder / "demand.csv", 10, lambda line: None)
    message = problems(folder)
    assert "no value from 2025-04-09 00:00" in message and "after demand.csv:9" in message


def test_duplicate_slot(folder: Path):
    edit(folder / "demand.csv", 3, lambda line: line + "\n" + line)
    assert "given 2 times (also at demand.csv:4)" in problems(folder)


def test_negative_value(folder: Path):
    edit(folder / "plant.csv", 7, lambda line: cells(line, 3, "-1.5"))
    assert "plant.csv:7: 1:30: negative value -1.5" in problems(folder)


def test_unknown_facility(folder: Path):
    edit(folder / "demand.csv", 4, lambda line: cells(line, 0, "NOPE-01"))
    assert "demand.csv:4: unknown facility 'NOPE-01'" in problems(folder)


def test_slot_outside_the_fiscal_year(folder: Path):
    edit(folder / "demand.csv", 2, lambda line: cells(line, 1, "2025/03/31"))
    assert "demand.csv:2: 2025-03-31 is outside fiscal year FY2025" in problems(folder)


def test_not_a_number_and_bad_date(folder: Path):
    edit(folder / "demand.csv", 6, lambda line: cells(line, 20, "abc"))
    edit(folder / "demand.csv", 8, lambda line: cells(line, 1, "2025/13/45"))
    message = problems(folder)
    assert "demand.csv:6: 9:30: not a number: 'abc'" in message
    assert "demand.csv:8: unreadable date: '2025/13/45'" in message


def test_facilities_file_problems(folder: Path):
    edit(folder / "facilities.csv", 3, lambda line: cells(line, 3, "中圧"))
    edit(
        folder / "facilities.csv",
        4,
        lambda line: cells(line, 0, line.split(",")[0].replace("03", "01")),
    )
    message = problems(folder)
    assert "facilities.csv:3: voltage must be" in message
    assert "already listed at line 2" in message


def test_missing_files(tmp_path: Path):
    message = problems(tmp_path)
    assert "facilities.csv: missing file" in message and "no demand file" in message
