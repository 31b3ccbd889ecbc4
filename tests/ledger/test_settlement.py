"""Merchant settlement: statement, fee, one payment per period, CSV for Excel, 全銀 file."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from kizuna.ledger import apply, settlement
from kizuna.ledger.apply import JST, to_us
from kizuna.ledger.schemas import AccountCreate, MerchantTerms
from kizuna.ledger.zengin import Originator, to_zengin_kana
from kizuna.problems import Problem

from .conftest import tx

E = "urn:kizuna:errors:ledger:"


def test_settle_once_per_period_and_exports(ledger, tenant, monkeypatch):
    ledger.set_merchant_terms(
        tenant,
        "m1",
        MerchantTerms(
            fee_bp=150,
            cycle="daily",
            bank_code="0001",
            branch_code="123",
            account_type="1",
            account_number="1234567",
            holder_kana="ｶ)ﾀｶｻｺﾞｼｮｳﾃﾝ",
        ),
    )
    ledger.post_transfers(tenant, [tx("budget", "r1", 5000)])
    ledger.post_transfers(
        tenant,
        [
            tx("r1", "m1", 1000, code="payment"),
            tx("r1", "m1", 2001, code="payment"),
            tx("m1", "r1", 1, code="refund"),
        ],
    )
    today = datetime.now(JST).date()
    with pytest.raises(Problem) as early:
        ledger.settle(tenant, "m1", today)
    assert early.value.type == E + "settlement-period-invalid"
    st = ledger.statement(tenant, "m1", today)
    assert (st.received, st.refunded, st.net, st.fee_yen, st.payable_yen) == (
        3001,
        1,
        3000,
        45,
        2955,
    )
    tomorrow = datetime.now(UTC) + timedelta(days=1, hours=1)
    monkeypatch.setattr(settlement, "now_us", lambda: to_us(tomorrow))
    paid = ledger.settle(tenant, "m1", today)
    assert paid.created and paid.payable_yen == 2955
    again = ledger.settle(tenant, "m1", today)
    assert not again.created and again.transfer_id == paid.transfer_id
    assert ledger.get_account(tenant, "m1").balance == 0
    assert ledger.get_account(tenant, "settlement:gyosei").balance == 3000
    # Paid points are not counted again in the statement of the period.
    assert ledger.statement(tenant, "m1", today).net == 3000
    csv_bytes = ledger.settlements_csv(tenant)
    assert csv_bytes.startswith(b"\xef\xbb\xbf")
    text = csv_bytes.decode("utf-8-sig")
    assert text.splitlines()[0].startswith("加盟店コード,")
    assert ",3001,1,3000,1.50,45,2955," in text
    origin = Originator("1234567890", "ﾀｶｻｺﾞｼ", "0001", "ﾐｽﾞﾎ", "001", "ﾀｶｻｺﾞ", "1", "7654321")
    data = ledger.settlements_zengin(tenant, origin, date(2026, 12, 10))
    records = data.split(b"\r\n")[:-1]
    assert [len(r) for r in records] == [120] * 4
    assert [r[:1] for r in records] == [b"1", b"2", b"8", b"9"]
    assert records[1][80:90] == b"0000002955"
    assert records[2][1:7] == b"000001" and records[2][7:19] == b"000000002955"
    assert records[1][50:80].decode("cp932").rstrip() == "ｶ)ﾀｶｻｺﾞｼﾖｳﾃﾝ"  # no small kana
    assert ledger.verify(tenant).ok


def test_nothing_to_settle_and_not_a_merchant(ledger, tenant, monkeypatch):
    monkeypatch.setattr(settlement, "now_us", lambda: to_us(datetime.now(UTC) + timedelta(days=40)))
    with pytest.raises(Problem) as none:
        ledger.settle(tenant, "m1", datetime.now(JST).date())
    assert none.value.type == E + "nothing-to-settle"
    with pytest.raises(Problem) as wrong:
        ledger.settle(tenant, "r1", datetime.now(JST).date())
    assert wrong.value.type == E + "not-a-merchant"


def _paid_out(ledger, tenant, transfer_id: str) -> bool:
    """The per-account notion of "settled": the period's settlement transfer exists."""
    try:
        ledger.get_transfer(tenant, transfer_id)
    except Problem as exc:
        assert exc.status == 404
        return False
    return True


