"""The report: matplotlib charts (Japanese first, English second) and an HTML page around them.

Charts need a Japanese font. IPAexGothic ships inside the PyPI package japanize-matplotlib,
which we only use as a font carrier (its file is registered, the package is not imported);
Noto Sans CJK from Debian's fonts-noto-cjk is used when installed instead.
"""

from __future__ import annotations

import base64
import importlib.util
import io
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from kizuna.energy.exports import VOLTAGE_JA  # noqa: E402
from kizuna.energy.fiscal import SLOTS_PER_DAY  # noqa: E402
from kizuna.energy.schemes import ITEMS, SCHEMES  # noqa: E402

if TYPE_CHECKING:
    from kizuna.energy.service import Result

COLORS = {
    "supplied": "#2e7d32",
    "shortfall": "#9e9e9e",
    "surplus": "#f9a825",
    "demand": "#1565c0",
    "plant": "#e65100",
}
CJK_FAMILIES = ("IPAexGothic", "Noto Sans CJK JP", "Noto Sans JP", "IPAGothic")


@cache
def japanese_font() -> str | None:
    """Register a Japanese font with matplotlib and return its family name (None: none found)."""
    spec = importlib.util.find_spec("japanize_matplotlib")
    if spec and spec.origin:
        ttf = Path(spec.origin).parent / "fonts" / "ipaexg.ttf"
        if ttf.is_file():
            font_manager.fontManager.addfont(str(ttf))
    available = {f.name for f in font_manager.fontManager.ttflist}
    family = next((f for f in CJK_FAMILIES if f in available), None)
    plt.rcParams["font.family"] = [family, "DejaVu Sans"] if family else ["DejaVu Sans"]
    plt.rcParams["axes.unicode_minus"] = False
    return family


def _figure(width: float = 9, height: float = 4.2) -> tuple[Figure, plt.Axes]:
    japanese_font()
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


# Narrow versions for phone screens: same data, a figure about as wide as a phone shows
# it, so that the text stays readable; titles and legends wrap onto more lines.
NARROW = (5.0, 4.6)


def _title(ax: plt.Axes, ja: str, en: str, narrow: bool) -> None:
    ax.set_title(f"{ja}\n{en}" if narrow else f"{ja} {en}")


def _mwh_axis(ax: plt.Axes, label: str) -> None:
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_ylabel(label)


def chart_monthly(r: Result, narrow: bool = False) -> Figure:
    m = r.monthly
    fig, ax = _figure(*NARROW) if narrow else _figure()
    x = np.arange(12)
    sup, short, surplus = m.supplied.sum(1) / 1e6, m.shortfall.sum(1) / 1e6, m.surplus / 1e6
    ax.bar(x, sup, color=COLORS["supplied"], label="地産供給 Supplied from plant")
    ax.bar(x, short, bottom=sup, color=COLORS["shortfall"], label="不足分の購入 Shortfall bought")
    ax.bar(
        x,
        surplus,
        bottom=sup + short,
        color=COLORS["surplus"],
        hatch="//",
        edgecolor="white",
        label="余剰売電 Surplus sold",
    )
    labels = r.inputs.fy.month_labels
    if narrow:  # the fiscal year is in the page's heading; months alone fit
        ax.set_xticks(x, [str(int(lbl[5:])) for lbl in labels])
        ax.set_xlabel("月 Month")
    else:
        ax.set_xticks(x, [f"{int(lbl[5:])}月\n{lbl[:4]}" for lbl in labels])
    _mwh_axis(ax, "電力量 Energy (MWh)")
    _title(ax, "月別の需給", "Monthly supply and demand", narrow)
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2 if narrow else -0.18),
        ncol=1 if narrow else 3,
        frameon=False,
    )
    return fig


