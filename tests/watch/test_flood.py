"""Flood watch: thresholds crossed once each, beacons' silence, history through the broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kizuna.auth.service import SYSTEM
from kizuna.broker.ngsild import Rendering
from kizuna.watch.devices import Rejected
from kizuna.watch.flood import Thresholds, level_for, spot_depth

LIMITS = Thresholds(-3.0, -2.0, -1.0, -0.5)


def test_levels_rise_at_thresholds_and_fall_only_past_hysteresis():
    assert level_for(-3.5, LIMITS) == 0
    assert level_for(-3.0, LIMITS) == 1
    assert level_for(-0.4, LIMITS) == 4
    assert level_for(-2.02, LIMITS, current=2) == 2  # noise just under 注意 keeps 注意
    assert level_for(-2.06, LIMITS, current=2) == 1
    assert level_for(-3.5, LIMITS, current=4) == 0
    with pytest.raises(Exception):  # noqa: B017
        Thresholds(-1.0, -2.0, -0.5, 0.0)


def test_spot_depth_needs_every_lower_beacon_silent():
    now = datetime.now(UTC)
    old, fresh = now - timedelta(minutes=30), now - timedelta(minutes=1)
    silence = timedelta(minutes=10)
    assert spot_depth({0.1: fresh, 0.2: fresh, 0.3: fresh}, now, silence) == 0.0
    assert spot_depth({0.1: old, 0.2: old, 0.3: fresh}, now, silence) == 0.2
    assert spot_depth({0.1: fresh, 0.2: old, 0.3: old}, now, silence) == 0.0  # a fault, not water
    assert spot_depth({0.1: None, 0.2: None, 0.3: None}, now, silence) == 0.0  # never heard


def _gauge(town):  # noqa: ANN001, ANN202
    flood = town.watch.flood
    created = flood.create_gauge(
        town.tenant, "g1", "加古川 国包", "Kunikane", "加古川", 34.79, 134.835, LIMITS
    )
    town.gauge_credential = created.credential
    return flood, town.watch.device(town.tenant, "g1")


def _alert_level(town) -> int:  # noqa: ANN001
    services = town.app.state.services
    scope = services.tenants.scope(SYSTEM, town.tenant, write=False)
    entity = services.broker.retrieve(
        scope,
        services.broker.contexts.core,
        f"urn:ngsi-ld:WaterLevelGauge:{town.tenant}:g1",
        Rendering(),
    )
    return entity["alertLevel"]["value"]


def test_a_rising_and_falling_river_changes_alert_level_once_per_crossing(town):
    flood, device = _gauge(town)
    start = datetime.now(UTC) - timedelta(hours=5)
    # Up through 待機 and 注意 with noise around each threshold, then down again.
    levels = [
        -3.5,
        -3.01,
        -2.99,
        -3.01,
        -2.98,
        -2.5,
        -2.01,
        -1.99,
        -2.02,
        -1.98,
        -1.7,
        -2.2,
        -2.6,
        -3.2,
        -3.3,
    ]
    changes = []
    for n, level in enumerate(levels):
        before = _alert_level(town)
        flood.record_reading(
            device, {"level": level, "at": (start + timedelta(minutes=10 * n)).isoformat()}
        )
        after = _alert_level(town)
        if after != before:
            changes.append((before, after))
    assert changes == [(0, 1), (1, 2), (2, 1), (1, 0)]
    # A repeated reading is a duplicate; a late one does not rewind the current value.
    assert not flood.record_reading(
        device, {"level": -3.3, "at": (start + timedelta(minutes=140)).isoformat()}
    )
    flood.record_reading(device, {"level": -0.1, "at": (start + timedelta(minutes=5)).isoformat()})
    assert _alert_level(town) == 0
    with pytest.raises(Rejected):
        flood.record_reading(device, {"level": "high", "at": start.isoformat()})


def test_gauge_history_is_in_the_broker_and_readings_come_over_http(town):
    _gauge(town)
    headers = {"Authorization": f"Device {town.gauge_credential}", "NGSILD-Tenant": town.tenant}
    start = datetime.now(UTC) - timedelta(hours=1)
    for n, level in enumerate((-2.5, -2.4, -1.9)):
        r = town.client.post(
            "/watch/v1/gauges/g1/readings",
            json={"level": level, "at": (start + timedelta(minutes=10 * n)).isoformat()},
            headers=headers,
        )
        assert r.status_code == 201, r.text
    wrong = town.client.post(
        "/watch/v1/gauges/g1/readings",
        json={"level": 0, "at": start.isoformat()},
        headers=town.as_device("rx-1"),
    )
    assert wrong.status_code == 403
    history = town.client.get(
        f"/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:WaterLevelGauge:{town.tenant}:g1",
        params={"attrs": "waterLevel"},
        headers=town.as_user("staff"),
    )
    assert history.status_code == 200, history.text
    values = [i["value"] for i in history.json()["waterLevel"]]
    assert values == [-2.5, -2.4, -1.9]
    public = town.client.get("/watch/v1/flood", headers={"NGSILD-Tenant": town.tenant}).json()
    assert public["gauges"][0]["level"] == 2 and len(public["gauges"][0]["series"]) == 3


def test_a_silent_beacon_floods_its_spot_once(town):
    flood = town.watch.flood
    tags = {0.1: "bcn-10", 0.2: "bcn-20", 0.3: "bcn-30"}
    entity_id = flood.create_spot(
        town.tenant, "s1", "アンダーパス", "Underpass", 34.75, 134.84, tags
    )
    now = datetime.now(UTC)
    heard = [
        {"id": f"h-{tag}-{m}", "tag": tag, "at": (now - timedelta(minutes=m)).isoformat()}
        for tag in tags.values()
        for m in (60, 45)
    ] + [{"id": "h-top", "tag": "bcn-30", "at": now.isoformat()}]
    result = town.client.post(
        "/watch/v1/detections", json={"detections": heard}, headers=town.as_device("rx-1")
    ).json()
    assert result["accepted"] == 0  # beacons are not people: no detection rows
    assert flood.check_spots(now) == 1
    assert flood.check_spots(now) == 0  # once
    services = town.app.state.services
    scope = services.tenants.scope(SYSTEM, town.tenant, write=False)
    spot = services.broker.retrieve(scope, services.broker.contexts.core, entity_id, Rendering())
    assert spot["floodDepth"]["value"] == 0.2 and spot["alertLevel"]["value"] == 2
    page = town.client.get(f"/watch/flood?town={town.tenant}")
    assert "冠水 20cm" in page.text


def test_each_crossing_alerts_exactly_once_through_the_broker_subscription(sqlite_town):
    """Readings → alertLevel changes → the broker's subscription notifies over real HTTP →
    one recorded alert per crossing; a redelivered notification records nothing more."""
    import time

    from kizuna.problems import Problem
    from tests.browser import live_server
    from tests.watch.mqtt_helpers import wait_for

    town = sqlite_town
    with live_server(town.app) as base:
        town.app.state.services.settings.public_base_url = base
        flood, device = _gauge(town)
        start = datetime.now(UTC) - timedelta(hours=4)
        levels = [-3.5, -3.01, -2.99, -3.01, -2.98, -2.5, -2.01, -1.99, -2.02, -1.7, -2.2, -3.2]
        for n, level in enumerate(levels):
            at = (start + timedelta(minutes=10 * n)).isoformat()
            flood.record_reading(device, {"level": level, "at": at})
        since = start - timedelta(hours=1)
        assert wait_for(lambda: len(flood.alerts(town.tenant, since)) >= 4, timeout=30)
        time.sleep(1.5)  # nothing more arrives
        alerts = list(reversed(flood.alerts(town.tenant, since)))
        assert [(a["previous_level"], a["level"]) for a in alerts] == [
            (0, 1),
            (1, 2),
            (2, 1),
            (1, 0),
        ]
        # Replaying a notification (as a retrying notifier would) records nothing new.
        services = town.app.state.services
        scope = services.tenants.scope(SYSTEM, town.tenant, write=False)
        sub = services.subscriptions.retrieve(
            scope,
            services.broker.contexts.core,
            f"urn:ngsi-ld:Subscription:kizuna-watch-flood:{town.tenant}",
        )
        key = sub["notification"]["endpoint"]["receiverInfo"][0]["value"]
        entity = {
            "id": f"urn:ngsi-ld:WaterLevelGauge:{town.tenant}:g1",
            "type": "WaterLevelGauge",
            "alertLevel": {
                "type": "Property",
                "value": 1,
                "observedAt": alerts[0]["at"].isoformat().replace("+00:00", "Z"),
            },
            "previousAlertLevel": {"type": "Property", "value": 0},
        }
        replay = town.client.post(
            "/watch/v1/flood/alerts",
            json={"id": "urn:x", "type": "Notification", "data": [entity]},
            headers={"NGSILD-Tenant": town.tenant, "X-Kizuna-Watch-Key": key},
        )
        assert replay.status_code == 204
        assert len(flood.alerts(town.tenant, since)) == 4
        with pytest.raises(Problem):
            flood.receive_alerts(town.tenant, "forged", {"data": [entity]})
        page = town.client.get(f"/watch/flood?town={town.tenant}")
        assert "この24時間の警報" in page.text
