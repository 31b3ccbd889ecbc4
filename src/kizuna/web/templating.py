"""One Jinja2 environment for every module's pages, with the shared layout and helpers.

Templates are named ``<module>/<file>``: ``energy/page.html.j2`` is
``kizuna/energy/templates/page.html.j2``; the layout is ``web/base.html.j2``.
"""

from __future__ import annotations

import pkgutil
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, PrefixLoader, select_autoescape
from markupsafe import Markup, escape

import kizuna
from kizuna.auth.service import Role
from kizuna.web.i18n import LANG_COOKIE, request_lang, translator
from kizuna.web.session import WebUser, optional_web_user

JST = ZoneInfo("Asia/Tokyo")


@dataclass(frozen=True)
class NavItem:
    """A link in the page header, shown to the roles given (None: everyone)."""

    href: str
    ja: str
    en: str
    roles: frozenset[Role] | None = None

    def visible_to(self, user: WebUser | None) -> bool:
        if self.roles is None:
            return True
        return user is not None and (user.role in self.roles or user.role == Role.PLATFORM_ADMIN)


@cache
def environment() -> Environment:
    modules = [
        m.name
        for m in pkgutil.iter_modules(kizuna.__path__)
        if m.ispkg and resources.files(f"kizuna.{m.name}").joinpath("templates").is_dir()
    ]
    env = Environment(
        loader=PrefixLoader(
            {name: PackageLoader(f"kizuna.{name}", "templates") for name in modules}
        ),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["yen"] = lambda amount: f"¥{int(amount):,}"
    env.filters["number"] = lambda value, digits=0: f"{value:,.{digits}f}"
    env.filters["jst"] = _jst
    return env


def _jst(moment: datetime | None, pattern: str = "%Y-%m-%d %H:%M") -> str:
    if moment is None:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo("UTC"))
    return moment.astimezone(JST).strftime(pattern)


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    user: WebUser | None = None,
) -> HTMLResponse:
    """Render a page with the layout's helpers: ``t``, ``lang``, ``user``, ``nav``, ``csrf_field``."""
    lang = request_lang(request)
    user = user if user is not None else optional_web_user(request)
    nav = [item for item in getattr(request.app.state, "nav", []) if item.visible_to(user)]
    csrf = user.csrf_token if user else ""
    page = (
        environment()
        .get_template(template)
        .render(
            request=request,
            lang=lang,
            t=translator(lang),
            user=user,
            nav=nav,
            csrf_field=lambda: Markup(
                f'<input type="hidden" name="csrf_token" value="{escape(csrf)}">'
            ),
            **(context or {}),
        )
    )
    response = HTMLResponse(page, status_code=status_code)
    if request.query_params.get("lang") in ("ja", "en"):
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 24 * 3600, samesite="lax")
    return response
