"""The read model of the ledger: each tenant's transfers copied into ``points_moves`` in log
order, for pages and the dashboard; a shop's sales of a day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, select, update

from kizuna.ledger.schemas import TransferPublic
from kizuna.points import clock
from kizuna.points.base import PointsBase
from kizuna.points.clock import JST, month_of
from kizuna.points.models import cursors, moves
from kizuna.points.schemas import Shop
from kizuna.storage import is_postgres, writer


class ReadModel(PointsBase):
    """Keeps ``points_moves`` in step with the ledger and reads shop sales from it."""

    def sync(self, tenant: str) -> int:
        """Copy the tenant's new ledger transfers into ``points_moves`` (in log order, from
        a cursor); returns how many were added. Cheap when nothing is new."""
        with self.engine.connect() as conn:
            last = conn.execute(
                select(cursors.c.last_seq).where(cursors.c.tenant_id == tenant)
            ).scalar()
        last = -1 if last is None else int(last)
        if not self.ledger.list_transfers(tenant, after_seq=last, limit=1):
            return 0
        added = 0
        with writer(self.engine).begin() as conn:
            query = select(cursors.c.last_seq).where(cursors.c.tenant_id == tenant)
            if is_postgres(self.engine):
                query = query.with_for_update()
            current = conn.execute(query).scalar()
            if current is None:
                conn.execute(insert(cursors).values(tenant_id=tenant, last_seq=-1))
                current = -1
            current = int(current)
            while True:
                found = self.ledger.list_transfers(tenant, after_seq=current, limit=2000)
                if not found:
                    break
                conn.execute(insert(moves), [_move(tenant, t) for t in found])
                current = found[-1].seq
                added += len(found)
            conn.execute(
                update(cursors).where(cursors.c.tenant_id == tenant).values(last_seq=current)
            )
        return added

    def shop_sales(self, tenant: str, shop: Shop, day: date | None = None) -> dict[str, Any]:
        """The shop's completed payments and refunds of one JST day (today by default)."""
        self.sync(tenant)
        day = day or clock.today()
        # Stored as UTC (SQLite keeps no zone), so the JST day is compared in UTC.
        start = datetime(day.year, day.month, day.day, tzinfo=JST).astimezone(UTC)
        end = start + timedelta(days=1)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(moves)
                .where(
                    moves.c.tenant_id == tenant,
                    or_(
                        moves.c.credit.in_(self.shop_accounts(tenant, shop)),
                        moves.c.debit.in_(self.shop_accounts(tenant, shop)),
                    ),
                    moves.c.at >= start,
                    moves.c.at < end,
                    moves.c.kind.in_(("posted", "post")),
                )
                .order_by(moves.c.seq)
            ).all()
        sales: dict[str, dict[str, Any]] = {}
        for r in rows:
            sale = sales.setdefault(
                r.ref or r.transfer_id,
                {"id": r.ref, "at": r.at, "points": 0, "coupon": 0, "refunded": 0},
            )
            if r.code == "payment":
                sale["points"] += r.amount
            elif r.code == "coupon":
                sale["coupon"] += r.amount
            elif r.code == "refund":
                sale["refunded"] += r.amount
        items = sorted(sales.values(), key=lambda s: s["at"], reverse=True)
        received = sum(s["points"] + s["coupon"] for s in items)
        refunded = sum(s["refunded"] for s in items)
        return {
            "day": day,
            "items": items,
            "count": sum(1 for s in items if s["points"] + s["coupon"] > 0),
            "received": received,
            "refunded": refunded,
            "net": received - refunded,
        }


def _move(tenant: str, t: TransferPublic) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "seq": t.seq,
        "transfer_id": t.id,
        "kind": t.kind,
        "code": t.code,
        "debit": t.debit_account,
        "credit": t.credit_account,
        "amount": t.amount,
        "ref": t.ref,
        "memo": t.memo,
        "month": month_of(t.timestamp),
        "at": t.timestamp,
    }
