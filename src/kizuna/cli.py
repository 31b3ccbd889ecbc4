"""The ``kizuna`` command: serve the platform, seed the demo region, manage the database."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import typer
from rich.console import Console

from kizuna.energy.cli import energy_app
from kizuna.ledger.cli import ledger_app
from kizuna.settings import Settings, get_settings
from kizuna.watch.cli import watch_app

app = typer.Typer(help="Kizuna (絆) city OS", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance")
users_app = typer.Typer(help="Users and API keys")
app.add_typer(db_app, name="db")
app.add_typer(energy_app, name="energy", help="Local consumption of waste-to-energy power")
app.add_typer(users_app, name="users")
app.add_typer(watch_app, name="watch", help="Mimamori and flood sensors (MQTT ingest, jobs)")
app.add_typer(ledger_app, name="ledger", help="Regional points ledger: verify, checkpoints, jobs")
console = Console()


def _serve(settings: Settings, workers: int) -> NoReturn:
    # Workers re-read settings from the environment, so hand the effective URL on. The
    # database is migrated already: the server's processes need not load Alembic.
    os.environ.setdefault("KIZUNA_DATABASE_URL", settings.effective_database_url())
    os.environ["KIZUNA_MIGRATE_ON_START"] = "false"
    # uvicorn's own command replaces this process (same pid), so the server's processes hold
    # the app and not this CLI (Typer, Rich: ~3 MB), which multiprocessing would otherwise
    # import again in every worker.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(
        sys.executable,
        [
            sys.executable,
            "-m",
            "uvicorn",
            "kizuna.app:create_server_app",
            "--factory",
            "--host",
            settings.host,
            "--port",
            str(settings.port),
            "--workers",
            str(workers),
            "--log-level",
            "info",
            "--no-access-log",
        ],
    )


@app.command()
def serve(
    host: str = typer.Option(None, help="Listen address (default KIZUNA_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="Port (default KIZUNA_PORT or 8000)"),
    workers: int = typer.Option(None, help="Worker processes (default KIZUNA_WORKERS or 1)"),
) -> None:
    """Run the API and web UI. Migrations are applied on start."""
    settings = get_settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    from kizuna.storage import create_engine_for, upgrade_to_head

    upgrade_to_head(create_engine_for(settings.effective_database_url()))
    _serve(settings, workers or settings.workers)


@app.command()
def demo(
    serve_after: bool = typer.Option(True, "--serve/--no-serve", help="Serve once seeded"),
    port: int = typer.Option(None, help="Port (default KIZUNA_PORT or 8000)"),
) -> None:
    """Create the 東播磨 demo region (four towns with sample data), then serve it."""
    from kizuna.app import build_services
    from kizuna.demo import seed

    settings = get_settings()
    if port:
        settings.port = port
    services = build_services(settings)
    summary = seed(services, console)
    console.print(summary)
    if serve_after:
        console.print(f"[bold green]http://{settings.host}:{settings.port}/[/] で公開中 (serving)")
        _serve(settings, 1)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations."""
    from kizuna.storage import create_engine_for, upgrade_to_head

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(create_engine_for(settings.effective_database_url()))
    console.print("database is up to date")


@db_app.command("purge-history")
def purge_history(
    days: int = typer.Option(
        None, help="Keep this many days (default KIZUNA_TEMPORAL_RETENTION_DAYS)"
    ),
) -> None:
    """Delete temporal history older than the retention period (every tenant)."""
    from kizuna.broker.context import ContextStore
    from kizuna.broker.service import Broker
    from kizuna.broker.temporal.service import TemporalService
    from kizuna.storage import create_engine_for, upgrade_to_head

    settings = get_settings()
    engine = create_engine_for(settings.effective_database_url())
    upgrade_to_head(engine)
    temporal = TemporalService(Broker(engine, ContextStore(engine, settings)))
    keep = settings.temporal_retention_days if days is None else days
    removed = temporal.purge(keep, settings.temporal_retention_by_tenant)
    console.print(f"removed {removed} temporal instances")


@users_app.command("create")
def create_user(
    username: str,
    role: str = typer.Option(..., help="platform_admin, municipal_staff, service_provider, ..."),
    tenant: list[str] = typer.Option([], help="Tenant(s) the user acts in"),
    display_name: str = typer.Option(None),
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True),
) -> None:
    """Create a user who signs in with a password."""
    from kizuna.auth.service import Role
    from kizuna.auth.service import create_user as create
    from kizuna.storage import create_engine_for, upgrade_to_head, writer

    engine = create_engine_for(get_settings().effective_database_url())
    upgrade_to_head(engine)
    with writer(engine).begin() as conn:
        create(conn, username, display_name or username, Role(role), password, tenant)
    console.print(f"created {username} ({role})")


@users_app.command("api-key")
def create_api_key(
    tenant: str,
    label: str = typer.Option(..., help="What the key is for"),
    write: bool = typer.Option(False, "--write", help="Allow writing (default read-only)"),
) -> None:
    """Create an API key for a machine; it is shown once."""
    from kizuna.auth.service import create_api_key as create
    from kizuna.storage import create_engine_for, upgrade_to_head, writer

    engine = create_engine_for(get_settings().effective_database_url())
    upgrade_to_head(engine)
    with writer(engine).begin() as conn:
        key = create(conn, tenant, write, label)
    console.print(key)


if __name__ == "__main__":
    app()