def _merchants_with_history(ledger, tenant, monkeypatch) -> list[date]:
    """m1 (no terms row: monthly, no fee), m2 (weekly, 1.5 %), m3 (daily, 3.33 %) with
    payments, refunds and an open hold 40, 8 and 1 days ago and today; two periods paid.
    Returns those days."""
    for code, cycle, fee_bp in (("m2", "weekly", 150), ("m3", "daily", 333)):
        ledger.open_account(tenant, AccountCreate(code=code, currency="gyosei", kind="merchant"))
        ledger.set_merchant_terms(tenant, code, MerchantTerms(fee_bp=fee_bp, cycle=cycle))
    ledger.post_transfers(tenant, [tx("budget", "r1", 4000), tx("budget", "r2", 4000)])
    now = datetime.now(UTC)
    for ago in (40, 8, 1, 0):
        monkeypatch.setattr(apply, "now_us", lambda ago=ago: to_us(now - timedelta(days=ago)))
        ledger.post_transfers(
            tenant,
            [
                tx("r1", "m1", 101 + ago, code="payment"),
                tx("r2", "m2", 203 + ago, code="payment"),
                tx("r1", "m3", 307 + ago, code="payment"),
                tx("m2", "r2", 7, code="refund"),
                tx("r2", "m1", 11, code="payment", pending=True),  # a hold counts for nothing
            ],
        )
    monkeypatch.undo()
    today = now.astimezone(JST).date()
    days = [today - timedelta(days=ago) for ago in (40, 8, 1, 0)]
    ledger.settle(tenant, "m1", days[0])
    ledger.settle(tenant, "m3", days[1])
    return days


def test_statements_in_bulk_match_one_account_at_a_time(ledger, tenant, monkeypatch):
    days = _merchants_with_history(ledger, tenant, monkeypatch)
    bulk = ledger.statements(tenant, days)
    assert sorted({code for code, _ in bulk}) == ["m1", "m2", "m3"]  # merchants only
    assert len(bulk) == 3 * len(days)
    for (code, day), s in bulk.items():
        assert s == ledger.statement(tenant, code, day), (code, day)
        assert s.settled == _paid_out(ledger, tenant, s.transfer_id), (code, day)
    assert [bulk["m1", days[0]].settled, bulk["m3", days[1]].settled] == [True, True]
    assert sum(s.settled for s in bulk.values()) == 2
    assert bulk["m3", days[3]].fee_yen == 307 * 333 // 10_000  # floored per account
    assert bulk["m2", days[3]].refunded >= 7
    # A subset of accounts, in the order asked; the same refusals as one at a time.
    some = ledger.statements(tenant, days[2:], ["m3", "m1"])
    assert list(some) == [("m3", days[2]), ("m3", days[3]), ("m1", days[2]), ("m1", days[3])]
    assert all(some[k] == bulk[k] for k in some)
    for code, problem in (("r1", "not-a-merchant"), ("nope", "account-not-found")):
        with pytest.raises(Problem) as refused:
            ledger.statements(tenant, days, ["m1", code])
        assert refused.value.type == E + problem


def test_settle_all_matches_settling_one_at_a_time(ledger, tenant, monkeypatch):
    days = _merchants_with_history(ledger, tenant, monkeypatch)
    ledger.open_account(tenant, AccountCreate(code="m4", currency="gyosei", kind="merchant"))
    day = days[3]
    with pytest.raises(Problem) as early:
        ledger.settle_all(tenant, day)
    assert early.value.type == E + "settlement-period-invalid"
    before = ledger.statements(tenant, [day])
    assert not any(s.settled for s in before.values())  # the refusal settled nothing
    monkeypatch.setattr(settlement, "now_us", lambda: to_us(datetime.now(UTC) + timedelta(days=40)))
    sink = ledger.get_account(tenant, "settlement:gyosei").balance
    done = ledger.settle_all(tenant, day)
    assert list(done) == ["m1", "m2", "m3", "m4"]
    assert done["m4"] is None  # nothing to settle
    paid = {s.transfer_id: s for s in ledger.settlements(tenant)}
    for code in ("m1", "m2", "m3"):
        expected = before[code, day].model_copy(update={"created": True, "settled": True})
        assert done[code] == expected
        stored = expected.model_copy(update={"created": False})
        assert ledger.settle(tenant, code, day) == stored == paid[expected.transfer_id]
    assert ledger.get_account(tenant, "settlement:gyosei").balance - sink == sum(
        s.net for s in done.values() if s is not None
    )
    again = ledger.settle_all(tenant, day)
    assert again == {
        code: None if s is None else s.model_copy(update={"created": False})
        for code, s in done.items()
    }
    assert ledger.verify(tenant).ok


def test_half_width_kana():
    assert to_zengin_kana("カ）タカサゴ　しょうてん") == "ｶ)ﾀｶｻｺﾞ ｼﾖｳﾃﾝ"
    assert to_zengin_kana("パン") == "ﾊﾟﾝ"
    with pytest.raises(ValueError):
        to_zengin_kana("漢字")