def chart_typical_day(r: Result, narrow: bool = False) -> Figure:
    a = r.allocation
    days = r.inputs.fy.days
    workday = np.array([d.weekday() < 5 for d in _dates(r)])

    def avg(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        kw = x.reshape(days, SLOTS_PER_DAY)[mask].mean(0) * 2 / 1000  # Wh per slot → kW
        return np.append(kw, kw[-1])  # the last slot's step runs on to 24:00

    fig, ax = _figure(NARROW[0], 5.2) if narrow else _figure()
    t = np.arange(SLOTS_PER_DAY + 1) / 2
    total = a.demand.sum(1)
    ax.fill_between(
        t,
        avg(a.supplied.sum(1), workday),
        step="post",
        color=COLORS["supplied"],
        alpha=0.35,
        label="地産供給（平日）Supplied, weekdays",
    )
    ax.step(
        t,
        avg(total, workday),
        where="post",
        color=COLORS["demand"],
        lw=2,
        label="需要（平日）Demand, weekdays",
    )
    ax.step(
        t,
        avg(total, ~workday),
        where="post",
        color=COLORS["demand"],
        lw=1.5,
        ls="--",
        label="需要（土日）Demand, weekends",
    )
    ax.step(
        t,
        avg(a.generation, np.ones(days, bool)),
        where="post",
        color=COLORS["plant"],
        lw=2,
        label="発電（送電端）Plant send-out",
    )
    step = 6 if narrow else 3
    ax.set_xticks(range(0, 25, step), [f"{h}:00" for h in range(0, 25, step)])
    ax.set_xlim(0, 24)
    _mwh_axis(ax, "平均電力 Average power (kW)")
    _title(
        ax, "代表日の48コマ（年間平均）", "Typical day, 48 half-hour slots (year average)", narrow
    )
    ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1 if narrow else 2, frameon=False
    )
    return fig


def chart_duration(r: Result, narrow: bool = False) -> Figure:
    a = r.allocation
    fig, ax = _figure(*NARROW) if narrow else _figure()
    hours = np.arange(len(a.generation)) / 2
    ax.plot(
        hours,
        np.sort(a.demand.sum(1))[::-1] * 2 / 1000,
        color=COLORS["demand"],
        lw=2,
        label="需要 Demand",
    )
    ax.plot(
        hours,
        np.sort(a.generation)[::-1] * 2 / 1000,
        color=COLORS["plant"],
        lw=2,
        label="発電 Plant send-out",
    )
    ax.plot(
        hours,
        np.sort(a.supplied.sum(1))[::-1] * 2 / 1000,
        color=COLORS["supplied"],
        lw=2,
        ls="--",
        label="地産供給 Supplied",
    )
    ax.set_xlim(0, hours[-1])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    if narrow:
        ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.set_xlabel(
        "年間の時間（降順）\nHours of the year, sorted"
        if narrow
        else "年間の時間（降順）Hours of the year, sorted"
    )
    _mwh_axis(ax, "電力 Power (kW)")
    _title(ax, "負荷持続曲線", "Load-duration curve", narrow)
    ax.legend(frameon=False)
    return fig


def chart_schemes(r: Result, narrow: bool = False) -> Figure:
    fig, ax = _figure(NARROW[0], 4.4) if narrow else _figure(9, 3.6)
    keys = list(r.schemes)
    totals = np.array([r.schemes[k].annual_yen for k in keys]) / 1e6
    colors = ["#9e9e9e", "#2e7d32", "#1565c0", "#6a1b9a"]
    y = np.arange(len(keys))[::-1]
    ax.barh(y, totals, color=colors)
    ax.set_yticks(y, [f"{SCHEMES[k][0]}\n{SCHEMES[k][1]}" for k in keys])
    base = totals[0]
    for yi, v in zip(y, totals, strict=True):
        diff = f"  ({v - base:+,.1f})" if v != base else ""
        ax.text(v, yi, f" {v:,.1f}{diff}", va="center", fontsize=9)
    ax.set_xlim(0, totals.max() * (1.6 if narrow else 1.25))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    if narrow:
        ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.set_xlabel(
        "年間正味費用（百万円）\nAnnual net cost (million yen)"
        if narrow
        else "年間正味費用 Annual net cost (百万円 million yen)"
    )
    _title(ax, "方式別の年間費用（括弧は現状比）", "Annual cost by scheme (vs status quo)", narrow)
    ax.grid(axis="x", alpha=0.3)
    ax.grid(axis="y", visible=False)
    return fig


