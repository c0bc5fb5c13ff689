"""Deletion / insertion curves: step masks, composites against the ablation's per-image masking, AUCs, and a
classifier whose evidence sits in known patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attn_assets.core.ablation import mask_patches
from attn_assets.core.faithfulness import (
    blurred,
    composite,
    curve_auc,
    curve_fractions,
    fill_for,
    probability_curves,
    random_order,
    ranked_patches,
    step_masks,
)

GRID, PATCH = (3, 4), 2


def test_step_masks_follow_the_order():
    order = torch.tensor([[3, 1, 0, 2], [0, 1, 2, 3]])
    masks = step_masks(order, curve_fractions(4))
    assert masks.shape == (2, 5, 4)
    assert masks[0, 1].tolist() == [False, False, False, True]
    assert masks[0, 2].tolist() == [False, True, False, True]
    assert masks[:, 0].sum() == 0 and masks[:, -1].all()


def test_composites_equal_per_image_masking():
    pixels = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(1))
    order = random_order(["a", "b"], 12)
    fractions = curve_fractions(4)
    chosen = step_masks(order, fractions)
    deletion = composite(pixels, torch.zeros_like(pixels), chosen, "deletion", GRID, PATCH)
    insertion = composite(pixels, torch.zeros_like(pixels), chosen, "insertion", GRID, PATCH)
    for b in range(2):
        for s, fraction in enumerate(fractions):
            k = int(round(fraction * 12))
            removed = order[b:b + 1, :k]
            torch.testing.assert_close(deletion[b, s], mask_patches(pixels[b:b + 1], removed, GRID, PATCH)[0])
            hidden = order[b:b + 1, k:]
            torch.testing.assert_close(insertion[b, s], mask_patches(pixels[b:b + 1], hidden, GRID, PATCH)[0])


def test_random_order_is_seeded_per_image():
    assert torch.equal(random_order(["x", "y"], 9)[1], random_order(["y"], 9)[0])
    assert sorted(random_order(["x"], 9)[0].tolist()) == list(range(9))


def test_blur_keeps_constants_and_smooths():
    flat = torch.full((1, 3, 16, 16), 0.7)
    torch.testing.assert_close(blurred(flat, 2.0), flat)
    spike = torch.zeros(1, 3, 16, 16)
    spike[..., 8, 8] = 1
    out = blurred(spike, 2.0)
    assert out.max() < 0.1 and out[0, 0, 8, 8].item() == pytest.approx(out.max().item())
    with pytest.raises(ValueError, match="unknown faithfulness fill"):
        fill_for(flat, "noise", 2)


def test_auc_of_constant_and_linear_curves():
    fractions = curve_fractions(10)
    curves = np.stack([np.full(11, 0.3), 1 - fractions])
    np.testing.assert_allclose(curve_auc(curves, fractions), [0.3, 0.5], rtol=1e-12)


def test_cue_first_deletion_beats_random():
    """A classifier that sees only patches 0..2 (its 'cue'): removing them first drops the true class at once."""
    cue = torch.zeros(12, dtype=torch.bool)
    cue[:3] = True
    pixel_cue = cue.view(1, 3, 1, 4, 1).expand(1, 3, PATCH, 4, PATCH).reshape(6, 8)

    def probability_of(images):
        evidence = (images[:, 0] * pixel_cue).sum(dim=(1, 2)) / pixel_cue.sum()
        return torch.softmax(torch.stack([4 * evidence, torch.zeros_like(evidence)], dim=1), dim=1)

    ids = [f"img{i}" for i in range(8)]
    pixels = torch.ones(8, 3, 6, 8)
    maps = cue.float().expand(8, 12) + 0.01 * torch.rand(8, 12, generator=torch.Generator().manual_seed(0))
    fractions = curve_fractions(10)
    truth = torch.zeros(8, dtype=torch.long)
    fill = fill_for(pixels, "mean", PATCH)
    cue_first = probability_curves(probability_of, pixels, ranked_patches(maps), truth, "deletion", fill, GRID,
                                   PATCH, fractions, chunk=7)
    random = probability_curves(probability_of, pixels, random_order(ids, 12), truth, "deletion", fill, GRID, PATCH,
                                fractions)
    assert (curve_auc(cue_first, fractions) < curve_auc(random, fractions)).all()
    insertion = probability_curves(probability_of, pixels, ranked_patches(maps), truth, "insertion", fill, GRID,
                                   PATCH, fractions)
    assert insertion[:, 0] == pytest.approx(0.5) and insertion[:, -1] == pytest.approx(cue_first[:, 0])
    unknown = probability_curves(probability_of, pixels[:1], ranked_patches(maps[:1]), torch.tensor([-1]),
                                 "deletion", fill[:1], GRID, PATCH, fractions)
    assert np.isnan(unknown).all()
