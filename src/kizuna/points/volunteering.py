"""Volunteer activity paid in points, within a yearly cap per resident."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from kizuna.ledger.schemas import TransferCreate
from kizuna.points.base import PointsBase, PointsError, _tid, _unverified, error
from kizuna.points.clock import fiscal_year
from kizuna.points.models import residents, volunteering
from kizuna.points.schemas import Resident, VolunteerIn
from kizuna.storage import writer


class Volunteering(PointsBase):
    """Points for volunteering: recorded by staff or awarded by another module."""

    def record_volunteering(self, tenant: str, spec: VolunteerIn, by: str) -> dict[str, Any]:
        """Staff record volunteer activity for points, within the yearly cap (fiscal year)."""
        replay = self._volunteering_replay(spec.id)
        if replay is not None:
            return replay
        resident = self.resident_by_code(tenant, spec.member_code)
        if resident is None:
            raise error(
                "member-not-found", "会員番号が見つかりません。", "Unknown member code.", 404
            )
        return self._award_volunteering(
            tenant,
            resident,
            spec.id,
            spec.activity,
            spec.activity_date,
            spec.hours,
            spec.points,
            by,
        )

    def award_volunteering_to_user(
        self, tenant: str, username: str, award_id: str, activity: str, day: date, points: int
    ) -> dict[str, Any]:
        """Points another module awards for volunteering (e.g. 見守り detections), paid
        into the user's own wallet under the same yearly cap. No hours are counted (0).
        Raises PointsError when the user has no verified resident record here yet."""
        replay = self._volunteering_replay(award_id)
        if replay is not None:
            return replay
        resident = self.resident_for_user(tenant, username)
        if resident is None:
            raise error(
                "not-registered",
                "ポイントの住民登録がありません。",
                "This user has no points resident record.",
                404,
            )
        return self._award_volunteering(
            tenant, resident, award_id, activity, day, 0.0, points, by=username
        )

    def _volunteering_replay(self, award_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            done = conn.execute(select(volunteering).where(volunteering.c.id == award_id)).first()
        return None if done is None else dict(done._mapping) | {"replay": True}

    def _award_volunteering(
        self,
        tenant: str,
        resident: Resident,
        award_id: str,
        activity: str,
        day: date,
        hours: float,
        points: int,
        by: str,
    ) -> dict[str, Any]:
        prog = self.programme(tenant)
        if not resident.verified:
            raise _unverified()
        fy = fiscal_year(day)
        start, end = date(fy, 4, 1), date(fy + 1, 4, 1)
        with writer(self.engine).begin() as conn:
            self._lock_resident(conn, resident.id)
            used = conn.execute(
                select(func.coalesce(func.sum(volunteering.c.points), 0)).where(
                    volunteering.c.resident_id == resident.id,
                    volunteering.c.activity_date >= start,
                    volunteering.c.activity_date < end,
                )
            ).scalar_one()
            if used + points > prog.volunteer_year_cap:
                left = max(0, prog.volunteer_year_cap - int(used))
                raise error(
                    "year-cap",
                    f"ボランティアポイントは年度{prog.volunteer_year_cap:,} ptまでです（残り {left:,} pt）。",
                    f"Volunteering earns at most {prog.volunteer_year_cap:,} pt a year ({left:,} pt left).",
                )
            conn.execute(
                insert(volunteering).values(
                    id=award_id,
                    tenant_id=tenant,
                    resident_id=resident.id,
                    activity=activity,
                    activity_date=day,
                    hours=hours,
                    points=points,
                    recorded_by=by,
                )
            )
        tid = _tid(tenant, "volunteer", award_id)
        try:
            self._post(
                tenant,
                TransferCreate(
                    id=tid,
                    debit_account="budget:volunteer",
                    credit_account=resident.wallet,
                    amount=points,
                    currency=prog.currency,
                    code="volunteer",
                    ref=award_id,
                ),
            )
        except PointsError:
            with writer(self.engine).begin() as conn:
                conn.execute(delete(volunteering).where(volunteering.c.id == award_id))
            raise
        with writer(self.engine).begin() as conn:
            conn.execute(
                update(volunteering).where(volunteering.c.id == award_id).values(transfer_id=tid)
            )
            row = conn.execute(select(volunteering).where(volunteering.c.id == award_id)).one()
        return dict(row._mapping) | {"replay": False, "real_name": resident.real_name}

    def volunteering_list(self, tenant: str, limit: int = 30) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(volunteering, residents.c.real_name)
                .join(residents, residents.c.id == volunteering.c.resident_id)
                .where(volunteering.c.tenant_id == tenant)
                .order_by(volunteering.c.created_at.desc())
                .limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]
