"""Batch upserts that race to create the same entities both succeed.

The loser of the race meets the winner's rows in a unique index inside its COPY; its
transaction is retried (as an upsert of now existing entities), so neither request fails
and both writes are in the history.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

BASE = "/ngsi-ld/v1"


def _batch(round_: int, value: float) -> list[dict]:
    return [
        {
            "id": f"urn:ngsi-ld:Sensor:race{round_}-{n:03d}",
            "type": "Sensor",
            "temperature": {"type": "Property", "value": value},
        }
        for n in range(100)
    ]


def test_two_upserts_creating_the_same_entities_both_land(client):
    for round_ in range(5):
        start = threading.Barrier(2)

        def upsert(value: float, round_: int = round_, start: threading.Barrier = start) -> int:
            body = _batch(round_, value)
            start.wait()
            return client.post(f"{BASE}/entityOperations/upsert", json=body).status_code

        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(upsert, (1.0, 2.0)))
        assert all(status in (201, 204) for status in statuses), statuses
        history = client.get(
            f"{BASE}/temporal/entities/urn:ngsi-ld:Sensor:race{round_}-099",
            params={"options": "temporalValues"},
        ).json()
        assert sorted(v for v, _ in history["temperature"]["values"]) == [1.0, 2.0]
