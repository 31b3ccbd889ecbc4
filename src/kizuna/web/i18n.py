"""Japanese first, English second: the language of a page and the ``t()`` helper.

Pages keep both texts side by side (``t("ウォレット", "Wallet")``) instead of message
catalogues, so a reader sees what each screen says in both languages at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from fastapi import Request

Lang = Literal["ja", "en"]
LANG_COOKIE = "kizuna_lang"


def request_lang(request: Request) -> Lang:
    """``?lang=`` wins, then the cookie the language switch sets, then Japanese."""
    chosen = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    return "en" if chosen == "en" else "ja"


def translator(lang: Lang) -> Callable[[str, str], str]:
    def t(ja: str, en: str) -> str:
        return en if lang == "en" else ja

    return t
