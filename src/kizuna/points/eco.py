"""The eco-action catalogue (emission factors per fiscal year, actions) and logged actions
with their CO2 arithmetic; approved actions credit points from the eco budget."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from kizuna.ledger.schemas import TransferCreate
from kizuna.points import clock
from kizuna.points.base import PointsBase, PointsError, _memo, _tid, _unverified, error
from kizuna.points.clock import fiscal_year
from kizuna.points.models import actions, eco_logs, factors, residents
from kizuna.points.schemas import (
    Action,
    ActionIn,
    EcoLog,
    EcoLogIn,
    Factor,
    FactorCreate,
    Resident,
)
from kizuna.storage import writer

DEFAULT_FACTORS = (
    FactorCreate(
        code="electricity",
        fiscal_year=2023,
        kg_per_unit=0.423,
        unit="kWh",
        source="電気事業者別排出係数 全国平均係数（代替値）0.000423 t-CO2/kWh",
    ),
    FactorCreate(
        code="gasoline",
        fiscal_year=2023,
        kg_per_unit=2.32,
        unit="L",
        source="温対法 算定・報告・公表制度 ガソリン 2.32 kg-CO2/L",
    ),
    FactorCreate(
        code="city_gas",
        fiscal_year=2023,
        kg_per_unit=2.23,
        unit="Nm3",
        source="温対法 算定・報告・公表制度 都市ガス 2.23 kg-CO2/Nm³",
    ),
)
FACTOR_OF_UNIT = {"kWh": "electricity", "L": "gasoline", "Nm3": "city_gas", "kgCO2": None}

# The eco actions a new programme starts with; the city edits them on the catalogue page.
DEFAULT_ACTIONS = (
    ActionIn(
        code="cooling-28",
        name_ja="冷房の設定温度を27℃→28℃に",
        name_en="Air conditioner at 28 °C instead of 27 °C",
        category="energy",
        per="day",
        saving=round(30.24 / 112, 4),
        saving_unit="kWh",
        basis="30.24 kWh/年（冷房112日・1日9時間）を1日あたりに換算（省エネルギーセンター）",
        points=5,
        cap_per_day=1,
        cap_points_month=150,
    ),
    ActionIn(
        code="heating-20",
        name_ja="暖房の設定温度を21℃→20℃に",
        name_en="Heating at 20 °C instead of 21 °C",
        category="energy",
        per="day",
        saving=round(53.08 / 169, 4),
        saving_unit="kWh",
        basis="53.08 kWh/年（暖房169日・1日9時間）を1日あたりに換算（省エネルギーセンター）",
        points=5,
        cap_per_day=1,
        cap_points_month=150,
    ),
    ActionIn(
        code="my-bag",
        name_ja="マイバッグで買い物（レジ袋を断る）",
        name_en="Shopping with my own bag",
        category="waste",
        per="times",
        saving=0.06,
        saving_unit="kgCO2",
        basis="レジ袋1枚の製造から焼却まで約60 g-CO2（参考値）",
        points=3,
        cap_per_day=2,
        cap_points_month=90,
    ),
    ActionIn(
        code="bus-commute",
        name_ja="車の代わりにバス・電車で通勤",
        name_en="Bus or train instead of the car",
        category="transport",
        per="km",
        saving=0.073,
        saving_unit="kgCO2",
        basis="自家用車130 g − バス57 g-CO2/人km（国土交通省 運輸部門の排出原単位）",
        points=2,
        cap_per_day=2,
        cap_points_month=400,
    ),
    ActionIn(
        code="bike-commute",
        name_ja="車の代わりに自転車・徒歩で移動",
        name_en="Cycling or walking instead of the car",
        category="transport",
        per="km",
        saving=0.13,
        saving_unit="kgCO2",
        basis="自家用車 130 g-CO2/人km（国土交通省 運輸部門の排出原単位）",
        points=3,
        cap_per_day=2,
        cap_points_month=400,
    ),
    ActionIn(
        code="meter-saving",
        name_ja="電気メーターの節電（前月比）",
        name_en="Electricity saved on the meter (vs last month)",
        category="energy",
        per="times",
        saving=1,
        saving_unit="kWh",
        basis="メーターの読みで確認した前月比の削減量（1 kWhごと）",
        points=1,
        cap_per_day=1,
        cap_points_month=300,
        approval="staff",
        evidence="meter",
    ),
)

# What a ledger error means for a resident or a shop, in words they understand.


class EcoActions(PointsBase):
    """Emission factors, the action catalogue, logging, approval and CO2 figures."""

    def add_factor(self, tenant: str, spec: FactorCreate) -> Factor:
        """Add an emission factor for a fiscal year; existing years are never changed (a
        logged action keeps the factor it was computed with)."""
        with writer(self.engine).begin() as conn:
            row = conn.execute(
                select(factors).where(
                    factors.c.tenant_id == tenant,
                    factors.c.code == spec.code,
                    factors.c.fiscal_year == spec.fiscal_year,
                )
            ).first()
            if row is None:
                conn.execute(insert(factors).values(tenant_id=tenant, **spec.model_dump()))
                row = conn.execute(
                    select(factors).where(
                        factors.c.tenant_id == tenant,
                        factors.c.code == spec.code,
                        factors.c.fiscal_year == spec.fiscal_year,
                    )
                ).one()
            elif (row.kg_per_unit, row.unit) != (spec.kg_per_unit, spec.unit):
                raise error(
                    "factor-exists",
                    f"{spec.fiscal_year}年度の係数はすでに登録されています（変更はできません）。",
                    f"The FY{spec.fiscal_year} factor exists and cannot be changed.",
                    409,
                )
        return _factor(row)

    def factors(self, tenant: str) -> list[Factor]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(factors)
                .where(factors.c.tenant_id == tenant)
                .order_by(factors.c.code, factors.c.fiscal_year.desc())
            ).all()
        return [_factor(r) for r in rows]

    def factor_for(self, tenant: str, code: str, day: date) -> Factor | None:
        """The factor in force for ``day``: the latest fiscal year not after the day's."""
        candidates = [f for f in self.factors(tenant) if f.code == code]
        fy = fiscal_year(day)
        before = [f for f in candidates if f.fiscal_year <= fy]
        chosen = max(before or candidates, key=lambda f: f.fiscal_year, default=None)
        return chosen

    def upsert_action(self, tenant: str, spec: ActionIn) -> Action:
        values = spec.model_dump()
        values["factor_code"] = FACTOR_OF_UNIT[spec.saving_unit]
        with writer(self.engine).begin() as conn:
            row = conn.execute(
                select(actions.c.id).where(
                    actions.c.tenant_id == tenant, actions.c.code == spec.code
                )
            ).first()
            if row:
                conn.execute(
                    update(actions)
                    .where(actions.c.id == row.id)
                    .values(updated_at=clock.now(), **values)
                )
            else:
                conn.execute(insert(actions).values(tenant_id=tenant, **values))
        action = self.action(tenant, spec.code)
        assert action is not None
        return action

    def action(self, tenant: str, code: str) -> Action | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(actions).where(actions.c.tenant_id == tenant, actions.c.code == code)
            ).first()
        return None if row is None else _action(row)

    def actions(self, tenant: str, *, active_only: bool = False) -> list[Action]:
        query = select(actions).where(actions.c.tenant_id == tenant)
        if active_only:
            query = query.where(actions.c.active.is_(True))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(actions.c.category, actions.c.id)).all()
        return [_action(r) for r in rows]

    @staticmethod
    def co2_grams(action: Action, quantity: float, factor: Factor | None) -> int:
        """Grams of CO2 saved: saving × quantity × emission factor (kg-CO2 savings as is)."""
        kg = action.saving * quantity
        if action.saving_unit != "kgCO2":
            if factor is None:
                return 0
            kg *= factor.kg_per_unit
        return round(kg * 1000)

    def log_action(
        self,
        tenant: str,
        resident: Resident,
        spec: EcoLogIn,
        *,
        photo: str | None = None,
        max_age_days: int | None = 31,
    ) -> EcoLog:
        """Log an eco action; auto-approved actions credit their points at once.

        Caps: ``cap_per_day`` occurrences (each occurrence is a unique slot of the day) and
        ``cap_points_month`` points (the month's last log gets what is left). The same
        ``spec.id`` again returns the first result and moves nothing.
        """
        done = self._eco_log(spec.id)
        if done is not None:
            return done.model_copy(update={"replay": True})
        if not resident.verified:
            raise _unverified()
        action = self.action(tenant, spec.action)
        if action is None or not action.active:
            raise error(
                "unknown-action", "このエコアクションは受け付けていません。", "Unknown action.", 404
            )
        day = spec.action_date or clock.today()
        if day > clock.today() or (
            max_age_days is not None and (clock.today() - day).days > max_age_days
        ):
            raise error(
                "bad-date",
                f"記録できるのは今日から{max_age_days}日前までの行動です。",
                f"Only actions of the last {max_age_days} days can be logged.",
            )
        quantity = spec.quantity if action.per == "km" else 1.0
        if action.evidence == "meter" and spec.meter_reading is None:
            raise error(
                "needs-meter", "メーターの数値を入力してください。", "Enter the meter reading."
            )
        if action.evidence == "meter":
            quantity = spec.quantity
        if action.evidence == "photo" and not photo:
            raise error("needs-photo", "写真を添付してください。", "Attach a photo.")
        factor = self.factor_for(tenant, action.factor_code, day) if action.factor_code else None
        co2 = self.co2_grams(action, quantity, factor)
        wanted = round(action.points * quantity)
        month_start = day.replace(day=1)
        next_month = (month_start + timedelta(days=32)).replace(day=1)
        status = "approved" if action.approval == "auto" else "pending"
        try:
            with writer(self.engine).begin() as conn:
                self._lock_resident(conn, resident.id)
                if (again := _eco_row(conn, spec.id)) is not None:
                    return _eco_log(again, action).model_copy(update={"replay": True})
                used = conn.execute(
                    select(func.count()).where(
                        eco_logs.c.resident_id == resident.id,
                        eco_logs.c.action_id == action.id,
                        eco_logs.c.action_date == day,
                    )
                ).scalar_one()
                if used >= action.cap_per_day:
                    raise error(
                        "day-cap",
                        f"「{action.name_ja}」は1日{action.cap_per_day}回までです。",
                        f"'{action.name_en}' counts at most {action.cap_per_day} times a day.",
                    )
                month_points = conn.execute(
                    select(func.coalesce(func.sum(eco_logs.c.points), 0)).where(
                        eco_logs.c.resident_id == resident.id,
                        eco_logs.c.action_id == action.id,
                        eco_logs.c.action_date >= month_start,
                        eco_logs.c.action_date < next_month,
                        eco_logs.c.status != "rejected",
                    )
                ).scalar_one()
                points = max(0, min(wanted, action.cap_points_month - int(month_points)))
                if points == 0 and wanted > 0:
                    raise error(
                        "month-cap",
                        f"「{action.name_ja}」の今月のポイント上限（{action.cap_points_month} pt）に達しています。",
                        f"This month's cap for '{action.name_en}' ({action.cap_points_month} pt) is reached.",
                    )
                conn.execute(
                    insert(eco_logs).values(
                        id=spec.id,
                        tenant_id=tenant,
                        resident_id=resident.id,
                        action_id=action.id,
                        action_date=day,
                        slot=used + 1,
                        quantity=quantity,
                        co2_g=co2,
                        factor_id=factor.id if factor else None,
                        points=points,
                        status=status,
                        meter_reading=spec.meter_reading,
                        photo=photo,
                        town=resident.town,
                    )
                )
        except IntegrityError:  # a concurrent log took the slot, or the same id raced us
            again = self._eco_log(spec.id)
            if again is not None:
                return again.model_copy(update={"replay": True})
            raise error(
                "day-cap",
                "同時に記録されました。もう一度お試しください。",
                "Logged at the same time; try again.",
                409,
            ) from None
        if status == "approved" and points > 0:
            self._credit_eco(tenant, resident, spec.id, points, action)
        found = self._eco_log(spec.id)
        assert found is not None
        return found

    def _credit_eco(
        self, tenant: str, resident: Resident, log_id: str, points: int, action: Action
    ) -> None:
        prog = self.programme(tenant)
        tid = _tid(tenant, "eco", log_id)
        try:
            self._post(
                tenant,
                TransferCreate(
                    id=tid,
                    debit_account="budget:eco",
                    credit_account=resident.wallet,
                    amount=points,
                    currency=prog.currency,
                    code="eco",
                    ref=log_id,
                    memo=_memo(a=action.code),
                ),
            )
        except PointsError:
            with writer(self.engine).begin() as conn:  # nothing was credited: forget the log
                conn.execute(delete(eco_logs).where(eco_logs.c.id == log_id))
            raise
        with writer(self.engine).begin() as conn:
            conn.execute(update(eco_logs).where(eco_logs.c.id == log_id).values(transfer_id=tid))

    def decide_log(self, tenant: str, log_id: str, approve: bool, by: str) -> EcoLog:
        """Staff approve (points credited) or reject a log waiting for approval."""
        with self.engine.connect() as conn:
            row = _eco_row(conn, log_id)
        if row is None or row.tenant_id != tenant:
            raise error("log-not-found", "記録が見つかりません。", "No such log.", 404)
        if row.status == "pending":
            with writer(self.engine).begin() as conn:
                conn.execute(
                    update(eco_logs)
                    .where(eco_logs.c.id == log_id, eco_logs.c.status == "pending")
                    .values(status="approved" if approve else "rejected", decided_by=by)
                )
        found = self._eco_log(log_id)
        assert found is not None
        if found.status == "approved" and found.transfer_id is None and found.points > 0:
            resident = self._resident_where(residents.c.id == row.resident_id)
            action = self._action_by_id(row.action_id)
            assert resident is not None and action is not None
            self._credit_eco(tenant, resident, log_id, found.points, action)
            found = self._eco_log(log_id)
            assert found is not None
        return found

    def pending_logs(self, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(eco_logs, actions.c.name_ja, actions.c.name_en, residents.c.real_name)
                .join(actions, actions.c.id == eco_logs.c.action_id)
                .join(residents, residents.c.id == eco_logs.c.resident_id)
                .where(eco_logs.c.tenant_id == tenant, eco_logs.c.status == "pending")
                .order_by(eco_logs.c.created_at)
                .limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    def eco_history(self, tenant: str, resident: Resident, limit: int = 20) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(eco_logs, actions.c.name_ja, actions.c.name_en)
                .join(actions, actions.c.id == eco_logs.c.action_id)
                .where(eco_logs.c.resident_id == resident.id)
                .order_by(eco_logs.c.action_date.desc(), eco_logs.c.created_at.desc())
                .limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    def co2_for(self, tenant: str, resident: Resident) -> dict[str, Any]:
        """The resident's CO2 saved: this month, in total, and by category (kg)."""
        month_start = clock.today().replace(day=1)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    actions.c.category,
                    func.sum(
                        case((eco_logs.c.action_date >= month_start, eco_logs.c.co2_g), else_=0)
                    ),
                    func.sum(eco_logs.c.co2_g),
                    func.count(),
                )
                .join(actions, actions.c.id == eco_logs.c.action_id)
                .where(eco_logs.c.resident_id == resident.id, eco_logs.c.status == "approved")
                .group_by(actions.c.category)
            ).all()
        out: dict[str, Any] = {"month_kg": 0.0, "total_kg": 0.0, "count": 0, "by_category": {}}
        for category, month_grams, grams, count in rows:
            kg = (grams or 0) / 1000
            out["total_kg"] += kg
            out["month_kg"] += (month_grams or 0) / 1000
            out["count"] += count
            out["by_category"][category] = kg
        return out

    def _eco_log(self, log_id: str) -> EcoLog | None:
        with self.engine.connect() as conn:
            row = _eco_row(conn, log_id)
        if row is None:
            return None
        action = self._action_by_id(row.action_id)
        assert action is not None
        return _eco_log(row, action)

    def _action_by_id(self, action_id: int) -> Action | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(actions).where(actions.c.id == action_id)).first()
        return None if row is None else _action(row)


def _eco_row(conn: Any, log_id: str) -> Any:
    return conn.execute(select(eco_logs).where(eco_logs.c.id == log_id)).first()


def _eco_log(row: Any, action: Action) -> EcoLog:
    return EcoLog(
        id=row.id,
        action=action.code,
        action_name=action.name_ja,
        action_date=row.action_date,
        quantity=row.quantity,
        co2_g=row.co2_g,
        points=row.points,
        status=row.status,
        transfer_id=row.transfer_id,
    )


def _factor(row: Any) -> Factor:
    m = row._mapping
    return Factor(id=m["id"], **{k: m[k] for k in FactorCreate.model_fields})


def _action(row: Any) -> Action:
    m = row._mapping
    return Action(
        id=m["id"],
        factor_code=m["factor_code"],
        **{k: m[k] for k in ActionIn.model_fields},
    )
