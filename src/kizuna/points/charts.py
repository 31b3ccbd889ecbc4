"""Pictures the points pages serve: QR codes (segno), the shop's A4 poster and the city
dashboard's charts (matplotlib, drawn on the server; IPAexGothic from japanize-matplotlib for
Japanese labels). segno loads on the first QR code, matplotlib on the first chart or poster,
not with the server.
"""

from __future__ import annotations

import importlib.util
import io
from functools import cache
from pathlib import Path
from typing import Any

CJK_FAMILIES = ("IPAexGothic", "Noto Sans CJK JP", "Noto Sans JP", "IPAGothic")
COLORS = {
    "energy": "#d9822b",
    "transport": "#1f4e8c",
    "waste": "#2e7d4f",
    "other": "#8a8f98",
    "issued": "#2e7d4f",
    "spent": "#1f4e8c",
    "coupon": "#6b9bd1",
    "expired": "#b3261e",
    "thanks": "#d9822b",
}
CATEGORY_LABELS = {
    "energy": ("省エネ", "Energy"),
    "transport": ("移動", "Transport"),
    "waste": ("ごみ削減", "Waste"),
    "other": ("その他", "Other"),
}


def _qr(data: str) -> Any:
    """The QR code of ``data`` (error correction M, never a micro QR)."""
    import segno  # see the module's docstring

    return segno.make(data, error="m", micro=False)


def qr_svg(data: str, scale: int = 6) -> str:
    """An inline SVG QR code (error correction M, quiet zone of 4 modules)."""
    qr = _qr(data)
    buf = io.BytesIO()
    qr.save(buf, kind="svg", scale=scale, border=4, xmldecl=False, svgns=True, dark="#1d2433")
    return buf.getvalue().decode()


def qr_png(data: str, scale: int = 10) -> bytes:
    qr = _qr(data)
    buf = io.BytesIO()
    qr.save(buf, kind="png", scale=scale, border=4)
    return buf.getvalue()


@cache
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    spec = importlib.util.find_spec("japanize_matplotlib")
    if spec and spec.origin:
        ttf = Path(spec.origin).parent / "fonts" / "ipaexg.ttf"
        if ttf.is_file():
            font_manager.fontManager.addfont(str(ttf))
    available = {f.name for f in font_manager.fontManager.ttflist}
    family = next((f for f in CJK_FAMILIES if f in available), None)
    plt.rcParams["font.family"] = [family, "DejaVu Sans"] if family else ["DejaVu Sans"]
    plt.rcParams["axes.unicode_minus"] = False
    plt.rcParams["svg.fonttype"] = "none"
    plt.rcParams["pdf.fonttype"] = 42  # embed TrueType so the poster prints anywhere
    return plt


