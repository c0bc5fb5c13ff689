"""Figures of the attention analysis (seed notebook layout), matplotlib only, no Dagster.

Every figure is drawn on a bare ``matplotlib.figure.Figure`` with an Agg canvas (no pyplot,
no global backend change) and written atomically. Attention maps are always placed on the
region the model saw (the processor's center crop), never stretched over the whole photo.
"""

from attn_assets.storage.atomic import atomic_directory, atomic_file
from ._mpl import figure_footer
from .countries import render_country_boxplots, render_country_mean_maps, top_countries
from .distributions import DISTRIBUTION_METRICS, describe, render_distributions
from .diverse import HEADLINE_METRICS, render_diverse_grid, select_diverse
from .galleries import GALLERIES, GalleryResult, render_gallery, safe_image_id, top_k
from .geometry import (
    DEFAULT_MAX_DISPLAY_SIDE,
    load_display_image,
    normalize_map,
    upsample_map,
)
from .preview import png_preview_markdown
from .summary import overall_statistics_markdown, overall_statistics_table, render_table_png
from .triptych import render_triptych

__all__ = [
    "DEFAULT_MAX_DISPLAY_SIDE",
    "DISTRIBUTION_METRICS",
    "GALLERIES",
    "HEADLINE_METRICS",
    "GalleryResult",
    "atomic_directory",
    "atomic_file",
    "describe",
    "figure_footer",
    "load_display_image",
    "normalize_map",
    "overall_statistics_markdown",
    "overall_statistics_table",
    "png_preview_markdown",
    "render_country_boxplots",
    "render_country_mean_maps",
    "render_diverse_grid",
    "render_distributions",
    "render_gallery",
    "render_table_png",
    "render_triptych",
    "safe_image_id",
    "select_diverse",
    "top_countries",
    "top_k",
    "upsample_map",
]
