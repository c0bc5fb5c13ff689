"""Figures that cannot mislead: colour bars in × uniform, printed ranges, near-uniform marks, shared scales,
row labels, footers. Each figure is inspected as matplotlib saves it (Figure.savefig is wrapped to record it)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from attn_assets.figures import render_country_mean_maps, render_gallery, render_triptych
from attn_assets.figures._mpl import figure_footer
from attn_assets.figures.analyses import render_head_maps, render_rollout_gallery
from attn_assets.figures.scale import NEAR_UNIFORM_RANGE, map_scale, shared_scale, times_uniform

from .conftest import gradient_image

FOOTER = figure_footer("random:tiny (fp32)", 1234)


@pytest.fixture
def saved(monkeypatch):
    """Every Figure saved during the test, inspected at save time: texts, images' colour ranges, colour bars."""
    records = []
    original = Figure.savefig

    def savefig(fig, *args, **kwargs):
        renderer = fig.canvas.get_renderer()
        axes_texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        titles = [ax.get_title() for ax in fig.axes]
        images = [(im.norm.vmin, im.norm.vmax) for ax in fig.axes for im in ax.images]
        every_axes = {id(a): a for ax in fig.axes for a in (ax, *ax.child_axes)}.values()
        bars = [ax for ax in every_axes if getattr(ax, "_colorbar", None) is not None]
        fig_box = fig.bbox
        label_inside = [
            bar.yaxis.label.get_window_extent(renderer).x1 <= fig_box.x1 + 0.5 for bar in bars if bar.get_ylabel()
        ]
        footer_top = min((ax.get_position().y0 for ax in fig.axes if ax.get_axes_locator() is None), default=1.0)
        records.append({"fig_texts": [t.get_text() for t in fig.texts], "axes_texts": axes_texts, "titles": titles,
                        "images": images, "bars": [(b.get_ylim(), b.get_ylabel()) for b in bars],
                        "labels_inside": label_inside, "lowest_axes_y0": footer_top,
                        "height_in": fig.get_size_inches()[1]})
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return records


def _peaked(seed=0, shape=(24, 24)):
    m = np.random.default_rng(seed).gamma(0.5, 1.0, shape)
    return m / (m.sum() * 1.002)  # the CLS column's own share is dropped: the row sums to a bit under 1


def test_times_uniform_is_the_patch_share_times_n():
    flat = np.full((24, 24), 1 / 576)
    np.testing.assert_allclose(times_uniform(flat), 1.0, rtol=1e-12)  # float64: 1/576 * 576 exact to rounding
    scale = map_scale(np.arange(36, dtype=float) / 630.0)  # 0..35 summing to 1 over 36 patches
    assert scale.low == 0.0 and scale.high == pytest.approx(35 * 36 / 630.0, rel=1e-12)
    assert scale.num_patches == 36
    with pytest.raises(ValueError, match="no finite value"):
        map_scale(np.full((2, 2), np.nan))


def test_near_uniform_threshold():
    # the untrained model's map: uniform over N + 1 tokens to ~1e-6 (DESIGN: random:streetclip)
    noise = np.random.default_rng(0).normal(0, 1e-6 / 577, (24, 24))
    assert map_scale(np.full((24, 24), 1 / 577) + noise).near_uniform
    assert not map_scale(_peaked()).near_uniform
    just_below = np.full(36, 1 / 36)
    just_below[0] += (NEAR_UNIFORM_RANGE * 0.99) / 36
    just_above = np.full(36, 1 / 36)
    just_above[0] += (NEAR_UNIFORM_RANGE * 1.01) / 36
    assert map_scale(just_below).near_uniform and not map_scale(just_above).near_uniform
    assert "near-uniform" in map_scale(just_below).range_text()
    assert "near-uniform" not in map_scale(just_above).range_text()


def test_triptych_has_colour_bars_in_times_uniform_the_range_and_a_footer(tmp_path, saved):
    peaked = _peaked()
    render_triptych(gradient_image(400, 300), peaked, None, "t", tmp_path / "p.png", footer=FOOTER)
    rec = saved[-1]
    low, high = peaked.min() * 576, peaked.max() * 576
    assert len(rec["bars"]) == 2  # heatmap and overlay
    for (lo, hi), label in rec["bars"]:
        assert "× uniform" in label
        assert (lo, hi) == pytest.approx((low, high), rel=1e-9)  # float64 products of the same values
    assert sum(f"{high:.4g} × uniform" in t for t in rec["titles"]) == 2
    assert not any("near-uniform" in t for t in rec["axes_texts"])
    assert rec["fig_texts"][-1] == FOOTER
    assert rec["lowest_axes_y0"] * rec["height_in"] >= 0.25  # the footer strip holds no axes

    flat = np.full((24, 24), 1 / 577) + np.random.default_rng(1).normal(0, 1e-9, (24, 24))
    render_triptych(gradient_image(400, 300), flat, None, None, tmp_path / "f.png")
    rec = saved[-1]
    assert sum("near-uniform" in t for t in rec["axes_texts"]) == 2  # written across both heatmap panels
    assert all("near-uniform" in t for t in rec["titles"][1:3])


