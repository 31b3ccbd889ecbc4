"""Notification delivery with real processes: a `kizuna serve` on PostgreSQL, real
receivers, a real Mosquitto. Nothing is mocked.

* an HTTP endpoint that is down for a while, then up, receives every notification;
* `kill -9` of the server with notifications pending, a restart, and every one arrives;
* Mosquitto restarted mid-stream: MQTT delivery resumes and nothing is missing;
* an endpoint that hangs does not delay notifications to a healthy one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from kizuna.storage import create_engine_for, upgrade_to_head
from tests.broker.receiver import Receiver
from tests.conftest import PG_ADMIN_URL, require_service

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A fresh, migrated schema of its own: no other test's outbox rows in sight."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    schema = f"kz_notify_{uuid.uuid4().hex[:10]}"
    admin = create_engine_for(PG_ADMIN_URL, pool_size=1)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    engine = create_engine_for(url, pool_size=1)
    upgrade_to_head(engine)
    engine.dispose()
    yield url
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


class Server:
    """`kizuna serve` in a child process, with fast retries for the test's time budget."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/ngsi-ld/v1"
        self.env = {
            **os.environ,
            "KIZUNA_DATABASE_URL": database_url,
            "KIZUNA_DATA_DIR": str(workdir),
            "KIZUNA_PORT": str(self.port),
            "KIZUNA_OPEN_ACCESS": "true",
            "KIZUNA_NOTIFY_BACKOFF_BASE": "0.2",
            "KIZUNA_NOTIFY_BACKOFF_MAX": "1",
            "KIZUNA_NOTIFY_LEASE_SECONDS": "3",
            "KIZUNA_NOTIFY_TIMEOUT": "2",
        }
        self.log = workdir / f"server-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.http = httpx.Client(timeout=10)

    def start(self) -> Server:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kizuna.cli", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if self.http.get(f"http://127.0.0.1:{self.port}/health").status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"kizuna serve did not start: {self.log.read_text()[-2000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill(signal.SIGTERM)
        self.http.close()

    def post(self, path: str, body: object) -> httpx.Response:
        response = self.http.post(f"{self.base}{path}", json=body)
        assert response.status_code < 300, response.text
        return response

    def patch(self, path: str, body: object) -> None:
        response = self.http.patch(f"{self.base}{path}", json=body)
        assert response.status_code == 204, response.text


@pytest.fixture
def server(pg_schema_url: str, tmp_path: Path) -> Iterator[Server]:
    s = Server(pg_schema_url, tmp_path).start()
    yield s
    s.stop()


def _subscribe(server: Server, uri: str, **notification: object) -> None:
    server.post(
        "/subscriptions",
        {
            "type": "Subscription",
            "entities": [{"type": "Gauge"}],
            "notification": {"endpoint": {"uri": uri, **notification}},
        },
    )


def _levels(bodies: list) -> set[int]:
    return {body["data"][0]["level"]["value"] for body in bodies}


def _updates(server: Server, count: int, start: int = 0, pause: float = 0.0) -> list[float]:
    """Update the gauge ``count`` times; returns the time each write was acknowledged."""
    acked = []
    for level in range(start, start + count):
        server.patch("/entities/urn:ngsi-ld:Gauge:1/attrs", {"level": level})
        acked.append(time.time())
        if pause:
            time.sleep(pause)
    return acked


def _wait_levels(get_bodies, wanted: set[int], timeout: float) -> set[int]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if wanted <= _levels(get_bodies()):
            break
        time.sleep(0.05)
    return _levels(get_bodies())


def _create_gauge(server: Server) -> None:
    server.post("/entities", {"id": "urn:ngsi-ld:Gauge:1", "type": "Gauge", "level": -1})


def test_endpoint_down_for_a_while_then_up_receives_every_notification(server):
    port = free_port()
    _subscribe(server, f"http://127.0.0.1:{port}/notify", accept="application/json")
    _create_gauge(server)
    _updates(server, 30)
    time.sleep(3)  # every delivery fails meanwhile and is retried with backoff
    receiver = Receiver(port=port)
    try:
        got = _wait_levels(lambda: receiver.bodies, set(range(30)), timeout=12)
        assert set(range(30)) <= got
    finally:
        receiver.close()


PERIODIC = "urn:ngsi-ld:Subscription:periodic"


@pytest.fixture
def slow_poll_server(pg_schema_url: str, tmp_path: Path) -> Iterator[Server]:
    """A server that polls the outbox once a minute: what arrives sooner was woken."""
    s = Server(pg_schema_url, tmp_path)
    s.env["KIZUNA_NOTIFY_POLL_INTERVAL"] = "60"
    yield s.start()
    s.stop()


