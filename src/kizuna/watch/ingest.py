"""The MQTT consumer: devices' detections and gauge readings into storage.

Topics (one tree per tenant)::

    <prefix>/<tenant>/<device id>/detections   {"key": "<secret>", "detections": [{...}, ...]}
                                                (or one detection object with "key")
    <prefix>/<tenant>/<device id>/reading      {"key": "<secret>", "level": -2.41, "at": "..."}

A detection is ``{"id", "tag", "at", "lat"?, "lon"?, "rssi"?}``. Messages arrive with QoS 1
on a persistent session (fixed client id, clean_session off) and are **acknowledged only
after the transaction that stores them commits**, so neither a crash of Kizuna nor a
restart of the broker loses one; redeliveries are dropped by the detection id. Malformed
messages are counted per reason, logged (rate-limited) and acknowledged: they never stop
ingestion. The client reconnects by itself after the broker goes away.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kizuna.watch.flood import FloodWatch
from kizuna.watch.service import Prepared, Rejected, WatchService

log = logging.getLogger("kizuna.watch.ingest")
MAX_PAYLOAD = 256 * 1024
MAX_ITEMS = 1_000
# The broker may have this many unacknowledged QoS 1 messages on their way to us (MQTT 5
# Receive Maximum): enough to fill a batch while the previous one commits.
RECEIVE_MAXIMUM = 20_000


@dataclass
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int


class IngestStats:
    """Counters of one consumer (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages = 0
        self.accepted = 0
        self.duplicates = 0
        self.readings = 0
        self.rejected: Counter[str] = Counter()
        self.connects = 0
        self.store_retries = 0
        self._logged: dict[str, tuple[float, int]] = {}

    def add(
        self, *, messages: int = 0, accepted: int = 0, duplicates: int = 0, readings: int = 0
    ) -> None:
        with self._lock:
            self.messages += messages
            self.accepted += accepted
            self.duplicates += duplicates
            self.readings += readings

    def reject(self, reason: str, detail: str, topic: str, count: int = 1) -> None:
        with self._lock:
            self.rejected[reason] += count
            window, logged = self._logged.get(reason, (0.0, 0))
            now = time.monotonic()
            if now - window > 60:
                window, logged = now, 0
            self._logged[reason] = (window, logged + 1)
        if logged < 20:  # at most 20 log lines per reason per minute; all are counted
            log.warning("rejected MQTT message on %s: %s %s", topic, reason, detail)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "messages": self.messages,
                "accepted": self.accepted,
                "duplicates": self.duplicates,
                "readings": self.readings,
                "rejected": dict(self.rejected),
                "rejected_total": sum(self.rejected.values()),
                "connects": self.connects,
                "store_retries": self.store_retries,
            }


def parse_url(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "tcp", ""):
        raise ValueError(f"Unsupported MQTT URL {url!r} (use mqtt://host:port)")
    return parsed.hostname or "127.0.0.1", parsed.port or 1883


