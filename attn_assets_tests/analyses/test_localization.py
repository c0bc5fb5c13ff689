"""Localization scores (attn_assets.core.localization) against slow per-sample references and the real processor."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attn_assets.core.localization import (
    box_in_crop,
    cell_coverage,
    cue_geometry,
    localization_scores,
    parse_box,
)
from attn_assets.core.model import make_clip_processor
from attn_assets.core.preprocess import Preprocessor

SAMPLES_PER_PIXEL = 4  # box edges below are multiples of 1/4 px, so this sampling counts covered area exactly


def _reference_energy(cell_map: np.ndarray, box, size: int, grid: int) -> tuple[float, float]:
    """Energy in box and area share by brute force: every 1/4-px sample of the crop carries its cell's value."""
    step = 1.0 / SAMPLES_PER_PIXEL
    centres = (np.arange(size * SAMPLES_PER_PIXEL) + 0.5) * step
    cell = size / grid
    values = cell_map.reshape(grid, grid)[np.floor(centres / cell).astype(int)][:, np.floor(centres / cell).astype(int)]
    inside_x = (centres >= box[0]) & (centres < box[2])
    inside_y = (centres >= box[1]) & (centres < box[3])
    mask = np.outer(inside_y, inside_x)
    return float((values * mask).sum() / values.sum()), float(mask.mean())


@pytest.mark.parametrize("box", [(16.0, 32.0, 48.0, 64.0), (3.25, 5.5, 101.75, 40.0), (0.0, 0.0, 224.0, 224.0),
                                 (200.5, 210.25, 224.0, 224.0)])
def test_energy_in_box_matches_per_sample_reference(box):
    grid, size = 14, 224
    rng = np.random.default_rng(0)
    cell_map = rng.random(grid * grid) ** 4
    scores = localization_scores(cell_map[None], cell_coverage(box, (size, size), (grid, grid)))
    energy, share = _reference_energy(cell_map, box, size, grid)
    # both sides sum the same ~200 float64 terms: 1e-12 is many orders above their rounding (n * 2^-53)
    assert scores["energy_in_box"][0] == pytest.approx(energy, abs=1e-12)
    assert scores["box_area_share"][0] == pytest.approx(share, abs=1e-12)
    assert scores["energy_ratio"][0] == pytest.approx(energy / share, rel=1e-12)


def test_pointing_game_hits_misses_and_splits_ties():
    grid = (4, 4)
    coverage = cell_coverage((0.0, 0.0, 8.0, 8.0), (16, 16), grid)  # top-left 2x2 cells of 4x4 px
    peak_in, peak_out, uniform = np.ones(16), np.ones(16), np.ones(16)
    peak_in[5] = 9.0  # row 1, col 1: inside the box
    peak_out[15] = 9.0
    hits = localization_scores(np.stack([peak_in, peak_out, uniform]), coverage)["pointing_hit"]
    assert hits.tolist() == [1.0, 0.0, 4 / 16]
    ratio = localization_scores(uniform[None], coverage)["energy_ratio"][0]
    assert ratio == pytest.approx(1.0, abs=1e-12)


def test_box_maps_onto_the_processed_crop_like_the_real_processor():
    """A white box drawn on a landscape photo lands where box_in_crop says, in the CLIP processor's own output."""
    width, height = 792, 512
    box = (300.0, 140.0, 420.0, 260.0)
    image = Image.new("RGB", (width, height), (0, 0, 0))
    image.paste((255, 255, 255), tuple(int(v) for v in box))
    processor = make_clip_processor(224)
    pixels = processor(images=image, return_tensors="np")["pixel_values"][0]  # [3, 224, 224] normalised
    white = pixels.mean(axis=0) > 0.5 * pixels.max()
    ys, xs = np.nonzero(white)
    geometry = Preprocessor(processor).crop_geometry(width, height)
    (x0, y0, x1, y1), visible = box_in_crop(box, geometry)
    assert visible == 1.0
    # bicubic resampling blurs an edge over about 2 output pixels; the box is 120 px -> 52.5 px wide
    assert abs(xs.min() - x0) <= 2 and abs(xs.max() + 1 - x1) <= 2
    assert abs(ys.min() - y0) <= 2 and abs(ys.max() + 1 - y1) <= 2


def test_cue_outside_or_cut_by_the_crop():
    geometry = Preprocessor(make_clip_processor(224)).crop_geometry(792, 512)  # crop: original x in about [140, 652]
    crop_left = geometry.box_in_original()[0]
    outside = cue_geometry((10.0, 100.0, 100.0, 200.0), geometry, (14, 14))
    assert not outside.in_crop and outside.visible_share == 0.0
    cut = cue_geometry((100.0, 100.0, 180.0, 200.0), geometry, (14, 14))
    assert cut.in_crop and cut.visible_share == pytest.approx((180.0 - crop_left) / 80.0, rel=1e-12)


@pytest.mark.parametrize("text", ["1,2,3", "5,5,1,1", "a,b,c,d", "1,2,3,nan"])
def test_bad_cue_box_text_is_refused_with_the_expected_form(text):
    with pytest.raises(ValueError, match="x0,y0,x1,y1"):
        parse_box(text)


def test_missing_cue_box_is_none():
    assert parse_box(None) is None and parse_box("") is None and parse_box(float("nan")) is None
    assert parse_box("1, 2, 3.5, 4") == (1.0, 2.0, 3.5, 4.0)


@pytest.mark.parametrize("box, message", [((500.0, 500.0, 900.0, 900.0), "outside"), ((-50.0, -50.0, 20.0, 20.0), "outside"),
                                          ((-1e308, -1e308, 1e308, 1e308), "outside"),
                                          ((0.1, 0.1, 0.5, 0.5), "normalised")])
def test_box_that_does_not_fit_its_image_is_refused(box, message):
    from attn_assets.core.localization import check_box_in_image

    with pytest.raises(ValueError, match=message):
        check_box_in_image(box, 96, 64)
    assert check_box_in_image((0.0, 0.0, 96.0, 64.0), 96, 64) == (0.0, 0.0, 96.0, 64.0)


def test_randomized_copy_of_a_random_model_differs(tiny_encoder):
    import torch

    from attn_assets.core.model import load_encoder, randomized_encoder

    model = load_encoder("random:tiny", "cpu")
    copy = randomized_encoder(model)
    same = [torch.equal(a, b) for a, b in zip(model.model.parameters(), copy.model.parameters()) if a.dim() > 1]
    assert not any(same)
    assert copy.spec == "random:tiny#randomized"


def test_empty_benchmark_draws_a_figure_that_says_so(tmp_path):
    import pandas as pd

    from attn_assets.figures.localization import render_localization
    from attn_assets.storage.schema import LOCALIZATION_SUMMARY

    path = render_localization(pd.DataFrame(columns=LOCALIZATION_SUMMARY.column_names), tmp_path / "l.png")
    assert path.stat().st_size > 0
