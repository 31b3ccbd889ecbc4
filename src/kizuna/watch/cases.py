"""Missing-person mode: staff open a case with a reason (the only time they see a tag's
positions) and close it; guardians are told, and read every staff look in the access log."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from kizuna.auth.service import Principal
from kizuna.problems import already_exists, not_found
from kizuna.watch import schemas
from kizuna.watch.base import WatchBase, aware, utc_now
from kizuna.watch.models import access_log, missing_cases
from kizuna.watch.notifications import notify
from kizuna.watch.privacy import (
    is_staff,
    log_access,
    need_guardian,
    need_reason,
    need_staff,
    open_case,
    tag_exists,
    tag_not_found,
)


class MissingCases(WatchBase):
    def open_missing_case(
        self, principal: Principal, tenant: str, body: schemas.MissingOpen
    ) -> schemas.MissingCasePublic:
        need_staff(principal, tenant)
        reason = need_reason(body.reason)
        now = utc_now()
        with self._writer.begin() as conn:
            if not tag_exists(conn, tenant, body.tag_id):
                raise tag_not_found(body.tag_id)
            if open_case(conn, tenant, body.tag_id) is not None:
                raise already_exists("A missing-person case is already open for this tag")
            case_id = conn.execute(
                insert(missing_cases)
                .values(
                    tenant_id=tenant,
                    tag_id=body.tag_id,
                    reason=reason,
                    opened_by=principal.subject,
                    opened_at=now,
                )
                .returning(missing_cases.c.id)
            ).scalar_one()
            log_access(conn, tenant, body.tag_id, principal, "open_case", reason, case_id)
            notify(
                conn,
                tenant,
                body.tag_id,
                "missing_opened",
                now,
                f"市の職員が行方不明者捜索モードを開始しました。理由: {reason}",
                f"City staff opened missing-person mode. Reason: {reason}",
            )
        return self._case(tenant, case_id)

    def close_missing_case(
        self, principal: Principal, tenant: str, case_id: int
    ) -> schemas.MissingCasePublic:
        need_staff(principal, tenant)
        now = utc_now()
        with self._writer.begin() as conn:
            case = conn.execute(
                select(missing_cases).where(
                    missing_cases.c.id == case_id, missing_cases.c.tenant_id == tenant
                )
            ).first()
            if case is None:
                raise not_found(f"No case {case_id}")
            if case.closed_at is None:
                conn.execute(
                    update(missing_cases)
                    .where(missing_cases.c.id == case_id)
                    .values(closed_at=now, closed_by=principal.subject)
                )
                log_access(conn, tenant, case.tag_id, principal, "close_case", case.reason, case_id)
                notify(
                    conn,
                    tenant,
                    case.tag_id,
                    "missing_closed",
                    now,
                    "行方不明者捜索モードが終了しました。職員による位置の閲覧は記録から確認できます。",
                    "Missing-person mode has ended. Staff views of positions are in the access log.",
                )
        return self._case(tenant, case_id)

    def _case(self, tenant: str, case_id: int) -> schemas.MissingCasePublic:
        with self.engine.connect() as conn:
            r = conn.execute(
                select(missing_cases).where(
                    missing_cases.c.id == case_id, missing_cases.c.tenant_id == tenant
                )
            ).one()
        return _case_public(r)

    def missing_cases(
        self, principal: Principal, tenant: str, tag_id: str | None = None
    ) -> list[schemas.MissingCasePublic]:
        """Staff: every case of the tenant. Guardians: the cases of their tag (tag_id given)."""
        with self.engine.connect() as conn:
            query = select(missing_cases).where(missing_cases.c.tenant_id == tenant)
            if tag_id is not None:
                if not is_staff(principal, tenant):
                    need_guardian(conn, principal, tenant, tag_id)
                query = query.where(missing_cases.c.tag_id == tag_id)
            else:
                need_staff(principal, tenant)
            rows = conn.execute(query.order_by(missing_cases.c.opened_at.desc())).all()
        return [_case_public(r) for r in rows]

    def access_log(
        self, principal: Principal, tenant: str, tag_id: str
    ) -> list[schemas.AccessLogEntry]:
        with self.engine.connect() as conn:
            need_guardian(conn, principal, tenant, tag_id)
            rows = conn.execute(
                select(access_log)
                .where(access_log.c.tenant_id == tenant, access_log.c.tag_id == tag_id)
                .order_by(access_log.c.at.desc())
            ).all()
        return [
            schemas.AccessLogEntry(
                at=aware(r.at), actor=r.actor, action=r.action, reason=r.reason, case_id=r.case_id
            )
            for r in rows
        ]


def _case_public(r: Any) -> schemas.MissingCasePublic:
    return schemas.MissingCasePublic(
        id=r.id,
        tag_id=r.tag_id,
        reason=r.reason,
        opened_by=r.opened_by,
        opened_at=aware(r.opened_at),
        closed_by=r.closed_by,
        closed_at=aware(r.closed_at),
    )
