"""The FastAPI application factory: wires settings, storage and every module's router."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kizuna import __version__
from kizuna.auth.routes import router as auth_router
from kizuna.auth.service import Authenticator
from kizuna.broker.context import ContextStore
from kizuna.broker.routes import router as broker_router
from kizuna.broker.service import Broker
from kizuna.broker.temporal.routes import router as temporal_router
from kizuna.broker.temporal.service import TemporalService
from kizuna.problems import Problem
from kizuna.settings import Settings, get_settings
from kizuna.storage import create_engine_for, upgrade_to_head
from kizuna.tenancy.routes import router as tenancy_router
from kizuna.tenancy.service import TenantDirectory

log = logging.getLogger("kizuna")


@dataclass
class Services:
    """Process-wide objects the routes reach through ``request.app.state.services``."""

    settings: Settings
    engine: Engine
    authenticator: Authenticator
    tenants: TenantDirectory
    broker: Broker
    temporal: TemporalService


def build_services(settings: Settings, engine: Engine | None = None) -> Services:
    if engine is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine_for(settings.effective_database_url())
    upgrade_to_head(engine)
    broker = Broker(engine, ContextStore(engine, settings))
    return Services(
        settings=settings,
        engine=engine,
        authenticator=Authenticator(engine, settings),
        tenants=TenantDirectory(engine),
        broker=broker,
        temporal=TemporalService(broker, settings.temporal_instance_limit),
    )


async def _retention_loop(services: Services) -> None:
    """Purge temporal history older than the retention period, now and then periodically."""
    settings = services.settings
    while True:
        try:
            await asyncio.to_thread(
                services.temporal.purge,
                settings.temporal_retention_days,
                settings.temporal_retention_by_tenant,
            )
        except Exception:  # noqa: BLE001 - keep the loop alive; the next run retries
            log.exception("temporal retention run failed")
        await asyncio.sleep(settings.temporal_retention_interval_minutes * 60)


def problem_response(problem: Problem) -> Response:
    return Response(
        orjson.dumps(problem.body()), status_code=problem.status, media_type="application/json"
    )


class BodySizeLimit:
    """Refuses request bodies over the limit with 413 before they reach a route."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = Problem(
            413,
            "urn:kizuna:errors:PayloadTooLarge",
            "Payload too large",
            f"The request body exceeds {self.limit} bytes",
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await problem_response(too_large)(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise too_large
            return message

        await self.app(scope, limited_receive, send)


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or get_settings()
    services = build_services(settings, engine)
    if settings.open_access:
        log.warning("KIZUNA_OPEN_ACCESS is on: anonymous callers act as platform admin")

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = None
        if settings.temporal_retention_enabled:
            task = asyncio.create_task(_retention_loop(services))
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(
        lifespan=lifespan,
        title="Kizuna city OS",
        version=__version__,
        description="NGSI-LD context broker and resident services for municipalities (都市OS)",
    )
    app.state.services = services

    @app.exception_handler(Problem)
    async def _problem(_request: Request, problem: Problem) -> Response:
        return problem_response(problem)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return problem_response(Problem(400, "BadRequestData", "Bad request data", details))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        kind = "ResourceNotFound" if exc.status_code == 404 else "urn:kizuna:errors:HttpError"
        problem = Problem(exc.status_code, kind, str(exc.detail), str(exc.detail))
        return problem_response(problem)

    @app.get("/health", tags=["operations"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    app.include_router(broker_router)
    app.include_router(temporal_router)
    app.include_router(auth_router)
    app.include_router(tenancy_router)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    return app
