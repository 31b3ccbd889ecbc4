"""Ingestion over a real Mosquitto: end to end, a broker restart mid-stream, fuzzing."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime

import orjson
import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from kizuna.watch.ingest import Message, MqttIngestor
from kizuna.watch.models import detections
from tests.conftest import require_service
from tests.watch.conftest import STATION, build_town, detection
from tests.watch.mqtt_helpers import MOSQUITTO, PrivateMosquitto, publisher, wait_for

pytestmark = pytest.mark.mqtt


def _stored(town) -> int:  # noqa: ANN001
    with town.watch.engine.connect() as conn:
        return conn.execute(
            select(func.count()).where(detections.c.tenant_id == town.tenant)
        ).scalar_one()


def _ingestor(town, url: str, prefix: str) -> MqttIngestor:  # noqa: ANN001
    ingestor = MqttIngestor(
        town.watch,
        town.watch.flood,
        url,
        prefix=prefix,
        client_id=f"kz-test-{uuid.uuid4().hex[:8]}",
    )
    ingestor.start()
    assert ingestor.wait_connected(10), "the consumer did not connect"
    return ingestor


def _key(town, device: str) -> str:  # noqa: ANN001
    return town.credentials[device].split(":", 1)[1]


def test_publish_reaches_the_guardian_api(engine, tmp_path):
    require_service("Mosquitto", "127.0.0.1", 1883)
    town = build_town(engine, tmp_path)
    prefix = f"kztest{uuid.uuid4().hex[:6]}"
    ingestor = _ingestor(town, "mqtt://127.0.0.1:1883", prefix)
    pub = publisher(1883, f"kz-pub-{uuid.uuid4().hex[:8]}")
    try:
        tag = town.tags["hanako"]
        topic = f"{prefix}/{town.tenant}/rx-1/detections"
        batch = {"key": _key(town, "rx-1"), "detections": [detection(n, tag) for n in range(5)]}
        pub.publish(topic, orjson.dumps(batch), qos=1).wait_for_publish(5)
        single = {"key": _key(town, "phone-vol"), **detection(99, tag, lat=34.77, lon=134.85)}
        pub.publish(f"{prefix}/{town.tenant}/phone-vol/detections", orjson.dumps(single), qos=1)
        # A repeat of the same detections (a device that missed its acknowledgement).
        pub.publish(topic, orjson.dumps(batch), qos=1).wait_for_publish(5)
        assert wait_for(
            lambda: _stored(town) == 6 and ingestor.stats.duplicates == 5, timeout=60
        ), (
            _stored(town),
            ingestor.stats.snapshot(),
        )
        headers = town.as_user("hanako")
        trail = town.client.get(f"/watch/v1/tags/{tag}/trail", headers=headers).json()
        assert len(trail) == 6
        last = town.client.get(f"/watch/v1/tags/{tag}", headers=headers).json()["last_seen"]
        assert last is not None
        # The other guardian sees nothing of it.
        assert (
            town.client.get(f"/watch/v1/tags/{tag}/trail", headers=town.as_user("taro")).status_code
            == 404
        )
    finally:
        pub.loop_stop()
        pub.disconnect()
        ingestor.stop()
        town.client.__exit__(None, None, None)


@pytest.mark.skipif(not MOSQUITTO.exists(), reason="/usr/sbin/mosquitto is not installed")
def test_a_broker_restart_mid_stream_loses_no_qos1_detection(sqlite_engine, tmp_path):
    broker = PrivateMosquitto(tmp_path)
    broker.start()
    town = build_town(sqlite_engine, tmp_path)
    prefix = "kzrestart"
    ingestor = _ingestor(town, broker.url, prefix)
    pub = publisher(broker.port, "kz-restart-publisher")
    total = 3_000
    tag = town.tags["hanako"]
    topic = f"{prefix}/{town.tenant}/rx-1/detections"
    key = _key(town, "rx-1")
    now = datetime.now(UTC)

    half = threading.Event()

    def publish_all() -> None:
        for n in range(total):
            payload = {"key": key, **detection(n, tag, at=now)}
            pub.publish(topic, orjson.dumps(payload), qos=1)
            if n == total // 2:
                half.set()  # the broker goes down now; publishing goes on meanwhile
            if n % 100 == 0:
                time.sleep(0.05)

    sender = threading.Thread(target=publish_all)
    try:
        sender.start()
        assert half.wait(30)
        broker.stop()  # mid-stream: messages in flight both ways, more being published
        time.sleep(1.0)
        broker.start()
        sender.join(timeout=60)
        assert wait_for(lambda: _stored(town) == total, timeout=60), (
            f"stored {_stored(town)} of {total}; stats {ingestor.stats.snapshot()}"
        )
        # It reconnected by itself.
        assert wait_for(lambda: ingestor.stats.connects >= 2, timeout=15)
        assert _stored(town) == total
    finally:
        pub.loop_stop()
        pub.disconnect()
        ingestor.stop()
        broker.stop()
        town.client.__exit__(None, None, None)


@pytest.mark.skipif(not MOSQUITTO.exists(), reason="/usr/sbin/mosquitto is not installed")
def test_stored_messages_are_acknowledged_so_a_resumed_session_gets_no_repeats(
    sqlite_engine, tmp_path
):
    broker = PrivateMosquitto(tmp_path)
    broker.start()
    town = build_town(sqlite_engine, tmp_path)
    client_id = f"kz-ack-{uuid.uuid4().hex[:8]}"

    def consumer() -> MqttIngestor:
        ingestor = MqttIngestor(
            town.watch, town.watch.flood, broker.url, prefix="kzack", client_id=client_id
        )
        ingestor.start()
        assert ingestor.wait_connected(10)
        return ingestor

    pub = publisher(broker.port, f"kz-ack-pub-{uuid.uuid4().hex[:8]}")
    topic = f"kzack/{town.tenant}/rx-1/detections"
    key, tag = _key(town, "rx-1"), town.tags["hanako"]
    first = consumer()
    try:
        for n in range(50):
            pub.publish(topic, orjson.dumps({"key": key, **detection(n, tag)}), qos=1)
        assert wait_for(lambda: first.stats.accepted == 50, timeout=30), first.stats.snapshot()
        time.sleep(0.5)  # the PUBACKs of the last batch are on their way
        first.stop()
        second = consumer()  # the same session: whatever was not acknowledged comes again
        pub.publish(topic, orjson.dumps({"key": key, **detection(50, tag)}), qos=1)
        assert wait_for(lambda: second.stats.accepted == 1, timeout=30), second.stats.snapshot()
        time.sleep(0.5)
        assert second.stats.duplicates == 0, second.stats.snapshot()
        assert _stored(town) == 51
        second.stop()
    finally:
        pub.loop_stop()
        pub.disconnect()
        broker.stop()
        town.client.__exit__(None, None, None)


def test_while_storage_is_unavailable_nothing_is_acknowledged_or_dropped(sqlite_engine, tmp_path):
    require_service("Mosquitto", "127.0.0.1", 1883)
    town = build_town(sqlite_engine, tmp_path)
    prefix = f"kzdown{uuid.uuid4().hex[:6]}"
    store = town.watch.store
    failures = []

    def flaky_store(prepared):  # noqa: ANN001, ANN202
        if len(failures) < 2:
            failures.append(1)
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
        return store(prepared)

    town.watch.store = flaky_store
    ingestor = _ingestor(town, "mqtt://127.0.0.1:1883", prefix)
    pub = publisher(1883, f"kz-down-{uuid.uuid4().hex[:8]}")
    try:
        topic = f"{prefix}/{town.tenant}/rx-1/detections"
        key, tag = _key(town, "rx-1"), town.tags["hanako"]
        for n in range(20):
            pub.publish(topic, orjson.dumps({"key": key, **detection(n, tag)}), qos=1)
        assert wait_for(lambda: _stored(town) == 20, timeout=30), ingestor.stats.snapshot()
        stats = ingestor.stats.snapshot()
        assert stats["store_retries"] >= 2
        assert (stats["messages"], stats["accepted"], stats["rejected_total"]) == (20, 20, 0)
    finally:
        pub.loop_stop()
        pub.disconnect()
        ingestor.stop()
        town.client.__exit__(None, None, None)


def test_mqtt5_publish_properties_do_not_disturb_the_payload(sqlite_engine, tmp_path):
    require_service("Mosquitto", "127.0.0.1", 1883)
    town = build_town(sqlite_engine, tmp_path)
    prefix = f"kzprop{uuid.uuid4().hex[:6]}"
    ingestor = _ingestor(town, "mqtt://127.0.0.1:1883", prefix)
    pub = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"kz-prop-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    pub.connect("127.0.0.1", 1883)
    pub.loop_start()
    try:
        properties = Properties(PacketTypes.PUBLISH)
        properties.ContentType = "application/json"
        properties.UserProperty = [("firmware", "rx-2.1" * 40)]  # > 127 bytes of properties
        body = {"key": _key(town, "rx-1"), **detection(1, town.tags["hanako"])}
        topic = f"{prefix}/{town.tenant}/rx-1/detections"
        pub.publish(topic, orjson.dumps(body), qos=1, properties=properties).wait_for_publish(5)
        pub.publish(topic, orjson.dumps({**body, "id": "qos0-1"}), qos=0).wait_for_publish(5)
        assert wait_for(lambda: _stored(town) == 2, timeout=30), ingestor.stats.snapshot()
        assert ingestor.stats.snapshot()["rejected_total"] == 0
    finally:
        pub.loop_stop()
        pub.disconnect()
        ingestor.stop()
        town.client.__exit__(None, None, None)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_detection_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=90) | st.integers(0, 10**12),
        "tag": st.text(max_size=70) | st.none(),
        "at": st.text(max_size=40)
        | st.datetimes().map(lambda d: d.isoformat())
        | st.integers(0, 10**12),
        "lat": st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=5),
        "lon": st.floats(allow_nan=True, allow_infinity=True) | st.booleans(),
        "rssi": st.integers(min_value=-1000, max_value=1000) | st.text(max_size=3),
        "key": st.text(max_size=30),
    },
)
_payloads = st.one_of(
    st.binary(max_size=200),
    _json_values.map(orjson.dumps),
    _detection_like.map(orjson.dumps),
    st.lists(_detection_like, max_size=5).map(lambda items: orjson.dumps({"detections": items})),
)
_topics = st.sampled_from(
    [
        "kzfuzz/{t}/rx-1/detections",
        "kzfuzz/{t}/rx-1/reading",
        "kzfuzz/{t}/nobody/detections",
        "kzfuzz/{t}/rx-1/other",
        "kzfuzz/{t}/rx-1",
        "kzfuzz/other-town/rx-1/detections",
    ]
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(st.tuples(_topics, _payloads, st.booleans()), min_size=1, max_size=8))
def test_malformed_payloads_are_counted_and_never_stop_ingestion(sqlite_town, batch):
    """Fuzz the consumer's message handling directly (hundreds of cases, no network)."""
    town = sqlite_town
    ingestor = MqttIngestor(town.watch, town.watch.flood, "mqtt://127.0.0.1:1", prefix="kzfuzz")
    messages = []
    for n, (topic, payload, with_key) in enumerate(batch):
        body = payload
        if with_key and payload.startswith(b"{") and payload.endswith(b"}") and len(payload) > 2:
            body = b'{"key":"' + _key(town, "rx-1").encode() + b'",' + payload[1:]
        messages.append(Message(topic.format(t=town.tenant), body, n, 1))
    before = _stored(town)
    ingestor.process(messages)  # must not raise
    stats = ingestor.stats.snapshot()
    assert stats["messages"] == len(messages)
    assert _stored(town) - before == stats["accepted"]
    # Nothing valid-looking slips in: every stored row is a well-formed detection.
    with town.watch.engine.connect() as conn:
        rows = conn.execute(select(detections).where(detections.c.tenant_id == town.tenant)).all()
    assert all(r.detector_id == "rx-1" and r.tag_id and r.lat and r.lon for r in rows)