def test_gallery_triptychs_carry_the_footer(tmp_path, saved):
    photo = tmp_path / "a.png"
    gradient_image(300, 200).save(photo)
    rows = pd.DataFrame([{"image_id": "a", "abs_path": str(photo), "country": "FR", "attention_entropy": 4.0}])
    render_gallery(rows, {"a": _peaked()}, None, tmp_path / "g", "attention_entropy", footer=FOOTER)
    assert saved[-1]["fig_texts"][-1] == FOOTER


def test_head_maps_share_one_scale(tmp_path, saved):
    maps = np.stack([_peaked(0), _peaked(1) ** 2, np.full((24, 24), 1 / 577)])
    maps[1] /= maps[1].sum()
    summary = pd.DataFrame({"head": [0, 1, 2], "attention_entropy_mean": 5.0,
                            "attention_concentration_top10_mean": 0.3})
    render_head_maps(maps, summary, tmp_path / "h.png", images=7, footer=FOOTER)
    rec = saved[-1]
    expected = shared_scale(list(maps))
    assert rec["images"] == [pytest.approx((expected.low, expected.high), rel=1e-12)] * 3
    assert len(rec["bars"]) == 1 and rec["bars"][0][0] == pytest.approx((expected.low, expected.high), rel=1e-12)
    assert sum("near-uniform" in t for t in rec["axes_texts"]) == 1  # head 2
    assert rec["fig_texts"][-1] == FOOTER


def test_country_mean_maps_colour_bar_label_is_inside_the_figure(tmp_path, saved):
    maps = {c: _peaked(i) for i, c in enumerate(["US", "FR", "JP", "BR", "AU", "RU", "ZA"])}
    render_country_mean_maps(maps, {c: 10 for c in maps}, tmp_path / "c.png", footer=FOOTER)
    rec = saved[-1]
    assert len(rec["bars"]) == 1 and "× uniform" in rec["bars"][0][1]
    assert rec["labels_inside"] == [True]
    assert len({im for im in rec["images"]}) == 1  # one shared scale


def test_rollout_gallery_labels_its_rows(tmp_path, saved):
    rows, cls, roll = [], {}, {}
    for i, selection in enumerate(["lowest rollout entropy #1", "highest rollout entropy #1"]):
        photo = tmp_path / f"{i}.png"
        gradient_image(300, 200, i).save(photo)
        rows.append({"image_id": f"i{i}", "abs_path": str(photo), "country": "FR", "attention_entropy": 3.0 + i,
                     "selection": selection})
        cls[f"i{i}"], roll[f"i{i}"] = _peaked(i), _peaked(i + 5)
    render_rollout_gallery(pd.DataFrame(rows), cls, roll, {}, tmp_path / "r.png", footer=FOOTER)
    rec = saved[-1]
    assert {"lowest rollout entropy #1", "highest rollout entropy #1"} <= set(rec["axes_texts"])
    assert len(rec["bars"]) == 6 and all("× uniform" in label for _, label in rec["bars"])


def test_diverse_grid_tiles_have_colour_bars_and_ranges(tmp_path, saved, dataset):
    from attn_assets.figures import render_diverse_grid

    rows, maps = dataset
    ids = list(rows.image_id[:3])
    maps = {**maps, ids[2]: np.full((24, 24), 1 / 577)}
    render_diverse_grid(rows, maps, None, tmp_path / "d.png", n=3, image_ids=ids, footer=FOOTER)
    rec = saved[-1]
    assert len(rec["bars"]) == 3
    for image_id, ((lo, hi), _) in zip(ids[:2], rec["bars"]):
        # float32 maps: the expected product rounds to float32 (rel 6e-8), the figure's is float64
        assert (lo, hi) == pytest.approx((maps[image_id].min() * 576, maps[image_id].max() * 576), rel=1e-6)
    assert sum("near-uniform" in t for t in rec["axes_texts"]) == 1
    assert sum("× uniform" in t for t in rec["titles"]) == 3
    assert rec["fig_texts"][-1] == FOOTER
