"""Agreement of two models' patch maps of the same photo, compared where both models look.

Two encoders do not see the same part of a photo: CLIP ViT-L/14-336 resizes the short side to 336 and crops the
centre 336 x 336, DINOv2 crops 224 out of a 256 resize, SigLIP squashes the whole photo to 224 x 224 without a crop.
Each map ``[gh, gw]`` is therefore placed on its model's view box in ORIGINAL-photo pixels (``(left, top, right,
bottom)`` from the processor, ``attn_assets.crop_geometry``; ``extract_records`` gives it per image as
``crop_boxes``), patch ``(i, j)`` covering the box's ``i``-th row and ``j``-th column of equal parts.

Resampling (``resample_onto``): both maps are moved onto one common grid over the INTERSECTION of the two boxes,
area-weighted and mass-preserving: a patch's attention is spread evenly over its area and each common cell receives
``sum_p map[p] * area(p & cell) / area(p)``. The common grid's cells are as fine as the finer model's patches
(``common_grid``: ``ceil(side / finer patch side)`` cells per side), so the finer map is not blurred and the coarser
one is repeated. Attention a model puts outside the intersection is dropped; ``mass_inside_*`` reports how much.

Metrics on the two resampled maps (``agreement``):

- ``spearman``: Spearman's rank correlation over the common cells (``scipy.stats.spearmanr``); NaN when either map
  is constant there (ranks undefined);
- ``top_overlap``: share of the top ``k = ceil(10%)`` cells of one map that are among the other's top ``k``, 1 =
  the same most-attended region. Tie-aware (``top_membership``): cells whose values are exactly equal at the cut
  share the places left there, each a fractional member (a uniform map's cells are each ``k / n`` a member), and
  the overlap is the fuzzy-set intersection ``sum_i min(w_a[i], w_b[i]) / k``. It is therefore the same for any
  order of the cells, symmetric, 1 for identical maps, and without ties the plain set overlap;
- ``jensen_shannon``: Jensen-Shannon divergence (base 2, in [0, 1], 0 = identical) of the two maps renormalised to
  sum 1 over the intersection: the square of ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.

Pure numpy/scipy: no torch, so figures and passes may call it on stored maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import spearmanr

Box = tuple[float, float, float, float]
TOP_FRACTION = 0.1
AGREEMENT_METRICS = ("spearman", "top_overlap", "jensen_shannon")


@dataclass(frozen=True)
class PlacedMap:
    """A patch map ``values[gh, gw]`` (attention per patch, any non-negative scale) placed on its model's view
    ``box`` = (left, top, right, bottom) in original-photo pixels."""

    values: np.ndarray
    box: Box

    def __post_init__(self):
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 2 or min(values.shape) < 1:
            raise ValueError(f"a patch map must be 2-D [gh, gw], got shape {values.shape}")
        if not np.all(np.isfinite(values)) or values.min() < 0:
            raise ValueError("a patch map must be finite and non-negative (attention), got "
                             f"min {np.nanmin(values):.3g}, {int((~np.isfinite(values)).sum())} non-finite values")
        left, top, right, bottom = (float(v) for v in self.box)
        if not (right > left and bottom > top):
            raise ValueError(f"view box {self.box} is empty: need left < right and top < bottom (original pixels)")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "box", (left, top, right, bottom))

    @property
    def patch_size(self) -> tuple[float, float]:
        """(height, width) of one patch in original pixels."""
        left, top, right, bottom = self.box
        return (bottom - top) / self.values.shape[0], (right - left) / self.values.shape[1]


@dataclass(frozen=True)
class Agreement:
    """Agreement of two placed maps on the intersection of their views (see the module docstring)."""

    spearman: float
    top_overlap: float
    jensen_shannon: float
    intersection: Box
    cells: tuple[int, int]  # (rows, columns) of the common grid
    mass_inside_a: float  # share of map a's attention inside the intersection
    mass_inside_b: float


def intersection_box(a: Box, b: Box) -> Box | None:
    """The overlap of two (left, top, right, bottom) boxes, or None when they do not overlap."""
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2], b[2]), min(a[3], b[3])
    return (left, top, right, bottom) if right > left and bottom > top else None


def common_grid(a: PlacedMap, b: PlacedMap, box: Box) -> tuple[int, int]:
    """(rows, columns) of the common grid over ``box``: cells as fine as the finer model's patches."""
    patch_h = min(a.patch_size[0], b.patch_size[0])
    patch_w = min(a.patch_size[1], b.patch_size[1])
    # a tolerance of 1e-9 px keeps a side that is an exact number of patches from gaining a sliver cell
    rows = max(1, math.ceil((box[3] - box[1]) / patch_h - 1e-9))
    cols = max(1, math.ceil((box[2] - box[0]) / patch_w - 1e-9))
    return rows, cols


