"""Figures of the geolocation failure analysis (PLONK's predictions against the true locations): matplotlib Agg, atomic writes, no Dagster.

* ``render_error_analysis``  each attention metric against PLONK's error (log scale), with Spearman's rho
                             and the best / worst decile means
* ``render_prediction_map``  true vs predicted locations on a longitude / latitude plane, joined by lines
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from attn_assets.core.error_analysis import decile_size

from ._mpl import new_figure, save_figure


def location_caption(row: dict) -> str:
    """'true 48.857, 2.352 (FR) -> predicted 51.507, -0.128 (GB): 343.6 km' for a gallery title."""
    def known(value) -> bool:  # DuckDB's NULLs arrive as None or NaN
        return value is not None and np.isfinite(value)

    def place(lat, lon, country) -> str:
        where = f"{lat:.3f}, {lon:.3f}" if known(lat) and known(lon) else "unknown"
        return f"{where} ({country})" if isinstance(country, str) and country else where

    error = row.get("error_km")
    error_text = f"{error:,.1f} km" if known(error) else "no true location"
    return (f"true {place(row.get('latitude'), row.get('longitude'), row.get('country'))} -> predicted "
            f"{place(row.get('predicted_latitude'), row.get('predicted_longitude'), row.get('predicted_country'))}: "
            f"{error_text}")


def render_error_analysis(frame: pd.DataFrame, analysis: pd.DataFrame, metrics: Sequence[str],
                          out_path: str | os.PathLike, *, dpi: int = 100, footer: str | None = None) -> Path:
    """One panel per metric: metric (x) vs error_km (y, log), worst decile in red, best in green."""
    cols = 3
    rows = max(1, math.ceil(len(metrics) / cols))
    by_metric = analysis.set_index("metric") if len(analysis) else pd.DataFrame()
    with new_figure((5.5 * cols, 4.2 * rows), dpi=dpi) as fig:
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        error = frame["error_km"].to_numpy(np.float64) if len(frame) else np.zeros(0)
        order = np.lexsort((frame["image_id"].to_numpy(), error)) if len(frame) else np.zeros(0, int)
        k = decile_size(len(frame))
        best, worst = set(order[:k]), set(order[len(order) - k:]) if k else set()
        colors = np.array(["#4c72b0"] * len(frame), dtype=object)
        colors[list(best)] = "#2ca02c"
        colors[list(worst)] = "#d62728"
        for ax, metric in zip(axes, metrics):
            if not len(frame):
                ax.text(0.5, 0.5, "no predictions with true coordinates", ha="center", va="center",
                        transform=ax.transAxes)
                ax.set_xticks([]), ax.set_yticks([])
                ax.set_title(metric)
                continue
            ax.scatter(frame[metric].to_numpy(np.float64), np.maximum(error, 1e-3), s=12, alpha=0.7, c=list(colors))
            ax.set_yscale("log")
            ax.set_xlabel(metric)
            ax.set_ylabel("error (km, log)")
            title = metric
            if metric in by_metric.index:
                r = by_metric.loc[metric]
                title += f"\nSpearman rho {r['spearman_rho']:.2f} (p {r['spearman_p']:.2g}); " \
                         f"best {r['best_decile_mean']:.3g} vs worst {r['worst_decile_mean']:.3g}"
            ax.set_title(title, fontsize=9)
        for ax in axes[len(metrics):]:
            ax.axis("off")
        fig.suptitle("Attention vs PLONK geolocation error (green: best decile, red: worst decile)", fontsize=12)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        return save_figure(fig, out_path, dpi=dpi, footer=footer)


def render_prediction_map(frame: pd.DataFrame, out_path: str | os.PathLike, *, dpi: int = 100,
                          max_lines: int = 2000, footer: str | None = None) -> Path:
    """True (green) and predicted (red) locations; a grey line joins each pair (at most ``max_lines``)."""
    with new_figure((12, 6.5), dpi=dpi) as fig:
        ax = fig.subplots()
        if len(frame):
            shown = frame.head(max_lines)
            for lat, lon, plat, plon in shown[["latitude", "longitude", "predicted_latitude",
                                               "predicted_longitude"]].to_numpy(np.float64):
                ax.plot([lon, plon], [lat, plat], color="0.6", linewidth=0.6, alpha=0.6, zorder=1)
            ax.scatter(frame["longitude"], frame["latitude"], s=14, color="#2ca02c", label="true", zorder=2)
            ax.scatter(frame["predicted_longitude"], frame["predicted_latitude"], s=14, color="#d62728",
                       label="predicted", zorder=3)
            ax.legend(loc="lower left")
        else:
            ax.text(0, 0, "no predictions with true coordinates", ha="center", va="center")
        ax.set_xlim(-180, 180)
        ax.set_ylim(-90, 90)
        ax.set_aspect("equal")
        ax.grid(color="0.9")
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_title(f"PLONK predictions: {len(frame):,} images")
        fig.tight_layout()
        return save_figure(fig, out_path, dpi=dpi, footer=footer)
