"""Cross-model map agreement (attn_assets/core/cross_model.py) against a slow per-pixel reference.

The reference walks the photo one original pixel (unit square) at a time and, for each patch of a model's grid and
each common cell that pixel touches, adds the patch's attention density times the exact area of pixel & patch &
cell. Pixels tile the plane, so summing them gives the same areas as the 1-D overlap products of the fast code,
by a different order of operations: the two agree to float64 rounding (values <= 1 summed over < 10^5 terms:
relative error < 10^5 * 2^-53 ~ 1e-11, so 1e-9 absolute is a safe bound).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from attn_assets.core.cross_model import (
    PlacedMap,
    agreement,
    common_grid,
    compare_maps,
    intersection_box,
    resample_onto,
)
from attn_assets.crop_geometry import crop_geometry

FLOAT64_BOUND = 1e-9


def _overlap(a0, a1, b0, b1):
    return max(0.0, min(a1, b1) - max(a0, b0))


def reference_resample(placed: PlacedMap, box, shape) -> np.ndarray:
    """Per-pixel, per-patch, per-cell loops; exact rectangle areas."""
    gh, gw = placed.values.shape
    left, top, right, bottom = placed.box
    ph, pw = (bottom - top) / gh, (right - left) / gw
    ch, cw = (box[3] - box[1]) / shape[0], (box[2] - box[0]) / shape[1]
    out = np.zeros(shape)
    for y in range(int(math.floor(box[1])), int(math.ceil(box[3]))):
        for x in range(int(math.floor(box[0])), int(math.ceil(box[2]))):
            for i in range(gh):
                py0, py1 = top + i * ph, top + (i + 1) * ph
                oy = _overlap(y, y + 1, py0, py1)
                if oy == 0:
                    continue
                for j in range(gw):
                    px0, px1 = left + j * pw, left + (j + 1) * pw
                    if _overlap(x, x + 1, px0, px1) == 0:
                        continue
                    density = placed.values[i, j] / (ph * pw)
                    for r in range(shape[0]):
                        cy = _overlap(max(y, py0), min(y + 1, py1), box[1] + r * ch, box[1] + (r + 1) * ch)
                        if cy == 0:
                            continue
                        for c in range(shape[1]):
                            cx = _overlap(max(x, px0), min(x + 1, px1), box[0] + c * cw, box[0] + (c + 1) * cw)
                            out[r, c] += density * cy * cx
    return out


def reference_metrics(a: np.ndarray, b: np.ndarray, fraction: float = 0.1):
    """Spearman as Pearson of average ranks, tie-aware top-k overlap by counting per cell, JS divergence by its
    definition (log2)."""
    from scipy.stats import rankdata

    a, b = a.ravel(), b.ravel()
    rho = float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])
    k = max(1, math.ceil(fraction * a.size))

    def membership(x):  # per cell: the places left above it, shared with the cells of its exact value
        return [min(1.0, max(0.0, (k - int((x > v).sum())) / int((x == v).sum()))) for v in x]

    overlap = sum(min(u, w) for u, w in zip(membership(a), membership(b))) / k
    p, q = a / a.sum(), b / b.sum()
    m = (p + q) / 2

    def kl(x, y):
        keep = x > 0
        return float(np.sum(x[keep] * np.log2(x[keep] / y[keep])))

    return rho, overlap, 0.5 * kl(p, m) + 0.5 * kl(q, m)


def _peaked(shape, seed):
    rng = np.random.default_rng(seed)
    values = rng.gamma(0.3, size=shape)  # skewed, like attention: a few patches carry most of the mass
    return values / values.sum()


def test_real_processor_views_match_the_per_pixel_reference():
    """CLIP-style (short side 40, centre crop 40, 8-px patches -> 5x5) against SigLIP-style (whole photo squashed
    to 32x32, 8-px patches -> 4x4) on a 97x61 photo: fractional boxes in original pixels."""
    width, height = 97, 61
    clip_box = crop_geometry(width, height, {"shortest_edge": 40}, {"height": 40, "width": 40}).box_in_original()
    siglip_box = crop_geometry(width, height, {"height": 32, "width": 32}).box_in_original()
    assert siglip_box == (0.0, 0.0, 97.0, 61.0) and clip_box[0] > 0
    a, b = PlacedMap(_peaked((5, 5), 1), clip_box), PlacedMap(_peaked((4, 4), 2), siglip_box)
    box = intersection_box(a.box, b.box)
    assert box == pytest.approx(clip_box)  # the crop lies inside the whole photo
    shape = common_grid(a, b, box)
    assert shape == (5, 5)  # CLIP's patches (61/5 x 61/5 px) are finer than SigLIP's (15.25 x 24.25 px)
    for placed in (a, b):
        np.testing.assert_allclose(resample_onto(placed, box, shape), reference_resample(placed, box, shape),
                                   atol=FLOAT64_BOUND, rtol=0)
    result = agreement(a, b)
    expected = reference_metrics(reference_resample(a, box, shape), reference_resample(b, box, shape))
    assert (result.spearman, result.top_overlap, result.jensen_shannon) == pytest.approx(expected, abs=1e-9)
    assert result.mass_inside_a == pytest.approx(1.0)  # the crop is inside SigLIP's view
    assert 0 < result.mass_inside_b < 1


def test_offset_crops_match_the_per_pixel_reference():
    """Two partly overlapping views with different grids, neither inside the other."""
    a = PlacedMap(_peaked((6, 6), 3), (3.5, 0.0, 63.5, 48.0))
    b = PlacedMap(_peaked((4, 5), 4), (20.25, 10.0, 90.25, 58.0))
    box = intersection_box(a.box, b.box)
    assert box == (20.25, 10.0, 63.5, 48.0)
    shape = common_grid(a, b, box)
    for placed in (a, b):
        resampled = resample_onto(placed, box, shape)
        np.testing.assert_allclose(resampled, reference_resample(placed, box, shape), atol=FLOAT64_BOUND, rtol=0)
        assert resampled.sum() <= placed.values.sum() + FLOAT64_BOUND  # mass-preserving: only what lies inside


def test_a_map_agrees_perfectly_with_itself_under_two_crops():
    """One photo-level attention density on a 10-px lattice, seen through a CLIP-like square centre crop and a
    wider view, both with 10-px patches aligned to it: on the intersection the two maps are the same up to scale,
    so Spearman 1, top-10% overlap 1, JS divergence 0, although each map is normalised over its own view."""
    photo = _peaked((8, 12), 5)  # density per 10x10 px cell of a 120x80 photo
    wide = PlacedMap(photo / photo.sum(), (0.0, 0.0, 120.0, 80.0))  # 8x12 patches
    centre = photo[:, 2:10]
    square = PlacedMap(centre / centre.sum(), (20.0, 0.0, 100.0, 80.0))  # 8x8 patches: the centre crop
    result = agreement(wide, square)
    assert result.cells == (8, 8)
    assert result.spearman == pytest.approx(1.0, abs=1e-12)
    assert result.top_overlap == 1.0
    assert result.jensen_shannon == pytest.approx(0.0, abs=1e-12)
    assert result.mass_inside_b == pytest.approx(1.0)
    assert result.mass_inside_a == pytest.approx(centre.sum() / photo.sum())

    # where it should not agree: the crop's map mirrored left-right
    mirrored = PlacedMap(square.values[:, ::-1], square.box)
    other = agreement(wide, mirrored)
    assert other.spearman < 0.9 and other.jensen_shannon > 0.01


def test_compare_maps_edge_cases_and_bad_inputs():
    rho, overlap, divergence = compare_maps(np.ones((2, 2)), np.arange(4.0).reshape(2, 2))
    assert math.isnan(rho) and divergence > 0  # constant map: ranks undefined
    assert overlap == 0.25  # k = 1: each of the constant map's 4 tied cells is 1/4 a member, cell 3 among them
    with pytest.raises(ValueError, match="do not overlap"):
        agreement(PlacedMap(np.ones((2, 2)), (0, 0, 10, 10)), PlacedMap(np.ones((2, 2)), (10, 0, 20, 10)))
    with pytest.raises(ValueError, match="non-negative"):
        PlacedMap(-np.ones((2, 2)), (0, 0, 10, 10))
    with pytest.raises(ValueError, match="view box .* is empty"):
        PlacedMap(np.ones((2, 2)), (5, 0, 5, 10))
    with pytest.raises(ValueError, match="2-D"):
        PlacedMap(np.ones(4), (0, 0, 10, 10))


def test_top_overlap_does_not_depend_on_where_ties_lie():
    """A uniform 14x14 map against a copy with one raised cell: k = 20 of 196 cells. The uniform map's cells are
    each 20/196 a member; the copy's peak is 1, its other cells share 19 places (19/195 each). The fuzzy
    intersection is 20/196 + 195 * 19/195 = 19 + 20/196, over k: the same wherever the peak is (a ranking by
    cell order gave 1.0 for a peak in the first 20 cells and 0.95 elsewhere, and 0 or 1 for a one-cell top)."""
    from attn_assets.core.cross_model import compare_maps, top_membership

    uniform = np.full((14, 14), 1 / 196)
    expected = (19 + 20 / 196) / 20
    for peak in [(0, 0), (7, 7), (13, 13)]:
        peaked = uniform.copy()
        peaked[peak] *= 3
        _, overlap, _ = compare_maps(uniform, peaked)
        # 196 min() terms of at most 1 summed in float64 and divided by 20: error far below 1e-12
        assert overlap == pytest.approx(expected, abs=1e-12), peak
        assert compare_maps(peaked, uniform)[1] == pytest.approx(overlap, abs=1e-12)  # symmetric
    assert top_membership(uniform).sum() == pytest.approx(20, abs=1e-12)
    assert compare_maps(uniform, uniform)[1] == pytest.approx(1.0, abs=1e-12)

    # a one-cell top (k = ceil(0.3 * 3) = 1) over a two-way tie: half a member each, the same for either order
    tie = np.array([0.4, 0.4, 0.2])
    assert top_membership(tie, fraction=0.3).tolist() == [0.5, 0.5, 0.0]
    first, second = np.array([0.5, 0.3, 0.2]), np.array([0.3, 0.5, 0.2])
    assert compare_maps(tie, first, fraction=0.3)[1] == compare_maps(tie, second, fraction=0.3)[1] == 0.5


def test_top_overlap_is_the_same_for_any_order_of_the_cells():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 4, size=60).astype(float)  # few distinct values: ties at the cut
    b = rng.integers(0, 4, size=60).astype(float)
    _, overlap, _ = compare_maps(a, b)
    for _ in range(5):
        order = rng.permutation(60)
        assert compare_maps(a[order], b[order])[1] == pytest.approx(overlap, abs=1e-12)
    assert overlap == pytest.approx(reference_metrics(a + 1, b + 1)[1], abs=1e-12)
