"""``kizuna ledger …`` commands (mounted by kizuna.cli): verify, checkpoint, jobs, settlement."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import typer
from rich.console import Console

ledger_app = typer.Typer(help="地域ポイント台帳 / Regional points ledger", no_args_is_help=True)
console = Console()


def _ledger():  # noqa: ANN202 - imported lazily so `kizuna --help` stays fast
    from kizuna.ledger.service import Ledger
    from kizuna.settings import get_settings
    from kizuna.storage import create_engine_for, upgrade_to_head

    settings = get_settings()
    engine = create_engine_for(settings.effective_database_url(), pool_size=2)
    upgrade_to_head(engine)
    return Ledger(engine, settings.data_dir)


@ledger_app.command()
def verify(
    tenant: str = typer.Option(None, help="One tenant (default: every tenant with a ledger)"),
    trusted_key: list[str] = typer.Option(
        [], help="Pinned Ed25519 public key(s), hex; checkpoints must be signed by one of them"
    ),
) -> None:
    """Recompute the Merkle log, every balance and every lot; check every checkpoint.

    Exits 1 (and lists what differs) if anything does not match.
    """
    from kizuna.ledger.keys import key_id

    pinned = {key_id(bytes.fromhex(k)): bytes.fromhex(k) for k in trusted_key}
    report = _ledger().verify(tenant, pinned or None)
    for error in report.errors:
        console.print(f"[red]✗[/] {error}")
    status = "[green]OK[/]" if report.ok else "[red]FAILED[/]"
    console.print(
        f"{status}: {report.tenants} tenant(s), {report.transfers} transfers, "
        f"{report.accounts} accounts, {report.checkpoints} checkpoints in {report.seconds:.2f} s"
    )
    raise typer.Exit(0 if report.ok else 1)


@ledger_app.command()
def checkpoint(tenant: str) -> None:
    """Sign and publish a checkpoint of the tenant's log now."""
    cp = _ledger().checkpoint(tenant)
    console.print(cp.note if cp else "the log is empty")


@ledger_app.command()
def jobs(tenant: str) -> None:
    """Void timed-out pending transfers and move expired points to the expiry sink."""
    ledger = _ledger()
    voided = ledger.void_expired_pending(tenant)
    expired = ledger.expire_lots(tenant)
    console.print(f"voided {len(voided)} pending transfers; {len(expired)} expiry transfers")


@ledger_app.command()
def settle(
    tenant: str, merchant: str, day: str = typer.Argument(..., help="YYYY-MM-DD in the period")
) -> None:
    """Settle a merchant's finished period (a second run changes nothing)."""
    s = _ledger().settle(tenant, merchant, date.fromisoformat(day))
    console.print(s.model_dump_json(indent=2))


@ledger_app.command("export-csv")
def export_csv(
    tenant: str,
    out: Path,
    since: str = typer.Option(None, help="YYYY-MM-DD"),
    until: str = typer.Option(None, help="YYYY-MM-DD"),
) -> None:
    """Write the settlements as CSV for Excel (UTF-8 with BOM)."""
    data = _ledger().settlements_csv(
        tenant, since and date.fromisoformat(since), until and date.fromisoformat(until)
    )
    out.write_bytes(data)
    console.print(f"wrote {out}")
