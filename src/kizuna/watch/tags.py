"""Tags and their guardians: issue, claim with consent, settings; the person, last seen
place and a day's trail, each read behind the rules of :mod:`kizuna.watch.privacy`."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, insert, select, update

from kizuna.auth.service import SYSTEM, Principal
from kizuna.problems import Problem, forbidden, invalid_request
from kizuna.watch import schemas
from kizuna.watch.base import JST, WatchBase, aware, jst_day, sha256, utc_now
from kizuna.watch.models import detections, guardians, missing_cases, tags
from kizuna.watch.privacy import (
    acts_as_guardian,
    guards,
    log_access,
    need_guardian,
    need_person,
    need_reason,
    need_staff,
    need_staff_for_tag,
    open_case,
    tag_exists,
    tag_not_found,
    username_of,
)


def last_seen(conn: Connection, tenant: str, tag_id: str) -> schemas.LastSeen | None:
    r = conn.execute(
        select(detections.c.seen_at, detections.c.lat, detections.c.lon, detections.c.detector_kind)
        .where(detections.c.tenant_id == tenant, detections.c.tag_id == tag_id)
        .order_by(detections.c.seen_at.desc())
        .limit(1)
    ).first()
    if r is None:
        return None
    return schemas.LastSeen(
        at=aware(r.seen_at), lat=r.lat, lon=r.lon, detector_kind=r.detector_kind
    )


def tag_public(conn: Connection, tenant: str, tag_id: str) -> schemas.TagPublic:
    row = conn.execute(select(tags).where(tags.c.tenant_id == tenant, tags.c.id == tag_id)).one()
    names = (
        conn.execute(
            select(guardians.c.username)
            .where(guardians.c.tenant_id == tenant, guardians.c.tag_id == tag_id)
            .order_by(guardians.c.username)
        )
        .scalars()
        .all()
    )
    return schemas.TagPublic(
        id=row.id,
        label=row.label,
        person_kind=row.person_kind,
        consent=row.consent,
        guardians=list(names),
        not_seen_hours=row.not_seen_hours,
        last_seen=last_seen(conn, tenant, tag_id),
        missing_case_open=open_case(conn, tenant, tag_id) is not None,
    )


class Tags(WatchBase):
    def issue_tags(
        self,
        principal: Principal,
        tenant: str,
        body: schemas.TagIssue,
        ids: list[str] | None = None,
    ) -> list[schemas.IssuedTag]:
        """Staff issue tags with one-time claim codes (printed on the tag's card).

        ``ids`` (the manufacturer's tag ids) are issued if new; existing ones are skipped.
        """
        if principal is not SYSTEM:
            need_staff(principal, tenant)
        out = []
        wanted = ids or [f"{body.prefix}-{secrets.token_hex(4)}" for _ in range(body.count)]
        with self._writer.begin() as conn:
            for tag_id in wanted:
                if tag_exists(conn, tenant, tag_id):
                    continue
                code = f"{secrets.randbelow(10**8):08d}"
                conn.execute(
                    insert(tags).values(tenant_id=tenant, id=tag_id, claim_sha256=sha256(code))
                )
                out.append(schemas.IssuedTag(id=tag_id, claim_code=code))
        return out

    def claim_tag(
        self, principal: Principal, tenant: str, body: schemas.TagClaim
    ) -> schemas.TagPublic:
        """A guardian links an issued tag to a person, recording consent (a consent receipt)."""
        username = need_person(principal)
        if not principal.acts_in(tenant):
            raise tag_not_found(body.tag_id)
        now = utc_now()
        with self._writer.begin() as conn:
            row = conn.execute(
                select(tags).where(tags.c.tenant_id == tenant, tags.c.id == body.tag_id)
            ).first()
            if (
                row is None
                or row.claimed_at is not None
                or not secrets.compare_digest(row.claim_sha256, sha256(body.claim_code))
            ):
                # One answer for "no such tag", "already claimed" and "wrong code".
                raise Problem(
                    400,
                    "urn:kizuna:errors:ClaimRefused",
                    "This tag cannot be registered",
                    "Check the tag number and the registration code on its card",
                )
            receipt = {
                **body.consent.model_dump(),
                "recorded_at": now.isoformat(),
                "recorded_for": username,
                "receipt_id": secrets.token_hex(8),
            }
            conn.execute(
                update(tags)
                .where(tags.c.tenant_id == tenant, tags.c.id == body.tag_id)
                .values(
                    label=body.label,
                    person_kind=body.person_kind,
                    consent=receipt,
                    claimed_at=now,
                )
            )
            conn.execute(
                insert(guardians).values(
                    tenant_id=tenant,
                    tag_id=body.tag_id,
                    username=username,
                    relation=body.consent.relation,
                )
            )
        return self.tag(principal, tenant, body.tag_id)

    def is_guardian(self, principal: Principal, tenant: str, tag_id: str) -> bool:
        with self.engine.connect() as conn:
            return guards(conn, tenant, tag_id, username_of(principal))

    def add_guardian(
        self, principal: Principal, tenant: str, tag_id: str, body: schemas.GuardianAdd
    ) -> None:
        with self._writer.begin() as conn:
            need_guardian(conn, principal, tenant, tag_id)
            if guards(conn, tenant, tag_id, body.username):
                return
            conn.execute(
                insert(guardians).values(
                    tenant_id=tenant, tag_id=tag_id, username=body.username, relation=body.relation
                )
            )

    def my_tags(self, principal: Principal, tenant: str) -> list[schemas.TagPublic]:
        username = username_of(principal)
        if username is None or not principal.acts_in(tenant):
            return []
        with self.engine.connect() as conn:
            ids = (
                conn.execute(
                    select(guardians.c.tag_id)
                    .where(guardians.c.tenant_id == tenant, guardians.c.username == username)
                    .order_by(guardians.c.tag_id)
                )
                .scalars()
                .all()
            )
            return [tag_public(conn, tenant, t) for t in ids]

    def tag(
        self, principal: Principal, tenant: str, tag_id: str, reason: str | None = None
    ) -> schemas.TagPublic:
        """A tag with its person: guardians; staff only with a reason, which is logged."""
        with self._writer.begin() as conn:
            if not acts_as_guardian(conn, principal, tenant, tag_id):
                need_staff_for_tag(conn, principal, tenant, tag_id)
                text = need_reason(reason)
                log_access(conn, tenant, tag_id, principal, "view_identity", text, None)
            return tag_public(conn, tenant, tag_id)

    def staff_tags(self, principal: Principal, tenant: str) -> list[schemas.StaffTagRow]:
        need_staff(principal, tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(tags.c.id, tags.c.claimed_at)
                .where(tags.c.tenant_id == tenant)
                .order_by(tags.c.id)
            ).all()
            open_ids = set(
                conn.execute(
                    select(missing_cases.c.tag_id).where(
                        missing_cases.c.tenant_id == tenant, missing_cases.c.closed_at.is_(None)
                    )
                ).scalars()
            )
        return [
            schemas.StaffTagRow(
                id=r.id, claimed=r.claimed_at is not None, missing_case_open=r.id in open_ids
            )
            for r in rows
        ]

    def update_settings(
        self, principal: Principal, tenant: str, tag_id: str, body: schemas.TagSettings
    ) -> schemas.TagPublic:
        with self._writer.begin() as conn:
            username = need_guardian(conn, principal, tenant, tag_id)
            fields = body.model_fields_set
            if "not_seen_hours" in fields:
                conn.execute(
                    update(tags)
                    .where(tags.c.tenant_id == tenant, tags.c.id == tag_id)
                    .values(not_seen_hours=body.not_seen_hours, not_seen_alerted_at=None)
                )
            if "webhook_url" in fields:
                url = body.webhook_url
                if url is not None and (
                    url.scheme != "https" and not self.settings.watch_webhook_allow_http
                ):
                    raise invalid_request("A webhook must be an https:// address")
                if url is not None and (url.username or url.password):
                    raise invalid_request("A webhook address must not carry a user or password")
                conn.execute(
                    update(guardians)
                    .where(
                        guardians.c.tenant_id == tenant,
                        guardians.c.tag_id == tag_id,
                        guardians.c.username == username,
                    )
                    .values(webhook_url=str(body.webhook_url) if body.webhook_url else None)
                )
            return tag_public(conn, tenant, tag_id)

    def trail(
        self,
        principal: Principal,
        tenant: str,
        tag_id: str,
        day: date | None = None,
    ) -> list[schemas.TrailPoint]:
        """A day's detections (JST): the guardians; staff only under an open missing case."""
        day = day or jst_day(utc_now())
        start = datetime(day.year, day.month, day.day, tzinfo=JST).astimezone(UTC)
        end = start + timedelta(days=1)
        with self._writer.begin() as conn:
            if not acts_as_guardian(conn, principal, tenant, tag_id):
                need_staff_for_tag(conn, principal, tenant, tag_id)
                case = open_case(conn, tenant, tag_id)
                if case is None:
                    raise forbidden("Staff see a tag's positions only in missing-person mode")
                log_access(conn, tenant, tag_id, principal, "view_trail", case.reason, case.id)
            rows = conn.execute(
                select(
                    detections.c.seen_at,
                    detections.c.lat,
                    detections.c.lon,
                    detections.c.detector_kind,
                    detections.c.rssi,
                )
                .where(
                    detections.c.tenant_id == tenant,
                    detections.c.tag_id == tag_id,
                    detections.c.seen_at >= start,
                    detections.c.seen_at < end,
                )
                .order_by(detections.c.seen_at)
            ).all()
        return [
            schemas.TrailPoint(
                at=aware(r.seen_at),
                lat=r.lat,
                lon=r.lon,
                detector_kind=r.detector_kind,
                rssi=r.rssi,
            )
            for r in rows
        ]
