"""Volunteers' phones: detections counted per volunteer and day, points earned within the
daily and monthly caps, paid through the points programme as volunteering."""

from __future__ import annotations

import logging
from datetime import date

from sqlalchemy import Connection, func, insert, select, update

from kizuna.problems import Problem
from kizuna.settings import Settings
from kizuna.watch import schemas
from kizuna.watch.base import WatchBase, jst_day, utc_now
from kizuna.watch.models import volunteer_days

log = logging.getLogger("kizuna.watch")


def count_volunteer(
    conn: Connection, settings: Settings, tenant: str, username: str, day: date, count: int
) -> None:
    """Add a phone's new detections to its owner's day and the points that earns."""
    key = (
        volunteer_days.c.tenant_id == tenant,
        volunteer_days.c.username == username,
        volunteer_days.c.day == day,
    )
    row = conn.execute(select(volunteer_days).where(*key)).first()
    total = (row.detections if row else 0) + count
    month_start = day.replace(day=1)
    other_days = conn.execute(
        select(func.coalesce(func.sum(volunteer_days.c.points_earned), 0)).where(
            volunteer_days.c.tenant_id == tenant,
            volunteer_days.c.username == username,
            volunteer_days.c.day >= month_start,
            volunteer_days.c.day != day,
        )
    ).scalar_one()
    earned = min(
        total // max(1, settings.watch_volunteer_detections_per_point),
        settings.watch_volunteer_daily_point_cap,
        max(0, settings.watch_volunteer_monthly_point_cap - int(other_days)),
    )
    if row is None:
        conn.execute(
            insert(volunteer_days).values(
                tenant_id=tenant,
                username=username,
                day=day,
                detections=total,
                points_earned=earned,
                points_awarded=0,
            )
        )
    else:
        conn.execute(
            update(volunteer_days)
            .where(*key)
            .values(detections=total, points_earned=max(earned, row.points_earned))
        )


class Volunteers(WatchBase):
    def volunteer_summary(self, username: str, tenant: str) -> schemas.VolunteerSummary:
        today = jst_day(utc_now())
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(volunteer_days).where(
                    volunteer_days.c.tenant_id == tenant,
                    volunteer_days.c.username == username,
                    volunteer_days.c.day >= today.replace(day=1),
                )
            ).all()
        today_row = next((r for r in rows if r.day == today), None)
        s = self.settings
        earned = sum(r.points_earned for r in rows)
        awarded = sum(r.points_awarded for r in rows)
        return schemas.VolunteerSummary(
            today_detections=today_row.detections if today_row else 0,
            today_points=today_row.points_earned if today_row else 0,
            month_points=earned,
            daily_cap=s.watch_volunteer_daily_point_cap,
            monthly_cap=s.watch_volunteer_monthly_point_cap,
            points_awarded=awarded,
            points_pending=earned - awarded,
        )

    def award_volunteer_points(self) -> int:
        """Pay volunteers the points they earned (within the caps) into their points wallet.

        Paid through the points programme as volunteering (so its yearly cap, budget and
        the resident's own wallet apply), one award per (volunteer, day, new total) with an
        id derived from those: a retry after a crash is a replay, never a second payment.
        Returns the points paid. Points stay pending, and are paid by a later run, while
        the town has no programme, the volunteer has no verified resident record there
        yet, or the budget is short; a volunteer over the yearly cap is logged and skipped.
        """
        if self.points is None:
            return 0
        from kizuna.ledger.service import derived_id

        with self.engine.connect() as conn:
            due = conn.execute(
                select(volunteer_days)
                .where(volunteer_days.c.points_earned > volunteer_days.c.points_awarded)
                .order_by(
                    volunteer_days.c.tenant_id, volunteer_days.c.username, volunteer_days.c.day
                )
            ).all()
        paid = 0
        for row in due:
            amount = row.points_earned - row.points_awarded
            try:
                self.points.award_volunteering_to_user(
                    row.tenant_id,
                    row.username,
                    derived_id(
                        "watch-volunteer", row.tenant_id, row.username, row.day, row.points_earned
                    ),
                    "見守り協力（スマホでのタグ検知）",
                    row.day,
                    amount,
                )
            except Problem as problem:
                log.info(
                    "volunteer points for %s in %s left pending: %s",
                    row.username,
                    row.tenant_id,
                    problem.detail,
                )
                continue
            with self._writer.begin() as conn:
                conn.execute(
                    update(volunteer_days)
                    .where(
                        volunteer_days.c.tenant_id == row.tenant_id,
                        volunteer_days.c.username == row.username,
                        volunteer_days.c.day == row.day,
                        volunteer_days.c.points_awarded == row.points_awarded,
                    )
                    .values(points_awarded=row.points_earned)
                )
            paid += amount
        return paid
