"""Coupons: the catalogue, what a resident holds, and the n-th use per resident that a
payment takes (held with the payment, given back when it is cancelled or times out)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from kizuna.points import clock
from kizuna.points.base import HOLD_SECONDS, PointsBase, error
from kizuna.points.models import coupon_uses, coupons
from kizuna.points.schemas import Coupon, CouponCreate, PaymentIn, Resident, Shop
from kizuna.storage import writer


class Coupons(PointsBase):
    """Coupons and their uses per resident."""

    def create_coupon(self, tenant: str, spec: CouponCreate, by: str) -> Coupon:
        if spec.valid_until < spec.valid_from:
            raise error(
                "bad-period", "終了日が開始日より前です。", "The end is before the start.", 400
            )
        if spec.kind == "percent" and spec.value > 100:
            raise error("bad-percent", "割引率は100%までです。", "At most 100 % off.", 400)
        known = {s.code for s in self.list_shops(tenant)}
        if unknown := [s for s in spec.shops if s not in known]:
            raise error(
                "unknown-shop",
                f"登録されていない店舗です: {', '.join(unknown)}",
                f"Unknown shops: {', '.join(unknown)}",
                400,
            )
        with writer(self.engine).begin() as conn:
            row = conn.execute(
                select(coupons.c.id).where(
                    coupons.c.tenant_id == tenant, coupons.c.code == spec.code
                )
            ).first()
            if row is not None:
                raise error(
                    "coupon-exists",
                    "同じコードのクーポンがあります。",
                    "A coupon with that code exists.",
                    409,
                )
            conn.execute(
                insert(coupons).values(tenant_id=tenant, created_by=by, **spec.model_dump())
            )
        coupon = self.coupon(tenant, spec.code)
        assert coupon is not None
        return coupon

    def coupon(self, tenant: str, code: str) -> Coupon | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(coupons).where(coupons.c.tenant_id == tenant, coupons.c.code == code)
            ).first()
        return None if row is None else _coupon(row)

    def list_coupons(self, tenant: str) -> list[Coupon]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(coupons)
                .where(coupons.c.tenant_id == tenant)
                .order_by(coupons.c.valid_until.desc(), coupons.c.code)
            ).all()
        return [_coupon(r) for r in rows]

    def coupons_for(self, tenant: str, resident: Resident) -> list[dict[str, Any]]:
        """Coupons the resident holds: each with uses left and whether it can be used today."""
        self._release_stale_holds(tenant, resident)
        with self.engine.connect() as conn:
            used = dict(
                conn.execute(
                    select(coupon_uses.c.coupon_id, func.count())
                    .where(
                        coupon_uses.c.resident_id == resident.id,
                        coupon_uses.c.state != "released",
                    )
                    .group_by(coupon_uses.c.coupon_id)
                ).all()
            )
        out = []
        day = clock.today()
        for c in self.list_coupons(tenant):
            n = int(used.get(c.id, 0))
            state = (
                "used"
                if n >= c.quota_per_resident
                else "expired"
                if day > c.valid_until
                else "upcoming"
                if day < c.valid_from
                else "usable"
            )
            out.append(
                {"coupon": c, "used": n, "left": max(0, c.quota_per_resident - n), "state": state}
            )
        return out

    @staticmethod
    def discount_of(coupon: Coupon, amount: int) -> int:
        if coupon.kind == "amount":
            off = coupon.value
        else:
            off = amount * coupon.value // 100
            if coupon.max_discount:
                off = min(off, coupon.max_discount)
        return min(off, amount)

    def _coupon_use(self, payment_id: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    select(coupon_uses.c.n).where(coupon_uses.c.payment_id == payment_id)
                ).first()
                is not None
            )

    def _take_coupon(
        self, tenant: str, resident: Resident, shop: Shop, coupon: Coupon | None, spec: PaymentIn
    ) -> tuple[int, int]:
        if coupon is None:
            raise error("coupon-unknown", "クーポンが見つかりません。", "Unknown coupon.", 404)
        day = clock.today()
        if day > coupon.valid_until:
            raise error(
                "coupon-expired",
                f"「{coupon.title_ja}」は有効期限（{coupon.valid_until:%Y年%m月%d日}まで）が過ぎています。",
                f"'{coupon.title_en}' expired on {coupon.valid_until}.",
            )
        if day < coupon.valid_from:
            raise error(
                "coupon-not-yet",
                f"「{coupon.title_ja}」は{coupon.valid_from:%m月%d日}から使えます。",
                f"'{coupon.title_en}' can be used from {coupon.valid_from}.",
            )
        if coupon.shops and shop.code not in coupon.shops:
            raise error(
                "coupon-shop",
                f"「{coupon.title_ja}」はこのお店では使えません。",
                f"'{coupon.title_en}' cannot be used at this shop.",
            )
        if spec.amount < coupon.min_purchase:
            raise error(
                "coupon-minimum",
                f"「{coupon.title_ja}」は{coupon.min_purchase:,}円以上のお会計で使えます。",
                f"'{coupon.title_en}' needs a bill of at least ¥{coupon.min_purchase:,}.",
            )
        discount = self.discount_of(coupon, spec.amount)
        used_up = error(
            "coupon-used",
            f"「{coupon.title_ja}」はすでに使い切っています（お一人{coupon.quota_per_resident}回まで）。",
            f"'{coupon.title_en}' is used up ({coupon.quota_per_resident} per person).",
        )
        self._release_stale_holds(tenant, resident)
        for _ in range(3):
            with self.engine.connect() as conn:
                taken = set(
                    conn.execute(
                        select(coupon_uses.c.n).where(
                            coupon_uses.c.coupon_id == coupon.id,
                            coupon_uses.c.resident_id == resident.id,
                        )
                    ).scalars()
                )
            free = [n for n in range(1, coupon.quota_per_resident + 1) if n not in taken]
            if not free:
                raise used_up
            try:
                with writer(self.engine).begin() as conn:
                    conn.execute(
                        insert(coupon_uses).values(
                            coupon_id=coupon.id,
                            resident_id=resident.id,
                            n=free[0],
                            tenant_id=tenant,
                            payment_id=spec.id,
                            discount=discount,
                            state="held",
                        )
                    )
                return discount, free[0]
            except IntegrityError:
                continue  # another payment took that use at the same moment
        raise used_up

    def _release_stale_holds(self, tenant: str, resident: Resident) -> None:
        """Give back coupon uses whose payment was never confirmed (the hold timed out and
        the ledger's job voided it, or the resident walked away)."""
        cutoff = clock.now() - timedelta(seconds=HOLD_SECONDS + 30)
        with self.engine.connect() as conn:
            stale = (
                conn.execute(
                    select(coupon_uses.c.payment_id).where(
                        coupon_uses.c.resident_id == resident.id,
                        coupon_uses.c.state == "held",
                        coupon_uses.c.created_at < cutoff,
                    )
                )
                .scalars()
                .all()
            )
        for payment_id in stale:
            payment = self.payment(tenant, payment_id)
            if payment is None or payment.status in ("expired", "cancelled"):
                self._release_coupon(payment_id)
            elif payment.status in ("completed", "refunded"):
                with writer(self.engine).begin() as conn:
                    conn.execute(
                        update(coupon_uses)
                        .where(coupon_uses.c.payment_id == payment_id)
                        .values(state="used")
                    )

    def _release_coupon(self, payment_id: str) -> None:
        with writer(self.engine).begin() as conn:
            conn.execute(delete(coupon_uses).where(coupon_uses.c.payment_id == payment_id))


def _coupon(row: Any) -> Coupon:
    m = row._mapping
    return Coupon(id=m["id"], tenant=m["tenant_id"], **{k: m[k] for k in CouponCreate.model_fields})
