"""The energy page: the region's latest simulation, its charts and downloads, and new runs.

Who may do what (docs/energy.md, "Web page"): municipal staff of a region's member towns,
and platform admins, see the region's runs, run new simulations from uploaded CSV files and
publish the monthly per-town results to the broker. The page carries per-facility costs and
unconfirmed assumptions, so it is not public; what is public are the published monthly
per-town aggregates (open data in each town's tenant).

Showing a run reads its stored files only (no numpy); numpy, pandas and matplotlib load
when a simulation runs.
"""

from __future__ import annotations

import tempfile
import unicodedata
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from kizuna.auth.service import Role
from kizuna.energy import publish as publishing
from kizuna.energy import runs as store
from kizuna.routing import ModuleRouter
from kizuna.tenancy.service import DEFAULT_TENANT
from kizuna.web.session import FormUser, PageUser, WebUser
from kizuna.web.templating import NavItem, render

router = ModuleRouter(include_in_schema=False)

STAFF = frozenset({Role.MUNICIPAL_STAFF})  # platform admins always pass (NavItem, _may)
NAV = [NavItem("/energy", "エネルギー地産地消", "Local energy", STAFF)]

# Conditions each scheme needs, confirmed by the user (never assumed): flag → (ja, en).
ELIGIBILITY: dict[str, tuple[str, str]] = {
    "company_licensed": (
        "地域新電力が小売電気事業者として登録済み（または登録できる見込み）である",
        "The regional power company is (or can be) registered as a retail electricity supplier",
    ),
    "self_wheeling_closely_related": (
        "発電者（組合）と需要家（構成市町の施設）が「密接な関係」にあり、自己託送の要件を満たす",
        "The generator (the union) and the users (the towns' facilities) are closely related "
        "and meet the self-wheeling requirements",
    ),
    "retailer_offer": (
        "小売電気事業者から、発電所の電力を施設に供給する提案を受けている",
        "A retailer has offered to supply the plant's power to the facilities",
    ),
}
SCHEME_OF_FLAG = {
    "company_licensed": ("地域新電力", "Regional power company"),
    "self_wheeling_closely_related": ("自己託送", "Self-wheeling"),
    "retailer_offer": ("小売電気事業者経由", "Via a retailer"),
}
METHODS = {
    "": ("設定ファイルどおり（既定は需要比例）", "As in the config (default: pro rata)"),
    "pro_rata": ("需要比例", "Pro rata to demand"),
    "priority": ("優先順位（facilities.csv の優先順位列）", "Priority order (priority column)"),
    "capped": ("上限付き比例（需要の70%まで）", "Pro rata, capped at 70% of demand"),
}


def _may(user: WebUser) -> bool:
    return user.role in STAFF or user.role == Role.PLATFORM_ADMIN


def _regions(request: Request, user: WebUser) -> list[dict[str, Any]]:
    """The regions whose runs the user may see and make: those of the towns they act in."""
    if not _may(user):
        return []
    services = request.app.state.services
    names = {r["id"]: r for r in services.tenants.list_regions()}
    out: dict[str, dict[str, Any]] = {}
    for tenant in services.tenants.list_tenants():
        if tenant["id"] == DEFAULT_TENANT or not user.principal.acts_in(tenant["id"]):
            continue
        region_id = tenant["region_id"] or tenant["id"]
        named = names.get(region_id, tenant)
        out.setdefault(
            region_id, {"id": region_id, "name_ja": named["name_ja"], "name_en": named["name_en"]}
        )
    return list(out.values())


def _forbidden() -> HTTPException:
    return HTTPException(
        403, "この画面は構成市町の職員向けです。 / This page is for staff of the member towns."
    )


def _mwh(wh: int) -> str:
    return f"{wh / 1_000_000:,.0f}"


def _myen(yen: int) -> str:
    """Millions of yen with one decimal (百万円), the unit budgets are discussed in."""
    return f"{yen / 1_000_000:,.1f}"


def _signed_myen(yen: int) -> str:
    return f"{yen / 1_000_000:+,.1f}".replace("-", "−")


