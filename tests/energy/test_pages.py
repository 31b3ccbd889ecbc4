"""The energy page: demo run, access, downloads, uploads (errors in Japanese, nothing stored),
publishing to the broker, and the page in a real browser at phone and desktop width."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import func, select

from kizuna import demo
from kizuna.app import create_app
from kizuna.auth import service as auth
from kizuna.auth.service import Role
from kizuna.energy import demo as energy_demo
from kizuna.energy import service
from kizuna.energy.models import runs
from kizuna.energy.runs import runs_dir
from kizuna.settings import Settings
from kizuna.storage import create_engine_for, upgrade_to_head, writer
from tests.browser import live_server, screenshot

PASSWORD = demo.DEMO_PASSWORD


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory):  # noqa: ANN201
    """The demo region, seeded once for the module (the synthetic year is simulated once)."""
    data = tmp_path_factory.mktemp("energy-demo")
    engine = create_engine_for(f"sqlite:///{data / 'kizuna.db'}")
    upgrade_to_head(engine)
    app = create_app(Settings(data_dir=data), engine)
    demo.seed(app.state.services, Console(quiet=True))
    with writer(engine).begin() as conn:
        auth.create_user(conn, "resident", "住民", Role.RESIDENT, PASSWORD, ["takasago"])
    yield app
    engine.dispose()


def _client(app, username: str | None = "takasago-staff") -> TestClient:  # noqa: ANN001
    client = TestClient(app)
    if username:
        form = {"username": username, "password": PASSWORD, "next": "/"}
        assert client.post("/login", data=form, follow_redirects=False).status_code == 303
    return client


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)


def _run_count(app) -> int:  # noqa: ANN001
    with app.state.services.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(runs)).scalar_one()


def test_demo_run_shows_headline_figures_charts_and_downloads(demo_app):
    client = _client(demo_app)
    page = client.get("/energy")
    assert page.status_code == 200
    html = page.text
    assert "合成データ" in html and "ごみ発電の電力を" in html
    assert 'data-figure="rate">63.7' in html  # self-sufficiency of the synthetic FY2025
    for scheme in ("現状", "地域新電力", "自己託送", "小売電気事業者経由"):
        assert scheme in html
    assert "要件未確認" in html and "self_wheeling_closely_related" in html
    for town in ("高砂市", "加古川市", "稲美町", "播磨町"):
        assert town in html
    assert "電力価格 -20%" in html and "161施設の表を開く" in html
    charts = re.findall(r'src="(/energy/runs/\d+/charts/\w+\.svg)"', html)
    assert len(charts) == 4
    for src in charts:
        image = client.get(src)
        assert image.status_code == 200 and image.headers["content-type"] == "image/svg+xml"
    run_id = re.search(r"/energy/runs/(\d+)/", charts[0]).group(1)
    csv = client.get(f"/energy/runs/{run_id}/files/towns_monthly.csv")
    assert (
        csv.content.startswith(b"\xef\xbb\xbf")
        and "attachment" in csv.headers["content-disposition"]
    )
    assert client.get(f"/energy/runs/{run_id}/files/report.pdf").content.startswith(b"%PDF")
    assert "合成データ" in client.get(f"/energy/runs/{run_id}/files/report.html").text
    assert client.get(f"/energy/runs/{run_id}/files/view.json").status_code == 404
    assert client.get(f"/energy/runs/{run_id}/files/..%2Fview.json").status_code == 404
    english = client.get("/energy?lang=en").text
    assert "Self-sufficiency" in english and "Synthetic data" in english


def test_only_staff_of_the_region_see_it(demo_app):
    anonymous = TestClient(demo_app).get("/energy", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
    resident = _client(demo_app, "resident")
    assert resident.get("/energy", headers={"Accept": "text/html"}).status_code == 403
    assert "エネルギー地産地消" not in resident.get("/").text  # no link in the header either
    services = demo_app.state.services
    services.tenants.create_tenant("aizu", "会津若松市", "Aizuwakamatsu")
    with writer(services.engine).begin() as conn:
        auth.create_user(conn, "aizu-staff", "会津", Role.MUNICIPAL_STAFF, PASSWORD, ["aizu"])
    outsider = _client(demo_app, "aizu-staff")
    assert "まだ試算がありません" in outsider.get("/energy").text  # its own region: empty
    assert outsider.get("/energy/runs/1").status_code == 404
    assert outsider.get("/energy/runs/1/files/facilities.csv").status_code == 404
    assert _client(demo_app, "admin").get("/energy/runs/1").status_code == 200


def test_demo_results_are_open_data_and_publishing_again_is_idempotent(demo_app):
    api = TestClient(demo_app)
    query = "/ngsi-ld/v1/entities?type=EnergyLocalConsumptionMonthly&limit=100"
    first = api.get(query, headers={"NGSILD-Tenant": "harima"})  # anonymous: open data
    assert first.status_code == 200 and len(first.json()) == 12
    assert {e["municipality"]["value"] for e in first.json()} == {"播磨町"}
    before = _run_count(demo_app)
    energy_demo.seed(demo_app.state.services)  # kizuna demo run again
    assert _run_count(demo_app) == before
    client = _client(demo_app, "harima-staff")
    token = _csrf(client.get("/energy").text)
    published = client.post("/energy/runs/1/publish", data={"csrf_token": token})
    assert published.status_code == 200 and "48 件をブローカーに公開しました" in published.text
    again = api.get(query, headers={"NGSILD-Tenant": "harima"}).json()
    assert sorted(e["id"] for e in again) == sorted(e["id"] for e in first.json())


def _upload(client: TestClient, folder: Path, **extra) -> object:  # noqa: ANN003
    token = _csrf(client.get("/energy").text)
    files = [
        ("facilities", ("施設一覧.csv", (folder / "facilities.csv").read_bytes(), "text/csv")),
        ("plant", ("plant.csv", (folder / "plant.csv").read_bytes(), "text/csv")),
        ("prices", ("", b"", "application/octet-stream")),  # an optional file left empty
    ]
    files += [
        ("demand", (p.name, p.read_bytes(), "text/csv")) for p in sorted(folder.glob("demand*"))
    ]
    data = {"csrf_token": token, "title": "テスト試算", **extra}
    return client.post("/energy/runs", data=data, files=files, follow_redirects=False)


@pytest.fixture
def small_folder(tmp_path) -> Path:
    folder = tmp_path / "inputs"
    service.write_inputs(service.synthesize(n_facilities=6, seed=11), folder)
    return folder


def test_bad_upload_lists_problems_in_japanese_with_row_numbers_and_stores_nothing(
    demo_app, small_folder
):
    facilities = (small_folder / "facilities.csv").read_text("utf-8-sig").splitlines()
    facilities[2] = re.sub(r"(低圧|高圧|特別高圧)", "中圧", facilities[2])
    (small_folder / "facilities.csv").write_text("\n".join(facilities) + "\n", "utf-8")
    plant = (small_folder / "plant.csv").read_text("utf-8").splitlines()
    plant[4] = "2025/13/45" + plant[4][plant[4].index(",") :]
    (small_folder / "plant.csv").write_text("\n".join(plant) + "\n", "utf-8")
    before, folders = (
        _run_count(demo_app),
        set(runs_dir(demo_app.state.services.settings.data_dir).iterdir()),
    )
    client = _client(demo_app)
    response = _upload(client, small_folder)
    assert response.status_code == 400
    html = response.text
    assert "何も保存していません" in html
    # The file as the user named it, the line as Excel counts it, the message in Japanese.
    assert "施設一覧.csv 3行目: 契約電圧は 低圧・高圧・特別高圧 のいずれかです" in html
    assert _run_count(demo_app) == before
    assert set(runs_dir(demo_app.state.services.settings.data_dir).iterdir()) == folders
    (small_folder / "facilities.csv").write_text(
        "\n".join(facilities).replace("中圧", "高圧"), "utf-8"
    )
    html = _upload(client, small_folder).text
    assert "plant.csv 5行目: 日付を読めません" in html
    missing = client.post(
        "/energy/runs", data={"csrf_token": _csrf(html)}, files=[("prices", ("", b"", "text/csv"))]
    )
    assert (
        missing.status_code == 400
        and "施設一覧（facilities.csv） のファイルを選んでください" in missing.text
    )


def test_upload_needs_the_form_token(demo_app, small_folder):
    client = _client(demo_app)
    files = [("facilities", ("f.csv", b"x", "text/csv"))]
    assert (
        client.post("/energy/runs", data={"csrf_token": "forged"}, files=files).status_code == 403
    )


@pytest.fixture
def town_app(sqlite_engine, tmp_path) -> Iterator[TestClient]:
    """Two towns of a region without any run yet, and a member of staff."""
    app = create_app(Settings(data_dir=tmp_path / "data"), sqlite_engine)
    tenants = app.state.services.tenants
    tenants.create_region("higashi-harima", "東播磨", "Higashi-Harima")
    tenants.create_tenant("takasago", "高砂市", "Takasago", "higashi-harima")
    tenants.create_tenant("inami", "稲美町", "Inami", "higashi-harima")
    with writer(sqlite_engine).begin() as conn:
        auth.create_user(conn, "staff", "職員", Role.MUNICIPAL_STAFF, PASSWORD, ["inami"])
    yield app


def test_staff_run_a_simulation_from_csv_files_and_publish_it(town_app, small_folder):
    client = _client(town_app, "staff")
    assert "まだ試算がありません" in client.get("/energy").text
    response = _upload(client, small_folder, confirm_self_wheeling_closely_related="1")
    assert response.status_code == 303
    page = client.get(response.headers["location"])
    assert "試算を実行して保存しました" in page.text and "テスト試算" in page.text
    # Only the condition the user ticked is confirmed; nothing else is assumed.
    assert page.text.count("✔ 要件確認済") == 1 and page.text.count("⚠ 要件未確認") == 2
    # Uploaded files named as synthesize() names facilities are still labelled synthetic.
    assert "合成データ" in page.text
    assert _run_count(town_app) == 1
    run_id = int(re.search(r"/energy/runs/(\d+)", response.headers["location"]).group(1))
    published = client.post(f"/energy/runs/{run_id}/publish", data={"csrf_token": _csrf(page.text)})
    assert published.status_code == 200
    api = TestClient(town_app)
    found = api.get(
        "/ngsi-ld/v1/entities?type=EnergyLocalConsumptionMonthly&limit=100",
        headers={"NGSILD-Tenant": "takasago"},
    ).json()
    assert len(found) == 12 and found[0]["synthetic"]["value"] is True


def test_the_energy_page_in_a_real_browser(demo_app, chromium):
    with live_server(demo_app) as base:
        for name, viewport in (("phone", (390, 844)), ("desktop", (1280, 900))):
            context = chromium.new_context(
                viewport={"width": viewport[0], "height": viewport[1]}, locale="ja-JP"
            )
            page = context.new_page()
            page.goto(f"{base}/login?next=/energy")
            page.fill("input[name=username]", "kakogawa-staff")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/energy")
            assert page.locator("[data-figure=rate]").inner_text().startswith("63.7")
            assert page.locator(".scheme").count() == 4
            charts = page.locator("img.chart")
            assert charts.count() == 4
            for i in range(4):
                charts.nth(i).scroll_into_view_if_needed()
                page.wait_for_function(
                    "img => img.complete && img.naturalWidth > 0",
                    arg=charts.nth(i).element_handle(),
                )
                box = charts.nth(i).bounding_box()
                assert box and box["width"] <= viewport[0]
                # Phones get the narrow drawing, whose text stays readable.
                shown = charts.nth(i).evaluate("img => img.currentSrc")
                assert shown.endswith("_narrow.svg") == (name == "phone"), shown
            # Nothing sticks out sideways: wide tables scroll inside their own box.
            overflow = page.evaluate("document.documentElement.scrollWidth")
            assert overflow <= viewport[0], f"page is {overflow}px wide at {viewport[0]}px"
            page.evaluate("window.scrollTo(0, 0)")  # the sticky header back at the top
            screenshot(page, f"energy-{name}")
            context.close()
