"""Cross-model figures: the same images' overlays across models, and per-country agreement differences.

- ``render_model_grid``: one row per image, one column per model; each panel is that model's own view of the
  photo (its crop box, ``figures.triptych.prepare_view``) with its last-layer map on top, min-max scaled per panel
  (the seed's look; the panels show where each model looks, not how strongly);
- ``render_country_differences``: per model pair, each country's mean agreement minus the pair's overall mean
  (``cross_model_summary``), with the country's 95% bootstrap interval shifted alike; countries sorted by code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ._mpl import new_figure, save_figure
from .geometry import image_file
from .triptych import draw_overlay, prepare_view

log = logging.getLogger(__name__)


def short_spec(spec: str, width: int = 28) -> str:
    """A model spec short enough for a column title: the last path part, cut to ``width`` characters."""
    name = spec.rstrip("/").rsplit("/", 1)[-1] or spec
    return name if len(name) <= width else name[: width - 1] + "\u2026"


def render_model_grid(rows: Sequence[dict], specs: Sequence[str], out_path: str | os.PathLike,
                      footer: str | None = None) -> Path:
    """``rows``: dicts with ``image_id``, ``path``, ``member`` (None for files) and ``maps`` = {spec: (map
    ``[gh, gw]``, crop box in original pixels)}; ``specs``: the columns, in order. A model without a map of an
    image (or an unreadable image) leaves its panel blank with a note."""
    rows, specs = list(rows), list(specs)
    with new_figure((max(7.0, 2.6 * len(specs)), 2.6 * max(1, len(rows)) + 0.4), layout="constrained") as fig:
        axes = fig.subplots(max(1, len(rows)), max(1, len(specs)), squeeze=False)
        for r, row in enumerate(rows):
            image = image_file(row.get("path"), row.get("member"))
            for c, spec in enumerate(specs):
                ax = axes[r][c]
                ax.axis("off")
                if r == 0:
                    ax.set_title(short_spec(spec), fontsize=9)
                found = row["maps"].get(spec)
                if image is None or found is None:
                    ax.text(0.5, 0.5, "no map" if image is not None else "image unreadable", ha="center",
                            va="center", fontsize=8, transform=ax.transAxes)
                    continue
                attn_map, box = found
                try:
                    _, _, crop, heat = prepare_view(image, np.asarray(attn_map), box)
                except (OSError, ValueError) as error:
                    log.warning("cross-model grid: %s skipped for %s: %s", row["image_id"], spec, error)
                    continue
                draw_overlay(ax, crop, heat)
                if c == 0:
                    ax.text(0, -0.02, str(row["image_id"]), fontsize=7, transform=ax.transAxes, va="top")
        if not rows:
            axes[0][0].text(0.5, 0.5, "no images compared", ha="center", va="center")
        fig.suptitle("Last-layer attention per model, each on its own view of the photo\n(min-max per panel)",
                     fontsize=10)
        return save_figure(fig, out_path, footer=footer)


def render_country_differences(summary: pd.DataFrame, out_path: str | os.PathLike,
                               footer: str | None = None) -> Path:
    """One panel per metric; per model pair, each country's mean minus the pair's overall mean, with the
    country's bootstrap interval (shifted by the same overall mean) as an error bar."""
    metrics = ["spearman", "top_overlap", "jensen_shannon"]
    countries = summary[summary["scope"] == "country"]
    overall = summary[summary["scope"] == "overall"].set_index(["model_a", "model_b", "metric"])["mean"]
    pairs = list(dict.fromkeys(zip(summary["model_a"], summary["model_b"])))
    codes = sorted(countries["country"].dropna().unique())
    with new_figure((max(8.0, 0.5 * len(codes) + 2), 3.0 * len(metrics)), layout="constrained") as fig:
        axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
        positions = np.arange(len(codes))
        width = 0.8 / max(1, len(pairs))
        for ax, metric in zip(axes, metrics):
            for k, (model_a, model_b) in enumerate(pairs):
                part = countries[(countries["model_a"] == model_a) & (countries["model_b"] == model_b)
                                 & (countries["metric"] == metric)].set_index("country")
                base = overall.get((model_a, model_b, metric), np.nan)
                values = np.array([part["mean"].get(c, np.nan) for c in codes], dtype=float) - base
                low = np.array([part["ci_low"].get(c, np.nan) for c in codes], dtype=float) - base
                high = np.array([part["ci_high"].get(c, np.nan) for c in codes], dtype=float) - base
                errors = np.vstack([np.clip(values - low, 0, None), np.clip(high - values, 0, None)])
                errors = np.nan_to_num(errors)
                ax.bar(positions + (k - (len(pairs) - 1) / 2) * width, np.nan_to_num(values), width,
                       yerr=errors, capsize=2, label=f"{short_spec(model_a)} vs {short_spec(model_b)}")
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_ylabel(f"{metric}\n(country - overall)", fontsize=8)
            ax.set_xticks(positions, codes, fontsize=7)
        if pairs:
            axes[0].legend(fontsize=7, loc="best")
        else:
            axes[0].text(0.5, 0.5, "no model pairs compared", ha="center", va="center", transform=axes[0].transAxes)
        fig.suptitle("Agreement per country minus the pair's overall mean (95% bootstrap interval)", fontsize=10)
        return save_figure(fig, out_path, footer=footer)
