"""Residents (実名, verified by staff or an identity claim), shops and staff roles."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from kizuna.ledger.schemas import AccountCreate, AccountKind
from kizuna.points import clock
from kizuna.points.base import PointsBase, _resident, _shop, _terms, error, purchased_shop_account
from kizuna.points.models import residents, shops, staff
from kizuna.points.schemas import Resident, ResidentCreate, Shop, ShopCreate
from kizuna.storage import is_postgres, writer

STAFF_ROLES = ("admin", "clerk", "viewer")


class People(PointsBase):
    """Residents, shops (with their merchant accounts) and staff roles."""

    def register_resident(self, tenant: str, username: str, spec: ResidentCreate) -> Resident:
        """A resident's real-name record and wallet (not verified yet); again: the same one."""
        prog = self.programme(tenant)
        found = self.resident_for_user(tenant, username)
        if found is not None:
            return found
        for _ in range(10):
            code = f"{secrets.randbelow(10**4):04d}-{secrets.randbelow(10**4):04d}"
            try:
                with writer(self.engine).begin() as conn:
                    conn.execute(
                        insert(residents).values(
                            tenant_id=tenant,
                            username=username,
                            member_code=code,
                            real_name=spec.real_name.strip(),
                            kana=spec.kana.strip(),
                            town=spec.town.strip(),
                        )
                    )
                break
            except IntegrityError:
                found = self.resident_for_user(tenant, username)
                if found is not None:
                    return found
        resident = self.resident_for_user(tenant, username)
        assert resident is not None
        self.ledger.open_account(
            tenant,
            AccountCreate(
                code=resident.wallet,
                currency=prog.currency,
                kind=AccountKind.RESIDENT,
                daily_send_limit=prog.thanks_daily_limit,
            ),
        )
        return resident

    def verify_resident(self, tenant: str, resident_id: int, by: str) -> Resident:
        """実名確認: staff checked an identity document, or an OIDC identity claim did."""
        with writer(self.engine).begin() as conn:
            conn.execute(
                update(residents)
                .where(
                    residents.c.tenant_id == tenant,
                    residents.c.id == resident_id,
                    residents.c.verified_at.is_(None),
                )
                .values(verified_at=clock.now(), verified_by=by)
            )
        found = self._resident_where(residents.c.tenant_id == tenant, residents.c.id == resident_id)
        if found is None:
            raise error("resident-not-found", "住民が見つかりません。", "No such resident.", 404)
        self._forget("resident", tenant, found.username)
        return found

    def resident_for_user(self, tenant: str, username: str) -> Resident | None:
        key = ("resident", tenant, username)
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        found = self._resident_where(
            residents.c.tenant_id == tenant, residents.c.username == username
        )
        if found is not None:
            with self._cache_lock:
                self._cache[key] = found
        return found

    def _forget(self, *key: object) -> None:
        with self._cache_lock:
            self._cache.pop(key, None)

    def resident_by_code(self, tenant: str, member_code: str) -> Resident | None:
        code = member_code.strip().replace(" ", "")
        if len(code) == 8 and code.isdigit():
            code = f"{code[:4]}-{code[4:]}"
        return self._resident_where(
            residents.c.tenant_id == tenant, residents.c.member_code == code
        )

    def _resident_where(self, *conditions: Any) -> Resident | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(residents).where(*conditions)).first()
        return None if row is None else _resident(row)

    def list_residents(
        self, tenant: str, *, unverified: bool = False, limit: int = 200
    ) -> list[Resident]:
        query = select(residents).where(residents.c.tenant_id == tenant)
        if unverified:
            query = query.where(residents.c.verified_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(residents.c.kana).limit(limit)).all()
        return [_resident(r) for r in rows]

    def count_residents(self, tenant: str) -> tuple[int, int]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(func.count(), func.count(residents.c.verified_at)).where(
                    residents.c.tenant_id == tenant
                )
            ).one()
        return int(row[0]), int(row[1])

    def register_shop(self, tenant: str, spec: ShopCreate) -> Shop:
        """Register (or update) a shop: its merchant account and settlement terms."""
        prog = self.programme(tenant)
        values = spec.model_dump()
        with writer(self.engine).begin() as conn:
            exists = conn.execute(
                select(shops.c.id).where(shops.c.tenant_id == tenant, shops.c.code == spec.code)
            ).first()
            if exists:
                conn.execute(update(shops).where(shops.c.id == exists.id).values(**values))
            else:
                conn.execute(insert(shops).values(tenant_id=tenant, **values))
        self._forget("shop", tenant, spec.code)
        account = f"shop:{spec.code}"
        self.ledger.open_account(
            tenant,
            AccountCreate(
                code=account, currency=prog.currency, kind=AccountKind.MERCHANT, name=spec.name
            ),
        )
        shop = self.shop(tenant, spec.code)
        assert shop is not None
        self.ledger.set_merchant_terms(tenant, account, _terms(shop))
        if prog.purchase_currency:
            self._open_purchased_shop(tenant, shop, prog.purchase_currency)
        return shop

    def shop(self, tenant: str, code: str) -> Shop | None:
        key = ("shop", tenant, code)
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        with self.engine.connect() as conn:
            row = conn.execute(
                select(shops).where(shops.c.tenant_id == tenant, shops.c.code == code)
            ).first()
        if row is None:
            return None
        found = _shop(row)
        with self._cache_lock:
            self._cache[key] = found
        return found

    def shop_for_user(self, tenant: str, username: str) -> Shop | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(shops)
                .where(shops.c.tenant_id == tenant, shops.c.username == username)
                .order_by(shops.c.id)
            ).first()
        return None if row is None else _shop(row)

    def list_shops(self, tenant: str) -> list[Shop]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(shops).where(shops.c.tenant_id == tenant).order_by(shops.c.code)
            ).all()
        return [_shop(r) for r in rows]

    def set_staff_role(self, tenant: str, username: str, role: str) -> None:
        if role not in STAFF_ROLES:
            raise error("invalid-role", "役割が正しくありません。", "Unknown staff role.", 400)
        with writer(self.engine).begin() as conn:
            conn.execute(
                delete(staff).where(staff.c.tenant_id == tenant, staff.c.username == username)
            )
            conn.execute(insert(staff).values(tenant_id=tenant, username=username, role=role))

    def staff_role(self, tenant: str, username: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(staff.c.role).where(
                    staff.c.tenant_id == tenant, staff.c.username == username
                )
            ).scalar_one_or_none()

    def shop_accounts(self, tenant: str, shop: Shop) -> list[str]:
        """The shop's merchant accounts: administrative points, then purchased ones."""
        cur = self.programme(tenant).purchase_currency
        return [shop.account] + ([purchased_shop_account(shop, cur)] if cur else [])

    def _lock_resident(self, conn: Any, resident_id: int) -> None:
        query = select(residents.c.id).where(residents.c.id == resident_id)
        if is_postgres(self.engine):
            query = query.with_for_update()
        conn.execute(query).first()
