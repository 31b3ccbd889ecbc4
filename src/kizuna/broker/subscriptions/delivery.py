"""The delivery worker: claims due outbox rows and sends them over HTTP or MQTT.

Every ``kizuna serve`` process runs one :class:`DeliveryWorker` on its event loop.

* **Claiming.** In one short transaction the worker selects due rows (PostgreSQL:
  ``FOR UPDATE SKIP LOCKED``, so processes never take the same row; SQLite: inside the
  ``BEGIN IMMEDIATE`` write lock), keeps at most as many per endpoint as that endpoint
  has free slots, and moves their ``due_at`` one lease ahead. A worker that dies leaves
  rows that come due again when the lease runs out, and another process (or the same
  one restarted) delivers them: at-least-once, with the row's stable notification id.
* **Isolation.** Each endpoint has a bounded number of deliveries in flight and every
  request has a timeout; endpoints at their bound, or cooling off after a failure, are
  left out of claims, so one hanging or dead endpoint never holds up another.
* **Sending.** HTTP goes through :class:`~kizuna.broker.subscriptions.sender.HttpSender`
  (kept-alive connections per origin, httptools parsing: a fraction of httpx's CPU per
  POST, which is what limited delivery); MQTT through one paho client per broker.
* **Retries.** A failed row is due again after an exponential backoff (with jitter),
  until ``notify_give_up_seconds`` after it was written, when it is kept as dead.
* **Bookkeeping.** Outcomes are written in batches: delivered rows are deleted, and the
  subscription's timesSent / timesFailed / lastNotification / lastSuccess / lastFailure
  are updated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
from sqlalchemy import DateTime, Engine, bindparam, delete, event, false, func, select, update

from kizuna.broker.context import ContextStore
from kizuna.broker.subscriptions import document
from kizuna.broker.subscriptions.models import outbox, subscriptions
from kizuna.broker.subscriptions.render import (
    entity_data,
    envelope,
    how_of,
    link_url,
    notification_context,
)
from kizuna.broker.subscriptions.sender import HttpSender
from kizuna.broker.subscriptions.service import Subscriptions
from kizuna.settings import Settings
from kizuna.storage import writer
from kizuna.tenancy.service import DEFAULT_TENANT, TenantScope

log = logging.getLogger("kizuna.delivery")
_TS = DateTime(timezone=True)
_CONTEXT_REL = 'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'


@dataclass
class Job:
    pk: int
    id: str
    sub_pk: int
    endpoint: str
    attempts: int
    created_at: datetime
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    qos: int = 0
    mqtt_version: str = ""
    drop: bool = False  # nothing to send (throttled, subscription gone or not active)
    sent_noted: bool = False  # already counted as sent in the in-memory status


@dataclass
class Outcome:
    job: Job
    ok: bool
    at: datetime
    error: str | None = None


class DeliveryWorker:
    def __init__(
        self,
        engine: Engine,
        subs: Subscriptions,
        contexts: ContextStore,
        settings: Settings,
    ) -> None:
        self.engine = engine
        self.subs = subs
        self.contexts = contexts
        self.settings = settings
        self._writer = writer(engine)
        self._postgres = engine.dialect.name == "postgresql"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._flushable: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._inflight: dict[str, int] = defaultdict(int)
        self._inflight_total = 0
        self._cooling: dict[str, float] = {}  # endpoint -> monotonic time it may be tried
        self._failures: dict[str, int] = defaultdict(int)
        # (subscription pk, created_at) -> epoch seconds of its last notification (throttling)
        self._last_sent: dict[tuple[int, datetime], float] = {}
        self._outcomes: list[Outcome] = []
        self._deliveries: set[asyncio.Task] = set()
        # Connections are bounded per origin, so one origin that hangs exhausts only its own.
        self._http = HttpSender(settings.notify_timeout, max(settings.notify_per_endpoint * 4, 32))
        self._mqtt = MqttPool(settings.notify_timeout)
        self._stopping = False

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._flushable = asyncio.Event()
        self.subs.on_enqueued = self.wake
        event.listen(self.engine, "checkin", self._on_checkin)
        event.listen(self.engine, "rollback", self._on_rollback)
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="kizuna-notify-claim"),
            asyncio.create_task(self._flush_loop(), name="kizuna-notify-flush"),
            asyncio.create_task(self._periodic_loop(), name="kizuna-notify-periodic"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        self.subs.on_enqueued = None
        with contextlib.suppress(Exception):
            event.remove(self.engine, "checkin", self._on_checkin)
            event.remove(self.engine, "rollback", self._on_rollback)
        if self._deliveries:
            await asyncio.wait(self._deliveries, timeout=self.settings.notify_timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._flush)
        self._http.close()
        self._mqtt.close()

    def wake(self) -> None:
        """Ask for a claim now (from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def _wake_after(self, seconds: float) -> None:
        """Wake the claim once ``seconds`` have passed, on this process's monotonic clock.

        uvloop's timers can fire a little early (they count from the start of the loop's
        iteration); a claim woken then found the endpoint still cooling or the row not yet
        due, and it waited for the next poll (a minute in the slow-poll tests, which failed
        one run in three). So the timer re-arms until the time has really come."""
        assert self._loop is not None
        deadline = time.monotonic() + seconds

        def fire() -> None:
            left = deadline - time.monotonic()
            if left > 0:
                self._loop.call_later(left, fire)  # type: ignore[union-attr]
            else:
                self.wake()

        self._loop.call_later(seconds, fire)

    def _on_checkin(self, _dbapi_conn: Any, record: Any) -> None:
        # After the COMMIT, when the connection goes back to the pool: the "commit" event
        # comes before it, and a claim woken then could miss the rows it was woken for.
        if record.info.pop("kizuna_outbox", None) is not None:
            self.wake()

    def _on_rollback(self, conn: Any) -> None:
        conn.info.pop("kizuna_outbox", None)

    # --- loops --------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.notify_poll_interval)
            self._wake.clear()
            free = self.settings.notify_concurrency - self._inflight_total
            if free <= 0:
                continue
            try:
                jobs = await asyncio.to_thread(self._claim, free)
            except Exception:  # noqa: BLE001 - the database may be restarting; try again
                log.exception("claiming notifications failed")
                await asyncio.sleep(1)
                continue
            for job in jobs:
                if job.drop:
                    self._record(Outcome(job, True, _now(), "dropped"))
                    continue
                self._inflight[job.endpoint] += 1
                self._inflight_total += 1
                task = asyncio.create_task(self._deliver(job))
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)
            if len(jobs) >= min(free, self.settings.notify_batch):
                self._wake.set()  # more may be waiting

    async def _flush_loop(self) -> None:
        assert self._flushable is not None
        while True:
            await self._flushable.wait()
            await asyncio.sleep(0.02)  # let a burst of outcomes share one transaction
            self._flushable.clear()
            try:
                retry_in = await asyncio.to_thread(self._flush)
            except Exception:  # noqa: BLE001
                log.exception("recording notification outcomes failed")
                await asyncio.sleep(1)
                self._flushable.set()
                continue
            for delay in retry_in:  # claim again when they come due, not at the next poll
                self._wake_after(delay)

    def _record(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        assert self._flushable is not None
        self._flushable.set()

    async def _periodic_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                if await asyncio.to_thread(self.subs.run_periodic):
                    self.wake()
            except Exception:  # noqa: BLE001
                log.exception("periodic notifications failed")

    # --- claiming (in a thread) -------------------------------------------------------------

    def _claim(self, free: int) -> list[Job]:
        now = _now()
        clock = time.monotonic()
        cap = self.settings.notify_per_endpoint
        excluded = {e for e, n in self._inflight.items() if n >= cap}
        excluded |= {e for e, until in self._cooling.items() if until > clock}
        stmt = (
            select(
                outbox.c.pk,
                outbox.c.id,
                outbox.c.tenant,
                outbox.c.subscription_pk,
                outbox.c.endpoint,
                outbox.c.trigger,
                outbox.c.payload,
                outbox.c.created_at,
                outbox.c.attempts,
            )
            .where(outbox.c.dead == false(), outbox.c.due_at <= now)
            .order_by(outbox.c.due_at)
            .limit(self.settings.notify_batch)
        )
        if excluded:
            stmt = stmt.where(outbox.c.endpoint.not_in(sorted(excluded)))
        if self._postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        with self._writer.begin() as conn:
            rows = conn.execute(stmt).all()
            if not rows:
                return []
            taken = []
            per_endpoint: dict[str, int] = defaultdict(int)
            for row in rows:
                if len(taken) >= free:
                    break
                if self._inflight[row.endpoint] + per_endpoint[row.endpoint] >= cap:
                    continue
                per_endpoint[row.endpoint] += 1
                taken.append(row)
            if not taken:
                return []
            lease = now + timedelta(seconds=self.settings.notify_lease_seconds)
            conn.execute(
                update(outbox)
                .where(outbox.c.pk.in_([r.pk for r in taken]))
                .values(due_at=lease, attempts=outbox.c.attempts + 1)
            )
            docs = {
                r.pk: r
                for r in conn.execute(
                    select(
                        subscriptions.c.pk,
                        subscriptions.c.doc,
                        subscriptions.c.last_notification,
                        subscriptions.c.created_at,
                    ).where(subscriptions.c.pk.in_({r.subscription_pk for r in taken}))
                )
            }
            return [self._prepare(conn, row, docs.get(row.subscription_pk), now) for row in taken]

    def _prepare(self, conn: Any, row: Any, sub: Any, now: datetime) -> Job:
        job = Job(
            row.pk, row.id, row.subscription_pk, row.endpoint, row.attempts + 1, row.created_at
        )
        if sub is None:
            job.drop = True  # the subscription was deleted
            return job
        doc = sub.doc
        if row.trigger != "timeInterval" and document.state(doc, now) != "active":
            job.drop = True
            return job
        throttling = doc.get("throttling")
        key = (sub.pk, sub.created_at)
        if throttling and row.trigger != "timeInterval":
            last = self._last_sent.get(key)
            if last is None and sub.last_notification is not None:
                last = _aware(sub.last_notification).timestamp()
            if last is not None and now.timestamp() - last < throttling:
                job.drop = True
                return job
        if throttling:
            self._last_sent[key] = now.timestamp()
        try:
            self._render(conn, job, row, doc, now)
        except Exception as exc:  # noqa: BLE001 - e.g. a @context that is gone
            log.warning("notification %s cannot be rendered: %s", row.id, exc)
            job.drop = True
        return job

    def _render(self, conn: Any, job: Job, row: Any, doc: dict[str, Any], now: datetime) -> None:
        context = notification_context(doc)
        tm = self.contexts.term_map(context)
        how = how_of(doc, tm)
        scope = TenantScope(row.tenant, _system(), False)
        data: list[dict[str, Any]] = []
        for item in row.payload["entities"]:
            data += [e for e in entity_data(conn, scope, doc, tm, how, item, row.trigger) if e]
        body = envelope(row.id, doc["id"], row.trigger, data, now)
        endpoint = doc["notification"]["endpoint"]
        accept = endpoint.get("accept", "application/json")
        headers: dict[str, str] = {}
        if accept == "application/ld+json":
            body["@context"] = context
            for entity in data:
                entity["@context"] = context
            headers["Content-Type"] = "application/ld+json"
        else:
            headers["Content-Type"] = "application/json"
            headers["Link"] = f"<{link_url(context)}>; {_CONTEXT_REL}"
        if row.tenant != DEFAULT_TENANT:
            headers["NGSILD-Tenant"] = row.tenant
        for info in endpoint.get("receiverInfo", []):
            headers[info["key"]] = info["value"]
        notifier = {i["key"]: i["value"] for i in endpoint.get("notifierInfo", [])}
        if job.endpoint.startswith("mqtt"):
            headers.setdefault("Link", f"<{link_url(context)}>; {_CONTEXT_REL}")
            job.body = orjson.dumps({"metadata": headers, "body": body})
            job.qos = int(notifier.get("MQTT-QoS", "0"))
            job.mqtt_version = notifier.get("MQTT-Version", "mqtt3.1.1")
        else:
            job.body = orjson.dumps(body)
            job.headers = headers

    # --- sending ------------------------------------------------------------------------

    async def _deliver(self, job: Job) -> None:
        error = None
        try:
            if job.endpoint.startswith("mqtt"):
                await self._mqtt.publish(job.endpoint, job.body, job.qos, job.mqtt_version)
            else:
                status = await self._http.post(
                    job.endpoint, job.body, job.headers, lambda: self._note_sent(job)
                )
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
        except Exception as exc:  # noqa: BLE001 - any failure is retried
            error = f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
        finally:
            self._inflight[job.endpoint] -= 1
            self._inflight_total -= 1
        ok = error is None
        if ok:
            self._failures.pop(job.endpoint, None)
            self._cooling.pop(job.endpoint, None)
        else:
            failures = self._failures[job.endpoint] = self._failures[job.endpoint] + 1
            pause = min(
                self.settings.notify_backoff_base * 2 ** (failures - 1),
                self.settings.notify_backoff_max,
            )
            self._cooling[job.endpoint] = time.monotonic() + pause
            self._wake_after(pause)  # the endpoint's turn
        at = _now()
        self.subs.note_outcome(job.sub_pk, ok, at, sent_noted=job.sent_noted)
        self._record(Outcome(job, ok, at, error))
        self.wake()

    def _note_sent(self, job: Job) -> None:
        # Counted once the request is out, so a GET by a receiver that has just read the
        # notification already sees it in timesSent / lastNotification.
        job.sent_noted = True
        self.subs.note_sent(job.sub_pk, _now())

    # --- bookkeeping (in a thread) ---------------------------------------------------------

    def _flush(self) -> set[float]:
        """Write the outcomes; returns when (seconds from now) the failed rows come due,
        to the next tenth of a second: one wake for each. A wake for the first of them
        only left the later ones (jitter spreads their retries) to the next poll."""
        outcomes, self._outcomes = self._outcomes, []
        retry_in: set[float] = set()
        if not outcomes:
            return retry_in
        done = [o.job.pk for o in outcomes if o.ok]
        failed = [o for o in outcomes if not o.ok]
        stats: dict[int, dict[str, Any]] = {}
        for o in outcomes:
            if o.error == "dropped":
                continue
            s = stats.setdefault(
                o.job.sub_pk, {"sent": 0, "failed": 0, "last": None, "ok": None, "bad": None}
            )
            s["sent"] += 1
            s["last"] = max(filter(None, [s["last"], o.at]))
            if o.ok:
                s["ok"] = max(filter(None, [s["ok"], o.at]))
            else:
                s["failed"] += 1
                s["bad"] = max(filter(None, [s["bad"], o.at]))
        now = _now()
        give_up = timedelta(seconds=self.settings.notify_give_up_seconds)
        try:
            with self._writer.begin() as conn:
                # Subscriptions before outbox rows, in pk order: the order a subscription's
                # DELETE takes them in, so the two never deadlock.
                if stats:
                    conn.execute(
                        update(subscriptions)
                        .where(subscriptions.c.pk == bindparam("b_pk"))
                        .values(
                            times_sent=subscriptions.c.times_sent + bindparam("b_sent"),
                            times_failed=subscriptions.c.times_failed + bindparam("b_failed"),
                            last_notification=bindparam("b_last"),
                            last_success=func.coalesce(
                                bindparam("b_ok", type_=_TS), subscriptions.c.last_success
                            ),
                            last_failure=func.coalesce(
                                bindparam("b_bad", type_=_TS), subscriptions.c.last_failure
                            ),
                        ),
                        [
                            {
                                "b_pk": pk,
                                "b_sent": s["sent"],
                                "b_failed": s["failed"],
                                "b_last": s["last"],
                                "b_ok": s["ok"],
                                "b_bad": s["bad"],
                            }
                            for pk, s in sorted(stats.items())
                        ],
                    )
                if done:
                    conn.execute(delete(outbox).where(outbox.c.pk.in_(done)))
                for o in failed:
                    delay = min(
                        self.settings.notify_backoff_base * 2 ** (o.job.attempts - 1),
                        self.settings.notify_backoff_max,
                    ) * random.uniform(0.8, 1.2)
                    retry_in.add(math.ceil(delay * 10) / 10)
                    conn.execute(
                        update(outbox)
                        .where(outbox.c.pk == o.job.pk)
                        .values(
                            due_at=now + timedelta(seconds=delay),
                            last_error=o.error,
                            dead=now - _aware(o.job.created_at) > give_up,
                        )
                    )
        except Exception:
            self._outcomes = outcomes + self._outcomes  # try again with the next flush
            raise
        self.subs.outcomes_written(stats)
        return retry_in


class MqttPool:
    """One paho-mqtt client per broker (host, port, credentials, protocol), reconnecting."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._clients: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def _client(self, uri: str, version: str) -> tuple[Any, str]:
        import paho.mqtt.client as mqtt

        parts = urlsplit(uri)
        secure = parts.scheme == "mqtts"
        port = parts.port or (8883 if secure else 1883)
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        topic = parts.path.lstrip("/")
        key = (parts.hostname, port, user, password, secure, version)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                protocol = mqtt.MQTTv5 if version == "mqtt5.0" else mqtt.MQTTv311
                client = mqtt.Client(
                    callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=protocol
                )
                if user is not None:
                    client.username_pw_set(user, password)
                if secure:
                    client.tls_set()
                client.reconnect_delay_set(min_delay=1, max_delay=2)
                client.connect_async(parts.hostname, port, keepalive=30)
                client.loop_start()
                self._clients[key] = client
        return client, topic

    async def publish(self, uri: str, payload: bytes, qos: int, version: str) -> None:
        client, topic = self._client(uri, version)
        deadline = time.monotonic() + self._timeout
        while not client.is_connected():
            if time.monotonic() > deadline:
                raise ConnectionError(f"MQTT broker of {uri} is not reachable")
            await asyncio.sleep(0.01)
        info = client.publish(topic, payload, qos=qos)
        if info.rc != 0:
            raise ConnectionError(f"MQTT publish failed (rc={info.rc})")
        while not info.is_published():
            if time.monotonic() > deadline:
                raise TimeoutError("MQTT broker did not acknowledge the publish")
            await asyncio.sleep(0.002)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                client.disconnect()
                client.loop_stop()


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _system() -> Any:
    from kizuna.auth.service import SYSTEM

    return SYSTEM
