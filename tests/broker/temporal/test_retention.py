"""Retention: prune removes history recorded before the cut-off, on both dialects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from typer.testing import CliRunner

from kizuna.broker.temporal.models import temporal_instances
from kizuna.settings import Settings

T = "/ngsi-ld/v1/temporal/entities"


def _gauge(client, n):
    body = {
        "id": "urn:ngsi-ld:Gauge:1",
        "type": "Gauge",
        "level": [
            {"type": "Property", "value": i, "observedAt": f"2024-05-01T0{i}:00:00Z"}
            for i in range(n)
        ],
    }
    assert client.post(T, json=body).status_code == 201


def test_prune_removes_old_instances_only(client):
    _gauge(client, 4)
    temporal = client.app.state.services.temporal
    old = datetime.now(UTC) - timedelta(days=40)
    with temporal.engine.begin() as conn:
        first_two = [
            i["instanceId"] for i in client.get(f"{T}/urn:ngsi-ld:Gauge:1").json()["level"][:2]
        ]
        conn.execute(
            update(temporal_instances)
            .where(temporal_instances.c.instance_id.in_(first_two))
            .values(modified_at=old)
        )
    tenant = client.headers["NGSILD-Tenant"]  # the PostgreSQL schema is shared by the session
    removed = temporal.prune(datetime.now(UTC) - timedelta(days=30), tenant)
    assert removed == 2
    assert [i["value"] for i in client.get(f"{T}/urn:ngsi-ld:Gauge:1").json()["level"]] == [2, 3]
    # everything gone: the temporal entity goes too
    assert temporal.prune(datetime.now(UTC) + timedelta(days=1), tenant) == 2
    assert client.get(f"{T}/urn:ngsi-ld:Gauge:1").status_code == 404


def test_retention_setting_defaults_to_keep_forever(monkeypatch, tmp_path):
    assert Settings().temporal_retention_days == 0
    monkeypatch.setenv("KIZUNA_TEMPORAL_RETENTION_DAYS", "90")
    assert Settings().temporal_retention_days == 90


def test_cli_prune(monkeypatch, tmp_path):
    from kizuna import cli
    from kizuna.settings import get_settings

    monkeypatch.setenv("KIZUNA_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        result = runner.invoke(cli.app, ["temporal", "prune"])
        assert result.exit_code == 0, result.output
        assert "keep forever" in result.output
        result = runner.invoke(cli.app, ["temporal", "prune", "--days", "30"])
        assert result.exit_code == 0, result.output
        assert "removed 0" in result.output
    finally:
        get_settings.cache_clear()
