"""Pydantic shapes of the watch API (in: ``XCreate``; out: ``XPublic``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

DeviceKind = Literal["fixed", "vehicle", "facility", "phone", "gauge"]
PlaceKind = Literal["home", "school", "daycare", "other"]
PersonKind = Literal["child", "elder", "other"]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceCreate(_In):
    id: str = Field(pattern=ID_PATTERN)
    kind: DeviceKind
    name: str = Field(min_length=1, max_length=200)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    owner_username: str | None = Field(default=None, max_length=120)


class DeviceCreated(BaseModel):
    id: str
    kind: str
    credential: str = Field(description="Shown once: '<device id>:<secret>'")
    mqtt_topic: str


class DevicePublic(BaseModel):
    id: str
    kind: str
    name: str
    lat: float | None
    lon: float | None
    active: bool
    last_seen_at: datetime | None


class TagIssue(_In):
    count: int = Field(ge=1, le=1000)
    prefix: str = Field(default="tag", pattern=r"^[A-Za-z0-9-]{1,20}$")


class IssuedTag(BaseModel):
    id: str
    claim_code: str


class Consent(_In):
    agreed: Literal[True]
    given_by: str = Field(min_length=1, max_length=120, description="who consented")
    relation: str = Field(min_length=1, max_length=40, description="e.g. 父, 母, 本人, 子")
    terms_version: str = Field(default="2026-04", max_length=20)
    purposes: list[str] = Field(default_factory=lambda: ["mimamori"])


class TagClaim(_In):
    tag_id: str = Field(pattern=ID_PATTERN)
    claim_code: str = Field(min_length=4, max_length=64)
    label: str = Field(min_length=1, max_length=120)
    person_kind: PersonKind
    consent: Consent


class GuardianAdd(_In):
    username: str = Field(min_length=1, max_length=120)
    relation: str = Field(min_length=1, max_length=40)


class TagSettings(_In):
    not_seen_hours: float | None = Field(default=None, gt=0, le=24 * 14)
    webhook_url: HttpUrl | None = None


class LastSeen(BaseModel):
    at: datetime
    lat: float
    lon: float
    detector_kind: str


class TagPublic(BaseModel):
    id: str
    label: str | None
    person_kind: str | None
    consent: dict | None
    guardians: list[str]
    not_seen_hours: float | None
    last_seen: LastSeen | None
    missing_case_open: bool


class StaffTagRow(BaseModel):
    """What staff see of tags without a reason: ids and status, never the person."""

    id: str
    claimed: bool
    missing_case_open: bool


class TrailPoint(BaseModel):
    at: datetime
    lat: float
    lon: float
    detector_kind: str
    rssi: int | None


class PlaceCreate(_In):
    name: str = Field(min_length=1, max_length=120)
    kind: PlaceKind
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    radius_m: float = Field(default=150, ge=20, le=2000)


class PlacePublic(BaseModel):
    id: int
    name: str
    kind: str
    lat: float
    lon: float
    radius_m: float
    inside: bool | None
    changed_at: datetime | None


class NotificationPublic(BaseModel):
    id: int
    tag_id: str
    kind: str
    at: datetime
    text: str
    read: bool


class MissingOpen(_In):
    tag_id: str = Field(pattern=ID_PATTERN)
    reason: str = Field(min_length=8, max_length=2000)


class MissingCasePublic(BaseModel):
    id: int
    tag_id: str
    reason: str
    opened_by: str
    opened_at: datetime
    closed_by: str | None
    closed_at: datetime | None


class AccessLogEntry(BaseModel):
    at: datetime
    actor: str
    action: str
    reason: str
    case_id: int | None


class IngestResult(BaseModel):
    """The answer to a device: counts only, nothing about whose tags were seen."""

    accepted: int
    duplicates: int
    rejected: int
    errors: list[dict] = Field(default_factory=list)


class VolunteerSummary(BaseModel):
    today_detections: int
    today_points: int
    month_points: int
    daily_cap: int
    monthly_cap: int
    points_awarded: int
    points_pending: int
