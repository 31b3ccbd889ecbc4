"""Property-based fuzzing of the OpenAPI schema on both databases: no input may produce a
5xx answer."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from kizuna.app import create_app
from kizuna.settings import Settings
from tests.conftest import fresh_pg_schema


def _app(database_url: str = "") -> Any:
    return create_app(
        Settings(
            data_dir=Path(tempfile.mkdtemp()),
            database_url=database_url,
            open_access=True,
            context_fetch_enabled=False,
        )
    )


class _Target:
    """The app the fuzzed requests reach: the schema is read once, from the SQLite app, and
    each database's run points this at its own app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


_target = _Target(_app())
schema = schemathesis.openapi.from_asgi("/openapi.json", _target)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite"
        return
    sqlite_app = _target.app
    with fresh_pg_schema() as url:
        _target.app = _app(url)
        try:
            yield "postgresql"
        finally:
            _target.app.state.services.engine.dispose()
            _target.app = sqlite_app


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_causes_a_server_error(case, database):
    case.call_and_validate(checks=[not_a_server_error])
