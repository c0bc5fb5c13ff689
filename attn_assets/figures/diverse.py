"""The seed's "20 diverse examples" grid: a deterministic spread over metric space and countries.

`select_diverse` z-scores the four headline metrics, starts from the image closest to the
median, then repeatedly takes the image farthest (in z-space) from everything chosen so far,
restricted at each step to the countries chosen least often so far (round-robin), so the first
picks all come from different countries. Ties go to the smallest image_id; the result does not
depend on the row order of the input.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ._mpl import new_figure, save_figure
from .countries import country_caption
from .geometry import Box, image_file
from .scale import add_colorbar, map_scale, mark_near_uniform
from .triptych import CMAP, draw_overlay, prepare_view

logger = logging.getLogger(__name__)

HEADLINE_METRICS = [
    "attention_entropy",
    "attention_concentration_top10",
    "num_high_attention_patches",
    "attention_spread",
]


def select_diverse(df: pd.DataFrame, n: int = 20, metrics: Sequence[str] = tuple(HEADLINE_METRICS)) -> list[str]:
    """Up to ``n`` image_ids spread over metric space and over as many countries as possible."""
    if n <= 0 or len(df) == 0:
        return []
    cols = list(metrics)
    d = df[["image_id", "country", *cols]].copy()
    d["image_id"] = d["image_id"].astype(str)
    d["country"] = d["country"].fillna("").astype(str)
    for c in cols:
        d[c] = pd.to_numeric(d[c], errors="coerce").astype(np.float64)
    d = d[np.isfinite(d[cols].to_numpy()).all(axis=1)]
    # order-independent: sort fully, keep one row per image_id
    d = d.sort_values(["image_id", "country", *cols], kind="mergesort").drop_duplicates("image_id")
    ids = d["image_id"].to_numpy()
    countries = d["country"].to_numpy()
    X = d[cols].to_numpy(dtype=np.float64)
    if len(ids) == 0:
        return []
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    sd[~(sd > 0)] = 1.0
    Z = (X - mu) / sd
    med = np.median(Z, axis=0)

    codes, country_idx = np.unique(countries, return_inverse=True)
    picked_per_country = np.zeros(len(codes), dtype=np.int64)
    remaining_per_country = np.bincount(country_idx, minlength=len(codes))
    available = np.ones(len(ids), dtype=bool)
    min_dist = np.full(len(ids), np.inf)

    chosen: list[int] = []
    first = int(np.argmin(((Z - med) ** 2).sum(axis=1)))  # argmin: first = smallest image_id on ties
    _take(first, chosen, available, picked_per_country, remaining_per_country, country_idx, Z, min_dist)
    while len(chosen) < min(n, len(ids)):
        has_left = remaining_per_country > 0
        least = picked_per_country[has_left].min()
        eligible_c = has_left & (picked_per_country == least)
        cand = available & eligible_c[country_idx]
        score = np.where(cand, min_dist, -np.inf)
        nxt = int(np.argmax(score))
        _take(nxt, chosen, available, picked_per_country, remaining_per_country, country_idx, Z, min_dist)
    return [str(ids[i]) for i in chosen]


def _take(i, chosen, available, picked, remaining, country_idx, Z, min_dist):
    chosen.append(i)
    available[i] = False
    picked[country_idx[i]] += 1
    remaining[country_idx[i]] -= 1
    np.minimum(min_dist, ((Z - Z[i]) ** 2).sum(axis=1), out=min_dist)


def render_diverse_grid(
    rows_df: pd.DataFrame,
    maps: Mapping[str, np.ndarray],
    crop_boxes: Mapping[str, Box | None] | None,
    out_path: str | os.PathLike,
    n: int = 20,
    *,
    image_ids: Sequence[str] | None = None,
    ncols: int = 5,
    image_column: str = "abs_path",
    tile_inches: float = 4.0,
    dpi: int = 100,
    footer: str | None = None,
) -> Path:
    """A grid (4x5 for n=20) of attention overlays on the model's crop, one caption per tile.

    Tiles are ``image_ids`` in that order, or else `select_diverse` over the rows that have a
    map. Captions: country, entropy, top-10% concentration, high-attention patches and the map's range;
    each tile keeps the seed's min-max look with its own colour bar in × uniform (`scale`), and a near-uniform
    map is marked. An image whose file is gone or unreadable becomes a labelled empty tile (warning logged).
    ``footer``: a line under the figure (`_mpl.figure_footer`).
    """
    d = rows_df.copy()
    d["image_id"] = d["image_id"].astype(str)
    if image_ids is None:
        have = d[d["image_id"].map(lambda i: maps.get(i) is not None)]
        image_ids = select_diverse(have, n)
    image_ids = [str(i) for i in image_ids][:n] if n else [str(i) for i in image_ids]
    by_id = d.drop_duplicates("image_id").set_index("image_id")
    count = max(len(image_ids), 1)
    ncols = max(1, min(ncols, count))
    nrows = int(np.ceil(count / ncols))
    with new_figure((tile_inches * ncols, (tile_inches + 0.5) * nrows), dpi=dpi) as fig:
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax in axes:
            ax.axis("off")
        if not image_ids:
            axes[0].text(0.5, 0.5, "no images", ha="center", va="center", transform=axes[0].transAxes)
        for ax, image_id in zip(axes, image_ids):
            row = by_id.loc[image_id] if image_id in by_id.index else None
            caption = _caption(image_id, row)
            attn = maps.get(image_id)
            path = None if row is None else row.get(image_column)
            box = crop_boxes.get(image_id) if crop_boxes is not None else None
            try:
                if attn is None:
                    raise LookupError("no attention map")
                opened = image_file(path, None if row is None else row.get("member"))  # stored text -> the file to open (non-UTF-8 names too)
                if opened is None:
                    raise FileNotFoundError(f"image file missing: {path}")
                _, _, crop, heat = prepare_view(opened, attn, box, max_side=512)
                draw_overlay(ax, crop, heat)
                scale = map_scale(attn)
                add_colorbar(fig, ax, scale, CMAP, label="", width=0.035)
                mark_near_uniform(ax, scale, fontsize=7)
                caption = f"{caption}\n{scale.range_text()}"
            except (OSError, ValueError, LookupError) as exc:
                logger.warning("diverse grid: tile for %r left empty: %s", image_id, exc)
                ax.text(0.5, 0.5, "image unavailable", ha="center", va="center", transform=ax.transAxes,
                        color="0.4")
            ax.set_title(caption, fontsize=9)
        fig.suptitle("Diverse attention examples (map placed on the model's center crop; "
                     "colour bars: attention × N, × uniform)", fontsize=13)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        return save_figure(fig, out_path, dpi=dpi, footer=footer)


def _caption(image_id: str, row) -> str:
    if row is None:
        return image_id
    country = country_caption(row.get("country_name"), row.get("country"))
    try:
        return (f"{country}\nH={float(row['attention_entropy']):.2f}  "
                f"top10={float(row['attention_concentration_top10']):.1%}  "
                f"high={float(row['num_high_attention_patches']):.0f}")
    except (KeyError, TypeError, ValueError):
        return f"{country}\n{image_id}"
