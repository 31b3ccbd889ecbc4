"""The front door: simulate a synthetic year, NGSI-LD summaries, report, exports, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kizuna.energy import service
from kizuna.energy.cli import energy_app


@pytest.fixture(scope="module")
def result():
    return service.simulate_inputs(service.synthesize(n_facilities=12, seed=3))


def test_summaries_are_ngsi_ld_entities(result):
    entities = service.monthly_town_summaries(result)
    assert len(entities) == 12 * len(result.towns)
    e = next(
        x
        for x in entities
        if x["id"] == "urn:ngsi-ld:EnergyLocalConsumptionMonthly:Kakogawa:2025-04"
    )
    assert e["type"] == "EnergyLocalConsumptionMonthly" and "@context" not in e
    assert e["municipality"]["value"] == "加古川市"
    assert e["suppliedFromPlant"]["unitCode"] == "KWH" and e["selfSufficiency"]["unitCode"] == "P1"
    assert e["co2Avoided"]["unitCode"] == "TNE"
    total = e["suppliedFromPlant"]["value"] + e["shortfall"]["value"]
    assert total == pytest.approx(e["demand"]["value"], abs=1e-6)
    # The towns' attributed surplus adds up to the plant's surplus, month by month.
    april = [x for x in entities if x["month"]["value"] == "2025-04"]
    assert round(sum(x["surplus"]["value"] for x in april) * 1000) == int(result.monthly.surplus[0])


def test_sensitivity_rows(result):
    keys = [row.key for row in result.sensitivity]
    assert keys == ["base", "price-20", "price+20", "surplus-20", "surplus+20"]
    base, more = result.sensitivity[0], result.sensitivity[4]
    assert more.supplied_wh >= base.supplied_wh


def test_report_fragment_and_outputs(result, tmp_path: Path):
    html = service.report_fragment(result)
    assert html.startswith('<section class="kz-energy">') and "data:image/png;base64," in html
    assert "合成データ" in html and "自己託送" in html and "未確認" in html
    paths = service.write_outputs(result, tmp_path, pdf=True)
    names = {p.name for p in paths}
    assert {
        "report.html",
        "report.pdf",
        "schemes.csv",
        "facilities.csv",
        "chart_monthly.png",
    } <= names
    assert (
        (tmp_path / "schemes.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    )  # Excel reads it as UTF-8


def test_cli_synthesize_then_simulate(tmp_path: Path):
    runner = CliRunner()
    data, out = tmp_path / "data", tmp_path / "out"
    done = runner.invoke(energy_app, ["synthesize", str(data), "--facilities", "5"])
    assert done.exit_code == 0, done.output
    done = runner.invoke(energy_app, ["simulate", str(data), "--out", str(out), "--no-pdf"])
    assert done.exit_code == 0, done.output
    assert (out / "report.html").is_file() and "SYNTHETIC" in done.output


def test_cli_reports_input_errors(tmp_path: Path):
    done = CliRunner().invoke(energy_app, ["simulate", str(tmp_path), "--out", str(tmp_path / "o")])
    assert done.exit_code == 1 and "missing file" in done.output