def _page(
    request: Request,
    user: WebUser,
    regions: list[dict[str, Any]],
    region: dict[str, Any] | None,
    run: store.Run | None,
    *,
    errors: list[str] | None = None,
    error_total: int = 0,
    form: dict[str, Any] | None = None,
    flash: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    services = request.app.state.services
    data_dir = services.settings.data_dir
    history = store.list_runs(services.engine, [region["id"]]) if region else []
    view = run.view(data_dir) if run else None
    towns = publishing.region_tenants(services, region["id"]) if region else []
    context = {
        "regions": regions,
        "region": region,
        "run": run,
        "view": view,
        "history": history,
        "towns": towns,
        "charts": store.CHARTS,
        "downloads": store.DOWNLOADS,
        "eligibility": ELIGIBILITY,
        "scheme_of": SCHEME_OF_FLAG,
        "methods": METHODS,
        "errors": errors or [],
        "error_total": error_total,
        "form": form or {},
        "flash": flash,
        "entity_type": publishing.ENTITY_TYPE,
        "mwh": _mwh,
        "myen": _myen,
        "signed_myen": _signed_myen,
    }
    return render(request, "energy/page.html.j2", context, status_code=status_code, user=user)


def _region_of(regions: list[dict[str, Any]], wanted: str | None) -> dict[str, Any] | None:
    return next((r for r in regions if r["id"] == wanted), regions[0] if regions else None)


@router.get("/energy", response_class=HTMLResponse)
def energy_page(request: Request, user: PageUser, region: str | None = None) -> Response:
    regions = _regions(request, user)
    if not regions:
        raise _forbidden()
    chosen = _region_of(regions, region)
    if region is None:  # without a choice, the first region that has a run
        engine = request.app.state.services.engine
        chosen = next((r for r in regions if store.list_runs(engine, [r["id"]], 1)), chosen)
    assert chosen is not None
    latest = store.list_runs(request.app.state.services.engine, [chosen["id"]], 1)
    return _page(request, user, regions, chosen, latest[0] if latest else None)


def _visible_run(request: Request, user: WebUser, run_id: int) -> tuple[store.Run, list]:
    regions = _regions(request, user)
    if not regions:
        raise _forbidden()
    run = store.get_run(request.app.state.services.engine, run_id)
    if run is None or run.region_id not in {r["id"] for r in regions}:
        raise HTTPException(404, "試算が見つかりません / No such run")
    return run, regions


@router.get("/energy/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, user: PageUser, run_id: int) -> Response:
    run, regions = _visible_run(request, user, run_id)
    flash = None
    if request.query_params.get("created"):
        flash = {
            "kind": "ok",
            "text": "試算を実行して保存しました。 / The simulation ran and was saved.",
        }
    elif (n := request.query_params.get("published")) is not None:
        flash = {
            "kind": "ok",
            "text": f"月別・市町別の結果 {n} 件をブローカーに公開しました。 / "
            f"Published {n} monthly town results to the broker.",
        }
    return _page(request, user, regions, _region_of(regions, run.region_id), run, flash=flash)


def _run_file(request: Request, run: store.Run, name: str) -> Path:
    path = run.path(request.app.state.services.settings.data_dir) / name
    if not path.is_file():
        raise HTTPException(404, "ファイルがありません / File not found")
    return path


@router.get("/energy/runs/{run_id}/charts/{chart}.svg")
def chart(request: Request, user: PageUser, run_id: int, chart: str) -> Response:
    if chart.removesuffix("_narrow") not in store.CHARTS:
        raise HTTPException(404, "グラフがありません / No such chart")
    run, _ = _visible_run(request, user, run_id)
    path = _run_file(request, run, f"chart_{chart}.svg")
    headers = {"Cache-Control": "private, max-age=86400"}  # a run's files never change
    return FileResponse(path, media_type="image/svg+xml", headers=headers)


@router.get("/energy/runs/{run_id}/files/{name}")
def download(request: Request, user: PageUser, run_id: int, name: str) -> Response:
    if name not in store.DOWNLOADS:
        raise HTTPException(404, "ファイルがありません / File not found")
    run, _ = _visible_run(request, user, run_id)
    path = _run_file(request, run, name)
    suffix = Path(name).suffix
    inline = suffix in (".html", ".pdf")
    return FileResponse(
        path,
        media_type=store.MEDIA_TYPES[suffix],
        filename=f"energy-FY{run.fiscal_year}-run{run.id}-{name}",
        content_disposition_type="inline" if inline else "attachment",
    )


@router.post("/energy/runs/{run_id}/publish")
def publish_run(request: Request, user: FormUser, run_id: int) -> Response:
    run, _ = _visible_run(request, user, run_id)
    services = request.app.state.services
    published = publishing.publish(
        services, run.region_id, run.entities(services.settings.data_dir)
    )
    store.mark_published(services.engine, run.id)
    return RedirectResponse(f"/energy/runs/{run.id}?published={published.total}", status_code=303)


# --- running a simulation from uploaded files -----------------------------------------


def _uploads(form: Any, field: str) -> list[UploadFile]:
    """The files chosen in a file input (browsers send an empty part when none is)."""
    return [u for u in form.getlist(field) if isinstance(u, UploadFile) and u.filename]


def _safe_name(filename: str) -> str:
    name = unicodedata.normalize("NFKC", Path(filename.replace("\\", "/")).name).strip()
    stem, suffix = Path(name).stem, Path(name).suffix.lower()
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip(".") or "data"
    return f"{stem}{suffix}"


def _simulate(
    folder: Path, config_path: Path | None, overrides: dict[str, Any]
) -> tuple[Any, int, list[Any]]:
    """Run the engine on the saved files: (result, 0, []), or (None, total, problems)."""
    from kizuna.energy import service

    try:
        cfg = service.load_config(config_path, overrides)
    except (service.ConfigError, UnicodeDecodeError) as exc:
        return None, 1, [service.Problem("config.toml", None, str(exc), f"設定の誤り: {exc}")]
    try:
        return service.simulate(folder, cfg), 0, []
    except service.InputError as exc:
        return None, exc.total, exc.problems


@router.post("/energy/runs", response_class=HTMLResponse)
async def run_simulation(request: Request, user: FormUser) -> Response:
    services = request.app.state.services
    form = await request.form()
    regions = _regions(request, user)
    if not regions:
        raise _forbidden()
    region = _region_of(regions, str(form.get("region") or ""))
    assert region is not None
    values = {
        "title": str(form.get("title") or "").strip(),
        "method": str(form.get("method") or ""),
        "confirm": {flag for flag in ELIGIBILITY if form.get(f"confirm_{flag}")},
    }
    errors: list[str] = []
    total = 0

    def fail() -> Response:
        latest = store.list_runs(services.engine, [region["id"]], 1)
        return _page(
            request,
            user,
            regions,
            region,
            latest[0] if latest else None,
            errors=errors,
            error_total=total or len(errors),
            form=values,
            status_code=400,
        )

    singles = {"facilities": "facilities.csv", "plant": "plant.csv", "prices": "prices.csv"}
    labels = {
        "facilities": "施設一覧（facilities.csv）",
        "plant": "発電所の送電量（plant.csv）",
        "demand": "需要データ（demand*.csv）",
    }
    for field in ("facilities", "demand", "plant"):
        if not _uploads(form, field):
            errors.append(f"{labels[field]} のファイルを選んでください。")
    if values["method"] not in METHODS:
        errors.append("配分方法が正しくありません。")
    if errors:
        return fail()

    with tempfile.TemporaryDirectory(prefix="kizuna-energy-") as tmp:
        folder = Path(tmp) / "inputs"
        folder.mkdir()
        shown: dict[str, str] = {}  # saved name → name the user uploaded
        for field, target in singles.items():
            for upload in _uploads(form, field)[:1]:
                (folder / target).write_bytes(await upload.read())
                shown[target] = upload.filename or target
        for upload in _uploads(form, "demand"):
            name = _safe_name(upload.filename or "demand.csv")
            if Path(name).suffix != ".csv":
                errors.append(f"{upload.filename}: CSVファイル（.csv）を選んでください。")
                continue
            # read_inputs takes demand*.csv; a per-facility file keeps its id in the name.
            target = name if name.startswith("demand") else f"demand_{name}"
            if target in shown:
                errors.append(f"{upload.filename}: 同じ名前の需要ファイルが2つあります。")
                continue
            (folder / target).write_bytes(await upload.read())
            shown[target] = upload.filename or target
        config_path = None
        for upload in _uploads(form, "config")[:1]:
            config_path = Path(tmp) / "config.toml"
            config_path.write_bytes(await upload.read())
            shown["config.toml"] = upload.filename or "config.toml"
        if errors:
            return fail()
        overrides: dict[str, Any] = {}
        if values["method"]:
            overrides["allocation"] = {"method": values["method"]}
        if values["confirm"]:
            overrides["eligibility"] = dict.fromkeys(values["confirm"], True)
        result, total, problems = await run_in_threadpool(_simulate, folder, config_path, overrides)
        if result is None:
            for p in problems:
                named = type(p)(shown.get(p.file, p.file), p.line, p.message, p.message_ja)
                errors.append(named.japanese())
            return fail()
        title = values["title"] or f"{result.inputs.fy.year}年度 試算（{user.display_name}）"
        run = await run_in_threadpool(
            store.save_run,
            services.engine,
            services.settings.data_dir,
            result,
            region_id=region["id"],
            title=title,
            created_by=user.username,
        )
    return RedirectResponse(f"/energy/runs/{run.id}?created=1", status_code=303)
