"""Per-image triptych, as in the seed: Original Image | Attention Heatmap | Attention Overlay.

Unlike the seed, the heatmap is placed on the region the model actually saw (the
processor's center crop, attn_assets.crop_geometry), never stretched over the
uncropped frame: panel 1 shows the full photo with that crop outlined, panels 2 and 3
show the map at the crop region's pixel size and over the crop region's pixels.

Panels 2 and 3 keep the seed's min-max look, each with a colour bar in × uniform (attn_assets.figures.scale),
the map's range in the title, and 'near-uniform' written across a map that is.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle
from PIL import Image

from ._mpl import DEFAULT_DPI, new_figure, save_figure
from .geometry import (
    DEFAULT_MAX_DISPLAY_SIDE,
    Box,
    ImageLike,
    crop_region,
    display_box,
    load_display_image,
    resolve_box,
    upsample_map,
)
from .scale import add_colorbar, map_scale, mark_near_uniform

logger = logging.getLogger(__name__)

OVERLAY_ALPHA = 0.6
CMAP = "hot"
BOX_COLOR = "#00e5ff"


def prepare_view(
    image: ImageLike,
    attn_map: np.ndarray,
    crop_box: Box | None = None,
    *,
    max_side: int = DEFAULT_MAX_DISPLAY_SIDE,
) -> tuple[Image.Image, Box, Image.Image, np.ndarray]:
    """Everything a panel needs: (display image, crop box in display coords, crop pixels, heatmap).

    The heatmap is the min-max normalized map zoomed (order=1) to the crop region's size.
    """
    display, orig_size = load_display_image(image, max_side=max_side)
    box = resolve_box(crop_box, orig_size)
    dbox = display_box(box, orig_size, display.size)
    crop = crop_region(display, dbox)
    heat = upsample_map(attn_map, crop.size[1], crop.size[0])
    return display, dbox, crop, heat


def draw_overlay(ax: Axes, crop: Image.Image, heat: np.ndarray, alpha: float = OVERLAY_ALPHA) -> None:
    """The crop region's pixels with the heatmap on top (extent pinned so they align exactly)."""
    w, h = crop.size
    extent = (0, w, h, 0)
    ax.imshow(np.asarray(crop), extent=extent, interpolation="antialiased")
    ax.imshow(heat, cmap=CMAP, alpha=alpha, vmin=0.0, vmax=1.0, extent=extent, interpolation="bilinear")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")


def draw_original(ax: Axes, display: Image.Image, dbox: Box) -> None:
    """The full photo with the model's crop outlined."""
    ax.imshow(np.asarray(display))
    left, top, right, bottom = dbox
    ax.add_patch(
        Rectangle((left, top), right - left, bottom - top, fill=False, edgecolor=BOX_COLOR, linewidth=2.0,
                  linestyle="--", label="model input (center crop)")
    )
    w, h = display.size
    ax.set_xlim(min(0, left) - 0.5, max(w, right) - 0.5)
    ax.set_ylim(max(h, bottom) - 0.5, min(0, top) - 0.5)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.7)
    ax.axis("off")


def render_triptych(
    image: ImageLike,
    attn_map: np.ndarray,
    crop_box: Box | None = None,
    title: str | None = None,
    out_path: str | os.PathLike | None = None,
    *,
    max_side: int = DEFAULT_MAX_DISPLAY_SIDE,
    dpi: int = DEFAULT_DPI,
    figsize: tuple[float, float] = (15, 5),
    footer: str | None = None,
) -> Path:
    """Render the seed's 1x3 triptych for one image and save it (atomically) to ``out_path``.

    image: a PIL image or a path. attn_map: the [grid_h, grid_w] CLS map (un-normalized; a flat
    square-length row is reshaped). crop_box: the model's view in ORIGINAL pixel coordinates
    (left, top, right, bottom), as the shard file stores it; None: the centred square of the short side
    (see `geometry.resolve_box`). Photos larger than ``max_side`` are downscaled for
    display first (geometry scaled along). footer: a line under the figure (`_mpl.figure_footer`).
    Raises OSError if the image cannot be read, ValueError if the map has no finite value.
    """
    if out_path is None:
        raise TypeError("render_triptych() needs out_path")
    scale = map_scale(attn_map)
    display, dbox, crop, heat = prepare_view(image, attn_map, crop_box, max_side=max_side)
    with new_figure(figsize, dpi=dpi) as fig:
        axes = fig.subplots(1, 3)
        draw_original(axes[0], display, dbox)
        axes[0].set_title("Original Image")

        axes[1].imshow(heat, cmap=CMAP, vmin=0.0, vmax=1.0)
        axes[1].set_title(f"Attention Heatmap (min-max)\n{scale.range_text()}", fontsize=10)
        axes[1].axis("off")

        draw_overlay(axes[2], crop, heat)
        axes[2].set_title(f"Attention Overlay\n{scale.range_text()}", fontsize=10)
        for ax in axes[1:]:
            add_colorbar(fig, ax, scale, CMAP)
            mark_near_uniform(ax, scale)

        if title:
            fig.suptitle(title, fontsize=11)
            fig.tight_layout(rect=(0, 0, 1, 0.95 - 0.04 * title.count("\n")))
        else:
            fig.tight_layout()
        return save_figure(fig, out_path, dpi=dpi, footer=footer)
