"""HTTP routes of the tenancy module: municipalities, regions, open-data types."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Request
from pydantic import BaseModel, Field

from kizuna.auth.service import Role
from kizuna.problems import bad_request, forbidden, unauthorized
from kizuna.routing import ModuleRouter
from kizuna.tenancy.deps import CurrentPrincipal
from kizuna.tenancy.service import TENANT_NAME

router = ModuleRouter(prefix="/tenancy", tags=["tenancy"])


# Ids of tenants and regions, as the NGSILD-Tenant header takes them; names as their
# columns hold them.
Id = Annotated[str, Field(pattern=TENANT_NAME.pattern)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class TenantCreate(BaseModel):
    id: Id
    name_ja: Name
    name_en: Name
    region_id: str | None = None
    lg_code: str | None = Field(default=None, pattern=r"^\d{6}$")


class RegionCreate(BaseModel):
    id: Id
    name_ja: Name
    name_en: Name


# The length of tenancy_open_types.entity_type.
MAX_OPEN_TYPE = 512


class OpenTypes(BaseModel):
    # Entity type names, expanded with the core @context (or give full IRIs).
    types: list[str]


def _directory(request: Request) -> Any:
    return request.app.state.services.tenants


@router.get("/tenants")
def list_tenants(request: Request) -> list[dict[str, Any]]:
    return _directory(request).list_tenants()


@router.get("/regions")
def list_regions(request: Request) -> list[dict[str, Any]]:
    return _directory(request).list_regions()


@router.post("/regions", status_code=201)
def create_region(
    request: Request, principal: CurrentPrincipal, body: RegionCreate
) -> dict[str, str]:
    if not principal.is_platform_admin:
        raise forbidden("Only platform admins create regions")
    _directory(request).create_region(body.id, body.name_ja, body.name_en)
    return {"id": body.id}


@router.post("/tenants", status_code=201)
def create_tenant(
    request: Request, principal: CurrentPrincipal, body: TenantCreate
) -> dict[str, str]:
    if not principal.is_platform_admin:
        raise forbidden("Only platform admins create tenants")
    _directory(request).create_tenant(
        body.id, body.name_ja, body.name_en, body.region_id, body.lg_code
    )
    return {"id": body.id}


@router.put("/tenants/{tenant_id}/open-types")
def set_open_types(
    request: Request, principal: CurrentPrincipal, tenant_id: str, body: OpenTypes
) -> dict[str, Any]:
    if principal.is_anonymous:
        raise unauthorized("Sign in first")
    if not principal.is_platform_admin and not (
        principal.role == Role.MUNICIPAL_STAFF and principal.acts_in(tenant_id)
    ):
        raise forbidden("Only the municipality's staff may publish its data")
    core = request.app.state.services.broker.contexts.core
    expanded = [core.expand(t) for t in body.types]
    if any(len(t) > MAX_OPEN_TYPE for t in expanded):
        raise bad_request(f"An entity type is over {MAX_OPEN_TYPE} characters once expanded")
    _directory(request).set_open_types(tenant_id, expanded)
    return {"tenant": tenant_id, "open_types": expanded}
