"""The watch module's front door: devices, tags and guardians, detections, alerts, privacy.

Other modules (and the routes, pages, MQTT consumer and jobs) call :class:`WatchService`;
nobody else touches the ``watch_*`` tables. Reads about a tag go through the rules in
:mod:`kizuna.watch.privacy`; every staff look at a person is written to the access log.

The service is assembled from one mixin per area, each in its own module (see
:mod:`kizuna.watch.base`), and holds the flood watch as ``flood``.
"""

from __future__ import annotations

from typing import Any

from kizuna.watch.cases import MissingCases
from kizuna.watch.counts import PublishedCounts
from kizuna.watch.detections import Detections
from kizuna.watch.devices import Devices
from kizuna.watch.flood import FloodWatch
from kizuna.watch.notifications import Notifications
from kizuna.watch.places import Places
from kizuna.watch.tags import Tags
from kizuna.watch.volunteers import Volunteers


class WatchService(
    Devices, Detections, Places, Tags, Notifications, MissingCases, Volunteers, PublishedCounts
):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # the arguments of WatchBase
        self.flood = FloodWatch(self)