def _overlap_weights(start: float, stop: float, parts: int, target_start: float, target_stop: float,
                     cells: int) -> np.ndarray:
    """``[parts, cells]``: length of source interval k's overlap with target cell c, over the source's length."""
    source = np.linspace(start, stop, parts + 1)
    target = np.linspace(target_start, target_stop, cells + 1)
    low = np.maximum(source[:-1, None], target[None, :-1])
    high = np.minimum(source[1:, None], target[None, 1:])
    return np.clip(high - low, 0.0, None) / ((stop - start) / parts)


def resample_onto(placed: PlacedMap, box: Box, shape: tuple[int, int]) -> np.ndarray:
    """Attention of ``placed`` falling in each cell of a ``shape`` = (rows, columns) grid over ``box``,
    ``[rows, columns]`` float64: ``sum_p values[p] * area(p & cell) / area(p)`` (area-weighted, mass-preserving;
    exact, as areas of axis-aligned rectangles are products of 1-D overlaps)."""
    gh, gw = placed.values.shape
    left, top, right, bottom = placed.box
    rows = _overlap_weights(top, bottom, gh, box[1], box[3], shape[0])  # [gh, rows]
    cols = _overlap_weights(left, right, gw, box[0], box[2], shape[1])  # [gw, columns]
    return rows.T @ placed.values @ cols


def top_count(size: int, fraction: float = TOP_FRACTION) -> int:
    """``k = ceil(fraction * size)``, at least 1: how many cells the top ``fraction`` of ``size`` cells holds."""
    return max(1, math.ceil(fraction * size - 1e-9))


def top_membership(values: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Each cell's membership in the top ``k = top_count(n, fraction)`` cells, flat ``[n]`` float64 in [0, 1].

    1 above the cut (the ``k``-th largest value), 0 below it; the ``m`` cells whose values equal the cut exactly
    share the ``r`` places left there, ``r / m`` each. The memberships sum to ``k`` and do not depend on the order
    of the cells (a ranking that broke ties by position would put a uniform map's top 10% wherever the cell order
    says). ``values``: finite, any shape."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    count = top_count(flat.size, fraction)
    cut = np.partition(flat, flat.size - count)[flat.size - count]  # the k-th largest value
    above, tied = flat > cut, flat == cut
    membership = above.astype(np.float64)
    membership[tied] = (count - int(above.sum())) / int(tied.sum())
    return membership


def compare_maps(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> tuple[float, float, float]:
    """(spearman, top_overlap, jensen_shannon) of two maps on the SAME cells (any equal shapes)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps on different cells: {a.size} vs {b.size} values")
    constant = np.ptp(a) == 0 or np.ptp(b) == 0
    rho = float("nan") if constant or a.size < 2 else float(spearmanr(a, b).statistic)
    overlap = np.minimum(top_membership(a, fraction), top_membership(b, fraction)).sum() / top_count(a.size, fraction)
    if a.sum() <= 0 or b.sum() <= 0:
        divergence = float("nan")
    else:
        divergence = float(jensenshannon(a / a.sum(), b / b.sum(), base=2) ** 2)
    return rho, float(overlap), divergence


def agreement(a: PlacedMap, b: PlacedMap, fraction: float = TOP_FRACTION) -> Agreement:
    """Compare two placed maps of one photo on the intersection of their views.

    Raises ValueError when the views do not overlap (then there is nothing to compare).
    """
    box = intersection_box(a.box, b.box)
    if box is None:
        raise ValueError(f"the two models' views {a.box} and {b.box} do not overlap: nothing to compare")
    shape = common_grid(a, b, box)
    on_a, on_b = resample_onto(a, box, shape), resample_onto(b, box, shape)
    rho, overlap, divergence = compare_maps(on_a, on_b, fraction)
    total_a, total_b = a.values.sum(), b.values.sum()
    return Agreement(
        spearman=rho, top_overlap=overlap, jensen_shannon=divergence, intersection=box, cells=shape,
        mass_inside_a=float(on_a.sum() / total_a) if total_a > 0 else float("nan"),
        mass_inside_b=float(on_b.sum() / total_b) if total_b > 0 else float("nan"),
    )
