"""The seed's ``attention_distributions.png``: 2x2 histograms of the four headline metrics.

Each panel marks the mean (solid) and mean +/- std (dotted) with their values in the legend,
shades the seed's interpretation bands where it has them (entropy < 3 / 3-5 / > 5;
top-10% concentration < 0.5 / 0.5-0.7 / > 0.7) and can draw baseline values (e.g. uniform or
permuted attention) as dashed lines. Std is the sample std (ddof=1), like pandas and DuckDB's
``stddev``.
"""

from __future__ import annotations

import math
import os
from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.transforms import blended_transform_factory

from ._mpl import new_figure, save_figure

DISTRIBUTION_METRICS = [
    "attention_entropy",
    "attention_concentration_top10",
    "num_high_attention_patches",
    "attention_spread",
]

LABELS = {
    "attention_entropy": "Attention Entropy (nats)",
    "attention_concentration_top10": "Top-10% Concentration (fraction of attention)",
    "num_high_attention_patches": "High Attention Patches (count above mean)",
    "attention_spread": "Attention Spread (std of CLS attention)",
    "attention_concentration_top25": "Top-25% Concentration (fraction of attention)",
    "attention_max": "Max Attention",
}

#: metric -> [(low, high, label, color)]; None = open-ended.
BANDS: dict[str, list[tuple[float | None, float | None, str, str]]] = {
    "attention_entropy": [
        (None, 3.0, "focused (<3)", "#2ca02c"),
        (3.0, 5.0, "balanced (3-5)", "#ffbf00"),
        (5.0, None, "diffuse (>5)", "#d62728"),
    ],
    "attention_concentration_top10": [
        (None, 0.5, "low / uniform (<0.5)", "#1f77b4"),
        (0.5, 0.7, "medium / selective (0.5-0.7)", "#ffbf00"),
        (0.7, None, "high / few regions (>0.7)", "#d62728"),
    ],
}


def _column(data, metric: str) -> np.ndarray:
    if isinstance(data, pd.DataFrame):
        values = data[metric].to_numpy() if metric in data.columns else None
    else:
        values = data.get(metric) if isinstance(data, Mapping) else None
    if values is None:
        raise KeyError(f"distributions need a {metric!r} column")
    arr = np.asarray(pd.to_numeric(pd.Series(np.asarray(values).ravel()), errors="coerce"), dtype=np.float64)
    return arr[np.isfinite(arr)]


def describe(values: np.ndarray) -> dict[str, float]:
    """n, mean, std (ddof=1), min, max of finite values; NaN where undefined."""
    n = int(values.size)
    return {
        "n": n,
        "mean": float(values.mean()) if n else math.nan,
        "std": float(values.std(ddof=1)) if n > 1 else (0.0 if n == 1 else math.nan),
        "min": float(values.min()) if n else math.nan,
        "max": float(values.max()) if n else math.nan,
    }


def render_distributions(
    data: pd.DataFrame | Mapping[str, np.ndarray],
    out_path: str | os.PathLike,
    baselines: Mapping[str, float | Mapping[str, float]] | None = None,
    *,
    bins: int = 50,
    metrics: list[str] | None = None,
    title: str | None = None,
    dpi: int = 100,
    footer: str | None = None,
) -> dict[str, dict[str, float]]:
    """Draw the 2x2 histograms into ``out_path``; return ``{metric: {n, mean, std, min, max}}``.

    data: a DataFrame or a dict of 1-D arrays (only the four metric columns are needed; NaN
    ignored). baselines: metric -> value, or metric -> {name: value}, drawn as dashed lines.
    """
    metrics = list(metrics or DISTRIBUTION_METRICS)
    stats: dict[str, dict[str, float]] = {}
    nrows = int(math.ceil(len(metrics) / 2))
    with new_figure((14, 5 * nrows), dpi=dpi) as fig:
        axes = np.atleast_1d(fig.subplots(nrows, 2, squeeze=False)).ravel()
        for ax in axes[len(metrics):]:
            ax.axis("off")
        for ax, metric in zip(axes, metrics):
            values = _column(data, metric)
            st = describe(values)
            stats[metric] = st
            _panel(ax, metric, values, st, _baselines_for(baselines, metric), bins)
        n_total = max((s["n"] for s in stats.values()), default=0)
        fig.suptitle(title or f"Attention metric distributions (n = {n_total:,} images)", fontsize=14)
        fig.tight_layout(rect=(0, 0, 1, 0.96))
        save_figure(fig, out_path, dpi=dpi, footer=footer)
    return stats


def _baselines_for(baselines, metric) -> dict[str, float]:
    if not baselines or metric not in baselines:
        return {}
    value = baselines[metric]
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    return {"baseline": float(value)}


def _panel(ax, metric, values, st, baselines, bins):
    label = LABELS.get(metric, metric)
    ax.set_title(label.split(" (")[0])
    ax.set_xlabel(label)
    ax.set_ylabel("images")
    if st["n"] == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    lo, hi = st["min"], st["max"]
    for v in baselines.values():
        lo, hi = min(lo, v), max(hi, v)
    if metric == "num_high_attention_patches" and hi - lo < 200:
        edges = np.arange(math.floor(lo) - 0.5, math.ceil(hi) + 1.5, max(1, math.ceil((hi - lo + 1) / bins)))
    else:
        pad = (hi - lo) * 0.02 or max(abs(lo) * 0.05, 1e-3)
        edges = np.linspace(lo - pad, hi + pad, bins + 1)
    ax.hist(values, bins=edges, color="#4c72b0", alpha=0.85, edgecolor="white", linewidth=0.3)
    xlim = ax.get_xlim()

    m, s = st["mean"], st["std"]
    ax.axvline(m, color="black", linewidth=2, label=f"mean = {_fmt(metric, m)}")
    ax.axvline(m - s, color="black", linestyle=":", linewidth=1.5, label=f"mean - std = {_fmt(metric, m - s)}")
    ax.axvline(m + s, color="black", linestyle=":", linewidth=1.5, label=f"mean + std = {_fmt(metric, m + s)}  (std = {_fmt(metric, s)})")
    colors = ["#9467bd", "#8c564b", "#e377c2", "#17becf"]
    for (name, v), c in zip(baselines.items(), colors * 4):
        ax.axvline(v, color=c, linestyle="--", linewidth=1.8, label=f"{name} = {_fmt(metric, v)}")

    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for band_lo, band_hi, text, color in BANDS.get(metric, []):
        a = xlim[0] if band_lo is None else max(band_lo, xlim[0])
        b = xlim[1] if band_hi is None else min(band_hi, xlim[1])
        if b <= a:
            continue
        ax.axvspan(a, b, color=color, alpha=0.12, zorder=0)
        ax.text((a + b) / 2, 0.97, text, transform=trans, ha="center", va="top", fontsize=8, color="0.25",
                clip_on=True)
    ax.set_xlim(xlim)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.12)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)


def _fmt(metric: str, v: float) -> str:
    if "concentration" in metric:
        return f"{v:.3f} ({v:.1%})"
    if metric == "num_high_attention_patches":
        return f"{v:.1f}"
    if metric == "attention_spread" or metric == "attention_max":
        return f"{v:.4g}"
    return f"{v:.3f}"
