"""The FastAPI application factory: wires settings, storage and every module's router."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy import Engine
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from kizuna import __version__
from kizuna.auth.routes import router as auth_router
from kizuna.auth.service import Authenticator
from kizuna.broker.context import ContextStore
from kizuna.broker.routes import router as broker_router
from kizuna.broker.service import Broker
from kizuna.broker.subscriptions.delivery import DeliveryWorker
from kizuna.broker.subscriptions.routes import router as subscriptions_router
from kizuna.broker.subscriptions.service import Subscriptions
from kizuna.broker.temporal.routes import router as temporal_router
from kizuna.broker.temporal.service import TemporalService
from kizuna.energy import pages as energy_pages
from kizuna.input_guard import InputGuard
from kizuna.ledger.jobs import LedgerJobs
from kizuna.ledger.routes import router as ledger_router
from kizuna.ledger.service import Ledger
from kizuna.points import pages as points_pages
from kizuna.points.routes import router as points_router
from kizuna.points.service import Points
from kizuna.problems import Problem, problem_response
from kizuna.settings import Settings, get_settings
from kizuna.storage import create_engine_for, upgrade_to_head
from kizuna.tenancy.routes import router as tenancy_router
from kizuna.tenancy.service import TenantDirectory
from kizuna.watch import pages as watch_pages
from kizuna.watch.routes import router as watch_router
from kizuna.watch.runtime import WatchRuntime
from kizuna.watch.service import WatchService
from kizuna.web.mount import error_page, mount_web, wants_html

log = logging.getLogger("kizuna")


@dataclass
class Services:
    """Process-wide objects the routes reach through ``request.app.state.services``."""

    settings: Settings
    engine: Engine
    authenticator: Authenticator
    tenants: TenantDirectory
    broker: Broker
    ledger: Ledger
    watch: WatchService
    temporal: TemporalService
    subscriptions: Subscriptions
    points: Points


def build_services(settings: Settings, engine: Engine | None = None) -> Services:
    if engine is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine_for(settings.effective_database_url())
    if settings.migrate_on_start:
        upgrade_to_head(engine)
    contexts = ContextStore(engine, settings)
    tenants = TenantDirectory(engine)
    broker = Broker(engine, contexts)
    ledger = Ledger(engine, settings.data_dir)
    # Both register listeners on the broker's write path: attribute history and the
    # notification outbox are written inside every entity write's transaction.
    temporal = TemporalService(broker, settings.temporal_instance_limit)
    subscriptions = Subscriptions(engine, contexts, broker, settings)
    points = Points(engine, ledger, settings.data_dir, settings.points_qr_secret)
    return Services(
        settings=settings,
        engine=engine,
        authenticator=Authenticator(engine, settings),
        tenants=tenants,
        broker=broker,
        ledger=ledger,
        watch=WatchService(engine, settings, broker, tenants, points, subscriptions),
        temporal=temporal,
        subscriptions=subscriptions,
        points=points,
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


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or get_settings()
    services = build_services(settings, engine)
    if settings.open_access:
        log.warning("KIZUNA_OPEN_ACCESS is on: anonymous callers act as platform admin")
    jobs = LedgerJobs(
        services.ledger, settings.ledger_checkpoint_seconds, settings.ledger_jobs_seconds
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        jobs.start()
        retention = None
        if settings.temporal_retention_enabled:
            retention = asyncio.create_task(_retention_loop(services))
        worker = None
        if settings.notify_worker:
            worker = DeliveryWorker(
                services.engine, services.subscriptions, services.broker.contexts, settings
            )
            await worker.start()
        app.state.delivery = worker
        # Devices' MQTT consumer and the watch jobs; with several workers, run them once
        # with `kizuna watch ingest` instead (one MQTT session, one scheduler).
        runtime = WatchRuntime(services.watch)
        runtime.start(
            mqtt=settings.workers == 1,
            jobs=settings.watch_jobs_enabled and settings.workers == 1,
        )
        app.state.watch_runtime = runtime
        try:
            yield
        finally:
            runtime.stop()
            if worker is not None:
                await worker.stop()
            if retention is not None:
                retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retention
            jobs.stop()

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
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if wants_html(request):
            return error_page(request, exc.status_code, str(exc.detail))
        kind = "ResourceNotFound" if exc.status_code == 404 else "urn:kizuna:errors:HttpError"
        problem = Problem(exc.status_code, kind, str(exc.detail), str(exc.detail))
        return problem_response(problem)

    @app.exception_handler(DataError)
    async def _refused_by_database(request: Request, exc: DataError) -> Response:
        # A value the database will not store (longer than its column, out of its type's
        # range) that got past validation: bad input, and its transaction rolled back. On
        # SQLite, which does not check lengths, the same value is stored.
        log.warning("the database refused a value: %s", exc.orig)
        detail = "A value is too long or out of range for storage"
        if wants_html(request):
            return error_page(request, 400, "入力値が長すぎるか範囲外です / " + detail)
        return problem_response(Problem(400, "BadRequestData", "Bad request data", detail))

    @app.get("/health", tags=["operations"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    app.include_router(broker_router)
    app.include_router(temporal_router)
    app.include_router(subscriptions_router)
    app.include_router(auth_router)
    app.include_router(tenancy_router)
    app.include_router(ledger_router)
    app.include_router(watch_router)
    app.include_router(points_router)
    mount_web(app, page_modules=[energy_pages, watch_pages, points_pages])
    app.add_middleware(
        InputGuard,
        limit=settings.max_body_bytes,
        uploads={"/energy/runs": settings.max_upload_bytes},
    )
    return app


def create_server_app() -> FastAPI:
    """The app as ``kizuna serve`` runs it in each worker process.

    Python's full (generation 2) collections walk every object the process holds; with a
    broker's caches that made 1–2 % of requests take 100 ms or more. Everything built at
    start-up is frozen out of collection, and full collections run a hundred times less
    often (young generations are unchanged, so short-lived cycles are still freed promptly).
    """
    app = create_app()
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1000)
    return app
