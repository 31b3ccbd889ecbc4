"""Sign-in for the web pages: the bearer token in an HttpOnly cookie, CSRF on forms.

The API keeps taking credentials only from headers, so a browser's cookie can never
act on the API; pages read the cookie through :data:`PageUser`. Form posts carry a
token derived from the session token (double submit): a third-party page cannot
read the cookie and so cannot forge it; SameSite=Lax blocks cross-site posts too.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, HTTPException, Request

from kizuna.auth.service import Principal, Role

SESSION_COOKIE = "kizuna_session"


@dataclass(frozen=True)
class WebUser:
    principal: Principal
    username: str
    display_name: str
    csrf_token: str

    @property
    def role(self) -> Role | None:
        return self.principal.role

    @property
    def home_tenant(self) -> str | None:
        """The tenant a page acts in when the user belongs to exactly one (residents, shops)."""
        tenants = self.principal.tenants
        return next(iter(tenants)) if tenants and len(tenants) == 1 else None


class SignInRequired(Exception):
    """Raised by page dependencies; the app turns it into a redirect to the sign-in page."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def csrf_token_for(session_token: str) -> str:
    return hashlib.sha256(b"kizuna-csrf:" + session_token.encode()).hexdigest()


def optional_web_user(request: Request) -> WebUser | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    services = request.app.state.services
    try:
        principal = services.authenticator.authenticate(f"Bearer {token}", None)
    except Exception:  # noqa: BLE001 - an expired or revoked session is just "signed out"
        return None
    if principal.kind != "user":
        return None
    username = principal.subject.removeprefix("user:")
    display_name = services.authenticator.display_name(username) or username
    return WebUser(principal, username, display_name, csrf_token_for(token))


def web_user(request: Request) -> WebUser:
    user = optional_web_user(request)
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(quote(target, safe="/?=&"))
    return user


def checked_web_user(request: Request, csrf_token: Annotated[str, Form()] = "") -> WebUser:
    """The signed-in user of a form post whose CSRF token matches the session."""
    user = web_user(request)
    if not hmac.compare_digest(csrf_token, user.csrf_token):
        raise HTTPException(403, "The form has expired; reload the page and try again")
    return user


OptionalPageUser = Annotated[WebUser | None, Depends(optional_web_user)]
PageUser = Annotated[WebUser, Depends(web_user)]
# For POST handlers of forms rendered with ``{{ csrf_field() }}``.
FormUser = Annotated[WebUser, Depends(checked_web_user)]
