"""Per-country figures: box plots of entropy / top-10% concentration and mean attention maps."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Mapping

import matplotlib
import numpy as np
import pandas as pd

from attn_assets.storage.schema import UNKNOWN_COUNTRY

from ._mpl import new_figure, save_figure
from .geometry import as_grid
from .scale import UNIT_LABEL, mark_near_uniform, map_scale, shared_scale, times_uniform

logger = logging.getLogger(__name__)

BOX_METRICS = [
    ("attention_entropy", "Attention Entropy (nats)"),
    ("attention_concentration_top10", "Top-10% Concentration (fraction)"),
]
_MPL_VERSION = tuple(int(p) for p in matplotlib.__version__.split(".")[:2] if p.isdigit())


def country_labels(country: pd.Series) -> pd.Series:
    """Country codes with a missing (NULL or blank) country shown as UNKNOWN_COUNTRY."""
    return country.astype("string").fillna("").replace("", UNKNOWN_COUNTRY)


def country_caption(name: object, code: object) -> str:
    """A caption for one image's country: its name, else its code, else UNKNOWN_COUNTRY (NULL, NaN, '' alike)."""
    for value in (name, code):
        if isinstance(value, str) and value.strip():
            return value
    return UNKNOWN_COUNTRY


def top_countries(df: pd.DataFrame, top_n: int = 12) -> list[str]:
    """Country labels (:func:`country_labels`) with the most images, ties by label; unknown is one group."""
    counts = country_labels(df["country"]).value_counts()
    counts = counts.rename_axis("country").reset_index(name="n").sort_values(["n", "country"], ascending=[False, True])
    return counts["country"].head(top_n).tolist()


def render_country_boxplots(
    df: pd.DataFrame,
    out_path: str | os.PathLike,
    top_n: int = 12,
    *,
    dpi: int = 100,
    footer: str | None = None,
) -> dict[str, list[str]]:
    """Box plots of entropy and top-10% concentration for the ``top_n`` largest countries.

    Each panel orders countries by that metric's median (ties by code); labels carry n.
    Returns ``{metric: [country codes in drawn order, bottom to top]}``.
    """
    countries = top_countries(df, top_n)
    c = country_labels(df["country"])
    sub = df[c.isin(countries)].assign(_c=c[c.isin(countries)])
    names = {}
    if "country_name" in df.columns:
        names = sub.drop_duplicates("_c").set_index("_c")["country_name"].to_dict()
    order_out: dict[str, list[str]] = {}
    height = max(5.0, 0.45 * max(len(countries), 1) + 1.5)
    with new_figure((15, height), dpi=dpi) as fig:
        axes = fig.subplots(1, 2)
        for ax, (metric, label) in zip(axes, BOX_METRICS):
            groups = {k: pd.to_numeric(g[metric], errors="coerce").dropna().to_numpy() for k, g in sub.groupby("_c")}
            groups = {k: v for k, v in groups.items() if v.size}
            order = sorted(groups, key=lambda k: (float(np.median(groups[k])), k))
            order_out[metric] = order
            ax.set_xlabel(label)
            if not order:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
                continue
            labels = [f"{_name(k, names)} (n={groups[k].size:,})" for k in order]
            kw = {"orientation": "horizontal"} if _MPL_VERSION >= (3, 10) else {"vert": False}
            bp = ax.boxplot([groups[k] for k in order], patch_artist=True, showfliers=True,
                            flierprops={"markersize": 2, "alpha": 0.4}, medianprops={"color": "black"}, **kw)
            for patch in bp["boxes"]:
                patch.set_facecolor("#f4a582")
            ax.set_yticks(np.arange(1, len(order) + 1), labels, fontsize=9)
            ax.grid(axis="x", alpha=0.3)
            ax.set_title(f"{label.split(' (')[0]} by country (ordered by median)")
        fig.suptitle(f"Per-country attention statistics (top {len(countries)} countries by image count)", fontsize=13)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        save_figure(fig, out_path, dpi=dpi, footer=footer)
    return order_out


def _name(code: str, names: Mapping[str, str]) -> str:
    name = names.get(code)
    if isinstance(name, str) and name and name != code:
        return f"{code} · {name}" if len(name) <= 22 else f"{code} · {name[:21]}…"
    return code


def render_country_mean_maps(
    mean_maps: Mapping[str, np.ndarray],
    counts: Mapping[str, int],
    out_path: str | os.PathLike,
    *,
    max_countries: int = 24,
    ncols: int = 6,
    country_names: Mapping[str, str] | None = None,
    dpi: int = 100,
    footer: str | None = None,
) -> Path:
    """A grid of per-country mean CLS attention maps on one shared colour scale ('hot') in × uniform.

    Countries are ordered by image count (desc, ties by code), at most ``max_countries``.
    Titles give the country and n; a country whose mean map is near-uniform is marked (`scale`). The colour bar
    is the mean attention times N (× uniform), in its own column right of the grid.
    """
    keys = [k for k in mean_maps if mean_maps[k] is not None]
    keys.sort(key=lambda k: (-int(counts.get(k, 0) or 0), str(k)))
    keys = [k for k in keys[:max_countries] if np.isfinite(as_grid(mean_maps[k])).any()]
    grids = {k: times_uniform(mean_maps[k]) for k in keys}
    scale = shared_scale([mean_maps[k] for k in keys]) if keys else None
    n = max(len(keys), 1)
    ncols = max(1, min(ncols, n))
    nrows = int(math.ceil(n / ncols))
    width = 2.6 * ncols + 1.6
    with new_figure((width, 3.1 * nrows + 0.8), dpi=dpi) as fig:
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        im = None
        for ax in axes:
            ax.axis("off")
        if not keys:
            axes[0].text(0.5, 0.5, "no countries", ha="center", va="center", transform=axes[0].transAxes)
        for ax, k in zip(axes, keys):
            im = ax.imshow(grids[k], cmap="hot", norm=scale.norm(), interpolation="nearest")
            mark_near_uniform(ax, map_scale(mean_maps[k]), fontsize=6)
            name = _name(str(k), country_names or {})
            ax.set_title(f"{name}\nn={int(counts.get(k, 0) or 0):,}", fontsize=9)
        fig.suptitle("Mean CLS attention map per country (model's center crop; shared colour scale)", fontsize=12)
        right = 1 - 1.4 / width  # 1.4 in for the bar, its ticks and its label
        fig.tight_layout(rect=(0, 0, right, 0.95), h_pad=1.5)
        if im is not None:
            cax = fig.add_axes((right + 0.25 / width, 0.1, 0.18 / width, 0.8))
            bar = fig.colorbar(im, cax=cax)
            bar.set_label(f"mean CLS {UNIT_LABEL}", fontsize=9)
        return save_figure(fig, out_path, dpi=dpi, footer=footer)
