"""The portal, sign-in and sign-out pages."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kizuna.auth import service as auth
from kizuna.problems import Problem
from kizuna.routing import ModuleRouter
from kizuna.storage import writer
from kizuna.tenancy.service import DEFAULT_TENANT
from kizuna.web.session import SESSION_COOKIE, FormUser, OptionalPageUser
from kizuna.web.templating import render

router = ModuleRouter(include_in_schema=False)


def _local(target: str | None) -> str:
    """Only same-site paths are followed after sign-in (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/"


@router.get("/", response_class=HTMLResponse)
def portal(request: Request, user: OptionalPageUser) -> Response:
    # The spec's default tenant holds data sent without NGSILD-Tenant; it is no municipality.
    tenants = [
        tenant
        for tenant in request.app.state.services.tenants.list_tenants()
        if tenant["id"] != DEFAULT_TENANT
    ]
    return render(request, "web/portal.html.j2", {"tenants": tenants}, user=user)


@router.get("/login", response_class=HTMLResponse)
def sign_in_form(request: Request, next: str = "/") -> Response:  # noqa: A002 - the URL's name
    return render(request, "web/login.html.j2", {"next": _local(next), "error": None})


@router.post("/login", response_class=HTMLResponse)
def sign_in(
    request: Request,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",  # noqa: A002
) -> Response:
    services = request.app.state.services
    ttl = timedelta(hours=services.settings.token_ttl_hours)
    try:
        with writer(services.engine).begin() as conn:
            token, _ = auth.issue_token(conn, username.strip(), password, ttl)
    except Problem:
        context = {"next": _local(next), "error": True, "username": username}
        return render(request, "web/login.html.j2", context, status_code=401)
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(ttl.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def sign_out(request: Request, user: FormUser) -> Response:
    services = request.app.state.services
    with writer(services.engine).begin() as conn:
        auth.revoke_token(conn, request.cookies[SESSION_COOKIE])
    services.authenticator.forget()
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
