"""What runs beside the API: the MQTT consumer and the scheduled jobs.

Started from the app's lifespan (``KIZUNA_WATCH_MQTT_URL`` set: the consumer;
``KIZUNA_WATCH_JOBS_ENABLED``: the jobs) or on its own with ``kizuna watch ingest``.
Run one of each per deployment: the consumer's fixed MQTT client id is one session.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from kizuna.watch.flood import FloodWatch
from kizuna.watch.service import WatchService

if TYPE_CHECKING:
    import httpx

    from kizuna.watch.ingest import MqttIngestor

log = logging.getLogger("kizuna.watch.jobs")


class WebhookClient:
    """The jobs' HTTP client for guardians' webhooks, made on the first POST: a process that
    never sends one does not load httpx (~4 MB)."""

    def __init__(self) -> None:
        self._client: httpx.Client | None = None

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=5, follow_redirects=False)
        return self._client.post(url, **kwargs)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class WatchJobs:
    """Every ``interval`` seconds: not-seen alerts, flood beacons, webhooks; hourly:
    retention and the published per-area counts of the hour that just ended."""

    def __init__(self, watch: WatchService, flood: FloodWatch, interval: float) -> None:
        self.watch = watch
        self.flood = flood
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_hour: datetime | None = None
        self._http = WebhookClient()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="watch-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._http.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()

    def run_once(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        for name, job in (
            ("not-seen", lambda: self.watch.check_not_seen(now)),
            ("flood beacons", lambda: self.flood.check_spots(now)),
            ("webhooks", lambda: self.watch.deliver_webhooks(self._http, now)),
            ("volunteer points", self.watch.award_volunteer_points),
        ):
            try:
                job()
            except Exception:  # noqa: BLE001 - one failing job must not stop the others
                log.exception("watch job %s failed", name)
        hour = now.replace(minute=0, second=0, microsecond=0)
        if self._last_hour != hour:
            self._last_hour = hour
            try:
                self.watch.apply_retention(now)
                for tenant in self.watch.tenants_with_detections():
                    self.watch.publish_counts(tenant, hour - timedelta(hours=1))
            except Exception:  # noqa: BLE001
                log.exception("hourly watch jobs failed")


class WatchRuntime:
    def __init__(self, watch: WatchService) -> None:
        self.watch = watch
        self.flood = watch.flood
        self.ingestor: MqttIngestor | None = None
        self.jobs: WatchJobs | None = None

    def start(self, *, mqtt: bool, jobs: bool) -> None:
        s = self.watch.settings
        if mqtt and s.watch_mqtt_url:
            # paho-mqtt and psycopg (~10 MB on SQLite) only where the consumer runs.
            from kizuna.watch.ingest import MqttIngestor

            self.ingestor = MqttIngestor(
                self.watch,
                self.flood,
                s.watch_mqtt_url,
                prefix=s.watch_mqtt_topic_prefix,
                client_id=s.watch_mqtt_client_id,
            )
            self.ingestor.start()
        if jobs:
            self.jobs = WatchJobs(self.watch, self.flood, s.watch_job_interval_seconds)
            self.jobs.start()

    def stop(self) -> None:
        if self.ingestor is not None:
            self.ingestor.stop()
        if self.jobs is not None:
            self.jobs.stop()
