"""Small line/scatter charts: matplotlib when installed, else a plain PIL drawing (same panels)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

Panel = dict[str, Any]  # title, xlabel, ylabel, logx, logy, series: [{label, xs, ys, style: "line"|"points", texts}]

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf",
          "#bcbd22"]


def save(panels: list[Panel], path: Path, *, title: str = "") -> str:
    """Draw ``panels`` in a grid to ``path`` (PNG); returns which backend drew it."""
    panels = [p for p in panels if any(s.get("xs") for s in p.get("series", []))]
    if not panels:
        return "nothing to plot"
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)  # benchmark script, not library code
        import matplotlib.pyplot as plt
    except ImportError:
        _save_pil(panels, path, title)
        return "PIL"
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.4 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for i, s in enumerate(panel["series"]):
            if not s.get("xs"):
                continue
            kw = {"color": COLORS[i % len(COLORS)], "label": s["label"]}
            if s.get("style") == "points":
                ax.scatter(s["xs"], s["ys"], **kw)
                for x, y, t in zip(s["xs"], s["ys"], s.get("texts") or []):
                    ax.annotate(t, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            else:
                ax.plot(s["xs"], s["ys"], marker="o", ms=3, **kw)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel(panel.get("xlabel", ""))
        ax.set_ylabel(panel.get("ylabel", ""))
        if panel.get("logx"):
            ax.set_xscale("log", base=2)
        if panel.get("logy"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "matplotlib"


# ----------------------------------------------------------------------------------------------- PIL fallback

def _tr(v: float, lo: float, hi: float, log: bool) -> float:
    if log:
        v, lo, hi = math.log(max(v, 1e-12)), math.log(max(lo, 1e-12)), math.log(max(hi, 1e-12))
    return 0.5 if hi == lo else (v - lo) / (hi - lo)


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        a, b = math.floor(math.log10(max(lo, 1e-12))), math.ceil(math.log10(max(hi, 1e-12)))
        ticks = [10.0 ** k * m for k in range(a, b + 1) for m in (1, 2, 5)]
        return [t for t in ticks if lo <= t <= hi] or [lo, hi]
    if hi == lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / 4))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= 6:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _save_pil(panels: list[Panel], path: Path, title: str) -> None:
    from PIL import Image, ImageDraw

    cols, pw, ph = 2, 640, 440
    rows = math.ceil(len(panels) / cols)
    top = 30 if title else 0
    img = Image.new("RGB", (cols * pw, rows * ph + top), "white")
    d = ImageDraw.Draw(img)
    if title:
        d.text((10, 8), title, fill="black")
    for k, panel in enumerate(panels):
        ox, oy = (k % cols) * pw, top + (k // cols) * ph
        left, right, ptop, bottom = ox + 70, ox + pw - 20, oy + 30, oy + ph - 60
        series = [s for s in panel["series"] if s.get("xs")]
        xs = [x for s in series for x in s["xs"]]
        ys = [y for s in series for y in s["ys"]]
        logx, logy = bool(panel.get("logx")), bool(panel.get("logy"))
        xlo, xhi, ylo, yhi = min(xs), max(xs), min(ys), max(ys)
        if not logy:
            ylo = min(0.0, ylo)
        pad = 1.15 if logy else 1.05
        yhi = yhi * pad if yhi > 0 else yhi + 1
        if logx and xlo == xhi:
            xlo, xhi = xlo / 2, xhi * 2
        if logy and ylo == yhi:
            ylo, yhi = ylo / 2, yhi * 2

        def px(x: float) -> float:
            return left + _tr(x, xlo, xhi, logx) * (right - left)

        def py(y: float) -> float:
            return bottom - _tr(y, ylo, yhi, logy) * (bottom - ptop)
        d.rectangle([left, ptop, right, bottom], outline="black")
        d.text((ox + 10, oy + 8), panel["title"], fill="black")
        for t in (sorted(set(xs)) if logx else _ticks(xlo, xhi, False)):
            d.line([px(t), bottom, px(t), bottom + 4], fill="black")
            d.text((px(t) - 10, bottom + 6), _fmt(t), fill="black")
        for t in _ticks(ylo, yhi, logy):
            d.line([left - 4, py(t), left, py(t)], fill="black")
            d.line([left, py(t), right, py(t)], fill="#e6e6e6")
            d.text((ox + 8, py(t) - 6), _fmt(t), fill="black")
        d.text(((left + right) / 2 - 40, bottom + 22), panel.get("xlabel", ""), fill="black")
        d.text((ox + 8, ptop - 14), panel.get("ylabel", ""), fill="black")
        for i, s in enumerate(series):
            color = COLORS[i % len(COLORS)]
            pts = [(px(x), py(y)) for x, y in zip(s["xs"], s["ys"])]
            if s.get("style") != "points" and len(pts) > 1:
                d.line(pts, fill=color, width=2)
            for (x, y), t in zip(pts, s.get("texts") or [None] * len(pts)):
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
                if t:
                    d.text((x + 4, y - 12), t, fill=color)
            ly = ptop + 6 + 13 * i
            d.line([right - 190, ly + 6, right - 175, ly + 6], fill=color, width=3)
            d.text((right - 170, ly), s["label"][:30], fill=color)
    img.save(path)
