"""``kizuna energy …`` commands (mounted by kizuna.cli): simulate a folder, write a synthetic year."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

energy_app = typer.Typer(
    help="廃棄物発電の地産地消 / Local use of waste-to-energy power", no_args_is_help=True
)
console = Console()
# Steps simulate reports through its progress callback, in order, plus writing outputs.
STEPS = [
    "read",
    "allocate",
    "sensitivity price -20%",
    "sensitivity price +20%",
    "sensitivity surplus -20%",
    "sensitivity surplus +20%",
    "write",
]


@energy_app.command()
def simulate(
    folder: Path = typer.Argument(
        ...,
        exists=True,
        file_okay=False,
        help="Folder with facilities.csv, demand*.csv, plant.csv [, prices.csv]",
    ),
    config: Path = typer.Option(
        None,
        "--config",
        "-c",
        exists=True,
        dir_okay=False,
        help="TOML overriding the default parameters",
    ),
    out: Path = typer.Option(
        Path("energy-report"), "--out", "-o", help="Folder for report.html/.pdf, charts and CSVs"
    ),
    pdf: bool = typer.Option(True, "--pdf/--no-pdf", help="Also write report.pdf"),
) -> None:
    """Match the plant to the facilities slot by slot, compare the schemes, write the report."""
    # numpy/pandas load only when an energy command runs, not with the server.
    from kizuna.energy import service

    try:
        cfg = service.load_config(config)
    except service.ConfigError as exc:
        console.print(f"[red]設定エラー / config error:[/] {exc}")
        raise typer.Exit(2) from exc
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("reading", total=len(STEPS))

        def step(name: str) -> None:
            bar.update(task, description=name, completed=STEPS.index(name) if name in STEPS else 0)

        try:
            result = service.simulate(folder, cfg, progress=step)
        except service.InputError as exc:
            bar.stop()
            console.print(f"[red]入力エラー / input error[/] — {exc}")
            raise typer.Exit(1) from exc
        step("write")
        paths = service.write_outputs(result, out, pdf=pdf)
        bar.update(task, description="done", completed=len(STEPS))
    table = Table(title="方式比較 / Schemes (円 yen per year)")
    table.add_column("方式 / scheme")
    table.add_column("正味費用 / net cost", justify="right")
    table.add_column("現状比 / vs status quo", justify="right")
    table.add_column("要件 / eligibility")
    base = result.schemes["status_quo"].annual_yen
    for sr in result.schemes.values():
        flag = {None: "—", True: "確認済 confirmed", False: "[yellow]未確認 not confirmed[/]"}[
            sr.confirmed
        ]
        table.add_row(sr.label, f"{sr.annual_yen:,}", f"{sr.annual_yen - base:+,}", flag)
    console.print(table)
    if result.inputs.synthetic:
        console.print("[yellow]合成データ / SYNTHETIC DATA[/]")
    console.print(f"{len(paths)} files written to {out}/ (report.html)")


@energy_app.command()
def synthesize(
    out_dir: Path = typer.Argument(..., help="Folder to write the synthetic CSVs into"),
    fiscal_year: int = typer.Option(2025, help="Fiscal year (April–March)"),
    facilities: int = typer.Option(161, help="Number of facilities"),
    seed: int = typer.Option(20250401, help="Random seed (same seed, same data)"),
) -> None:
    """Write a synthetic year (labelled SYNTHETIC) as CSV in the shapes simulate reads."""
    # numpy/pandas load only when an energy command runs, not with the server.
    from kizuna.energy import service

    inputs = service.synthesize(fiscal_year, facilities, seed)
    service.write_inputs(inputs, out_dir)
    console.print(
        f"合成データ / synthetic year FY{fiscal_year}: {facilities} facilities, {inputs.fy.slots:,} slots → {out_dir}/"
    )