def test_notifications_go_out_at_once_without_waiting_for_a_poll(slow_poll_server):
    """The worker is woken after the COMMIT that wrote outbox rows (waking it before the
    COMMIT let its claim miss them until the next poll) and after periodic ones are due."""
    server = slow_poll_server
    receiver = Receiver()
    try:
        _subscribe(server, receiver.url, accept="application/json")
        _create_gauge(server)
        for level in range(5):  # each within seconds, where the poll would take a minute
            _updates(server, 1, start=level)
            assert level in _wait_levels(lambda: receiver.bodies, {level}, timeout=10)
        server.post(
            "/subscriptions",
            {
                "id": PERIODIC,
                "type": "Subscription",
                "entities": [{"type": "Gauge"}],
                "timeInterval": 1,
                "notification": {"endpoint": {"uri": receiver.url}},
            },
        )
        time.sleep(4)
        assert len([b for b in receiver.bodies if b["subscriptionId"] == PERIODIC]) >= 2
    finally:
        receiver.close()


def test_retries_come_when_due_without_waiting_for_a_poll(slow_poll_server):
    """A failed delivery wakes the worker when its retry is due, so a long poll interval
    (the idle cost) does not delay recovery."""
    server = slow_poll_server
    port = free_port()
    _subscribe(server, f"http://127.0.0.1:{port}/notify", accept="application/json")
    _create_gauge(server)
    _updates(server, 10)
    time.sleep(1.5)  # deliveries fail and are retried (backoff 0.2 s doubling to 1 s)
    receiver = Receiver(port=port)
    try:
        got = _wait_levels(lambda: receiver.bodies, set(range(10)), timeout=15)
        assert set(range(10)) <= got
    finally:
        receiver.close()


def test_kill_9_with_notifications_pending_then_restart_delivers_every_one(server):
    port = free_port()
    _subscribe(server, f"http://127.0.0.1:{port}/notify")
    _create_gauge(server)
    _updates(server, 30)
    time.sleep(0.5)  # some rows are claimed (leased) by the worker when it dies
    server.kill(signal.SIGKILL)
    receiver = Receiver(port=port)
    try:
        server.start()
        got = _wait_levels(lambda: receiver.bodies, set(range(30)), timeout=15)
        assert set(range(30)) <= got
        ids = [b["id"] for b in receiver.bodies]
        assert len(set(ids)) >= 30  # duplicates possible (at-least-once), by stable id
    finally:
        receiver.close()


def test_a_hanging_endpoint_does_not_delay_a_healthy_one(server):
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(100)
    held: list[socket.socket] = []

    def accept_and_hold() -> None:
        while True:
            try:
                conn, _ = hanging.accept()
            except OSError:
                return
            held.append(conn)  # never answered

    threading.Thread(target=accept_and_hold, daemon=True).start()
    healthy = Receiver()
    try:
        _subscribe(server, f"http://127.0.0.1:{hanging.getsockname()[1]}/notify")
        _subscribe(server, healthy.url)
        _create_gauge(server)
        healthy.wait_for(1)
        acked = _updates(server, 40, pause=0.05)
        got = _wait_levels(lambda: healthy.bodies, set(range(40)), timeout=10)
        assert set(range(40)) <= got
        arrival = {}
        for _, body, at in healthy.received:
            arrival.setdefault(body["data"][0]["level"]["value"], at)
        latencies = sorted(arrival[level] - acked[level] for level in range(40))
        # The hanging endpoint holds its 8 slots for the 2 s timeout again and again;
        # the healthy one must not wait for any of that.
        assert latencies[-1] < 1.0, latencies
    finally:
        healthy.close()
        hanging.close()
        for conn in held:
            conn.close()


@pytest.mark.mqtt
def test_mosquitto_restart_mid_stream_and_mqtt_delivery_resumes(server, tmp_path):
    import orjson
    import paho.mqtt.client as mqtt

    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"persistence true\npersistence_location {tmp_path}/\n"
    )

    def start_broker() -> subprocess.Popen:
        broker = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return broker
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    broker = start_broker()
    received: list[dict] = []
    lock = threading.Lock()
    # A persistent session (QoS 1), so messages published while this subscriber
    # reconnects are kept for it by the broker.
    subscriber = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"kz-{uuid.uuid4().hex[:8]}",
        clean_session=False,
    )
    subscriber.on_connect = lambda c, *_: c.subscribe("kizuna/gauges", qos=1)

    def on_message(_client, _userdata, message) -> None:
        with lock:
            received.append(orjson.loads(message.payload)["body"])

    subscriber.on_message = on_message
    subscriber.reconnect_delay_set(0.1, 0.5)
    subscriber.connect("127.0.0.1", port)
    subscriber.loop_start()
    try:
        _subscribe(
            server,
            f"mqtt://127.0.0.1:{port}/kizuna/gauges",
            notifierInfo=[{"key": "MQTT-QoS", "value": "1"}],
        )
        _create_gauge(server)
        _updates(server, 10, pause=0.05)
        broker.send_signal(signal.SIGTERM)  # a restart: it saves its sessions and stops
        broker.wait(timeout=10)
        _updates(server, 10, start=10, pause=0.05)  # written while the broker is down
        time.sleep(1)
        broker = start_broker()
        _updates(server, 10, start=20, pause=0.05)

        def bodies() -> list[dict]:
            with lock:
                return list(received)

        got = _wait_levels(bodies, set(range(30)), timeout=15)
        assert set(range(30)) <= got
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
        broker.terminate()
        broker.wait(timeout=10)
