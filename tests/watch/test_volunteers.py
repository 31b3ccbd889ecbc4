"""Volunteers: contributions counted, points capped, paid once through the ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kizuna.ledger.schemas import AccountCreate, CurrencyCreate, TransferCreate
from kizuna.ledger.service import derived_id
from tests.watch.conftest import build_town, detection


def _upload(town, start: int, count: int) -> dict:  # noqa: ANN001
    now = datetime.now(UTC)
    items = [
        detection(n, f"other-{n % 7}", at=now - timedelta(seconds=n), lat=34.76, lon=134.84)
        for n in range(start, start + count)
    ]
    return town.client.post(
        "/watch/v1/detections", json={"detections": items}, headers=town.as_device("phone-vol")
    ).json()


def _fund(town, amount: int) -> None:  # noqa: ANN001
    ledger = town.app.state.services.ledger
    ledger.create_currency(
        town.tenant, CurrencyCreate(code="gyosei", name_ja="行政ポイント", kind="administrative")
    )
    ledger.open_account(
        town.tenant, AccountCreate(code="budget:mimamori", currency="gyosei", kind="budget")
    )
    ledger.post_transfer(
        town.tenant,
        TransferCreate(
            id=derived_id("test-fund", town.tenant),
            debit_account="issuance:gyosei",
            credit_account="budget:mimamori",
            amount=amount,
            currency="gyosei",
            code="issue",
        ),
    )


def test_points_are_capped_and_paid_once_through_the_ledger(sqlite_engine, tmp_path):
    town = build_town(
        sqlite_engine,
        tmp_path,
        watch_volunteer_detections_per_point=10,
        watch_volunteer_daily_point_cap=3,
    )
    try:
        assert _upload(town, 0, 25)["accepted"] == 25
        _upload(town, 0, 25)  # a repeat earns nothing
        me = town.client.get("/watch/v1/volunteer/me", headers=town.as_user("vol")).json()
        assert me["today_detections"] == 25 and me["today_points"] == 2
        assert me["points_pending"] == 2 and me["points_awarded"] == 0
        # No budget yet: nothing is paid, the points stay pending.
        assert town.watch.award_volunteer_points() == 0
        _fund(town, 100)
        assert town.watch.award_volunteer_points() == 2
        assert town.watch.award_volunteer_points() == 0  # once
        _upload(town, 100, 200)  # far past the daily cap
        assert town.watch.award_volunteer_points() == 1
        ledger = town.app.state.services.ledger
        wallet = ledger.get_account(town.tenant, f"resident:{town.username('vol')}")
        assert wallet.balance == 3
        assert ledger.get_account(town.tenant, "budget:mimamori").balance == 97
        me = town.client.get("/watch/v1/volunteer/me", headers=town.as_user("vol")).json()
        assert me["today_points"] == 3 and me["points_pending"] == 0 and me["points_awarded"] == 3
        # Whatever the volunteer asks, no identity comes back.
        assert set(me) == {
            "today_detections",
            "today_points",
            "month_points",
            "daily_cap",
            "monthly_cap",
            "points_awarded",
            "points_pending",
        }
    finally:
        town.client.__exit__(None, None, None)


def test_an_empty_budget_leaves_points_pending(sqlite_engine, tmp_path):
    town = build_town(sqlite_engine, tmp_path, watch_volunteer_detections_per_point=5)
    try:
        _fund(town, 1)
        _upload(town, 0, 20)  # 4 points earned, 1 in the budget
        assert town.watch.award_volunteer_points() == 0
        me = town.client.get("/watch/v1/volunteer/me", headers=town.as_user("vol")).json()
        assert me["points_pending"] == 4
    finally:
        town.client.__exit__(None, None, None)
