"""Shared fixtures: migrated databases on both dialects, nothing module-specific.

PostgreSQL tests run in a schema of their own (dropped afterwards), so parallel
runs and a developer's data never meet. Without the server they skip, unless
KIZUNA_REQUIRE_SERVICES=1 (CI), where a missing service fails the run.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from kizuna.storage import create_engine_for, upgrade_to_head
from tests.browser import CHROMIUM

PG_ADMIN_URL = os.environ.get(
    "KIZUNA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_SERVICES = os.environ.get("KIZUNA_REQUIRE_SERVICES") == "1"


def service_available(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (locally) or fail (CI) when a real service is not reachable."""
    if service_available(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}, and KIZUNA_REQUIRE_SERVICES=1 requires it")
    pytest.skip(message)


@pytest.fixture
def sqlite_engine(tmp_path) -> Iterator[Engine]:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'kizuna.db'}")
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


@contextlib.contextmanager
def fresh_pg_schema() -> Iterator[str]:
    """The URL of a new, migrated schema in the local PostgreSQL, dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    schema = f"kz_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine_for(PG_ADMIN_URL, pool_size=1)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    migrated = create_engine_for(url, pool_size=1)
    upgrade_to_head(migrated)
    migrated.dispose()
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated schema in the local PostgreSQL for this test session."""
    with fresh_pg_schema() as url:
        yield url


@pytest.fixture
def pg_engine(pg_url) -> Iterator[Engine]:
    engine = create_engine_for(pg_url, pool_size=4)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request) -> Engine:
    """The same test on both dialects."""
    name = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    return request.getfixturevalue(name)


# --- pages in a real browser -------------------------------------------------------


@pytest.fixture(scope="session")
def chromium():  # noqa: ANN201
    """Debian's Chromium driven by Playwright (no browser download)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def phone(chromium):  # noqa: ANN001, ANN201
    """A page at phone size (390×844, Japanese locale), closed after the test."""
    context = chromium.new_context(viewport={"width": 390, "height": 844}, locale="ja-JP")
    yield context.new_page()
    context.close()
