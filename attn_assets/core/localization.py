"""Does a map point at the evidence? Localization scores of patch maps against a known box.

For images where we know where the country cue is (the demo's planted signs, ``cue_box`` in ORIGINAL image
pixels), each map ``[N_patches]`` on the model's ``grid_h x grid_w`` grid is scored by:

* ``energy_in_box``: the share of the map's mass inside the box, a partly covered patch weighted by the covered
  share of its cell (the "energy-based pointing game" of Wang et al. 2020, "Score-CAM", CVPR Workshops);
* ``box_area_share``: the share of the crop's area the (visible part of the) box covers, i.e. what a uniform map
  scores; ``energy_ratio`` = energy_in_box / box_area_share (1 = no better than uniform);
* ``pointing_hit``: the pointing game of Zhang et al. 2018 ("Top-down Neural Attention by Excitation Backprop",
  IJCV): a hit when the arg-max patch's cell overlaps the box. Exact ties split the hit evenly over the tied
  cells (a uniform map scores the box's share of cells, not a hit or a miss by index order).

The box is mapped into the model's input by the processor's resize and centre crop (attn_assets.crop_geometry):
a cue outside the crop has ``visible_share`` 0 and no scores; a cue cut by the crop edge is scored on its
visible part. The model-randomization check of Adebayo et al. 2018 ("Sanity Checks for Saliency Maps",
NeurIPS) compares these scores on a trained model and on the same architecture with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attn_assets.crop_geometry import Box, CropGeometry

#: Score names, in table order.
LOCALIZATION_SCORES = ("energy_in_box", "box_area_share", "energy_ratio", "pointing_hit")


def parse_box(text: object) -> Box | None:
    """``"x0,y0,x1,y1"`` (original-image pixels) -> box; None for a missing or empty value.

    Raises ValueError for text that is not four finite numbers with x0 < x1 and y0 < y1.
    """
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    text = str(text).strip()
    if not text:
        return None
    parts = [p.strip() for p in text.strip("[]()").split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(np.isfinite(values)) or values[0] >= values[2] or values[1] >= values[3]:
        raise ValueError(f"cue box {text!r} is not 'x0,y0,x1,y1' with x0 < x1 and y0 < y1 (original-image pixels)")
    return values[0], values[1], values[2], values[3]


def check_box_in_image(box: Box, width: int, height: int) -> Box:
    """``box`` if it lies inside a ``width`` x ``height`` image and spans at least one pixel each way.

    Raises ValueError saying what is wrong: a box reaching outside the image (a box for another image size, or a
    sign of a coordinate mix-up), or a box under one pixel (normalised 0..1 coordinates instead of pixels).
    """
    x0, y0, x1, y1 = box
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(f"cue box {x0:g},{y0:g},{x1:g},{y1:g} reaches outside the {width}x{height} image; give the "
                         "box in this image's original pixels")
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise ValueError(f"cue box {x0:g},{y0:g},{x1:g},{y1:g} is smaller than one pixel: it looks like normalised "
                         "0..1 coordinates; give original-image pixels")
    return box


def box_in_crop(box: Box, geometry: CropGeometry) -> tuple[Box | None, float]:
    """An original-image ``box`` in the model input's pixels (the crop), clipped to the crop.

    Returns (clipped box or None when nothing of it is inside, visible share of the box's area in [0, 1]).
    """
    x0, y0, x1, y1 = box
    cx0, cx1 = x0 * geometry.scale_x - geometry.left, x1 * geometry.scale_x - geometry.left
    cy0, cy1 = y0 * geometry.scale_y - geometry.top, y1 * geometry.scale_y - geometry.top
    area = (cx1 - cx0) * (cy1 - cy0)
    vx0, vx1 = max(cx0, 0.0), min(cx1, float(geometry.crop_width))
    vy0, vy1 = max(cy0, 0.0), min(cy1, float(geometry.crop_height))
    if vx1 <= vx0 or vy1 <= vy0 or area <= 0:
        return None, 0.0
    return (vx0, vy0, vx1, vy1), (vx1 - vx0) * (vy1 - vy0) / area


def cell_coverage(box: Box, input_size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """``float64[grid_h * grid_w]``: the covered share of each patch cell by ``box`` (model-input pixels),
    row-major like the patch tokens. ``input_size`` is (height, width) of the model input."""
    height, width = input_size
    gh, gw = grid
    ph, pw = height / gh, width / gw
    x0, y0, x1, y1 = box
    cols = np.arange(gw, dtype=np.float64)
    rows = np.arange(gh, dtype=np.float64)
    overlap_x = np.clip(np.minimum(x1, (cols + 1) * pw) - np.maximum(x0, cols * pw), 0, None) / pw
    overlap_y = np.clip(np.minimum(y1, (rows + 1) * ph) - np.maximum(y0, rows * ph), 0, None) / ph
    return np.outer(overlap_y, overlap_x).reshape(-1)


@dataclass(frozen=True)
class CueGeometry:
    """Where one image's cue lies on the model's patch grid."""

    coverage: np.ndarray | None  # float64[N_patches] covered share of each cell; None when the cue is outside
    visible_share: float  # share of the cue box inside the model's crop

    @property
    def in_crop(self) -> bool:
        return self.coverage is not None


def cue_geometry(box: Box, geometry: CropGeometry, grid: tuple[int, int]) -> CueGeometry:
    """The cue ``box`` (original pixels) as cell coverage of the ``grid`` on the crop described by ``geometry``."""
    clipped, visible = box_in_crop(box, geometry)
    if clipped is None:
        return CueGeometry(None, 0.0)
    return CueGeometry(cell_coverage(clipped, (geometry.crop_height, geometry.crop_width), grid), visible)


def localization_scores(maps: np.ndarray, coverage: np.ndarray) -> dict[str, np.ndarray]:
    """Scores of ``maps[M, N_patches]`` (non-negative; any scale) against one cue's ``coverage[N_patches]``.

    Returns float64 arrays ``[M]`` keyed by :data:`LOCALIZATION_SCORES`. A map whose mass is 0 gets NaN scores.
    """
    maps = np.asarray(maps, dtype=np.float64)
    coverage = np.asarray(coverage, dtype=np.float64)
    total = maps.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        energy = (maps * coverage).sum(axis=1) / total
    area_share = float(coverage.mean())
    maxima = maps == maps.max(axis=1, keepdims=True)
    hit = (maxima & (coverage > 0)).sum(axis=1) / maxima.sum(axis=1)
    hit = np.where(total > 0, hit, np.nan)
    return {
        "energy_in_box": energy,
        "box_area_share": np.full(len(maps), area_share),
        "energy_ratio": energy / area_share,
        "pointing_hit": hit,
    }
