"""``kizuna watch``: the MQTT consumer and jobs on their own, and one-off maintenance."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime, timedelta

import typer
from rich.console import Console

watch_app = typer.Typer(help="Mimamori and flood sensors", no_args_is_help=True)
console = Console()


def _services():  # noqa: ANN202
    from kizuna.app import build_services
    from kizuna.settings import get_settings

    return build_services(get_settings())


@watch_app.command("ingest")
def ingest(
    url: str = typer.Option(
        None, help="MQTT broker (default KIZUNA_WATCH_MQTT_URL or mqtt://127.0.0.1:1883)"
    ),
    jobs: bool = typer.Option(True, help="Also run the scheduled jobs"),
) -> None:
    """Consume devices' MQTT messages into storage until interrupted (Ctrl-C)."""
    from kizuna.watch.runtime import WatchRuntime

    services = _services()
    settings = services.settings
    settings.watch_mqtt_url = url or settings.watch_mqtt_url or "mqtt://127.0.0.1:1883"
    runtime = WatchRuntime(services.watch)
    runtime.start(mqtt=True, jobs=jobs)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print(
        f"consuming {settings.watch_mqtt_topic_prefix}/+/+/… from {settings.watch_mqtt_url}"
    )
    try:
        while not stop.wait(10):
            ingestor = runtime.ingestor
            if ingestor is not None:
                console.print(ingestor.stats.snapshot())
    except KeyboardInterrupt:
        pass
    finally:
        runtime.stop()


@watch_app.command("retention")
def retention() -> None:
    """Delete detections older than KIZUNA_WATCH_RETENTION_DAYS now."""
    services = _services()
    deleted = services.watch.apply_retention()
    console.print(f"deleted {deleted} detections")


@watch_app.command("publish-counts")
def publish_counts(tenant: str, hours: int = typer.Option(24, help="How many past hours")) -> None:
    """Publish per-area-per-hour counts (k-withheld) as DetectionCount entities."""
    services = _services()
    now = datetime.now(UTC)
    total = 0
    for h in range(1, hours + 1):
        total += len(services.watch.publish_counts(tenant, now - timedelta(hours=h)))
    console.print(f"published {total} DetectionCount entities")