def poster_pdf(programme: str, shop: str, town: str, url: str) -> bytes:
    """The shop's A4 poster: programme, shop name, a large QR code and how to pay."""
    _pyplot()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.27, 11.69))  # A4 portrait, inches
    fig.patch.set_facecolor("white")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 210)
    ax.set_ylim(0, 297)
    ax.axis("off")
    ax.add_patch(_rect((0, 247), 210, 50, "#1f4e8c"))
    ax.text(
        105, 279, programme, ha="center", va="center", fontsize=26, color="white", weight="bold"
    )
    ax.text(105, 259, "ポイントが使えます", ha="center", va="center", fontsize=22, color="white")
    ax.text(105, 232, shop, ha="center", va="center", fontsize=30, weight="bold", color="#1d2433")
    ax.text(105, 219, town, ha="center", va="center", fontsize=14, color="#5b6475")
    matrix = list(_qr(url).matrix)
    n = len(matrix)
    size = 120.0
    cell = size / (n + 8)
    x0, y0 = (210 - size) / 2, 80
    ax.add_patch(_rect((x0, y0), size, size, "white"))
    for r, row in enumerate(matrix):
        c = 0
        while c < n:  # one rectangle per run of dark modules keeps the PDF small
            if row[c]:
                start = c
                while c < n and row[c]:
                    c += 1
                ax.add_patch(
                    _rect(
                        (x0 + (start + 4) * cell, y0 + size - (r + 5) * cell),
                        (c - start) * cell,
                        cell,
                        "#1d2433",
                    )
                )
            c += 1
    steps = (
        "① スマートフォンのカメラでQRコードを読み取る",
        "② 金額を入れて「確認へ」→ 内容を確かめて「支払う」",
        "③ 完了画面をお店の方に見せてください",
    )
    for i, step in enumerate(steps):
        ax.text(30, 62 - i * 11, step, fontsize=14, color="#1d2433", va="center")
    ax.text(105, 14, url, ha="center", va="center", fontsize=7, color="#5b6475")
    ax.text(
        105,
        7,
        "Scan with your phone camera to pay with points · Kizuna 都市OS",
        ha="center",
        va="center",
        fontsize=8,
        color="#5b6475",
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf", metadata={"Title": f"{shop} QR", "CreationDate": None})
    return buf.getvalue()


def _rect(xy: tuple[float, float], w: float, h: float, color: str) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle(xy, w, h, facecolor=color, edgecolor="none", linewidth=0)


def _figure(width: float = 5.2, height: float = 3.6) -> tuple[Any, Any]:
    _pyplot()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _svg(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _short(month: str) -> str:
    return f"{int(month[5:])}月"


def co2_by_month(months: list[str], data: dict[str, dict[str, float]], ja: bool) -> bytes:
    fig, ax = _figure()
    bottom = [0.0] * len(months)
    labels = [_short(m) if ja else m[2:] for m in months]
    for category, color in ((c, COLORS[c]) for c in ("energy", "transport", "waste", "other")):
        values = [data.get(m, {}).get(category, 0.0) for m in months]
        if not any(values):
            continue
        name = CATEGORY_LABELS[category][0 if ja else 1]
        ax.bar(labels, values, bottom=bottom, color=color, label=name, width=0.6)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("kg-CO2")
    ax.set_title("月別のCO2削減量" if ja else "CO2 saved by month", loc="left", fontsize=12)
    if any(bottom):
        ax.legend(frameon=False, fontsize=9, ncols=4, loc="upper left")
        ax.set_ylim(0, max(bottom) * 1.25)
    return _svg(fig)


def points_by_month(months: list[str], flows: dict[str, dict[str, int]], ja: bool) -> bytes:
    fig, ax = _figure()
    labels = [_short(m) if ja else m[2:] for m in months]
    series = (
        ("issued", "付与", "Issued"),
        ("spent", "お店で利用", "Spent at shops"),
        ("coupon", "クーポン", "Coupons"),
        ("expired", "失効", "Expired"),
    )
    width = 0.2
    for i, (key, name_ja, name_en) in enumerate(series):
        xs = [x + (i - 1.5) * width for x in range(len(months))]
        ax.bar(
            xs,
            [flows[m][key] for m in months],
            width=width,
            color=COLORS[key],
            label=name_ja if ja else name_en,
        )
    ax.set_xticks(range(len(months)), labels)
    ax.set_ylabel("pt")
    ax.yaxis.set_major_formatter(_thousands())
    ax.set_title("月別のポイントの動き" if ja else "Points by month", loc="left", fontsize=12)
    ax.legend(frameon=False, fontsize=9, ncols=4, loc="upper left")
    top = max((flows[m][k] for m in months for k, *_ in series), default=0)
    ax.set_ylim(0, max(top, 1) * 1.3)
    return _svg(fig)


def horizontal(values: dict[str, float], title: str, unit: str, color: str) -> bytes:
    items = list(values.items())[:8][::-1]
    fig, ax = _figure(5.2, 0.9 + 0.42 * max(len(items), 1))
    ax.grid(axis="x", alpha=0.3)
    ax.grid(axis="y", visible=False)
    if items:
        names = [k if len(k) <= 9 else k[:8] + "…" for k, _ in items]
        ax.barh(range(len(items)), [v for _, v in items], color=color, height=0.6)
        ax.set_yticks(range(len(items)), names)
        for y, (_, v) in enumerate(items):
            ax.text(v, y, f" {v:,.1f}" if unit == "kg" else f" {v:,.0f}", va="center", fontsize=9)
        ax.set_xlim(0, max(v for _, v in items) * 1.25 or 1)
    ax.set_xlabel(unit)
    top = max((v for _, v in items), default=0)
    ax.xaxis.set_major_formatter(_thousands(1 if top < 10 else 0))
    ax.set_title(title, loc="left", fontsize=12)
    return _svg(fig)


def _thousands(digits: int = 0) -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f"{v:,.{digits}f}")