def test_malformed_messages_over_real_mqtt_are_counted_and_ingestion_goes_on(
    sqlite_engine, tmp_path
):
    require_service("Mosquitto", "127.0.0.1", 1883)
    town = build_town(sqlite_engine, tmp_path)
    prefix = f"kzfz{uuid.uuid4().hex[:6]}"
    ingestor = _ingestor(town, "mqtt://127.0.0.1:1883", prefix)
    pub = publisher(1883, f"kz-fuzz-{uuid.uuid4().hex[:8]}")
    try:
        topic = f"{prefix}/{town.tenant}/rx-1/detections"
        bad = [
            b"",
            b"\xff\xfe",
            b"[]",
            b"null",
            b'{"detections": "x"}',
            b'{"key": 1}',
            orjson.dumps({"key": "wrong", **detection(1, "t")}),
            orjson.dumps({"key": _key(town, "rx-1"), "detections": [{"id": "x"}]}),
            orjson.dumps({"key": _key(town, "rx-1"), "detections": [1] * 1001}),
            b"{" * 10_000,
        ]
        for payload in bad:
            pub.publish(topic, payload, qos=1)
        pub.publish(f"{prefix}/{town.tenant}/nobody/detections", b"{}", qos=1)
        good = {
            "key": _key(town, "rx-1"),
            **detection(7, town.tags["taro"], lat=STATION[0], lon=STATION[1]),
        }
        pub.publish(topic, orjson.dumps(good), qos=1).wait_for_publish(5)
        assert wait_for(lambda: _stored(town) == 1, timeout=60), ingestor.stats.snapshot()
        stats = ingestor.stats.snapshot()
        assert stats["rejected_total"] >= len(bad)
        assert {"bad_json", "bad_credential", "unknown_device", "too_large", "bad_tag"} <= set(
            stats["rejected"]
        )
    finally:
        pub.loop_stop()
        pub.disconnect()
        ingestor.stop()
        town.client.__exit__(None, None, None)
