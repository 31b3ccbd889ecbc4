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
import sqlite3
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from kizuna.watch.detections import Prepared, Stored
from kizuna.watch.devices import Rejected
from kizuna.watch.flood import FloodWatch
from kizuna.watch.service import WatchService

log = logging.getLogger("kizuna.watch.ingest")
MAX_PAYLOAD = 256 * 1024
MAX_ITEMS = 1_000
# The broker may have this many unacknowledged QoS 1 messages on their way to us (MQTT 5
# Receive Maximum): enough to fill a batch while the previous one commits.
RECEIVE_MAXIMUM = 20_000
# Packets read per wake-up of the network thread (paho reads one per select() otherwise).
READ_BURST = 1_000


@dataclass(slots=True)
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    # Which connection it came on: a packet id means nothing on a later connection.
    connection: int = 0


class _Client(mqtt.Client):
    """paho's MQTT 5 client with a lean path for the one thing a consumer does most.

    Per QoS 1 message paho would run a ``select()``, build a ``Properties`` object (a third
    of its time per message), match the topic against callbacks, and later write one
    PUBACK with a wake-up of its network thread. Here a burst of packets is read per
    wake-up, a QoS 1 PUBLISH is decoded in place and handed to ``deliver``, and a batch's
    PUBACKs go out as one write. This leans on paho 2.x internals (``_in_packet``,
    ``_packet_read``, ``_packet_queue``); the version is bounded in pyproject.toml.
    Anything else (QoS 0, an odd packet) takes paho's own path.
    """

    deliver: Callable[[str, bytes, int], None]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        for _ in range(max(max_packets, READ_BURST)):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
            if rc > 0:
                return self._loop_rc_handle(rc)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_publish(self) -> MQTTErrorCode:
        header = self._in_packet["command"]
        data = self._in_packet["packet"]
        if header & 0x06 != 0x02:  # not QoS 1
            return super()._handle_publish()
        try:
            end = 2 + int.from_bytes(data[0:2], "big")
            topic = data[2:end].decode()
            mid = int.from_bytes(data[end : end + 2], "big")
            props_len, start = _varint(data, end + 2)
        except (UnicodeDecodeError, IndexError):
            return super()._handle_publish()
        self.deliver(topic, bytes(data[start + props_len :]), mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_all(self, mids: list[int]) -> None:
        """PUBACK (success, no properties) for QoS 1 packet ids, queued as one write."""
        if mids:
            packets = b"".join(_PUBACK.pack(0x40, 2, mid) for mid in mids)
            self._packet_queue(0x40, packets, 0, 0)


def _varint(data: bytearray, pos: int) -> tuple[int, int]:
    """MQTT variable byte integer at ``pos``: (value, position after it)."""
    value = 0
    for i in range(4):
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value, pos + i + 1
    raise IndexError("variable byte integer longer than 4 bytes")


_PUBACK = struct.Struct("!BBH")


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


def unavailable(exc: BaseException) -> bool:
    """Whether storage failed as a whole (down, locked, connection lost), not on one message."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _UNAVAILABLE)


# Raw driver errors too: the PostgreSQL COPY path talks to psycopg directly.
_UNAVAILABLE = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    sqlite3.OperationalError,
    sqlite3.InterfaceError,
)


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
        # Filled by the network thread, drained by the writer (deque appends are atomic).
        self._inbox: deque[Message] = deque()
        self._arrived = threading.Event()
        self._connection = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self._client.max_inflight_messages_set(100)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(min_delay=0.2, max_delay=5)
        self._client.deliver = self._receive
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
        self._connection += 1
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

    def _receive(self, topic: str, payload: bytes, mid: int) -> None:
        """A QoS 1 message (the client's lean path)."""
        self._enqueue(Message(topic, payload, mid, 1, self._connection))

    def _on_message(self, _client, _userdata, msg) -> None:  # noqa: ANN001
        """Any other message (paho's own path, e.g. a device publishing at QoS 0)."""
        self._enqueue(Message(msg.topic, msg.payload, msg.mid, msg.qos, self._connection))

    def _enqueue(self, message: Message) -> None:
        self._inbox.append(message)
        if not self._arrived.is_set():
            self._arrived.set()

    # --- the writer --------------------------------------------------------------------

    def _take(self) -> list[Message]:
        """What arrived within ``batch_wait`` of the first message (at most ``batch_max``)."""
        if not self._arrived.wait(0.2):
            return []
        self._arrived.clear()
        if len(self._inbox) < self.batch_max:
            time.sleep(self.batch_wait)  # group commit: let more arrive
        batch: list[Message] = []
        inbox = self._inbox
        while inbox and len(batch) < self.batch_max:
            batch.append(inbox.popleft())
        if inbox:
            self._arrived.set()
        return batch

    def _run(self) -> None:
        batch: list[Message] = []
        while not self._stop.is_set():
            batch = batch or self._take()
            if not batch:
                continue
            try:
                self.process(batch)
            except Exception:  # noqa: BLE001 - the loop must survive anything
                # Storage is unavailable: keep the batch, unacknowledged, and try again.
                self.stats.store_retries += 1
                log.exception("watch ingest batch not stored; retrying, nothing acknowledged")
                self._stop.wait(1)
                continue
            self._acknowledge(batch)
            batch = []

    def _acknowledge(self, batch: list[Message]) -> None:
        # A packet id from an earlier connection may name another message by now; the
        # broker redelivers those after the reconnect and the repeat is dropped by its id.
        current = self._connection
        self._client.ack_all([m.mid for m in batch if m.qos == 1 and m.connection == current])

    def process(self, batch: list[Message]) -> None:
        """Parse, validate and store a batch; returns once everything valid is stored.

        Raises only when storage is unavailable (then nothing of the batch may be
        acknowledged; it is counted once it goes through).
        """
        prepared: list[tuple[Message, Prepared]] = []
        refused: list[tuple[str, str, str]] = []
        for message in batch:
            try:
                item = self._parse(message)
            except Rejected as exc:
                refused.append((exc.reason, exc.detail, message.topic))
                continue
            except Exception as exc:  # noqa: BLE001 - never let one message stop the rest
                if unavailable(exc):
                    raise
                refused.append(("internal", repr(exc)[:200], message.topic))
                continue
            if item is not None:
                prepared.append((message, item))
        if prepared:
            self._store(prepared, refused)
        self.stats.add(messages=len(batch))
        for reason, detail, topic in refused:
            self.stats.reject(reason, detail, topic)

    def _store(
        self, prepared: list[tuple[Message, Prepared]], refused: list[tuple[str, str, str]]
    ) -> None:
        try:
            results = self.watch.store([p for _, p in prepared])
        except Exception as exc:  # noqa: BLE001 - narrowed down below
            if unavailable(exc):
                raise
            results = self._store_one_by_one(prepared, refused)
        for (message, p), result in zip(prepared, results, strict=True):
            if result is None:
                continue
            self.stats.add(accepted=result.accepted, duplicates=result.duplicates)
            for error in p.errors:
                refused.append(
                    (error["reason"], f"item {error['index']}: {error['detail']}", message.topic)
                )

    def _store_one_by_one(
        self, prepared: list[tuple[Message, Prepared]], refused: list[tuple[str, str, str]]
    ) -> list[Stored | None]:
        """Find the messages the database refuses; the rest are stored."""
        results: list[Stored | None] = []
        for message, p in prepared:
            try:
                results.append(self.watch.store([p])[0])
            except Exception as exc:  # noqa: BLE001
                if unavailable(exc):
                    raise
                refused.append(("store_failed", repr(exc)[:200], message.topic))
                results.append(None)
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
