"""An app per test on the dialect under test, and a client bound to a fresh tenant."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kizuna.app import create_app
from kizuna.settings import ETSI_TEST_CONTEXT_BASE, Settings

SHARED_CONTEXTS = Path(__file__).resolve().parents[3] / "shared" / "ngsi-ld-test-contexts"


@pytest.fixture
def suite_contexts() -> Path:
    """The ETSI suite's @context documents, which live in ../shared beside the repository."""
    if not SHARED_CONTEXTS.exists():
        pytest.skip(f"{SHARED_CONTEXTS} not found: clone the repository beside ../shared")
    return SHARED_CONTEXTS


@pytest.fixture
def settings(tmp_path) -> Settings:
    preload = {ETSI_TEST_CONTEXT_BASE: SHARED_CONTEXTS} if SHARED_CONTEXTS.exists() else {}
    return Settings(
        data_dir=tmp_path,
        open_access=True,
        context_preload=preload,
        context_fetch_enabled=False,
        max_body_bytes=64 * 1024,
    )


@pytest.fixture
def client(engine, settings) -> Iterator[TestClient]:
    """A client in its own tenant (created implicitly by the first write)."""
    app = create_app(settings, engine)
    with TestClient(app, headers={"NGSILD-Tenant": f"t{uuid.uuid4().hex[:12]}"}) as test_client:
        yield test_client
