"""FastAPI dependencies that put every request into a TenantScope before a route runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kizuna.auth.service import Principal
from kizuna.tenancy.service import TenantScope


async def current_principal(request: Request) -> Principal:
    services = request.app.state.services
    return services.authenticator.authenticate(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )


def _scope(write: bool):  # noqa: ANN202
    # async like current_principal: the tenant check is a cache hit almost always, and a
    # sync dependency would cost every request a hop to the thread pool and back.
    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> TenantScope:
        return request.app.state.services.tenants.scope(
            principal, request.headers.get("ngsild-tenant"), write=write
        )

    return dependency


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
ReadScope = Annotated[TenantScope, Depends(_scope(write=False))]
WriteScope = Annotated[TenantScope, Depends(_scope(write=True))]
