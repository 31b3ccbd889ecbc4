"""Property-based fuzzing of the OpenAPI schema: no input may produce a 5xx answer."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from kizuna.app import create_app
from kizuna.settings import Settings

_app = create_app(
    Settings(data_dir=Path(tempfile.mkdtemp()), open_access=True, context_fetch_enabled=False)
)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_causes_a_server_error(case):
    case.call_and_validate(checks=[not_a_server_error])
