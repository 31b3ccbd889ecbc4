"""The shared web UI: portal, sign-in session, CSRF on forms, language switch, browser."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kizuna.app import create_app
from kizuna.auth import service as auth
from kizuna.auth.service import Role
from kizuna.settings import Settings
from kizuna.storage import writer
from tests.browser import live_server, screenshot


@pytest.fixture
def app(sqlite_engine, tmp_path):  # noqa: ANN201
    app = create_app(Settings(data_dir=tmp_path), sqlite_engine)
    app.state.services.tenants.create_tenant("takasago", "高砂市", "Takasago City")
    with writer(sqlite_engine).begin() as conn:
        auth.create_user(conn, "hanako", "高砂 花子", Role.RESIDENT, "correct-horse", ["takasago"])
    return app


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _sign_in(client: TestClient, password: str = "correct-horse", next_url: str = "/"):  # noqa: ANN202
    form = {"username": "hanako", "password": password, "next": next_url}
    return client.post("/login", data=form, follow_redirects=False)


def test_portal_is_japanese_first_and_switches_to_english(client):
    page = client.get("/")
    assert page.status_code == 200
    assert '<html lang="ja">' in page.text and "高砂市" in page.text
    assert "既定" not in page.text
    english = client.get("/?lang=en")
    assert '<html lang="en">' in english.text and "Takasago City" in english.text
    # The choice sticks through a cookie.
    assert '<html lang="en">' in client.get("/").text


def test_wrong_password_shows_the_form_again_and_sets_no_session(client):
    response = _sign_in(client, password="wrong")
    assert response.status_code == 401
    assert "パスワードが違います" in response.text
    assert "kizuna_session" not in response.cookies


def test_sign_in_sets_an_http_only_session_and_follows_only_local_targets(client):
    response = _sign_in(client, next_url="/somewhere")
    assert response.status_code == 303 and response.headers["location"] == "/somewhere"
    cookie = response.headers["set-cookie"]
    assert "kizuna_session=kzt_" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "高砂 花子" in client.get("/").text
    assert _sign_in(client, next_url="//evil.example/").headers["location"] == "/"


def test_the_session_cookie_does_not_authenticate_api_calls(client):
    _sign_in(client)
    me = client.get("/auth/me").json()
    assert me["kind"] == "anonymous"


def test_sign_out_needs_the_form_token_and_revokes_the_session(client):
    _sign_in(client)
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', client.get("/").text).group(1)
    session = client.cookies["kizuna_session"]
    assert (
        client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code
        == 303
    )
    assert client.get("/auth/me", headers={"Authorization": f"Bearer {session}"}).status_code == 401


def test_unknown_pages_are_pages_for_browsers_and_problems_for_api_clients(client):
    page = client.get("/no-such-page", headers={"Accept": "text/html"})
    assert page.status_code == 404 and "ページが見つかりません" in page.text
    api = client.get("/no-such-page")
    assert api.status_code == 404 and api.json()["type"].endswith("ResourceNotFound")


def test_a_resident_signs_in_with_a_real_browser_at_phone_size(app, phone):
    with live_server(app) as base:
        phone.goto(f"{base}/login")
        phone.fill("input[name=username]", "hanako")
        phone.fill("input[name=password]", "correct-horse")
        phone.click("button[type=submit]")
        phone.wait_for_url(f"{base}/")
        assert phone.locator("text=参加自治体").is_visible()
        # The account name is hidden at phone width; the sign-out button is there.
        assert phone.locator("text=ログアウト").is_visible()
        screenshot(phone, "web-portal-phone")