def _dates(r: Result) -> list:
    from datetime import timedelta

    return [r.inputs.fy.start + timedelta(days=i) for i in range(r.inputs.fy.days)]


CHARTS = {
    "monthly": chart_monthly,
    "typical_day": chart_typical_day,
    "duration": chart_duration,
    "schemes": chart_schemes,
}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@cache
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("kizuna.energy", "templates"), autoescape=select_autoescape()
    )
    env.filters["yen"] = lambda v: f"{int(v):,}"
    env.filters["kwh"] = lambda wh: f"{int(wh) / 1000:,.0f}"
    env.filters["pct"] = lambda v: f"{v:.1f}"
    return env


def _pct(num: int, den: int) -> float:
    return 100 * num / den if den else 0.0


def context(r: Result, images: dict[str, str]) -> dict:
    m, cfg = r.monthly, r.config
    d_t, s_t = r.by_town(m.demand.sum(0)), r.by_town(m.supplied.sum(0))
    co2_t = r.by_town(r.schemes["company"].co2_kg.sum(0))
    surplus_t = r.surplus_by_town.sum(0)
    towns = [
        {
            "name": t,
            "demand": d_t[i],
            "supplied": s_t[i],
            "shortfall": d_t[i] - s_t[i],
            "surplus": surplus_t[i],
            "rate": _pct(s_t[i], d_t[i]),
            "co2_t": co2_t[i] / 1000,
            "facilities": int((r.town_of == i).sum()),
        }
        for i, t in enumerate(r.towns)
    ]
    d_f, s_f, imb_f = m.demand.sum(0), m.supplied.sum(0), m.imbalance.sum(0)
    facilities = [
        {
            "f": f,
            "voltage": VOLTAGE_JA[f.voltage],
            "demand": d_f[i],
            "supplied": s_f[i],
            "rate": _pct(s_f[i], d_f[i]),
            "imbalance": imb_f[i],
            "yen": {k: int(sr.facility_total[:, i].sum()) for k, sr in r.schemes.items()},
        }
        for i, f in enumerate(r.facilities)
    ]
    base = r.schemes["status_quo"].annual_yen
    schemes = []
    for key, sr in r.schemes.items():
        items = {}
        for item in ITEMS:
            v = int(sr.items[item].sum()) if item in sr.items else 0
            v += int(sr.plant_items[item].sum()) if item in sr.plant_items else 0
            items[item] = v if (item in sr.items or item in sr.plant_items) else None
        schemes.append(
            {
                "key": key,
                "ja": SCHEMES[key][0],
                "en": SCHEMES[key][1],
                "items": items,
                "total": sr.annual_yen,
                "diff": sr.annual_yen - base,
                "co2_t": int(sr.co2_kg.sum()) / 1000,
                "confirmed": sr.confirmed,
                "flag": SCHEMES[key][2],
            }
        )
    a = r.allocation
    total_d, total_s = int(a.demand.sum()), int(a.supplied.sum())
    return {
        "r": r,
        "cfg": cfg,
        "fy": r.inputs.fy,
        "images": images,
        "towns": towns,
        "facilities": facilities,
        "schemes": schemes,
        "scheme_names": {k: SCHEMES[k] for k in r.schemes},
        "items": ITEMS,
        "summary": {
            "facilities": len(r.facilities),
            "generation": int(a.generation.sum()),
            "demand": total_d,
            "supplied": total_s,
            "surplus": int(a.surplus.sum()),
            "rate": _pct(total_s, total_d),
            "used": _pct(total_s, int(a.generation.sum())),
            "imbalance": int(a.group_imbalance.sum()),
            "co2_t": int(r.schemes["company"].co2_kg.sum()) / 1000,
        },
        "method_label": {
            "pro_rata": "需要比例 / pro rata to demand",
            "priority": "優先順位 / priority order",
            "capped": f"上限付き比例（需要の{float(cfg.cap_share) * 100:.0f}%まで）/ pro rata capped at {float(cfg.cap_share) * 100:.0f}% of demand",
        }[cfg.method],
        "price": lambda units: f"{units / 10_000:,.2f}",
        "sensitivity": r.sensitivity,
    }


