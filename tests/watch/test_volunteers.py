"""Volunteers: contributions counted, points capped, paid once through the ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kizuna.points.schemas import ProgrammeCreate, ResidentCreate
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


def _programme(town, budget: int, year_cap: int = 5000) -> None:  # noqa: ANN001
    """The town's points programme, with this much in its volunteering budget."""
    town.app.state.services.points.setup_programme(
        town.tenant,
        ProgrammeCreate(
            name_ja="テスト ポイント",
            volunteer_year_cap=year_cap,
            budgets={"volunteer": budget},
        ),
    )


def _enrol(town, verify: bool = True):  # noqa: ANN001, ANN202
    points = town.app.state.services.points
    resident = points.register_resident(
        town.tenant,
        town.username("vol"),
        ResidentCreate(real_name="見守 太郎", kana="ミマモリ タロウ", town="荒井町"),
    )
    if verify:
        resident = points.verify_resident(town.tenant, resident.id, by="staff")
    return resident


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
        # No programme, then no resident record, then an unverified one: nothing is
        # paid, the points stay pending.
        assert town.watch.award_volunteer_points() == 0
        _programme(town, budget=100)
        assert town.watch.award_volunteer_points() == 0
        _enrol(town, verify=False)
        assert town.watch.award_volunteer_points() == 0
        resident = _enrol(town)
        assert town.watch.award_volunteer_points() == 2
        assert town.watch.award_volunteer_points() == 0  # once
        _upload(town, 100, 200)  # far past the daily cap
        assert town.watch.award_volunteer_points() == 1
        # Into the wallet the points module shows this resident, from its volunteer budget.
        points = town.app.state.services.points
        ledger = town.app.state.services.ledger
        assert resident.wallet == f"resident:{resident.member_code}"
        assert ledger.get_account(town.tenant, resident.wallet).balance == 3
        assert ledger.get_account(town.tenant, "budget:volunteer").balance == 97
        listed = points.volunteering_list(town.tenant)
        assert sorted(v["points"] for v in listed) == [1, 2]
        assert {v["hours"] for v in listed} == {0}
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


def test_an_empty_budget_or_the_yearly_cap_leaves_points_pending(sqlite_engine, tmp_path):
    town = build_town(sqlite_engine, tmp_path, watch_volunteer_detections_per_point=5)
    try:
        _programme(town, budget=1, year_cap=3)
        _enrol(town)
        _upload(town, 0, 20)  # 4 points earned, 1 in the budget, 3 allowed a year
        assert town.watch.award_volunteer_points() == 0
        me = town.client.get("/watch/v1/volunteer/me", headers=town.as_user("vol")).json()
        assert me["points_pending"] == 4
        town.app.state.services.points.fund_budget(
            town.tenant, "volunteer", 100, "0b6f2f4e-8a57-4a64-9d7c-3d1d2b7f0a11"
        )
        assert town.watch.award_volunteer_points() == 0  # 4 > the yearly cap of 3
        me = town.client.get("/watch/v1/volunteer/me", headers=town.as_user("vol")).json()
        assert me["points_pending"] == 4 and me["points_awarded"] == 0
    finally:
        town.client.__exit__(None, None, None)
