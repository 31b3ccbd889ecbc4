"""What every area of the watch service shares: storage, settings, the services it calls.

:class:`kizuna.watch.service.WatchService` is one object built from one mixin per area
(devices, detections, tags, places, notifications, missing-person cases, volunteers,
published counts); each mixin derives from :class:`WatchBase` and keeps its own caches.
Helpers that need only a connection are module functions beside their area.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite

from kizuna.settings import Settings
from kizuna.storage import writer

JST = ZoneInfo("Asia/Tokyo")


def utc_now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def jst_day(moment: datetime) -> date:
    return moment.astimezone(JST).date()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class WatchBase:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        broker: Any,
        tenants: Any,
        points: Any = None,
        subscriptions: Any = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.broker = broker
        self.tenants = tenants
        self.points = points  # kizuna.points.service.Points: pays volunteers
        self.subscriptions = subscriptions
        self._writer = writer(engine)
        self._lock = threading.Lock()  # guards the areas' caches
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
