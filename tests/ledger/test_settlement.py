"""Merchant settlement: statement, fee, one payment per period, CSV for Excel, 全銀 file."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from kizuna.ledger import settlement
from kizuna.ledger.apply import JST, to_us
from kizuna.ledger.schemas import MerchantTerms
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


def test_half_width_kana():
    assert to_zengin_kana("カ）タカサゴ　しょうてん") == "ｶ)ﾀｶｻｺﾞ ｼﾖｳﾃﾝ"
    assert to_zengin_kana("パン") == "ﾊﾟﾝ"
    with pytest.raises(ValueError):
        to_zengin_kana("漢字")
