"""A town with staff, two guardians, a volunteer, devices and two claimed tags."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kizuna.app import create_app
from kizuna.auth import service as auth
from kizuna.auth.service import SYSTEM, Role
from kizuna.settings import Settings
from kizuna.storage import writer
from kizuna.watch import schemas

PASSWORD = "correct-horse"
# 加古川駅 and a school about 1 km north-west.
STATION = (34.7568, 134.8414)
SCHOOL = (34.7650, 134.8330)


@dataclass
class Town:
    app: Any
    client: TestClient
    tokens: dict[str, str]
    credentials: dict[str, str]
    tags: dict[str, str]  # owner → tag id
    tenant: str
    other_tenant: str
    suffix: str
    labels: dict[str, str] = field(default_factory=dict)

    def username(self, name: str) -> str:
        return f"{name}{self.suffix}"

    def as_user(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}", "NGSILD-Tenant": self.tenant}

    def as_device(self, device: str) -> dict[str, str]:
        return {"Authorization": f"Device {self.credentials[device]}", "NGSILD-Tenant": self.tenant}

    @property
    def watch(self):  # noqa: ANN201
        return self.app.state.services.watch


def detection(
    n: int, tag: str, *, at: datetime | None = None, lat=None, lon=None, rssi=-70
) -> dict:  # noqa: ANN001
    item = {"id": f"d{n}", "tag": tag, "at": (at or datetime.now(UTC)).isoformat(), "rssi": rssi}
    if lat is not None:
        item.update(lat=lat, lon=lon)
    return item


def build_town(engine, tmp_path, **overrides: Any) -> Town:  # noqa: ANN001
    settings = Settings(data_dir=tmp_path, watch_jobs_enabled=False, **overrides)
    app = create_app(settings, engine)
    services = app.state.services
    suffix = uuid.uuid4().hex[:6]
    TENANT, OTHER = f"kakogawa{suffix}", f"takasago{suffix}"
    services.tenants.create_tenant(TENANT, "加古川市", "Kakogawa")
    services.tenants.create_tenant(OTHER, "高砂市", "Takasago")
    people = {
        "staff": Role.MUNICIPAL_STAFF,
        "hanako": Role.RESIDENT,  # guardian of tag A
        "taro": Role.RESIDENT,  # guardian of tag B
        "vol": Role.RESIDENT,  # volunteer with a phone
        "outsider": Role.MUNICIPAL_STAFF,  # staff of another town
    }
    tokens = {}
    with writer(engine).begin() as conn:
        for name, role in people.items():
            tenant = OTHER if name == "outsider" else TENANT
            username = f"{name}{suffix}"
            auth.create_user(conn, username, f"{name} san", role, PASSWORD, [tenant])
            tokens[name], _ = auth.issue_token(conn, username, PASSWORD, timedelta(hours=1))
    watch = services.watch
    credentials = {}
    for body in (
        schemas.DeviceCreate(
            id="rx-1", kind="fixed", name="加古川駅前", lat=STATION[0], lon=STATION[1]
        ),
        schemas.DeviceCreate(
            id="rx-school", kind="fixed", name="小学校前", lat=SCHOOL[0], lon=SCHOOL[1]
        ),
        schemas.DeviceCreate(
            id="phone-vol", kind="phone", name="見守り協力者", owner_username=f"vol{suffix}"
        ),
        schemas.DeviceCreate(id="car-1", kind="vehicle", name="公用車1"),
    ):
        credentials[body.id] = watch.register_device(SYSTEM, TENANT, body).credential
    issued = watch.issue_tags(SYSTEM, TENANT, schemas.TagIssue(count=2))
    client = TestClient(app)
    client.__enter__()
    town = Town(app, client, tokens, credentials, {}, TENANT, OTHER, suffix)
    for owner, label, tag in (
        ("hanako", "高砂 はな", issued[0]),
        ("taro", "加古川 たろう", issued[1]),
    ):
        body = {
            "tag_id": tag.id,
            "claim_code": tag.claim_code,
            "label": label,
            "person_kind": "child",
            "consent": {"agreed": True, "given_by": f"{owner} san", "relation": "母"},
        }
        response = client.post("/watch/v1/tags/claim", json=body, headers=town.as_user(owner))
        assert response.status_code == 201, response.text
        town.tags[owner] = tag.id
        town.labels[owner] = label
    return town


@pytest.fixture
def town(engine, tmp_path) -> Iterator[Town]:
    built = build_town(engine, tmp_path)
    yield built
    built.client.__exit__(None, None, None)


@pytest.fixture
def sqlite_town(sqlite_engine, tmp_path) -> Iterator[Town]:
    built = build_town(sqlite_engine, tmp_path)
    yield built
    built.client.__exit__(None, None, None)
