"""Simulation runs kept for the web page: the results as files, one ``energy_runs`` row each.

A run's folder ``KIZUNA_DATA_DIR/energy/runs/<folder>/`` holds what ``write_outputs`` writes
(report.html/.pdf, chart PNGs and SVGs, CSV exports), ``view.json`` (every figure the page
shows, so that showing a run needs neither numpy nor a recomputation) and ``ngsi-ld.json``
(the monthly per-town entities to publish). The folder is complete before its row is
inserted, and removed again if the insert fails: a row always points at a whole run, and
a failed run leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, insert, select, update

from kizuna.energy.models import runs
from kizuna.storage import writer

if TYPE_CHECKING:
    from kizuna.energy.service import Result

CHARTS = ("schemes", "monthly", "typical_day", "duration")
# Files a run offers for download, with their labels (Japanese, English).
DOWNLOADS: dict[str, tuple[str, str]] = {
    "report.pdf": ("報告書（PDF）", "Report (PDF)"),
    "report.html": ("報告書（HTML）", "Report (HTML)"),
    "schemes.csv": ("方式比較", "Schemes compared"),
    "towns_monthly.csv": ("市町別・月別", "By town and month"),
    "facilities.csv": ("施設別", "By facility"),
    "sensitivity.csv": ("感度分析", "Sensitivity"),
    "slots.csv": ("30分値（全コマ）", "Every half-hour slot"),
}
MEDIA_TYPES = {
    ".csv": "text/csv; charset=utf-8",
    ".pdf": "application/pdf",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


@dataclass(frozen=True)
class Run:
    id: int
    region_id: str
    title: str
    fiscal_year: int
    synthetic: bool
    facilities: int
    folder: str
    summary: dict[str, Any]
    created_by: str
    created_at: datetime
    published_at: datetime | None

    def path(self, data_dir: Path) -> Path:
        return runs_dir(data_dir) / self.folder

    def view(self, data_dir: Path) -> dict[str, Any]:
        return json.loads((self.path(data_dir) / "view.json").read_text("utf-8"))

    def entities(self, data_dir: Path) -> list[dict[str, Any]]:
        return json.loads((self.path(data_dir) / "ngsi-ld.json").read_text("utf-8"))


def runs_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "energy" / "runs"


def _int(x: Any) -> int:
    return int(x)


def build_view(r: Result) -> dict[str, Any]:
    """Every figure the energy page shows, as plain JSON (yen whole, energy in Wh)."""
    from kizuna.energy.report import context
    from kizuna.energy.schemes import ITEMS, SCHEMES

    ctx = context(r, {})
    fy, cfg = r.inputs.fy, r.config
    base = r.schemes["status_quo"].annual_yen
    summary = {
        k: (float(v) if isinstance(v, float) else _int(v)) for k, v in ctx["summary"].items()
    }
    summary["shortfall"] = summary["demand"] - summary["supplied"]
    return {
        "fiscal_year": fy.year,
        "start": str(fy.start),
        "end": f"{fy.year + 1}-03-31",
        "slots": fy.slots,
        "synthetic": bool(r.inputs.synthetic),
        "method": cfg.method,
        "method_label": ctx["method_label"],
        "summary": summary,
        "items": {k: list(v) for k, v in ITEMS.items()},
        "schemes": [
            {
                "key": s["key"],
                "ja": s["ja"],
                "en": s["en"],
                "items": {k: (None if v is None else _int(v)) for k, v in s["items"].items()},
                "total": _int(s["total"]),
                "diff": _int(s["diff"]),
                "co2_t": float(s["co2_t"]),
                "confirmed": s["confirmed"],
                "flag": s["flag"],
            }
            for s in ctx["schemes"]
        ],
        "towns": [
            {
                "name": t["name"],
                "facilities": _int(t["facilities"]),
                "demand": _int(t["demand"]),
                "supplied": _int(t["supplied"]),
                "shortfall": _int(t["shortfall"]),
                "surplus": _int(t["surplus"]),
                "rate": float(t["rate"]),
                "co2_t": float(t["co2_t"]),
            }
            for t in ctx["towns"]
        ],
        "facilities": [
            {
                "id": x["f"].id,
                "name": x["f"].name,
                "municipality": x["f"].municipality,
                "kind": x["f"].kind,
                "voltage": x["voltage"],
                "demand": _int(x["demand"]),
                "supplied": _int(x["supplied"]),
                "rate": float(x["rate"]),
                "imbalance": _int(x["imbalance"]),
                "yen": {k: _int(v) for k, v in x["yen"].items()},
            }
            for x in ctx["facilities"]
        ],
        "sensitivity": [
            {
                "key": row.key,
                "ja": row.label.split(" / ")[0],
                "en": row.label.split(" / ")[-1],
                "yen": {k: _int(v) for k, v in row.annual_yen.items()},
                "diff": {
                    k: _int(v) - _int(row.annual_yen["status_quo"])
                    for k, v in row.annual_yen.items()
                    if k != "status_quo"
                },
                "supplied": _int(row.supplied_wh),
                "surplus": _int(row.surplus_wh),
            }
            for row in r.sensitivity
        ],
        "scheme_names": {k: [ja, en] for k, (ja, en, _) in SCHEMES.items()},
        "baseline_yen": _int(base),
        "emission": {
            "t_co2_per_kwh": float(cfg.emission.t_co2_per_kwh),
            "fiscal_year": cfg.emission.fiscal_year,
            "source": cfg.emission.source,
        },
        "eligibility": dict(cfg.eligibility),
    }


def _summary(view: dict[str, Any]) -> dict[str, Any]:
    s = view["summary"]
    return {
        "rate": s["rate"],
        "supplied": s["supplied"],
        "surplus": s["surplus"],
        "shortfall": s["shortfall"],
        "co2_t": s["co2_t"],
        "yen": {x["key"]: x["total"] for x in view["schemes"]},
    }


def save_run(
    engine: Engine, data_dir: Path, result: Result, *, region_id: str, title: str, created_by: str
) -> Run:
    """Write the run's files, then its row. Nothing stays behind if either step fails."""
    from kizuna.energy import service

    base = runs_dir(data_dir)
    base.mkdir(parents=True, exist_ok=True)
    folder = uuid.uuid4().hex
    staging, final = base / f".{folder}.partial", base / folder
    try:
        service.write_outputs(result, staging, pdf=True, svg=True)
        view = build_view(result)
        (staging / "view.json").write_text(json.dumps(view, ensure_ascii=False), "utf-8")
        entities = service.monthly_town_summaries(result)
        (staging / "ngsi-ld.json").write_text(json.dumps(entities, ensure_ascii=False), "utf-8")
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    row = {
        "region_id": region_id,
        "title": title[:200],
        "fiscal_year": result.inputs.fy.year,
        "synthetic": bool(result.inputs.synthetic),
        "facilities": len(result.facilities),
        "folder": folder,
        "summary": _summary(view),
        "created_by": created_by,
        "created_at": datetime.now(UTC),
    }
    try:
        with writer(engine).begin() as conn:
            run_id = conn.execute(insert(runs).values(**row).returning(runs.c.id)).scalar_one()
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    return Run(id=run_id, published_at=None, **row)


def _run(row: Any) -> Run:
    return Run(**dict(row._mapping))


def get_run(engine: Engine, run_id: int) -> Run | None:
    with engine.connect() as conn:
        row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
    return _run(row) if row else None


def list_runs(engine: Engine, region_ids: list[str], limit: int = 20) -> list[Run]:
    """The newest runs of these regions first."""
    if not region_ids:
        return []
    with engine.connect() as conn:
        rows = conn.execute(
            select(runs)
            .where(runs.c.region_id.in_(region_ids))
            .order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(limit)
        ).all()
    return [_run(r) for r in rows]


def find_run(engine: Engine, region_id: str, title: str, created_by: str) -> Run | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(runs)
            .where(
                runs.c.region_id == region_id,
                runs.c.title == title,
                runs.c.created_by == created_by,
            )
            .order_by(runs.c.id.desc())
            .limit(1)
        ).first()
    return _run(row) if row else None


def mark_published(engine: Engine, run_id: int) -> datetime:
    now = datetime.now(UTC)
    with writer(engine).begin() as conn:
        conn.execute(update(runs).where(runs.c.id == run_id).values(published_at=now))
    return now
