"""Puts the web UI on the app: static files, the shared pages and each module's pages."""

from __future__ import annotations

import pkgutil
from importlib import resources
from types import ModuleType
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

import kizuna
from kizuna.web import pages
from kizuna.web.session import SignInRequired
from kizuna.web.templating import NavItem, render


def mount_web(app: FastAPI, page_modules: list[ModuleType]) -> None:
    """``page_modules`` each export ``router`` and ``NAV`` (their header links)."""
    for module in pkgutil.iter_modules(kizuna.__path__):
        package = f"kizuna.{module.name}"
        if module.ispkg and resources.files(package).joinpath("static").is_dir():
            app.mount(
                f"/static/{module.name}",
                StaticFiles(packages=[(package, "static")]),
                name=f"static-{module.name}",
            )
    app.include_router(pages.router)
    nav: list[NavItem] = []
    for module in page_modules:
        app.include_router(module.router)
        nav.extend(module.NAV)
    app.state.nav = nav

    @app.exception_handler(SignInRequired)
    async def _sign_in(_request: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(f"/login?next={quote(exc.next_url, safe='')}", status_code=303)


def wants_html(request: Request) -> bool:
    """A browser asking for a page (not an API client) gets errors as a page."""
    return "text/html" in request.headers.get("accept", "") and not request.url.path.startswith(
        ("/ngsi-ld/", "/auth/", "/tenancy/")
    )


def error_page(request: Request, status: int, detail: str) -> Response:
    return render(
        request, "web/error.html.j2", {"status": status, "detail": detail}, status_code=status
    )
