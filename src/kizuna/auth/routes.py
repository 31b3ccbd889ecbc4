"""HTTP routes of the auth module: tokens for people, API keys for machines, users."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field

from kizuna.auth import service
from kizuna.auth.service import Principal, Role
from kizuna.problems import forbidden, not_found, unauthorized
from kizuna.routing import ModuleRouter
from kizuna.storage import writer
from kizuna.tenancy.deps import CurrentPrincipal

router = ModuleRouter(prefix="/auth", tags=["auth"])

# Roles a municipal staff member may hand out within their own municipality.
_STAFF_GRANTABLE = {
    Role.MUNICIPAL_STAFF,
    Role.SERVICE_PROVIDER,
    Role.DEVICE,
    Role.MERCHANT,
    Role.RESIDENT,
}


class TokenRequest(BaseModel):
    username: str
    password: str


class ApiKeyCreate(BaseModel):
    tenant: str
    can_write: bool = False
    label: str = Field(min_length=1, max_length=200)


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=120)
    display_name: str = Field(min_length=1, max_length=200)
    role: Role
    password: str | None = Field(default=None, min_length=8)
    tenants: list[str] = []


def _engine(request: Request) -> Any:
    return request.app.state.services.engine


def _require_manager(principal: Principal, tenants: list[str]) -> None:
    if principal.is_anonymous:
        raise unauthorized("Sign in first")
    if principal.is_platform_admin:
        return
    if principal.role != Role.MUNICIPAL_STAFF or not all(principal.acts_in(t) for t in tenants):
        raise forbidden("Only platform admins and the municipality's staff may do this")


@router.post("/token")
def issue_token(request: Request, body: TokenRequest) -> dict[str, Any]:
    ttl = timedelta(hours=request.app.state.services.settings.token_ttl_hours)
    with writer(_engine(request)).begin() as conn:
        token, expires = service.issue_token(conn, body.username, body.password, ttl)
    return {
        "access_token": token,
        "token_type": "bearer",
        "expires_in": int(ttl.total_seconds()),
        "expires_at": expires.isoformat(),
    }


@router.get("/me")
def me(principal: CurrentPrincipal) -> dict[str, Any]:
    return {
        "kind": principal.kind,
        "subject": principal.subject,
        "role": principal.role,
        "tenants": None if principal.tenants is None else sorted(principal.tenants),
        "can_write": principal.can_write,
    }


@router.post("/api-keys", status_code=201)
def create_api_key(
    request: Request, principal: CurrentPrincipal, body: ApiKeyCreate
) -> dict[str, Any]:
    _require_manager(principal, [body.tenant])
    request.app.state.services.tenants.require(body.tenant)
    with writer(_engine(request)).begin() as conn:
        key = service.create_api_key(conn, body.tenant, body.can_write, body.label)
    return {"api_key": key, "tenant": body.tenant, "can_write": body.can_write, "label": body.label}


@router.get("/api-keys")
def list_api_keys(request: Request, principal: CurrentPrincipal) -> list[dict[str, Any]]:
    _require_manager(principal, [])
    with _engine(request).connect() as conn:
        return service.list_api_keys(conn, principal.tenants)


@router.delete("/api-keys/{key_id}", status_code=204)
def revoke_api_key(request: Request, principal: CurrentPrincipal, key_id: str) -> None:
    _require_manager(principal, [])
    with writer(_engine(request)).begin() as conn:
        if not service.revoke_api_key(conn, key_id, principal.tenants):
            raise not_found(f"No active API key {key_id}")
    request.app.state.services.authenticator.forget()


@router.post("/users", status_code=201)
def create_user(request: Request, principal: CurrentPrincipal, body: UserCreate) -> dict[str, Any]:
    _require_manager(principal, body.tenants)
    if not principal.is_platform_admin and body.role not in _STAFF_GRANTABLE:
        raise forbidden(f"Municipal staff cannot create {body.role} users")
    for tenant in body.tenants:
        request.app.state.services.tenants.require(tenant)
    with writer(_engine(request)).begin() as conn:
        user_id = service.create_user(
            conn, body.username, body.display_name, body.role, body.password, body.tenants
        )
    return {"id": user_id, "username": body.username, "role": body.role, "tenants": body.tenants}