def render_fragment(r: Result, images: dict[str, str] | None = None) -> str:
    """The report body (a <section>), charts inlined as PNG data URIs unless ``images`` given."""
    if images is None:
        images = {
            name: "data:image/png;base64," + base64.b64encode(_png(make(r))).decode()
            for name, make in CHARTS.items()
        }
    return _env().get_template("energy_report.html.j2").render(**context(r, images))


def render_document(r: Result, images: dict[str, str] | None = None) -> str:
    body = render_fragment(r, images)
    return _env().get_template("energy_document.html.j2").render(body=body, fy=r.inputs.fy)


def write_report(r: Result, out_dir: Path, pdf: bool = True, svg: bool = False) -> list[Path]:
    """report.html (self-contained), chart PNGs (and SVGs), report.pdf (charts and tables)."""
    written, images = [], {}
    figures = {name: make(r) for name, make in CHARTS.items()}
    for name, fig in figures.items():
        data = _png(fig)
        path = out_dir / f"chart_{name}.png"
        path.write_bytes(data)
        written.append(path)
        images[name] = "data:image/png;base64," + base64.b64encode(data).decode()
        if svg:  # text as glyph outlines: Japanese shows without fonts on the viewer's side
            for suffix, figure in (("", fig), ("_narrow", CHARTS[name](r, narrow=True))):
                path = out_dir / f"chart_{name}{suffix}.svg"
                figure.savefig(path, format="svg", metadata={"Date": None})
                written.append(path)
    html = out_dir / "report.html"
    html.write_text(render_document(r, images), encoding="utf-8")
    written.append(html)
    if pdf:
        path = out_dir / "report.pdf"
        with PdfPages(path) as doc:
            doc.savefig(_summary_page(r))
            for fig in figures.values():
                doc.savefig(fig)
        written.append(path)
    return written


def _summary_page(r: Result) -> Figure:
    """A4 landscape page with the scheme comparison and sensitivity tables."""
    japanese_font()
    fig = Figure(figsize=(11.69, 8.27))
    fig.suptitle(
        f"廃棄物発電の地産地消 FY{r.inputs.fy.year} / Local use of waste-to-energy power"
        + ("  【合成データ SYNTHETIC】" if r.inputs.synthetic else ""),
        fontsize=14,
    )
    base = r.schemes["status_quo"].annual_yen
    rows = [
        [
            sr.label,
            f"{sr.annual_yen:,}",
            f"{sr.annual_yen - base:+,}",
            f"{int(sr.co2_kg.sum()) / 1000:,.1f}",
            {None: "—", True: "確認済", False: "未確認"}[sr.confirmed],
        ]
        for sr in r.schemes.values()
    ]
    ax = fig.add_axes((0.05, 0.5, 0.9, 0.35))
    ax.axis("off")
    ax.set_title("方式比較 Schemes compared (円 yen / t-CO2)", loc="left")
    _tidy(
        ax.table(
            cellText=rows,
            colWidths=[0.32, 0.18, 0.18, 0.14, 0.18],
            colLabels=[
                "方式 Scheme",
                "年間正味費用 Net cost",
                "現状比 vs status quo",
                "CO2削減 avoided",
                "要件 Eligibility",
            ],
            loc="upper left",
            cellLoc="right",
        )
    )
    keys = list(r.schemes)
    srows = [
        [row.label] + [f"{row.annual_yen[k] - row.annual_yen['status_quo']:+,}" for k in keys[1:]]
        for row in r.sensitivity
    ]
    ax2 = fig.add_axes((0.05, 0.08, 0.9, 0.35))
    ax2.axis("off")
    ax2.set_title("感度分析（現状比, 円）Sensitivity, vs status quo (yen)", loc="left")
    _tidy(
        ax2.table(
            cellText=srows,
            colLabels=["ケース Case"] + [f"{SCHEMES[k][0]} {SCHEMES[k][1]}" for k in keys[1:]],
            loc="upper left",
            cellLoc="right",
        )
    )
    return fig


def _tidy(table) -> None:
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.6)
