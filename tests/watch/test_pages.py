"""Watch pages: the guardian's map with today's trail and an arrival, flood dashboard, staff."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from kizuna.watch.flood import Thresholds
from tests.browser import live_server, screenshot
from tests.watch.conftest import PASSWORD, SCHOOL, STATION, detection


def _day_of_walking(town) -> str:  # noqa: ANN001
    """Hanako's child walks from the station to school this morning (arrival announced)."""
    tag = town.tags["hanako"]
    town.client.post(
        f"/watch/v1/tags/{tag}/places",
        json={
            "name": "加古川小学校",
            "kind": "school",
            "lat": SCHOOL[0],
            "lon": SCHOOL[1],
            "radius_m": 200,
        },
        headers=town.as_user("hanako"),
    )
    now = datetime.now(UTC)
    steps = 8
    items = []
    for n in range(steps + 1):
        f = n / steps
        items.append(
            detection(
                n,
                tag,
                at=now - timedelta(minutes=5 * (steps - n) + 1),
                lat=STATION[0] + (SCHOOL[0] - STATION[0]) * f + (0.0015 if 2 < n < 6 else 0),
                lon=STATION[1] + (SCHOOL[1] - STATION[1]) * f,
            )
        )
    r = town.client.post(
        "/watch/v1/detections", json={"detections": items}, headers=town.as_device("phone-vol")
    )
    assert r.json()["accepted"] == steps + 1
    return tag


def _sign_in(town, name: str) -> None:  # noqa: ANN001
    response = town.client.post(
        "/login",
        data={"username": town.username(name), "password": PASSWORD},
        follow_redirects=False,
    )
    assert response.status_code == 303


def test_guardian_pages_show_trail_arrival_and_log(sqlite_town):
    town = sqlite_town
    tag = _day_of_walking(town)
    _sign_in(town, "hanako")
    home = town.client.get("/watch")
    assert home.status_code == 200 and town.labels["hanako"] in home.text
    assert "加古川小学校に到着しました" in home.text
    page = town.client.get(f"/watch/tags/{tag}")
    assert page.status_code == 200
    assert "<polyline" in page.text and "加古川小学校" in page.text and "今日の足あと" in page.text
    english = town.client.get(f"/watch/tags/{tag}?lang=en")
    assert english.status_code == 200 and "Staff access log" in english.text
    assert "arrived at" in town.client.get("/watch?lang=en").text
    # Another guardian's tag is a 404 page, not a map.
    other = town.client.get(f"/watch/tags/{town.tags['taro']}", headers={"Accept": "text/html"})
    assert other.status_code == 404 and town.labels["taro"] not in other.text


def test_guardian_adds_a_place_with_the_form(sqlite_town):
    town = sqlite_town
    tag = town.tags["hanako"]
    _sign_in(town, "hanako")
    page = town.client.get(f"/watch/tags/{tag}")
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text).group(1)
    form = {
        "csrf_token": token,
        "name": "自宅",
        "kind": "home",
        "lat": "34.75",
        "lon": "134.84",
        "radius_m": "100",
    }
    done = town.client.post(f"/watch/tags/{tag}/places", data=form, follow_redirects=True)
    assert "「自宅」を登録しました" in done.text
    bad = town.client.post(
        f"/watch/tags/{tag}/places", data=form | {"radius_m": "5"}, follow_redirects=True
    )
    assert "半径" in bad.text


def test_staff_page_and_case_view_are_logged(sqlite_town):
    town = sqlite_town
    tag = _day_of_walking(town)
    _sign_in(town, "staff")
    page = town.client.get("/watch/staff")
    assert page.status_code == 200 and town.labels["hanako"] not in page.text
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text).group(1)
    opened = town.client.post(
        "/watch/staff/cases",
        data={"csrf_token": token, "tag_id": tag, "reason": "下校後に帰宅せず保護者から通報"},
        follow_redirects=True,
    )
    assert opened.status_code == 200 and town.labels["hanako"] in opened.text
    log = town.client.get(f"/watch/v1/tags/{tag}/access-log", headers=town.as_user("hanako")).json()
    assert {e["action"] for e in log} >= {"open_case", "view_trail", "view_identity"}
    # Residents get no staff page.
    town.client.post("/logout", data={"csrf_token": token})
    _sign_in(town, "vol")
    assert town.client.get("/watch/staff", headers={"Accept": "text/html"}).status_code == 403


def test_public_flood_dashboard(sqlite_town):
    town = sqlite_town
    flood = town.watch.flood
    flood.create_gauge(
        town.tenant,
        "g-kakogawa-1",
        "加古川 国包",
        "Kakogawa (Kunikane)",
        "加古川",
        34.79,
        134.835,
        Thresholds(-4.0, -3.0, -2.0, -1.2),
    )
    device = town.watch.device(town.tenant, "g-kakogawa-1")
    start = datetime.now(UTC) - timedelta(hours=12)
    for n in range(72):
        level = -5.0 + 3.5 * (n / 71) ** 2
        flood.record_reading(
            device, {"level": level, "at": (start + timedelta(minutes=10 * n)).isoformat()}
        )
    english = town.client.get(f"/watch/flood?town={town.tenant}&lang=en")
    assert english.status_code == 200 and "River levels" in english.text
    page = town.client.get(f"/watch/flood?town={town.tenant}&lang=ja")
    assert page.status_code == 200
    assert "加古川 国包" in page.text and "level-line" in page.text and "警戒" in page.text


def test_a_guardian_sees_the_trail_and_arrival_in_a_real_browser(sqlite_town, phone):
    town = sqlite_town
    tag = _day_of_walking(town)
    with live_server(town.app) as base:
        phone.goto(f"{base}/login?next=/watch")
        phone.fill("input[name=username]", town.username("hanako"))
        phone.fill("input[name=password]", PASSWORD)
        phone.click("button[type=submit]")
        phone.wait_for_url(f"{base}/watch")
        assert phone.locator("text=加古川小学校に到着しました").first.is_visible()
        screenshot(phone, "watch-guardian-home")
        phone.click(f"a[href='/watch/tags/{tag}']")
        phone.wait_for_url(f"{base}/watch/tags/{tag}")
        assert phone.locator("svg.watch-map polyline.trail").count() == 1
        assert phone.locator("text=加古川小学校に到着しました").first.is_visible()
        screenshot(phone, "watch-guardian-map")
