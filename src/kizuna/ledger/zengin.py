"""全銀協 総合振込 (general transfer) fixed-length file: 120-byte records in Shift_JIS (cp932).

Written here rather than taken from a library: the format is four record layouts
(header 1, data 2, trailer 8, end 9), each field a fixed width of digits (right-aligned,
zero-filled) or half-width katakana / upper-case ASCII (left-aligned, space-filled).
Records end with CRLF, as most banks' upload screens expect.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date


def _build_halfwidth() -> dict[str, str]:
    table: dict[str, str] = {}
    for code in range(0xFF61, 0xFFA0):
        half = chr(code)
        table.setdefault(unicodedata.normalize("NFKC", half), half)
        for mark in ("\uff9e", "\uff9f"):  # ﾞ ﾟ
            full = unicodedata.normalize("NFKC", half + mark)
            if len(full) == 1:
                table.setdefault(full, half + mark)
    # Banks accept no small kana: use the large ones.
    for small, large in zip("ァィゥェォャュョッヮ", "アイウエオヤユヨツワ", strict=True):
        table[small] = table[large]
    table["ー"] = "\uff70"  # ｰ
    table["　"] = " "
    return table


_HALF = _build_halfwidth()
_ALLOWED_ASCII = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ().,-/\\")


def to_zengin_kana(text: str) -> str:
    """Full-width or hiragana names → the half-width characters the 全銀 format allows."""
    out = []
    for ch in unicodedata.normalize("NFKC", text):
        if "ぁ" <= ch <= "ゖ":
            ch = chr(ord(ch) + 0x60)  # hiragana → katakana
        ch = ch.upper()
        if ch in _HALF:
            out.append(_HALF[ch])
        elif ch in _ALLOWED_ASCII:
            out.append(ch)
        else:
            raise ValueError(f"{ch!r} cannot be written in a 全銀 file")
    return "".join(out)


def _text(value: str, width: int) -> bytes:
    raw = to_zengin_kana(value).encode("cp932")
    if len(raw) > width:
        raw = raw[:width]
    return raw.ljust(width, b" ")


def _digits(value: int | str, width: int) -> bytes:
    s = str(value)
    if not s.isdigit() or len(s) > width:
        raise ValueError(f"{value!r} does not fit {width} digits")
    return s.rjust(width, "0").encode("ascii")


@dataclass
class Originator:
    """The city's own account (依頼人) the transfers are paid from."""

    code: str  # 依頼人コード, 10 digits, given by the bank
    name: str  # 依頼人名 (kana)
    bank_code: str
    bank_name: str
    branch_code: str
    branch_name: str
    account_type: str  # 1 普通, 2 当座
    account_number: str


@dataclass
class Payee:
    bank_code: str
    branch_code: str
    account_type: str
    account_number: str
    name: str  # 受取人名 (kana)
    amount: int  # yen
    customer_code: str = ""  # 顧客コード1 (e.g. the merchant account), digits
    bank_name: str = ""
    branch_name: str = ""


def transfer_file(origin: Originator, payees: list[Payee], transfer_date: date) -> bytes:
    """The whole file: header, one data record per payee, trailer, end record."""
    records = [
        b"1"
        + b"21"  # 種別コード: 総合振込
        + b"0"  # コード区分: SJIS
        + _digits(origin.code, 10)
        + _text(origin.name, 40)
        + transfer_date.strftime("%m%d").encode()
        + _digits(origin.bank_code, 4)
        + _text(origin.bank_name, 15)
        + _digits(origin.branch_code, 3)
        + _text(origin.branch_name, 15)
        + _digits(origin.account_type, 1)
        + _digits(origin.account_number, 7)
        + b" " * 17
    ]
    total = 0
    for p in payees:
        if p.amount <= 0 or p.amount > 9_999_999_999:
            raise ValueError(f"amount {p.amount} cannot be transferred")
        total += p.amount
        records.append(
            b"2"
            + _digits(p.bank_code, 4)
            + _text(p.bank_name, 15)
            + _digits(p.branch_code, 3)
            + _text(p.branch_name, 15)
            + b" " * 4  # 手形交換所番号
            + _digits(p.account_type, 1)
            + _digits(p.account_number, 7)
            + _text(p.name, 30)
            + _digits(p.amount, 10)
            + b"0"  # 新規コード
            + (_digits(p.customer_code, 10) if p.customer_code else b" " * 10)
            + b" " * 10  # 顧客コード2
            + b"7"  # 振込指定区分: 電信
            + b" "  # 識別表示
            + b" " * 7
        )
    records.append(b"8" + _digits(len(payees), 6) + _digits(total, 12) + b" " * 101)
    records.append(b"9" + b" " * 119)
    for r in records:
        assert len(r) == 120, (r[:1], len(r))
    return b"".join(r + b"\r\n" for r in records)