class MqttIngestor:
    def __init__(
        self,
        watch: WatchService,
        flood: FloodWatch,
        url: str,
        *,
        prefix: str = "kizuna",
        client_id: str = "kizuna-watch-ingest",
        batch_max: int = 5_000,
        batch_wait: float = 0.02,
    ) -> None:
        self.watch = watch
        self.flood = flood
        self.host, self.port = parse_url(url)
        self.prefix = prefix.strip("/")
        self.client_id = client_id
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.stats = IngestStats()
        self.connected = threading.Event()
        self._queue: queue.Queue[Message] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self._client.max_inflight_messages_set(100)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(min_delay=0.2, max_delay=5)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        properties = Properties(PacketTypes.CONNECT)
        # Keep the session (subscriptions and queued QoS 1 messages) for a day away.
        properties.SessionExpiryInterval = 24 * 3600
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        self._client.connect_async(
            self.host, self.port, keepalive=30, clean_start=False, properties=properties
        )
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="watch-ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._client.disconnect()
        self._client.loop_stop()

    def wait_connected(self, timeout: float = 10) -> bool:
        """Wait until connected and subscribed (SUBACK received)."""
        return self.connected.wait(timeout)

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties=None) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            log.warning("MQTT connect to %s:%s refused: %s", self.host, self.port, reason_code)
            return
        self.stats.connects += 1
        client.subscribe([(f"{self.prefix}/+/+/detections", 1), (f"{self.prefix}/+/+/reading", 1)])
        log.info("MQTT consumer connected to %s:%s", self.host, self.port)

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _properties=None) -> None:  # noqa: ANN001
        # Ready only once the broker confirmed the subscriptions: a message published
        # between CONNACK and SUBACK would not be routed to this session.
        refused = [code for code in reason_codes if code.is_failure]
        if refused:
            log.warning("MQTT subscription refused by %s:%s: %s", self.host, self.port, refused)
            return
        self.connected.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties=None) -> None:  # noqa: ANN001
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("MQTT connection lost (%s); reconnecting", reason_code)

    def _on_message(self, _client, _userdata, msg) -> None:  # noqa: ANN001
        self._queue.put(Message(msg.topic, msg.payload, msg.mid, msg.qos))

    # --- the writer --------------------------------------------------------------------

    def _take(self) -> list[Message]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.batch_max:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get(timeout=max(0.0, remaining))
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._take()
            if not batch:
                continue
            try:
                self.process(batch)
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("watch ingest batch failed; messages stay unacknowledged")
                time.sleep(1)
                continue
            for message in batch:
                if message.qos > 0:
                    self._client.ack(message.mid, message.qos)

    def process(self, batch: list[Message]) -> None:
        """Parse, validate and store a batch; only returns once everything valid is stored."""
        prepared: list[tuple[Message, Prepared]] = []
        for message in batch:
            try:
                item = self._parse(message)
            except Rejected as exc:
                self.stats.reject(exc.reason, exc.detail, message.topic)
                continue
            except Exception as exc:  # noqa: BLE001 - never let one message stop the rest
                self.stats.reject("internal", repr(exc)[:200], message.topic)
                continue
            if item is not None:
                prepared.append((message, item))
        self.stats.add(messages=len(batch))
        if not prepared:
            return
        self._store(prepared)

    def _store(self, prepared: list[tuple[Message, Prepared]]) -> None:
        results = None
        for attempt in range(3):
            try:
                results = self.watch.store([p for _, p in prepared])
                break
            except Exception:  # noqa: BLE001 - retried, then narrowed down below
                self.stats.store_retries += 1
                time.sleep(0.2 * (attempt + 1))
        if results is None:
            results = self._store_one_by_one(prepared)
        for (message, p), result in zip(prepared, results, strict=True):
            if result is None:
                continue
            self.stats.add(accepted=result.accepted, duplicates=result.duplicates)
            for error in p.errors:
                detail = f"item {error['index']}: {error['detail']}"
                self.stats.reject(error["reason"], detail, message.topic)

    def _store_one_by_one(self, prepared: list[tuple[Message, Prepared]]) -> list[Any]:
        """Find the message that cannot be stored; if none can, the database is down."""
        results: list[Any] = []
        for message, p in prepared:
            try:
                results.append(self.watch.store([p])[0])
            except Exception as exc:  # noqa: BLE001
                self.stats.reject("store_failed", repr(exc)[:200], message.topic)
                results.append(None)
        if all(r is None for r in results):
            raise RuntimeError("storage unavailable: the batch stays unacknowledged")
        return results

    def _parse(self, message: Message) -> Prepared | None:
        parts = message.topic.split("/")
        if len(parts) != 4 or parts[0] != self.prefix:
            raise Rejected("bad_topic", "expected <prefix>/<tenant>/<device>/<detections|reading>")
        _, tenant, device_id, kind = parts
        if len(message.payload) > MAX_PAYLOAD:
            raise Rejected("too_large", f"{len(message.payload)} bytes")
        try:
            body = orjson.loads(message.payload)
        except orjson.JSONDecodeError as exc:
            raise Rejected("bad_json", str(exc)[:120]) from None
        if not isinstance(body, dict):
            raise Rejected("bad_json", "the payload must be a JSON object")
        device = self.watch.authenticate_device(tenant, device_id, body.get("key"))
        if kind == "reading":
            if self.flood.record_reading(device, body):
                self.stats.add(readings=1)
            else:
                self.stats.add(duplicates=1)
            return None
        if kind != "detections":
            raise Rejected("bad_topic", f"unknown message kind {kind!r}")
        if device.kind == "gauge":
            raise Rejected("bad_topic", "gauges publish readings, not detections")
        items = body.get("detections")
        if items is None:
            items = [{k: v for k, v in body.items() if k != "key"}]
        if not isinstance(items, list) or not items:
            raise Rejected("bad_item", "'detections' must be a non-empty list")
        if len(items) > MAX_ITEMS:
            raise Rejected("too_large", f"more than {MAX_ITEMS} detections in one message")
        return self.watch.prepare(tenant, device, items)
