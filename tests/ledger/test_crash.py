"""kill -9 of a real `kizuna serve` mid-load: every acknowledged transfer exists exactly once,
nothing else was applied, verify passes (bench/ledger_crash.py runs the 100,000 version)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.conftest import require_service

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_crash_module():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("ledger_crash", BENCH / "ledger_crash.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_kill_9_mid_load_loses_and_duplicates_nothing(dialect):
    if dialect == "postgresql":
        require_service("PostgreSQL", "127.0.0.1", 5432)
    crash = load_crash_module()
    summary = crash.run(transfers=3000, kills=2, clients=6, pg=dialect == "postgresql", quiet=True)
    assert summary["problems"] == [], summary
    assert summary["verify"].startswith("OK")
